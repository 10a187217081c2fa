"""Numerical checks of the MuJoCo locomotion definitions in envs/locomotion.py (docs/environments.md).

The generic contract (check_env, task kept across resets, set/get round trip, seed determinism) is covered for
every id by test_envs.py; here each env's observation, reward, termination and task distribution is recomputed
from the simulator state and compared with what the env returns.
"""

import os
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCOMOTION_IDS = ("CheetahDir", "CheetahVel", "AntDir", "HumanoidDir", "WalkerRandParams")
SIZES = {  # id: (observation size, action size)
    "CheetahDir": (20, 6),
    "CheetahVel": (20, 6),
    "AntDir": (27, 8),
    "HumanoidDir": (376, 17),
    "WalkerRandParams": (17, 6),
}


def make(env_id, task=None, seed=0, **kwargs):
    """A made env (with its TimeLimit), reset with `seed` and, if given, `task`; its action space is seeded too."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=seed, options=None if task is None else {"task": task})
    env.action_space.seed(seed)
    return env


def torso_xy(env):
    return env.unwrapped.data.body("torso").xpos[:2].copy()


def mass_center_xy(env):
    model, data = env.unwrapped.model, env.unwrapped.data
    com = (model.body_mass[:, None] * data.xipos).sum(axis=0) / model.body_mass.sum()
    return com[:2]


# ---------------------------------------------------------------- observation and action sizes


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_observation_and_action_sizes(env_id):
    obs_size, act_size = SIZES[env_id]
    env = make(env_id)
    assert env.observation_space.shape == (obs_size,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (act_size,) and env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        assert obs.shape == (obs_size,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
        obs, *_ = env.step(env.action_space.sample())
    u = env.unwrapped
    assert u.metadata["render_fps"] == int(np.round(1.0 / u.dt))


def test_observation_layouts_match_the_simulator_state():
    cheetah = make("CheetahDir")
    cheetah.step(cheetah.action_space.sample())
    obs, d = cheetah.unwrapped._get_obs(), cheetah.unwrapped.data
    expected = np.concatenate([d.qpos[1:], d.qvel, d.body("torso").xpos])  # torso body frame, as VariBAD
    np.testing.assert_allclose(obs, expected.astype(np.float32))

    ant = make("AntDir")
    ant.step(ant.action_space.sample())
    d = ant.unwrapped.data
    np.testing.assert_allclose(ant.unwrapped._get_obs(), np.concatenate([d.qpos[2:], d.qvel]).astype(np.float32))

    walker = make("WalkerRandParams")
    walker.unwrapped.data.qvel[:] = np.linspace(-20, 20, 9)  # some entries beyond the +-10 clip
    obs, d = walker.unwrapped._get_obs(), walker.unwrapped.data
    np.testing.assert_allclose(obs, np.concatenate([d.qpos[1:], np.clip(d.qvel, -10, 10)]).astype(np.float32))

    humanoid = make("HumanoidDir")
    for _ in range(12):  # it starts in the air: the feet touch the floor after about 10 steps
        humanoid.step(np.zeros(17, dtype=np.float32))
    m, d = humanoid.unwrapped.model, humanoid.unwrapped.data
    assert m.nbody == 14 and m.nq == 24 and m.nv == 23  # 22 + 23 + 140 + 84 + 23 + 84 = 376
    parts = [d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(), d.qfrc_actuator, d.cfrc_ext.ravel()]
    assert sum(p.size for p in parts) == 376
    np.testing.assert_allclose(humanoid.unwrapped._get_obs(), np.concatenate(parts).astype(np.float32))
    assert np.any(d.cfrc_ext != 0)  # contact forces are computed, not left at zero
    # ... and also in the reset observation: restart from this standing pose (feet on the floor).
    humanoid.unwrapped.init_qpos = d.qpos.copy()
    humanoid.unwrapped.init_qvel = np.zeros(m.nv)
    first, _ = humanoid.reset(seed=1)
    assert np.any(first[-84:] != 0)
    np.testing.assert_allclose(first[-84:], d.cfrc_ext.ravel().astype(np.float32))


# ---------------------------------------------------------------- actions: raw cost, clipped physics

# Control cost of the action 3.0 in every dimension. Cheetahs, Ant and Walker charge it on the raw action
# (authors: 0.05 |a|^2, 0.5 |a|^2, 1e-3 |a|^2); HumanoidDir on the applied control 0.4 * clip(a, -1, 1), as
# VariBAD (whose MuJoCo clamped data.ctrl in place before the cost was read).
RAW_THREE_CTRL_COST = {
    "CheetahDir": 0.05 * 9 * 6,  # 2.7
    "CheetahVel": 0.05 * 9 * 6,
    "AntDir": 0.5 * 9 * 8,  # 36.0
    "WalkerRandParams": 1e-3 * 9 * 6,  # 0.054
    "HumanoidDir": 0.1 * 0.4**2 * 17,  # 0.272, the same as for the action 1.0
}


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_control_cost_of_an_action_of_three(env_id):
    env = make(env_id, seed=1)
    act_size = SIZES[env_id][1]
    _, reward, _, _, info = env.step(np.full(act_size, 3.0, dtype=np.float32))
    assert info["reward_ctrl"] == pytest.approx(-RAW_THREE_CTRL_COST[env_id], rel=1e-12)
    others = sum(value for key, value in info.items() if key.startswith("reward_") and key != "reward_ctrl")
    assert reward == pytest.approx(others + info["reward_ctrl"], abs=1e-9)  # reward_ctrl is the term in the reward


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_the_simulation_sees_the_clipped_action(env_id):
    """From the same state, a raw action and its clip to [-1, 1] give the same next observation and forward reward,
    even with the xml's ctrllimited flags switched off: the env clips before do_simulation, not MuJoCo."""
    act_size = SIZES[env_id][1]
    raw = np.linspace(-3.0, 3.0, act_size).astype(np.float32)
    raw[0] = 3.0
    clipped = np.clip(raw, -1.0, 1.0)
    runs = {}
    for name, action in (("raw", raw), ("clipped", clipped), ("ones", np.ones(act_size, np.float32))):
        env = make(env_id, seed=3)
        env.unwrapped.model.actuator_ctrllimited[:] = 0
        obs, _, _, _, info = env.step(action)
        runs[name] = (obs, info["reward_forward"], env.unwrapped.data.ctrl.copy(), info["reward_ctrl"])
    np.testing.assert_array_equal(runs["raw"][0], runs["clipped"][0])
    assert runs["raw"][1] == runs["clipped"][1]
    np.testing.assert_array_equal(runs["raw"][2], runs["clipped"][2])  # the control MuJoCo was given
    scale = 0.4 if env_id == "HumanoidDir" else 1.0  # HumanoidDir rescales [-1, 1] onto its ctrlrange
    np.testing.assert_allclose(runs["raw"][2], scale * clipped.astype(np.float64), rtol=1e-7)
    assert not np.array_equal(runs["ones"][0], runs["clipped"][0])  # and the action does matter
    if env_id == "HumanoidDir":
        assert runs["raw"][3] == runs["clipped"][3]
    else:
        assert runs["raw"][3] < runs["clipped"][3]  # the raw action costs more


