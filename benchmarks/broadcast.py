"""Weight-broadcast cost per iteration vs model size: one ``ray.put`` of the learner's weights, then every
rollout worker loads them (``RolloutWorkerActor.set_weights``, a torch ``load_state_dict``).

    python benchmarks/broadcast.py            # -> benchmarks/results/broadcast.json
    python benchmarks/broadcast.py --smoke    # seconds; writes nothing

Sizes: the SSM policy on ``halfcheetah-vel`` at several widths. "per iteration" = put + broadcast to all
workers and wait, i.e. ``RaySampler.set_weights`` + ``RaySampler.broadcast`` (during training the
broadcast rides on the sample requests instead, so this is an upper bound of what an iteration pays).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, start_ray, write  # noqa: E402

ENV = "halfcheetah-vel"


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    from dataclasses import replace

    import ray

    from ssm_metarl_ray.config import ExperimentConfig, MetaConfig, ModelConfig
    from ssm_metarl_ray.runtime.config import RuntimeConfig
    from ssm_metarl_ray.runtime.workers import RaySampler
    from ssm_metarl_ray.training.meta_train import build_state

    widths = [(16, 1, 8)]  # (hidden, layers, SSM modes)
    if not args.smoke:
        widths += [(64, 2, 32), (256, 2, 64), (512, 4, 64), (1024, 4, 128)]
    reps = 3 if args.smoke else 20
    workers = 2
    owns = start_ray(args)
    rows = []
    try:
        for hidden, layers, modes in widths:
            model = ModelConfig(hidden_size=hidden, num_layers=layers, state_size=modes)
            cfg = ExperimentConfig(env=ENV, model=model, meta=replace(MetaConfig(), episodes_per_task=1))
            weights = build_state(cfg).learner.get_weights()
            nbytes = sum(v.nbytes for v in weights.values())
            params = sum(v.size for v in weights.values())
            sampler = RaySampler(cfg, RuntimeConfig(num_workers=workers), workers,
                                 f"bench-broadcast-{hidden}")
            try:
                put_ms, total_ms = [], []
                for v in range(reps + 1):
                    t0 = time.perf_counter()
                    sampler.set_weights(weights, v)  # one ray.put
                    t1 = time.perf_counter()
                    sampler.broadcast()  # every worker loads version v
                    t2 = time.perf_counter()
                    if v:  # v = 0 warms up
                        put_ms.append(1e3 * (t1 - t0))
                        total_ms.append(1e3 * (t2 - t0))
            finally:
                sampler.stop()
            rows.append({"hidden_size": hidden, "num_layers": layers, "state_size": modes,
                         "parameters": int(params),
                         "megabytes": nbytes / 1e6, "put_ms_median": float(np.median(put_ms)),
                         "put_plus_broadcast_ms_median": float(np.median(total_ms)),
                         "put_plus_broadcast_ms_p95": float(np.percentile(total_ms, 95)),
                         "effective_MB_per_s": workers * nbytes / 1e6 / (np.median(total_ms) / 1e3)})
            print(rows[-1], file=sys.stderr)
    finally:
        if owns:
            ray.shutdown()
    data = {"setup": {"env": ENV, "model": "ssm", "workers": workers, "repetitions": reps,
                      "what": "ray.put of the weights + set_weights on every worker, waited for"},
            "results": rows}
    write("broadcast", args, "python benchmarks/broadcast.py", data)
    return data


if __name__ == "__main__":
    main()
