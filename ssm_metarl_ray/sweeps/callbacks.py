"""Tune callbacks of the sweep driver (imported only where Ray Tune is: ``runner._make_tuner``)."""

from __future__ import annotations

import sys

from ray import tune


class CheckpointLog(tune.Callback):
    """One stderr line per checkpoint the driver has registered: from that point ``--resume`` continues
    the trial from it (a checkpoint folder on storage that the driver has not registered yet does not
    count, and an interrupt before this line restarts that trial)."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        done = (trial.last_result or {}).get("iteration", "?")
        print(f"checkpoint: trial {trial.trial_id} at iteration {done} (resumable)", file=sys.stderr,
              flush=True)
