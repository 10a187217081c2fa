"""The task contract shared by every meta-RL environment in `envs/`.

A meta-RL environment is an ordinary gymnasium environment that is, at any moment, set to one *task* (a goal
cell, a running direction, a set of physics multipliers, ...). The training scripts rely on four methods:

* ``sample_task(rng, split="train")`` draws a task with the given ``numpy.random.Generator``. ``split="test"``
  draws from the held-out set (Meta-World: its official test tasks; parametric envs: the same distribution).
* ``set_task(task)`` sets it, ``get_task()`` reads it back as a flat float array (the task's description).
* ``reset()`` never changes the task; ``reset(options={"task": task})`` sets it first.
* A fresh env draws its first task from its own seeded ``np_random`` at its first reset.

The first task is drawn from a *child* of ``np_random`` (``np_random.spawn``), which does not advance
``np_random`` itself: ``reset(seed=s)`` therefore gives the same start state whether or not a task was drawn,
and gymnasium's ``check_env`` seed-determinism check holds.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

SPLITS = ("train", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class TaskEnvMixin:
    """Mixin for a `gym.Env` that implements `sample_task`, `set_task` and `get_task`.

    Call `self._prepare_reset(seed, options)` first thing in `reset`, then reset the MDP with `seed=None`
    (the generator has already been seeded)."""

    _task: np.ndarray | None = None
    # True where pickling the env (with its wrappers) captures its whole state, so that a training run can be resumed
    # exactly (pure-Python envs); MuJoCo-based envs re-create their simulator when unpickled.
    snapshot_by_pickle: bool = False

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        raise NotImplementedError

    def set_task(self, task) -> None:
        raise NotImplementedError

    def get_task(self) -> np.ndarray:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__} has no task yet: call reset() or set_task() first")
        return self._task.copy()

    def _prepare_reset(self, seed: int | None, options: dict | None) -> None:
        if seed is not None:
            gym.Env.reset(self, seed=seed)  # seeds self.np_random only
        if options is not None and options.get("task") is not None:
            self.set_task(options["task"])
        elif self._task is None:
            self.set_task(self.sample_task(self.np_random.spawn(1)[0]))


def as_task(task, size: int, name: str) -> np.ndarray:
    """Converts a task to a flat float64 array of the given size, with an error that names the env."""
    arr = np.asarray(task, dtype=np.float64).reshape(-1)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} expects a task of {size} finite floats, got {task!r}")
    return arr
