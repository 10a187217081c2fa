"""Meta-RL benchmark environments, registered with gymnasium on `import envs`.

Every environment follows the task contract of `envs.core` (`sample_task`, `set_task`, `get_task`, and a
`reset` that never changes the task unless `options={"task": ...}` is given). The ids carry no version suffix,
so `gym.make("AntDir")` and `--env-id AntDir` work. `EPISODES_PER_TASK[id]` is the number of episodes in one
meta-episode (the papers' `max_rollouts_per_task`); `gym.spec(id).max_episode_steps` is one episode's horizon.
"""

from gymnasium.envs.registration import register, registry

# id -> (entry point, steps per episode, episodes per task, keyword arguments)
_ENVS = {
    "GridNavi": ("envs.grid:GridNavi", 15, 4, {"variant": "sparse"}),
    "GridNaviDense": ("envs.grid:GridNavi", 15, 4, {"variant": "dense"}),
    "GridNaviShow": ("envs.grid:GridNavi", 15, 4, {"variant": "show"}),
    "CheetahDir": ("envs.locomotion:HalfCheetahDirEnv", 200, 1, {}),
    "CheetahVel": ("envs.locomotion:HalfCheetahVelEnv", 200, 1, {}),
    "AntDir": ("envs.locomotion:AntDirEnv", 200, 1, {}),
    "HumanoidDir": ("envs.locomotion:HumanoidDirEnv", 200, 2, {}),
    "WalkerRandParams": ("envs.locomotion:WalkerRandParamsEnv", 200, 2, {}),
    "MetaWorldML1": ("envs.meta_world:MetaWorldML1Env", 500, 2, {"task_name": "pick-place-v3"}),
    "MetaWorldML10": ("envs.meta_world:MetaWorldML10Env", 500, 2, {}),
    "TMaze": ("envs.memory:TMaze", 150, 4, {}),
}

ENV_IDS = tuple(_ENVS)
EPISODES_PER_TASK = {env_id: spec[2] for env_id, spec in _ENVS.items()}

for _id, (_entry, _steps, _episodes, _kwargs) in _ENVS.items():
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=_steps, kwargs=_kwargs)

from envs.meta import (  # noqa: E402
    MetaEpisodeWrapper,
    action_vectors,
    evaluation_tasks,
    make_env,
    make_vector_env,
    run_meta_episodes,
    true_next_obs,
)

__all__ = ["ENV_IDS", "EPISODES_PER_TASK", "MetaEpisodeWrapper", "action_vectors", "evaluation_tasks", "make_env",
           "make_vector_env", "run_meta_episodes", "true_next_obs"]  # fmt: skip
