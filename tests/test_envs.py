"""The task contract and gymnasium's checker, for every registered id (family-specific definitions are checked in
test_grid.py, test_memory.py, test_locomotion.py and test_meta_world.py)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

EXPECTED = {  # id: (episodes per task, steps per episode, observation size, action space)
    "GridNavi": (4, 15, 2, "Discrete(5)"),
    "GridNaviDense": (4, 15, 2, "Discrete(5)"),
    "GridNaviShow": (4, 15, 2, "Discrete(5)"),
    "CheetahDir": (1, 200, 20, (6,)),
    "CheetahVel": (1, 200, 20, (6,)),
    "AntDir": (1, 200, 27, (8,)),
    "HumanoidDir": (2, 200, 376, (17,)),
    "WalkerRandParams": (2, 200, 17, (6,)),
    "MetaWorldML1": (2, 500, 39, (4,)),
    "MetaWorldML10": (2, 500, 39, (4,)),
    "TMaze": (4, 150, 4, "Discrete(4)"),
}


def make(env_id, **kwargs):
    """A fresh env for each test (Meta-World's task lists are built once per process, so this is cheap)."""
    return gym.make(env_id, **kwargs)


def rollout(env, seed, steps):
    """Observations and rewards of `steps` steps with actions from an action space seeded by `seed`."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return np.array(observations), np.array(rewards)


def test_every_id_is_registered_with_its_layout():
    assert set(envs.ENV_IDS) == set(EXPECTED)
    for env_id, (episodes, steps, obs_size, action) in EXPECTED.items():
        assert envs.EPISODES_PER_TASK[env_id] == episodes
        assert gym.spec(env_id).max_episode_steps == steps
        env = make(env_id)
        assert env.observation_space.shape == (obs_size,)
        assert env.observation_space.dtype == np.float32
        if isinstance(action, str):
            assert str(env.action_space) == action
        else:
            assert env.action_space.shape == action


@pytest.mark.parametrize("env_id", EXPECTED)
def test_check_env_passes_without_warnings(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", EXPECTED)
def test_task_survives_resets_and_steps(env_id):
    env = make(env_id)
    env.reset(seed=1)
    task = env.unwrapped.get_task()
    assert task.ndim == 1 and task.dtype == np.float64
    for _ in range(3):
        env.step(env.action_space.sample())
        env.reset()
        np.testing.assert_array_equal(env.unwrapped.get_task(), task)
    env.reset(seed=2)  # reseeding does not change the task either
    np.testing.assert_array_equal(env.unwrapped.get_task(), task)


@pytest.mark.parametrize("env_id", EXPECTED)
def test_set_get_task_round_trip(env_id):
    env = make(env_id)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        task = env.unwrapped.sample_task(rng, split=split)
        env.unwrapped.set_task(task)
        np.testing.assert_array_equal(env.unwrapped.get_task(), task)
        env.unwrapped.set_task(env.unwrapped.get_task())
        np.testing.assert_array_equal(env.unwrapped.get_task(), task)
        other = env.unwrapped.sample_task(rng, split=split)
        env.reset(options={"task": other})
        np.testing.assert_array_equal(env.unwrapped.get_task(), other)
    with pytest.raises(ValueError, match="split"):
        env.unwrapped.sample_task(rng, split="validation")
    with pytest.raises(ValueError):
        env.unwrapped.set_task(np.full(1000, np.nan))


@pytest.mark.parametrize("env_id", EXPECTED)
def test_sample_task_uses_only_the_given_generator(env_id):
    env = make(env_id)
    state = np.random.get_state()
    a = [env.unwrapped.sample_task(np.random.default_rng(5)) for _ in range(2)]
    np.random.seed(123)  # the global generator must not matter
    b = env.unwrapped.sample_task(np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b)
    np.random.set_state(state)


@pytest.mark.parametrize("env_id", EXPECTED)
def test_same_seed_same_trajectory(env_id):
    steps = 40
    first = gym.make(env_id)
    second = gym.make(env_id)
    obs1, rew1 = rollout(first, seed=7, steps=steps)
    obs2, rew2 = rollout(second, seed=7, steps=steps)
    np.testing.assert_array_equal(first.unwrapped.get_task(), second.unwrapped.get_task())
    np.testing.assert_array_equal(obs1, obs2)
    np.testing.assert_array_equal(rew1, rew2)
    first.close()
    second.close()


def test_fresh_envs_draw_their_first_task_from_their_seed():
    tasks = set()
    for seed in range(20):
        env = gym.make("GridNavi")
        env.reset(seed=seed)
        tasks.add(tuple(env.unwrapped.get_task()))
    assert len(tasks) > 5


@pytest.mark.parametrize(
    "env_id",
    [pytest.param(i, marks=[] if i.startswith(("Grid", "TMaze")) else [pytest.mark.needs_opengl]) for i in EXPECTED],
)
def test_renders_an_rgb_frame(env_id):
    env = make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] >= 16 and frame.shape[1] >= 16
    assert frame.reshape(-1, 3).std(axis=0).max() > 0  # not a blank image
    env.close()
