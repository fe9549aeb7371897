"""SSM-MetaRL-Unified's ``python main.py``: a thin shim onto ``ssm-metarl train`` (not packaged).

The original's flags ``--env_name`` (a family, or a gymnasium id such as ``CartPole-v1``),
``--adaptation_mode``, ``--num_epochs``, ``--buffer_size``, ``--experience_batch_size`` and
``--experience_weight`` are train flags; so is every other ``ssm-metarl train`` flag. Anything else is a
one-line error with exit code 2.

    python main.py --env_name CartPole-v1 --adaptation_mode hybrid --num_epochs 10 --buffer_size 5000 \\
        --experience_weight 0.2
"""

import sys

from ssm_metarl_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
