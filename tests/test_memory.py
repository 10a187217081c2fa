"""TMaze against its definition (docs/environments.md, TMaze)."""

import importlib

import gymnasium as gym
import numpy as np
import pytest
import torch

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
    for task, action, expected in [
        ([1], UP, 4.0),
        ([1], DOWN, -3.0),
        ([-1], DOWN, 4.0),
        ([-1], UP, -3.0),
        ([1], LEFT, 4.0),
        ([-1], RIGHT, 4.0),
    ]:  # left = up, right = down at the end
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


def corridor_gradient(module, chrono):
    """|d latent at the decision / d first observation| for the script's encoder at initialisation, on one real
    TMaze episode: how much of the indicator's gradient survives the 98-step corridor."""
    torch.manual_seed(0)
    args = module.parse_args(["--env-id", "TMaze", "--encoder-gru-chrono", str(chrono)])[0]
    env = gym.make("TMaze")
    env.reset(seed=0, options={"task": [1.0]})
    observations, rewards, _ = run_episode(env, UP)
    T = len(rewards)
    next_obs = torch.tensor(np.concatenate([observations, np.zeros((T, 1))], 1), dtype=torch.float32)  # + done bit
    next_obs = next_obs.unsqueeze(1).requires_grad_()
    actions = torch.nn.functional.one_hot(torch.full((T, 1), RIGHT), 4).float()
    encoder = module.Encoder(5, 4, args)
    hidden = torch.zeros(1, 1, args.encoder_gru_hidden_size)
    latents, _ = encoder(actions, torch.tensor(rewards, dtype=torch.float32).view(T, 1, 1), next_obs, hidden)
    latents[-2].pow(2).sum().backward()  # the latent the policy acts on at the end cell
    return next_obs.grad[0].norm().item(), next_obs.grad[-2].norm().item()


@pytest.mark.parametrize("name", ["varibad_standard", "varibad_hyper", "rl2_standard", "rl2_hyper"])
def test_chrono_init_lets_the_indicator_gradient_cross_the_corridor(name):
    """The TMaze preset's --encoder-gru-chrono 100: update-gate biases log U(1, 99) (zero elsewhere, and zero with
    0, the authors' init). With zero biases the indicator's gradient vanishes (~1e-20 across 98 steps), so no
    amount of PPO can teach RL2 the task; with the chrono init it is within a few hundred times the last step's."""
    module = importlib.import_module(name)
    args = module.parse_args(["--env-id", "TMaze"])[0]
    assert args.encoder_gru_chrono == 100 and module.parse_args(["--env-id", "GridNavi"])[0].encoder_gru_chrono == 0
    H = args.encoder_gru_hidden_size
    gru = module.Encoder(5, 4, args).gru
    z_bias = gru.bias_hh_l0[H : 2 * H].detach()
    assert z_bias.min() >= 0 and z_bias.max() <= np.log(99) and z_bias.std() > 0.5
    assert gru.bias_hh_l0[:H].abs().max() == 0 and gru.bias_hh_l0[2 * H :].abs().max() == 0
    assert gru.bias_ih_l0.abs().max() == 0
    first, last = corridor_gradient(module, 0)
    assert first < 1e-12 * last
    first, last = corridor_gradient(module, 100)
    assert first > 1e-3 * last
