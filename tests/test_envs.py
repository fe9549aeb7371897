"""Task-family environments: reward formulas from simulator state, task sampling, splits, horizons,
registry and gymnasium ids. MuJoCo tests are marked ``mujoco`` and kept to a few hundred steps."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest

from ssm_metarl_ray.envs import (
    FAMILIES,
    GYM_IDS,
    MetaEnv,
    Task,
    UnknownEnvError,
    env_names,
    make_env,
    task_family,
    task_splits,
)

PURE = ["navigation-2d", "cartpole-physics"]
MUJOCO = ["halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal", "halfcheetah-vel-rllab",
          "halfcheetah-dir-rllab"]
CONTINUOUS = ["navigation-2d", "cartpole-physics", "halfcheetah-vel", "ant-goal", "halfcheetah-vel-rllab"]
ALL = [pytest.param(n, marks=pytest.mark.mujoco) if n in MUJOCO else n for n in PURE + MUJOCO]
EXPECTED = {  # obs dim, action dim (None = Discrete(2)), horizon, finite task set
    "navigation-2d": (2, 2, 100, False),
    "cartpole-physics": (4, None, 200, False),
    "halfcheetah-vel": (17, 6, 200, False),
    "halfcheetah-dir": (17, 6, 200, True),
    "ant-dir": (105, 8, 200, True),
    "ant-goal": (107, 8, 200, False),
    "halfcheetah-vel-rllab": (20, 6, 200, False),
    "halfcheetah-dir-rllab": (20, 6, 200, True),
}


def _actions(env: MetaEnv, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    if isinstance(env.action_space, gym.spaces.Discrete):
        return [int(a) for a in rng.integers(0, 2, n)]
    lo, hi = env.action_space.low, env.action_space.high
    return [rng.uniform(lo, hi).astype(np.float32) for _ in range(n)]


def _rollout(env: MetaEnv, actions: list, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        observations.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return np.array(observations), np.array(rewards)


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_all_families():
    assert env_names() == PURE + MUJOCO
    assert set(FAMILIES) == set(GYM_IDS) == set(EXPECTED)
    for name, fam in FAMILIES.items():
        assert fam.description and "\n" not in fam.description
        assert GYM_IDS[name].startswith("ssm_metarl_ray/") and GYM_IDS[name] in gym.registry


def test_unknown_env_error_message():
    with pytest.raises(UnknownEnvError) as exc:
        make_env("halfcheetah-velocity")
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "\n" not in msg and "'halfcheetah-velocity'" in msg
    assert all(n in msg for n in env_names())
    with pytest.raises(UnknownEnvError):
        make_env(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_make_env_spaces_and_api(name):
    obs_dim, act_dim, horizon, finite = EXPECTED[name]
    env = make_env(name)
    assert isinstance(env, MetaEnv) and env.family == name
    assert env.horizon == horizon and env.finite_task_set is finite
    assert env.observation_space.shape == (obs_dim,) and env.observation_space.dtype == np.float32
    if act_dim is None:
        assert env.action_space == gym.spaces.Discrete(2)
    else:
        assert env.action_space.shape == (act_dim,)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (obs_dim,) and isinstance(info, dict)
    out = env.step(env.action_space.sample())
    assert len(out) == 5 and out[0].dtype == np.float32 and isinstance(out[1], float)
    assert env.get_task().index == -1  # default task


@pytest.mark.parametrize("name", ALL)
def test_gymnasium_make(name):
    env = gym.make(GYM_IDS[name])
    assert env.spec.max_episode_steps is None  # no TimeLimit: envs enforce their own horizon
    assert isinstance(env.unwrapped, MetaEnv) and env.unwrapped.family == name
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())
    env.close()


# ---------------------------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("name", ALL)
def test_task_sampling_determinism_and_no_global_rng(name):
    env = make_env(name)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = env.sample_tasks(20, np.random.default_rng(7))
    b = env.sample_tasks(20, np.random.default_rng(7))
    c = env.sample_tasks(20, np.random.default_rng(8))
    assert np.array_equal(before, np.random.get_state()[1])  # global RNG untouched
    assert a == b and a != c
    assert [t.index for t in a] == list(range(20))
    assert all(t.family == name and set(t.params) == set(env.task_params) for t in a)
    assert all(type(v) is float for t in a for v in t.params.values())


@pytest.mark.parametrize("name", [n for n in ALL if (n if isinstance(n, str) else n.values[0]) in CONTINUOUS])
def test_task_splits_disjoint_for_continuous(name):
    env = make_env(name)
    train, test = task_splits(env, 30, 10, seed=0)
    assert len(train) == 30 and len(test) == 10
    key = lambda t: tuple(sorted(t.params.items()))  # noqa: E731
    assert not {key(t) for t in train} & {key(t) for t in test}
    assert [t.index for t in train + test] == list(range(40))
    assert task_splits(env, 30, 10, seed=0) == (train, test)
    assert task_splits(env, 30, 10, seed=1) != (train, test)


@pytest.mark.mujoco
@pytest.mark.parametrize("name", ["halfcheetah-dir", "ant-dir"])
def test_direction_tasks(name):
    env = make_env(name)
    dirs = [t.params["direction"] for t in env.sample_tasks(200, np.random.default_rng(0))]
    assert set(dirs) == {-1.0, 1.0} and 70 < dirs.count(1.0) < 130
    train, test = task_splits(env, 4, 4, seed=0)
    assert len(train) == len(test) == 4
    with pytest.raises(ValueError):
        env.set_task(Task(name, 0, {"direction": 0.5}))


@pytest.mark.parametrize("name", ALL)
def test_set_task_validation(name):
    env = make_env(name)
    with pytest.raises(ValueError):
        env.set_task(Task("other-family", 0, dict(env.get_task().params)))
    with pytest.raises(ValueError):
        env.set_task(Task(name, 0, {"bogus": 1.0}))


@pytest.mark.parametrize("name", ALL)
def test_reset_seed_is_deterministic_and_task_option(name):
    env = make_env(name)
    acts = _actions(env, 25)
    o1, r1 = _rollout(env, acts, seed=11)
    o2, r2 = _rollout(env, acts, seed=11)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    task = env.sample_tasks(1, np.random.default_rng(0))[0]
    env.reset(seed=0, options={"task": task})
    assert env.get_task() == task


@pytest.mark.parametrize("name", ALL)
def test_task_changes_rewards_or_dynamics(name):
    env = make_env(name)
    acts = _actions(env, 30)
    tasks = env.sample_tasks(2, np.random.default_rng(3))
    if env.finite_task_set:
        tasks = [Task(name, 0, {"direction": 1.0}), Task(name, 1, {"direction": -1.0})]
    results = []
    for t in tasks:
        env.set_task(t)
        results.append(_rollout(env, acts, seed=5))
    (o1, r1), (o2, r2) = results
    assert o1.shape != o2.shape or not np.allclose(o1, o2) or not np.allclose(r1, r2)


@pytest.mark.parametrize("name", ALL)
def test_horizon_truncation(name):
    env = make_env(name, horizon=7)
    assert env.horizon == 7
    env.reset(seed=0)
    # cartpole alternates pushes so it does not fall within 7 steps
    acts = [i % 2 for i in range(7)] if name == "cartpole-physics" else [np.zeros(env.action_space.shape)] * 7
    flags = [env.step(a)[3] for a in acts]
    assert flags == [False] * 6 + [True]
    env.reset(seed=0)
    assert env.step(acts[0])[3] is False  # reset restarts the step count


@pytest.mark.parametrize("name", ALL)
def test_pickle_keeps_task(name):
    env = make_env(name)
    task = env.sample_tasks(3, np.random.default_rng(1))[2]
    env.set_task(task)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.get_task() == task and clone.horizon == env.horizon
    clone.reset(seed=0)


# ---------------------------------------------------------------------------------------------- navigation
def test_navigation_reward_clipping_and_termination():
    env = make_env("navigation-2d")
    env.set_task(Task("navigation-2d", 0, {"goal_x": 0.25, "goal_y": -0.3}))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, np.zeros(2, np.float32))
    pos = np.zeros(2)
    for a in _actions(env, 20, seed=2) + [np.array([3.0, -7.0]), np.array([-0.5, 0.02])]:
        obs, r, term, trunc, info = env.step(a)
        pos += np.clip(a.astype(np.float64), -0.1, 0.1)
        np.testing.assert_allclose(env.position, pos, atol=1e-12)
        np.testing.assert_allclose(obs, pos.astype(np.float32))
        assert r == pytest.approx(-np.linalg.norm(pos - [0.25, -0.3]), abs=1e-12)
        assert info["distance"] == pytest.approx(-r)
        assert term == bool(np.all(np.abs(pos - [0.25, -0.3]) < 0.01))
    # walk straight to the goal: terminates on arrival with reward ~0
    env.reset()
    steps = [np.array([0.1, -0.1]), np.array([0.1, -0.1]), np.array([0.05, -0.1])]
    terms = [env.step(a)[2] for a in steps]
    assert terms == [False, False, True]


def test_navigation_horizon_default():
    env = make_env("navigation-2d")
    env.reset(seed=0)
    goal = env.goal
    away = -0.1 * np.sign(goal)  # walk away from the goal: never terminates
    out = [env.step(away) for _ in range(100)]
    assert [o[3] for o in out] == [False] * 99 + [True] and not any(o[2] for o in out)


# ---------------------------------------------------------------------------------------------- cartpole
def test_cartpole_nominal_matches_gymnasium():
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    env, ref = make_env("cartpole-physics"), CartPoleEnv()
    obs, _ = env.reset(seed=4)
    ref.reset(seed=0)
    ref.state = env.state.copy()
    for a in [1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]:
        obs, r, term, _, _ = env.step(a)
        robs, rr, rterm, _, _ = ref.step(a)
        np.testing.assert_allclose(env.state, ref.state, rtol=1e-12, atol=1e-12)
        assert r == rr == 1.0 and term == rterm


@pytest.mark.parametrize("param", ["cart_mass", "pole_mass", "pole_length", "gravity"])
def test_cartpole_each_param_changes_dynamics(param):
    env = make_env("cartpole-physics")
    acts = [1, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    base = dict(env.get_task().params)
    traj = []
    for value in (base[param], base[param] * 1.5):
        env.set_task(Task("cartpole-physics", 0, {**base, param: value}))
        env.reset(seed=0)
        traj.append(np.array([(env.step(a), env.state)[1] for a in acts]))
    assert np.abs(traj[0] - traj[1]).max() > 1e-4
    assert env.total_mass == pytest.approx(env.masscart + env.masspole)
    assert env.polemass_length == pytest.approx(env.masspole * env.length)


def test_cartpole_terminates_on_fall():
    env = make_env("cartpole-physics")
    env.reset(seed=0)
    for _ in range(200):
        _, r, term, trunc, _ = env.step(1)
        assert r == 1.0
        if term:
            break
    x, _, theta, _ = env.state
    assert term and not trunc and (abs(x) > 2.4 or abs(theta) > 12 * math.pi / 180)


# ---------------------------------------------------------------------------------------------- MuJoCo
def _com_velocity_x(env) -> float:
    """x-velocity of the torso subtree's centre of mass, via its Jacobian (independent of subtree_linvel)."""
    import mujoco

    jacp = np.zeros((3, env.model.nv))
    mujoco.mj_jacSubtreeCom(env.model, env.data, jacp, env.model.body("torso").id)
    return float(jacp[0] @ env.data.qvel)