@pytest.mark.parametrize("env_id", ["CheetahDir", "AntDir", "WalkerRandParams", "HumanoidDir"])
def test_three_and_one_give_the_same_next_observation(env_id):
    act_size = SIZES[env_id][1]
    observations = []
    for value in (3.0, 1.0, -3.0, -1.0):
        env = make(env_id, seed=4)
        observations.append(env.step(np.full(act_size, value, dtype=np.float32))[0])
    np.testing.assert_array_equal(observations[0], observations[1])
    np.testing.assert_array_equal(observations[2], observations[3])
    assert not np.array_equal(observations[0], observations[2])


# ---------------------------------------------------------------- Cheetah-Dir / Cheetah-Vel


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_cheetah_dir_reward_is_direction_times_velocity_minus_control_cost(direction):
    env = make("CheetahDir", task=[direction], seed=int(direction > 0))
    dt = env.unwrapped.dt
    assert dt == pytest.approx(0.05)
    for _ in range(25):
        action = env.action_space.sample() * 1.3  # also outside [-1, 1]: the raw action is costed
        x_before = env.unwrapped.data.qpos[0]
        _, reward, terminated, truncated, info = env.step(action)
        velocity = (env.unwrapped.data.qpos[0] - x_before) / dt
        ctrl = 0.05 * np.sum(np.square(action, dtype=np.float64))
        assert reward == pytest.approx(direction * velocity - ctrl, abs=1e-9)
        assert info["forward_velocity"] == pytest.approx(velocity, abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, abs=1e-9)
        assert not terminated and not truncated


