"""The held-out evaluation protocol (`envs.evaluation_tasks`, `envs.run_meta_episodes` and each script's `evaluate`),
checked on a probe env whose returns, successes and episode ends follow from its definition."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.registration import register, registry

import envs
import rl2_hyper
import rl2_standard
import varibad_hyper
import varibad_standard
from envs.core import TaskEnvMixin

EPISODE_STEPS = 5  # the probe's time limit
FALL_STEP = 3  # a task < 0 "falls" (terminates) at this step of every episode


class Probe(TaskEnvMixin, gym.Env):
    """Observation [step within the episode, task, a start draw from np_random]; action a in [-10, 10]; reward
    task + a; success where a = 3 (the 4th step only). A task < 0 terminates at FALL_STEP, else the time limit
    truncates."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-100.0, 100.0, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32)
        self.splits = []  # the split of every task drawn

    def sample_task(self, rng, split="train"):
        self.splits.append(split)
        return np.array([rng.uniform(-1.0, 1.0) + (10.0 if split == "test" else 0.0)])  # the splits do not overlap

    def set_task(self, task):
        self._task = np.asarray(task, dtype=np.float64).reshape(1)

    def reset(self, *, seed=None, options=None):
        self._prepare_reset(seed, options)
        self.t, self.start = 0, self.np_random.uniform()
        return self._obs(), {}

    def _obs(self):
        return np.array([self.t, self._task[0], self.start], dtype=np.float32)

    def step(self, action):
        self.t += 1
        a = float(np.asarray(action).reshape(-1)[0])
        fell = self._task[0] < 0 and self.t == FALL_STEP
        return self._obs(), float(self._task[0]) + a, fell, False, {"success": float(a == 3.0)}


if "EvalProbe" not in registry:
    register(id="EvalProbe", entry_point=Probe, max_episode_steps=EPISODE_STEPS)


def step_policy(obs, previous):
    """a = the step within the episode (0, 1, 2, ...), from the observation alone."""
    return obs[:, :1].copy()


def test_returns_successes_and_lengths_follow_from_the_env():
    """Per episode: the sum of task + a over its steps, a = 0, 1, ..; a success where the episode reaches a = 3 (lasts 4
    steps or more), although its last step is no success; the meta-episode lasts k episodes, whatever ends each one."""
    tasks, k = [np.array([0.5]), np.array([-0.25]), np.array([2.0])], 3
    returns, successes, steps = envs.run_meta_episodes("EvalProbe", tasks, k, 100, step_policy)
    lengths = [EPISODE_STEPS, FALL_STEP, EPISODE_STEPS]
    expected = [[n * task[0] + n * (n - 1) / 2] * k for task, n in zip(tasks, lengths)]
    np.testing.assert_allclose(returns, expected, rtol=1e-6)
    np.testing.assert_array_equal(successes, [[1.0] * k, [0.0] * k, [1.0] * k])
    np.testing.assert_array_equal(steps, [k * n for n in lengths])


def test_every_env_keeps_its_task_and_is_reset_with_its_seed():
    tasks, seed, seen = [np.array([0.5]), np.array([-0.25])], 7, []

    def policy(obs, previous):
        seen.append(obs.copy())
        return step_policy(obs, previous)

    envs.run_meta_episodes("EvalProbe", tasks, 2, seed, policy)
    starts = [np.random.default_rng(seed + i).uniform() for i in range(len(tasks))]  # gymnasium's seeding
    np.testing.assert_allclose(seen[0][:, 2], starts, rtol=1e-6)
    np.testing.assert_allclose(seen[0][:, 1], [0.5, -0.25])
    # the task never changes within the meta-episode, over the inner resets too
    assert all(np.allclose(obs[:, 1], [0.5, -0.25]) for obs in seen)