def _contact_sq(env) -> float:
    return float(np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2))


@pytest.mark.mujoco
@pytest.mark.parametrize("name", ["halfcheetah-vel", "halfcheetah-dir", "halfcheetah-vel-rllab",
                                  "halfcheetah-dir-rllab"])
def test_halfcheetah_reward_formula(name):
    env = make_env(name)
    rllab = name.endswith("-rllab")
    assert env.dt == pytest.approx(0.01 if rllab else 0.05)  # rllab: one 0.01 s MuJoCo step per action
    env.set_task(env.sample_tasks(1, np.random.default_rng(2))[0])
    p = env.get_task().params
    env.reset(seed=0)
    com_prev = env.data.subtree_com[1, 0]
    acts = _actions(env, 60) + [np.full(6, 3.0)]  # last one out of bounds: clipped
    for a in acts:
        obs, r, term, trunc, info = env.step(a)
        a_c = np.clip(a, -1, 1)
        v = _com_velocity_x(env)
        ctrl = 0.05 * np.sum(a_c.astype(np.float64) ** 2)
        if name.startswith("halfcheetah-vel"):
            expected = -abs(v - p["goal_velocity"]) - ctrl
        else:
            expected = p["direction"] * v - ctrl
        assert r == pytest.approx(expected, abs=1e-8)
        assert info["x_velocity"] == pytest.approx(v, abs=1e-8)
        assert info["reward_run"] + info["reward_ctrl"] == pytest.approx(r)
        assert not term
        # observation = qpos[1:], qvel (17-d); rllab: and the COM of the torso subtree (20-d)
        parts = [env.data.qpos[1:], env.data.qvel] + ([env.data.subtree_com[1]] if rllab else [])
        np.testing.assert_allclose(obs, np.concatenate(parts).astype(np.float32))
        # COM velocity agrees with the finite difference of the COM position (loosely: one step of dt)
        com = env.data.subtree_com[1, 0]
        assert abs((com - com_prev) / env.dt - v) < (0.3 if rllab else 1.5)
        com_prev = com