def test_cheetah_dir_never_terminates_and_samples_both_directions():
    env = make("CheetahDir", task=[1.0])
    env.unwrapped.data.qpos[2] = 3.0  # upside down: still no termination
    for _ in range(30):
        assert not env.step(env.action_space.sample())[2]
    rng = np.random.default_rng(0)
    tasks = np.array([env.unwrapped.sample_task(rng) for _ in range(400)])
    assert tasks.shape == (400, 1) and set(np.unique(tasks)) == {-1.0, 1.0}
    assert 0.4 < np.mean(tasks == 1.0) < 0.6
    test_tasks = np.array([env.unwrapped.sample_task(rng, split="test") for _ in range(50)])
    assert set(np.unique(test_tasks)) == {-1.0, 1.0}


def test_cheetah_vel_reward_and_target_distribution():
    env = make("CheetahVel", task=[1.7])
    dt = env.unwrapped.dt
    for _ in range(25):
        action = env.action_space.sample()
        x_before = env.unwrapped.data.qpos[0]
        _, reward, terminated, _, info = env.step(action)
        velocity = (env.unwrapped.data.qpos[0] - x_before) / dt
        expected = -abs(velocity - 1.7) - 0.05 * np.sum(np.square(action, dtype=np.float64))
        assert reward == pytest.approx(expected, abs=1e-9)
        assert info["forward_velocity"] == pytest.approx(velocity, abs=1e-9)
        assert not terminated
    rng = np.random.default_rng(1)
    targets = np.concatenate([env.unwrapped.sample_task(rng) for _ in range(2000)])
    assert np.all((targets >= 0.0) & (targets <= 3.0))
    assert targets.min() < 0.05 and targets.max() > 2.95  # U[0, 3], not VariBAD's docstring's [0, 2]
    counts, _ = np.histogram(targets, bins=6, range=(0.0, 3.0))
    assert counts.min() > 250  # spread over the whole interval (expected 333 per bin)
    test_targets = np.concatenate([env.unwrapped.sample_task(rng, split="test") for _ in range(200)])
    assert np.all((test_targets >= 0.0) & (test_targets <= 3.0)) and test_targets.max() > 2.0


# ---------------------------------------------------------------- Ant-Dir


@pytest.mark.parametrize("goal", [1.0, -1.0])
def test_ant_dir_reward_terms(goal):
    env = make("AntDir", task=[goal], seed=2)
    u = env.unwrapped
    direction = np.array([np.cos(goal), np.sin(goal)])  # the angle quirk: (0.540, +-0.841)
    np.testing.assert_allclose(u.direction, direction)
    contact_seen = False
    for _ in range(15):
        action = env.action_space.sample()
        xy_before = torso_xy(env)
        _, reward, terminated, _, info = env.step(action)
        forward = np.dot((torso_xy(env) - xy_before) / u.dt, direction)
        ctrl = 0.5 * np.sum(np.square(action, dtype=np.float64))
        contact = 0.5e-3 * np.sum(np.square(np.clip(u.data.cfrc_ext, -1.0, 1.0)))
        contact_seen |= contact > 0
        assert info["reward_forward"] == pytest.approx(forward, abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, abs=1e-9)
        assert info["reward_contact"] == pytest.approx(-contact, abs=1e-12)
        assert reward == pytest.approx(forward - ctrl - contact + 1.0, abs=1e-9)
        if terminated:
            break
    assert contact_seen  # cfrc_ext is really computed after mj_step (mj_rnePostConstraint)


