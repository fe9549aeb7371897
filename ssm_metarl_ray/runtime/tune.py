"""Ray Tune for ``ssm-metarl tune``: the Tuner (or ``Tuner.restore``) and the function trainable.

``sweeps/`` describes a sweep without Ray (YAML shape, validation, search space as plain
:class:`~ssm_metarl_ray.sweeps.spec.SearchParam` s, result tables); this module turns that description
into Tune objects, runs it and hands back one plain record per trial (:func:`fit_sweep`).

One trial = meta-training + held-out evaluation (standard and hybrid). Every ``report_every``
meta-iterations (and at the last one) the trial evaluates adaptation on the held-out tasks, saves a
checkpoint (config, weights, learner + optimizer state, RNG states, counters, history, replay buffer) and
calls ``tune.report`` with the metrics and that checkpoint. A retried (``FailureConfig``) or resumed
(``Tuner.restore``) trial starts from ``tune.get_checkpoint()``; ``meta_train`` replays the task-sampling
stream and the samplers seed every chunk on (seed, weights version, slot), so a resumed trial continues
as an uninterrupted one.

Processes of a trial (``resources.num_workers > 0``), each in its own bundle of the trial's placement
group (Tune creates it with ``placement_group_capture_child_tasks=True``, so plain actor creation here
lands in it):

* bundle 0: the trainable (the meta-learner, the driver of ``meta_train``);
* ``num_workers`` bundles: ``RolloutWorkerActor`` s of the Ray runtime (``RaySampler``);
* ``num_evaluators`` bundles: ``EvaluatorActor`` s, started for each evaluation and killed after it
  (``num_evaluators: 0``: the trial evaluates in its own process, same seeds and replay, same numbers);
* the run's named ``ExperienceBufferActor`` (``ssm-metarl:tune-<trial id>:buffer``) needs 0 CPU, so it
  takes no bundle; the runtime places it on this trial's node.

With ``num_workers: 0`` everything (sampling, buffer, evaluation) runs inside the trainable (one bundle).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ssm_metarl_ray.config import build_experiment_config
from ssm_metarl_ray.runtime.cluster import init_ray
from ssm_metarl_ray.runtime.config import RuntimeConfig, trial_bundles
from ssm_metarl_ray.runtime.errors import SweepSetupError
from ssm_metarl_ray.training.meta_train import LocalSampler, TrainState, add_to_buffer, build_state, meta_train
from ssm_metarl_ray.training.run import evaluate_modes, restore_training_state, save_training_checkpoint
from ssm_metarl_ray.utils.checkpoint import BUFFER, load_buffer

NAMESPACE = RuntimeConfig.namespace


# ---- the driver: Tuner, scheduler, callbacks, results -------------------------------------------------
def param_space(spec) -> dict:
    """Tune's param_space of a ``SweepSpec``: its search parameters (``{dotted: SearchParam}``) as Tune
    domains, and the settings every trial needs (stored there, so ``Tuner.restore`` needs no YAML)."""
    make = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    return {"params": {n: make[p.kind](p.values) for n, p in spec.search.items()},
            "sweep": spec.trial_settings()}


def _scheduler(spec):
    if spec.scheduler is None:
        return None
    s = spec.scheduler
    return ASHAScheduler(time_attr="training_iteration", max_t=s["max_t"], grace_period=s["grace_period"],
                         reduction_factor=s["reduction_factor"])


class CheckpointLog(tune.Callback):
    """One stderr line per checkpoint the driver has registered: from that point ``--resume`` continues
    the trial from it (a checkpoint folder on storage that the driver has not registered yet does not
    count, and an interrupt before this line restarts that trial)."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        done = (trial.last_result or {}).get("iteration", "?")
        print(f"checkpoint: trial {trial.trial_id} at iteration {done} (resumable)", file=sys.stderr,
              flush=True)


