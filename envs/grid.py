"""GridNavi: the 5x5 grid world of VariBAD (Zintgraf et al. 2020) and its two variants from the 2023 paper.

docs/environments.md and docs/method.md, Grid-world reference returns. One episode lasts 15 steps (the registration's
TimeLimit); the training scripts run 4 episodes per task. The task is the goal cell, fixed for the whole meta-episode.
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.core import TaskEnvMixin, as_task, check_split

NUM_CELLS = 5
START = (0, 0)
# Goals: every cell except the 2x2 block at the start (0..1, 0..1): 21 cells.
GOALS = tuple((x, y) for x, y in itertools.product(range(NUM_CELLS), repeat=2) if not (x <= 1 and y <= 1))
# Action -> (dx, dy): noop, up, right, down, left. Moves into a wall leave the agent where it is.
MOVES = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0))
VARIANTS = ("sparse", "dense", "show")


class GridNavi(TaskEnvMixin, gym.Env):
    """5x5 grid, start at (0, 0) every episode, goal uniform over the 21 cells outside {0,1}x{0,1}.

    * Observation: the agent's cell (x, y) as two floats in [0, 4] (y grows upwards).
    * Actions: Discrete(5) = {noop, up, right, down, left}, clipped at the walls.
    * Reward, on the cell *after* the move (nothing at reset):
      - ``variant="sparse"`` (GridNavi): +1 on the goal, else -0.1;
      - ``variant="dense"`` (GridNaviDense): +1 on the goal, else -(|dx| + |dy|) / 5, the Manhattan distance to
        the goal scaled by 1/5;
      - ``variant="show"`` (GridNaviShow): rewards as sparse, but whenever a step ends on the start cell the
        observation is the goal's coordinates instead of (0, 0) (the 2023 paper's variant that favours task
        inference). As in the authors' code, ``reset`` returns the plain start cell: the goal shows only after a
        step (e.g. a noop) that ends on the start cell.
    * Never terminates; the registration truncates each episode after 15 steps.
    * Task: the goal (x, y) as a float array of shape (2,). ``sample_task`` draws one of the 21 goals; the
      test split uses the same distribution (evaluate on all of ``GOALS`` for exact numbers, see docs/method.md).
    """

    snapshot_by_pickle = True  # pure Python and numpy: a pickle holds the whole state

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, variant: str = "sparse", render_mode: str | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"GridNavi variant must be one of {VARIANTS}, got {variant!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"GridNavi supports render_mode 'rgb_array' only, got {render_mode!r}")
        self.variant = variant
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, NUM_CELLS - 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(MOVES))
        self._pos = np.array(START, dtype=np.int64)

    # --- task contract -------------------------------------------------------------------------------------
    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return np.array(GOALS[rng.integers(len(GOALS))], dtype=np.float64)

    def all_tasks(self, split: str = "train") -> list[np.ndarray]:
        """The finite task set: the 21 goals (evaluate on all of them to compare with docs/method.md's returns)."""
        check_split(split)
        return [np.array(goal, dtype=np.float64) for goal in GOALS]

    def set_task(self, task) -> None:
        goal = as_task(task, 2, "GridNavi")
        if tuple(int(v) for v in goal) not in GOALS or not np.all(goal == np.round(goal)):
            raise ValueError(f"GridNavi goal must be one of the 21 cells {GOALS}, got {task!r}")
        self._task = goal

    # --- MDP -----------------------------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        if self.variant == "show" and tuple(self._pos) == START:
            return self._task.astype(np.float32)
        return self._pos.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._prepare_reset(seed, options)
        self._pos = np.array(START, dtype=np.int64)
        return self._pos.astype(np.float32), {}  # never the goal, even in the "show" variant

    def step(self, action):
        dx, dy = MOVES[int(action)]
        self._pos = np.clip(self._pos + (dx, dy), 0, NUM_CELLS - 1)
        at_goal = bool(np.all(self._pos == self._task))
        if at_goal:
            reward = 1.0
        elif self.variant == "dense":
            reward = -float(np.abs(self._pos - self._task).sum()) / 5.0
        else:
            reward = -0.1
        return self._obs(), reward, False, False, {}

    def render(self):
        """A 240x240 picture: goal green, agent blue (cyan when on the goal), start cell grey."""
        if self.render_mode != "rgb_array":
            raise RuntimeError("GridNavi renders only with render_mode='rgb_array' (pass it to gym.make)")
        cell = 48
        img = np.full((NUM_CELLS * cell, NUM_CELLS * cell, 3), 255, dtype=np.uint8)

        def paint(xy, colour, margin):
            row = NUM_CELLS - 1 - int(xy[1])  # y grows upwards, image rows downwards
            col = int(xy[0])
            img[row * cell + margin : (row + 1) * cell - margin, col * cell + margin : (col + 1) * cell - margin] = (
                colour
            )

        paint(START, (200, 200, 200), 0)
        if self._task is not None:
            paint(self._task, (40, 180, 60), 0)
        on_goal = self._task is not None and bool(np.all(self._pos == self._task))
        paint(self._pos, (0, 200, 220) if on_goal else (30, 60, 220), 12)
        img[::cell, :] = 0
        img[:, ::cell] = 0
        img[-1, :] = 0
        img[:, -1] = 0
        return img
