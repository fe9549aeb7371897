"""Ray runtime on one simulated node: distributed training = local training, worker/buffer failures, timeouts."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray_util import assert_same_batches, learning_history, tiny_cfg  # noqa: E402

from ssm_metarl_ray.replay.buffer import ExperienceBuffer  # noqa: E402
from ssm_metarl_ray.runtime.buffer import create_buffer  # noqa: E402
from ssm_metarl_ray.runtime.cluster import get  # noqa: E402
from ssm_metarl_ray.runtime.config import RuntimeConfig  # noqa: E402
from ssm_metarl_ray.runtime.errors import ActorCallTimeout, SamplingError  # noqa: E402
from ssm_metarl_ray.runtime.workers import RaySampler  # noqa: E402
from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, count_experience, meta_train  # noqa: E402
from ssm_metarl_ray.training.run import run_training  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

MODES = ["standard", "hybrid"]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False,
             namespace="ssm-test")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    results = run_training(tiny_cfg(), out, MODES, verbose=False)
    return out, results


def _rt(**kw) -> RuntimeConfig:
    return RuntimeConfig(**{"sample_timeout_s": 60.0, "startup_timeout_s": 60.0, **kw})


def test_distributed_training_matches_local(ray_local, local_run, tmp_path):
    local_out, local_results = local_run
    out = tmp_path / "ray"
    results = run_training(tiny_cfg(), out, MODES, verbose=False, runtime=_rt(num_workers=2, checkpoint_every=1))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (local_out, out))
    # sampling is seeded per (seed, weights version, task slot): same data, same updates, same evaluation
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
    for f in ("episode_id", "step", "task_id", "reward", "logp"):
        np.testing.assert_array_equal(sr[f][key(sr)], sl[f][key(sl)])
    assert (out / "checkpoint" / "learner.pt").is_file() and not list((out / ".buffer_snapshots").glob("*.npz"))
    assert ray.util.list_named_actors(all_namespaces=True) == []  # the session cleaned up after itself


def test_learner_actor_path_matches_local(ray_local, local_run, tmp_path):
    """--learner-gpus > 0 runs MetaLearner in an actor; forced here with 0 GPUs (1 worker + learner = 2 CPUs)."""
    local_out, local_results = local_run
    results = run_training(tiny_cfg(), tmp_path, ["standard"], verbose=False,
                           runtime=_rt(num_workers=1, learner_actor=True))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (local_out, tmp_path))
    assert learning_history(b["history"]) == learning_history(a["history"])
    assert results["standard"] == local_results["standard"]


def _local_history(cfg):
    state = build_state(cfg)
    meta_train(state, LocalSampler(cfg, cfg.seed))
    return learning_history(state.history)


@pytest.mark.parametrize("max_restarts", [3, 0], ids=["ray-restarts-it", "sampler-replaces-it"])
def test_worker_killed_mid_iteration(ray_local, max_restarts):
    cfg = tiny_cfg(iterations=3, meta_batch_size=6, episodes=10)
    sampler = RaySampler(cfg, _rt(worker_max_restarts=max_restarts), 2, f"kill{max_restarts}")
    try:
        victim = sampler.info()[0]
        killed = {}

        def kill_soon(st, m):  # after iteration 1: SIGKILL worker 0 while iteration 2 is sampling
            if st.iteration == 1:
                def kill():
                    time.sleep(0.3)
                    os.kill(victim["pid"], signal.SIGKILL)
                    killed["at"] = time.monotonic()
                threading.Thread(target=kill, daemon=True).start()
            elif st.iteration == 2:
                killed["iteration_2_done"] = time.monotonic()

        state = build_state(cfg)
        meta_train(state, sampler, kill_soon, add_experience=count_experience)
        assert killed["at"] < killed["iteration_2_done"]  # the kill landed mid-iteration
        assert learning_history(state.history) == _local_history(cfg)  # nothing lost, nothing duplicated
        first = sampler.info()[0]
        assert first["pid"] != victim["pid"]
        if max_restarts:  # Ray restarted the same actor and retried its calls
            assert first["name"] == victim["name"] and sampler.replacements == 0
        else:  # restarts exhausted: the sampler started a replacement and resubmitted the tasks
            assert first["name"].endswith("rollout-0-r1") and sampler.replacements == 1
    finally:
        sampler.stop()


def test_hung_worker_is_replaced(ray_local):
    cfg = tiny_cfg(meta_batch_size=4)
    local = LocalSampler(cfg, cfg.seed)
    weights = build_state(cfg).learner.get_weights()
    local.set_weights(weights, 0)
    expected = local.sample_tasks(build_state(cfg).train_tasks[:4])
    sampler = RaySampler(cfg, _rt(sample_timeout_s=3.0, max_worker_failures=1), 2, "hang")
    try:
        hung = sampler.workers[0]
        hung.handle.__ray_call__.remote(lambda self: time.sleep(120))  # blocks the actor's only thread
        sampler.set_weights(weights, 0)
        assert_same_batches(sampler.sample_tasks(build_state(cfg).train_tasks[:4]), expected)
        assert sampler.replacements == 1 and sampler.workers[0].name.endswith("rollout-0-r1")
    finally:
        sampler.stop()


def test_timeouts_give_clear_errors(ray_local):
    cfg = tiny_cfg(episodes=10)
    sampler = RaySampler(cfg, _rt(sample_timeout_s=0.05, max_worker_failures=0), 1, "timeout")
    sampler.set_weights(build_state(cfg).learner.get_weights(), 0)
    with pytest.raises(SamplingError, match=r"rollout-0 returned nothing for 0.05 s \(sample_timeout_s\)"):
        sampler.sample_tasks(build_state(cfg).train_tasks[:2])
    assert sampler.workers == []  # gave up and cleaned up

    @ray.remote(num_cpus=0)
    def slow():
        time.sleep(30)

    with pytest.raises(ActorCallTimeout, match="experience buffer stats did not return within 0.2 s"):
        get(slow.remote(), 0.2, "experience buffer stats")


def _block(episode: int, task: int = 0, n: int = 10) -> dict:
    return {"obs": np.full((n, 2), episode, np.float32), "action": np.zeros((n, 2), np.float32),
            "reward": np.ones(n, np.float32), "done": np.arange(n) == 0, "logp": np.zeros(n, np.float32),
            "advantage": np.zeros(n, np.float32), "task_id": np.full(n, task, np.int64),
            "episode_id": np.full(n, episode, np.int64), "step": np.arange(n, dtype=np.int32)}


def test_buffer_actor_restart_restores_snapshot(ray_local, tmp_path):
    every = 2
    buf = create_buffer(1000, 2, 2, False, "bufkill", snapshot_dir=tmp_path, snapshot_every_adds=every,
                        snapshot_every_s=1e9)
    try:
        for ep in range(5):
            get(buf.handle.add.remote(_block(ep), key=f"0:{ep}"), 30, "add")
        before = buf.stats()
        assert (before["adds"], before["snapshot_adds"], before["size"]) == (5, 4, 50)
        os.kill(before["pid"], signal.SIGKILL)
        after = get(buf.handle.stats.remote(), 60, "stats after restart")  # Ray restarts it (max_restarts)
        assert after["pid"] != before["pid"] and after["restored"]["from"] == "snapshot"
        # bounded loss: only adds completed after the last snapshot (< snapshot_every_adds) are gone
        lost = before["adds"] - after["adds"]
        assert lost == 1 and lost < every and after["size"] == 40
        state = get(buf.handle.state_dict.remote(), 30, "state")
        assert sorted(set(state["episode_id"].tolist())) == [0, 1, 2, 3]
        # a retried add of a block the snapshot already holds is skipped; the lost one can be re-added
        get(buf.handle.add.remote(_block(3), key="0:3"), 30, "dup")
        get(buf.handle.add.remote(_block(4), key="0:4"), 30, "re-add")
        final = buf.stats()
        assert final["size"] == 50 and final["duplicates_skipped"] == 1
        seq = get(buf.handle.sample_sequences.remote(4, 10, 0, episode_start=True), 30, "sample")
        assert seq["obs"].shape == (4, 10, 2) and seq["mask"].all()
    finally:
        buf.close()
    assert not list(tmp_path.glob("bufkill*"))
