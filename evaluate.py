"""Evaluates a checkpoint of any of the four scripts on its held-out tasks and prints the result as one JSON line.

    python evaluate.py runs/GridNavi__varibad_hyper__1__1700000000/checkpoint.pt
    python evaluate.py runs/RUN/checkpoint.pt --num-eval-tasks 200 --capture-video

The evaluation is the script's own `evaluate` (as in CleanRL's evaluation helpers, which import the Agent they
evaluate): one meta-episode per held-out task, deterministic actions, the latent updated after every step. It uses
the run's settings; the flags below change only how many tasks and episodes are played, and where. The JSON line
holds eval.json's fields: the mean return, the return per episode, Meta-World's success, and every task's returns
and successes.
"""

import argparse
import dataclasses
import json
import os
import sys
import warnings

import torch

import envs
from beliefs import load_run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint.pt written by one of the four scripts (--save-model)")
    parser.add_argument("--num-eval-tasks", type=int, help="held-out tasks to play (default: the run's)")
    parser.add_argument("--num-eval-episodes", type=int, help="episodes per task (default: the run's)")
    parser.add_argument("--capture-video", action="store_true", help="record the meta-episodes to videos/{run}-eval")
    parser.add_argument("--cuda", action="store_true", help="use CUDA when a GPU is present")
    opts = parser.parse_args(argv)
    module, args, agent, encoder, _, run_name = load_run(opts.checkpoint)
    given = dict(num_eval_tasks=opts.num_eval_tasks, num_eval_episodes=opts.num_eval_episodes)
    args = dataclasses.replace(args, **{name: value for name, value in given.items() if value is not None})
    if error := module.args_error(args):
        sys.exit(f"error: {error}")
    if opts.cuda and not torch.cuda.is_available():
        warnings.warn("--cuda was given but no GPU is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and opts.cuda else "cpu")
    tasks = envs.evaluation_tasks(args.env_id, args.num_eval_tasks, args.eval_seed)
    video_dir = os.path.join("videos", f"{run_name}-eval") if opts.capture_video else None
    summary, _ = module.evaluate(agent.to(device), encoder.to(device), args, tasks, device, video_dir)
    print(json.dumps(summary | {"checkpoint": opts.checkpoint}))


if __name__ == "__main__":
    main()
