"""GridNavi, GridNaviDense and GridNaviShow against their definitions (docs/environments.md) and exact returns
(docs/method.md, Grid-world reference returns)."""

import itertools

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.grid import GOALS, MOVES, GridNavi

NOOP, UP, RIGHT, DOWN, LEFT = range(5)


def goto(env, cells):
    """Steps from the start to the given cells one by one (each must be a neighbour or the same cell)."""
    pos, rewards = (0, 0), []
    for cell in cells:
        action = MOVES.index((cell[0] - pos[0], cell[1] - pos[1]))
        obs, reward, terminated, truncated, _ = env.step(action)
        pos = cell
        rewards.append(reward)
    return obs, rewards


def test_the_21_goal_cells():
    assert len(GOALS) == 21 and len(set(GOALS)) == 21
    excluded = set(itertools.product(range(5), repeat=2)) - set(GOALS)
    assert excluded == {(0, 0), (0, 1), (1, 0), (1, 1)}
    env = GridNavi()
    drawn = [tuple(env.sample_task(np.random.default_rng(s))) for s in range(600)]
    counts = np.array([drawn.count(g) for g in GOALS])
    assert counts.min() > 10  # every goal is drawn, roughly uniformly (600 / 21 = 28.6)
    with pytest.raises(ValueError, match="21 cells"):
        env.set_task([1, 1])


def test_sparse_rewards_walls_and_horizon():
    env = gym.make("GridNavi")
    obs, _ = env.reset(seed=0, options={"task": [2, 0]})
    np.testing.assert_array_equal(obs, [0, 0])
    obs, reward, *_ = env.step(LEFT)  # into the wall: stays, -0.1
    np.testing.assert_array_equal(obs, [0, 0])
    assert reward == pytest.approx(-0.1)
    obs, rewards = goto(env, [(1, 0), (2, 0), (2, 0)])
    np.testing.assert_array_equal(obs, [2, 0])
    assert rewards == pytest.approx([-0.1, 1.0, 1.0])  # +1 on every step spent on the goal
    steps = 4
    while True:
        obs, reward, terminated, truncated, _ = env.step(NOOP)
        steps += 1
        assert not terminated
        if truncated:
            break
    assert steps == 15


def test_best_known_goal_return_matches_bounds():
    """A goal at Manhattan distance d earns 16 - d - 0.1 (d - 1) in an episode when known (docs/method.md)."""
    env = gym.make("GridNavi")
    returns = []
    for goal in GOALS:
        env.reset(options={"task": goal})
        path = [(x, 0) for x in range(1, goal[0] + 1)] + [(goal[0], y) for y in range(1, goal[1] + 1)]
        path += [goal] * (15 - len(path))
        _, rewards = goto(env, path)
        d = goal[0] + goal[1]
        assert sum(rewards) == pytest.approx(16 - d - 0.1 * (d - 1))
        returns.append(sum(rewards))
    assert np.mean(returns) == pytest.approx(11.071, abs=1e-3)  # the oracle's episode value (docs/method.md)


def test_dense_reward_is_scaled_manhattan_distance():
    env = gym.make("GridNaviDense")
    env.reset(options={"task": [4, 3]})
    _, rewards = goto(env, [(1, 0), (1, 1), (2, 1)])
    assert rewards == pytest.approx([-(3 + 3) / 5, -(3 + 2) / 5, -(2 + 2) / 5])
    env.reset(options={"task": [1, 2]})
    _, rewards = goto(env, [(1, 0), (1, 1), (1, 2)])
    assert rewards[-1] == 1.0


def test_show_variant_reveals_the_goal_on_the_start_cell_only_after_a_step():
    env = gym.make("GridNaviShow")
    obs, _ = env.reset(options={"task": [3, 4]})
    np.testing.assert_array_equal(obs, [0, 0])  # the authors' reset: the plain start cell
    obs, *_ = env.step(NOOP)
    np.testing.assert_array_equal(obs, [3, 4])
    obs, *_ = env.step(RIGHT)
    np.testing.assert_array_equal(obs, [1, 0])
    obs, *_ = env.step(LEFT)
    np.testing.assert_array_equal(obs, [3, 4])


def test_bad_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="variant"):
        GridNavi(variant="dens")
