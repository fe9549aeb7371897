"""Learning tests: short seeded meta-training on navigation-2d, evaluated on held-out tasks.

1. MetaMAML (mlp policy, the MAML 2017 setting) adapts: the held-out return after one adaptation step
   is clearly above the return before adaptation, and clearly above a multi-task policy trained
   without meta-learning (same budget, ``inner_steps=0``) and adapted the same way.
2. The SSM policy meta-trained with MetaMAML improves its held-out return through adaptation.
Margins are far below the measured gaps (see the closing notes) but far above seed noise.
"""

from __future__ import annotations

import pytest
import torch

from ssm_metarl_ray.config import AdaptConfig, ExperimentConfig, MetaConfig, ModelConfig
from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, meta_train
from ssm_metarl_ray.training.run import evaluate_modes

pytestmark = pytest.mark.timeout(900)


def _train_and_eval(kind: str, lr: float, inner_steps: int, iterations: int = 20, seed: int = 0) -> list[float]:
    torch.set_num_threads(2)
    cfg = ExperimentConfig(
        env="navigation-2d", iterations=iterations, num_train_tasks=50, num_test_tasks=10, seed=seed,
        model=ModelConfig(kind=kind),
        meta=MetaConfig(meta_batch_size=10, episodes_per_task=10, inner_lr=lr, inner_steps=inner_steps,
                        outer_steps=2),
        adapt=AdaptConfig(adapt_lr=lr, adapt_steps=2, episodes_per_step=10))
    state = build_state(cfg)
    meta_train(state, LocalSampler(cfg, seed))
    held_out = evaluate_modes(cfg, state.learner.policy.state_dict(), state.test_tasks, None, ["standard"])
    return held_out["standard"]["mean"]  # mean return over 10 held-out tasks after 0, 1, 2 steps


def test_maml_adaptation_beats_multitask_pretraining():
    maml = _train_and_eval("mlp", 0.1, inner_steps=1)
    pretrained = _train_and_eval("mlp", 0.1, inner_steps=0)
    print("maml", maml, "multi-task", pretrained)
    assert maml[1] > maml[0] + 50.0  # adaptation raises the held-out return
    assert maml[1] > pretrained[1] + 30.0  # ... more than adapting a multi-task policy
    # After a second step (MAML is meta-trained for one) the two are within seed noise at this budget
    # (measured: -87.0 vs -105.6 and -102.5 vs -95.7 with two sampling seeds), so it is not asserted.


def test_ssm_policy_improves_through_adaptation():
    ssm = _train_and_eval("ssm", 0.02, inner_steps=1)
    print("ssm", ssm)
    assert ssm[1] > ssm[0] + 30.0
    assert ssm[2] > ssm[0] + 40.0
