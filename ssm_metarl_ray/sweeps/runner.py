"""``run_sweep``: validated :class:`SweepSpec` -> ``tune.Tuner`` (or ``Tuner.restore``) -> outputs.

Connecting: ``--address`` / ``RAY_ADDRESS`` attach to a running cluster (also what a ``ray job submit``
entrypoint does); otherwise a local cluster is started with all CPUs of this machine. Results go to
``<storage path>/<name>/`` (Tune's experiment folder: trial folders, checkpoints, experiment state);
on a multi-node cluster the storage path must be shared storage (NFS path or ``s3://``/``gs://`` URI),
because Ray no longer syncs trial folders to the head node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ssm_metarl_ray.sweeps import report
from ssm_metarl_ray.sweeps.spec import SweepConfigError, SweepSpec, build_experiment_config

DEFAULT_STORAGE = "runs/tune"
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")


def storage_location(path: str | None) -> tuple[str, bool]:
    """(absolute path or URI, is_local)."""
    path = path or DEFAULT_STORAGE
    if "://" in path:
        return path, path.startswith("file://")
    return str(Path(path).expanduser().resolve()), True


def param_space(spec: SweepSpec) -> dict:
    from ray import tune

    make = {"grid": lambda v: tune.grid_search(list(v)), "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    return {"params": {n: make[p.kind](p.values) for n, p in spec.search.items()},
            "sweep": spec.trial_settings()}


def _scheduler(spec: SweepSpec):
    if spec.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = spec.scheduler
    return ASHAScheduler(time_attr="training_iteration", max_t=s["max_t"], grace_period=s["grace_period"],
                         reduction_factor=s["reduction_factor"])


def _first_line(e) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    # Tune wraps the trial's exception; its last line is "<Type>: <message>"
    return lines[-1].strip() if lines else type(e).__name__


def collect_rows(spec: SweepSpec, grid) -> list[dict]:
    """One row per trial. Status and retry counts come from Tune's Trial objects (same order as the
    ResultGrid); without them (a future Tune), from the results: errored or terminated."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = list(getattr(analysis, "trials", None) or [None] * len(grid))
    rows = []
    for res, trial in zip(grid, trials):
        params = dict((trial.config if trial is not None else res.config or {}).get("params", {}))
        metrics = dict(res.metrics or {})
        status = trial.status if trial is not None else ("ERROR" if res.error else "TERMINATED")
        iterations = build_experiment_config(spec.base, params).iterations
        if status == "TERMINATED" and metrics.get("iteration", iterations) < iterations:
            status = "STOPPED"  # early stopping (ASHA)
        rows.append({"trial_id": trial.trial_id if trial is not None else metrics.get("trial_id", "?"),
                     "status": status, "num_failures": int(getattr(trial, "num_failures", 0)),
                     "params": params, "metrics": metrics,
                     "error": _first_line(res.error) if res.error else None, "path": res.path})
    return rows


def _fit(tuner):
    """``tuner.fit()`` and whether Tune stopped it on SIGINT/SIGUSR1.

    Tune replaces the SIGINT handler during ``fit`` and puts the previous one back only when a stop signal
    arrives; a sentinel installed beforehand therefore tells whether that happened."""
    import signal
    import threading

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


def _check_storage(spec: SweepSpec, storage: str, is_local: bool, exp_path: str, resume: bool) -> None:
    """--resume needs a saved sweep; a fresh sweep must not overwrite one."""
    if not is_local or "://" in storage:
        return
    has_state = Path(exp_path).is_dir() and any(Path(exp_path).glob("experiment_state*.json"))
    if resume and not has_state:
        raise SweepConfigError(f"--resume: no sweep {spec.name!r} to resume in {storage} "
                               f"(nothing at {exp_path})")
    if not resume and has_state:
        raise SweepConfigError(f"{exp_path} already holds sweep {spec.name!r}: pass --resume to continue "
                               "it, or choose another --storage-path")


