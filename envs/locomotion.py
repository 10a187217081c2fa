"""MuJoCo meta-RL locomotion benchmarks (VariBAD / hyper-network papers), built on gymnasium's v5 MuJoCo envs.

Five task families, each a subclass of the matching gymnasium v5 environment with the papers' observation,
reward and termination (docs/environments.md; its quirks are kept on purpose):

======================  ==============  ======  ======  ================================================
class (id)              base            obs     action  task (flat float64 array)
======================  ==============  ======  ======  ================================================
HalfCheetahDirEnv       HalfCheetah-v5  20      6       (1,) direction in {-1, +1}
HalfCheetahVelEnv       HalfCheetah-v5  20      6       (1,) target velocity ~ U[0, 3]
AntDirEnv               Ant-v5          27      8       (1,) g in {-1, +1}, used as an angle in radians
HumanoidDirEnv          Humanoid-v5     376     17      (1,) goal angle ~ U[0, 2 pi)
WalkerRandParamsEnv     Walker2d-v5     17      6       (65,) physics multipliers
======================  ==============  ======  ======  ================================================

Common to all five:

* Observations are float32 (declared and cast); the physics itself runs in float64. The observation Box
  has the finite bounds +-float32 max rather than +-inf, because gymnasium's ``check_env`` warns about
  infinite bounds.
* All randomness comes from ``self.np_random`` (reset noise, the first task) or from the generator passed to
  ``sample_task``; nothing touches numpy's global random state.
* The ``"test"`` split draws from the same distribution as ``"train"`` (parametric tasks).
* Reset noise is gymnasium v5's default for each robot (it has the same form and scale as VariBAD's).
* ``frame_skip``, ``dt`` and the xml files are gymnasium's, except that `WalkerRandParamsEnv` changes the
  timestep (0.004, dt 0.016) and the right foot's friction (0.9) to the authors' walker2d.xml;
  ``metadata["render_fps"] == round(1 / dt)``.
* Actions: ``step`` takes the raw action (e.g. an unclipped Gaussian sample, possibly far outside [-1, 1]). As in
  the authors' code, the control cost is charged on that raw action, while the simulator only ever gets the
  action clipped to the action space. The clipping is done explicitly in ``step``, before ``do_simulation``, so
  what is simulated does not depend on the xml's ``ctrllimited`` flags (the authors relied on MuJoCo's clamping
  of ctrllimited motors, which gives the same physics). HumanoidDir is the exception: like VariBAD's it charges
  its control cost on the applied (clipped and rescaled) control, see its docstring.
* ``render()`` goes through gymnasium's MuJoCo renderer. Headless machines need ``MUJOCO_GL=osmesa`` (with
  libosmesa6) or ``MUJOCO_GL=egl`` (GPU); when no OpenGL context can be made, ``render()`` raises one
  ``RuntimeError`` that says so, instead of failing deep inside GLFW / MuJoCo. A failed context creation is
  remembered for the whole process and never retried (a retry aborts the process in MuJoCo 3.3).
  ``render_mode="human"`` needs a display, so gymnasium's full ``check_env`` render check (which also tries
  "human") cannot pass on a headless machine; ``rgb_array``, ``depth_array`` and ``rgbd_tuple`` work.
* The time limit (200 steps) is added by the registration in ``envs/__init__.py``; ``step`` never truncates.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gymnasium import logger, utils
from gymnasium.spaces import Box

from envs.core import TaskEnvMixin, as_task, check_split

RENDER_HELP = (
    "set MUJOCO_GL=osmesa (and PYOPENGL_PLATFORM=osmesa, or leave it unset) with libosmesa6 installed for "
    "CPU rendering, or MUJOCO_GL=egl on a GPU machine; MUJOCO_GL=glfw (the default when MUJOCO_GL is unset) "
    "needs a display. MUJOCO_GL must be set before mujoco is first imported."
)
HUMAN_RENDER_HELP = (
    "run with a display, or use render_mode='rgb_array' (with MUJOCO_GL=osmesa or MUJOCO_GL=egl) on a headless machine"
)
try:  # MuJoCo picks its OpenGL platform from MUJOCO_GL when first imported; gymnasium would mask that error
    import mujoco
except (ImportError, RuntimeError) as _exc:
    raise ImportError(
        f"Could not import mujoco ({type(_exc).__name__}: {_exc}). If this is about OpenGL: {RENDER_HELP}"
    ) from _exc

from gymnasium.envs.mujoco.ant_v5 import AntEnv  # noqa: E402
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv  # noqa: E402
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv  # noqa: E402
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv  # noqa: E402

_F32_MAX = float(np.finfo(np.float32).max)
_GYMNASIUM_GL_BACKENDS = ("glfw", "egl", "osmesa")  # what gymnasium's MujocoRenderer accepts
_CONTEXT_FAILURES: list[str] = []  # process-wide: the first failed OpenGL context creation, if any


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True  # GLFW on macOS / Windows needs no DISPLAY variable
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _render_backend_problem(render_mode: str) -> str | None:
    """Says why no OpenGL context can be made for `render_mode`, or None if nothing is known to be wrong.

    Checked before gymnasium's renderer is touched: without a display it would "create" a GLFW context that
    is not there and only fail later, inside `mjr_makeContext`."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if backend and backend not in _GYMNASIUM_GL_BACKENDS:
        return f"MUJOCO_GL={backend!r} is not a backend gymnasium's MuJoCo renderer can use"
    if render_mode == "human" and not _has_display():
        return "render_mode='human' opens a window, but there is no display (DISPLAY / WAYLAND_DISPLAY unset)"
    if backend in ("", "glfw") and not _has_display():
        how = "is unset" if backend == "" else "is 'glfw'"
        return f"MUJOCO_GL {how}, so MuJoCo would render through GLFW, but there is no display (DISPLAY unset)"
    platform = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    if backend in ("osmesa", "egl") and platform not in ("", backend):
        return f"MUJOCO_GL={backend!r} but PYOPENGL_PLATFORM={platform!r}; they must agree"
    return None


