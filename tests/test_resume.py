"""--checkpoint-every and --resume (in-process sampler): a crashed run continues exactly where it stopped."""

from __future__ import annotations

import json

import pytest
from ray_util import learning_history, tiny_cfg
from test_cli import cli

from ssm_metarl_ray.run import run_training
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.training.meta_train import LocalSampler
from ssm_metarl_ray.utils.checkpoint import load_state

pytestmark = pytest.mark.timeout(300)


class CrashingSampler(LocalSampler):
    """Dies while sampling the given (1-based) iteration, like a killed process."""

    def __init__(self, cfg, crash_at: int):
        super().__init__(cfg, cfg.seed)
        self.calls, self.crash_at = 0, crash_at

    def sample_tasks(self, tasks):
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().sample_tasks(tasks)


def test_checkpoint_every_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny_cfg(iterations=3)
    straight = run_training(cfg, tmp_path / "straight", ["standard"], verbose=False)
    run = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, run, ["standard"], verbose=False, sampler=CrashingSampler(cfg, crash_at=3),
                     runtime=RuntimeConfig(num_workers=0, checkpoint_every=1))
    assert load_state(run / "checkpoint")["iteration"] == 2  # the iteration-2 checkpoint survived the crash
    r = cli("train", "--resume", str(run), "--num-workers", "0", "--adaptation-mode", "standard", "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "straight", run))
    assert learning_history(b["history"]) == learning_history(a["history"])  # same data, same updates
    assert b["evaluation"]["standard"] == straight["standard"]
    assert {**b["config"], "output_dir": None} == {**a["config"], "output_dir": None}  # from the checkpoint
    assert b["config"]["output_dir"] == str(run)  # --resume continues in the run's own directory


@pytest.mark.parametrize("args, needle", [
    (["--num-workers", "-1"], "--num-workers must be >= 0"),
    (["--learner-gpus", "-0.5"], "--learner-gpus must be a finite number >= 0"),
    (["--checkpoint-every", "-2"], "--checkpoint-every must be >= 0"),
    (["--num-workers", "0", "--address", "127.0.0.1:6379"], "--address needs Ray workers"),
    (["--sample-timeout", "0"], "--sample-timeout must be > 0"),
    (["--resume", "/nonexistent/run"], "--resume '/nonexistent/run' is not a checkpoint directory"),
])
def test_bad_runtime_flags_one_line_exit_2(tmp_path, args, needle):
    out = tmp_path / "never"
    r = cli("train", *args, "--output-dir", str(out))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_task_warmup_draws_from_the_first_tasks_then_from_all():
    """meta.warmup_iterations / warmup_tasks (a task curriculum): the warm-up iterations draw only the first
    warmup_tasks training tasks; without a warm-up the stream is the plain rng.choice one (so runs made
    before the option reproduce), and a resume replays the same stream."""
    from dataclasses import replace

    import numpy as np

    from ssm_metarl_ray.config import ConfigError, ExperimentConfig, MetaConfig
    from ssm_metarl_ray.training.meta_train import meta_batch_indices

    warm = MetaConfig(meta_batch_size=8, warmup_iterations=3, warmup_tasks=2)
    rng = np.random.default_rng(0)
    draws = [meta_batch_indices(rng, 50, warm, i) for i in range(6)]
    assert all(set(d) <= {0, 1} for d in draws[:3]) and max(np.concatenate(draws[3:])) >= 2
    plain, ref = np.random.default_rng(1), np.random.default_rng(1)
    for i in range(4):
        np.testing.assert_array_equal(meta_batch_indices(plain, 50, MetaConfig(meta_batch_size=8), i),
                                      ref.choice(50, 8))
    with pytest.raises(ConfigError, match="meta.warmup_tasks must be at most num_train_tasks"):
        replace(ExperimentConfig(num_train_tasks=4), meta=replace(warm, warmup_tasks=5)).validate()


def test_in_turn_warmup_trains_on_each_distinct_task_in_turn():
    """meta.warmup_schedule in-turn: the warm-up's equal phases each train on one distinct task (by
    parameters, cycling when there are more phases than distinct tasks), then every task; the rng stream
    after the warm-up is the "pool" schedule's; unequal phases are a ConfigError."""
    from dataclasses import replace

    import numpy as np

    from ssm_metarl_ray.config import ConfigError, ExperimentConfig, MetaConfig
    from ssm_metarl_ray.envs import Task
    from ssm_metarl_ray.training.meta_train import distinct_task_indices, meta_batch_indices

    tasks = [Task("halfcheetah-dir", i, {"direction": d}) for i, d in enumerate([1.0, 1.0, -1.0, 1.0, -1.0])]
    turns = distinct_task_indices(tasks)
    assert turns == [0, 2]
    meta = MetaConfig(meta_batch_size=6, warmup_iterations=8, warmup_tasks=4, warmup_schedule="in-turn")
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    draws = [meta_batch_indices(rng, len(tasks), meta, i, turns) for i in range(10)]
    pool = replace(meta, warmup_schedule="pool")
    refs = [meta_batch_indices(ref, len(tasks), pool, i) for i in range(10)]
    assert [set(d.tolist()) for d in draws[:8]] == [{0}, {0}, {2}, {2}, {0}, {0}, {2}, {2}]
    np.testing.assert_array_equal(draws[8:], refs[8:])
    with pytest.raises(ConfigError, match="meta.warmup_iterations must be a multiple of meta.warmup_tasks"):
        replace(ExperimentConfig(), meta=replace(meta, warmup_iterations=9)).validate()


def test_balanced_meta_batches_hold_each_distinct_task_equally_often():
    """meta.balanced_tasks: every meta-batch after the warm-up draws meta_batch_size / d tasks of each of the
    d distinct parameter sets (with replacement within each), from the same seeded stream on every call (so
    a resumed run replays it); a meta-batch size that d does not divide is a ConfigError."""
    from dataclasses import replace

    import numpy as np

    from ssm_metarl_ray.config import ConfigError, MetaConfig
    from ssm_metarl_ray.envs import Task
    from ssm_metarl_ray.training.meta_train import check_balanced, meta_batch_indices, task_groups

    tasks = [Task("halfcheetah-dir", i, {"direction": d}) for i, d in enumerate([1.0, 1.0, -1.0, 1.0, -1.0, 1.0])]
    groups = task_groups(tasks)
    assert [g.tolist() for g in groups] == [[0, 1, 3, 5], [2, 4]]
    meta = MetaConfig(meta_batch_size=6, balanced_tasks=True, warmup_iterations=2)
    draws = [meta_batch_indices(np.random.default_rng(5), len(tasks), meta, i, (), groups) for i in range(4)]
    for d in draws[2:]:
        assert sorted(tasks[i].params["direction"] for i in d) == [-1.0] * 3 + [1.0] * 3
    assert set(draws[0].tolist()) == {0}  # the warm-up's pool (warmup_tasks 1) is unchanged
    rng = np.random.default_rng(7)
    stream = [meta_batch_indices(rng, len(tasks), meta, i, (), groups) for i in range(8)]
    assert len({tuple(s) for s in stream[2:]}) > 1  # fresh draws every iteration
    check_balanced(meta, groups)
    with pytest.raises(ConfigError, match=r"multiple of the number of distinct training tasks \(2\), got 5"):
        check_balanced(replace(meta, meta_batch_size=5), groups)
