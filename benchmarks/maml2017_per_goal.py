"""MAML 2017's published per-goal returns, read from its own result files (cbfinn/maml_rl, ``icml/``).

MAML's figures 4 and 5 were drawn from pickles its test scripts wrote (``maml_examples/test_maml_point.py``,
``test_maml_cheetah_direc.py``): ``{"task_avg_returns": [[return of goal g after s steps] ...]}``, one list
per adaptation step, 40 test goals each, drawn with ``np.random.seed(1)`` (navigation: uniform in
[-0.5, 0.5]^2; halfcheetah-dir: uniform in [0, 2], "backward" below 1.0 as
``HalfCheetahEnvRandDirec.reset`` reads it). Each is ONE meta-trained policy (one training run's snapshot,
e.g. ``itr_100.pkl`` on halfcheetah-dir) adapted once per goal. This script summarises them per step: mean,
s.e.m. and median over goals, the worst goal, the correlation with the goal's distance and every goal's
return with the goals themselves (navigation; ``learning_report.py`` bins them by distance), and the mean
per direction (halfcheetah-dir), so our per-seed numbers can be compared with what one MAML run
gave and how its goals spread.

The pickles are loaded with an unpickler that admits numpy's array reconstruction only (nothing else is
imported or called). Needs a clone of cbfinn/maml_rl:

  python benchmarks/maml2017_per_goal.py --maml-repo /path/to/maml_rl   # -> results/maml2017_per_goal.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FILES = {"navigation-2d": "icml/icml_point_results_{}.pkl", "halfcheetah-dir": "icml/icml_cheetahdirec_results_{}.pkl"}
ROWS = ("maml", "pretrain", "random", "oracle")
_NUMPY_OK = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
             ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy._core.multiarray", "scalar")}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_OK:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a result pickle")
        return getattr(importlib.import_module(module), name)


def load_returns(path: Path) -> np.ndarray:
    """(steps, goals) returns of one of MAML's result pickles."""
    with path.open("rb") as f:
        data = _NumpyOnly(f, encoding="latin1").load()
    return np.asarray(data["task_avg_returns"], dtype=np.float64)


def test_goals(env: str) -> np.ndarray:
    """The 40 test goals of MAML's test script for ``env`` (its ``np.random.seed(1)`` draw)."""
    rng = np.random.RandomState(1)
    if env == "navigation-2d":
        return rng.uniform(-0.5, 0.5, size=(40, 2))
    return rng.uniform(0.0, 2.0, size=(40,))


def summarise(env: str, returns: np.ndarray) -> list[dict]:
    """Per adaptation step: mean, s.e.m., median, worst goal; distance correlation or per-direction means."""
    goals = test_goals(env)
    out = []
    for s, r in enumerate(returns):
        row = {"step": s, "mean": r.mean(), "sem": r.std() / np.sqrt(len(r)), "median": float(np.median(r)),
               "min": r.min()}
        if env == "navigation-2d":
            row["corr_with_goal_distance"] = float(np.corrcoef(np.linalg.norm(goals, axis=1), r)[0, 1])
            row["returns"] = [round(float(x), 3) for x in r]  # per goal, in test_goals' order
        else:
            fwd = goals >= 1.0
            row.update(forward_goals=int(fwd.sum()), forward_mean=r[fwd].mean(), backward_mean=r[~fwd].mean())
        out.append({k: round(float(v), 3) if isinstance(v, float | np.floating) else v for k, v in row.items()})
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maml-repo", required=True, help="a clone of github.com/cbfinn/maml_rl")
    p.add_argument("--out", default=str(HERE / "results" / "maml2017_per_goal.json"))
    a = p.parse_args(argv)
    repo = Path(a.maml_repo)
    result: dict = {"source": "github.com/cbfinn/maml_rl icml/*.pkl (MAML 2017's figure data)",
                    "command": "python benchmarks/maml2017_per_goal.py --maml-repo <clone of cbfinn/maml_rl>"}
    result["test_goals"] = {"navigation-2d": np.round(test_goals("navigation-2d"), 6).tolist()}
    for env, pattern in FILES.items():
        result[env] = {}
        for row in ROWS:
            path = repo / pattern.format(row)
            if path.exists():
                result[env][row] = summarise(env, load_returns(path))
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    for env in FILES:
        for row, steps in result[env].items():
            print(env, row, [s["mean"] for s in steps], file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
