"""``RayBackend``: the Ray side of :func:`~ssm_metarl_ray.training.experiment.run_experiment`
(``runtime.make_backend`` picks it or the in-process ``LocalBackend`` from a :class:`RuntimeConfig`).

The backend starts a :class:`~ssm_metarl_ray.runtime.session.RaySession` (buffer actor, rollout workers,
with ``learner_gpus`` / ``learner_actor`` a learner actor) once the run's state exists, and evaluates:

* at the end of a run (``final=True``): the rollout workers are stopped and their CPUs go to
  ``num_evaluators`` evaluator actors (default: as many as workers);
* during a run (a Tune trial's reports): ``num_evaluators`` evaluator actors of ``cpus_per_evaluator``
  CPUs started for this evaluation and killed after it, or with ``num_evaluators=0`` in this process,
  replaying from the buffer actor with the evaluators' seeds (the same numbers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.runtime.cluster import get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.evaluation import evaluate_parallel
from ssm_metarl_ray.runtime.session import RaySession
from ssm_metarl_ray.training.evaluate import Evaluator, summarize
from ssm_metarl_ray.training.meta_train import TrainState
from ssm_metarl_ray.training.protocols import Buffer, Sampler
from ssm_metarl_ray.types import TaskBatch


class RayBackend:
    """Sampling, buffer, evaluation (and optionally the learner) on Ray, as ``rt`` says. ``out``: the run's
    output directory (default place of the buffer snapshots)."""

    def __init__(self, rt: RuntimeConfig, out: Path | None = None):
        self.rt, self.out = rt, out
        self.session: RaySession | None = None
        self.sampler: Sampler
        self.buffer: Buffer
        self._report: dict = {}

    def open(self, state: TrainState, initial_buffer: Path | None = None) -> None:
        self.session = RaySession(state.cfg, self.rt, state.spec, self.out, initial_buffer=initial_buffer)
        assert self.session.sampler is not None and self.session.buffer is not None  # set by RaySession
        self.sampler, self.buffer = self.session.sampler, self.session.buffer
        state.learner = self.session.learner(state.learner)

    def _session(self) -> RaySession:
        if self.session is None:
            raise RuntimeError("RayBackend.open must be called first")
        return self.session

    def add_experience(self, state: TrainState, batches: list[TaskBatch]) -> None:
        self._session().add_experience(state, batches)

    def evaluate(self, state: TrainState, modes: list[str], progress: bool = False,
                 final: bool = False) -> dict[str, dict]:
        session = self._session()
        weights, version = state.learner.get_weights(), state.learner.version
        if final:
            return session.evaluate(weights, version, state.test_tasks, modes, progress=progress)
        if self.rt.num_evaluators == 0:
            return evaluate_here(state, weights, version, modes, session)
        assert session.sampler is not None  # set by RaySession
        return evaluate_parallel(state.cfg, weights, version, state.test_tasks, modes, self.rt,
                                 num_evaluators=self.rt.num_evaluators or len(session.sampler.workers) or 1,
                                 run_id=f"{session.run_id}:eval{state.iteration}",
                                 buffer_name=session.buffer.name if session.buffer is not None else None,
                                 progress=progress)

    def describe(self) -> str | None:
        return self._session().describe()

    def report(self) -> dict:
        return {"buffer": self.session.buffer_report()} if self.session is not None else {}

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def evaluate_here(state: TrainState, weights: dict, version: int, modes: list[str], session: RaySession
                  ) -> dict[str, dict]:
    """``evaluate_parallel`` done in this process: the same Evaluator seeds and the same replay from the
    run's buffer actor, so the numbers are identical."""
    assert session.buffer is not None  # set by RaySession
    cfg, handle, timeout = state.cfg, session.buffer.handle, session.rt.call_timeout_s
    seed = cfg.seed + 1
    evaluator = Evaluator(cfg, seed=seed)
    evaluator.set_weights(weights, version)

    def replay_source(task: Task):
        rng = np.random.default_rng([seed, task.index, 1])

        def source(n: int, seq_len: int, trials: bool = False):
            ref = handle.sample_sequences.remote(n, seq_len, int(rng.integers(2**63)), episode_start=not trials,
                                                 trial_start=trials)
            seq = get(ref, timeout, "experience buffer sample_sequences")
            return None if seq is None else {k: np.array(v) for k, v in seq.items()}

        return source

    return {mode: summarize([evaluator.evaluate([t], mode, None,
                                                replay_source=replay_source(t) if mode == "hybrid" else None)[0]
                             for t in state.test_tasks])
            for mode in modes}
