"""benchmark/: the runner (end to end on tiny runs: run, skip, collect, resume, stop), the plot script on synthetic
runs (numbers in the table), the W&B sweep files (parsed as `wandb agent` would build the command, then by the
scripts' own parse_args), the speed benchmark, the trivial-policy baselines and the checkpoint diagnostics."""

import csv
import gzip
import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_beliefs import MODULES, build, save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmark"))

import baselines  # noqa: E402
import init_scale  # noqa: E402
import plot  # noqa: E402
import reward_terms  # noqa: E402
import run as runner  # noqa: E402
import speed  # noqa: E402
import suites  # noqa: E402

import envs  # noqa: E402

TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "60",
    "--num-minibatches",
    "2",
    "--total-timesteps",
    "240",
    "--precollect-frames",
    "0",
    "--num-eval-tasks",
    "2",
    "--eval-every",
    "1",
    "--vae-batch-num-trajs",
    "2",
]


# --------------------------------------------------------------------------------------------------------------------
# suites
def test_suites_give_the_documented_keys_and_share_runs():
    keys = [run.key for run in suites.suite_runs("gridnavi")]
    assert len(keys) == 12
    assert "varibad_hyper__GridNavi__bias__s20" in keys and "varibad_standard__GridNavi__preset__s3" in keys
    init = {run.key: run for run in suites.suite_runs("init-gridnavi")}
    assert init["varibad_hyper__GridNavi__bias__s73"].flags == ()  # the same run as in the gridnavi suite
    assert init["varibad_hyper__GridNavi__naive__s3"].flags == ("--hyper-init", "naive")
    cheetah = suites.suite_runs("init-cheetah")
    assert len(cheetah) == 10 and {r.seed for r in cheetah} == {73, 20}  # 5 inits x 2 seeds
    assert all(suites.flag_value(r.flags, "total-timesteps") == "3000000" for r in cheetah)
    assert {r.key for r in suites.suite_runs("tmaze")} >= {
        "rl2_hyper__TMaze__bias__s3",
        "varibad_hyper__TMaze__bias__s73",
    }
    assert len(suites.suite_runs("mujoco-short")) == 28  # 5 envs x 2 hypernetwork scripts + 4 x varibad_standard
    four = {run.key for run in suites.suite_runs("cheetah")}  # shares its varibad_hyper runs with init-cheetah
    assert "varibad_standard__CheetahDir__preset-3M__s20" in four and len(four) == 8
    assert {r.key for r in cheetah} & four == {f"varibad_hyper__CheetahDir__bias-3M__s{s}" for s in (73, 20)}
    assert [r.seed for r in suites.suite_runs("gridnavi", seeds=[5])] == [5, 5, 5, 5]
    assert suites.default_label("rl2_hyper", ["--hyper_init=hfi"]) == "hfi"
    assert suites.default_label("rl2_standard", ["--hyper-init", "hfi"]) == "preset"
    assert suites.without_flag(["--hyper-init", "hfi", "--seed", "1", "--hyper_init=x"], "hyper-init") == [
        "--seed",
        "1",
    ]
    assert suites.parse_key("varibad_hyper__GridNavi__bias-2M__s20") == ("varibad_hyper", "GridNavi", "bias-2M", 20)
    with pytest.raises(ValueError, match="distinct labels"):
        suites.expand(
            [
                suites.Entry("varibad_hyper", "GridNavi", (1,)),
                suites.Entry("varibad_hyper", "GridNavi", (1,), ("--learning-rate", "1e-3")),
            ]
        )
    with pytest.raises(ValueError, match="unknown script"):
        suites.expand([suites.Entry("ppo", "GridNavi", (1,))])


