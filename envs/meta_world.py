"""Meta-World ML1 and ML10 (the v3 tasks shipped by the `metaworld` package) under the task contract of `envs.core`.

Both envs wrap Meta-World's own single-task Sawyer environments (`metaworld.sawyer_xyz_env.SawyerXYZEnv`
subclasses) and expose one *episode*; the registration's `TimeLimit` ends it after 500 steps, and the training
scripts chain 2 episodes per task (`envs.EPISODES_PER_TASK`).

Version note: the papers used Meta-World **v2** (`pick-place-v2`, ML10 v2). The `metaworld` package on PyPI
(3.x) ships only the **v3** tasks. v3 keeps the task families, the 39-D observation layout, the 4-D action and
the v2 dense reward functions (`reward_function_version="v2"`, metaworld's default, used here), but the
environments were ported from mujoco-py to the `mujoco` bindings and gymnasium, with updated assets, so numbers
are not directly comparable with the papers'.

Facts about metaworld 3.1.1 that this module relies on (checked against its source):

* A benchmark (`metaworld.ML1(name, seed=...)`, `metaworld.ML10(seed=...)`) draws its goal/object variations
  (50 per family and split) with the *global* `np.random`, seeded with `seed` (it saves and restores the global
  state itself when `seed` is given; with `seed=None` it would consume the caller's global state). We always pass
  the fixed `BENCHMARK_SEED` and, in addition, save and restore the global state around the construction, so the
  task lists are identical across processes and runs and the caller's global random state is untouched. ML1's
  test tasks are drawn with `seed + 1`, so they differ from its train tasks.
* Benchmarks are built once per process and shared between instances (`_benchmark`, cached): building ML10
  takes several seconds, and its tasks are immutable (`Task` holds pickled bytes).
* The ML benchmarks' tasks carry `partially_observable=True`, which `SawyerXYZEnv.set_task` applies: the last
  3 entries of the observation (the goal position) are zeros.
* Once a task is set, a Meta-World reset is deterministic (the object/goal configuration is frozen in the task,
  `_freeze_rand_vec=True`), and `SawyerXYZEnv.reset` ignores its `seed` argument; no random state is used by a
  reset or a step, so `reset(seed=s)` reproduces trajectories without seeding the inner env.
* `SawyerXYZEnv.step` raises `ValueError` once `curr_path_length >= max_path_length` (500) and reports its own
  truncation at step 500. We set each inner env's `max_path_length` to `sys.maxsize`, so the only horizon is the
  registration's `TimeLimit` (our `step` never truncates by itself).
* The `corner` camera is defined upside down in Meta-World's scene XML (its image-up axis points downwards), so
  its frames come out rotated by 180 degrees; `render` rotates them back.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import gymnasium as gym
import metaworld
import numpy as np
from gymnasium import spaces

from envs.core import SPLITS, TaskEnvMixin, as_task, check_split

BENCHMARK_SEED = 0
"""Seed for the benchmarks' own task generation (fixed, so every process sees the same task lists)."""

CAMERA_NAME = "corner"
"""Meta-World camera used by `render`: a fixed view of the whole table from the front-left corner."""

REWARD_FUNCTION_VERSION = "v2"
"""Meta-World v3 envs implement two dense rewards, "v1" and "v2" (their default: the reward of the Meta-World v2
envs the papers used)."""

_UNLIMITED_PATH_LENGTH = sys.maxsize


@dataclass(frozen=True)
class _Family:
    """One task family (e.g. `pick-place-v3`) of one split with its goal/object variations."""

    name: str
    env_cls: type
    tasks: tuple  # of metaworld.types.Task


@dataclass(frozen=True)
class _Benchmark:
    train: tuple  # of _Family
    test: tuple  # of _Family

    def families(self, split: str) -> tuple:
        return self.train if split == "train" else self.test


def _group(classes, tasks) -> tuple:
    families = []
    for name, env_cls in classes.items():
        family_tasks = tuple(t for t in tasks if t.env_name == name)
        if not family_tasks:
            raise RuntimeError(f"metaworld benchmark has no tasks for family {name!r}")
        families.append(_Family(name=name, env_cls=env_cls, tasks=family_tasks))
    return tuple(families)


