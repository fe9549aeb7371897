"""SSM-MetaRL-Unified's ``experiments/serious_benchmark.py``: a thin shim onto ``ssm-metarl benchmark``.

    python experiments/serious_benchmark.py --task halfcheetah-vel --method ssm --adaptation_mode hybrid \\
        --epochs 50 [--buffer_size 20000 --experience_weight 0.1] [--smoke]

See ``ssm-metarl benchmark --help`` (module ``ssm_metarl_ray.benchmark_cli``); not packaged.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout: this repository's package
from ssm_metarl_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
