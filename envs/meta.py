"""The meta-RL side of every environment: meta-episodes (the BAMDP), the vector env the scripts train on, and the
held-out evaluation tasks.

A *meta-episode* is `episodes_per_task` consecutive episodes of one task (VariBAD's BAMDP; the papers'
`max_rollouts_per_task`). The agent keeps its task belief (VariBAD) or memory (RL2) across the inner episodes and
starts afresh only when the meta-episode ends.
"""

import multiprocessing
import signal

import gymnasium as gym
import numpy as np


class MetaEpisodeWrapper(gym.Wrapper):
    """One task for `episodes_per_task` consecutive episodes.

    `reset()` draws a task from the wrapper's own seeded generator (or takes `options["task"]`). When an inner episode
    ends, the env is reset with the *same* task, the new start observation comes with a done bit of 1 (appended to the
    observation if episodes_per_task > 1), and the inner episode's last observation goes to `info["inner_final_obs"]`.
    Only the last episode's end ends the meta-episode, with that episode's own `terminated` / `truncated` (a time limit
    truncates, a fall terminates), and `info["episode_returns"]`, the return of each of its episodes (as gymnasium's
    RecordEpisodeStatistics). Actions pass unclipped: the env clips them and charges its control cost on them.
    """

    def __init__(self, env, episodes_per_task, split="train"):
        super().__init__(env)
        self.episodes_per_task, self.split, self.episode = episodes_per_task, split, 0
        self.returns = np.zeros(episodes_per_task)
        self.task_rng = np.random.default_rng()
        if episodes_per_task > 1:
            low, high = np.append(env.observation_space.low, 0.0), np.append(env.observation_space.high, 1.0)
            self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))

    def _obs(self, obs, done_bit):
        return np.append(obs, np.float32(done_bit)).astype(np.float32) if self.episodes_per_task > 1 else obs

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.task_rng = np.random.default_rng(seed)
        task = (options or {}).get("task")
        if task is None:
            task = self.env.unwrapped.sample_task(self.task_rng, split=self.split)
        obs, info = self.env.reset(seed=seed, options={"task": task})
        self.episode, self.returns = 0, np.zeros(self.episodes_per_task)
        return self._obs(obs, 0.0), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.returns[self.episode] += reward
        if not (terminated or truncated):
            return self._obs(obs, 0.0), reward, False, False, info
        self.episode += 1
        if self.episode == self.episodes_per_task:  # the meta-episode ends
            return self._obs(obs, 1.0), reward, terminated, truncated, dict(info, episode_returns=self.returns.copy())
        info = dict(info, inner_final_obs=self._obs(obs, 1.0))
        obs, _ = self.env.reset()  # same task, fresh start state
        return self._obs(obs, 1.0), reward, False, False, info


def make_env(env_id, episodes_per_task, split="train", render_mode=None):
    """A thunk that builds `env_id` wrapped in meta-episodes of `episodes_per_task` episodes."""

    def thunk():
        if multiprocessing.parent_process() is not None:  # an AsyncVectorEnv worker: Ctrl-C is for the main process
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return MetaEpisodeWrapper(gym.make(env_id, render_mode=render_mode), episodes_per_task, split)

    return thunk


def make_vector_env(env_id, episodes_per_task, num_envs, async_envs=False):
    """`num_envs` meta-episode envs, stepped in this process or, with `async_envs`, in subprocesses. A finished
    meta-episode is reset in the same step (its last observation goes to `info["final_obs"]`)."""
    vector_env = gym.vector.AsyncVectorEnv if async_envs else gym.vector.SyncVectorEnv
    env_fns = [make_env(env_id, episodes_per_task) for _ in range(num_envs)]
    return vector_env(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def evaluation_tasks(env_id, n, seed):
    """The held-out tasks, the same for every run: the env's finite test list (e.g. GridNavi's 21 goals) cycled to n
    entries, or n distinct ones of it drawn with `seed` where it is longer (Meta-World's), or else n draws from the
    test split by a generator seeded with `seed`."""
    env = gym.make(env_id).unwrapped
    rng = np.random.default_rng(seed)
    if hasattr(env, "all_tasks"):
        tasks = env.all_tasks("test")
        if n < len(tasks):
            tasks = [tasks[i] for i in rng.choice(len(tasks), n, replace=False)]
        tasks = [tasks[i % len(tasks)] for i in range(n)]
    else:
        tasks = [env.sample_task(rng, split="test") for _ in range(n)]
    env.close()
    return tasks


def true_next_obs(next_obs, infos):
    """The true next state of each env's transition in a vector step: the inner episode's last observation at an inner
    episode end, the meta-episode's last one at a meta-episode end (where `next_obs` holds the next start state)."""
    next_obs = next_obs.copy()
    for key in ("inner_final_obs", "final_obs"):
        if key in infos:
            next_obs[infos[f"_{key}"]] = np.stack(infos[key][infos[f"_{key}"]])
    return next_obs


def action_vectors(actions, action_space):
    """Actions as a task encoder takes them: discrete ones one-hot, continuous ones as float32 (unclipped)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return np.eye(action_space.n, dtype=np.float32)[actions]
    return np.asarray(actions, dtype=np.float32)


def run_meta_episodes(env_id, tasks, episodes_per_task, seed, policy, video_dir=None, on_step=None):
    """The held-out evaluation protocol: one meta-episode of `episodes_per_task` episodes per task, side by side, env i
    reset with `seed + i`. `policy(obs, previous)` returns the actions of all envs for their observations (n, ...);
    `previous` is None at the first step, then every env's last transition as a task encoder takes it: (action vectors,
    rewards, true next observations), as float32. Returns the return and the success flag (1 where the env reported a
    success) of every task and episode (n, episodes), and the steps per task. `video_dir`: records the first task.
    `on_step(i, env, reward, info)`, if given, is called after every step of env i (e.g. to record what it knows)."""
    n, k = len(tasks), episodes_per_task
    eval_envs = [make_env(env_id, k, "test", "rgb_array" if video_dir else None)() for _ in tasks]
    if video_dir:
        eval_envs[0] = gym.wrappers.RecordVideo(eval_envs[0], video_dir, lambda _: True, disable_logger=True)
    returns, successes, steps = np.zeros((n, k)), np.zeros((n, k)), np.zeros(n, dtype=np.int64)
    obs = np.stack([eval_envs[i].reset(seed=seed + i, options={"task": tasks[i]})[0] for i in range(n)])
    episode, active, previous = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool), None
    while active.any():
        actions = policy(obs, previous)
        next_obs, rewards, true_next = obs.copy(), np.zeros(n, dtype=np.float32), obs.copy()
        for i in np.flatnonzero(active):
            next_obs[i], rewards[i], terminated, truncated, info = eval_envs[i].step(actions[i])
            if on_step is not None:
                on_step(i, eval_envs[i], rewards[i], info)
            true_next[i] = info.get("inner_final_obs", next_obs[i])
            returns[i, episode[i]] += rewards[i]
            successes[i, episode[i]] = max(successes[i, episode[i]], float(info.get("success", 0.0)))
            episode[i] += terminated or truncated or "inner_final_obs" in info
            steps[i], active[i] = steps[i] + 1, not (terminated or truncated)
        obs, previous = (
            next_obs,
            (action_vectors(actions, eval_envs[0].action_space), rewards, true_next.astype(np.float32)),
        )
    for env in eval_envs:
        env.close()
    return returns, successes, steps