# --------------------------------------------------------------------------------------------------------------------
# runner
def run_runner(tmp_path, *flags):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "benchmark", "run.py"),
        "--results-dir",
        str(tmp_path / "results"),
        "--work-dir",
        str(tmp_path / "work"),
        *flags,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_runner_runs_skips_collects_and_resumes(tmp_path):
    adhoc = [
        "--scripts",
        "varibad_standard",
        "--env-ids",
        "GridNavi",
        "--seeds",
        "73",
        "20",
        "--label",
        "tiny",
        "--jobs",
        "2",
    ]
    keys = ["varibad_standard__GridNavi__tiny__s73", "varibad_standard__GridNavi__tiny__s20"]
    results, work = tmp_path / "results" / "runs", tmp_path / "work"
    assert run_runner(tmp_path, *adhoc, "--dry-run", "--", *TINY).count("todo ") == 2

    out = run_runner(tmp_path, *adhoc, "--", *TINY)  # both runs, at once
    for key in keys:
        assert sorted(os.listdir(results / key)) == ["args.json", "command.txt", "eval.json", "metrics.csv.gz"]
        assert json.loads((results / key / "eval.json").read_text())["global_step"] == 240
        command = (results / key / "command.txt").read_text()
        assert "commit" in command and "--save-model" in command and "--label" not in command
        launch = shlex.split(next(line for line in command.splitlines() if not line.startswith("#")))
        assert launch[:2] == ["cd", os.path.relpath(work / key, ROOT)] and "python" in launch
        assert not any(token.startswith("/") for token in launch)  # relative paths only: no machine's folders
        assert f"--seed {key[-2:]}" in command and "--total-timesteps 240" in command
        machine = next(line for line in command.splitlines() if line.startswith("# machine: "))
        assert f"{os.cpu_count()} CPUs; load average " in machine and "other runs going: " in machine
        metrics = gzip.decompress((results / key / "metrics.csv.gz").read_bytes())
        assert metrics == next((work / key / "runs").glob("*/metrics.csv")).read_bytes() and b"eval/return" in metrics
    assert out.count("done, collected") == 2
    assert keys[0] in (results / keys[1] / "command.txt").read_text()  # started second, beside the first

    out = run_runner(tmp_path, *adhoc, "--", *TINY)  # again: nothing to do
    assert out.count("done, skipped") == 2 and "started" not in out
    assert len(list((work / keys[0] / "runs").iterdir())) == 1

    # finished in its work folder but not collected (e.g. started by hand): copied, not rerun
    (results / keys[0] / "eval.json").unlink()
    assert f"finished   {keys[0]}" in run_runner(tmp_path, *adhoc, "--dry-run", "--", *TINY)
    out = run_runner(tmp_path, *adhoc, "--", *TINY)
    assert "finished in its work folder, collected" in out and "started" not in out
    assert (results / keys[0] / "eval.json").exists()

    # a checkpoint but no eval.json (stopped before the end): restarted with --resume
    (run_dir,) = (work / keys[0] / "runs").iterdir()
    (run_dir / "eval.json").unlink()
    (results / keys[0] / "eval.json").unlink()
    dry = run_runner(tmp_path, *adhoc, "--dry-run", "--", *TINY)
    assert f"resumable  {keys[0]}" in dry and f"--resume runs/{run_dir.name}/checkpoint.pt" in dry
    out = run_runner(tmp_path, *adhoc, "--", *TINY)
    assert f"{keys[0]}: resumed from runs/{run_dir.name}/checkpoint.pt" in out and f"{keys[1]}: done, skipped" in out
    assert "resuming" in (work / keys[0] / "stdout.log").read_text()
    assert json.loads((results / keys[0] / "eval.json").read_text())["global_step"] == 240
    launches = [
        line for line in (results / keys[0] / "command.txt").read_text().splitlines() if not line.startswith("#")
    ]
    assert len(launches) == 2 and "--resume" not in launches[0]
    assert launches[1].endswith(f"--resume runs/{run_dir.name}/checkpoint.pt")


def test_runner_wants_a_label_for_flags_that_change_a_run():
    with pytest.raises(SystemExit):
        runner.parse_args(["--scripts", "rl2_hyper", "--env-ids", "GridNavi", "--", "--learning-rate", "1e-3"])
    assert runner.parse_args(
        ["--scripts", "rl2_hyper", "--env-ids", "GridNavi", "--", "--hyper-init", "hfi"]
    ).extra == ["--hyper-init", "hfi"]
    with pytest.raises(SystemExit):
        runner.parse_args(["--suite", "gridnavi", "--label", "x"])


