"""What the main job's default meta-update buys: held-out adaptation and learner time of ``ssm-metarl train``
(navigation-2d, SSM, 30 meta-iterations) with its default second-order meta-gradient and 2 clipped steps
against the cheaper updates that bring the learner level with sampling, and against smaller SSM cores
(one layer; half the width), over seeds.

Each run is the README's main job in a fresh process (``benchmarks/main_job.py``'s ``run_job``) with
``--seed S`` and one of ``VARIANTS``' flags; from its ``metrics.json`` it keeps the learner-over-sampling
ratio (median over iterations) and the held-out evaluation the job ends with (20 test tasks, standard
adaptation: return after 0, 1, 2, 3 gradient steps, mean and s.e.m. over tasks). ``summary`` averages each
variant over seeds; ``vs_default`` is the per-seed difference of held-out returns to the default (paired:
same seed, same test tasks), mean and s.e.m. over seeds. The runs are interleaved (seed-major), so a
slower stretch of the VM hits every variant alike.

This is the main job's scale (3e4 env steps per iteration, 30 iterations), not a published protocol: it
says which update the default command should run, not how the library compares with MAML 2017.

    python benchmarks/meta_gradient_order.py          # -> benchmarks/results/meta_gradient_order.json
    python benchmarks/meta_gradient_order.py --smoke  # 2 iterations, one seed, two variants; writes nothing
    python benchmarks/meta_gradient_order.py --seeds 3 4 5 --variants default first_order \
        --add-to benchmarks/results/meta_gradient_order.json  # more seeds, added to the committed result
    python benchmarks/meta_gradient_order.py --seeds 0 1 2 3 4 5 \
        --variants one_layer small_ssm one_layer_first_order \
        --add-to benchmarks/results/meta_gradient_order.json  # more variants, added the same way
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write  # noqa: E402
from main_job import run_job  # noqa: E402

VARIANTS = (("default", []), ("first_order", ["--first-order"]), ("one_outer_step", ["--outer-steps", "1"]),
            ("anil", ["--inner-params", "heads"]),
            # smaller SSM cores: a cheaper update with the default's second-order meta-gradient
            ("one_layer", ["--num-layers", "1"]), ("small_ssm", ["--hidden-size", "32", "--state-size", "16"]),
            ("one_layer_first_order", ["--num-layers", "1", "--first-order"]))
SEEDS = (0, 1, 2)


def _mean_sem(xs: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None for one value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None)


def summarise(runs: list[dict]) -> tuple[dict, dict]:
    """``runs``: one record per (variant, seed) with ``heldout_mean`` (per adaptation step) and
    ``update_over_sample_median`` -> (per-variant means over seeds, per-variant paired differences to
    ``default``: mean and s.e.m. over seeds per adaptation step)."""
    by: dict[str, dict[int, dict]] = {}
    for r in runs:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    summary = {}
    for name, seeds in by.items():
        rs = [seeds[s] for s in sorted(seeds)]
        steps = len(rs[0]["heldout_mean"])
        summary[name] = {"seeds": sorted(seeds),
                         "heldout_mean_by_step": [statistics.fmean(r["heldout_mean"][k] for r in rs)
                                                  for k in range(steps)],
                         "update_over_sample_mean": statistics.fmean(r["update_over_sample_median"] for r in rs),
                         "update_over_sample_range": [min(r["update_over_sample_median"] for r in rs),
                                                      max(r["update_over_sample_median"] for r in rs)]}
    vs_default = {}
    base = by.get("default", {})
    for name, seeds in by.items():
        common = sorted(set(seeds) & set(base))
        if name == "default" or not common:
            continue
        steps = len(base[common[0]]["heldout_mean"])
        diffs = [[seeds[s]["heldout_mean"][k] - base[s]["heldout_mean"][k] for s in common] for k in range(steps)]
        vs_default[name] = {"seeds": common, "by_step": [dict(zip(("mean", "sem"), _mean_sem(d))) for d in diffs]}
    return summary, vs_default


def one_run(variant: str, flags: list[str], seed: int, extra: list[str]) -> dict:
    res, _ = run_job([*extra, "--seed", str(seed), *flags])
    ev = res["evaluation"]["standard"]
    return {"variant": variant, "seed": seed, "command": res["command"], "wall_s": res["wall_s"],
            "update_over_sample_median": res["update_over_sample_median"],
            "sample_s_per_iteration_median": res["sample_s_per_iteration_median"],
            "update_s_per_iteration_median": res["update_s_per_iteration_median"],
            "post_return_last": res["post_return_last"], "heldout_mean": ev["mean"], "heldout_sem": ev["sem"]}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds (default: %(default)s)")
    p.add_argument("--variants", nargs="+", choices=[n for n, _ in VARIANTS], default=[n for n, _ in VARIANTS],
                   help="variants to run (default: all)")
    p.add_argument("--add-to", default=None, metavar="FILE",
                   help="a result file of this script: keep its runs, run only the (variant, seed) pairs it "
                        "lacks, and write the combined result to it")
    args = p.parse_args(argv)
    extra = ["--num_epochs", "2"] if args.smoke else []
    seeds = SEEDS[:1] if args.smoke else tuple(args.seeds)
    variants = VARIANTS[:2] if args.smoke else tuple(v for v in VARIANTS if v[0] in args.variants)
    prior = json.loads(Path(args.add_to).read_text()) if args.add_to else {}
    runs = prior.get("runs", [])
    if args.add_to:
        args.out = args.add_to
    this = " ".join(["python benchmarks/meta_gradient_order.py", *(argv if argv is not None else sys.argv[1:])])
    invocations = [*prior.get("invocations", [prior["command"]] if prior else []), this]
    done = {(r["variant"], r["seed"]) for r in runs}
    runs += [one_run(name, flags, seed, extra) for seed in seeds for name, flags in variants
             if (name, seed) not in done]
    summary, vs_default = summarise(runs)
    data = {"setup": {"command": "ssm-metarl train --seed S <flags>" + (" --num_epochs 2" if args.smoke else ""),
                      "variants": {name: " ".join(flags) for name, flags in VARIANTS},
                      "seeds_by_variant": {name: v["seeds"] for name, v in summary.items()},
                      "heldout": "final evaluation of each run: 20 held-out tasks, standard adaptation, return "
                                 "after 0..3 gradient steps (mean over tasks)"},
            "invocations": invocations, "summary": summary, "vs_default": vs_default, "runs": runs}
    write("meta_gradient_order", args, "python benchmarks/meta_gradient_order.py", data)
    return data


if __name__ == "__main__":
    main()
