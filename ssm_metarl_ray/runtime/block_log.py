"""Append-only block log of the ExperienceBuffer actor: one CRC-checked record per add (plain Python, no Ray).

Record layout: magic ``SBL1``, payload length (u64), CRC-32 of the payload (u32), then the payload: the
length of a JSON header (u32), the header (``pos``, add number, key, array dtypes and shapes) and the arrays'
bytes. A torn last record (the add being written when the process died) fails its length or CRC check and is
dropped; :class:`BlockLog` cuts it off the file. How the actor uses the log: ``runtime/buffer.py``.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

_MAGIC = b"SBL1"
_HEAD = struct.Struct("<4sQI")  # magic, payload length, CRC-32 of the payload
_JSON_LEN = struct.Struct("<I")  # the payload starts with the length of its JSON header


def encode_record(block: dict[str, np.ndarray], meta: dict) -> tuple[bytes, list]:
    """One log record of ``block``: its 16-byte head and the payload parts (array bytes, not copied)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in block.items()}
    header = json.dumps({**meta, "fields": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]}).encode()
    parts: list[bytes | np.ndarray] = [_JSON_LEN.pack(len(header)), header,
                                       *(a.reshape(-1).view(np.uint8) for a in arrays.values())]
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)  # type: ignore[arg-type]  # numpy's stub: ndarray is a Buffer on 3.12+ only
    return _HEAD.pack(_MAGIC, sum(len(p) for p in parts), crc), parts


def decode_record(payload: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of :func:`encode_record` for a payload whose CRC matched: (header, block)."""
    (n,) = _JSON_LEN.unpack_from(payload)
    meta = json.loads(payload[_JSON_LEN.size:_JSON_LEN.size + n])
    offset, block = _JSON_LEN.size + n, {}
    for name, dtype, shape in meta.pop("fields"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        block[name] = np.frombuffer(payload, dt, count, offset).reshape(shape)
        offset += count * dt.itemsize
    return meta, block


class BlockLog:
    """Append-only file of added blocks, one length-prefixed, CRC-checked record per add.

    ``records()`` reads the file from the start and stops at the first torn or corrupt record; ``open``
    cuts the file to the intact part and opens it for appending; ``append`` writes and flushes one
    record; ``reset`` empties the file (after a snapshot covers it).
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path, self.fsync = Path(path), fsync
        self._f: BinaryIO | None = None  # set by ``open``
        self.size = 0  # bytes in the file (tracked: appends go to the end whatever tell() says)
        self.appends, self.bytes_written, self.seconds = 0, 0, 0.0  # per-add cost, for stats

    def records(self) -> Iterator[tuple[int, dict, dict[str, np.ndarray]]]:
        """``(end offset, header, block)`` of each intact record, in order."""
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            size, end = os.fstat(f.fileno()).st_size, 0
            while True:
                record = _read_record(f, size - end)
                if record is None:
                    return
                end += _HEAD.size + len(record)
                try:
                    meta, block = decode_record(record)
                except (ValueError, KeyError, TypeError, struct.error):
                    return
                yield end, meta, block

    def open(self, keep: int) -> int:
        """Keep the first ``keep`` bytes (the intact records), open for appending; returns bytes cut."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")
        cut = os.fstat(self._f.fileno()).st_size - keep
        self._f.truncate(keep)
        self.size = keep
        return cut

    def append(self, block: dict[str, np.ndarray], meta: dict) -> int:
        """Write one record and flush it (``fsync`` too when asked); returns the offset it starts at."""
        t0 = time.perf_counter()
        head, parts = encode_record(block, meta)
        start = self.size
        f = self._f
        assert f is not None, "BlockLog.open() first"
        try:
            f.write(head)
            for p in parts:
                f.write(p)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        except BaseException:
            self.rollback(start)
            raise
        self.size = start + len(head) + sum(len(p) for p in parts)
        self.appends += 1
        self.bytes_written += self.size - start
        self.seconds += time.perf_counter() - t0
        return start

    def rollback(self, offset: int) -> None:
        """Cut the file back to ``offset`` (a record whose add then failed)."""
        assert self._f is not None, "BlockLog.open() first"
        self._f.flush()
        self._f.truncate(offset)
        self.size = offset

    def reset(self) -> None:
        """Empty the file: a snapshot now holds everything it recorded."""
        self.rollback(0)
        if self.fsync:
            assert self._f is not None
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def stats(self) -> dict:
        return {"bytes": self.size, "appends": self.appends, "bytes_written": self.bytes_written,
                "seconds": self.seconds, "fsync": self.fsync}


def _read_record(f, left: int) -> bytes | None:
    """The payload of the next record of ``f``, or None at the end or at a torn/corrupt record."""
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    magic, n, crc = _HEAD.unpack(head)
    if magic != _MAGIC or n > left - _HEAD.size:  # garbage, or a length past the end of the file
        return None
    payload = f.read(n)
    return payload if len(payload) == n and zlib.crc32(payload) == crc else None
