"""Reference returns of two trivial policies on the scripts' own held-out evaluation tasks.

    python benchmark/baselines.py --env-ids CheetahDir CheetahVel AntDir WalkerRandParams MetaWorldML1

A learning curve says little without its floor. For every env id this runs, on exactly the tasks that the training
scripts evaluate on, through the same code (`envs.evaluation_tasks` with the preset's `num_eval_tasks` and
`eval_seed`, and `envs.run_meta_episodes`: the same reset seeds, meta-episodes of `num_eval_episodes` episodes, rewards
summed per episode, and the papers' success rate: the fraction of tasks with a success in an episode, averaged over
the episodes), two policies that need no learning:

* `zero`: the action 0 at every step (on MuJoCo: standing or lying still; on Meta-World: the arm does not move);
* `random`: actions drawn uniformly from the action space (a generator seeded by `--seed`).

Discrete action spaces (GridNavi, TMaze) have no zero action: only `random` is given there (docs/method.md has
their exact bounds). The table (mean over tasks, min and max over tasks, mean episode length, success on Meta-World)
goes to stdout, and with `--out FILE` also as JSON.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402  (registers the env ids; the evaluation protocol)
import varibad_hyper as script  # noqa: E402  (its presets; no training runs on import)

POLICIES = ("zero", "random")


def policy_returns(env_id, policy, seed=0, num_tasks=None):
    """One meta-episode per evaluation task with a trivial policy, through the scripts' own evaluation protocol
    (`envs.run_meta_episodes`). Returns (returns (tasks, episodes), successes (tasks, episodes), steps per task)."""
    args = script.apply_preset(script.Args(env_id=env_id))
    space = gym.make(env_id).action_space
    if policy == "zero" and not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{env_id}: the zero policy needs a continuous action space, not {space}")
    rng = np.random.default_rng(seed)

    def act(obs, previous):
        if policy == "zero":
            return np.zeros((len(obs), *space.shape), dtype=space.dtype)
        if isinstance(space, gym.spaces.Box):
            return rng.uniform(space.low, space.high, size=(len(obs), *space.shape)).astype(space.dtype)
        return rng.integers(space.n, size=len(obs))

    tasks = envs.evaluation_tasks(env_id, num_tasks or args.num_eval_tasks, args.eval_seed)
    k = args.num_eval_episodes or args.episodes_per_task
    return envs.run_meta_episodes(env_id, tasks, k, args.eval_seed, act)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--env-ids",
        nargs="+",
        default=["CheetahDir", "CheetahVel", "AntDir", "WalkerRandParams", "MetaWorldML1"],
        choices=envs.ENV_IDS,
        metavar="ENV_ID",
    )
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random policy's actions")
    parser.add_argument("--num-tasks", type=int, default=None, help="evaluation tasks (default: the preset's)")
    parser.add_argument("--out", default="", help="also write the rows as JSON to this file")
    opts = parser.parse_args(argv)
    rows = []
    print("| env id | policy | tasks | return (mean) | min | max | steps per task | success |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for env_id in opts.env_ids:
        probe = gym.make(env_id)
        discrete = not isinstance(probe.action_space, gym.spaces.Box)
        probe.close()
        for policy in opts.policies:
            if policy == "zero" and discrete:
                continue
            returns, successes, steps = policy_returns(env_id, policy, opts.seed, opts.num_tasks)
            total = returns.sum(1)
            row = {
                "env_id": env_id,
                "policy": policy,
                "tasks": len(total),
                "return": float(total.mean()),
                "min": float(total.min()),
                "max": float(total.max()),
                "steps": float(steps.mean()),
                "return_per_episode": returns.mean(0).tolist(),
                "success": float((successes > 0).mean(0).mean()),
            }
            rows.append(row)
            success = f"{row['success']:.0%}" if env_id.startswith("MetaWorld") else ""
            print(
                f"| {env_id} | {policy} | {row['tasks']} | {row['return']:.2f} | {row['min']:.2f} | "
                f"{row['max']:.2f} | {row['steps']:.0f} | {success} |",
                flush=True,
            )
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