@pytest.mark.mujoco
def test_rllab_cheetah_resets_with_rllabs_noise():
    """qpos + 0.01 N(0, 1), qvel + 0.1 N(0, 1) around the model's initial state (gymnasium: U(-0.1, 0.1) on
    qpos), and the same tasks as the base family."""
    env, base = make_env("halfcheetah-dir-rllab"), make_env("halfcheetah-dir")
    dq, dv = [], []
    for seed in range(30):
        env.reset(seed=seed)
        dq.append(env.data.qpos - env.init_qpos)
        dv.append(env.data.qvel - env.init_qvel)
    assert 0.007 < np.std(dq) < 0.013 and 0.07 < np.std(dv) < 0.13
    rng = np.random.default_rng
    assert [t.params for t in env.sample_tasks(20, rng(3))] == [t.params for t in base.sample_tasks(20, rng(3))]
    assert task_family("halfcheetah-dir-rllab") == "halfcheetah-dir"  # compared with MAML's published numbers
    assert task_family("halfcheetah-vel-rllab") == "halfcheetah-vel" and task_family("ant-dir") == "ant-dir"


@pytest.mark.mujoco
def test_halfcheetah_dir_reward_flips_and_horizon():
    env = make_env("halfcheetah-dir")
    acts = _actions(env, 200)
    runs = []
    for d in (1.0, -1.0):
        env.set_task(Task("halfcheetah-dir", 0, {"direction": d}))
        env.reset(seed=1)
        out = [env.step(a) for a in acts]
        runs.append(np.array([o[4]["reward_run"] for o in out]))
        assert [o[3] for o in out] == [False] * 199 + [True] and not any(o[2] for o in out)
    np.testing.assert_allclose(runs[0], -runs[1], atol=1e-10)  # same dynamics, mirrored reward