@pytest.mark.parametrize("goal", [1.0, -1.0])
def test_ant_dir_credits_motion_along_cos_sin_of_the_goal(goal):
    """Push the torso along (cos g, sin g) with zero torques: rewarded for task g, much less for the other task."""
    forwards = {}
    for task in (goal, -goal):
        env = make("AntDir", task=[task], seed=0)
        u = env.unwrapped
        qvel = u.data.qvel.copy()
        qvel[:2] = 2.0 * np.array([np.cos(goal), np.sin(goal)])
        u.set_state(u.data.qpos.copy(), qvel)
        forwards[task] = env.step(np.zeros(8, dtype=np.float32))[4]["reward_forward"]
    assert forwards[goal] > 1.0
    # For the other task the same motion is worth cos(2) < 0 of its speed: the two directions are 2 rad apart.
    assert forwards[-goal] < 0.0


def test_ant_dir_terminates_outside_the_healthy_height():
    env = make("AntDir", task=[1.0])
    assert not env.step(np.zeros(8, dtype=np.float32))[2]
    u = env.unwrapped
    qpos = u.data.qpos.copy()
    qpos[2] = 1.5  # above 1.0; one step of free fall (0.05 s) cannot bring it back
    u.set_state(qpos, np.zeros(u.model.nv))
    _, reward, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert terminated and info["reward_survive"] == 1.0
    rng = np.random.default_rng(0)
    tasks = np.concatenate([u.sample_task(rng) for _ in range(200)])
    assert set(np.unique(tasks)) == {-1.0, 1.0}


# ---------------------------------------------------------------- Humanoid-Dir


def test_humanoid_dir_reward_terms_and_action_rescaling():
    goal = 2.2
    env = make("HumanoidDir", task=[goal], seed=4)
    u = env.unwrapped
    np.testing.assert_allclose(u.model.actuator_ctrlrange, np.tile([-0.4, 0.4], (17, 1)))
    direction = np.array([np.cos(goal), np.sin(goal)])
    for step in range(10):
        action = env.action_space.sample()
        if step == 0:
            action[:3] = [1.5, -2.0, 1.0]  # clipped to [-1, 1] before rescaling
        com_before = mass_center_xy(env)
        _, reward, terminated, _, info = env.step(action)
        ctrl = 0.4 * np.clip(action, -1.0, 1.0)
        np.testing.assert_allclose(u.data.ctrl, ctrl, atol=1e-7)
        # Divides by the simulator timestep (0.003), not dt (0.015): quirk kept from VariBAD.
        forward = 0.25 * np.dot(direction, mass_center_xy(env) - com_before) / u.model.opt.timestep
        ctrl_cost = 0.1 * np.sum(np.square(ctrl))
        contact = min(5e-7 * np.sum(np.square(u.data.cfrc_ext)), 10.0)
        assert info["reward_forward"] == pytest.approx(forward, abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl_cost, abs=1e-7)
        assert info["reward_contact"] == pytest.approx(-contact, abs=1e-12)
        assert reward == pytest.approx(forward - ctrl_cost - contact + 5.0, abs=1e-7)
        assert terminated == (not 1.0 <= u.data.qpos[2] <= 2.0)
    assert u.model.opt.timestep == pytest.approx(0.003) and u.dt == pytest.approx(0.015)


