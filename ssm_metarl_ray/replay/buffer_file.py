"""The ExperienceBuffer's file: an uncompressed ``.npz`` of its ``state_dict`` (plain numpy, no pickles).

:class:`~ssm_metarl_ray.replay.buffer.ExperienceBuffer` keeps the ring in memory; this module holds what
goes to and comes from disk: the metadata scalars a state carries (:func:`state_meta`, validated), the
atomic write (:func:`write_state`: temporary file, then rename, so a crash never leaves a half-written
file) and the safe read (:func:`read_state`: zip magic checked first, ``allow_pickle=False``).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from ssm_metarl_ray.utils.atomic import atomic_open

META_KEYS = ("format_version", "capacity", "obs_dim", "act_dim", "discrete", "num_added")
FORMAT_VERSION = 1


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def state_meta(state: Any) -> dict[str, Any]:
    """The metadata scalars of a ``state_dict`` as Python values; ``ValueError`` (one line) if any is
    missing, not a scalar of the right kind, or the format version is not this one."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a dict of arrays, got {type(state).__name__}")
    missing = [k for k in META_KEYS if k not in state]
    if missing:
        raise ValueError(f"state is missing metadata {missing}")
    meta: dict[str, Any] = {}
    for k in META_KEYS:
        v = np.asarray(state[k])
        if v.ndim != 0 or v.dtype.kind not in ("b" if k == "discrete" else "iu"):
            raise ValueError(f"state[{k!r}] must be a {'bool' if k == 'discrete' else 'int'} "
                             f"scalar, got shape {v.shape} dtype {v.dtype}")
        meta[k] = v.item()
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"unsupported buffer format_version {meta['format_version']}")
    return meta


def write_state(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``state`` to an uncompressed ``.npz`` (suffix added if missing, as numpy), through a
    temporary file renamed into place. Returns the path written."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    with atomic_open(path, "wb") as f:
        arrays: dict[str, Any] = dict(state)  # Any: savez's allow_pickle= is no array
        np.savez(f, **arrays)
    return path


def read_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a file written by :func:`write_state`. A missing file raises ``FileNotFoundError``;
    anything that is not a readable ``.npz`` raises ``ValueError`` (one line, naming the file)."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:  # only zip archives reach np.load
            if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
                raise ValueError("not an .npz archive")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, NpzFile):
            raise ValueError("not an .npz archive")
        with loaded as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"cannot load ExperienceBuffer from {where!r}: {one_line(exc)}") from None
