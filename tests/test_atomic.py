"""utils/atomic: a write either replaces the file whole or leaves it (and no temporary file) as it was."""

import json

import pytest

from ssm_metarl_ray.utils import atomic


def test_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    assert atomic.write_json(path, {"a": 1}, indent=2) == path
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text("old,rows\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_open(path, "w") as f:
            f.write("half of the new ")
            raise RuntimeError("disk full")
    assert path.read_text() == "old,rows\n"
    assert not atomic.temp_path(path).exists()
    with pytest.raises(TypeError):  # json cannot encode it: nothing written, nothing left over
        atomic.write_json(tmp_path / "new.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.csv"]


def test_binary_mode_and_read_modes_refused(tmp_path):
    with atomic.atomic_open(tmp_path / "a.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must contain 'w' or 'x', got 'r'"):
        with atomic.atomic_open(tmp_path / "a.bin", "r"):
            pass
