"""The hypernetwork policy's output scale at initialisation, per `--hyper-init`, before any training.

    python benchmark/init_scale.py --env-ids CheetahDir GridNavi

For each env id and initialisation this builds `varibad_hyper.py`'s Agent with the env's preset (torch seeded by
`--seed`), feeds it `--states` observations visited by random actions in the env and, for each, `--latents`
standard-normal latents (the policy normalises its latent input by running statistics, so at the start of training
it sees about this scale), and prints per row: the actor's output (mean |output|; on MuJoCo the Gaussian's mean, the
action before sampling, and the fraction of its components outside the action space's [-1, 1]), how much that output
moves when only the latent changes (std over latents at a fixed state, averaged), and the critic's mean |value|.
With Bias-HyperInit the std over latents is 0: the heads' weights start at zero, so every latent gets the same,
correctly initialised base network (the heads still get gradients). The naive and Kaiming heads generate weights
whose scale grows with the latent embedding's, so the first actions (or logits) are over ten times larger than with
Bias-HyperInit.
"""

import argparse
import dataclasses
import os
import sys
import typing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402, F401  (registers the env ids)
import varibad_hyper as script  # noqa: E402  (its presets and Agent; no training runs on import)

INITS = typing.get_args(typing.get_type_hints(script.Args)["hyper_init"])  # the script's --hyper-init choices


def visited_states(env_id, num_states, seed):
    """`num_states` observations visited by uniformly random actions, resetting whenever an episode ends."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    states = []
    while len(states) < num_states:
        states.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    return env, torch.as_tensor(np.array(states), dtype=torch.float32)


@torch.no_grad()
def output_scale(env_id, init, num_states=64, num_latents=32, seed=0):
    """(mean |actor output|, fraction outside [-1, 1] or None, mean std over latents, mean |value|) at step 0."""
    args = dataclasses.replace(script.apply_preset(script.Args(env_id=env_id)), hyper_init=init)
    env, states = visited_states(env_id, num_states, seed)
    torch.manual_seed(seed)
    agent = script.Agent(env.observation_space, env.action_space, args)
    obs = states.repeat_interleave(num_latents, 0)
    latents = torch.randn(len(obs), 2 * args.latent_dim)
    x = agent.features(obs, latents)
    out, value = agent.actor(x), agent.critic(x)
    outside = None if agent.discrete else float((out.abs() > 1).float().mean())
    across_latents = out.view(num_states, num_latents, -1).std(1).mean()
    return float(out.abs().mean()), outside, float(across_latents), float(value.abs().mean())


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env-ids", nargs="+", default=["CheetahDir", "GridNavi"], choices=envs.ENV_IDS)
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS, help="the --hyper-init values")
    parser.add_argument("--states", type=int, default=64, help="observations visited by random actions, per env")
    parser.add_argument("--latents", type=int, default=32, help="standard-normal latents per observation")
    parser.add_argument("--seed", type=int, default=0, help="seeds the env, its random actions and the init")
    args = parser.parse_args(argv)
    print("| env | --hyper-init | mean abs actor output | outside [-1, 1] | std over latents | mean abs value |")
    print("|---|---|---:|---:|---:|---:|")
    for env_id in args.env_ids:
        for init in args.inits:
            mean_abs, outside, across, value = output_scale(env_id, init, args.states, args.latents, args.seed)
            outside = "-" if outside is None else f"{outside:.0%}"
            print(f"| {env_id} | {init} | {mean_abs:.3f} | {outside} | {across:.3f} | {value:.3f} |")


if __name__ == "__main__":
    main()