def _build_benchmark(kind: str, task_name: str | None = None, seed: int = BENCHMARK_SEED) -> _Benchmark:
    """Builds a metaworld benchmark (uncached) without touching the global numpy random state."""
    state = np.random.get_state()
    try:
        if kind == "ML1":
            bench = metaworld.ML1(task_name, seed=seed)
        elif kind == "ML10":
            bench = metaworld.ML10(seed=seed)
        else:
            raise ValueError(f"unknown benchmark {kind!r}")
    finally:
        np.random.set_state(state)
    return _Benchmark(
        train=_group(bench.train_classes, bench.train_tasks),
        test=_group(bench.test_classes, bench.test_tasks),
    )


@functools.lru_cache(maxsize=None)
def _benchmark(kind: str, task_name: str | None = None) -> _Benchmark:
    """The benchmark with the fixed `BENCHMARK_SEED`, built once per process."""
    return _build_benchmark(kind, task_name)


OBJECT_BOUND = 10.0
"""Bound on the object entries of the observation (positions in metres, quaternion components in [-1, 1])."""

HIDDEN_GOAL_BOUND = 1.0
"""Bound declared for the 3 hidden goal entries (always 0)."""


def _finite_bounds(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Meta-World's declared observation bounds, made finite and non-degenerate.

    Meta-World declares the 28 object entries unbounded and the hidden goal as [0, 0]; gymnasium's checkers warn
    about both. We bound the object entries by +-`OBJECT_BOUND` (the table is about 1 m wide; objects cannot get
    10 m away) and declare the hidden goal as +-`HIDDEN_GOAL_BOUND`. Observations are clipped to these bounds.
    """
    low, high = low.copy(), high.copy()
    low[~np.isfinite(low)] = -OBJECT_BOUND
    high[~np.isfinite(high)] = OBJECT_BOUND
    goal = slice(36, 39)
    if not (np.all(low[goal] == 0) and np.all(high[goal] == 0)):
        raise RuntimeError("expected Meta-World to declare the hidden goal entries as [0, 0]")
    low[goal], high[goal] = -HIDDEN_GOAL_BOUND, HIDDEN_GOAL_BOUND
    return low, high


def ml1_task_names() -> list[str]:
    """The Meta-World v3 task families that ML1 accepts."""
    return list(metaworld.ML1.ENV_NAMES)


class _MetaWorldEnv(TaskEnvMixin, gym.Env):
    """Shared machinery of `MetaWorldML1Env` and `MetaWorldML10Env` (see their docstrings).

    The task is the flat float array ``[split, family, variation]``: ``split`` is 0 for train and 1 for test,
    ``family`` indexes `family_names(split)` and ``variation`` indexes that family's goal/object variations
    (50 per family and split, in the benchmark's order).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # dt = 5 frames x 2.5 ms

    def __init__(self, benchmark: _Benchmark, render_mode: str | None = None, width: int = 480, height: int = 480):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{type(self).__name__}: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self._width, self._height = int(width), int(height)
        self._bench = benchmark
        self._envs: dict[str, gym.Env] = {}  # family name -> inner Meta-World env, created when first needed
        self._inner = None  # the inner env of the current task
        self._fresh = None  # observation of an inner reset done by set_task and not yet handed out by reset()
        self._task = None
        self._mw_task = None

        # All Sawyer envs declare the same observation bounds; take them from the first family's env and make
        # the unbounded/degenerate entries finite (see `_finite_bounds`).
        first = self._env_for(self._bench.train[0])
        low, high = _finite_bounds(*self._inner_bounds(first))
        self._obs_low = low.astype(np.float32)
        self._obs_high = high.astype(np.float32)
        self.observation_space = spaces.Box(self._obs_low, self._obs_high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)

    # ----------------------------------------------------------------------------------------- families
    def family_names(self, split: str = "train") -> list[str]:
        """The task families of a split, in the order of the task's ``family`` index."""
        check_split(split)
        return [f.name for f in self._bench.families(split)]

    @property
    def family_name(self) -> str:
        """The family (e.g. ``"pick-place-v3"``) of the current task."""
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} has no task yet: call reset() or set_task() first")
        split, family, _ = (int(v) for v in self._task)
        return self._bench.families(SPLITS[split])[family].name

    @staticmethod
    def _inner_bounds(env) -> tuple[np.ndarray, np.ndarray]:
        space = env.sawyer_observation_space
        return np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)

    def _env_for(self, family: _Family):
        env = self._envs.get(family.name)
        if env is None:
            env = family.env_cls(
                render_mode=self.render_mode,
                camera_name=CAMERA_NAME,
                width=self._width,
                height=self._height,
                reward_function_version=REWARD_FUNCTION_VERSION,
            )
            env.max_path_length = _UNLIMITED_PATH_LENGTH  # our TimeLimit is the only horizon
            if self._envs:  # same observation layout and bounds for every family
                low, high = self._inner_bounds(env)
                ref_low, ref_high = self._inner_bounds(next(iter(self._envs.values())))
                if not (np.array_equal(low, ref_low) and np.array_equal(high, ref_high)):
                    raise RuntimeError(f"Meta-World family {family.name!r} declares different observation bounds")
            self._envs[family.name] = env
        return env

    # -------------------------------------------------------------------------------------------- tasks
    def _n_tasks(self, split: str) -> int:
        return sum(len(f.tasks) for f in self._bench.families(split))

    def all_tasks(self, split: str = "train") -> list[np.ndarray]:
        """Every task of the split (50 variations per family), family by family."""
        check_split(split)
        families = self._bench.families(split)
        return [
            np.array([SPLITS.index(split), f, v], dtype=np.float64)
            for f in range(len(families))
            for v in range(len(families[f].tasks))
        ]

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        """Draws a task uniformly (i.i.d.) over all variations of all families of the split."""
        check_split(split)
        index = int(rng.integers(self._n_tasks(split)))
        for family_index, family in enumerate(self._bench.families(split)):
            if index < len(family.tasks):
                return np.array([SPLITS.index(split), family_index, index], dtype=np.float64)
            index -= len(family.tasks)
        raise AssertionError("unreachable")

    def _parse_task(self, task) -> tuple[np.ndarray, _Family, int]:
        name = type(self).__name__
        arr = as_task(task, 3, name)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} expects a task [split, family, variation] of integers, got {task!r}")
        split_index, family_index, variation = (int(v) for v in arr)
        if split_index not in (0, 1):
            raise ValueError(f"{name}: task split must be 0 (train) or 1 (test), got {split_index} in {task!r}")
        families = self._bench.families(SPLITS[split_index])
        if not 0 <= family_index < len(families):
            raise ValueError(
                f"{name}: task family must be in [0, {len(families)}) for split {SPLITS[split_index]!r}, "
                f"got {family_index} in {task!r}"
            )
        family = families[family_index]
        if not 0 <= variation < len(family.tasks):
            raise ValueError(
                f"{name}: task variation must be in [0, {len(family.tasks)}) for family {family.name!r}, "
                f"got {variation} in {task!r}"
            )
        return arr, family, variation

    def set_task(self, task) -> None:
        """Sets a task ``[split, family, variation]`` and resets the inner Meta-World env to its start state."""
        arr, family, variation = self._parse_task(task)
        mw_task = family.tasks[variation]
        env = self._env_for(family)
        env.set_task(mw_task)
        if not env._partially_observable:  # the ML benchmarks' tasks hide the goal; make sure it stays hidden
            raise RuntimeError(f"Meta-World task {family.name!r} is not partially observable")
        obs, _ = env.reset()
        self._inner, self._mw_task, self._task = env, mw_task, arr.copy()
        self._fresh = obs

    # --------------------------------------------------------------------------------------------- MDP
    def _observe(self, obs) -> np.ndarray:
        # Meta-World clips step observations to its declared bounds (not reset observations); we clip both.
        return np.clip(np.asarray(obs, dtype=np.float32), self._obs_low, self._obs_high)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._prepare_reset(seed, options)
        if self._fresh is not None:  # set_task has just reset the inner env (resets are deterministic)
            obs = self._fresh
        else:
            obs, _ = self._inner.reset()
        self._fresh = None
        return self._observe(obs), {}

    def step(self, action):
        if self._inner is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step()")
        self._fresh = None
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        obs, reward, _, _, inner_info = self._inner.step(action)
        info = dict(inner_info)
        info["success"] = float(inner_info["success"])
        return self._observe(obs), float(reward), False, False, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn(f"{type(self).__name__}.render() called without render_mode='rgb_array'")
            return None
        if self._inner is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before render()")
        try:
            frame = self._inner.render()
        except Exception as e:  # mujoco.FatalError, GLFW/OSMesa/EGL import or context errors
            raise RuntimeError(
                f"MuJoCo could not render ({type(e).__name__}: {e}). Without a display, set MUJOCO_GL=osmesa "
                "(with PYOPENGL_PLATFORM=osmesa; needs libosmesa) or MUJOCO_GL=egl (needs a GPU driver) "
                "before mujoco is imported."
            ) from e
        # The "corner" camera is upside down in Meta-World's XML: rotate its image by 180 degrees.
        return np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[::-1, ::-1])

    def close(self):
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._inner = None
        self._fresh = None