def _make_tuner(spec, storage: str, exp_path: str, resume: bool, verbose: int):
    trainable = tune.with_resources(sweep_trial, trial_resources)
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise SweepSetupError(f"--resume: {exp_path} holds no restorable Tune experiment")
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable, param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=_scheduler(spec),
                                    num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    time_budget_s=spec.time_budget_s, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=spec.name, storage_path=storage, verbose=verbose,
                                  callbacks=[CheckpointLog()],
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


def _fit(tuner):
    """``tuner.fit()`` and whether Tune stopped it on SIGINT/SIGUSR1.

    Tune replaces the SIGINT handler during ``fit`` and puts the previous one back only when a stop signal
    arrives; a sentinel installed beforehand therefore tells whether that happened."""
    if (threading.current_thread() is not threading.main_thread()
            or int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0"))):
        return tuner.fit(), False

    def sentinel(sig, frame):  # behaves like Python's default handler
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, sentinel)
    try:
        grid = tuner.fit()
        return grid, signal.getsignal(signal.SIGINT) is sentinel
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_cluster(spec, owns_ray: bool, storage: str, is_local: bool) -> float:
    """Fail early where trials could never be placed; returns the cluster's CPUs."""
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if owns_ray and spec.cpus_per_trial > cpus:  # a local cluster will not grow: Tune would wait forever
        raise SweepSetupError(f"each trial needs {spec.cpus_per_trial:g} CPUs ({spec.bundles()}) but this "
                              f"machine's Ray cluster has {cpus:g}: lower resources in {spec.source}")
    if not owns_ray and is_local and "://" not in storage and len(ray.nodes()) > 1:
        print(f"note: multi-node cluster: {storage} must be shared storage (NFS) visible to every node, "
              "or use an s3:// / gs:// --storage-path", file=sys.stderr)
    return cpus


def _first_line(e) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    # Tune wraps the trial's exception; its last line is "<Type>: <message>"
    return lines[-1].strip() if lines else type(e).__name__


def trial_records(grid) -> list[dict]:
    """One plain record per trial. Status and retry counts come from Tune's Trial objects (same order as
    the ResultGrid); without them (a future Tune), from the results: errored or terminated."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = list(getattr(analysis, "trials", None) or [None] * len(grid))
    out = []
    for res, trial in zip(grid, trials):
        metrics = dict(res.metrics or {})
        out.append({"trial_id": trial.trial_id if trial is not None else metrics.get("trial_id", "?"),
                    "status": trial.status if trial is not None else ("ERROR" if res.error else "TERMINATED"),
                    "num_failures": int(getattr(trial, "num_failures", 0)),
                    "params": dict((trial.config if trial is not None else res.config or {}).get("params", {})),
                    "metrics": metrics, "error": _first_line(res.error) if res.error else None,
                    "path": res.path})
    return out


def fit_sweep(spec, storage: str, exp_path: str, resume: bool, address: str | None, is_local: bool,
              verbose: int = 1) -> tuple[list[dict], bool]:
    """Connect (``address`` / ``RAY_ADDRESS``, else a local cluster with all CPUs), run or restore the
    Tuner; returns (one record per trial, whether a stop signal interrupted it)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    owns_ray = init_ray(address, None, include_dashboard=False, namespace=NAMESPACE)
    try:
        cpus = _check_cluster(spec, owns_ray, storage, is_local)
        print(f"sweep {spec.name}: {spec.num_grid_trials} trial(s), {spec.cpus_per_trial:g} CPU per trial in "
              f"bundles {spec.bundles()}, cluster CPUs {cpus:g}, storage {exp_path}"
              + (" (resuming)" if resume else ""), file=sys.stderr, flush=True)
        grid, interrupted = _fit(_make_tuner(spec, storage, exp_path, resume, verbose))
        return trial_records(grid), interrupted
    finally:
        if owns_ray:
            ray.shutdown()


# ---- the trainable ---------------------------------------------------------------------------------------
class InjectedFailure(RuntimeError):
    """Raised once by ``inject_failure_at`` (tests of FailureConfig retries)."""


