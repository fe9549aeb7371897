"""Tests for ssm_metarl_ray.replay.ExperienceBuffer (pure numpy, fast)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from ssm_metarl_ray.replay import FIELDS, ExperienceBuffer

OBS, ACT = 3, 2


class Source:
    """Generates episodes as blocks; obs[:, 0] is a hidden global counter (insertion index)."""

    def __init__(self, obs_dim: int = OBS, act_dim: int = ACT, discrete: bool = False):
        self.obs_dim, self.act_dim, self.discrete = obs_dim, act_dim, discrete
        self.counter = 0
        self.next_episode = 0

    def episodes(self, spec: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        """Block made of whole episodes; spec = [(task_id, length), ...]."""
        parts = [self._episode(task, length) for task, length in spec]
        return {k: np.concatenate([p[k] for p in parts]) for k in FIELDS}

    def _episode(self, task: int, length: int) -> dict[str, np.ndarray]:
        n = length
        c = np.arange(self.counter, self.counter + n)
        self.counter += n
        obs = np.zeros((n, self.obs_dim), np.float32)
        obs[:, 0] = c
        if self.discrete:
            action = (c % self.act_dim).astype(np.int64)
        else:
            action = np.stack([c * 0.5] * self.act_dim, axis=1).astype(np.float32)
        done = np.zeros(n, bool)
        done[0] = True
        ep = self.next_episode
        self.next_episode += 1
        return {
            "obs": obs,
            "actions": action,
            "rewards": (c * 0.1).astype(np.float32),
            "dones": done,
            "logp": -np.ones(n, np.float32),
            "advantages": np.full(n, 0.25, np.float32),
            "task_id": np.full(n, task, np.int64),
            "episode_id": np.full(n, ep, np.int64),
            "step": np.arange(n, dtype=np.int32),
        }


def counters(buf: ExperienceBuffer) -> np.ndarray:
    return buf.state_dict()["obs"][:, 0].astype(np.int64)


def filled(capacity: int = 50, spec=None, rounds: int = 1) -> tuple[ExperienceBuffer, Source]:
    buf, src = ExperienceBuffer(capacity, OBS, ACT), Source()
    spec = spec or [(0, 7), (1, 5), (1, 9), (2, 4), (0, 12)]
    for _ in range(rounds):
        buf.add(src.episodes(spec))
    return buf, src


def assert_one_line(exc: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(exc.value) and str(exc.value)


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("cap", [0, -3, 2.5, "10", None, True, np.float64(4.0)])
def test_bad_capacity_raises(cap):
    with pytest.raises(ValueError, match="capacity") as exc:
        ExperienceBuffer(cap, OBS, ACT)
    assert repr(cap) in str(exc.value)
    assert_one_line(exc)


def test_bad_dims_raise():
    with pytest.raises(ValueError, match="obs_dim"):
        ExperienceBuffer(10, 0, ACT)
    with pytest.raises(ValueError, match="act_dim"):
        ExperienceBuffer(10, OBS, -1)
    buf = ExperienceBuffer(np.int64(10), OBS, ACT)
    assert buf.capacity == 10 and len(buf) == 0 and buf.num_added == 0


def test_preallocated_dtypes_and_shapes():
    buf = ExperienceBuffer(8, OBS, ACT)
    buf.add(Source().episodes([(3, 5)]))
    out = buf.sample_sequences(2, 4, np.random.default_rng(0))
    want = {
        "obs": (np.float32, (OBS,)), "actions": (np.float32, (ACT,)), "rewards": (np.float32, ()),
        "dones": (np.bool_, ()), "logp": (np.float32, ()), "advantages": (np.float32, ()),
        "task_id": (np.int64, ()), "episode_id": (np.int64, ()), "step": (np.int32, ()),
        "mask": (np.bool_, ()),
    }
    assert set(out) == set(want)
    for k, (dt, tail) in want.items():
        assert out[k].dtype == dt and out[k].shape == (2, 4, *tail), k


# ----------------------------------------------------------------------------- add / ring
def test_wrap_around_keeps_newest_rows_in_order():
    buf, src = ExperienceBuffer(10, OBS, ACT), Source()
    assert buf.add(src.episodes([(0, 7)])) == 7
    assert buf.add(src.episodes([(0, 7)])) == 10
    assert buf.num_added == 14
    np.testing.assert_array_equal(counters(buf), np.arange(4, 14))
    for _ in range(5):  # odd sizes to move the write pointer all around the ring
        buf.add(src.episodes([(1, 3)]))
    np.testing.assert_array_equal(counters(buf), np.arange(19, 29))
    assert len(buf) == 10 and buf.num_added == 29


def test_block_larger_than_capacity_keeps_last_rows():
    buf, src = ExperienceBuffer(10, OBS, ACT), Source()
    buf.add(src.episodes([(0, 4)]))
    assert buf.add(src.episodes([(0, 13), (1, 12)])) == 10
    assert buf.num_added == 29
    np.testing.assert_array_equal(counters(buf), np.arange(19, 29))
    st = buf.state_dict()
    np.testing.assert_array_equal(st["step"], np.arange(2, 12))
    assert (st["task_id"] == 1).all()
    assert buf.add(src.episodes([(2, 10)])) == 10  # exactly capacity
    np.testing.assert_array_equal(counters(buf), np.arange(29, 39))


def test_empty_block_is_a_noop():
    buf, src = filled(20)
    before = buf.state_dict()
    empty = {k: v[:0] for k, v in src.episodes([(0, 3)]).items()}
    assert buf.add(empty) == len(buf)
    after = buf.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _bad_blocks():
    good = Source().episodes([(0, 4)])

    def mod(**kw):
        b = dict(good)
        for k, v in kw.items():
            if v is None:
                b.pop(k)
            else:
                b[k] = v
        return b

    return {
        "missing": mod(logp=None),
        "unknown": {**good, "done": good["dones"]},
        "length": mod(rewards=good["rewards"][:3]),
        "obs_shape": mod(obs=good["obs"][:, :2]),
        "action_shape": mod(actions=good["actions"][:, 0]),
        "reward_2d": mod(rewards=good["rewards"][:, None]),
        "float_task": mod(task_id=good["task_id"].astype(np.float32)),
        "nan": mod(rewards=np.array([0, np.nan, 0, 0], np.float32)),
        "done_values": mod(dones=np.array([2, 0, 0, 0])),
        "negative_step": mod(step=-good["step"] - 1),
        "strings": mod(obs=np.full((4, OBS), "x")),
        "scalar": mod(rewards=np.float32(1.0)),
        "not_a_dict": [good],
    }


@pytest.mark.parametrize("name", list(_bad_blocks()))
def test_bad_block_raises_and_leaves_buffer_unchanged(name):
    buf, _ = filled(20)
    before, size, added = buf.state_dict(), len(buf), buf.num_added
    with pytest.raises(ValueError) as exc:
        buf.add(_bad_blocks()[name])
    assert_one_line(exc)
    assert len(buf) == size and buf.num_added == added
    after = buf.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_discrete_actions_stored_as_index():
    buf, src = ExperienceBuffer(16, OBS, 4, discrete=True), Source(act_dim=4, discrete=True)
    block = src.episodes([(0, 6)])
    buf.add(block)
    st = buf.state_dict()
    assert st["actions"].shape == (6, 1) and st["actions"].dtype == np.float32
    np.testing.assert_array_equal(st["actions"][:, 0], block["actions"])
    bad = dict(src.episodes([(0, 2)]))
    bad["actions"] = np.array([0, -1])
    with pytest.raises(ValueError, match="actions"):
        buf.add(bad)
    bad["actions"] = np.array([0.5, 1.0])
    with pytest.raises(ValueError, match="actions"):
        buf.add(bad)
    buf2 = ExperienceBuffer.from_state_dict(buf.state_dict())
    assert buf2.discrete and buf2.act_dim == 4
    # act_dim=1 for discrete (slot width convention) accepts any action index
    buf3 = ExperienceBuffer(16, OBS, 1, discrete=True)
    buf3.add(block)
    np.testing.assert_array_equal(buf3.state_dict()["actions"], buf.state_dict()["actions"])


# ----------------------------------------------------------------------------- sequences
def _check_contiguous(out: dict[str, np.ndarray], valid: np.ndarray) -> None:
    c = out["obs"][..., 0].astype(np.int64)
    # contiguous in insertion order: hidden counter increases by exactly 1 (a seam crossing
    # would jump from newest back to oldest)
    assert (np.diff(c, axis=1) == 1).all()
    assert np.isin(c, valid).all()
    # episode structure continuity inside chunks
    d = out["dones"][:, 1:]
    same_ep = out["episode_id"][:, 1:] == out["episode_id"][:, :-1]
    next_step = out["step"][:, 1:] == out["step"][:, :-1] + 1
    assert (d | (same_ep & next_step)).all()
    assert (~d | (out["step"][:, 1:] == 0)).all()


def test_sequences_contiguous_and_never_cross_ring_seam():
    buf, _ = filled(50, rounds=5)  # 37 rows per round: ring wrapped, seam mid-episode
    valid = counters(buf)
    assert len(buf) == 50 and valid[0] > 0
    rng = np.random.default_rng(1)
    for seq_len in (1, 2, 13, 49, 50):
        out = buf.sample_sequences(64, seq_len, rng)
        assert out["mask"].all()
        _check_contiguous(out, valid)
    # every valid start is reachable (uniform over valid starts)
    out = buf.sample_sequences(4000, 45, rng)
    starts = out["obs"][:, 0, 0].astype(np.int64)
    np.testing.assert_array_equal(np.unique(starts), valid[:6])
    assert np.bincount(starts - valid[0]).min() > 500


def test_sequence_errors():
    rng = np.random.default_rng(0)
    buf = ExperienceBuffer(10, OBS, ACT)
    with pytest.raises(ValueError, match="empty") as exc:
        buf.sample_sequences(2, 3, rng)
    assert_one_line(exc)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2, rng)
    with pytest.raises(ValueError, match="empty"):
        buf.sample_sequences(2, 3, rng, episode_start=True)
    buf.add(Source().episodes([(0, 5)]))
    with pytest.raises(ValueError, match="seq_len") as exc:
        buf.sample_sequences(2, 6, rng)
    assert_one_line(exc)
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample_sequences(0, 2, rng)
    with pytest.raises(ValueError, match="seq_len"):
        buf.sample_sequences(2, 0, rng)
    with pytest.raises(TypeError, match="rng"):
        buf.sample_sequences(2, 2, np.random.RandomState(0))


def test_per_task_sampling_only_returns_that_task():
    spec = [(0, 7), (1, 5), (1, 9), (2, 4), (0, 12), (3, 2)]
    buf, _ = filled(60, spec=spec, rounds=3)
    np.testing.assert_array_equal(buf.task_ids(), [0, 1, 2, 3])
    valid = counters(buf)
    rng = np.random.default_rng(2)
    for task in (0, 1, 2):
        out = buf.sample_sequences(200, 4, rng, task_id=task)
        assert (out["task_id"] == task).all() and out["mask"].all()
        _check_contiguous(out, valid)
        single = buf.sample(300, rng, task_id=task)
        assert single["obs"].shape == (300, OBS) and (single["task_id"] == task).all()
    # task 1 has runs of 14 rows (two adjacent episodes): chunks may span them
    out = buf.sample_sequences(200, 14, rng, task_id=1)
    assert (out["task_id"] == 1).all()
    assert (out["dones"][:, 1:].sum(axis=1) == 1).all()
    # every row of the task is reachable by single-transition sampling
    single = buf.sample(5000, rng, task_id=2)
    st = buf.state_dict()
    np.testing.assert_array_equal(
        np.unique(single["obs"][:, 0]), np.sort(st["obs"][st["task_id"] == 2, 0])
    )
    with pytest.raises(ValueError, match="task_id=9"):
        buf.sample_sequences(2, 2, rng, task_id=9)
    with pytest.raises(ValueError, match="no contiguous run") as exc:
        buf.sample_sequences(2, 5, rng, task_id=2)  # task 2 runs are 4 long
    assert_one_line(exc)
    with pytest.raises(ValueError, match="task_id=9"):
        buf.sample(2, rng, task_id=9)


def test_episode_start_chunks_are_one_padded_episode():
    spec = [(0, 7), (1, 5), (1, 9), (2, 4), (0, 12)]
    buf, _ = filled(50, spec=spec, rounds=5)
    st = buf.state_dict()
    first_ep = st["episode_id"][0]
    assert not st["dones"][0]  # oldest episode lost its first step to the ring
    lengths = {e: int((st["episode_id"] == e).sum()) for e in np.unique(st["episode_id"])}
    rng = np.random.default_rng(3)
    L = 10
    out = buf.sample_sequences(500, L, rng, episode_start=True)
    assert out["dones"][:, 0].all() and (out["step"][:, 0] == 0).all()
    assert (out["episode_id"][:, 0] != first_ep).all()
    m = out["mask"]
    n_valid = m.sum(axis=1)
    assert (m == (np.arange(L) < n_valid[:, None])).all()  # prefix mask
    want = np.array([min(lengths[e], L) for e in out["episode_id"][:, 0]])
    np.testing.assert_array_equal(n_valid, want)
    assert (n_valid < L).any() and (n_valid == L).any()
    ep = out["episode_id"]
    assert (ep[m] == np.broadcast_to(ep[:, :1], ep.shape)[m]).all()
    assert not out["dones"][:, 1:][m[:, 1:]].any()
    for k in FIELDS:  # padding is zero-filled
        assert not out[k][~m].any(), k
    # all stored episode starts are reachable
    assert set(np.unique(ep[:, 0])) == set(st["episode_id"][st["dones"]])
    # with a task filter
    out = buf.sample_sequences(200, 12, rng, task_id=2, episode_start=True)
    assert (out["task_id"][out["mask"]] == 2).all()
    assert (out["mask"].sum(axis=1) == 4).all()


def test_episode_start_at_newest_edge_and_without_starts():
    buf, src = ExperienceBuffer(20, OBS, ACT), Source()
    block = src.episodes([(0, 10)])
    block["dones"][:] = False  # no stored episode start
    buf.add(block)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="episode start") as exc:
        buf.sample_sequences(2, 4, rng, episode_start=True)
    assert_one_line(exc)
    buf.add(src.episodes([(0, 3)]))  # an in-progress episode at the newest end
    out = buf.sample_sequences(5, 8, rng, episode_start=True)
    assert (out["mask"].sum(axis=1) == 3).all()
    with pytest.raises(ValueError, match="task_id=1"):
        buf.sample_sequences(2, 4, rng, task_id=1, episode_start=True)


def test_determinism_with_seeded_rng():
    buf, _ = filled(50, rounds=4)
    for kw in ({}, {"task_id": 1}, {"episode_start": True}):
        a = buf.sample_sequences(8, 5, np.random.default_rng(42), **kw)
        b = buf.sample_sequences(8, 5, np.random.default_rng(42), **kw)
        c = buf.sample_sequences(8, 5, np.random.default_rng(43), **kw)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not np.array_equal(a["obs"], c["obs"])
    a = buf.sample(16, np.random.default_rng(7))
    b = buf.sample(16, np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- persistence
def _assert_same(a: ExperienceBuffer, b: ExperienceBuffer) -> None:
    assert (a.capacity, a.obs_dim, a.act_dim, a.discrete) == (b.capacity, b.obs_dim, b.act_dim, b.discrete)
    assert len(a) == len(b) and a.num_added == b.num_added
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


@pytest.mark.parametrize("rounds", [1, 5])  # without and with wrap-around
def test_save_load_round_trip(tmp_path, rounds):
    buf, src = filled(50, rounds=rounds)
    path = buf.save(tmp_path / "buf")
    assert path.name == "buf.npz" and path.exists()
    assert not list(tmp_path.glob("*.tmp"))
    loaded = ExperienceBuffer.load(path)
    _assert_same(buf, loaded)
    for kw in ({}, {"task_id": 0}, {"episode_start": True}):
        a = buf.sample_sequences(8, 6, np.random.default_rng(5), **kw)
        b = loaded.sample_sequences(8, 6, np.random.default_rng(5), **kw)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    block = src.episodes([(4, 23)])  # both keep behaving identically after further adds
    buf.add(block)
    loaded.add(block)
    _assert_same(buf, loaded)


def test_state_dict_is_plain_numpy_and_round_trips():
    buf, _ = filled(30, rounds=3)
    st = buf.state_dict()
    assert all(type(v) is np.ndarray and v.dtype != object for v in st.values())
    st["obs"][:] = -1  # a copy, not a view of the storage
    assert (counters(buf) >= 0).all()
    other = ExperienceBuffer(30, OBS, ACT)
    other.load_state_dict(buf.state_dict())
    _assert_same(buf, other)
    empty = ExperienceBuffer(30, OBS, ACT)
    _assert_same(empty, ExperienceBuffer.from_state_dict(empty.state_dict()))
    with pytest.raises(ValueError, match="does not match") as exc:
        ExperienceBuffer(31, OBS, ACT).load_state_dict(buf.state_dict())
    assert_one_line(exc)
    bad = buf.state_dict()
    bad["num_added"] = np.int64(3)
    with pytest.raises(ValueError, match="num_added"):
        other.load_state_dict(bad)
    _assert_same(buf, other)  # failed load leaves the buffer untouched


def _write_garbage(tmp_path, kind: str):
    p = tmp_path / f"{kind}.npz"
    buf, _ = filled(20)
    if kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(1000))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "npy":
        with open(p, "wb") as f:
            np.save(f, np.arange(5))
    elif kind == "truncated":
        good = buf.save(tmp_path / "good.npz").read_bytes()
        p.write_bytes(good[: len(good) // 2])
    elif kind == "pickled":
        with open(p, "wb") as f:
            np.savez(f, **{**buf.state_dict(), "obs": np.array([object()], dtype=object)})
    elif kind == "missing_field":
        st = buf.state_dict()
        st.pop("rewards")
        with open(p, "wb") as f:
            np.savez(f, **st)
    elif kind == "bad_meta":
        with open(p, "wb") as f:
            np.savez(f, **{**buf.state_dict(), "capacity": np.int64(-5)})
    elif kind == "zip_not_npz":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("capacity.npy", b"hello")
    return p


@pytest.mark.parametrize(
    "kind", ["random", "empty", "npy", "truncated", "pickled", "missing_field", "bad_meta", "zip_not_npz"]
)
def test_load_garbage_raises_value_error(tmp_path, kind):
    p = _write_garbage(tmp_path, kind)
    with pytest.raises(ValueError) as exc:
        ExperienceBuffer.load(p)
    assert_one_line(exc)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ExperienceBuffer.load(tmp_path / "nope.npz")