class _LocomotionTaskMixin(TaskEnvMixin):
    """Shared plumbing: the reset contract, float32 observation space, action clipping and the guarded `render`."""

    _render_ready = False

    def _raw_and_clipped(self, action) -> tuple[np.ndarray, np.ndarray]:
        """The action as received (float64; the control cost is charged on it) and the same action clipped to the
        action space (what is simulated)."""
        raw = np.asarray(action, dtype=np.float64)
        return raw, np.clip(raw, self.action_space.low, self.action_space.high)

    def _float32_observation_space(self, size: int) -> None:
        # Finite bounds: gymnasium's checker warns about any infinite Box bound.
        self.observation_space = Box(low=-_F32_MAX, high=_F32_MAX, shape=(size,), dtype=np.float32)
        self.observation_structure = None  # gymnasium's layout description no longer applies

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._prepare_reset(seed, options)
        return super().reset(seed=None)

    def render(self):
        if self.render_mode is None:
            logger.warn(
                f"{type(self).__name__}.render() was called without a render mode; "
                "pass render_mode='rgb_array' (or another mode) when making the env."
            )
            return None
        if self._render_ready:
            return super().render()
        problem = _render_backend_problem(self.render_mode)
        if problem is not None:
            fix = HUMAN_RENDER_HELP if self.render_mode == "human" else RENDER_HELP
            raise RuntimeError(f"Cannot render {type(self).__name__}: {problem}. To fix: {fix}")
        if _CONTEXT_FAILURES:
            # A second attempt after a failed mjr_makeContext aborts the whole process (seen with GLFW and
            # MuJoCo 3.3: "libc++abi: __cxa_guard_acquire detected recursive initialization"), so never retry.
            raise RuntimeError(_CONTEXT_FAILURES[0])
        try:
            frame = super().render()
        except Exception as exc:  # GLFW / EGL / OSMesa failures surface as many different types
            message = (
                f"Cannot render {type(self).__name__}: no OpenGL context could be created with "
                f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({type(exc).__name__}: {exc}). Rendering stays "
                f"disabled in this process. To fix: {RENDER_HELP}"
            )
            _CONTEXT_FAILURES.append(message)
            raise RuntimeError(message) from exc
        self._render_ready = True
        return frame


