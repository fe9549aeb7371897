"""Preallocated numpy ring buffer of full transitions for hybrid (replay-augmented) adaptation.

Plain class, no Ray: a Ray actor wraps it later and snapshots it with :meth:`state_dict`.

Storage
-------
The fields carry the names of :class:`~ssm_metarl_ray.types.EpisodeBatch` (one vocabulary from the
sampler through the buffer to the losses), one row per transition. Each field is one preallocated
array with leading dimension ``capacity``:

============  ===================  =========  ==================================================
field         per-row shape        dtype      meaning
============  ===================  =========  ==================================================
obs           (obs_dim,)           float32    observation
actions       (act_dim,) | (1,)    float32    continuous action; for ``discrete=True`` the action
                                              *index* in a (1,) slot whatever ``act_dim`` is
                                              (callers may pass the number of actions or 1;
                                              indices must be non-negative integers, exact in
                                              float32; blocks may pass (N,) or (N, 1))
rewards       ()                   float32    reward
dones         ()                   bool       True on the FIRST step of an episode (Lu et al.)
logp          ()                   float32    behaviour-policy log-probability of ``actions``
advantages    ()                   float32    advantage estimate computed by the collector
task_id       ()                   int64      task the transition belongs to
episode_id    ()                   int64      episode the transition belongs to
step          ()                   int32      step index within the episode (>= 0)
============  ===================  =========  ==================================================

Rows are kept in insertion order; "logical position" ``0`` is the oldest stored row and
``len(buf) - 1`` the newest. Sampled sequences are contiguous runs of logical positions, so they
never cross the oldest/newest seam of the ring; they may cross episode boundaries (``dones`` marks
the resets, recurrent models reset on it).

Derived structure (task runs, episode starts) is computed on demand with numpy and cached until
the next write, so repeated sampling between writes costs O(batch) plus O(#runs) per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ssm_metarl_ray.replay.buffer_file import FORMAT_VERSION, META_KEYS, one_line, read_state, state_meta, write_state

__all__ = ["ExperienceBuffer", "FIELDS"]

FIELDS: tuple[str, ...] = (
    "obs",
    "actions",
    "rewards",
    "dones",
    "logp",
    "advantages",
    "task_id",
    "episode_id",
    "step",
)
_FLOAT_FIELDS = ("obs", "actions", "rewards", "logp", "advantages")
_INT_FIELDS = ("task_id", "episode_id", "step")
_DTYPES: dict[str, np.dtype] = {
    "obs": np.dtype(np.float32),
    "actions": np.dtype(np.float32),
    "rewards": np.dtype(np.float32),
    "dones": np.dtype(np.bool_),
    "logp": np.dtype(np.float32),
    "advantages": np.dtype(np.float32),
    "task_id": np.dtype(np.int64),
    "episode_id": np.dtype(np.int64),
    "step": np.dtype(np.int32),
}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class ExperienceBuffer:
    """Fixed-capacity FIFO ring buffer of transitions with sequence / per-task / per-episode sampling.

    ``ExperienceBuffer(capacity, obs_dim, act_dim, discrete=False)``; all sizes must be positive
    ints (``ValueError`` otherwise). See the module docstring for the stored fields.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, discrete: bool = False):
        self._capacity = _positive_int("capacity", capacity)
        self._obs_dim = _positive_int("obs_dim", obs_dim)
        self._act_dim = _positive_int("act_dim", act_dim)
        if not isinstance(discrete, (bool, np.bool_)):
            raise ValueError(f"discrete must be a bool, got {discrete!r}")
        self._discrete = bool(discrete)
        self._shapes: dict[str, tuple[int, ...]] = {
            "obs": (self._obs_dim,),
            "actions": (1,) if self._discrete else (self._act_dim,),
        }
        self._data: dict[str, np.ndarray] = {
            k: np.zeros((self._capacity, *self._shapes.get(k, ())), dtype=_DTYPES[k]) for k in FIELDS
        }
        self._ptr = 0  # physical index of the next write
        self._size = 0
        self._num_added = 0
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def obs_dim(self) -> int:
        return self._obs_dim

    @property
    def act_dim(self) -> int:
        return self._act_dim

    @property
    def discrete(self) -> bool:
        return self._discrete

    @property
    def num_added(self) -> int:
        """Total transitions ever added (monotonic; includes overwritten and dropped rows)."""
        return self._num_added

    def __len__(self) -> int:
        return self._size

    def close(self) -> None:
        """Nothing to release (the Buffer protocol's ``close``; the Ray twin kills its actor)."""

    def __repr__(self) -> str:
        return (
            f"ExperienceBuffer(capacity={self._capacity}, obs_dim={self._obs_dim}, "
            f"act_dim={self._act_dim}, discrete={self._discrete}, size={self._size}, "
            f"num_added={self._num_added})"
        )

    # ------------------------------------------------------------------ writing
    def _validate_block(self, block: Any, what: str = "block") -> tuple[int, dict[str, np.ndarray]]:
        """Check a dict of N rows per field; return N and the arrays (not yet cast)."""
        if not isinstance(block, Mapping):
            raise ValueError(f"{what} must be a dict of arrays, got {type(block).__name__}")
        missing = [k for k in FIELDS if k not in block]
        if missing:
            raise ValueError(f"{what} is missing fields {missing}")
        unknown = sorted(str(k) for k in block if k not in FIELDS)
        if unknown:
            raise ValueError(f"{what} has unknown fields {unknown}; expected {list(FIELDS)}")
        arrs: dict[str, np.ndarray] = {}
        for k in FIELDS:
            try:
                a = np.asarray(block[k])
            except Exception as exc:  # ragged lists and the like
                raise ValueError(f"{what}[{k!r}] is not array-like: {one_line(exc)}") from None
            if a.ndim == 0:
                raise ValueError(f"{what}[{k!r}] must have a leading time dimension, got a scalar")
            arrs[k] = a
        n = arrs["obs"].shape[0]
        lengths = {k: a.shape[0] for k, a in arrs.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{what} fields have inconsistent lengths {lengths}")
        if self._discrete and arrs["actions"].ndim == 1:
            arrs["actions"] = arrs["actions"].reshape(n, 1)
        for k, a in arrs.items():
            want = (n, *self._shapes.get(k, ()))
            if a.shape != want:
                raise ValueError(f"{what}[{k!r}] has shape {a.shape}, expected {want}")
            kind = a.dtype.kind
            if k in _FLOAT_FIELDS:
                if kind not in "fiu":
                    raise ValueError(f"{what}[{k!r}] must be numeric, got dtype {a.dtype}")
                if kind == "f" and n and not np.isfinite(a).all():
                    raise ValueError(f"{what}[{k!r}] contains NaN or inf")
            elif k == "dones":
                if kind != "b" and not (kind in "iu" and np.isin(a, (0, 1)).all()):
                    raise ValueError(f"{what}['dones'] must be bool (or 0/1 ints), got dtype {a.dtype}")
            else:  # integer id fields
                if kind not in "iu":
                    raise ValueError(f"{what}[{k!r}] must be an integer array, got dtype {a.dtype}")
                info = np.iinfo(_DTYPES[k])
                lo = 0 if k == "step" else info.min
                if n and (a.min() < lo or a.max() > info.max):
                    raise ValueError(f"{what}[{k!r}] has values outside [{lo}, {info.max}]")
        if self._discrete and n:
            act = arrs["actions"]
            if act.min() < 0 or act.max() >= 2**24 or (act != np.round(act)).any():
                raise ValueError(
                    f"{what}['actions'] must hold non-negative integer action indices (< 2**24) "
                    "for a discrete buffer"
                )
        return n, arrs

    def _write(self, n: int, arrs: dict[str, np.ndarray]) -> None:
        cap = self._capacity
        if n > cap:  # only the newest `cap` rows survive
            arrs = {k: a[n - cap :] for k, a in arrs.items()}
            n = cap
        first = min(n, cap - self._ptr)  # rows before the physical end
        for k, a in arrs.items():
            dst = self._data[k]
            dst[self._ptr : self._ptr + first] = a[:first]
            if first < n:
                dst[: n - first] = a[first:]
        self._ptr = (self._ptr + n) % cap
        self._size = min(self._size + n, cap)

    def add(self, block: Mapping[str, np.ndarray]) -> int:
        """Append N transitions (dict of arrays with leading dim N, time order); return the new size.

        Every field is required (see module docstring for shapes). The whole block is validated
        before anything is written (``ValueError`` naming the field otherwise). Blocks longer than
        ``capacity`` keep their last ``capacity`` rows; :attr:`num_added` grows by N regardless.
        """
        n, arrs = self._validate_block(block)
        if n == 0:
            return self._size
        self._write(n, arrs)
        self._num_added += n
        self._cache.clear()
        return self._size

    # ------------------------------------------------------------------ derived structure
    def _start(self) -> int:
        """Physical index of logical position 0 (the oldest row)."""
        return (self._ptr - self._size) % self._capacity

    def _phys(self, logical: np.ndarray) -> np.ndarray:
        idx = logical + self._start()
        idx %= self._capacity
        return idx

    def _logical(self, field: str) -> np.ndarray:
        """Valid rows of ``field`` in insertion order (a view when no wrap is involved)."""
        a, s, n = self._data[field], self._start(), self._size
        if s + n <= self._capacity:
            return a[s : s + n]
        return np.concatenate((a[s:], a[: s + n - self._capacity]))

    def _task_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Maximal runs of equal task_id in logical order: (starts, ends, task)."""
        runs = self._cache.get("runs")
        if runs is None:
            t = self._logical("task_id")
            change = np.flatnonzero(t[1:] != t[:-1]) + 1
            starts = np.concatenate(([0], change)).astype(np.int64)
            ends = np.concatenate((change, [self._size])).astype(np.int64)
            runs = self._cache["runs"] = (starts, ends, t[starts])
        return runs

    def _episodes(self, trials: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored episode starts (dones=True) in logical order: (starts, ends, task); with ``trials``
        the starts of collected rows instead (``step == 0``: a trial's first step, or an episode's when
        a row holds one episode).

        A unit ends (exclusive) at the next start, the next task change or the newest row, whichever
        comes first.
        """
        key = "trials" if trials else "episodes"
        eps = self._cache.get(key)
        if eps is None:
            first = self._logical("step") == 0 if trials else self._logical("dones")
            starts = np.flatnonzero(first).astype(np.int64)
            run_starts, _, _ = self._task_runs()
            bounds = np.union1d(starts, run_starts[1:])
            bounds = np.append(bounds, self._size).astype(np.int64)
            ends = bounds[np.searchsorted(bounds, starts, side="right")]
            task = self._logical("task_id")[starts]
            eps = self._cache[key] = (starts, ends, task)
        return eps

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def _check_sample_args(batch_size: Any, seq_len: Any, rng: Any) -> tuple[int, int]:
        b = _positive_int("batch_size", batch_size)
        s = _positive_int("seq_len", seq_len)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return b, s

    def _sample_run_starts(
        self, batch_size: int, seq_len: int, rng: np.random.Generator, task_id: int | None
    ) -> np.ndarray:
        """Uniform logical start positions of fully valid chunks of ``seq_len`` rows."""
        if self._size == 0:
            raise ValueError("cannot sample: the buffer is empty")
        if task_id is None:
            if seq_len > self._size:
                raise ValueError(f"cannot sample: seq_len={seq_len} exceeds buffer size {self._size}")
            return rng.integers(0, self._size - seq_len + 1, size=batch_size)
        starts, ends, task = self._task_runs()
        sel = task == task_id
        if not sel.any():
            raise ValueError(f"cannot sample: task_id={task_id!r} is not in the buffer")
        starts, lengths = starts[sel], (ends - starts)[sel]
        counts = lengths - seq_len + 1
        ok = counts > 0
        if not ok.any():
            raise ValueError(
                f"cannot sample: task_id={task_id!r} has no contiguous run of {seq_len} transitions "
                f"(longest is {int(lengths.max())})"
            )
        starts, counts = starts[ok], counts[ok]
        cum = np.cumsum(counts)
        u = rng.integers(0, cum[-1], size=batch_size)
        k = np.searchsorted(cum, u, side="right")
        return starts[k] + (u - (cum[k] - counts[k]))

    def _gather(self, logical: np.ndarray) -> dict[str, np.ndarray]:
        idx = self._phys(logical)
        return {k: self._data[k][idx] for k in FIELDS}

    def sample_sequences(
        self,
        batch_size: int,
        seq_len: int,
        rng: np.random.Generator,
        task_id: int | None = None,
        episode_start: bool = False,
        trial_start: bool = False,
    ) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` contiguous chunks of ``seq_len`` transitions (with replacement).

        Returns every field with shape ``(B, seq_len, ...)`` plus ``mask`` ``(B, seq_len)`` bool.
        Chunks are contiguous in insertion order and never cross the ring's oldest/newest seam.

        * default: uniform over all start positions whose ``seq_len`` rows are all stored; chunks
          may cross episode boundaries; ``mask`` is all True.
        * ``task_id``: uniform over start positions whose ``seq_len`` rows ALL belong to that task
          (chunks are never padded; ``ValueError`` if the task has no run that long); ``mask`` is
          all True.
        * ``episode_start=True``: uniform over stored episode starts (``dones=True`` rows, of
          ``task_id`` if given). Positions past the episode's end (next ``dones=True``, task change
          or newest row) have ``mask=False`` and are zero-filled, so each chunk is exactly one
          episode (its first ``seq_len`` steps) padded; episodes shorter than ``seq_len`` are fine.
        * ``trial_start=True``: the same over the starts of collected rows (``step == 0``): each chunk is
          one trial (several episodes, ``dones`` inside it) as the sampler collected it; for rows of one
          episode, the same as ``episode_start``.

        ``ValueError`` (one line) if no valid chunk exists (empty buffer, ``seq_len`` > size,
        unknown task, no stored episode start, ...).
        """
        b, s = self._check_sample_args(batch_size, seq_len, rng)
        offs = np.arange(s, dtype=np.int64)
        if not (episode_start or trial_start):
            starts = self._sample_run_starts(b, s, rng, task_id)
            out = self._gather(starts[:, None] + offs)
            out["mask"] = np.ones((b, s), dtype=bool)
            return out
        if self._size == 0:
            raise ValueError("cannot sample: the buffer is empty")
        ep_starts, ep_ends, ep_task = self._episodes(trials=trial_start)
        if task_id is not None:
            sel = ep_task == task_id
            ep_starts, ep_ends = ep_starts[sel], ep_ends[sel]
        if ep_starts.size == 0:
            which = "" if task_id is None else f" for task_id={task_id!r}"
            raise ValueError(f"cannot sample: no stored episode start (dones=True){which}")
        k = rng.integers(0, ep_starts.size, size=b)
        st, en = ep_starts[k, None], ep_ends[k, None]
        pos = st + offs
        mask = pos < en
        out = self._gather(np.where(mask, pos, st))
        pad = ~mask
        if pad.any():
            for a in out.values():
                a[pad] = 0
        out["mask"] = mask
        return out

    def sample(
        self, batch_size: int, rng: np.random.Generator, task_id: int | None = None
    ) -> dict[str, np.ndarray]:
        """Sample ``batch_size`` single transitions uniformly (over the whole buffer or one task).

        Returns every field with shape ``(B, ...)``; ``ValueError`` if the buffer is empty or the
        task is absent.
        """
        b, _ = self._check_sample_args(batch_size, 1, rng)
        return self._gather(self._sample_run_starts(b, 1, rng, task_id))

    def task_ids(self) -> np.ndarray:
        """Sorted distinct task ids currently stored (int64)."""
        return np.unique(self._logical("task_id"))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain-numpy snapshot: metadata scalars plus the valid rows in insertion order (copies)."""
        state: dict[str, np.ndarray] = {
            "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "capacity": np.asarray(self._capacity, dtype=np.int64),
            "obs_dim": np.asarray(self._obs_dim, dtype=np.int64),
            "act_dim": np.asarray(self._act_dim, dtype=np.int64),
            "discrete": np.asarray(self._discrete, dtype=np.bool_),
            "num_added": np.asarray(self._num_added, dtype=np.int64),
        }
        for k in FIELDS:
            state[k] = np.array(self._logical(k), copy=True)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict` output; config (capacity, dims, discrete) must match.

        Everything is validated before the buffer changes; ``ValueError`` (one line) otherwise.
        """
        meta = state_meta(state)
        mine = {"capacity": self._capacity, "obs_dim": self._obs_dim,
                "act_dim": self._act_dim, "discrete": self._discrete}
        diff = {k: (meta[k], v) for k, v in mine.items() if meta[k] != v}
        if diff:
            raise ValueError(f"state does not match this buffer (state, buffer): {diff}")
        fields = {k: v for k, v in state.items() if k not in META_KEYS}
        n, arrs = self._validate_block(fields, what="state")
        if n > self._capacity:
            raise ValueError(f"state holds {n} rows but capacity is {self._capacity}")
        if meta["num_added"] < n:
            raise ValueError(f"state num_added={meta['num_added']} is less than its {n} rows")
        self._ptr = self._size = 0
        self._write(n, arrs)
        self._num_added = int(meta["num_added"])
        self._cache.clear()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> ExperienceBuffer:
        """New buffer configured and filled from :meth:`state_dict` output."""
        meta = state_meta(state)
        buf = cls(meta["capacity"], meta["obs_dim"], meta["act_dim"], bool(meta["discrete"]))
        buf.load_state_dict(state)
        return buf

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`state_dict` to an uncompressed ``.npz`` (suffix added if missing, as numpy).

        Written to a temporary file then renamed, so a crash never leaves a half-written file
        (``replay/buffer_file.py``). Returns the path written.
        """
        return write_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExperienceBuffer:
        """Read a file written by :meth:`save` (``allow_pickle=False``: never unpickles code).

        A missing file raises ``FileNotFoundError``; a bad or corrupt file raises ``ValueError``.
        """
        state = read_state(path)
        try:
            return cls.from_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"invalid ExperienceBuffer file {os.fspath(path)!r}: {one_line(exc)}") from None
