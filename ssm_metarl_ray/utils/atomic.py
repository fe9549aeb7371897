"""Files that are never half-written: write a temporary sibling ``<name>.tmp``, then rename it into place.

A reader (or a run resumed after a crash) sees either the old file or the new one, never a partial
write; a failed write leaves neither a temporary file nor a changed target behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary sibling :func:`atomic_open` writes before renaming: ``<name>.tmp``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing, made atomic: the data goes to :func:`temp_path` and replaces
    ``path`` when the block exits normally; on an exception the temporary file is removed."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_open writes a new file: mode must contain 'w' or 'x', got {mode!r}")
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if the write or the rename failed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """``obj`` as JSON (``json.dumps(obj, **dumps_kwargs)``) to ``path``, atomically."""
    return write_text(path, json.dumps(obj, **dumps_kwargs))