@pytest.mark.parametrize("height, terminated", [(0.6, True), (1.4, False), (2.6, True)])
def test_humanoid_dir_terminates_outside_height_1_to_2(height, terminated):
    env = make("HumanoidDir", task=[0.0])
    u = env.unwrapped
    qpos = u.data.qpos.copy()
    qpos[2] = height
    u.set_state(qpos, np.zeros(u.model.nv))
    assert env.step(np.zeros(17, dtype=np.float32))[2] == terminated


def test_humanoid_dir_goal_angles_cover_zero_to_two_pi():
    env = make("HumanoidDir")
    rng = np.random.default_rng(2)
    goals = np.concatenate([env.unwrapped.sample_task(rng) for _ in range(2000)])
    assert np.all((goals >= 0.0) & (goals < 2 * np.pi))
    counts, _ = np.histogram(goals, bins=8, range=(0.0, 2 * np.pi))
    assert counts.min() > 180  # expected 250 per bin


def test_humanoid_dir_moving_along_the_goal_is_rewarded():
    goal = 0.7
    forwards = []
    for speed in (1.0, -1.0):
        env = make("HumanoidDir", task=[goal], seed=0)
        u = env.unwrapped
        qvel = u.data.qvel.copy()
        qvel[:2] = speed * np.array([np.cos(goal), np.sin(goal)])
        u.set_state(u.data.qpos.copy(), qvel)
        forwards.append(env.step(np.zeros(17, dtype=np.float32))[4]["reward_forward"])
    # 1 m/s along the goal: about 0.25 * 1 * dt / timestep = 1.25 (the quirk makes it 5x the 0.25 * v of dt)
    assert 0.8 < forwards[0] < 1.5
    assert forwards[1] < -0.8


# ---------------------------------------------------------------- WalkerRandParams

PARAMS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
DERIVED = (  # recomputed by mj_setConst from the new masses and inertias
    "body_subtreemass",
    "body_invweight0",
    "dof_invweight0",
    "dof_M0",
    "actuator_acc0",
    "cam_poscom0",
    "light_poscom0",
)


