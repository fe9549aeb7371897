"""Evaluator actors: held-out tasks split over several :class:`~ssm_metarl_ray.training.evaluate.Evaluator`.

Each task is evaluated exactly as in the local path (same per-task seeds), so ``standard`` results do not
depend on how tasks are split. In ``hybrid`` mode an evaluator keeps its task's own adaptation data in a
private local buffer (``Evaluator.evaluate`` creates a fresh one) and draws meta-training experience from
the shared buffer actor through ``replay_source``; the local path instead adapts against a private copy
of the whole training buffer, so hybrid numbers agree in structure, not digit for digit.
"""

from __future__ import annotations

import os
import time

import numpy as np
import ray

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.runtime.cluster import _first_line, actor_name, get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorCallTimeout, SamplingError
from ssm_metarl_ray.training.evaluate import Evaluator, summarize
from ssm_metarl_ray.utils.progress import Progress


@ray.remote
class EvaluatorActor:
    def __init__(self, cfg: ExperimentConfig, seed: int, name: str, buffer_name: str | None, rt: RuntimeConfig):
        self.evaluator = Evaluator(cfg, seed=seed)
        self.name, self.seed, self.timeout = name, seed, rt.call_timeout_s
        self.buffer = ray.get_actor(buffer_name, namespace=rt.namespace) if buffer_name else None

    def info(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def evaluate(self, weights: dict[str, np.ndarray], version: int, tasks: list[Task], mode: str
                 ) -> list[list[float]]:
        """Per task: mean return before adaptation and after each adaptation step."""
        self.evaluator.set_weights(weights, version)
        out = []
        for task in tasks:  # one call per task: results do not depend on the split
            source = self._replay_source(task) if mode == "hybrid" and self.buffer is not None else None
            out.append(self.evaluator.evaluate([task], mode, None, replay_source=source)[0])
        return out

    def _replay_source(self, task: Task):
        rng = np.random.default_rng([self.seed, task.index, 1])
        buffer = self.buffer
        assert buffer is not None  # evaluate() checks

        def source(n: int, seq_len: int, trials: bool = False):  # whole episodes (trials) of meta-training
            seed = int(rng.integers(2**63))                           # experience (None while empty)
            ref: ray.ObjectRef = buffer.sample_sequences.remote(n, seq_len, seed, episode_start=not trials,
                                                                trial_start=trials)
            seq = get(ref, self.timeout, f"{self.name}: experience buffer sample_sequences")
            return None if seq is None else {k: np.array(v) for k, v in seq.items()}  # writable for torch

        return source


def evaluate_parallel(cfg: ExperimentConfig, weights: dict[str, np.ndarray], version: int, tasks: list[Task],
                      modes: list[str], rt: RuntimeConfig, *, num_evaluators: int, run_id: str,
                      buffer_name: str | None = None, progress: bool = False) -> dict[str, dict]:
    """``{mode: summarize(per_task)}`` like ``training.evaluate.evaluate_modes``; one call per (mode, task),
    spread round-robin over the evaluators (an actor runs its calls in order); ``progress``: a bar / ETA
    lines on stderr as tasks finish. From ``rt``: namespace, CPUs per evaluator, startup / call timeouts
    and the whole evaluation's limit (``long_call_timeout_s``)."""
    n = max(1, min(num_evaluators, len(tasks)))
    timeout_s = rt.long_call_timeout_s
    names = [actor_name(run_id, f"evaluator-{i}") for i in range(n)]
    actors = [EvaluatorActor.options(  # type: ignore[attr-defined]  # an ActorClass at runtime
                  name=name, namespace=rt.namespace, num_cpus=rt.evaluator_cpus, max_restarts=1,
                  max_task_retries=1)  # evaluate() is deterministic: retrying is safe
              .remote(cfg, cfg.seed + 1, name, buffer_name, rt) for name in names]
    try:
        get([a.info.remote() for a in actors], rt.startup_timeout_s, f"starting {n} evaluator actor(s)")
        wref = ray.put(weights)
        jobs = [(mode, i) for mode in modes for i in range(len(tasks))]
        calls = {actors[j % n].evaluate.remote(wref, version, [tasks[i]], mode): (mode, i)
                 for j, (mode, i) in enumerate(jobs)}
        per_task: dict[str, list] = {m: [None] * len(tasks) for m in modes}
        deadline = time.monotonic() + timeout_s
        with Progress(len(jobs), "held-out evaluation (tasks x modes)", enabled=progress) as bar:
            while calls:
                ready, _ = ray.wait(list(calls), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise ActorCallTimeout(f"evaluation of {len(tasks)} tasks did not finish within "
                                           f"{timeout_s:g} s")
                mode, i = calls.pop(ready[0])
                try:
                    per_task[mode][i] = ray.get(ready[0])[0]
                except ray.exceptions.RayError as e:
                    cause = getattr(e, "cause", None) or e
                    raise SamplingError(f"evaluation ({mode}) failed: {_first_line(cause)}") from e
                bar.update()
        return {m: summarize(per_task[m]) for m in modes}
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