def test_runner_sees_runs_in_progress(tmp_path):
    run = suites.expand([suites.Entry("varibad_hyper", "GridNavi", (1,))])[0]
    work = tmp_path / "work" / run.key
    (work / "runs" / "x").mkdir(parents=True)
    (work / "runs" / "x" / "checkpoint.pt").write_bytes(b"")
    assert runner.state(run, str(tmp_path / "results"), str(tmp_path / "work")) == "resumable"
    lock = runner.Lock(str(work))  # another runner's child
    assert runner.state(run, str(tmp_path / "results"), str(tmp_path / "work")) == "running"
    lock.release()
    proc = subprocess.Popen(["sleep", "60"], cwd=work)  # a run started by hand in the work folder
    try:
        assert runner.state(run, str(tmp_path / "results"), str(tmp_path / "work")) == "running"
    finally:
        proc.kill()
        proc.wait()
    assert runner.state(run, str(tmp_path / "results"), str(tmp_path / "work")) == "resumable"


def test_stop_sends_sigint_first_then_kills(tmp_path):
    code = (
        "import signal, sys, time\n"
        "def handler(*_):\n    open(sys.argv[1], 'w').write('checkpointed'); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, handler)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    popen = dict(start_new_session=True, stdout=subprocess.PIPE, text=True)  # as the runner starts its children
    polite = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "flag")], **popen)
    deaf = subprocess.Popen([sys.executable, "-c", stubborn], **popen)
    for proc in (polite, deaf):
        assert proc.stdout.readline().strip() == "ready"
    runner.stop([polite, deaf], grace=1.0)
    assert (tmp_path / "flag").read_text() == "checkpointed" and polite.returncode == 0
    assert deaf.returncode == -signal.SIGKILL  # killed after the grace period, not left to finish its 60 s
    for proc in (polite, deaf):
        proc.stdout.close()


# --------------------------------------------------------------------------------------------------------------------
# plots and tables
def write_run(folder, rows, result):
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "wall_time", "metric", "value"])
        writer.writerows(rows)
    (folder / "eval.json").write_text(json.dumps(result))


def curve_rows(steps, values, t0, seconds_per_step):
    rows = []
    for step, value in zip(steps, values):
        t = t0 + step * seconds_per_step
        rows += [(step, f"{t:.3f}", "charts/SPS", 1 / seconds_per_step), (step, f"{t:.3f}", "eval/return", value)]
    return rows


def grid_result(per_episode, frames=9600):
    return {
        "env_id": "GridNavi",
        "global_step": frames,
        "return": float(sum(per_episode)),
        "return_per_episode": per_episode,
        "returns": [per_episode],
        "successes": [[0.0] * len(per_episode)],
    }


def test_read_metrics_keeps_the_resumed_rows_and_hours_skip_the_pause(tmp_path):
    steps = np.arange(1, 11) * 960
    rows = curve_rows(steps, np.zeros(10), 1000.0, 0.01)  # 9.6 s per iteration
    rows += curve_rows(
        steps[7:], np.ones(3), 1000.0 + 50_000, 0.01
    )  # stopped after step 10, resumed from 7's checkpoint
    write_run(tmp_path / "r", rows, grid_result([0.0] * 4))
    metrics = plot.read_metrics(tmp_path / "r" / "metrics.csv")
    np.testing.assert_array_equal(metrics["eval/return"][0], steps)
    np.testing.assert_array_equal(metrics["eval/return"][1], [0] * 7 + [1] * 3)
    hours = plot.training_hours(*metrics["_wall"], metrics["charts/SPS"])
    np.testing.assert_allclose(hours * 3600, steps * 0.01)  # the pause counts as one ordinary iteration
    stalled_sps = (steps, np.full(10, 960 / 3600))  # a process paused for an hour before its first logged step
    hours = plot.training_hours(*metrics["_wall"], stalled_sps)
    np.testing.assert_allclose(hours * 3600, steps * 0.01)  # the first step counts as one ordinary iteration too
    (tmp_path / "r" / "metrics.csv.gz").write_bytes(gzip.compress((tmp_path / "r" / "metrics.csv").read_bytes()))
    gzipped = plot.read_metrics(str(tmp_path / "r" / "metrics.csv.gz"))  # what benchmark/run.py collects
    assert all(np.array_equal(gzipped[k][i], metrics[k][i]) for k in metrics for i in (0, 1))