class MetaWorldML1Env(_MetaWorldEnv):
    """Meta-World ML1: one task family (default ``pick-place-v3``) with varying object and goal positions.

    * Train tasks: the benchmark's 50 ``train_tasks``; test tasks (``split="test"``): its 50 official
      ``test_tasks`` (other object/goal positions of the same family). Both are generated once with the fixed
      `BENCHMARK_SEED`.
    * Task: ``[split, 0, variation]`` (split 0 = train, 1 = test; variation in [0, 50)).
    * Observation: 39-D float32, Meta-World's layout: hand xyz (3), gripper opening (1), object poses padded to
      14, the same 18 values of the previous step, and the goal xyz (3), which is **hidden** (zeros, partially
      observable, as in the papers). Bounds: Meta-World's declared ones for the hand (box) and gripper
      ([-1, 1]); +-10 for the object entries (Meta-World: unbounded) and +-1 for the hidden goal (Meta-World:
      [0, 0]), which keeps gymnasium's checkers quiet. Observations are clipped to the bounds, as Meta-World
      already does on `step`.
    * Action: Box(-1, 1, (4,), float32): end-effector xyz displacement and gripper effort.
    * Reward: Meta-World's dense (v2-paper) reward; ``info["success"]`` is 1.0 on steps where the task is
      solved. ``terminated`` is always False; the 500-step horizon is the registration's `TimeLimit`
      (Meta-World's own 500-step limit is disabled).
    * Rendering (``render_mode="rgb_array"``): (height, width, 3) uint8 frames of the ``corner`` camera.

    Version: the papers used ``pick-place-v2``; the `metaworld` package ships only v3 (see the module docstring).
    """

    def __init__(
        self, task_name: str = "pick-place-v3", render_mode: str | None = None, width: int = 480, height: int = 480
    ):
        valid = ml1_task_names()
        if task_name not in valid:
            raise ValueError(f"MetaWorldML1Env: unknown Meta-World task {task_name!r}; valid names: {', '.join(valid)}")
        self.task_name = task_name
        super().__init__(_benchmark("ML1", task_name), render_mode=render_mode, width=width, height=height)


