"""TMaze against its definition (METHOD.md F.5)."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.memory import DOWN, LEFT, RIGHT, UP


def run_episode(env, final_action, corridor_action=RIGHT):
    observations, rewards = [], []
    while True:
        at_end = observations and observations[-1][2] == 1
        obs, reward, terminated, truncated, _ = env.step(final_action if at_end else corridor_action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            return np.array(observations), np.array(rewards), terminated


@pytest.mark.parametrize("indicator", [1.0, -1.0])
def test_indicator_only_on_cell_one_and_forced_progress(indicator):
    env = gym.make("TMaze")
    obs, _ = env.reset(seed=0, options={"task": [indicator]})
    np.testing.assert_array_equal(obs[:3], [1, 0, 0])  # start cell, no indicator yet
    observations, rewards, terminated = run_episode(env, UP, corridor_action=LEFT)  # LEFT cannot go back
    assert terminated and len(rewards) == 100  # 99 forced moves + the decision
    assert observations[0][1] == indicator  # cell 1
    assert np.all(observations[1:, 1] == 0)
    assert observations[98][2] == 1 and np.all(observations[:98, 2] == 0)  # reaches the end after 99 steps
    assert np.all(rewards[:-1] == 0)
    assert rewards[-1] == (4.0 if indicator == 1 else -3.0)


def test_decision_rewards_and_forced_choice():
    env = gym.make("TMaze")
    for task, action, expected in [([1], UP, 4.0), ([1], DOWN, -3.0), ([-1], DOWN, 4.0), ([-1], UP, -3.0),
                                   ([1], LEFT, 4.0), ([-1], RIGHT, 4.0)]:  # left = up, right = down at the end
        env.reset(options={"task": task})
        _, rewards, _ = run_episode(env, action)
        assert rewards[-1] == expected


def test_noise_channel_is_random_and_uninformative():
    env = gym.make("TMaze")
    env.reset(seed=3)
    noise = [env.step(RIGHT)[0][3] for _ in range(90)]
    assert set(noise) == {-1.0, 1.0}
    assert 20 < sum(n > 0 for n in noise) < 70


def test_tasks_are_balanced_and_validated():
    env = gym.make("TMaze").unwrapped
    rng = np.random.default_rng(0)
    draws = [env.sample_task(rng)[0] for _ in range(400)]
    assert set(draws) == {-1.0, 1.0} and 150 < draws.count(1.0) < 250
    with pytest.raises(ValueError, match="goal up"):
        env.set_task([0.5])
