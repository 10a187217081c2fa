"""Meta-World ML1 / ML10 specifics (the generic contract checks for every env id live elsewhere).

Building ML10's task lists takes several seconds once per process (envs.meta_world caches them), so every test gets
its own env cheaply; the cross-process check runs in a subprocess started at module start, alongside the others.
"""

import hashlib
import inspect
import os
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.meta_world import (
    MetaWorldML1Env,
    MetaWorldML10Env,
    _benchmark,
    _build_benchmark,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ML10_TRAIN = {
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "sweep-v3",
    "basketball-v3",
}
ML10_TEST = {"drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"}


def _digest(bench) -> str:
    """Hash of a benchmark's families and goal/object variations (the tasks' `rand_vec`s)."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        for family in bench.families(split):
            h.update(f"{split}:{family.name}:{len(family.tasks)}".encode())
            for task in family.tasks:
                h.update(np.asarray(pickle.loads(task.data)["rand_vec"], dtype=np.float64).tobytes())
    return h.hexdigest()


_SUBPROCESS_CODE = f"""
import sys; sys.path.insert(0, {REPO!r})
import hashlib, pickle
import numpy as np
from envs.meta_world import _benchmark
{inspect.getsource(_digest)}
np.random.seed(12345)  # another global random state must not change the benchmark
print(_digest(_benchmark("ML1", "pick-place-v3")), _digest(_benchmark("ML10")))
"""


@pytest.fixture(scope="module", autouse=True)
def other_process():
    """Builds the benchmarks in a fresh interpreter, in the background while the other tests run."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SUBPROCESS_CODE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def ml1():
    env = MetaWorldML1Env()
    yield env
    env.close()


@pytest.fixture
def ml10():
    env = MetaWorldML10Env()
    yield env
    env.close()


def _config(env, task):
    """The inner env's goal and object start position after a reset with `task`."""
    env.reset(options={"task": task})
    inner = env._inner
    return np.concatenate([np.asarray(inner._target_pos, dtype=np.float64), np.asarray(inner.obj_init_pos)])


def test_ml1_train_and_test_configurations_differ(ml1):
    train = np.array([_config(ml1, [0, 0, v]) for v in range(50)])
    test = np.array([_config(ml1, [1, 0, v]) for v in range(50)])
    assert len(np.unique(train, axis=0)) == 50 and len(np.unique(test, axis=0)) == 50
    # no test configuration is (close to) a train one
    dist = np.linalg.norm(train[:, None, :] - test[None, :, :], axis=-1)
    assert dist.min() > 1e-6
    assert ml1.family_names("train") == ml1.family_names("test") == ["pick-place-v3"]


def test_held_out_tasks_are_distinct_test_variations(ml1, ml10):
    for env, env_id, count in ((ml1, "MetaWorldML1", 50), (ml10, "MetaWorldML10", 250)):
        assert len(env.all_tasks("test")) == count and all(task[0] == 1 for task in env.all_tasks("test"))
        tasks = envs.evaluation_tasks(env_id, 10, 1_000_003)
        assert len({tuple(task) for task in tasks}) == 10 and all(task[0] == 1 for task in tasks)
        np.testing.assert_array_equal(tasks, envs.evaluation_tasks(env_id, 10, 1_000_003))  # the same every run


def test_ml10_families_are_disjoint(ml10):
    train, test = ml10.family_names("train"), ml10.family_names("test")
    assert len(train) == 10 and len(test) == 5
    assert set(train) == ML10_TRAIN and set(test) == ML10_TEST
    assert not set(train) & set(test)


def test_ml10_sampling_respects_the_split(ml10):
    rng = np.random.default_rng(0)
    train = np.array([ml10.sample_task(rng, "train") for _ in range(400)])
    test = np.array([ml10.sample_task(rng, "test") for _ in range(200)])
    assert np.all(train[:, 0] == 0) and np.all(test[:, 0] == 1)
    assert set(train[:, 1].astype(int)) == set(range(10))  # i.i.d. uniform: 400 draws hit every family
    assert set(test[:, 1].astype(int)) == set(range(5))
    assert train[:, 2].min() >= 0 and train[:, 2].max() < 50
    # the inner env that runs a task belongs to that task's family
    for task in (train[0], test[0]):
        ml10.reset(options={"task": task})
        family = ml10.family_names("train" if task[0] == 0 else "test")[int(task[1])]
        assert ml10.family_name == family
        assert type(ml10._inner) is ml10._bench.families("train" if task[0] == 0 else "test")[int(task[1])].env_cls
    assert len(ml10._envs) <= 15


def test_bad_tasks_give_clear_errors(ml1, ml10):
    for task in ([2, 0, 0], [0, 1, 0], [0, 0, 50], [0, 0, -1], [0, 0, 0.5]):
        with pytest.raises(ValueError, match="MetaWorldML1Env"):
            ml1.set_task(task)
    with pytest.raises(ValueError, match=r"family must be in \[0, 5\)"):
        ml10.set_task([1, 5, 0])
    with pytest.raises(ValueError, match="3 finite floats"):
        ml10.set_task([0, 0])


@pytest.mark.parametrize("name", ["ml1", "ml10"])
def test_observation_hides_goal_and_spaces(name, request):
    env = request.getfixturevalue(name)
    assert env.observation_space.shape == (39,) and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        obs, _ = env.reset(options={"task": env.sample_task(rng, split)})
        assert np.any(env._inner._target_pos != 0)  # there is a goal, it is just not shown
        for _ in range(20):
            assert obs.shape == (39,) and obs.dtype == np.float32
            assert env.observation_space.contains(obs)
            assert np.all(obs[36:] == 0)
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert "success" in info and isinstance(info["success"], float)
            assert np.isfinite(reward) and not terminated and not truncated


@pytest.mark.parametrize("env_id", ["MetaWorldML1", "MetaWorldML10"])
def test_full_episode_under_time_limit(env_id):
    env = gym.make(env_id)  # benchmarks are cached per process: cheap after the fixtures
    assert gym.spec(env_id).max_episode_steps == 500
    for episode in range(2):  # the second episode checks that Meta-World's own step counter was reset
        env.reset(seed=episode)
        for t in range(1, 501):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            assert "success" in info and not terminated
            assert truncated == (t == 500)
    env.close()


def test_inner_path_limit_disabled(ml1):
    ml1.reset(options={"task": [0, 0, 3]})
    for _ in range(520):  # Meta-World itself would raise after 500 steps
        _, _, terminated, truncated, _ = ml1.step(np.zeros(4, np.float32))
        assert not terminated and not truncated


def test_ml1_other_task_and_bad_name():
    env = MetaWorldML1Env(task_name="reach-v3")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (39,) and env.family_names("test") == ["reach-v3"]
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == (39,) and np.isfinite(reward)
    env.close()
    with pytest.raises(ValueError, match="unknown Meta-World task 'pick-place-v9'.*reach-v3"):
        MetaWorldML1Env(task_name="pick-place-v9")


@pytest.mark.needs_opengl
def test_render_rgb_array():
    env = gym.make("MetaWorldML1", render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # not a blank image
    env.close()


def test_render_failure_is_a_clear_error(monkeypatch):
    env = MetaWorldML1Env(render_mode="rgb_array", width=32, height=32)
    env.reset(seed=0)

    def broken_render():
        raise Exception("an OpenGL platform library has not been loaded into this process")

    monkeypatch.setattr(env._inner, "render", broken_render)
    with pytest.raises(RuntimeError, match="MUJOCO_GL=osmesa"):
        env.render()
    env.close()


def test_task_lists_are_fixed(ml1, ml10, other_process):
    # a second instance in this process sees the same tasks
    again = MetaWorldML1Env()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        ta, tb = ml1.sample_task(rng_a, "test"), again.sample_task(rng_b, "test")
        assert np.array_equal(_config(ml1, ta), _config(again, tb))
    again.close()
    # an uncached rebuild gives the same tasks and leaves the global numpy random state alone
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    rebuilt = _build_benchmark("ML1", "pick-place-v3")
    assert np.array_equal(np.random.get_state()[1], before)
    assert _digest(rebuilt) == _digest(_benchmark("ML1", "pick-place-v3"))
    # another process (with another global seed) builds identical ML1 and ML10 task lists
    out, err = other_process.communicate(timeout=120)
    assert other_process.returncode == 0, err
    assert out.split() == [_digest(_benchmark("ML1", "pick-place-v3")), _digest(_benchmark("ML10"))]