def test_the_encoder_sees_each_transition_with_its_true_next_state():
    """`previous` holds every env's last (action, reward, next state); at an inner episode's end the next state is
    that episode's last observation, not the next episode's start."""
    tasks, record = [np.array([0.5])], []

    def policy(obs, previous):
        record.append((obs.copy(), previous))
        return step_policy(obs, previous)

    envs.run_meta_episodes("EvalProbe", tasks, 2, 0, policy)
    assert record[0][1] is None
    for (obs, _), (next_obs, previous) in zip(record, record[1:]):
        actions, rewards, true_next = previous
        np.testing.assert_array_equal(actions, obs[:, :1])
        np.testing.assert_allclose(rewards, 0.5 + obs[:, 0])
        assert true_next[0, 0] == obs[0, 0] + 1  # the step count after the action, also at the inner end (5)
        assert next_obs[0, 0] == (0 if true_next[0, 0] == EPISODE_STEPS else true_next[0, 0])
    assert len(record) == 2 * EPISODE_STEPS


def test_held_out_tasks_are_the_test_split_or_the_finite_list_cycled():
    probe = gym.make("EvalProbe").unwrapped
    rng = np.random.default_rng(11)
    expected = [probe.sample_task(rng, split="test") for _ in range(4)]
    tasks = envs.evaluation_tasks("EvalProbe", 4, 11)
    np.testing.assert_array_equal(tasks, expected)
    assert all(task[0] > 5 for task in tasks)  # drawn from the test split
    goals = gym.make("GridNavi").unwrapped.all_tasks("test")
    np.testing.assert_array_equal(envs.evaluation_tasks("GridNavi", 25, 0), [goals[i % 21] for i in range(25)])
    subset = envs.evaluation_tasks("GridNavi", 8, 0)  # fewer than the list: distinct entries of it, fixed by the seed
    np.testing.assert_array_equal(subset, envs.evaluation_tasks("GridNavi", 8, 0))
    assert len({tuple(goal) for goal in subset}) == 8 and all(any((g == goals).all(1)) for g in subset)
    assert not np.array_equal(subset, goals[:8])
    recorder = envs.make_env("EvalProbe", 2, "test")()
    recorder.reset(seed=0)
    assert recorder.unwrapped.splits == ["test"]  # an evaluation env draws from the test split


@pytest.mark.parametrize("module", [varibad_standard, varibad_hyper, rl2_standard, rl2_hyper], ids=lambda m: m.__name__)
def test_scripts_evaluate_with_deterministic_actions(module):
    """The evaluation takes the policy's mode (on the dense grid, where every path has its own return): the torch
    generator's state does not change its returns, and they equal those of the argmax of the actor's logits."""
    args = module.apply_preset(module.Args(env_id="GridNaviDense"))
    env = envs.make_env("GridNaviDense", args.episodes_per_task)()
    torch.manual_seed(3)
    agent = module.Agent(env.observation_space, env.action_space, args)
    encoder = module.Encoder(env.observation_space.shape[0], env.action_space.n, args)
    with torch.no_grad():
        for param in [*agent.parameters(), *encoder.parameters()]:
            param.add_(0.3 * torch.randn_like(param))  # a policy far from uniform, and latents that move
    tasks = envs.evaluation_tasks("GridNaviDense", 5, args.eval_seed)
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(module.evaluate(agent, encoder, args, tasks, torch.device("cpu"))[0]["returns"])
    np.testing.assert_array_equal(runs[0], runs[1])

    def replay(seed, sample):
        """The evaluation's loop written out, with the argmax of the actor's logits or a sampled action."""
        torch.manual_seed(seed)
        latent, hidden = encoder.prior(len(tasks))

        def policy(obs, previous):
            nonlocal latent, hidden
            with torch.no_grad():
                if previous is not None:
                    latent, hidden = encoder.step(*(torch.as_tensor(x) for x in previous), hidden)
                x = agent.features(torch.as_tensor(obs), latent)
                return (agent.act(x)[0] if sample else agent.actor(x).argmax(-1)).numpy()

        return envs.run_meta_episodes("GridNaviDense", tasks, args.episodes_per_task, args.eval_seed, policy)[0]

    np.testing.assert_array_equal(runs[0], replay(0, sample=False))
    assert not np.array_equal(replay(0, sample=True), replay(1, sample=True))  # sampling would show
