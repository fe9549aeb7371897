"""Progress of long loops (held-out evaluation, benchmarks): a tqdm bar with ETA on an interactive
terminal, plain one-line updates otherwise (at most one every ``every_s`` seconds, and one at the end),
so logs of CI jobs and ``ray job submit`` stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def eta_line(desc: str, done: int, total: int, elapsed: float) -> str:
    """``desc: 12/40 tasks (30%), 41 s elapsed, ETA 96 s`` (no ETA before the first item)."""
    pct = 100.0 * done / total if total else 100.0
    eta = f", ETA {elapsed / done * (total - done):.0f} s" if 0 < done < total else ""
    return f"{desc}: {done}/{total} ({pct:.0f}%), {elapsed:.0f} s elapsed{eta}"


class Progress:
    """``with Progress(total, desc) as p: ... p.update()``. ``enabled=False``: silent."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True,
                 every_s: float = 10.0):
        self.total, self.desc, self.enabled, self.every_s = total, desc, enabled, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.t0, self._last = 0, time.monotonic(), -float("inf")
        self._bar = None
        if enabled and _is_tty(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:  # plain lines instead
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            print(eta_line(self.desc, self.done, self.total, now - self.t0), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