def trial_resources(config: dict) -> tune.PlacementGroupFactory:
    """One bundle per process of the trial (see the module docstring); PACK keeps a trial on one node
    when it fits."""
    return tune.PlacementGroupFactory(trial_bundles(config["sweep"]["resources"]), strategy="PACK")


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def evaluation_metrics(results: dict[str, dict], primary: str) -> dict:
    """Flat Tune metrics from ``{mode: summarize(...)}``."""
    out: dict = {}
    for mode, r in results.items():
        mean, sem = r["mean"], r["sem"]
        out.update({f"{mode}/pre_adapt_return": mean[0], f"{mode}/post_adapt_return": mean[-1],
                    f"{mode}/post_adapt_sem": sem[-1], f"{mode}/adapt_gain": mean[-1] - mean[0],
                    f"{mode}/per_task_post": [row[-1] for row in r["per_task"]]})
        out.update({f"{mode}/step_{k}_return": m for k, m in enumerate(mean)})
    p = results[primary]
    out.update({"post_adapt_return": p["mean"][-1], "post_adapt_sem": p["sem"][-1],
                "pre_adapt_return": p["mean"][0], "adapt_gain": p["mean"][-1] - p["mean"][0]})
    if "standard" in results and "hybrid" in results:
        hyb, std = (np.asarray(results[m]["per_task"])[:, -1] for m in ("hybrid", "standard"))
        d = hyb - std
        out["hybrid_minus_standard"] = float(d.mean())
        out["hybrid_minus_standard_sem"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return out


def evaluate_here(cfg, weights: dict, version: int, tasks, modes: list[str], buffer_handle, timeout_s: float
                  ) -> dict[str, dict]:
    """``runtime.evaluation.evaluate_parallel`` done inside the trial (``num_evaluators: 0``): the same
    Evaluator seeds and the same replay from the trial's buffer actor, so the numbers are identical."""
    from ssm_metarl_ray.training.evaluate import Evaluator, summarize

    seed = cfg.seed + 1
    evaluator = Evaluator(cfg, seed=seed)
    evaluator.set_weights(weights, version)

    def replay_source(task):
        rng = np.random.default_rng([seed, task.index, 1])

        def source(n: int, seq_len: int):
            ref = buffer_handle.sample_sequences.remote(n, seq_len, int(rng.integers(2**63)),
                                                        episode_start=True)
            seq = ray.get(ref, timeout=timeout_s)
            return None if seq is None else {k: np.array(v) for k, v in seq.items()}

        return source

    out = {}
    for mode in modes:
        per_task = [evaluator.evaluate([t], mode, None,
                                       replay_source=replay_source(t) if mode == "hybrid" else None)[0]
                    for t in tasks]
        out[mode] = summarize(per_task)
    return out


def _start(cfg, state: TrainState, res: dict, run_id: str):
    """Restore from Tune's checkpoint if there is one; start the trial's Ray session when it has workers.

    Returns ``(session or None, iteration restored from)``."""
    restored_from, session = 0, None
    with ExitStack() as stack:
        ckpt = tune.get_checkpoint()
        ckpt_dir = Path(stack.enter_context(ckpt.as_directory())) if ckpt is not None else None
        if ckpt_dir is not None:
            restore_training_state(state, ckpt_dir)
            restored_from = state.iteration
        initial_buffer = ckpt_dir / BUFFER if ckpt_dir is not None and (ckpt_dir / BUFFER).is_file() else None
        if res["num_workers"] > 0:
            from ssm_metarl_ray.runtime.session import RaySession

            rt = RuntimeConfig(num_workers=res["num_workers"], cpus_per_worker=res["cpus_per_worker"],
                               learner_cpus=res["learner_cpus"], num_evaluators=res["num_evaluators"],
                               namespace=NAMESPACE, run_id=run_id,
                               buffer_snapshot_dir=os.path.join(tempfile.gettempdir(), "ssm_metarl_tune",
                                                                run_id))
            # the buffer actor loads initial_buffer in its constructor (RaySession waits for it)
            session = RaySession(cfg, rt, state.spec, None, initial_buffer=initial_buffer)
        elif initial_buffer is not None and ckpt_dir is not None:  # (initial_buffer is in ckpt_dir)
            state.buffer = load_buffer(ckpt_dir)
    return session, restored_from


def _evaluator(cfg, session, res: dict, modes: list[str], run_id: str) -> Callable[[TrainState], dict]:
    """``evaluate(state) -> {mode: summary}``: in this process, or on the trial's evaluator actors."""

    def evaluate(st: TrainState) -> dict[str, dict]:
        weights = st.learner.get_weights()
        if session is None:
            return evaluate_modes(cfg, weights, st.test_tasks, st.buffer, modes, st.learner.version)
        if res["num_evaluators"] == 0:
            return evaluate_here(cfg, weights, st.learner.version, st.test_tasks, modes, session.buffer.handle,
                                 session.rt.call_timeout_s)
        from ssm_metarl_ray.runtime.evaluation import evaluate_parallel

        return evaluate_parallel(
            cfg, weights, st.learner.version, st.test_tasks, modes, num_evaluators=res["num_evaluators"],
            run_id=f"{run_id}:eval{st.iteration}", buffer_name=session.buffer.name,
            cpus=res["cpus_per_evaluator"], namespace=NAMESPACE, startup_timeout_s=session.rt.startup_timeout_s,
            call_timeout_s=session.rt.call_timeout_s, timeout_s=session.rt.long_call_timeout_s)

    return evaluate


def sweep_trial(config: dict) -> None:
    """The trainable. ``config = {"params": {dotted: value}, "sweep": SweepSpec.trial_settings()}``."""
    settings, params = config["sweep"], config.get("params", {})
    cfg = build_experiment_config(settings["base"], params)
    res = settings["resources"]
    report_every = settings["report_every"] or cfg.iterations
    torch.set_num_threads(cfg.num_threads or max(1, int(res["learner_cpus"])))
    run_id = f"tune-{tune.get_context().get_trial_id() or 'local'}"
    state = build_state(cfg)
    session, restored_from = _start(cfg, state, res, run_id)
    try:
        buffer = session.buffer if session is not None else state.buffer
        pg = ray.util.get_current_placement_group()  # Tune's per-trial group (None outside Tune)
        where = {"placement_group_bundles": len(pg.bundle_specs) if pg is not None else 0,
                 "buffer_actor": session.buffer.name if session is not None else "in-process",
                 "restored_from_iteration": restored_from, "runtime": "ray" if session is not None else "local"}
        evaluate = _evaluator(cfg, session, res, list(settings["eval_modes"]), run_id)

        def report(st: TrainState, train_metrics: dict) -> None:
            metrics = {"iteration": st.iteration, "env_steps": st.env_steps, **where,
                       **{k: v for k, v in train_metrics.items() if k.startswith("meta/")},
                       **evaluation_metrics(evaluate(st), cfg.adapt.adaptation_mode)}
            with tempfile.TemporaryDirectory(prefix="ssm-tune-ckpt-") as d:
                path = save_training_checkpoint(Path(d) / "checkpoint", st, buffer)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)))

        def on_iteration(st: TrainState, m: dict) -> None:
            inject = settings.get("inject_failure_at")
            if inject and restored_from == 0 and st.iteration == inject:
                raise InjectedFailure(f"injected failure at iteration {st.iteration} (inject_failure_at); "
                                      "Tune retries this trial from its latest checkpoint")
            if st.iteration % report_every == 0 or st.iteration == cfg.iterations:
                report(st, m)

        if state.iteration >= cfg.iterations:  # restored from the final checkpoint: report it again
            report(state, state.history[-1] if state.history else {})
            return
        sampler = session.sampler if session is not None else LocalSampler(cfg, seed=cfg.seed)
        meta_train(state, sampler, on_iteration,
                   session.add_experience if session is not None else add_to_buffer)
    finally:
        if session is not None:
            session.close()
