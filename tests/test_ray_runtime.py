"""Ray runtime on one node: distributed training = local training, learner actor, buffer restart, timeouts."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from ray_util import learning_history, ray_local, rt, tiny_cfg  # noqa: E402,F401  (ray_local: fixture)

from ssm_metarl_ray.replay.buffer import ExperienceBuffer  # noqa: E402
from ssm_metarl_ray.run import run_training  # noqa: E402
from ssm_metarl_ray.runtime.buffer import create_buffer  # noqa: E402
from ssm_metarl_ray.runtime.cluster import get  # noqa: E402
from ssm_metarl_ray.training.meta_train import LocalSampler  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180), pytest.mark.usefixtures("ray_local")]

MODES = ["standard", "hybrid"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    torch.set_num_threads(1)  # as the 1-CPU worker actors (module fixtures run before conftest's autouse one)
    out = tmp_path_factory.mktemp("local")
    cfg = tiny_cfg()  # 4 tasks per meta-batch; 2 Ray workers get 2 each: sample locally in the same chunks
    results = run_training(cfg, out, MODES, verbose=False,
                           sampler=LocalSampler(cfg, cfg.seed, tasks_per_chunk=2))
    return out, results


def test_distributed_training_matches_local(local_run, tmp_path):
    local_out, local_results = local_run
    out = tmp_path / "ray"
    results = run_training(tiny_cfg(), out, MODES, verbose=False,
                           runtime=rt(num_workers=2, checkpoint_every=1))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (local_out, out))
    # sampling is seeded per (seed, weights version, chunk): same data, same updates, same evaluation
    assert learning_history(b["history"]) == learning_history(a["history"])
    assert results["standard"] == local_results["standard"]
    # hybrid replays from the buffer actor instead of a private copy: same structure, own numbers
    assert set(results) == set(local_results)
    assert {k: np.shape(v) for k, v in results["hybrid"].items()} == \
        {k: np.shape(v) for k, v in local_results["hybrid"].items()}
    assert results["hybrid"]["mean"][0] == local_results["hybrid"]["mean"][0]  # before adaptation
    # the workers' buffer writes hold the same transitions with the same episode ids as the driver's
    bl, br = (ExperienceBuffer.load(d / "checkpoint" / "buffer.npz") for d in (local_out, out))
    assert len(br) == len(bl) > 0
    key = lambda s: np.lexsort((s["step"], s["episode_id"]))  # noqa: E731
    sl, sr = bl.state_dict(), br.state_dict()
    for f in ("episode_id", "step", "task_id", "rewards", "logp"):
        np.testing.assert_array_equal(sr[f][key(sr)], sl[f][key(sl)])
    assert (out / "checkpoint" / "learner.pt").is_file()
    assert not (out / ".buffer_snapshots").exists()  # the run's snapshot is removed at the end
    deadline = time.monotonic() + 30  # the session cleaned up after itself (kills take a moment to land)
    while ray.util.list_named_actors(all_namespaces=True) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.util.list_named_actors(all_namespaces=True) == []


def test_learner_actor_path_matches_local(local_run, tmp_path):
    """--learner-gpus > 0: MetaLearner in an actor; forced here with 0 GPUs (1 worker + learner: 2 CPUs)."""
    local_out, local_results = local_run
    results = run_training(tiny_cfg(), tmp_path, ["standard"], verbose=False,
                           runtime=rt(num_workers=1, learner_actor=True, tasks_per_chunk=2))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (local_out, tmp_path))
    assert learning_history(b["history"]) == learning_history(a["history"])
    assert results["standard"] == local_results["standard"]


def _block(episode: int, task: int = 0, n: int = 10) -> dict:
    return {"obs": np.full((n, 2), episode, np.float32), "actions": np.zeros((n, 2), np.float32),
            "rewards": np.ones(n, np.float32), "dones": np.arange(n) == 0, "logp": np.zeros(n, np.float32),
            "advantages": np.zeros(n, np.float32), "task_id": np.full(n, task, np.int64),
            "episode_id": np.full(n, episode, np.int64), "step": np.arange(n, dtype=np.int32)}


def test_buffer_actor_restart_restores_snapshot(tmp_path):
    every = 2
    buf = create_buffer(1000, 2, 2, False, "bufkill", rt(buffer_snapshot_every_adds=every, buffer_snapshot_every_s=1e9),
                        snapshot_dir=tmp_path)
    try:
        for ep in range(5):
            get(buf.handle.add.remote(_block(ep), key=f"0:{ep}"), 30, "add")
        before = buf.stats()
        assert (before["adds"], before["snapshot_adds"], before["size"]) == (5, 4, 50)
        os.kill(before["pid"], signal.SIGKILL)
        after = get(buf.handle.stats.remote(), 60, "stats after restart")  # Ray restarts it (max_restarts)
        assert after["pid"] != before["pid"] and after["restored"]["from"] == "snapshot"
        # nothing lost: the snapshot holds 4 adds, the block log the one completed after it
        assert (after["adds"], after["size"], after["restored"]["log_rows"]) == (5, 50, 10)
        state = get(buf.handle.state_dict.remote(), 30, "state")
        assert sorted(set(state["episode_id"].tolist())) == [0, 1, 2, 3, 4]
        # a retried add of a block the snapshot or the log already holds is skipped
        get(buf.handle.add.remote(_block(3), key="0:3"), 30, "dup")
        get(buf.handle.add.remote(_block(4), key="0:4"), 30, "dup from the log")
        final = buf.stats()
        assert final["size"] == 50 and final["duplicates_skipped"] == 2
        seq = get(buf.handle.sample_sequences.remote(4, 10, 0, episode_start=True), 30, "sample")
        assert seq["obs"].shape == (4, 10, 2) and seq["mask"].all()
        (tmp_path / "ckpt").mkdir()
        buf.save(tmp_path / "ckpt" / "buffer.npz")  # what a checkpoint holds; --resume starts from it
    finally:
        buf.close()
    assert not list(tmp_path.glob("bufkill*"))
    resumed = create_buffer(1000, 2, 2, False, "bufresume", snapshot_dir=tmp_path,
                            initial_path=tmp_path / "ckpt" / "buffer.npz")
    try:
        assert resumed.stats()["restored"]["from"] == "checkpoint" and len(resumed) == 50
    finally:
        resumed.close()


def test_worker_gradients_equal_the_learners_own_and_survive_a_dead_worker():
    """runtime/gradients.py: the rollout workers compute a share of the per-task meta-gradients; the update
    equals the learner computing them all, bit for bit; a worker that is gone has its share computed by the
    learner (same update, one fall-back counted)."""
    from ssm_metarl_ray.algorithms.maml import MetaLearner
    from ssm_metarl_ray.runtime.gradients import WorkerGradientPool, split_tasks
    from ssm_metarl_ray.runtime.workers import RaySampler
    from ssm_metarl_ray.training.meta_train import build_state

    assert split_tasks(10, 1) == ([[0, 1, 2, 3, 4]], [5, 6, 7, 8, 9])
    assert split_tasks(4, 2) == ([[0, 1], [2]], [3])
    assert split_tasks(1, 2) == ([[0], []], [])
    torch.set_num_threads(1)
    cfg = tiny_cfg(meta_batch_size=5)
    state = build_state(cfg)
    sampler = RaySampler(cfg, rt(), 2, "gradpool")
    try:
        init = state.learner.state_dict()
        sampler.set_weights(state.learner.get_weights(), 0)
        batches = sampler.sample_tasks(state.train_tasks[:5])

        def update(pool):
            learner = MetaLearner(state.spec.make_policy(cfg.model), cfg.meta, gradient_pool=pool)
            learner.load_state_dict(init)
            metrics = learner.update(batches)
            return metrics, learner.get_weights()

        calls = []

        class Counting(WorkerGradientPool):
            def start(self, batches, meta):
                shards = super().start(batches, meta)
                calls.append((shards.local, [idx for _, idx, _ in shards.remote]))
                return shards

        ref_metrics, ref_w = update(None)
        pool = Counting(sampler, rt())
        metrics, w = update(pool)
        assert calls == [([4], [[0, 1], [2, 3]])]  # both workers had tasks; the learner the smallest share
        assert metrics == ref_metrics and pool.fallbacks == 0
        for k in ref_w:
            np.testing.assert_array_equal(w[k], ref_w[k])
        ray.kill(sampler.workers[0].handle, no_restart=True)
        metrics, w = update(pool)
        assert pool.fallbacks == cfg.meta.outer_steps  # its share, once per outer step
        assert metrics == ref_metrics
        for k in ref_w:
            np.testing.assert_array_equal(w[k], ref_w[k])
    finally:
        sampler.close()