@pytest.mark.mujoco
def test_ant_dir_reward_formula_and_contact_forces():
    env = make_env("ant-dir")
    env.set_task(Task("ant-dir", 0, {"direction": -1.0}))
    env.reset(seed=0)
    saw_contact = False
    for a in _actions(env, 60) + [np.full(8, -2.0)]:
        obs, r, term, trunc, info = env.step(a)
        a_c = np.clip(a, -1, 1).astype(np.float64)
        v = _com_velocity_x(env)
        expected = -1.0 * v - 0.005 * np.sum(a_c**2) - 0.0005 * _contact_sq(env) + 0.05
        assert r == pytest.approx(expected, abs=1e-8)
        assert info["reward_contact"] == pytest.approx(-0.0005 * _contact_sq(env))
        assert term == (not 0.2 <= env.data.qpos[2] <= 1.0)
        # observation = qpos[2:] (13), qvel (14), clip(cfrc_ext[1:]) (78)
        cfrc = np.clip(env.data.cfrc_ext[1:], -1, 1).ravel()
        ref = np.concatenate([env.data.qpos[2:], env.data.qvel, cfrc])
        np.testing.assert_allclose(obs, ref.astype(np.float32))
        saw_contact |= bool(np.abs(env.data.cfrc_ext).sum() > 1e-3 and np.abs(obs[27:]).sum() > 1e-3)
        if term:
            break
    assert saw_contact, "cfrc_ext stayed zero: contact forces are not being computed"


