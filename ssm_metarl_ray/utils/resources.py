"""Up-front memory estimate of a run, so sizes that cannot fit fail before any work starts.

The estimate is deliberately rough (within a small factor) but covers every term that grows with a
configurable size: the replay buffer (``adapt.buffer_size``), one meta-iteration's trajectories and the
autograd graph through the inner step (``meta.meta_batch_size`` x ``meta.episodes_per_task`` x horizon x
``model.hidden_size``), the parameters with their per-task adapted copies and optimiser state, and the
task lists (``num_train_tasks``). A run is refused when the estimate exceeds the memory available now.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, cast

from ssm_metarl_ray.config import ExperimentConfig

GIB = 1024**3
# flags naming each term (for the error message)
TERM_FLAGS = {"buffer": "--buffer-size", "trajectories": "--meta-batch-size / --episodes-per-task",
              "autograd graph": "--meta-batch-size / --episodes-per-task / --hidden-size / --num-layers",
              "parameters": "--hidden-size / --num-layers / --state-size",
              "task lists": "--num-train-tasks / --num-test-tasks"}
TASK_BYTES = 1_000  # a Task (a small dict of floats) with its list slot, generously
# saved activations per (time step, hidden unit, layer) through an inner step; with 10 the halfcheetah-dir
# maml2017 mlp run (40 tasks x 20 trajectories x 200 steps) is estimated at 1.7 GiB, its process was seen
# at 1.5 GiB RSS (ps, iteration 95)
GRAPH_FLOATS_PER_UNIT = 10


@dataclass(frozen=True)
class EnvDims:
    obs_dim: int
    act_dim: int  # continuous: action width; discrete: number of actions
    discrete: bool
    horizon: int


def env_dims(env_name: str) -> EnvDims:
    """Dimensions of a task family (builds one env: cheap, no torch)."""
    import numpy as np

    from ssm_metarl_ray.envs import make_env

    env = make_env(env_name)
    try:
        space: Any = env.action_space  # Discrete (has ``n``) or Box
        discrete = hasattr(space, "n")
        act = int(space.n) if discrete else int(np.prod(space.shape))
        obs_shape = cast("tuple[int, ...]", env.observation_space.shape)  # a Box's: set
        return EnvDims(int(np.prod(obs_shape)), act, discrete, int(env.horizon))
    finally:
        env.close()


def _param_count(cfg: ExperimentConfig, dims: EnvDims) -> int:
    m = cfg.model
    h, n_in = m.hidden_size, dims.obs_dim + dims.act_dim + 2
    per_layer = {"mlp": h * h, "gru": 6 * h * h, "lstm": 8 * h * h, "transformer": 12 * h * h,
                 "ssm": h * h + 6 * m.state_size * h}[m.kind]
    e = m.ssm_input_hidden if m.kind == "ssm" else 0  # the SSM's optional tanh input layer
    encoder = n_in * e + e * h if e else n_in * h
    return encoder + m.num_layers * per_layer + h * (2 * dims.act_dim + 2)


def estimate_bytes(cfg: ExperimentConfig, dims: EnvDims) -> dict[str, int]:
    """Bytes per term (see the module docstring); a run needs about their sum."""
    m, meta, a = cfg.model, cfg.meta, cfg.adapt
    row = 4 * (dims.obs_dim + (1 if dims.discrete else dims.act_dim)) + 4 * 4 + 1 + 8 * 2
    steps = meta.meta_batch_size * max(meta.episodes_per_task, a.episodes_per_step) * dims.horizon
    passes = meta.inner_steps + 1
    step_floats = dims.obs_dim + 2 * dims.act_dim + 8
    graph_units = m.hidden_size * m.num_layers + (2 * m.state_size * m.num_layers + m.ssm_input_hidden
                                                   if m.kind == "ssm" else 0)
    params = _param_count(cfg, dims)
    return {
        "buffer": 2 * a.buffer_size * row,  # the ring buffer + one copy while a snapshot is written
        "trajectories": 4 * 2 * passes * steps * step_floats,  # numpy + torch copies, every pass
        "autograd graph": 4 * passes * steps * graph_units * GRAPH_FLOATS_PER_UNIT,
        "parameters": 4 * params * (6 + meta.meta_batch_size * passes),
        "task lists": TASK_BYTES * (cfg.num_train_tasks + cfg.num_test_tasks),
    }


def available_bytes() -> int | None:
    """Memory available to a new allocation now (Linux ``MemAvailable``; else total physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_problem(cfg: ExperimentConfig, dims: EnvDims, available: int | None) -> str | None:
    """A one-line message when the estimated need exceeds ``available`` bytes; else None."""
    if available is None:
        return None
    terms = estimate_bytes(cfg, dims)
    need = sum(terms.values())
    if need <= available:
        return None
    name, biggest = max(terms.items(), key=lambda kv: kv[1])
    return (f"this run needs about {need / GIB:.3g} GiB of memory but {available / GIB:.3g} GiB is available; "
            f"largest part: {name}, {biggest / GIB:.3g} GiB (reduce {TERM_FLAGS[name]})")
