"""Single-env stepping rate of every registered meta-RL environment, with uniformly random actions.

    python benchmark/env_speed.py                 # all ids, ~3 s each, Markdown table on stdout
    python benchmark/env_speed.py --ids GridNavi AntDir --seconds 10 --json speed.json

Each env is built with `gym.make` (so the TimeLimit is included), reset once with a seed, warmed up for 100 steps,
then stepped for `--seconds` seconds; an episode end is followed by `reset()` (counted in the time, not in the
steps). Construction time is reported separately. The rate is per process: run nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402


def measure(env_id: str, seconds: float) -> dict:
    start = time.perf_counter()
    env = gym.make(env_id)
    env.reset(seed=0)
    built = time.perf_counter() - start
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(1000)]

    def run(steps: int | None, until: float | None) -> int:
        n = 0
        while (steps is None or n < steps) and (until is None or time.perf_counter() < until):
            for action in actions[:100]:
                _, _, terminated, truncated, _ = env.step(action)
                n += 1
                if terminated or truncated:
                    env.reset()
        return n

    run(100, None)  # warm-up
    start = time.perf_counter()
    steps = run(None, start + seconds)
    elapsed = time.perf_counter() - start
    env.close()
    return {
        "env_id": env_id,
        "steps": steps,
        "seconds": elapsed,
        "steps_per_second": steps / elapsed,
        "build_seconds": built,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", nargs="+", default=list(envs.ENV_IDS), choices=envs.ENV_IDS)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured stepping time per env")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    results = []
    print("| id | steps/s (1 env, random actions) | build + first reset (s) |\n|---|---:|---:|")
    for env_id in args.ids:
        r = measure(env_id, args.seconds)
        results.append(r)
        print(f"| {env_id} | {r['steps_per_second']:,.0f} | {r['build_seconds']:.2f} |", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