def model_arrays(model):
    out = {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        try:
            value = getattr(model, name)
        except Exception:  # noqa: BLE001  (some attributes are not readable)
            continue
        if isinstance(value, np.ndarray):
            out[name] = value.copy()
    return out


def walker_rollout(env, seed, steps=60):
    """Observations and rewards of the first episode (at most `steps` steps) with seeded random actions."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


def test_walker_task_has_65_multipliers_from_the_model():
    env = make("WalkerRandParams")
    m = env.unwrapped.model
    assert (m.nbody, m.nv, m.ngeom) == (8, 9, 8)
    assert m.body_mass.size + m.body_inertia.size + m.dof_damping.size + m.geom_friction.size == 65
    rng = np.random.default_rng(3)
    tasks = np.array([env.unwrapped.sample_task(rng) for _ in range(500)])
    assert tasks.shape == (500, 65)
    exponents = np.log(tasks) / np.log(np.r_[np.full(32, 1.5), np.full(9, 1.3), np.full(24, 1.5)])
    assert np.all(np.abs(exponents) <= 3.0 + 1e-9)
    assert exponents.min() < -2.9 and exponents.max() > 2.9


def test_walker_set_task_scales_exactly_the_65_parameters():
    env = make("WalkerRandParams")
    u = env.unwrapped
    task = u.sample_task(np.random.default_rng(0))
    u.set_task(np.ones(65))
    before = model_arrays(u.model)
    u.set_task(task)
    after = model_arrays(u.model)
    np.testing.assert_allclose(after["body_mass"], before["body_mass"] * task[:8], rtol=1e-12)
    np.testing.assert_allclose(after["body_inertia"], before["body_inertia"] * task[8:32].reshape(8, 3), rtol=1e-12)
    np.testing.assert_allclose(after["dof_damping"], before["dof_damping"] * task[32:41], rtol=1e-12)
    np.testing.assert_allclose(after["geom_friction"], before["geom_friction"] * task[41:].reshape(8, 3), rtol=1e-12)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert set(PARAMS) <= changed
    assert changed <= set(PARAMS) | set(DERIVED)  # only MuJoCo's derived constants (mj_setConst) move with them
    np.testing.assert_array_equal(u.get_task(), task)
    # Always relative to the original model: setting a task twice, or going back to ones, is exact.
    u.set_task(task)
    for name in PARAMS:
        np.testing.assert_array_equal(getattr(u.model, name), after[name])
    u.set_task(np.ones(65))
    for name, value in before.items():
        np.testing.assert_array_equal(model_arrays(u.model)[name], value, err_msg=name)
    with pytest.raises(ValueError):
        u.set_task(-np.ones(65))


def test_walker_same_task_same_physics_different_task_different_physics():
    env = make("WalkerRandParams")
    u = env.unwrapped
    rng = np.random.default_rng(11)
    task_a, task_b = u.sample_task(rng), u.sample_task(rng)
    u.set_task(task_a)
    obs_a1, rew_a1 = walker_rollout(env, seed=5)
    u.set_task(task_b)
    obs_b, rew_b = walker_rollout(env, seed=5)
    u.set_task(task_a)
    u.set_task(task_a)
    obs_a2, rew_a2 = walker_rollout(env, seed=5)
    np.testing.assert_array_equal(obs_a1, obs_a2)
    np.testing.assert_array_equal(rew_a1, rew_a2)
    n = min(len(obs_a1), len(obs_b))
    np.testing.assert_array_equal(obs_a1[0], obs_b[0])  # same start state: the seed, not the task, decides it
    assert np.abs(obs_a1[1:n] - obs_b[1:n]).max() > 1e-2


def capsule_mass(radius, length, density=1000.0):
    return density * (np.pi * radius**2 * length + 4.0 / 3.0 * np.pi * radius**3)


def test_walker_physics_is_the_authors_walker2d_xml():
    """timestep 0.004 with RK4 and frame_skip 4 (dt 0.016); right / left foot friction 0.9 / 1.9; the rest as theirs."""
    env = make("WalkerRandParams")
    u = env.unwrapped
    m = u.model
    assert m.opt.timestep == 0.004 and m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    assert u.frame_skip == 4 and u.dt == 0.016
    assert u.metadata["render_fps"] == int(np.round(1.0 / u.dt)) == 62
    # Before any task multiplier: the saved originals, and the model itself under the all-ones task.
    names = [m.geom(i).name for i in range(m.ngeom)]
    expected_friction = {"floor": 0.7, "foot_geom": 0.9, "foot_left_geom": 1.9}
    expected = np.array([[expected_friction.get(name, 0.9), 0.1, 0.1] for name in names])
    np.testing.assert_array_equal(u._original_params["geom_friction"], expected)
    u.set_task(np.ones(65))
    np.testing.assert_array_equal(m.geom_friction, expected)
    assert m.geom_friction[m.geom("foot_geom").id, 0] == 0.9
    assert m.geom_friction[m.geom("foot_left_geom").id, 0] == 1.9
    # The authors' capsules (fromto lengths 0.4, 0.45, 0.5, 0.2; radii 0.05, 0.05, 0.04, 0.06), density 1000.
    segments = [capsule_mass(0.05, 0.45), capsule_mass(0.04, 0.5), capsule_mass(0.06, 0.2)]
    np.testing.assert_allclose(m.body_mass, [0.0, capsule_mass(0.05, 0.4), *segments, *segments], rtol=1e-9)
    np.testing.assert_array_equal(m.dof_damping, [0, 0, 0] + [0.1] * 6)
    np.testing.assert_array_equal(m.dof_armature, [0, 0, 0] + [0.01] * 6)
    np.testing.assert_allclose(np.degrees(m.jnt_range[3:]), [[-150, 0], [-150, 0], [-45, 45]] * 2)
    np.testing.assert_array_equal(m.actuator_gear[:, 0], 100.0)
    np.testing.assert_array_equal(m.actuator_ctrlrange, np.tile([-1.0, 1.0], (6, 1)))
    # Reset noise as the authors' reset_model: U(-0.005, 0.005) on qpos and qvel.
    for seed in range(5):
        env.reset(seed=seed)
        assert np.abs(u.data.qpos - u.init_qpos).max() <= 0.005
        assert np.abs(u.data.qvel - u.init_qvel).max() <= 0.005
        assert np.abs(u.data.qpos - u.init_qpos).max() > 0.002


def test_walker_reward_and_termination():
    env = make("WalkerRandParams", seed=6)
    u = env.unwrapped
    assert u.dt == pytest.approx(0.016)
    terminated = False
    for _ in range(300):
        action = env.action_space.sample() * 1.5  # also outside [-1, 1]: the raw action is costed
        x_before = u.data.qpos[0]
        _, reward, terminated, _, info = env.step(action)
        x, height, angle = u.data.qpos[:3]
        ctrl = 1e-3 * np.sum(np.square(action, dtype=np.float64))
        expected = (x - x_before) / u.dt + 1.0 - ctrl
        assert reward == pytest.approx(expected, abs=1e-9)
        assert info["reward_ctrl"] == pytest.approx(-ctrl, abs=1e-12)
        assert info["reward_forward"] == pytest.approx((x - x_before) / u.dt, abs=1e-9)
        assert terminated == (not (0.8 < height < 2.0 and -1.0 < angle < 1.0))
        if terminated:
            break
    assert terminated  # random actions make it fall within 300 steps


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
@pytest.mark.needs_opengl
def test_renders_small_rgb_frames(env_id):
    env = make(env_id, render_mode="rgb_array", width=64, height=48)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 1  # not a single colour
    env.close()


def test_render_without_render_mode_warns_and_returns_none():
    env = make("CheetahDir")
    with pytest.warns(UserWarning, match="render mode"):
        assert env.unwrapped.render() is None


_RENDER_SCRIPT = """
import gymnasium as gym
import envs
# Twice with one env, then with another: a retry after a failed context creation must not abort the process.
for env_id in ("CheetahDir", "CheetahDir", "WalkerRandParams"):
    env = gym.make(env_id, render_mode="rgb_array", width=32, height=32)
    env.reset(seed=0)
    try:
        env.render()
    except RuntimeError as exc:
        print("RUNTIME_ERROR:", exc)
    else:
        print("RENDERED")
    env.close()
print("DONE")
"""


@pytest.mark.parametrize(
    "env_changes, expected",
    [
        # No MUJOCO_GL and no display: gymnasium would pick GLFW and fail deep inside MuJoCo.
        ({"MUJOCO_GL": None, "PYOPENGL_PLATFORM": None}, "MUJOCO_GL is unset"),
        # A display that is not there: passes the up-front check, then the context creation fails.
        ({"MUJOCO_GL": "glfw", "PYOPENGL_PLATFORM": None, "DISPLAY": ":4321"}, "no OpenGL context could be created"),
        # A value MuJoCo accepts but gymnasium's renderer does not.
        ({"MUJOCO_GL": "disable", "PYOPENGL_PLATFORM": None}, "not a backend"),
    ],
)
def test_render_without_a_backend_raises_a_clear_runtime_error(env_changes, expected):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    result = subprocess.run(
        [sys.executable, "-c", _RENDER_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]  # in particular no segfault (-11)
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "DONE", result.stdout + result.stderr[-2000:]
    assert all(line.startswith("RUNTIME_ERROR:") for line in lines[:3]), result.stdout
    assert expected in lines[0]
    assert "MUJOCO_GL=osmesa" in result.stdout and "libosmesa6" in result.stdout
