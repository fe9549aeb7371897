"""Ray runtime on one node: rollout workers killed (SIGKILL) or hung mid-iteration; training goes on."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from ray_util import assert_same_batches, learning_history, ray_local, rt, tiny_cfg  # noqa: E402,F401

from ssm_metarl_ray.runtime.cluster import get  # noqa: E402
from ssm_metarl_ray.runtime.config import RuntimeConfig  # noqa: E402
from ssm_metarl_ray.runtime.errors import ActorCallTimeout, SamplingError  # noqa: E402
from ssm_metarl_ray.runtime.workers import RaySampler  # noqa: E402
from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, count_experience, meta_train  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180), pytest.mark.usefixtures("ray_local")]


@functools.cache
def _local_history(cfg, tasks_per_chunk):
    state = build_state(cfg)
    meta_train(state, LocalSampler(cfg, cfg.seed, tasks_per_chunk))
    return learning_history(state.history)


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of process ``pid`` in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _kill_once_busy(pid: int, killed: dict, busy_ticks: int = 3, give_up_s: float = 20.0) -> None:
    """SIGKILL ``pid`` as soon as it has used ``busy_ticks`` clock ticks of CPU since this call (it has
    started sampling), not after a fixed delay: a fixed delay lands after the iteration on a fast machine."""
    start, deadline = _cpu_ticks(pid), time.monotonic() + give_up_s
    while _cpu_ticks(pid) - start < busy_ticks and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    killed["at"] = time.monotonic()


@pytest.mark.parametrize("max_restarts", [3, 0], ids=["ray-restarts-it", "sampler-replaces-it"])
def test_worker_killed_mid_iteration(max_restarts):
    cfg = tiny_cfg(iterations=3, meta_batch_size=6, episodes=10)
    sampler = RaySampler(cfg, rt(worker_max_restarts=max_restarts), 2, f"kill{max_restarts}")
    try:
        victim = sampler.info()[0]
        killed = {}

        def kill_soon(st, m):  # after iteration 1: SIGKILL worker 0 once it samples iteration 2
            if st.iteration == 1:
                threading.Thread(target=_kill_once_busy, args=(victim["pid"], killed), daemon=True).start()
            elif st.iteration == 2:
                killed["iteration_2_done"] = time.monotonic()

        state = build_state(cfg)
        meta_train(state, sampler, kill_soon, add_experience=count_experience)
        assert killed["at"] < killed["iteration_2_done"]  # the kill landed mid-iteration
        assert learning_history(state.history) == _local_history(cfg, 3)  # nothing lost, nothing duplicated
        first = sampler.info()[0]
        assert first["pid"] != victim["pid"]
        if max_restarts:  # Ray restarted the same actor and retried its calls
            assert first["name"] == victim["name"] and sampler.replacements == 0
        else:  # restarts exhausted: the sampler started a replacement and resubmitted the tasks
            assert first["name"].endswith("rollout-0-r1") and sampler.replacements == 1
    finally:
        sampler.stop()


def test_hung_worker_is_replaced():
    cfg = tiny_cfg(meta_batch_size=4)
    local = LocalSampler(cfg, cfg.seed, tasks_per_chunk=2)  # as 2 workers split 4 tasks
    weights = build_state(cfg).learner.get_weights()
    local.set_weights(weights, 0)
    expected = local.sample_tasks(build_state(cfg).train_tasks[:4])
    sampler = RaySampler(cfg, rt(sample_timeout_s=3.0, max_worker_failures=1), 2, "hang")
    try:
        hung = sampler.workers[0]
        hung.handle.__ray_call__.remote(lambda self: time.sleep(120))  # blocks the actor's only thread
        sampler.set_weights(weights, 0)
        assert_same_batches(sampler.sample_tasks(build_state(cfg).train_tasks[:4]), expected)
        assert sampler.replacements == 1 and sampler.workers[0].name.endswith("rollout-0-r1")
    finally:
        sampler.stop()


def test_timeouts_give_clear_errors():
    cfg = tiny_cfg(episodes=10)
    sampler = RaySampler(cfg, rt(sample_timeout_s=0.05, max_worker_failures=0), 1, "timeout")
    sampler.set_weights(build_state(cfg).learner.get_weights(), 0)
    # keep the worker busy past the timeout: sampling itself can finish within 0.05 s on a fast machine
    sampler.workers[0].handle.__ray_call__.remote(lambda self: time.sleep(5))
    with pytest.raises(SamplingError, match=r"rollout-0 returned nothing for 0.05 s \(sample_timeout_s\)"):
        sampler.sample_tasks(build_state(cfg).train_tasks[:2])
    assert sampler.workers == []  # gave up and cleaned up

    @ray.remote(num_cpus=0)
    def slow():
        time.sleep(30)

    with pytest.raises(ActorCallTimeout, match="experience buffer stats did not return within 0.2 s"):
        get(slow.remote(), 0.2, "experience buffer stats")




def test_learner_actor_killed_ends_with_one_clear_error():
    """The learner actor holds the only copy of the weights and Adam state since the last checkpoint: its
    death is not silently papered over but one ActorDiedError saying how to continue (never a hang)."""
    from ssm_metarl_ray.runtime.errors import ActorDiedError
    from ssm_metarl_ray.runtime.learner import RemoteLearner
    from ssm_metarl_ray.types import EnvSpec

    cfg = tiny_cfg()
    state = build_state(cfg)
    learner = RemoteLearner(cfg, state.spec, state.learner, "learner-kill",
                            RuntimeConfig(learner_gpus=0, learner_cpus=0, namespace="ssm-test", call_timeout_s=30,
                                          long_call_timeout_s=60, startup_timeout_s=120))
    assert isinstance(state.spec, EnvSpec) and learner.get_weights()
    os.kill(learner.info["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ActorDiedError, match=r"the learner actor died during learner get_weights .*--resume") as e:
        learner.get_weights()
    assert "\n" not in str(e.value) and time.monotonic() - t0 < 30
    learner.close()


def test_evaluator_actor_killed_mid_evaluation_is_retried_exactly():
    """An evaluator actor SIGKILLed while evaluating: Ray restarts it and retries its calls; evaluation is
    deterministic per task, so the results equal those of an undisturbed run (nothing lost, no hang)."""
    from ssm_metarl_ray.runtime.cluster import actor_name
    from ssm_metarl_ray.runtime.evaluation import evaluate_parallel

    cfg = tiny_cfg()
    state = build_state(cfg)
    weights = state.learner.get_weights()
    limits = RuntimeConfig(cpus_per_evaluator=0.5, namespace="ssm-test", startup_timeout_s=120, call_timeout_s=60,
                           long_call_timeout_s=300)
    tasks = state.test_tasks * 10  # 10 calls per evaluator: the kill lands mid-evaluation
    calm = evaluate_parallel(cfg, weights, 0, tasks, ["standard"], limits, num_evaluators=2, run_id="eval-calm")
    killed = {}

    def kill_evaluator_0():
        name = actor_name("eval-kill", "evaluator-0")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                pid = ray.get(ray.get_actor(name, namespace="ssm-test").info.remote(), timeout=30)["pid"]
                break
            except (ValueError, ray.exceptions.RayError):
                time.sleep(0.05)
        _kill_once_busy(pid, killed)  # once it evaluates (a fixed delay can land after the evaluation)
        killed["pid"] = pid

    t = threading.Thread(target=kill_evaluator_0, daemon=True)
    t.start()
    stormy = evaluate_parallel(cfg, weights, 0, tasks, ["standard"], limits, num_evaluators=2, run_id="eval-kill")
    t.join(timeout=60)
    assert "pid" in killed
    assert stormy == calm