def test_bootstrap_interval_and_grid():
    rng = np.random.default_rng(0)
    low, high = plot.bootstrap_ci(np.full((3, 5), 2.0), rng)
    np.testing.assert_allclose(low, 2.0)
    np.testing.assert_allclose(high, 2.0)
    samples = rng.normal(size=(50, 1))
    low, high = plot.bootstrap_ci(samples, rng)
    mean, sem = samples.mean(), samples.std() / np.sqrt(50)
    assert abs((high - low)[0] / 2 - sem) < 0.25 * sem and low[0] < mean < high[0]  # +-1 standard error
    grid, ys = plot.curve_on_grid([[0, 10, 20], [5, 15]], [[0, 1, 2], [5, 6]], points=3)
    np.testing.assert_allclose(grid, [5, 10, 15])
    np.testing.assert_allclose(ys, [[0.5, 1, 1.5], [5, 5.5, 6]])
    np.testing.assert_allclose(plot.smooth(np.array([1.0, 3, 5, 7]), 2), [1, 2, 4, 6])


def test_plot_draws_every_suite_and_tabulates_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    finals = {73: [4.0, 9.0, 10.0, 10.0], 20: [3.0, 8.0, 9.0, 10.0], 3: [4.0, 10.0, 11.0, 11.0]}  # returns 33, 30, 36
    for i, (seed, per_episode) in enumerate(finals.items()):
        steps = np.arange(1, 11 - i) * 960  # seeds of different lengths
        rows = curve_rows(steps, np.linspace(-5, 30, len(steps)), 0.0, 0.001 * (i + 1))
        write_run(runs / f"varibad_hyper__GridNavi__bias__s{seed}", rows, grid_result(per_episode))
    rows = curve_rows([960, 1920], [1.0, 2.0], 0.0, 0.001)
    write_run(runs / "rl2_hyper__GridNavi__lr1e-3__s73", rows, grid_result([1.0, 2, 3, 4]))
    ml1 = {
        "env_id": "MetaWorldML1",
        "global_step": 4800,
        "return": 300.0,
        "return_per_episode": [100.0, 200.0],
        "returns": [[100.0, 200.0]] * 4,
        "successes": [[1, 0], [0, 0], [0, 1], [1, 1]],
    }
    write_run(runs / "varibad_hyper__MetaWorldML1__bias-2M__s73", [(4800, "4.8", "eval/success", 0.75)], ml1)
    (runs / "varibad_hyper__GridNavi__bias__s5").mkdir()  # unfinished (no eval.json): ignored

    plot.main(["--results-dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path / "plots")) == [
        "gridnavi.png",
        "init-gridnavi.png",
        "mujoco-short.png",
        "other.png",
    ]
    assert all((tmp_path / "plots" / name).stat().st_size > 10_000 for name in os.listdir(tmp_path / "plots"))
    tables = (tmp_path / "tables.md").read_text()
    row = next(line for line in tables.splitlines() if line.startswith("| `varibad_hyper.py` | GridNavi | bias |"))
    # returns 33, 30, 36: mean 33, population std sqrt(6); episode 1: 4, 3, 4
    assert "| 3 (73 20 3) | 9,600 | 33.00 ± 2.45 | 3.67 ± 0.47 | 9.00 ± 0.82 | 10.00 ± 0.82 | 10.33 ± 0.47 |" in row
    row = next(line for line in tables.splitlines() if "MetaWorldML1" in line)
    # one seed: no std; success: tasks solved in episode 1 (2 of 4) and in episode 2 (2 of 4), averaged: 50%
    assert "| 1 (73) | 4,800 | 300.00 | 100.00 | 200.00 | 50.0% |" in row
    assert "## other" in tables and "| `rl2_hyper.py` | GridNavi | lr1e-3 | 1 (73) |" in tables
    assert "## tmaze" not in tables
    ml1_run = plot.load_runs(str(tmp_path))["varibad_hyper__MetaWorldML1__bias-2M__s73"]
    assert list(ml1_run["steps"]) == [4800] and list(ml1_run["values"]) == [
        0.75
    ]  # Meta-World's curves: the success rate


def test_a_panel_of_widely_spread_returns_is_drawn_on_a_symlog_scale():
    import matplotlib.pyplot as plt

    fig, (spread, close, negative) = plt.subplots(1, 3)
    spread.plot([0, 1, 2], [800.0, -2_000.0, -70_000.0])  # naive beside bias on CheetahDir
    close.plot([0, 1, 2], [800.0, -100.0, -300.0])
    negative.plot([0, 1, 2], [-336.0, -290.0, -200.0])  # CheetahVel: every return below zero
    for ax in (spread, close, negative):
        plot.symlog_if_spread(ax)
    assert [ax.get_yscale() for ax in (spread, close, negative)] == ["symlog", "linear", "linear"]
    plt.close(fig)


def test_a_script_keeps_its_colour_in_every_row(tmp_path, monkeypatch):
    """A script missing from one env's row (rl2_hyper on WalkerRandParams) does not shift the others' colours."""

    def run(final):
        return {"steps": np.array([960, 1920]), "hours": np.array([0.1, 0.2]), "values": np.array([0.0, final]),
                "eval": {"return_per_episode": [final]}}  # fmt: skip

    scripts = [("varibad_hyper", "bias-2M"), ("rl2_hyper", "bias-2M"), ("varibad_standard", "preset-2M")]
    groups = {(script, "AntDir", label): [run(1.0)] for script, label in scripts}
    groups |= {(script, "WalkerRandParams", label): [run(2.0)] for script, label in scripts if script != "rl2_hyper"}
    figures = []
    monkeypatch.setattr(plot.plt, "close", figures.append)  # keep the figure that draw() would close
    plot.draw(groups, tmp_path / "short.png", "short", references={})
    monkeypatch.undo()
    ant, walker = ({line.get_label(): line.get_color() for line in ax.get_lines()} for ax in figures[0].axes[::3])
    assert len(set(ant.values())) == 3 and walker == {name: ant[name] for name in walker} and len(walker) == 2
    plot.plt.close(figures[0])


def test_table_has_no_episode_columns_for_one_episode_meta_episodes():
    cheetah = [
        {
            "env_id": "CheetahDir",
            "seed": seed,
            "eval": {"global_step": 9600, "return": ret, "return_per_episode": [ret]},
        }
        for seed, ret in ((73, 500.0), (20, 700.0))
    ]
    lines = plot.markdown_table({("varibad_hyper", "CheetahDir", "bias-3M"): cheetah}).splitlines()
    assert lines[0] == "| script | env id | label | seeds | frames | return |"
    assert lines[2] == "| `varibad_hyper.py` | CheetahDir | bias-3M | 2 (73 20) | 9,600 | 600.00 ± 100.00 |"


# --------------------------------------------------------------------------------------------------------------------
# W&B sweeps
def agent_argv(config, values):
    """The argv `wandb agent` runs for one grid point (wandb_agent.Agent._command_run's macro expansion)."""
    from wandb.sdk.launch.sweeps import utils

    sweep_vars = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    sweep_vars.update(env=["/usr/bin/env"], interpreter=["python"], program=[config["program"]])
    argv = []
    for chunk in utils.create_sweep_command(config.get("command")):
        chunk = str(chunk)
        argv += sweep_vars[chunk[2:-1]] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return argv


def test_sweep_files_are_current_and_every_grid_point_parses():
    import importlib

    from wandb.sdk.launch.sweeps import utils

    files = suites.sweep_files()
    assert sorted(os.listdir(suites.SWEEPS_DIR)) == sorted(os.path.basename(p) for p in files)
    for path, text in files.items():
        with open(path) as f:
            assert f.read() == text, f"{path} is stale: run `python benchmark/suites.py`"
    for script in suites.SCRIPTS:  # at least these benchmarks, for every script
        for env_id in ("GridNavi", "CheetahDir", "AntDir", "WalkerRandParams", "MetaWorldML1", "TMaze"):
            assert os.path.join(suites.SWEEPS_DIR, f"{script}_{env_id}.yaml") in files
    for script in suites.SCRIPTS:
        module = importlib.import_module(script)
        for env_id, (lrs, seeds, metric) in suites.SWEEP_ENVS.items():
            config = utils.load_sweep_config(
                os.path.join(suites.SWEEPS_DIR, f"{script}_{env_id}.yaml")
            )  # as `wandb sweep`
            assert config["program"] == f"{script}.py" and config["method"] == "grid"
            assert config["metric"] == {"name": metric, "goal": "maximize"}
            params = config["parameters"]
            assert params["learning_rate"]["values"] == list(lrs) and params["seed"]["values"] == list(seeds)
            budget = module.apply_preset(module.Args(env_id=env_id)).total_timesteps
            for lr in lrs:
                for seed in seeds:
                    argv = agent_argv(config, {"learning_rate": lr, "seed": seed})
                    assert argv[:3] == ["/usr/bin/env", "python", f"{script}.py"]
                    args = module.parse_args(argv[3:])[0]
                    assert (args.env_id, args.learning_rate, args.seed, args.track, args.total_timesteps) == (
                        env_id,
                        lr,
                        seed,
                        True,
                        budget,
                    )


# --------------------------------------------------------------------------------------------------------------------
# speed
def test_speed_table_and_a_tiny_measurement(tmp_path):
    row = speed.result_row("varibad_hyper.py", "GridNavi", 960, 500.0, 50_000.0, 512.4, 1)
    assert row["ratio"] == 0.01
    line = speed.markdown_table([row]).splitlines()[-1]
    assert line == "| `varibad_hyper.py` | GridNavi | 960 | 500 | 50,000 | 0.010 | - | - | 512 MiB | 500 |"
    row = speed.result_row("varibad_hyper.py", "GridNavi", 960, 500.0, 50_000.0, 512.4, 1, floor_fps=2_000.0)
    assert "| 0.010 | 2,000 | 0.25 | 512 MiB |" in speed.markdown_table([row])
    rows = speed.main(
        [
            "--scripts",
            "varibad_standard",
            "--env-ids",
            "GridNavi",
            "--iterations",
            "1",
            "--threads",
            "1",
            "--repeat",
            "2",
            "--out",
            str(tmp_path / "speed"),
        ]
    )
    (row,) = rows
    assert len(row["train_fps_draws"]) == 2 and row["train_fps"] == pytest.approx(sum(row["train_fps_draws"]) / 2)
    assert row["frames"] == 960 and row["train_fps"] > 0 and row["env_fps"] > row["train_fps"] and row["peak_mib"] > 50
    assert row["ratio"] == pytest.approx(row["train_fps"] / row["env_fps"])
    assert json.loads((tmp_path / "speed.json").read_text())["results"] == rows
    assert "| `varibad_standard.py` | GridNavi | 960 |" in (tmp_path / "speed.md").read_text()


def test_the_flop_count_includes_the_backward_pass(tmp_path):
    """The floor's counter runs a script as `__main__` and counts its matrix products, backward included: a linear
    layer (10 x 100 by 100 x 50) costs 2 * 10 * 100 * 50 FLOPs forward and twice that backward (weight and input)."""
    program = "import torch\nx = torch.randn(10, 100, requires_grad=True)\n"
    program += "torch.nn.Linear(100, 50)(x).sum().backward()\n"
    (tmp_path / "tiny.py").write_text(program)
    out = subprocess.run([sys.executable, "-c", speed.FLOPS_PROGRAM, str(tmp_path / "tiny.py")], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split(b"FLOPS")[-1]) == 3 * 2 * 10 * 100 * 50
    assert speed.matmul_rate(1) > 1e9


# --------------------------------------------------------------------------------------------------------------------
# baselines
def test_baselines_on_the_scripts_evaluation_tasks(tmp_path):
    # AntDir with zero actions: no fall, the +1 survive bonus a step, small contact costs and drift: about 200
    returns, successes, steps = baselines.policy_returns("AntDir", "zero", num_tasks=2)
    assert returns.shape == (2, 1) and list(steps) == [200, 200] and not successes.any()
    assert np.all((returns > 190) & (returns < 210))
    # CheetahDir with zero actions: no control cost and almost no motion, in either direction
    returns, _, steps = baselines.policy_returns("CheetahDir", "zero", num_tasks=2)
    assert list(steps) == [200, 200] and np.all(np.abs(returns) < 5)
    # random actions pay the control cost (0.05 |a|^2, E|a|^2 = 2 for 6 uniform dims): about -20 plus noise
    random_returns, _, _ = baselines.policy_returns("CheetahDir", "random", seed=1, num_tasks=2)
    assert not np.allclose(random_returns, returns)
    # four GridNavi episodes of 15 steps per meta-episode; the tasks are the scripts' (all 21 goals, cycled)
    returns, _, steps = baselines.policy_returns("GridNavi", "random", num_tasks=3)
    assert returns.shape == (3, 4) and list(steps) == [60, 60, 60]
    with pytest.raises(ValueError, match="continuous action space"):
        baselines.policy_returns("GridNavi", "zero", num_tasks=1)
    rows = baselines.main(
        ["--env-ids", "GridNavi", "CheetahDir", "--num-tasks", "2", "--out", str(tmp_path / "baselines.json")]
    )
    assert [(r["env_id"], r["policy"]) for r in rows] == [
        ("GridNavi", "random"),
        ("CheetahDir", "zero"),
        ("CheetahDir", "random"),
    ]
    assert json.loads((tmp_path / "baselines.json").read_text()) == rows
    # plot.py draws them: CheetahDir's two lines (the return, to 2 decimals); GridNavi keeps its exact ones
    lines = plot.reference_lines(str(tmp_path))
    assert lines["GridNavi"] == plot.BOUNDS["GridNavi"] and lines["TMaze"] == plot.BOUNDS["TMaze"]
    assert lines["CheetahDir"] == {
        "zero actions": (round(rows[1]["return"], 2), tuple(rows[1]["return_per_episode"])),
        "uniform random": (round(rows[2]["return"], 2), tuple(rows[2]["return_per_episode"])),
    }
    # on Meta-World the curves show the success rate, so the line is the policy's success rate
    (tmp_path / "baselines.json").write_text(
        json.dumps(
            [
                {
                    "env_id": "MetaWorldML1",
                    "policy": "zero",
                    "return": 14.4,
                    "return_per_episode": [7.0, 7.4],
                    "success": 0.1,
                }
            ]
        )
    )
    assert plot.reference_lines(str(tmp_path))["MetaWorldML1"] == {"zero actions": (0.1, (7.0, 7.4))}


def test_init_scale_bias_gives_every_latent_one_network_and_naive_outputs_large():
    for env_id in ("GridNavi", "CheetahDir"):
        scales = {init: init_scale.output_scale(env_id, init, 8, 4) for init in init_scale.INITS}
        assert scales["bias"][2] == 0.0  # Bias-HyperInit: the latent does not move the output at step 0
        assert all(scales[init][2] > 0 for init in ("weight", "hfi", "naive", "kaiming"))
        assert scales["naive"][0] > 5 * scales["bias"][0] and scales["kaiming"][0] > 5 * scales["bias"][0]
        assert (scales["bias"][1] is None) == (env_id == "GridNavi")
    lines = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmark", "init_scale.py"), "--env-ids", "GridNavi", "--states", "4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(lines) == 2 + len(init_scale.INITS) and lines[2].startswith("| GridNavi | bias | ")


def test_reward_terms_add_up_to_the_evaluation_return(tmp_path):
    paths = []
    for name, env_id in (("varibad_hyper", "AntDir"), ("rl2_standard", "GridNavi")):
        module = MODULES[name]
        args, agent, encoder, *decoder = build(module, env_id, num_eval_tasks=2)
        paths.append(save(tmp_path / f"{name}.pt", module, args, agent, encoder, *decoder))
        env_id_, script, mean_return, sums, steps, std = reward_terms.reward_terms(paths[-1])
        tasks = envs.evaluation_tasks(env_id, args.num_eval_tasks, args.eval_seed)
        evaluation = module.evaluate(agent.eval(), encoder.eval(), args, tasks, torch.device("cpu"))[0]
        assert (env_id_, script) == (env_id, name) and mean_return == pytest.approx(evaluation["return"])
        if env_id == "AntDir":  # the four terms are the whole reward; +1 survive bonus per step, one episode per task
            assert set(sums) == {"reward_forward", "reward_ctrl", "reward_contact", "reward_survive"}
            assert sum(sums.values()) == pytest.approx(mean_return)
            assert sums["reward_survive"] == pytest.approx(steps.mean()) and steps.max() <= 200
            assert std == pytest.approx(float(agent.actor_logstd.detach().exp().mean()))
        else:
            assert sums == {} and std is None and (steps == 60).all()  # GridNavi: 4 episodes of 15 steps
    lines = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmark", "reward_terms.py"), *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == lines[2].count("|") == lines[3].count("|")
    assert "reward_survive" in lines[0] and "(discrete)" in lines[3] and "`rl2_standard.py`" in lines[3]
