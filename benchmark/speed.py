"""Training speed of the scripts against the environments' own stepping rate, with peak memory, in one run.

    python benchmark/speed.py                                        # the four scripts on GridNavi and CheetahDir
    python benchmark/speed.py --scripts varibad_hyper.py --env-ids GridNavi --iterations 100 --threads 2

For every (script, env id) pair: the script runs with its preset for `--iterations` PPO iterations (precollection
off, evaluation only at the end) in a subprocess with `--threads` torch threads; its frames per second is the
`charts/SPS` it logs last (the training loop only: imports, set-up and the final evaluation excluded), and its peak
memory the subprocess's maximum resident set size. The ceiling is the same number of environments (the preset's
`num_envs`, with the script's meta-episode wrapper, in a SyncVectorEnv) stepped with random actions for as many
frames (at most 200,000). The ratio train / env is the fraction of the ceiling that training reaches. Pairs run one
after the other: run nothing else on the machine. The table goes to stdout and, with the rows as JSON, to
`benchmark/results/speed_{env ids}.md` and `.json` (`--out`).
"""

import argparse
import csv
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import envs as meta_envs  # noqa: E402

SCRIPTS = ["varibad_standard.py", "varibad_hyper.py", "rl2_standard.py", "rl2_hyper.py"]


def preset(script, env_id):
    """The script's own Args with its preset for env_id (importing a script runs none of its training)."""
    module = importlib.import_module(os.path.basename(script)[: -len(".py")])
    return module, module.apply_preset(module.Args(env_id=env_id))


def train_speed(script, env_id, iterations, threads):
    _, args = preset(script, env_id)
    frames = iterations * args.num_envs * args.num_steps
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            os.path.join(ROOT, script),
            "--env-id",
            env_id,
            "--total-timesteps",
            str(frames),
            "--precollect-frames",
            "0",
            "--eval-every",
            "0",
            "--num-eval-tasks",
            "2",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = proc.stderr.read()  # before waiting: a full pipe would block the child
        proc.stderr.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if status != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr}")
        (run,) = os.listdir(os.path.join(tmp, "runs"))
        with open(os.path.join(tmp, "runs", run, "metrics.csv")) as f:
            sps = [float(row["value"]) for row in csv.DictReader(f) if row["metric"] == "charts/SPS"][-1]
    return frames, sps, usage.ru_maxrss / 1024  # MiB (ru_maxrss is in KiB on Linux)


def env_speed(script, env_id, frames):
    module, args = preset(script, env_id)
    vector_env = meta_envs.make_vector_env(env_id, args.episodes_per_task, args.num_envs)  # the scripts' own
    vector_env.reset(seed=0)
    vector_env.action_space.seed(0)
    steps = max(1, frames // args.num_envs)
    start = time.perf_counter()
    for _ in range(steps):
        vector_env.step(vector_env.action_space.sample())
    elapsed = time.perf_counter() - start
    vector_env.close()
    return steps * args.num_envs / elapsed


def result_row(script, env_id, frames, train_fps, env_fps, peak_mib, threads, draws=None):
    """One table row; with several measurements (`draws`), train_fps is their median."""
    return {
        "script": script,
        "env_id": env_id,
        "frames": frames,
        "train_fps": train_fps,
        "env_fps": env_fps,
        "ratio": train_fps / env_fps,
        "peak_mib": peak_mib,
        "threads": threads,
        "train_fps_draws": draws or [train_fps],
    }


def markdown_table(rows):
    lines = [
        "| script | env id | frames | train FPS | env-only FPS | train / env | peak memory | train FPS draws |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| `{r['script']}` | {r['env_id']} | {r['frames']:,} | {r['train_fps']:,.0f} | {r['env_fps']:,.0f} | "
        f"{r['ratio']:.3f} | {r['peak_mib']:,.0f} MiB | "
        f"{', '.join(f'{d:,.0f}' for d in r.get('train_fps_draws', []))} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", default=SCRIPTS)
    parser.add_argument("--env-ids", nargs="+", default=["GridNavi", "CheetahDir"])
    parser.add_argument("--iterations", type=int, default=60, help="PPO iterations per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each training run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="training measurements per (script, env id), interleaved across scripts; the table gives "
        "their median (this machine's single draws vary by 10-30%%)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="write the table to OUT.md and the rows to OUT.json "
        "(default: benchmark/results/speed_{env ids}; '': nowhere)",
    )
    parser.add_argument("--json", default=None, help="(old spelling) also write the rows to this JSON file")
    args = parser.parse_args(argv)
    scripts = [s if s.endswith(".py") else f"{s}.py" for s in args.scripts]
    out = (
        args.out
        if args.out is not None
        else os.path.join(ROOT, "benchmark", "results", "speed_" + "_".join(e.lower() for e in args.env_ids))
    )

    rows = []
    header = (
        f"{args.threads} torch thread(s), {args.iterations} iterations each, {args.repeat} measurement(s) per "
        f"pair (median), {platform.machine()}, {os.cpu_count()} cores"
    )
    print(header)
    print(markdown_table([]), flush=True)
    for env_id in args.env_ids:
        draws = {script: [] for script in scripts}
        for _ in range(args.repeat):  # interleaved, so that a slow spell of the machine hits every script alike
            for script in scripts:
                draws[script].append(train_speed(script, env_id, args.iterations, args.threads))
        for script in scripts:
            frames, rss = draws[script][0][0], max(d[2] for d in draws[script])
            fps = [d[1] for d in draws[script]]
            ceiling = env_speed(script, env_id, min(frames, 200_000))
            rows.append(
                result_row(script, env_id, frames, float(statistics.median(fps)), ceiling, rss, args.threads, fps)
            )
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    payload = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "iterations": args.iterations,
        "repeat": args.repeat,
        "results": rows,
    }
    paths = ([f"{out}.json"] if out else []) + ([args.json] if args.json else [])
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
    if out:
        with open(f"{out}.md", "w") as f:
            f.write(f"{header}\n\n{markdown_table(rows)}\n")
        print(f"wrote {os.path.relpath(out)}.md and .json")
    return rows


if __name__ == "__main__":
    main()
