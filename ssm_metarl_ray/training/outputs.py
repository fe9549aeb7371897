"""What a training run writes and prints: ``metrics.json`` + ``adaptation.png`` (:func:`write_outputs`) and
the learning-health part of the progress line (:func:`health_line`)."""

from __future__ import annotations

from pathlib import Path

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.training.evaluate import plot_results
from ssm_metarl_ray.utils.atomic import write_json


def health_line(m: dict) -> str:
    """Learning-health summary of one iteration's metrics: does the inner step move the policy?

    ``step`` is the RMS change of the mean action from one inner step in units of the action std,
    ``inner-kl`` KL(adapted || meta), ``|g|`` the meta-gradient norm by group, ``clip`` the fraction of
    clipped meta-updates (TRPO: rejected steps), ``gate`` (``model.history_gate``) the gate after 0, 1, 2
    inner steps.
    """
    if "health/action_change" not in m:
        return "no inner step"
    groups = " ".join(f"{g} {m[f'grad/{g}']:.2g}" for g in ("core", "actor", "log_std") if f"grad/{g}" in m)
    gates = "/".join(f"{m[f'health/gate_{s}']:.2f}" for s in range(3) if f"health/gate_{s}" in m)
    return (f"step {m['health/action_change']:.3f}std inner-kl {m['health/kl']:.3g} | |g| {groups} | "
            f"clip {100 * m.get('health/clipped_frac', 0.0):.0f}%" + (f" | gate {gates}" if gates else ""))


def write_outputs(out: Path, cfg: ExperimentConfig, results: dict, history: list[dict], extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": cfg.to_dict(), "evaluation": results, "history": history, **extra}
    write_json(out / "metrics.json", metrics, indent=2)
    plot_results(results, out / "adaptation.png",
                 f"{cfg.env} / {cfg.model.kind}: held-out return vs adaptation steps ({cfg.num_test_tasks} tasks)",
                 env=cfg.env)  # MAML 2017's published curve as a reference where the family has one
