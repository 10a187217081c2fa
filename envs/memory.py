"""TMaze: a long-corridor memory task (docs/environments.md, TMaze).

Our stand-in for MC-LS, whose Minecraft images cannot be shipped. It follows the T-maze configuration of the
authors' later SplAgger experiments (originally from AMRL, Beck et al. 2020): a 100-cell corridor that the agent
is pushed along, an indicator shown on cell 1, fresh random noise in every observation, and a decision at the end
that only pays off if the indicator was remembered for about 100 steps. 4 episodes per task.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.core import TaskEnvMixin, as_task, check_split

LEFT, RIGHT, UP, DOWN = range(4)


class TMaze(TaskEnvMixin, gym.Env):
    """Corridor of ``length`` cells (default 100) ending in a T junction.

    * Task: the indicator, +1 (the goal is up) or -1 (down), drawn with probability 1/2 each; shape (1,).
    * Observation, 4 floats: [at start cell, indicator, at end cell, noise]. ``indicator`` is the task's +-1 on
      cell ``indicator_pos`` (default 1) and 0 elsewhere; ``noise`` is a fresh +-1 coin flip at every
      observation, carrying no information (the AMRL "intermediate indicators").
    * Actions: Discrete(4) = {left, right, up, down}. In the corridor every action moves the agent one cell to
      the right (forced progress). At the end the decision is forced: up/left choose up, down/right choose down.
    * Reward: +4 for the correct arm, -3 for the wrong one, 0 on every other step. Choosing an arm terminates
      the episode, so an episode lasts exactly ``length`` steps; the registration's 150-step limit (the
      original timeout) is never reached.
    """

    snapshot_by_pickle = True  # pure Python and numpy: a pickle holds the whole state

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, length: int = 100, indicator_pos: int = 1, render_mode: str | None = None):
        if length < 2 or not 0 <= indicator_pos < length - 1:
            raise ValueError(
                f"TMaze needs length >= 2 and 0 <= indicator_pos < length - 1, got {length}, {indicator_pos}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"TMaze supports render_mode 'rgb_array' only, got {render_mode!r}")
        self.length = length
        self.indicator_pos = indicator_pos
        self.render_mode = render_mode
        self.observation_space = spaces.Box(np.array([0, -1, 0, -1], np.float32), np.array([1, 1, 1, 1], np.float32))
        self.action_space = spaces.Discrete(4)
        self._pos = 0
        self._choice = None

    # --- task contract -------------------------------------------------------------------------------------
    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return np.array([1.0 if rng.random() < 0.5 else -1.0])

    def all_tasks(self, split: str = "train") -> list[np.ndarray]:
        """The finite task set: goal up, goal down."""
        check_split(split)
        return [np.array([1.0]), np.array([-1.0])]

    def set_task(self, task) -> None:
        indicator = as_task(task, 1, "TMaze")
        if indicator[0] not in (1.0, -1.0):
            raise ValueError(f"TMaze task must be [+1] (goal up) or [-1] (goal down), got {task!r}")
        self._task = indicator

    # --- MDP -----------------------------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        return np.array(
            [
                self._pos == 0,
                self._task[0] if self._pos == self.indicator_pos else 0.0,
                self._pos == self.length - 1,
                1.0 if self.np_random.random() < 0.5 else -1.0,
            ],
            dtype=np.float32,
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._prepare_reset(seed, options)
        self._pos, self._choice = 0, None
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        if self._pos < self.length - 1:
            self._pos += 1
            return self._obs(), 0.0, False, False, {}
        self._choice = 1.0 if action in (UP, LEFT) else -1.0
        success = self._choice == self._task[0]
        return self._obs(), 4.0 if success else -3.0, True, False, {"success": success}

    def render(self):
        """The corridor as a strip of cells: indicator cell green (up) or red (down), agent blue; the chosen arm
        is painted at the end."""
        if self.render_mode != "rgb_array":
            raise RuntimeError("TMaze renders only with render_mode='rgb_array' (pass it to gym.make)")
        cell = 6
        img = np.full((3 * cell, self.length * cell, 3), 255, dtype=np.uint8)
        up_colour, down_colour = (40, 180, 60), (220, 50, 50)
        if self._task is not None:
            col = self.indicator_pos * cell
            img[cell : 2 * cell, col : col + cell] = up_colour if self._task[0] > 0 else down_colour
        end = (self.length - 1) * cell
        img[:cell, :end] = img[2 * cell :, :end] = 80  # walls beside the corridor; the arms stay open
        row = cell if self._choice is None else (0 if self._choice > 0 else 2 * cell)
        col = self._pos * cell
        img[row : row + cell, col : col + cell] = (30, 60, 220)
        return img
