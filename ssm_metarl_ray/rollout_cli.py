"""The ``ssm-metarl rollout`` subcommand: record one episode of a checkpoint's policy on a held-out task.

    ssm-metarl rollout --checkpoint runs/cheetah/checkpoint --task 3 --adapt-steps 1 --record cheetah.gif

MuJoCo families (halfcheetah-*, ant-*) write a GIF, or an MP4 where imageio has an encoder
(``imageio-ffmpeg`` or ``av``); a navigation-2d checkpoint writes the plot of the task's paths before and
after each adaptation step to a ``.png``. Rendering uses MuJoCo's offscreen renderer through the
``MUJOCO_GL`` backend (``egl``, ``osmesa`` or ``glfw``; unset or ``disable``: the first that works).
The work is :func:`ssm_metarl_ray.viz.record_rollout`; this module holds only the command plumbing and
imports nothing heavy until the command runs. Standalone: ``python -m ssm_metarl_ray.rollout_cli FLAGS``.
"""

from __future__ import annotations

import argparse
import sys


def add_rollout_parser(subparsers) -> argparse.ArgumentParser:
    """The ``rollout`` subparser (no torch / MuJoCo import)."""
    p = subparsers.add_parser("rollout", help="record one episode of a checkpoint's policy on a held-out "
                              "task, before or after standard adaptation (GIF/MP4; navigation-2d: paths PNG)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="checkpoint directory written by `train` (or its run directory)")
    p.add_argument("--task", type=int, required=True, metavar="K",
                   help="held-out task index, 0-based (the K-th entry of metrics.json's per_task)")
    p.add_argument("--record", required=True, metavar="PATH",
                   help="output file: .gif or .mp4 (MuJoCo families), .png (navigation-2d paths plot)")
    p.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                   help="standard adaptation steps before the recorded episode (default 0: the meta-policy)")
    p.add_argument("--episodes-per-step", type=int, default=None, metavar="N",
                   help="fresh episodes per adaptation step (default: the run's --episodes-per-step)")
    p.add_argument("--size", default="480x320", metavar="WxH",
                   help="video frame size in pixels (default 480x320)")
    return p


def _size(text: str) -> tuple[int, int]:
    """``"480x320"`` -> ``(480, 320)``; ``UsageError`` for anything else."""
    from ssm_metarl_ray.cli import UsageError

    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and 16 <= int(w) <= 4096 and 16 <= int(h) <= 4096):
        raise UsageError(f"--size must be WIDTHxHEIGHT in pixels, each in [16, 4096], got {text!r}")
    return int(w), int(h)


def cmd_rollout(args: argparse.Namespace) -> int:
    """Record as the flags say and print one line; bad input is a ``UsageError`` (a missing or unreadable
    checkpoint a ``CheckpointError``), raised before anything is written."""
    from ssm_metarl_ray.cli import UsageError
    from ssm_metarl_ray.viz import RecordingError, describe_recording, record_rollout

    width, height = _size(args.size)
    try:
        rec = record_rollout(args.checkpoint, args.task, args.record, adapt_steps=args.adapt_steps,
                             episodes_per_step=args.episodes_per_step, width=width, height=height)
    except RecordingError as e:
        raise UsageError(str(e)) from None
    print(describe_recording(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ssm_metarl_ray.rollout_cli FLAGS``: the subcommand without the main CLI (same errors)."""
    from ssm_metarl_ray.cli import UsageError, _Parser
    from ssm_metarl_ray.utils.checkpoint import CheckpointError

    parser = _Parser(prog="ssm-metarl")
    add_rollout_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    try:
        return cmd_rollout(parser.parse_args(["rollout", *(sys.argv[1:] if argv is None else argv)]))
    except (UsageError, CheckpointError) as e:
        print(f"ssm-metarl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
