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
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from ssm_metarl_ray.config import ExperimentConfig, build_experiment_config
from ssm_metarl_ray.runtime import make_backend
from ssm_metarl_ray.runtime.backend import RayBackend
from ssm_metarl_ray.runtime.cluster import connect
from ssm_metarl_ray.runtime.config import RuntimeConfig, trial_bundles
from ssm_metarl_ray.runtime.errors import SweepSetupError
from ssm_metarl_ray.training.checkpoint import save_training_checkpoint
from ssm_metarl_ray.training.experiment import run_experiment
from ssm_metarl_ray.training.meta_train import TrainState
from ssm_metarl_ray.training.protocols import Backend, Callback


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
    owns_ray = connect(RuntimeConfig(address=address))
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


def trial_runtime(res: dict, run_id: str) -> RuntimeConfig:
    """The trial's RuntimeConfig from the sweep's ``resources`` (``num_workers: 0``: all in-process)."""
    return RuntimeConfig(num_workers=res["num_workers"], cpus_per_worker=res["cpus_per_worker"],
                         learner_cpus=res["learner_cpus"], num_evaluators=res["num_evaluators"],
                         cpus_per_evaluator=res["cpus_per_evaluator"], run_id=run_id,
                         buffer_snapshot_dir=os.path.join(tempfile.gettempdir(), "ssm_metarl_tune", run_id))


class TuneReport(Callback):
    """Every ``report_every`` iterations and at the last: held-out evaluation, a checkpoint and
    ``tune.report``; a trial restored from its final checkpoint reports it again. ``inject_failure_at``
    raises once (attempts not restored from a checkpoint)."""

    def __init__(self, cfg: ExperimentConfig, settings: dict):
        self.cfg, self.settings = cfg, settings
        self.report_every = settings["report_every"] or cfg.iterations
        self.restored_from = 0
        self.where: dict = {}

    def on_start(self, state: TrainState, backend: Backend) -> None:
        self.restored_from = state.iteration
        pg = ray.util.get_current_placement_group()  # Tune's per-trial group (None outside Tune)
        session = backend.session if isinstance(backend, RayBackend) else None
        self.where = {"placement_group_bundles": len(pg.bundle_specs) if pg is not None else 0,
                      "buffer_actor": session.buffer.name if session and session.buffer is not None else "in-process",
                      "restored_from_iteration": self.restored_from, "runtime": "ray" if session else "local"}

    def on_iteration(self, state: TrainState, metrics: dict, backend: Backend) -> None:
        inject = self.settings.get("inject_failure_at")
        if inject and self.restored_from == 0 and state.iteration == inject:
            raise InjectedFailure(f"injected failure at iteration {state.iteration} (inject_failure_at); "
                                  "Tune retries this trial from its latest checkpoint")
        if state.iteration % self.report_every == 0 or state.iteration == self.cfg.iterations:
            self._report(state, metrics, backend)

    def on_end(self, state: TrainState, backend: Backend) -> None:
        if state.iteration == self.restored_from and state.iteration >= self.cfg.iterations:
            self._report(state, state.history[-1] if state.history else {}, backend)  # restored at the end

    def _report(self, state: TrainState, train_metrics: dict, backend: Backend) -> None:
        results = backend.evaluate(state, list(self.settings["eval_modes"]))
        metrics = {"iteration": state.iteration, "env_steps": state.env_steps, **self.where,
                   **{k: v for k, v in train_metrics.items() if k.startswith("meta/")},
                   **evaluation_metrics(results, self.cfg.adapt.adaptation_mode)}
        with tempfile.TemporaryDirectory(prefix="ssm-tune-ckpt-") as d:
            path = save_training_checkpoint(Path(d) / "checkpoint", state, backend.buffer)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)))


def sweep_trial(config: dict) -> None:
    """The trainable. ``config = {"params": {dotted: value}, "sweep": SweepSpec.trial_settings()}``."""
    settings, params = config["sweep"], config.get("params", {})
    cfg = build_experiment_config(settings["base"], params)
    res = settings["resources"]
    torch.set_num_threads(cfg.num_threads or max(1, int(res["learner_cpus"])))
    run_id = f"tune-{tune.get_context().get_trial_id() or 'local'}"
    backend = make_backend(trial_runtime(res, run_id))
    ckpt = tune.get_checkpoint()
    with ckpt.as_directory() if ckpt is not None else nullcontext(None) as ckpt_dir:
        run_experiment(cfg, backend, [TuneReport(cfg, settings)],
                       resume=Path(ckpt_dir) if ckpt_dir is not None else None)