def _check_cluster(spec: SweepSpec, owns_ray: bool, storage: str, is_local: bool) -> float:
    """Fail early where trials could never be placed; returns the cluster's CPUs."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if owns_ray and spec.cpus_per_trial > cpus:  # a local cluster will not grow: Tune would wait forever
        raise SweepConfigError(f"each trial needs {spec.cpus_per_trial:g} CPUs ({spec.bundles()}) but this "
                               f"machine's Ray cluster has {cpus:g}: lower resources in {spec.source}")
    if not owns_ray and is_local and "://" not in storage and len(ray.nodes()) > 1:
        print(f"note: multi-node cluster: {storage} must be shared storage (NFS) visible to every node, "
              "or use an s3:// / gs:// --storage-path", file=sys.stderr)
    return cpus


def _make_tuner(spec: SweepSpec, storage: str, exp_path: str, resume: bool, verbose: int):
    from ray import tune

    from ssm_metarl_ray.sweeps.callbacks import CheckpointLog
    from ssm_metarl_ray.sweeps.trainable import sweep_trial, trial_dirname, trial_resources

    trainable = tune.with_resources(sweep_trial, trial_resources)
    if resume:
        if not tune.Tuner.can_restore(exp_path):
            raise SweepConfigError(f"--resume: {exp_path} holds no restorable Tune experiment")
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


def run_sweep(spec: SweepSpec, storage_path: str | None = None, resume: bool = False,
              address: str | None = None, output_dir: str | None = None, verbose: int = 1) -> int:
    """Run (or with ``resume`` continue) the sweep; returns the CLI exit code (0, 1, 130; config
    problems raise :class:`SweepConfigError`, exit code 2)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage, is_local = storage_location(storage_path)
    exp_path = f"{storage.rstrip('/')}/{spec.name}"
    _check_storage(spec, storage, is_local, exp_path, resume)

    import ray

    from ssm_metarl_ray.runtime.cluster import init_ray
    from ssm_metarl_ray.sweeps.trainable import NAMESPACE

    owns_ray = init_ray(address, None, include_dashboard=False, namespace=NAMESPACE)
    try:
        cpus = _check_cluster(spec, owns_ray, storage, is_local)
        print(f"sweep {spec.name}: {spec.num_grid_trials} trial(s), {spec.cpus_per_trial:g} CPU per trial in "
              f"bundles {spec.bundles()}, cluster CPUs {cpus:g}, storage {exp_path}"
              + (" (resuming)" if resume else ""), file=sys.stderr, flush=True)
        grid, interrupted = _fit(_make_tuner(spec, storage, exp_path, resume, verbose))
        rows = collect_rows(spec, grid)
    finally:
        if owns_ray:
            ray.shutdown()
    return _finish(spec, rows, interrupted, storage, exp_path, output_dir)


def _finish(spec: SweepSpec, rows: list[dict], interrupted: bool, storage: str, exp_path: str,
            output_dir: str | None) -> int:
    """Print and write the sweep's table, CSV, JSON and heatmap; returns the exit code."""
    # Tune marks the trials it stopped at SIGINT as terminated in the returned grid (the saved experiment
    # state keeps them running, so --resume continues them); trials not yet created are missing from it
    short = [r for r in rows if spec.scheduler is None and r["status"] == "STOPPED"]
    missing = spec.time_budget_s is None and len(rows) < spec.num_grid_trials
    if interrupted or short or missing or any(r["status"] in UNFINISHED for r in rows):
        done = sum(r["status"] == "TERMINATED" for r in rows)
        print(f"ssm-metarl: sweep interrupted ({done} of {spec.num_grid_trials} trial(s) finished); continue "
              f"with: ssm-metarl tune --config {spec.source} --storage-path {storage} --resume",
              file=sys.stderr)
        return 130
    out = Path(output_dir) if output_dir else (Path(exp_path) if "://" not in storage else
                                                Path(DEFAULT_STORAGE) / spec.name)
    paths = report.write_outputs(out, spec, rows, {"storage": exp_path})
    print(f"\nSweep {spec.name}: {len(rows)} trial(s), metric {spec.metric} ({spec.mode}); post-adaptation "
          "returns are means ± s.e.m. over held-out tasks")
    print(report.format_table(spec, rows))
    print("wrote " + ", ".join(str(p) for p in paths.values())
          + ("" if spec.heatmap else " (no heatmap: it needs two grid/choice parameters)"))
    errors = [r for r in rows if r["status"] == "ERROR"]
    if errors:
        print(f"ssm-metarl: {len(errors)} trial(s) failed after {spec.max_failures} retries; first: "
              f"{errors[0]['trial_id']}: {errors[0]['error']}", file=sys.stderr)
        return 1
    return 0

