"""``run_sweep``: validated :class:`SweepSpec` -> Ray Tune (``runtime.tune.fit_sweep``) -> outputs.

Connecting: ``--address`` / ``RAY_ADDRESS`` attach to a running cluster (also what a ``ray job submit``
entrypoint does); otherwise a local cluster is started with all CPUs of this machine. Results go to
``<storage path>/<name>/`` (Tune's experiment folder: trial folders, checkpoints, experiment state);
on a multi-node cluster the storage path must be shared storage (NFS path or ``s3://``/``gs://`` URI),
because Ray no longer syncs trial folders to the head node. This module does not import Ray; the
runtime does the Tune part and hands back one plain record per trial.
"""

from __future__ import annotations

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


def collect_rows(spec: SweepSpec, records: list[dict]) -> list[dict]:
    """Table rows from the runtime's per-trial records: a trial that ended before its last iteration was
    stopped early (ASHA), status STOPPED."""
    rows = []
    for rec in records:
        row = dict(rec)
        iterations = build_experiment_config(spec.base, row["params"]).iterations
        if row["status"] == "TERMINATED" and row["metrics"].get("iteration", iterations) < iterations:
            row["status"] = "STOPPED"  # early stopping (ASHA)
        rows.append(row)
    return rows


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


def run_sweep(spec: SweepSpec, storage_path: str | None = None, resume: bool = False,
              address: str | None = None, output_dir: str | None = None, verbose: int = 1) -> int:
    """Run (or with ``resume`` continue) the sweep; returns the CLI exit code (0, 1, 130; config
    problems raise :class:`SweepConfigError`, exit code 2)."""
    storage, is_local = storage_location(storage_path)
    exp_path = f"{storage.rstrip('/')}/{spec.name}"
    _check_storage(spec, storage, is_local, exp_path, resume)

    from ssm_metarl_ray.runtime.errors import SweepSetupError
    from ssm_metarl_ray.runtime.tune import fit_sweep

    try:
        records, interrupted = fit_sweep(spec, storage, exp_path, resume, address, is_local, verbose)
    except SweepSetupError as e:
        raise SweepConfigError(str(e)) from None
    return _finish(spec, collect_rows(spec, records), interrupted, storage, exp_path, output_dir)


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