class MetaWorldML10Env(_MetaWorldEnv):
    """Meta-World ML10: 10 train task families and 5 held-out test families.

    * Train families: reach, push, pick-place, door-open, drawer-close, button-press-topdown, peg-insert-side,
      window-open, sweep, basketball (all ``-v3``); test families: drawer-open, door-close, shelf-place,
      sweep-into, lever-pull (``-v3``). Each family has 50 object/goal variations per split, generated once with
      the fixed `BENCHMARK_SEED`.
    * Task: ``[split, family, variation]``: split 0 = train (family in [0, 10)), 1 = test (family in [0, 5));
      ``family_names(split)`` gives the names.
    * ``sample_task(rng, "train")`` draws uniformly and i.i.d. over all 500 train tasks (equivalently: a uniform
      family, then a uniform variation); ``"test"`` over the 250 test tasks. The authors' code (garage's
      `MetaWorldTaskSampler`) instead cycles round-robin through the families: each process draws one variation
      per family, shuffles the list, steps through it one task per meta-episode, then redraws.
    * Each family's Meta-World env is created when first needed and kept (at most 15).
    * Observation, action, reward, success, horizon and rendering as in `MetaWorldML1Env` (39-D float32 with the
      goal hidden, 4-D action in [-1, 1], dense reward, ``info["success"]``, 500 steps from the `TimeLimit`).

    Version: the papers used ML10 v2; the `metaworld` package ships only v3 (see the module docstring).
    """

    def __init__(self, render_mode: str | None = None, width: int = 480, height: int = 480):
        super().__init__(_benchmark("ML10"), render_mode=render_mode, width=width, height=height)