class _HalfCheetahTaskEnv(_LocomotionTaskMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with VariBAD's 20-D observation; subclasses define the task and the forward reward."""

    _ctrl_weight = 0.05

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        self._float32_observation_space(20)

    def _get_obs(self):
        return np.concatenate((self.data.qpos[1:], self.data.qvel, self.get_body_com("torso"))).astype(np.float32)

    def _forward_reward(self, forward_velocity: float) -> float:
        raise NotImplementedError

    def step(self, action):
        action, clipped = self._raw_and_clipped(action)
        x_before = float(self.data.qpos[0])
        self.do_simulation(clipped, self.frame_skip)
        x_after = float(self.data.qpos[0])
        forward_velocity = (x_after - x_before) / self.dt
        reward_forward = self._forward_reward(forward_velocity)
        reward_ctrl = -self._ctrl_weight * float(np.sum(np.square(action)))  # on the raw action
        reward = reward_forward + reward_ctrl
        info = {
            "x_position": x_after,
            "forward_velocity": forward_velocity,
            "reward_forward": reward_forward,
            "reward_ctrl": reward_ctrl,
            "task": self.get_task(),
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, info


class HalfCheetahDirEnv(_HalfCheetahTaskEnv):
    """Cheetah-Dir: run forward or backward (VariBAD `half_cheetah_dir.py`).

    * Observation (20,) float32: ``qpos[1:]`` (8) + ``qvel`` (9) + torso position xyz (3). The last three are
      ``get_body_com("torso")`` as in VariBAD, which despite its name returns the torso *body frame origin*
      (``data.xpos``), not its centre of mass (``data.xipos``, about 0.15 m further forward): the quirk is
      kept. This is not gymnasium's 17-D observation.
    * Action (6,) in [-1, 1] (gymnasium's torque actuators). ``step`` accepts any finite action: it simulates
      ``clip(a, -1, 1)`` (clipped explicitly before ``do_simulation``, independent of the xml's ``ctrllimited``)
      and charges the control cost on the raw ``a``, as VariBAD does (its MuJoCo clamps the ctrllimited motors).
    * Task: direction d, shape (1,), +1 or -1 with probability 0.5 each. ``set_task`` accepts any finite d.
    * Reward: ``d * (x_after - x_before) / dt - 0.05 * |a|^2`` with ``x = qpos[0]``, ``dt = 0.05`` and ``a``
      the raw (unclipped) action: an action of 3.0 in every dimension costs 0.05 * 9 * 6 = 2.7 and moves the
      cheetah exactly like an action of 1.0.
    * Never terminates (the registration's 200-step limit truncates).
    * Reset noise (gymnasium v5 = VariBAD): ``qpos += U(-0.1, 0.1)``, ``qvel += 0.1 * N(0, 1)``.
    * ``info``: ``forward_velocity``, ``reward_forward``, ``reward_ctrl``, ``x_position``, ``task``.
    """

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return np.array([rng.choice([-1.0, 1.0])], dtype=np.float64)

    def set_task(self, task) -> None:
        self._task = as_task(task, 1, type(self).__name__)

    def _forward_reward(self, forward_velocity: float) -> float:
        return float(self._task[0]) * forward_velocity


class HalfCheetahVelEnv(_HalfCheetahTaskEnv):
    """Cheetah-Vel: run at a target forward velocity (VariBAD `half_cheetah_vel.py`).

    * Observation (20,) float32 and action (6,) exactly as in `HalfCheetahDirEnv` (including the quirk that
      the last three entries are the torso body position ``data.xpos``, not its centre of mass, and that
      ``clip(a, -1, 1)`` is simulated while the raw ``a`` is costed).
    * Task: target velocity v*, shape (1,), ~ U[0, 3]. VariBAD's docstring says [0, 2]; its code (and this
      env) uses 3.0. ``set_task`` accepts any finite v*.
    * Reward: ``-|v_x - v*| - 0.05 * |a|^2`` with ``v_x = (x_after - x_before) / dt``, ``x = qpos[0]`` and
      ``a`` the raw (unclipped) action.
    * Never terminates. Reset noise as in `HalfCheetahDirEnv`.
    * ``info``: ``forward_velocity``, ``reward_forward`` (the ``-|v_x - v*|`` term), ``reward_ctrl``,
      ``x_position``, ``task``.
    """

    max_velocity = 3.0

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return rng.uniform(0.0, self.max_velocity, size=1).astype(np.float64)

    def set_task(self, task) -> None:
        self._task = as_task(task, 1, type(self).__name__)

    def _forward_reward(self, forward_velocity: float) -> float:
        return -abs(forward_velocity - float(self._task[0]))


class AntDirEnv(_LocomotionTaskMixin, AntEnv):
    """Ant-Dir (VariBAD `ant_dir.py`), with the angle quirk kept.

    * Model: gymnasium's ``ant.xml`` (frame_skip 5, dt 0.05). The authors' (and VariBAD's)
      ``environments/mujoco/assets/ant.xml`` is gym's ant.xml plus two massless sites ("goal", "origin"), so the
      bodies, joints and actuators are the same; gymnasium's adds only a tracking camera.
    * Observation (27,) float32: ``qpos[2:]`` (13) + ``qvel`` (14). No contact forces (gymnasium v5 would add
      78 ``cfrc_ext`` entries by default).
    * Action (8,) in [-1, 1]. ``step`` accepts any finite action: it simulates ``clip(a, -1, 1)`` (clipped
      explicitly before ``do_simulation``, independent of the xml's ``ctrllimited``) and charges the control
      cost on the raw ``a``, as VariBAD does (its MuJoCo clamps the ctrllimited motors).
    * Task g, shape (1,), +1 or -1 with probability 0.5 (``set_task`` accepts any finite g). **Quirk kept from
      VariBAD:** g is used as an angle in radians, so the rewarded direction is ``(cos g, sin g)`` =
      (0.540, +-0.841), i.e. +-57 degrees from the x axis, not forward / backward.
    * Reward: ``dot((xy_after - xy_before) / dt, (cos g, sin g)) - 0.5 * |a|^2
      - 0.5e-3 * sum(clip(cfrc_ext, -1, 1)^2) + 1`` with ``a`` the raw (unclipped) action (3.0 in every
      dimension costs 0.5 * 9 * 8 = 36 and moves the ant exactly like 1.0), where xy is the torso body position
      (``get_body_com("torso")[:2]`` = ``data.xpos``, as in VariBAD) and ``cfrc_ext`` covers all bodies
      including the world body (always zero). ``cfrc_ext`` is filled after every step because gymnasium's
      ``_step_mujoco_simulation`` calls ``mj_rnePostConstraint`` after ``mj_step`` (MuJoCo >= 2 does not
      compute it otherwise). The +1 survive bonus is paid on every step, also the terminating one.
    * Terminates unless the state is finite and ``0.2 <= torso z <= 1.0``.
    * Reset noise (gymnasium v5 = VariBAD): ``qpos += U(-0.1, 0.1)``, ``qvel += 0.1 * N(0, 1)``.
    * ``info``: ``reward_forward``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``, ``x_velocity``,
      ``y_velocity``, ``x_position``, ``y_position``, ``task``.
    """

    _ctrl_weight = 0.5
    _contact_weight = 0.5e-3
    _survive_reward = 1.0

    def __init__(self, **kwargs):
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        self._float32_observation_space(self.model.nq - 2 + self.model.nv)

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return np.array([rng.choice([-1.0, 1.0])], dtype=np.float64)

    def set_task(self, task) -> None:
        self._task = as_task(task, 1, type(self).__name__)

    @property
    def direction(self) -> np.ndarray:
        """The rewarded unit direction (cos g, sin g) of the current task."""
        angle = float(self.get_task()[0])
        return np.array([np.cos(angle), np.sin(angle)])

    def _get_obs(self):
        return np.concatenate((self.data.qpos[2:], self.data.qvel)).astype(np.float32)

    def step(self, action):
        action, clipped = self._raw_and_clipped(action)
        xy_before = self.get_body_com("torso")[:2].copy()
        self.do_simulation(clipped, self.frame_skip)
        xy_after = self.get_body_com("torso")[:2].copy()
        xy_velocity = (xy_after - xy_before) / self.dt
        reward_forward = float(np.dot(xy_velocity, self.direction))
        reward_ctrl = -self._ctrl_weight * float(np.sum(np.square(action)))  # on the raw action
        reward_contact = -self._contact_weight * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1.0, 1.0))))
        reward = reward_forward + reward_ctrl + reward_contact + self._survive_reward
        state = self.state_vector()
        healthy = bool(np.all(np.isfinite(state)) and 0.2 <= state[2] <= 1.0)
        info = {
            "x_position": float(self.data.qpos[0]),
            "y_position": float(self.data.qpos[1]),
            "x_velocity": float(xy_velocity[0]),
            "y_velocity": float(xy_velocity[1]),
            "reward_forward": reward_forward,
            "reward_ctrl": reward_ctrl,
            "reward_contact": reward_contact,
            "reward_survive": self._survive_reward,
            "task": self.get_task(),
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, not healthy, False, info


def _mass_center_xy(model, data) -> np.ndarray:
    """Mass-weighted mean of every body's centre of mass (``data.xipos``), x and y only."""
    mass = model.body_mass
    return (mass @ data.xipos / mass.sum())[:2].copy()


class HumanoidDirEnv(_LocomotionTaskMixin, HumanoidEnv):
    """Humanoid-Dir (VariBAD `humanoid_dir.py`; used in the 2022 paper only).

    * Model: gymnasium's ``humanoid.xml`` (frame_skip 5, timestep 0.003, dt 0.015; 14 bodies incl. world).
    * Observation (376,) float32, the gym-v2 / VariBAD layout over **all** bodies including the world body:
      ``qpos[2:]`` (22) + ``qvel`` (23) + ``cinert`` (14x10 = 140) + ``cvel`` (14x6 = 84) + ``qfrc_actuator``
      (23, all dofs) + ``cfrc_ext`` (14x6 = 84). (gymnasium v5 drops the world body and the free-joint
      actuator forces and has 348 entries.) ``mj_rnePostConstraint`` is also run at reset, so the
      ``cfrc_ext`` block of the first observation is computed rather than left at zero.
    * Action space Box(-1, 1, (17,)). ``step`` accepts any finite action: it clips it to [-1, 1] (explicitly,
      independent of the xml's ``ctrllimited``) and rescales it linearly onto the actuators' ``ctrlrange``
      ([-0.4, 0.4] for every motor in this xml), so the applied control is ``ctrl = 0.4 * clip(a, -1, 1)``.
    * Task: goal angle g ~ U[0, 2 pi), shape (1,) (``set_task`` accepts any finite angle).
    * Reward: ``0.25 * dot((cos g, sin g), com_xy_after - com_xy_before) / model.opt.timestep
      - 0.1 * |ctrl|^2 - min(5e-7 * |cfrc_ext|^2, 10) + 5``, with ``com`` the mass-weighted centre of mass of
      all bodies (``body_mass`` and ``xipos``) and ``ctrl`` the applied (clipped, rescaled) control. **Quirk
      kept from VariBAD:** the displacement is divided by the simulator timestep (0.003), not by dt (0.015),
      so the velocity term is 5x larger than ``0.25 * velocity``.
    * Unlike the other four envs, the control cost is **not** charged on the raw action, because VariBAD's
      isn't: it sets ``ctrl = 0.4 * a`` without clipping and costs ``data.ctrl`` read after the step, which
      MuJoCo before 2.2.1 had clamped in place to ``ctrlrange`` (MuJoCo changelog 2.2.1: "mjData.ctrl values
      are no longer clamped in-place"). Its cost is therefore ``0.1 * |0.4 * clip(a, -1, 1)|^2``, the same as
      here, and so is its simulated control; an action of 3.0 in all 17 dimensions costs 0.1 * 17 * 0.16 =
      0.272, like 1.0.
    * Terminates when ``qpos[2] < 1`` or ``qpos[2] > 2``; the +5 bonus is paid on every step.
    * Reset noise (gymnasium v5 = gym v2): ``qpos += U(-0.01, 0.01)``, ``qvel += U(-0.01, 0.01)``.
    * ``info``: ``reward_forward``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``, ``x_velocity`` and
      ``y_velocity`` (centre-of-mass velocity over dt), ``x_position``, ``y_position``, ``task``.
    """

    _forward_weight = 0.25
    _ctrl_weight = 0.1
    _contact_weight = 5e-7
    _contact_cost_max = 10.0
    _alive_bonus = 5.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        low, high = self.model.actuator_ctrlrange.copy().T
        self._ctrl_low, self._ctrl_high = low, high
        size = (
            (self.model.nq - 2)
            + self.model.nv
            + self.data.cinert.size
            + self.data.cvel.size
            + self.data.qfrc_actuator.size
            + self.data.cfrc_ext.size
        )
        self._float32_observation_space(size)

    def _set_action_space(self):
        self.action_space = Box(low=-1.0, high=1.0, shape=(self.model.nu,), dtype=np.float32)
        return self.action_space

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        return rng.uniform(0.0, 2.0 * np.pi, size=1).astype(np.float64)

    def set_task(self, task) -> None:
        self._task = as_task(task, 1, type(self).__name__)

    @property
    def direction(self) -> np.ndarray:
        angle = float(self.get_task()[0])
        return np.array([np.cos(angle), np.sin(angle)])

    def action_to_ctrl(self, action) -> np.ndarray:
        """Maps an action onto the actuators' ctrlrange: clipped to [-1, 1] first, then rescaled linearly."""
        _, clipped = self._raw_and_clipped(action)
        return self._ctrl_low + 0.5 * (clipped + 1.0) * (self._ctrl_high - self._ctrl_low)

    def _get_obs(self):
        d = self.data
        return np.concatenate(
            (d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(), d.qfrc_actuator, d.cfrc_ext.ravel())
        ).astype(np.float32)

    def reset_model(self):
        super().reset_model()
        mujoco.mj_rnePostConstraint(self.model, self.data)
        return self._get_obs()

    def step(self, action):
        ctrl = self.action_to_ctrl(action)
        com_before = _mass_center_xy(self.model, self.data)
        self.do_simulation(ctrl, self.frame_skip)
        com_after = _mass_center_xy(self.model, self.data)
        reward_forward = (
            self._forward_weight * float(np.dot(self.direction, com_after - com_before)) / self.model.opt.timestep
        )
        reward_ctrl = -self._ctrl_weight * float(np.sum(np.square(ctrl)))  # the applied control, as VariBAD
        reward_contact = -min(
            self._contact_weight * float(np.sum(np.square(self.data.cfrc_ext))), self._contact_cost_max
        )
        reward = reward_forward + reward_ctrl + reward_contact + self._alive_bonus
        z = float(self.data.qpos[2])
        terminated = bool(z < 1.0 or z > 2.0)
        velocity = (com_after - com_before) / self.dt
        info = {
            "x_position": float(self.data.qpos[0]),
            "y_position": float(self.data.qpos[1]),
            "x_velocity": float(velocity[0]),
            "y_velocity": float(velocity[1]),
            "reward_forward": reward_forward,
            "reward_ctrl": reward_ctrl,
            "reward_contact": reward_contact,
            "reward_survive": self._alive_bonus,
            "task": self.get_task(),
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, info


class WalkerRandParamsEnv(_LocomotionTaskMixin, Walker2dEnv):
    """Walker2DRandParams (VariBAD `rand_param_envs/walker2d_rand_params.py`): random physics per task.

    * Model: gymnasium's ``walker2d_v5.xml``, changed at construction to the physics of the authors'
      ``rand_param_envs/gym/envs/mujoco/assets/walker2d.xml`` (which they simulate with MuJoCo 1.31):

      - ``model.opt.timestep = 0.004`` (gymnasium's xml: 0.002), integrator RK4 (both xml files say RK4; it is
        set explicitly anyway) and frame_skip 4, so ``dt = 0.016`` (gymnasium: 0.008) and
        ``metadata["render_fps"] == round(1 / 0.016) == 62``. The authors' frame_skip is 4, not the 5 that
        ``Walker2DRandParamsEnv`` passes: ``RandomEnv.__init__`` drops it and calls ``MujocoEnv.__init__(file,
        4)``.
      - Sliding friction of the right foot (geom ``foot_geom``) 0.9 and of the left foot (``foot_left_geom``)
        1.9, as the authors' xml; gymnasium's v5 xml gives both feet 1.9. The torsional and rolling
        coefficients stay 0.1 and 0.1 (a one-number ``friction="0.9"`` only replaces the first of the default
        ``".7 .1 .1"``).
      - Set by geom name, so they also apply to a model passed with ``xml_file=``.

      The rest was compared with the authors' xml and is the same: capsule radii and lengths (gymnasium's file
      is a local-coordinate rewrite of the authors' global ``fromto`` geoms), hence the masses and inertias
      (``inertiafromgeom``, density 1000); joint axes, positions and ranges (thighs and legs -150..0 degrees,
      feet -45..45); damping 0.1 and armature 0.01 on the six hinges (0 on the three root joints); motor gear
      100 with ctrlrange [-1, 1]; the floor's friction ``.7 .1 .1``; condim 3. Gymnasium's file adds a
      tracking camera (rendering only). What cannot be matched is the engine: MuJoCo 3.3 instead of 1.31.
      The saved original parameters that the task multipliers scale are taken after these changes.
    * Observation (17,) float32: ``qpos[1:]`` (8) + ``clip(qvel, -10, 10)`` (9).
    * Action (6,) in [-1, 1]. ``step`` accepts any finite action: it simulates ``clip(a, -1, 1)`` (clipped
      explicitly before ``do_simulation``, independent of the xml's ``ctrllimited``) and charges the control
      cost on the raw ``a``, as the authors do (their MuJoCo clamps the ctrllimited motors).
    * Reward: ``(x_after - x_before) / dt + 1 - 1e-3 * |a|^2`` with ``x = qpos[0]`` and ``a`` the raw
      (unclipped) action (3.0 in every dimension costs 1e-3 * 9 * 6 = 0.054 and moves the walker exactly like
      1.0); the +1 is paid on every step, also the terminating one.
    * Terminates unless ``0.8 < qpos[1] < 2.0`` (height) and ``-1 < qpos[2] < 1`` (angle).
    * Episode length: 200 steps (the registration's time limit), as the authors'. Their ``_elapsed_steps = -1``
      only makes up for the zero-action step that their ``MujocoEnv.__init__`` takes at construction; ``reset``
      sets the counter to 0 and their env ends the episode (``bad_transition``) after the 200th step.
    * Reset noise (gymnasium v5 = VariBAD): ``qpos += U(-0.005, 0.005)``, ``qvel += U(-0.005, 0.005)``.
    * Task: 65 positive multipliers of the model values saved at construction, in this fixed order:
      ``body_mass`` (8 bodies incl. world) x 1.5^U(-3, 3), ``body_inertia`` (8x3, row-major) x 1.5^U(-3, 3),
      ``dof_damping`` (9) x 1.3^U(-3, 3), ``geom_friction`` (8 geoms incl. floor, x3, row-major)
      x 1.5^U(-3, 3). The world body's mass / inertia and the three root dofs' damping are 0 in the xml, so
      their multipliers have no effect (as in VariBAD). ``set_task`` always multiplies the *original* values,
      so setting a task twice gives identical physics, and ``get_task`` returns the 65 multipliers (the authors'
      ``get_task`` returns the 65 scaled values themselves).
    * Deviation: after changing the parameters, ``set_task`` calls ``mj_setConst`` so MuJoCo's derived
      constants (``body_subtreemass``, ``body_invweight0``, ``dof_invweight0``, ``dof_M0``, ``actuator_acc0``,
      and the camera / light offsets ``cam_poscom0``, ``light_poscom0``) match the new masses and inertias
      (the contact solver's regularisation uses ``*_invweight0``); no other model field changes.
    """

    _param_groups = (  # (model field, base of the log-uniform multiplier)
        ("body_mass", 1.5),
        ("body_inertia", 1.5),
        ("dof_damping", 1.3),
        ("geom_friction", 1.5),
    )
    log_scale_limit = 3.0
    _ctrl_weight = 1e-3
    _alive_bonus = 1.0
    # The authors' walker2d.xml physics (see the class docstring).
    _timestep = 0.004
    _frame_skip = 4
    _foot_sliding_friction = (("foot_geom", 0.9), ("foot_left_geom", 1.9))

    def __init__(self, **kwargs):
        kwargs.setdefault("frame_skip", self._frame_skip)
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        self._float32_observation_space(self.model.nq - 1 + self.model.nv)
        self._original_params = {name: getattr(self.model, name).copy() for name, _ in self._param_groups}
        self._task_size = sum(value.size for value in self._original_params.values())
        self._bases = np.concatenate(
            [np.full(self._original_params[name].size, base) for name, base in self._param_groups]
        )
        self._scratch_data = mujoco.MjData(self.model)  # for mj_setConst, so self.data is left alone

    def _initialize_simulation(self):
        # Called by MujocoEnv.__init__ before anything reads the model (dt, render_fps, the saved parameters).
        model, data = super()._initialize_simulation()
        model.opt.timestep = self._timestep
        model.opt.integrator = mujoco.mjtIntegrator.mjINT_RK4
        for geom, friction in self._foot_sliding_friction:
            model.geom_friction[model.geom(geom).id, 0] = friction
        return model, data

    def sample_task(self, rng: np.random.Generator, split: str = "train") -> np.ndarray:
        check_split(split)
        exponents = rng.uniform(-self.log_scale_limit, self.log_scale_limit, size=self._task_size)
        return np.power(self._bases, exponents)

    def set_task(self, task) -> None:
        multipliers = as_task(task, self._task_size, type(self).__name__)
        if np.any(multipliers <= 0):
            raise ValueError(f"{type(self).__name__} expects positive multipliers, got {task!r}")
        start = 0
        for name, _ in self._param_groups:
            original = self._original_params[name]
            chunk = multipliers[start : start + original.size].reshape(original.shape)
            getattr(self.model, name)[...] = original * chunk
            start += original.size
        mujoco.mj_setConst(self.model, self._scratch_data)
        self._task = multipliers

    def _get_obs(self):
        return np.concatenate((self.data.qpos[1:], np.clip(self.data.qvel, -10.0, 10.0))).astype(np.float32)

    def step(self, action):
        action, clipped = self._raw_and_clipped(action)
        x_before = float(self.data.qpos[0])
        self.do_simulation(clipped, self.frame_skip)
        x_after, height, angle = (float(v) for v in self.data.qpos[0:3])
        forward_velocity = (x_after - x_before) / self.dt
        reward_ctrl = -self._ctrl_weight * float(np.sum(np.square(action)))  # on the raw action
        reward = forward_velocity + self._alive_bonus + reward_ctrl
        terminated = not (0.8 < height < 2.0 and -1.0 < angle < 1.0)
        info = {
            "x_position": x_after,
            "forward_velocity": forward_velocity,
            "reward_forward": forward_velocity,
            "reward_ctrl": reward_ctrl,
            "reward_survive": self._alive_bonus,
            "task": self.get_task(),
        }
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, info
