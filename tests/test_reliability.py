"""Reliability of the four training scripts (identically): bad input, non-finite values, signals, exact resume,
determinism, checkpoint checks and wandb failures. Subprocess tests with tiny budgets; signals are sent from here."""

import csv
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import rl2_hyper
import rl2_standard
import varibad_hyper
import varibad_standard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = [varibad_standard, varibad_hyper, rl2_standard, rl2_hyper]
SCRIPTS = [os.path.basename(m.__file__) for m in MODULES]
# 2 envs x 25 steps: iterations end in the middle of GridNavi's 60-step meta-episodes, so a resume must restore
# unfinished meta-episodes (VariBAD's running trajectories, RL2's hidden state), not only the networks.
TINY = [
    "--env-id",
    "GridNavi",
    "--num-envs",
    "2",
    "--num-steps",
    "25",
    "--num-minibatches",
    "2",
    "--precollect-frames",
    "100",
    "--num-eval-tasks",
    "2",
    "--eval-every",
    "4",
]


def run(script, args, cwd, env=None, **kwargs):
    """Runs a script in `cwd`; `env` adds variables (None: removes one)."""
    env = {k: v for k, v in {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}.items() if v is not None}
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs
    )


def metrics(run_dir):
    """metrics.csv without what depends on the clock."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [(r["global_step"], r["metric"], r["value"]) for r in csv.DictReader(f) if r["metric"] != "charts/SPS"]


def only_run(cwd):
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    return run_dir


def interrupt(script, args, cwd, signum, ready):
    """Starts a run and sends `signum` at the first moment `ready(run_dir)` holds. The run is frozen (SIGSTOP) while
    its folder is read, so the signal finds it exactly as `ready` saw it, however fast the machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, script), *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    while True:
        assert proc.poll() is None, f"the run ended before the signal:\n{proc.stderr.read()}"
        proc.send_signal(signal.SIGSTOP)
        run_dirs = glob.glob(os.path.join(cwd, "runs", "*"))
        if run_dirs and ready(run_dirs[0]):
            break
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def logged_rows(run_dir):
    """The complete rows of metrics.csv on disk (the header not counted)."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.endswith("\n")) - 1


# -- bad input: one line, non-zero exit, no traceback, nothing started ------------------------------------------------

BAD = [
    (["--env-id", "GridNav"], "unknown --env-id 'GridNav'; valid ids: GridNavi"),
    (["--total-timesteps", "0"], "--total-timesteps is 0; it must be > 0"),
    (["--num-envs", "-2"], "--num-envs is -2; it must be > 0"),
    (["--num-steps", "0"], "--num-steps is 0; it must be > 0"),
    (["--num-minibatches", "7"], "--num-minibatches 7 does not divide the rollout of --num-envs 16 x --num-steps 60"),
    (["--total-timesteps", "100"], "--total-timesteps 100 is less than one rollout"),
    (["--latent-dim", "0"], "--latent-dim is 0; it must be > 0"),
    (["--learning-rate", "nan"], "--learning-rate is nan; it must be a finite number"),
    (["--ent-coef", "inf"], "--ent-coef is inf; it must be a finite number"),
    (["--vf-coef", "-1"], "--vf-coef is -1.0; it must be >= 0"),
    (["--gamma", "1.5"], "--gamma 1.5 and --gae-lambda 0.95 must be at most 1"),
    (["--encoder-gru-chrono", "1"], "--encoder-gru-chrono 1: give 0 (zero bias) or a memory span T >= 2"),
]


@pytest.mark.parametrize("module", MODULES, ids=SCRIPTS)
@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_line(module, argv, message):
    argv = argv if "--env-id" in argv else ["--env-id", "GridNavi", *argv]
    with pytest.raises(SystemExit) as e:
        module.parse_args(argv)
    assert str(e.value.code).startswith("error: ") and message in str(e.value.code)
    assert "\n" not in str(e.value.code)


def test_rl2_minibatches_must_be_whole_envs(tmp_path):
    result = run("rl2_hyper.py", ["--env-id", "GridNavi", "--num-minibatches", "3", "--num-steps", "3"], tmp_path)
    assert result.returncode == 1 and "must be a multiple of --num-minibatches 3" in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_exits_before_anything_starts(script, tmp_path):
    result = run(script, ["--env-id", "GridNavi", "--num-minibatches", "7"], tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --num-minibatches 7 does not divide the rollout of --num-envs 16 x --num-steps 60 = 960 frames"
    ]
    assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "runs")


def test_bad_checkpoints_are_refused(tmp_path, finished_runs):
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"P0\n.")  # a pickle whose load error (no persistent_load) spans two lines
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    ckpt = os.path.join(finished_runs["varibad_hyper.py"], "checkpoint.pt")
    cases = [
        ("varibad_hyper.py", ["--resume", str(tmp_path / "missing.pt")], "is not a readable checkpoint (FileNotFound"),
        ("evaluate.py", [str(not_a_checkpoint)], "is not a readable checkpoint (UnpicklingError"),
        ("varibad_standard.py", ["--resume", str(not_a_checkpoint)], "is not a readable checkpoint (UnpicklingError"),
        (
            "varibad_hyper.py",
            ["--resume", str(tmp_path / "foreign.pt")],
            "is not a checkpoint of this repository's scripts",
        ),
        ("rl2_hyper.py", ["--resume", ckpt], "of varibad_hyper.py for GridNavi, not of rl2_hyper.py for --env-id Grid"),
        (
            "varibad_hyper.py",
            ["--env-id", "TMaze", "--resume", ckpt],
            "for GridNavi, not of varibad_hyper.py for --env-id TMaze",
        ),
        ("varibad_hyper.py", ["--resume", ckpt, "--latent-dim", "7"], "--latent-dim 7 differs from the checkpoint's 5"),
    ]
    for script, argv, message in cases:
        argv = argv if "--env-id" in argv or script == "evaluate.py" else ["--env-id", "GridNavi", *argv]
        result = run(script, argv, tmp_path)
        assert result.returncode == 1, (argv, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (argv, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(tmp_path / "runs")


# -- determinism, signals, exact resume -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """One uninterrupted tiny run per script (24 iterations), with its checkpoint."""
    runs = {}
    for script in SCRIPTS:
        cwd = tmp_path_factory.mktemp(script.replace(".py", ""))
        result = run(script, [*TINY, "--seed", "5", "--total-timesteps", "1200", "--save-model"], cwd)
        assert result.returncode == 0, result.stderr
        runs[script] = only_run(cwd)
    return runs


@pytest.mark.parametrize("script", ["varibad_hyper.py", "rl2_hyper.py"])
def test_same_seed_same_metrics(script, tmp_path, finished_runs):
    result = run(script, [*TINY, "--seed", "5", "--total-timesteps", "1200"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert metrics(only_run(tmp_path)) == metrics(finished_runs[script])


@pytest.mark.parametrize("script", SCRIPTS)
def test_anneal_lr_decays_the_learning_rate_linearly_to_zero(script, tmp_path):
    flags = ["--env-id", "GridNavi", "--num-envs", "2", "--num-steps", "20", "--num-minibatches", "1"]
    flags += ["--precollect-frames", "0", "--num-eval-tasks", "1", "--total-timesteps", "160", "--anneal-lr"]
    result = run(script, [*flags, "--learning-rate", "0.004"], tmp_path)
    assert result.returncode == 0, result.stderr
    logged = [float(value) for _, name, value in metrics(only_run(tmp_path)) if name == "charts/learning_rate"]
    assert logged == pytest.approx([0.004, 0.003, 0.002, 0.001])  # iteration i of 4: (1 - (i - 1) / 4) x the rate


@pytest.mark.parametrize(
    "script,signum",
    [
        ("varibad_standard.py", signal.SIGINT),
        ("varibad_hyper.py", signal.SIGTERM),
        ("rl2_standard.py", signal.SIGTERM),
        ("rl2_hyper.py", signal.SIGINT),
    ],
)
def test_interrupted_and_resumed_run_equals_uninterrupted(script, signum, tmp_path, finished_runs):
    # no --save-model: a signal saves a checkpoint anyway
    # a first leg ten times longer than the run it is compared with: it cannot end before the signal arrives
    long_run = [*TINY, "--seed", "5", "--total-timesteps", "12000"]
    code, out, err = interrupt(script, long_run, tmp_path, signum, ready=lambda run_dir: logged_rows(run_dir) > 0)
    run_dir = only_run(tmp_path)
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    assert code == 128 + signum, err
    assert (
        f"{signal.Signals(signum).name}: stopped at iteration" in out
        and f"--resume {os.path.relpath(ckpt, tmp_path)}" in out
    )
    assert "Traceback" not in err and os.path.isfile(ckpt) and not os.path.exists(f"{ckpt}.tmp")
    stopped_at = torch.load(ckpt, weights_only=False)["iteration"]
    assert 1 <= stopped_at < 24 and not os.path.exists(os.path.join(run_dir, "eval.json"))

    # settings come from the checkpoint; the budget is the compared run's (a flag a resumed run may change)
    result = run(script, ["--env-id", "GridNavi", "--resume", ckpt, "--total-timesteps", "1200"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming {os.path.basename(run_dir)} at iteration {stopped_at + 1}" in result.stdout
    assert metrics(run_dir) == metrics(finished_runs[script])
    with open(os.path.join(run_dir, "eval.json")) as f, open(os.path.join(finished_runs[script], "eval.json")) as g:
        assert f.read() == g.read()


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, finished_runs):
    """A run killed without warning (SIGKILL) resumes from its last checkpoint, and what it logged after that
    checkpoint is dropped (test_logger_resume_keeps_complete_rows_up_to_the_checkpoint): metrics.csv equals the
    uninterrupted run's."""
    script = "varibad_standard.py"
    long_run = [*TINY, "--seed", "5", "--total-timesteps", "12000", "--save-model", "--save-every", "5"]

    def saved(run_dir):
        return os.path.exists(os.path.join(run_dir, "checkpoint.pt"))

    code, _, _ = interrupt(script, long_run, tmp_path, signal.SIGKILL, ready=saved)
    assert code == -signal.SIGKILL
    run_dir = only_run(tmp_path)
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    assert torch.load(ckpt, weights_only=False)["iteration"] in (5, 10, 15, 20)  # before the compared run's end
    result = run(script, ["--env-id", "GridNavi", "--resume", ckpt, "--total-timesteps", "1200"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert metrics(run_dir) == metrics(finished_runs[script])


@pytest.mark.parametrize("module", MODULES, ids=SCRIPTS)
def test_logger_resume_keeps_complete_rows_up_to_the_checkpoint(module, tmp_path):
    """A resumed run's metrics.csv keeps the rows up to the checkpoint's step; later rows, and the cut last line a
    killed process can leave (here "9", from a row of step 96), are dropped."""
    rows = "global_step,wall_time,metric,value\n48,1.0,a,1\n48,1.0,b,2\n96,2.0,a,3\n9"
    (tmp_path / "metrics.csv").write_text(rows)
    logger = module.Logger(str(tmp_path), module.Args(), "run", resume_step=48)
    logger.log({"a": 4.0}, 96, 960)
    logger.close()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[:3] == ["global_step,wall_time,metric,value", "48,1.0,a,1", "48,1.0,b,2"]
    assert [line.split(",")[0::2] for line in lines[3:]] == [["96", "a"]] and lines[3].endswith(",4")


def test_checkpoints_hold_the_gpu_generators_and_older_ones_without_them_resume(tmp_path, finished_runs):
    """A checkpoint holds every GPU's generator state (none here) so that a resumed GPU run draws what the
    uninterrupted one would; a checkpoint written before it had them still resumes."""
    ckpt = torch.load(os.path.join(finished_runs["varibad_hyper.py"], "checkpoint.pt"), weights_only=False)
    assert isinstance(ckpt["rng"]["cuda"], list) and len(ckpt["rng"]["cuda"]) == torch.cuda.device_count()
    del ckpt["rng"]["cuda"]
    torch.save(ckpt, tmp_path / "older.pt")
    result = run("varibad_hyper.py", ["--resume", str(tmp_path / "older.pt"), "--total-timesteps", "1250"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "Traceback" not in result.stderr


def test_resuming_a_finished_run_only_evaluates(tmp_path, finished_runs):
    ckpt = os.path.join(finished_runs["rl2_standard.py"], "checkpoint.pt")
    result = run("rl2_standard.py", ["--env-id", "GridNavi", "--resume", ckpt], tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run(tmp_path)  # the same run name, in this folder
    assert metrics(run_dir) == []  # no iteration ran: nothing logged
    with (
        open(os.path.join(run_dir, "eval.json")) as f,
        open(os.path.join(finished_runs["rl2_standard.py"], "eval.json")) as g,
    ):
        assert f.read() == g.read()  # the same evaluation of the same networks


def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    # an absurd learning rate: the first PPO update (iteration 2, after 100 precollected frames) overflows the policy
    result = run(
        "varibad_hyper.py",
        [*TINY, "--learning-rate", "1e38", "--save-model", "--save-every", "1", "--total-timesteps", "1200"],
        tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: non-finite ") and " at iteration 2 (100 frames)" in line
    ckpt = os.path.join(only_run(tmp_path), "checkpoint.pt")
    assert f"the last good checkpoint, {os.path.relpath(ckpt, tmp_path)} (iteration 1), is kept" in line
    saved = torch.load(ckpt, weights_only=False)
    assert saved["iteration"] == 1 and all(
        torch.isfinite(v).all() for v in saved["agent"].values() if v.is_floating_point()
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_cuda_without_gpu_warns_and_runs_on_the_cpu(tmp_path):
    result = run("rl2_hyper.py", [*TINY, "--total-timesteps", "100", "--cuda"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--cuda was given but no GPU is available: running on the CPU" in result.stderr


# -- wandb failures never stop training --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["no-login", "no-server"])
def test_wandb_failures_fall_back_to_offline(case, tmp_path):
    env = {
        "HOME": str(tmp_path),
        "WANDB_DIR": str(tmp_path),
        "WANDB_MODE": None,
        "WANDB_API_KEY": None,
        "WANDB_BASE_URL": None,
        "WANDB_INIT_TIMEOUT": "5",
    }
    if case == "no-server":  # a key, but the server refuses connections
        env.update(WANDB_API_KEY="a" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    result = run("varibad_standard.py", [*TINY, "--total-timesteps", "100", "--track"], tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("UserWarning: wandb.init failed") == 1 and "logging offline instead" in result.stderr
    assert os.path.isfile(os.path.join(only_run(tmp_path), "eval.json"))
    assert glob.glob(os.path.join(tmp_path, "wandb", "offline-run-*"))


def test_wandb_log_failure_warns_once_and_training_goes_on(tmp_path):
    class Broken:
        calls = 0

        def log(self, *args, **kwargs):
            Broken.calls += 1
            raise ConnectionError("server gone")

        def finish(self):
            pass

    args = varibad_standard.Args()
    logger = varibad_standard.Logger(str(tmp_path), args, "run")
    logger.wandb = Broken()
    with pytest.warns(UserWarning, match="wandb.log failed"):
        logger.log({"a": 1.0}, 1, 10)
    logger.log({"a": 2.0}, 2, 10)  # no second warning, no exception
    logger.close()
    assert Broken.calls == 1
    with open(tmp_path / "metrics.csv") as f:
        assert len(f.read().strip().splitlines()) == 3


@pytest.mark.parametrize("module", MODULES, ids=SCRIPTS)
def test_a_save_killed_half_way_leaves_the_previous_checkpoint_intact(module, tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    module.save_checkpoint(path, {}, iteration=1, agent={"w": torch.ones(3)})
    # the process dies while the next checkpoint is being written: simulate it by killing a child mid-save
    code = (
        f"import sys, os, signal, torch; sys.path.insert(0, {ROOT!r}); import {module.__name__} as m\n"
        "real_save = torch.save\n"
        "def dying_save(obj, f):\n"
        "    real_save(obj, f)\n"
        "    with open(f, 'r+b') as fh: fh.truncate(10)  # half a file on disk\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying_save\n"
        f"m.save_checkpoint({path!r}, {{}}, iteration=2, agent={{'w': torch.zeros(3)}})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    saved = torch.load(path, weights_only=False)
    assert saved["iteration"] == 1 and torch.equal(saved["agent"]["w"], torch.ones(3))


# -- resume: the flags given on the command line, and only those ------------------------------------------------------


def test_flags_given_on_resume_count_even_when_they_equal_the_preset(tmp_path, finished_runs):
    """A run saved with --num-eval-tasks 2 and resumed with --num-eval-tasks 21 (GridNavi's preset value) evaluates
    on 21 tasks: a flag counts as given because it is on the command line, not because it differs from the preset."""
    source = finished_runs["varibad_hyper.py"]
    run_dir = tmp_path / "runs" / os.path.basename(source)
    run_dir.mkdir(parents=True)
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(open(os.path.join(source, "checkpoint.pt"), "rb").read())
    result = run(
        "varibad_hyper.py", ["--env-id", "GridNavi", "--resume", str(ckpt), "--num-eval-tasks", "21"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    with open(run_dir / "eval.json") as f:
        assert len(json.load(f)["returns"]) == 21


@pytest.mark.parametrize("module", MODULES, ids=SCRIPTS)
def test_resume_keeps_the_saved_settings_and_takes_the_runtime_flags_given(module, tmp_path):
    def checkpoint(**changes):  # a checkpoint of this script whose settings are GridNavi's preset with changes
        saved = dataclasses.asdict(module.apply_preset(module.Args(env_id="GridNavi", **changes)))
        path = str(tmp_path / f"{len(changes)}.pt")
        torch.save({"script": module.__name__ + ".py", "args": {**saved, "eval_checkpoint": None}, "agent": {}}, path)
        return saved, path  # "eval_checkpoint": a flag that the scripts no longer have

    saved, path = checkpoint(track=True, total_timesteps=3000)
    resumed, ckpt = module.parse_args(["--env-id", "GridNavi", "--resume", path, "--no-track", "--total-timesteps",
                                       "4000000"])  # fmt: skip
    assert (resumed.track, resumed.total_timesteps, resumed.resume) == (False, 4_000_000, path)  # 4M: the preset's
    assert dataclasses.replace(resumed, track=True, total_timesteps=3000, resume=None) == module.Args(**saved)
    assert ckpt["args"]["total_timesteps"] == 3000
    assert module.parse_args(["--env-id", "GridNavi", "--resume", path, "--gamma", "0.95"])[0].gamma == 0.95  # saved
    with pytest.raises(SystemExit, match="--gamma 0.9 differs from the checkpoint's 0.95"):
        module.parse_args(["--env-id", "GridNavi", "--resume", path, "--gamma", "0.9"])
    # the merged settings are checked together: the run's own rollout, not the preset's, bounds --total-timesteps
    _, path = checkpoint(num_envs=2, num_steps=10, num_minibatches=1)
    resumed, _ = module.parse_args(["--env-id", "GridNavi", "--resume", path, "--total-timesteps", "40"])
    assert resumed.total_timesteps == 40  # below the preset's rollout of 960 frames, not below the run's 20
    with pytest.raises(SystemExit, match="--total-timesteps 10 is less than one rollout"):
        module.parse_args(["--env-id", "GridNavi", "--resume", path, "--total-timesteps", "10"])
