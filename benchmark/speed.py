"""Training speed of the scripts against the environments' own stepping rate, with peak memory, in one run.

    python benchmark/speed.py                                        # varibad_standard + varibad_hyper on GridNavi, CheetahDir
    python benchmark/speed.py --scripts varibad_hyper.py --env-ids GridNavi --iterations 100 --threads 2

For every (script, env id) pair: the script runs with its preset for `--iterations` PPO iterations (precollection
off, evaluation only at the end) in a subprocess with `--threads` torch threads; its frames per second is the
`charts/SPS` it logs last (the training loop only: imports, set-up and the final evaluation excluded), and its peak
memory the subprocess's maximum resident set size. The ceiling is the same number of environments (the preset's
`num_envs`, with the scripts' meta-episode wrapper, in a SyncVectorEnv) stepped with random actions for as many
frames. Pairs run one after the other: run nothing else on the machine.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gymnasium as gym  # noqa: E402

import varibad_standard  # noqa: E402  (only for its preset, wrapper and Args; the scripts share both)


def train_speed(script, env_id, iterations, threads):
    args = varibad_standard.apply_preset(varibad_standard.Args(env_id=env_id))
    frames = iterations * args.num_envs * args.num_steps
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(ROOT, script), "--env-id", env_id, "--total-timesteps", str(frames),
               "--precollect-frames", "0", "--eval-every", "0", "--num-eval-tasks", "2"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr = proc.stderr.read()
        if status != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr}")
        (run,) = os.listdir(os.path.join(tmp, "runs"))
        with open(os.path.join(tmp, "runs", run, "metrics.csv")) as f:
            sps = [float(row["value"]) for row in csv.DictReader(f) if row["metric"] == "charts/SPS"][-1]
    return frames, sps, usage.ru_maxrss / 1024  # MiB (ru_maxrss is in KiB on Linux)


def env_speed(env_id, frames):
    args = varibad_standard.apply_preset(varibad_standard.Args(env_id=env_id))
    fns = [varibad_standard.make_env(env_id, args.episodes_per_task) for _ in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    steps = max(1, frames // args.num_envs)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return steps * args.num_envs / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", default=["varibad_standard.py", "varibad_hyper.py"])
    parser.add_argument("--env-ids", nargs="+", default=["GridNavi", "CheetahDir"])
    parser.add_argument("--iterations", type=int, default=60, help="PPO iterations per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each training run")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    rows = []
    print(f"{args.threads} torch thread(s), {args.iterations} iterations each, {platform.machine()}, {os.cpu_count()} cores")
    print("| script | env id | frames | train FPS | env-only FPS (same envs) | train / env | peak memory (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for env_id in args.env_ids:
        for script in args.scripts:
            frames, sps, rss = train_speed(script, env_id, args.iterations, args.threads)
            ceiling = env_speed(env_id, min(frames, 200_000))
            rows.append({"script": script, "env_id": env_id, "frames": frames, "train_fps": sps, "env_fps": ceiling,
                         "ratio": sps / ceiling, "peak_mib": rss, "threads": args.threads})
            print(f"| {script} | {env_id} | {frames:,} | {sps:,.0f} | {ceiling:,.0f} | {sps / ceiling:.3f} | {rss:,.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
