"""The ``ssm-metarl tune`` subcommand (flags and dispatch; ``ssm_metarl_ray.cli`` only wires them in).

Exit codes: 0 all trials finished; 1 some trials failed after their retries; 2 bad config/flags (one
line, before Ray starts); 130 interrupted (the sweep can be continued with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys


def add_tune_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="Ray Tune sweep: meta-train + held-out evaluation per trial "
                       "(YAML config, see tune_configs/README.md)")
    p.add_argument("--config", required=True, help="sweep YAML, e.g. tune_configs/hybrid_sweep.yaml")
    p.add_argument("--storage-path", default=None,
                   help="where Tune keeps the experiment (default runs/tune; shared storage such as NFS or "
                        "s3://... on multi-node clusters); the sweep lives in <storage-path>/<name>")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep <storage-path>/<name> (unfinished and errored trials "
                        "restart from their latest checkpoints)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to attach to (default: RAY_ADDRESS, else start a local cluster)")
    p.add_argument("--output-dir", default=None,
                   help="where to write results.csv, summary.json, heatmap.png "
                        "(default: the experiment folder)")
    return p


def cmd_tune(args: argparse.Namespace) -> int:
    """Validate the YAML (one-line error, exit 2, nothing started), then run or resume the sweep."""
    from ssm_metarl_ray.sweeps.spec import SweepConfigError, load_sweep

    try:
        spec = load_sweep(args.config)
        if args.address is not None and not args.address.strip():
            raise SweepConfigError("--address must not be empty")
        from ssm_metarl_ray.sweeps.runner import run_sweep

        return run_sweep(spec, storage_path=args.storage_path, resume=args.resume, address=args.address,
                         output_dir=args.output_dir)
    except SweepConfigError as e:
        print(f"ssm-metarl: error: {e}", file=sys.stderr)
        return 2
