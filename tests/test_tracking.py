"""Experiment tracking of plain runs: progress.csv and TensorBoard event files beside metrics.json, one
row / step per meta-iteration, read back and compared with metrics.json's history (also across a resume)."""

from __future__ import annotations

import csv
import json
import struct
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from ray_util import tiny_cfg

from ssm_metarl_ray.run import run_training
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.training.meta_train import LocalSampler
from ssm_metarl_ray.training.tracking import PROGRESS, RunTracker
from ssm_metarl_ray.utils.checkpoint import load_state

pytestmark = pytest.mark.timeout(300)


class FailingSampler(LocalSampler):
    """Raises while sampling the given (1-based) iteration of this process, like a crash."""

    def __init__(self, cfg, fail_at: int):
        super().__init__(cfg, cfg.seed)
        self.calls, self.fail_at = 0, fail_at

    def sample_tasks(self, tasks):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return super().sample_tasks(tasks)


def read_events(path: Path) -> list:
    """Every ``Event`` of one event file; checks the TFRecord framing and both CRCs of every record."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header), path
        body = data[pos + 12:pos + 12 + n]
        assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked_crc32c(body), path
        events.append(Event.FromString(body))
        pos += 16 + n
    return events


def event_files(run: Path) -> list[Path]:
    """The run's event files in the order they were started (first event's wall time)."""
    return sorted(run.glob("events.out.tfevents.*"), key=lambda f: read_events(f)[0].wall_time)


def tensorboard_scalars(run: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` as TensorBoard shows the run: a ``SessionLog.START`` at step s hides the
    events of earlier files at steps >= s; a step that is still written twice fails the test."""
    from tensorboardX.proto.event_pb2 import SessionLog

    scalars: dict[str, dict[int, float]] = {}
    for f in event_files(run):
        for ev in read_events(f):
            if ev.HasField("session_log") and ev.session_log.status == SessionLog.START:
                scalars = {tag: {s: v for s, v in steps.items() if s < ev.step}
                           for tag, steps in scalars.items()}
            for v in ev.summary.value:
                steps = scalars.setdefault(v.tag, {})
                assert ev.step not in steps, f"{v.tag} written twice at step {ev.step}"
                steps[ev.step] = v.simple_value
    return scalars


def read_progress(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (run / PROGRESS).open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert all(None not in row and None not in row.values() for row in rows)  # no ragged lines
    return list(reader.fieldnames), rows


def assert_tracked_like_history(run: Path) -> list[dict]:
    """progress.csv and the event files hold exactly metrics.json's history: same names, same values."""
    history = json.loads((run / "metrics.json").read_text())["history"]
    keys = {k for h in history for k in h}
    columns, rows = read_progress(run)
    assert columns[:2] == ["iteration", "env_steps"] and set(columns) == keys
    assert [int(r["iteration"]) for r in rows] == [h["iteration"] for h in history]
    for row, h in zip(rows, history):
        assert {k: float(row[k]) for k in h} == h  # repr-formatted floats read back exactly
    scalars = tensorboard_scalars(run)
    assert set(scalars) == keys - {"iteration"}  # the iteration is the step
    for tag, steps in scalars.items():
        assert steps == {h["iteration"]: float(np.float32(h[tag])) for h in history}, tag  # float32 scalars
    return history


def test_plain_run_writes_progress_csv_and_tensorboard_like_metrics_json(tmp_path):
    out = tmp_path / "run"
    run_training(tiny_cfg(iterations=3), out, ["standard"], verbose=False)
    history = assert_tracked_like_history(out)
    assert len(history) == 3 and len(event_files(out)) == 1
    columns, _ = read_progress(out)
    assert {"meta/pre_return", "meta/post_return", "health/action_change", "health/kl", "health/clipped_frac",
            "grad/core", "grad/actor", "time/sample_s", "time/update_s", "env_steps"} <= set(columns)


def test_resume_after_a_crash_continues_the_files_without_duplicates(tmp_path):
    cfg, run = tiny_cfg(iterations=4), tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, run, ["standard"], verbose=False, sampler=FailingSampler(cfg, fail_at=4),
                     runtime=RuntimeConfig(num_workers=0, checkpoint_every=2))
    assert load_state(run / "checkpoint")["iteration"] == 2
    assert [int(r["iteration"]) for r in read_progress(run)[1]] == [1, 2, 3]  # row 3 is past the checkpoint
    run_training(cfg, run, ["standard"], verbose=False, resume=run / "checkpoint")
    history = assert_tracked_like_history(run)  # rows 1-4 once each, row 3 from the resumed run
    assert [h["iteration"] for h in history] == [1, 2, 3, 4]
    first, second = event_files(run)
    assert max(ev.step for ev in read_events(first)) == 3  # TensorBoard hides it: purge from step 3 on
    assert [ev.step for ev in read_events(second) if ev.HasField("session_log")] == [3]


def test_extending_a_finished_run_appends(tmp_path):
    cfg, run = tiny_cfg(iterations=2), tmp_path / "run"
    run_training(cfg, run, ["standard"], verbose=False)
    before = (run / PROGRESS).read_text()
    run_training(replace(cfg, iterations=3), run, ["standard"], verbose=False, resume=run / "checkpoint")
    assert (run / PROGRESS).read_text().startswith(before)  # the rows written before are kept as they were
    assert len(assert_tracked_like_history(run)) == 3


def test_failure_before_the_first_iteration_writes_nothing(tmp_path):
    cfg, run = tiny_cfg(iterations=2), tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, run, ["standard"], verbose=False, sampler=FailingSampler(cfg, fail_at=1))
    assert not (run / PROGRESS).exists() and not list(run.glob("events.out.tfevents.*"))
    run_training(cfg, run, ["standard"], verbose=False)  # a resumed run failing early leaves the files alone
    files = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file() and f.name != "adaptation.png"}
    longer = replace(cfg, iterations=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(longer, run, ["standard"], verbose=False, sampler=FailingSampler(longer, fail_at=1),
                     resume=run / "checkpoint")
    assert {f.name: f.read_bytes() for f in run.iterdir() if f.name in files} == files
    assert {f.name for f in run.iterdir() if f.is_file() and f.name != "adaptation.png"} == set(files)


def test_a_metric_that_appears_later_extends_the_csv_header(tmp_path):
    tracker = RunTracker(tmp_path)
    tracker.write(1, {"env_steps": 10, "a": 1.5})
    tracker.write(2, {"env_steps": 20, "a": 2.5, "b": 0.1})
    tracker.write(3, {"env_steps": 30, "a": 3.5, "b": 0.2, "note": "not a number"})
    tracker.close()
    columns, rows = read_progress(tmp_path)
    assert columns == ["iteration", "env_steps", "a", "b"]
    assert [r["b"] for r in rows] == ["", "0.1", "0.2"] and [r["a"] for r in rows] == ["1.5", "2.5", "3.5"]
    assert tensorboard_scalars(tmp_path)["b"] == {2: float(np.float32(0.1)), 3: float(np.float32(0.2))}


def test_missing_tensorboardx_is_a_clear_error_at_the_first_write(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # "import tensorboardX" now raises ImportError
    tracker = RunTracker(tmp_path / "run")  # constructing needs nothing
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        tracker.write(1, {"env_steps": 10})
    assert not (tmp_path / "run").exists()
