"""Training speed of the scripts against the environments' own stepping rate, with peak memory, in one run.

    python benchmark/speed.py                                        # the four scripts on GridNavi and CheetahDir
    python benchmark/speed.py --scripts varibad_hyper.py --env-ids GridNavi --iterations 100 --threads 2
    python benchmark/speed.py --env-ids GridNavi CheetahDir --threads 2 --repeat 3 --floor   # and the FLOP floor
    python benchmark/speed.py --cuda                                 # training on the GPU (--cuda)

For every (script, env id) pair: the script runs with its preset for `--iterations` PPO iterations (precollection
off, evaluation only at the end) in a subprocess with `--threads` torch threads; its frames per second is the
`charts/SPS` it logs last (the training loop only: imports, set-up and the final evaluation excluded), and its peak
memory the subprocess's maximum resident set size (with --cuda, not counting the GPU's memory). The ceiling is the
same number of environments (the preset's `num_envs`, with the script's meta-episode wrapper, in a SyncVectorEnv)
stepped with random actions for as many frames (at most 200,000). The ratio train / env is the fraction of the
ceiling that training reaches. With --floor, the compute floor too: the FLOPs of one iteration (torch's
FlopCounterMode over the script's own run of two iterations less one of one iteration) at this CPU's matrix-product
rate, measured in the same run; train / floor is the fraction of that floor that training reaches. Pairs run one
after the other: run nothing else on the machine.
The table goes to stdout and, with the rows as JSON, to
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


def train_speed(script, env_id, iterations, threads, async_envs=False, cuda=False):
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
            *(["--async-envs"] if async_envs else []),
            *(["--cuda"] if cuda else []),
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


FLOPS_PROGRAM = """
import runpy, sys
from torch.utils.flop_counter import FlopCounterMode
sys.argv = sys.argv[1:]
with FlopCounterMode(display=False) as counter:
    runpy.run_path(sys.argv[0], run_name="__main__")
print("FLOPS", counter.get_total_flops())
"""


def run_flops(script, env_id, iterations):
    """The FLOPs that torch's FlopCounterMode counts (matrix products: linear layers, the GRU's, the hypernetwork's)
    in a run of the script of `iterations` iterations (precollection off, the final evaluation on one task)."""
    _, args = preset(script, env_id)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", FLOPS_PROGRAM, os.path.join(ROOT, script), "--env-id", env_id, "--total-timesteps"]
        cmd += [str(iterations * args.num_envs * args.num_steps), "--precollect-frames", "0", "--eval-every", "0"]
        cmd += ["--num-eval-tasks", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
        out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
        return int(out.stdout.split("FLOPS")[-1])


def floor_fps(script, env_id, rate):
    """The frames per second if every FLOP of one training iteration (rollout, values, PPO update, VAE or RL2
    re-encoding) ran at `rate` FLOP/s; the FLOPs are a run of two iterations less a run of one, so that set-up and the
    final evaluation cancel."""
    _, args = preset(script, env_id)
    return args.num_envs * args.num_steps * rate / (run_flops(script, env_id, 2) - run_flops(script, env_id, 1))


def matmul_rate(threads):
    """This CPU's float32 matrix-product rate in FLOP/s with `threads` torch threads: the best of a square product and
    of the hypernetwork's largest one, (240 x 6400) by (6400 x 256), each the fastest of 20."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (240, 6400, 256)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(20):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def env_speed(script, env_id, frames, async_envs=False):
    module, args = preset(script, env_id)
    vector_env = meta_envs.make_vector_env(env_id, args.episodes_per_task, args.num_envs, async_envs)  # the scripts'
    vector_env.reset(seed=0)
    vector_env.action_space.seed(0)
    steps = max(1, frames // args.num_envs)
    start = time.perf_counter()
    for _ in range(steps):
        vector_env.step(vector_env.action_space.sample())
    elapsed = time.perf_counter() - start
    vector_env.close()
    return steps * args.num_envs / elapsed


def result_row(script, env_id, frames, train_fps, env_fps, peak_mib, threads, draws=None, floor_fps=None):
    """One table row; with several measurements (`draws`), train_fps is their median. `floor_fps`: the frames per
    second if every FLOP of an iteration ran at the measured matrix-product rate (None: not measured)."""
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
        "floor_fps": floor_fps,
    }


def markdown_table(rows):
    lines = [
        "| script | env id | frames | train FPS | env-only FPS | train / env | FLOP floor FPS | train / floor | "
        "peak memory | train FPS draws |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        floor = f"{r['floor_fps']:,.0f} | {r['train_fps'] / r['floor_fps']:.2f}" if r.get("floor_fps") else "- | -"
        lines.append(
            f"| `{r['script']}` | {r['env_id']} | {r['frames']:,} | {r['train_fps']:,.0f} | {r['env_fps']:,.0f} | "
            f"{r['ratio']:.3f} | {floor} | {r['peak_mib']:,.0f} MiB | "
            f"{', '.join(f'{d:,.0f}' for d in r.get('train_fps_draws', []))} |"
        )
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
    parser.add_argument(
        "--async-envs",
        action="store_true",
        help="train with --async-envs, and step the env-only ceiling's envs in subprocesses too",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also count the FLOPs of an iteration (torch's FlopCounterMode) and measure the matrix-product rate: the "
        "FLOP floor FPS is the speed if every FLOP ran at that rate; train / floor is the fraction reached",
    )
    parser.add_argument("--cuda", action="store_true", help="train on the GPU (--cuda); fails where none is present")
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
        f"pair (median), {platform.machine()}, {os.cpu_count()} cores{', --async-envs' if args.async_envs else ''}"
    )
    if args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error("--cuda: torch sees no GPU here")
        header += f", training on {torch.cuda.get_device_name()} (torch {torch.__version__})"
    rate = matmul_rate(args.threads) if args.floor else None
    header += f"; matrix-product rate {rate / 1e9:,.0f} GFLOP/s" if rate else ""
    print(header)
    print(markdown_table([]), flush=True)
    for env_id in args.env_ids:
        draws = {script: [] for script in scripts}
        for _ in range(args.repeat):  # interleaved, so that a slow spell of the machine hits every script alike
            for script in scripts:
                draws[script].append(
                    train_speed(script, env_id, args.iterations, args.threads, args.async_envs, args.cuda)
                )
        for script in scripts:
            frames, rss = draws[script][0][0], max(d[2] for d in draws[script])
            fps = [d[1] for d in draws[script]]
            ceiling = env_speed(script, env_id, min(frames, 200_000), args.async_envs)
            floor = floor_fps(script, env_id, rate) if rate else None
            median = float(statistics.median(fps))
            rows.append(result_row(script, env_id, frames, median, ceiling, rss, args.threads, fps, floor))
            print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    payload = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "iterations": args.iterations,
        "matmul_flops_per_s": rate,
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