@pytest.mark.mujoco
def test_ant_contact_forces_nonzero_at_rest():
    env = make_env("ant-goal")
    env.reset(seed=0)
    assert np.abs(env.data.cfrc_ext).sum() == 0.0  # spawned in the air
    for _ in range(30):
        obs, r, *_ = env.step(np.zeros(8))
    assert env.data.ncon > 0
    cf = env.data.cfrc_ext[1:]
    assert np.abs(cf).sum() > 1.0 and np.abs(obs[29:]).max() > 0.1
    assert r < -0.0005 * 1e-3  # contact cost is charged


@pytest.mark.mujoco
def test_ant_dir_terminates_when_torso_too_high():
    env = make_env("ant-dir")
    env.reset(seed=0)
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    qpos[2] = 1.5
    env.set_state(qpos, qvel)
    assert env.step(np.zeros(8))[2] is True


@pytest.mark.mujoco
def test_ant_goal_reward_formula():
    env = make_env("ant-goal")
    task = Task("ant-goal", 0, {"goal_x": 1.5, "goal_y": -2.0})
    env.reset(seed=0, options={"task": task})
    out = None
    for a in _actions(env, 60) + [np.full(8, 5.0)]:
        out = env.step(a)
        obs, r, term, trunc, info = out
        a_c = np.clip(a, -1, 1).astype(np.float64)
        l1 = abs(env.data.qpos[0] - 1.5) + abs(env.data.qpos[1] + 2.0)
        expected = -l1 - 0.1 * np.sum(a_c**2) - 0.0005 * _contact_sq(env)
        assert r == pytest.approx(expected, abs=1e-8)
        assert not term
        # observation = full qpos (15, x-y included), qvel (14), clip(cfrc_ext[1:]) (78)
        np.testing.assert_allclose(obs[:15], env.data.qpos.astype(np.float32))
    assert out[4]["reward_goal"] + out[4]["reward_ctrl"] + out[4]["reward_contact"] == pytest.approx(out[1])


@pytest.mark.mujoco
def test_ant_goal_tasks_in_disc():
    env = make_env("ant-goal")
    tasks = env.sample_tasks(2000, np.random.default_rng(0))
    goals = np.array([[t.params["goal_x"], t.params["goal_y"]] for t in tasks])
    r = np.linalg.norm(goals, axis=1)
    assert r.max() <= 3.0 and r.min() >= 0
    assert abs(np.mean(r <= 1.5) - 0.25) < 0.04  # uniform in area: P(r <= R/2) = 1/4


def _saved_model(model) -> bytes:
    """The model as MuJoCo's binary ``.mjb`` bytes: every array, option and statistic of it."""
    import mujoco

    buf = np.zeros(mujoco.mj_sizeModel(model), np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return buf.tobytes()


@pytest.mark.mujoco
@pytest.mark.parametrize("xml", ["half_cheetah.xml", "ant.xml"])
def test_load_model_is_byte_identical_to_gymnasiums_compile(xml):
    """half_cheetah.xml's deprecated settotalmass, applied after compiling, gives the compiler's model."""
    from pathlib import Path

    import mujoco
    from gymnasium.envs.mujoco.mujoco_env import expand_model_path

    from ssm_metarl_ray.envs._mujoco import load_model

    path = expand_model_path(xml)
    assert ("settotalmass" in Path(path).read_text()) == (xml == "half_cheetah.xml")
    assert _saved_model(load_model(path)) == _saved_model(mujoco.MjModel.from_xml_path(path))


@pytest.mark.mujoco
def test_building_mujoco_envs_prints_the_settotalmass_warning_at_most_once():
    """MuJoCo 4 writes a settotalmass deprecation warning to fd 2 at every compile of half_cheetah.xml;
    a subprocess's captured stderr holds everything the C library wrote."""
    import subprocess
    import sys

    code = ("from ssm_metarl_ray.envs import make_env\n"
            "for name in ['halfcheetah-dir', 'halfcheetah-vel', 'ant-dir', 'halfcheetah-dir', 'ant-goal']:\n"
            "    make_env(name).reset(seed=0)\n")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("settotalmass") <= 1, r.stderr


def test_navigation_import_does_not_need_mujoco():
    import subprocess
    import sys

    code = (
        "import sys; import ssm_metarl_ray.envs as E; e = E.make_env('navigation-2d'); e.reset(seed=0); "
        "e.step([0.1, 0.0]); E.make_env('cartpole-physics'); assert 'mujoco' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
