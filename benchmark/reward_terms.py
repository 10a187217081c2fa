"""What a trained policy's return is made of: reward terms, meta-episode length and action noise of checkpoints.

    python benchmark/reward_terms.py runs/AntDir__varibad_hyper__73__1700000000/checkpoint.pt [more checkpoints]

A MuJoCo return below standing still can mean a policy that runs badly, one that pays for large actions, or one that
falls early on purpose. For every checkpoint this plays one meta-episode per held-out task exactly as the script's
evaluation does (`beliefs.load_run` rebuilds the agent and encoder, `beliefs.play` plays them with deterministic
actions and the latent updated after every step) and prints one markdown row: the mean return, every
`reward_*` term the environment reports in `info` (summed over the meta-episode, mean over tasks), the meta-episode's
length in steps (mean, min, max over tasks), and the policy's action standard deviation (the mean of exp(log-std) over
action dimensions; training samples with it, the evaluation does not).
"""

import argparse
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


import envs  # noqa: E402
from beliefs import load_run, play  # noqa: E402


def reward_terms(checkpoint):
    """(env id, script, mean return, {term: mean over tasks of its meta-episode sum}, steps per task, action std)."""
    module, args, agent, encoder, _, _ = load_run(checkpoint)
    tasks = envs.evaluation_tasks(args.env_id, args.num_eval_tasks, args.eval_seed)
    sums = defaultdict(float)

    def on_step(i, env, reward, info):
        for name, value in info.items():
            if name.startswith("reward_"):
                sums[name] += float(value) / len(tasks)

    played = play(agent, encoder, args, tasks, on_step)
    logstd = getattr(agent, "actor_logstd", None)
    std = float(logstd.detach().exp().mean()) if logstd is not None else None
    return args.env_id, module.__name__, float(played["returns"].sum(1).mean()), dict(sums), played["steps"], std


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint.pt files written by the scripts (--save-model)")
    cli = parser.parse_args()
    rows = [reward_terms(path) for path in cli.checkpoints]
    names = sorted({name for row in rows for name in row[3]})
    print("| " + " | ".join(["checkpoint", "env", "script", "return", *names, "steps (min-max)", "action std"]) + " |")
    print("|---|---|---|" + "---:|" * (len(names) + 3))
    for path, (env_id, script, mean_return, sums, steps, std) in zip(cli.checkpoints, rows):
        terms = [f"{sums[name]:.2f}" if name in sums else "" for name in names]
        noise = f"{std:.2f}" if std is not None else "(discrete)"
        steps_text = f"{steps.mean():.1f} ({steps.min()}-{steps.max()})"
        cells = [os.path.relpath(path), env_id, f"`{script}.py`", f"{mean_return:.2f}", *terms, steps_text, noise]
        print("| " + " | ".join(cells) + " |")
