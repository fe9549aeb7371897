"""Experiment tracking of plain runs: TensorBoard scalars and ``progress.csv`` beside ``metrics.json``.

``ssm-metarl train`` (:func:`ssm_metarl_ray.run.run_training`) hands every meta-iteration's
training metrics -- the entry of ``metrics.json``'s ``history``, with the names Tune trials report:
``meta/pre_return`` / ``meta/post_return`` (returns before / after adaptation), the other ``meta/*``
losses, ``health/*``, ``grad/*``, ``trpo/*``, ``time/sample_s`` / ``time/experience_s`` (storing the
batches in the buffer) / ``time/update_s``, ``env_steps``, ``iteration`` -- to a :class:`RunTracker`,
which writes into the run's output directory:

* ``events.out.tfevents.*``: one TensorBoard scalar per metric, tag = metric name, step = iteration;
* ``progress.csv``: one row per iteration, columns ``iteration``, ``env_steps``, then the other metrics in
  the order they first appear; values as Python prints them, so they read back exactly.

**Columns.** A metric that first appears after the first row extends the header: ``progress.csv`` is
rewritten (temp file + rename) with the new column last and an empty cell in the earlier rows. The rows
are kept in memory for that (well under 1 kB each). Fixing the columns up front instead would silently
drop such a metric, or need a list of every metric each optimiser and policy may report.

**Resume.** The tracker starts from the checkpoint's history. ``progress.csv`` is rewritten from it, so
rows a crashed process wrote after its last checkpoint are replaced rather than duplicated, and rows are
appended from there. TensorBoard event files are append-only: a new one is opened whose first event
purges (``purge_step``: a ``SessionLog.START`` at the first new step), so TensorBoard hides what earlier
files hold at that step and later. Event files of the run so far are kept; if there are none (a resumed
run writing to a new ``--output-dir``), the history is replayed into the new file.

**Failures.** Nothing is written before the first row: a run that fails before its first meta-iteration
ends leaves no tracking files (a fresh run removes event files of an earlier run in the same directory
only then, as it overwrites its ``metrics.json``). tensorboardX is imported at that point too.
"""

from __future__ import annotations

import csv
import itertools
import numbers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO, cast

from ssm_metarl_ray.utils.atomic import atomic_open

PROGRESS = "progress.csv"
EVENTS_PREFIX = "events.out.tfevents."
LEADING = ("iteration", "env_steps")
FLUSH_SECS = 2  # events reach the file at most this long after their iteration (close() writes the rest)
_FILE_SEQ = itertools.count()  # event file names hold whole seconds: keeps two writers of a process apart


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The entries of ``metrics`` that are real numbers (lists, strings, None are not tracked)."""
    return {k: cast("float | int", v) for k, v in metrics.items() if isinstance(v, numbers.Real)}


def column_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """CSV columns: ``iteration``, ``env_steps``, then every other key in the order it first appears."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return [k for k in LEADING if k in keys] + [k for k in keys if k not in LEADING]


def summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported on first use; a clear error if it is not installed."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise ImportError("TensorBoard logging of training runs needs tensorboardX, which is not "
                          "installed: pip install tensorboardX (a dependency of ssm_metarl_ray)") from e
    return SummaryWriter


class RunTracker:
    """``write(iteration, metrics)`` once per meta-iteration, ``close()`` at the end (module docstring).

    Holds the output directory, every row of the run (``history``: the rows before this process, from a
    checkpoint), the CSV columns, and -- from the first ``write`` on -- the open ``progress.csv`` and the
    TensorBoard writer (``tensorboard=False``: CSV only).
    """

    def __init__(self, out: str | os.PathLike, history: Iterable[dict[str, Any]] = (),
                 tensorboard: bool = True):
        self.out = Path(out)
        self.rows = [scalar_metrics(h) for h in history]
        self.start = int(self.rows[-1].get("iteration", len(self.rows))) if self.rows else 0
        self.tensorboard = tensorboard
        self.columns: list[str] = []
        self._csv: TextIO | None = None  # progress.csv opened for appending
        self._tb: Any = None  # tensorboardX SummaryWriter
        self._opened = self._closed = False

    def write(self, iteration: int, metrics: dict[str, Any]) -> None:
        """Add one meta-iteration: a ``progress.csv`` row and a TensorBoard step ``iteration``."""
        if self._closed:
            raise RuntimeError("RunTracker.write after close()")
        row = {**scalar_metrics(metrics), "iteration": int(iteration)}
        self.rows.append(row)
        if not self._opened:
            self._open()
        elif row.keys() <= set(self.columns):
            assert self._csv is not None  # opened by the first write
            csv.DictWriter(self._csv, self.columns, restval="").writerow(row)
            self._csv.flush()
        else:
            self._rewrite_csv()
        if self._tb is not None:
            self._add_scalars(row)

    def close(self) -> None:
        """Flush and close both files (idempotent; a tracker that never wrote has nothing to close)."""
        self._closed = True
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    @property
    def opened(self) -> bool:
        """Whether this tracker has created its files (at the first ``write``)."""
        return self._opened

    def event_files(self) -> list[Path]:
        """The TensorBoard event files in the output directory, oldest name first."""
        return sorted(self.out.glob(EVENTS_PREFIX + "*"))

    def _open(self) -> None:
        """First write: create the directory, ``progress.csv`` with the rows so far, and an event file."""
        writer_class = summary_writer_class() if self.tensorboard else None  # fail before touching files
        self.out.mkdir(parents=True, exist_ok=True)
        earlier = self.event_files()
        if self.start == 0:  # a fresh run: event files in this directory belong to an earlier run
            for f in earlier:
                f.unlink()
            earlier = []
        self._rewrite_csv()
        self._opened = True
        if writer_class is not None:
            self._tb = writer_class(str(self.out), purge_step=self.start + 1, flush_secs=FLUSH_SECS,
                                    filename_suffix=f".{os.getpid()}.{next(_FILE_SEQ)}")
            if self.start > 0 and not earlier:
                for row in self.rows[:-1]:
                    self._add_scalars(row)

    def _rewrite_csv(self) -> None:
        """``progress.csv`` from all rows (temp file + rename: never half-written), reopened for appending."""
        self.columns = column_order(self.rows)
        if self._csv is not None:
            self._csv.close()
        path = self.out / PROGRESS
        with atomic_open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        self._csv = path.open("a", newline="")

    def _add_scalars(self, row: dict[str, float | int]) -> None:
        """One TensorBoard scalar per metric of ``row`` at step ``row["iteration"]``."""
        step = row["iteration"]
        for key, value in row.items():
            if key != "iteration":
                self._tb.add_scalar(key, float(value), step)
