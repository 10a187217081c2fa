# Docs: docs/rl2.md
"""RL2 (Duan et al. 2016; Wang et al. 2016) with the *standard* policy, "RNN+S" of Beck et al. 2023, in one file.

A recurrent task encoder (embeddings of (a_t, r_t, s_t+1) -> GRU -> a linear read-out, the latent) summarises the
meta-episode so far, and the policy is an MLP on the state and the latent, concatenated. There is no decoder: the
PPO loss trains the encoder end to end, through the rollout, which the update re-runs from each env's stored hidden
state. Differs from `varibad_standard.py` only in the task encoder and how it is trained, from `rl2_hyper.py` only
in the policy (there a hypernetwork generates the policy's weights).

    python rl2_standard.py --env-id CheetahDir   # the paper's preset for CheetahDir (--help shows it)
"""

import csv
import dataclasses
import json
import math
import os
import pickle
import signal
import sys
import time
import warnings
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.distributions import Categorical, Independent, Normal

import envs


@dataclasses.dataclass
class Args:
    """`--env-id X` loads the paper's preset for X (docs/method.md, Presets); any flag given overrides it."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = False  # if toggled, use CUDA when a GPU is present (a warning and the CPU otherwise)
    track: bool = False  # if toggled, this experiment will be tracked with Weights and Biases
    wandb_project_name: str = "hyper-meta-rl"  # the wandb's project name
    wandb_entity: Optional[str] = None  # the entity (team) of wandb's project
    capture_video: bool = False  # if toggled, record the final evaluation's meta-episodes to `videos/{run_name}`
    save_model: bool = False  # if toggled, save `runs/{run_name}/checkpoint.pt` every --save-every iterations

    # Algorithm specific arguments
    env_id: str = "GridNavi"  # the id of the environment (one of envs.ENV_IDS)
    total_timesteps: int = 4_000_000  # total frames of the experiment, precollection included
    learning_rate: float = 3e-4  # the learning rate of the policy optimizer
    num_envs: int = 16  # the number of parallel game environments
    num_steps: int = 60  # the number of steps to run in each environment per policy rollout
    anneal_lr: bool = False  # Toggle learning rate annealing for policy and value networks
    gamma: float = 0.95  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda for the general advantage estimation
    num_minibatches: int = 4  # the number of mini-batches
    update_epochs: int = 2  # the K epochs to update the policy
    norm_adv: bool = True  # Toggles advantages normalization
    clip_coef: float = 0.05  # the surrogate clipping coefficient (also clips the value loss)
    clip_vloss: bool = True  # Toggles whether or not to use a clipped loss for the value function, as per the paper.
    ent_coef: float = 0.1  # coefficient of the entropy
    vf_coef: float = 0.5  # coefficient of the value function
    max_grad_norm: float = 0.5  # the maximum norm for the gradient clipping
    adam_eps: float = 1e-5  # the epsilon of the policy's Adam optimizer
    reward_clip: float = 10.0  # normalised rewards (divided by the std of the discounted return) are clipped to +-this
    async_envs: bool = False  # if toggled, step the environments in subprocesses (for machines with many cores)

    # Meta-RL arguments
    episodes_per_task: int = 4  # episodes per meta-episode (task), the BAMDP horizon is this x the env's episode length
    precollect_frames: int = 5000  # frames collected with the initial policy before any update (counted in the budget)
    proper_time_limits: bool = False  # if toggled, a meta-episode cut by the time limit bootstraps from its last state
    eval_every: int = 25  # evaluate on the held-out tasks every this many iterations (0: only at the end)
    num_eval_tasks: int = 21  # number of held-out evaluation tasks (a finite task list, e.g. GridNavi's, is cycled)
    num_eval_episodes: int = 0  # episodes per held-out task in an evaluation (0: --episodes-per-task)
    eval_seed: int = 1_000_003  # seed of the generator that draws the held-out evaluation tasks
    save_every: int = 250  # with --save-model, write a checkpoint every this many iterations
    resume: Optional[str] = None  # path of a checkpoint to continue training from
    latent_dim: int = 5  # the encoder's read-out (the policy's latent) has 2 x this units, as VariBAD's [mu, logvar]
    encoder_gru_hidden_size: int = 256  # hidden size of the encoder's GRU
    encoder_gru_chrono: int = 0  # if T >= 2: chrono init of the GRU's update-gate bias, for memory over ~T steps
    action_embedding_size: int = 0  # encoder action embedding size (0: actions are not encoded, as on GridNavi)
    reward_embedding_size: int = 8  # encoder reward embedding size
    state_embedding_size: int = 32  # encoder state embedding size
    policy_state_embedding_dim: int = 256  # the policy's state embedding size
    policy_latent_embedding_dim: int = 25  # the policy's latent embedding size
    encoder_max_grad_norm: float = 0.5  # the maximum norm of the encoder's gradient (clipped apart from the policy's)


# The papers' settings per benchmark, and where they come from: docs/method.md, Presets.
# fmt: off
_MUJOCO = dict(proper_time_limits=True, num_envs=16, num_steps=400, total_timesteps=75_000_000, clip_coef=0.1,
               adam_eps=1e-8, ent_coef=0.01, gamma=0.97, gae_lambda=0.9, action_embedding_size=16,
               reward_embedding_size=16, num_eval_tasks=16)
_METAWORLD = dict(_MUJOCO, num_eval_episodes=10, num_envs=8, num_steps=600, num_minibatches=8, ent_coef=0.001,
                  reward_clip=1e5, num_eval_tasks=10)
PRESETS = {
    "GridNavi": {}, "GridNaviDense": {}, "GridNaviShow": {},
    "CheetahDir": _MUJOCO, "CheetahVel": _MUJOCO, "HumanoidDir": _MUJOCO,
    "AntDir": dict(_MUJOCO, num_steps=200, num_minibatches=1, policy_latent_embedding_dim=10),
    "WalkerRandParams": dict(_MUJOCO, num_steps=200, num_minibatches=2, clip_coef=0.05, latent_dim=10,
                             action_embedding_size=32, reward_embedding_size=32),
    "MetaWorldML1": dict(_METAWORLD, total_timesteps=50_000_000, policy_latent_embedding_dim=10),
    "MetaWorldML10": dict(_METAWORLD, total_timesteps=100_000_000),
    "TMaze": dict(num_steps=400, total_timesteps=1_500_000, latent_dim=12, action_embedding_size=8,
                  encoder_gru_chrono=100, num_eval_tasks=16, eval_every=10),
}
# fmt: on
# the numbers that may be 0 (every other number must be > 0)
MAY_BE_ZERO = """seed gae_lambda ent_coef vf_coef precollect_frames eval_every num_eval_episodes eval_seed
encoder_gru_chrono action_embedding_size""".split()


# TRY NOT TO MODIFY: command line, presets and resume
def apply_preset(args):
    """`args` with its env's preset (and the env's episodes per task) filled in."""
    return dataclasses.replace(args, **PRESETS[args.env_id], episodes_per_task=envs.EPISODES_PER_TASK[args.env_id])


def args_error(args):
    """The first problem with `args`, in one line that says what is wrong; None if there is none."""
    for name, value in dataclasses.asdict(args).items():
        values, positive = (value, True) if isinstance(value, tuple) else ((value,), name not in MAY_BE_ZERO)
        if isinstance(value, (bool, str, type(None))):
            continue
        if not all(math.isfinite(v) for v in values):
            return f"--{name.replace('_', '-')} is {value}; it must be a finite number"
        if any(v <= 0 if positive else v < 0 for v in values):
            return f"--{name.replace('_', '-')} is {value}; it must be {'>' if positive else '>='} 0"
    batch, rollout = args.num_envs * args.num_steps, f"--num-envs {args.num_envs} x --num-steps {args.num_steps}"
    if args.encoder_gru_chrono == 1:
        return "--encoder-gru-chrono 1: give 0 (zero bias) or a memory span T >= 2"
    if max(args.gamma, args.gae_lambda) > 1:
        return f"--gamma {args.gamma} and --gae-lambda {args.gae_lambda} must be at most 1"
    if batch % args.num_minibatches:
        return f"--num-minibatches {args.num_minibatches} does not divide the rollout of {rollout} = {batch} frames"
    if args.total_timesteps < batch:
        return f"--total-timesteps {args.total_timesteps} is less than one rollout ({rollout} = {batch} frames)"
    if args.num_eval_episodes and (args.num_eval_episodes > 1) != (args.episodes_per_task > 1):
        return f"--num-eval-episodes {args.num_eval_episodes}: give 0, or more than 1 exactly if --episodes-per-task is"
    return None


def load_checkpoint(path, env_id):
    """The checkpoint at `path`, or a one-line error if it is not one of this script's for `env_id`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a missing file, or not a checkpoint
        sys.exit(f"error: {path!r} is not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())})")
    if not isinstance(ckpt, dict) or not {"script", "args", "agent"} <= set(ckpt):
        sys.exit(f"error: {path!r} is not a checkpoint of this repository's scripts")
    if ckpt["script"] != os.path.basename(__file__) or ckpt["args"]["env_id"] != env_id:
        sys.exit(f"error: {path!r} is a checkpoint of {ckpt['script']} for {ckpt['args']['env_id']}, not of "
                 f"{os.path.basename(__file__)} for --env-id {env_id}")  # fmt: skip
    return ckpt


# what a resumed run may change on the command line; it keeps every other setting
RUNTIME_FLAGS = """env_id resume total_timesteps cuda track wandb_project_name wandb_entity
capture_video save_model save_every async_envs eval_every num_eval_tasks num_eval_episodes""".split()


def parse_args(argv=None):
    """(args, checkpoint or None): tyro over --env-id's preset; with --resume, the checkpoint's args + RUNTIME_FLAGS."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names, given, env_id = set(Args.__dataclass_fields__), set(), Args.env_id
    for arg, next_arg in zip(argv, [*argv[1:], ""]):
        name, _, value = arg[2:].replace("-", "_").partition("=")
        if arg.startswith("--"):  # `--no-track` gives `track`
            given.add(name if name in names else name.removeprefix("no_"))
        env_id = (value or next_arg) if arg.startswith("--") and name == "env_id" else env_id
    if env_id not in envs.ENV_IDS:
        sys.exit(f"error: unknown --env-id {env_id!r}; valid ids: {', '.join(envs.ENV_IDS)}")
    args = tyro.cli(Args, default=apply_preset(Args(env_id=env_id)), args=argv)
    ckpt = load_checkpoint(args.resume, args.env_id) if args.resume else None
    if ckpt:  # another flag given must keep the checkpoint's value rather than silently change the run
        saved = {k: v for k, v in ckpt["args"].items() if k in names} | {"resume": None}
        for name in sorted(given - set(RUNTIME_FLAGS)):
            if getattr(args, name) != saved[name]:
                flag = f"--{name.replace('_', '-')} {getattr(args, name)}"
                sys.exit(f"error: {flag} differs from the checkpoint's {saved[name]}; a run keeps its settings")
        args = Args(**{**saved, **{name: getattr(args, name) for name in given & set(RUNTIME_FLAGS)}})
    if error := args_error(args):  # after a resume, e.g. a --total-timesteps below the run's own rollout
        sys.exit(f"error: {error}")
    return args, ckpt


# TRY NOT TO MODIFY: bookkeeping and running statistics
class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm), buffers that travel with the state_dict; calling normalises."""

    def __init__(self, shape=()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x):
        x = x.reshape(-1, *self.mean.shape).double()
        batch_mean, batch_var, batch_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x):
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).to(x.dtype)


class RewardNormalizer:
    """PPO's rewards: divided by the running std of the discounted return (per env, reset with the task), clipped."""

    def __init__(self, num_envs, gamma, clip):
        self.rms, self.gamma, self.clip, self.returns = RunningMeanStd(), gamma, clip, np.zeros(num_envs)

    def __call__(self, rewards, terminals):
        self.returns = self.returns * self.gamma + rewards
        self.returns[terminals] = 0.0
        self.rms.update(torch.as_tensor(self.returns))
        return np.clip(rewards / math.sqrt(self.rms.var.item() + 1e-8), -self.clip, self.clip)


# ALGO LOGIC: the task encoder, trained by the PPO loss
class Encoder(nn.Module):
    """Relu embeddings of (a_t, r_t, s_t+1) -> GRU -> a linear read-out, the latent; the prior reads a zero input."""

    def __init__(self, obs_dim, action_dim, args):
        super().__init__()
        A, R, S = args.action_embedding_size, args.reward_embedding_size, args.state_embedding_size
        self.embeds = nn.ModuleList(nn.Linear(n_in, n) for n_in, n in ((action_dim, A), (1, R), (obs_dim, S)) if n)
        self.gru = nn.GRU(A + R + S, args.encoder_gru_hidden_size)
        for name, param in self.gru.named_parameters():
            nn.init.orthogonal_(param) if "weight" in name else nn.init.zeros_(param)
        if args.encoder_gru_chrono:  # h' = (1 - z) n + z h: a large update-gate bias keeps h (Tallec & Ollivier 2018)
            z_bias = self.gru.bias_hh_l0.data[args.encoder_gru_hidden_size : 2 * args.encoder_gru_hidden_size]
            z_bias.uniform_(1, args.encoder_gru_chrono - 1).log_()
        self.readout = nn.Linear(args.encoder_gru_hidden_size, 2 * args.latent_dim)

    def embed(self, actions, rewards, next_obs):
        inputs = (actions, rewards, next_obs)[3 - len(self.embeds) :]
        return torch.cat([F.relu(embed(x)) for embed, x in zip(self.embeds, inputs)], -1)

    def forward(self, actions, rewards, next_obs, hidden):
        """Sequences (T, B, ...) and hidden (1, B, H) -> latents (T, B, 2 * latent_dim), hidden."""
        out, hidden = self.gru(self.embed(actions, rewards, next_obs), hidden)
        return self.readout(out), hidden

    def step(self, actions, rewards, next_obs, hidden):
        """One transition of B envs: actions (B, A), rewards (B,), next_obs (B, S) -> latent (B, 2L), hidden."""
        latent, hidden = self(actions.unsqueeze(0), rewards.view(1, -1, 1), next_obs.unsqueeze(0), hidden)
        return latent[0], hidden

    def prior(self, batch_size):
        hidden = self.readout.weight.new_zeros(1, batch_size, self.gru.hidden_size)
        out, _ = self.gru(hidden.new_zeros(1, batch_size, self.gru.input_size), hidden)
        return self.readout(out[0]), hidden


def latent_before(encoder, hidden, starts):
    """The latent before a step: the prior where the step starts a meta-episode, else the read-out of `hidden`."""
    prior, _ = encoder.prior(1)
    return torch.where(starts.unsqueeze(-1), prior, encoder.readout(hidden))


def encode_rollout(encoder, actions, rewards, next_obs, starts, hidden):
    """META-RL LOGIC: the latents (T, N, 2L) the policy saw at each step of a rollout, recomputed with gradients, from
    `hidden` (1, N, H), each env's memory at the rollout's start; `starts[t, n]`: step t began a meta-episode (its
    latent is the prior, the memory restarts from zero). The pieces between starts run side by side in one GRU call."""
    T, N = starts.shape
    pieces = []  # (env, first step, end step), in env order
    for n, env_starts in enumerate(starts.T.tolist()):
        cuts = [0, *[t for t in range(1, T) if env_starts[t]], T]
        pieces += [(n, first, end) for first, end in zip(cuts[:-1], cuts[1:])]
    x = encoder.embed(actions, rewards, next_obs)
    padded = nn.utils.rnn.pad_sequence([x[first:end, n] for n, first, end in pieces])
    # a piece starts from the env's stored memory where it continues a meta-episode begun in an earlier rollout
    carried = [first == 0 and not starts[0, n] for n, first, _ in pieces]
    h0 = torch.stack([hidden[0, n] if c else torch.zeros_like(hidden[0, n]) for (n, _, _), c in zip(pieces, carried)])
    out, _ = encoder.gru(padded, h0.unsqueeze(0))
    steps = [[out[: end - first, i] for i, (m, first, end) in enumerate(pieces) if m == n] for n in range(N)]
    after = torch.stack([torch.cat(env_steps) for env_steps in steps], 1)  # (T, N, H): the memory after step t
    before = torch.cat([hidden, after[:-1]])  # the memory before step t (where no meta-episode starts there)
    return latent_before(encoder, before, starts)


# ALGO LOGIC: the policy
@torch.no_grad()
def normc_(weight, gain=1.0):
    """normc: each output row ~ N(0, I), rescaled to L2 norm `gain` (VariBAD's and the hypernetwork papers' init)."""
    return weight.normal_().mul_(gain / weight.norm(dim=1, keepdim=True))


def layer_init(layer, gain=5 / 3):
    normc_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class Agent(nn.Module):
    """Standard policy: [tanh(state embedding) 256, tanh(latent embedding) 25] -> 256 -> 128 (tanh) -> head, actor
    and critic separate; the Gaussian log-std is a parameter. The state is running-normalised, the latent is not."""

    def __init__(self, observation_space, action_space, args):
        super().__init__()
        obs_dim, latent_size = observation_space.shape[0], 2 * args.latent_dim
        self.obs_rms, self.latent_rms = RunningMeanStd((obs_dim,)), nn.Identity()
        self.state_embed = nn.Sequential(nn.Linear(obs_dim, args.policy_state_embedding_dim), nn.Tanh())
        self.latent_embed = nn.Sequential(nn.Linear(latent_size, args.policy_latent_embedding_dim), nn.Tanh())
        in_dim = args.policy_state_embedding_dim + args.policy_latent_embedding_dim
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = action_space.n if self.discrete else action_space.shape[0]
        head = nn.Linear(128, out_dim)
        nn.init.orthogonal_(head.weight, 0.01) if self.discrete else normc_(head.weight, 1.0)
        nn.init.zeros_(head.bias)
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(1, out_dim))

        def hidden():  # the hidden layers of the actor or the critic
            return [layer_init(nn.Linear(in_dim, 256)), nn.Tanh(), layer_init(nn.Linear(256, 128)), nn.Tanh()]

        self.critic = nn.Sequential(*hidden(), nn.Linear(128, 1))
        self.actor = nn.Sequential(*hidden(), head)

    def features(self, obs, latent):
        return torch.cat([self.state_embed(self.obs_rms(obs)), self.latent_embed(self.latent_rms(latent))], -1)

    def get_value(self, obs, latent):
        return self.critic(self.features(obs, latent))

    def get_action_and_value(self, obs, latent, action=None):
        x = self.features(obs, latent)
        return (*self.act(x, action), self.critic(x))

    def act(self, x, action=None, deterministic=False):
        """(action, log-probability, entropy) from features x; samples unless an action is given (or the mode)."""
        out = self.actor(x)
        if self.discrete:
            dist, mode = Categorical(logits=out), out.argmax(-1)
        else:  # a diagonal Gaussian: log-probabilities and entropies summed over the action's dimensions
            dist, mode = Independent(Normal(out, self.actor_logstd.expand_as(out).exp().clamp(min=1e-6)), 1), out
        action = (mode if deterministic else dist.sample()) if action is None else action
        return action, dist.log_prob(action), dist.entropy()


# ALGO LOGIC: PPO's advantages
def compute_gae(rewards, values, terminals, final_values, next_value, args):
    """GAE over a rollout (T, N), cut only where a meta-episode ended; `final_values` bootstraps time-limit cuts."""
    advantages, lastgaelam = torch.zeros_like(rewards), 0
    for t in reversed(range(rewards.shape[0])):
        nextvalues = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        nextnonterminal = 1.0 - terminals[t]
        delta = rewards[t] + args.gamma * (nextvalues * nextnonterminal + final_values[t]) - values[t]
        advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


# TRY NOT TO MODIFY: evaluation
@torch.no_grad()
def evaluate(agent, encoder, args, tasks, device, video_dir=None):
    """The held-out evaluation, deterministic, the latent updated at every step: (eval.json's fields, eval/ metrics)."""
    latent, hidden = encoder.prior(len(tasks))

    def policy(obs, previous):
        nonlocal latent, hidden
        if previous is not None:  # the encoder sees every env's last transition
            latent, hidden = encoder.step(*(torch.as_tensor(x, device=device) for x in previous), hidden)
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        return agent.act(agent.features(obs, latent), deterministic=True)[0].cpu().numpy()

    k = args.num_eval_episodes or args.episodes_per_task
    returns, successes = envs.run_meta_episodes(args.env_id, tasks, k, args.eval_seed, policy, video_dir)[:2]
    success, per_episode = float((successes > 0).mean(0).mean()), returns.mean(0)
    summary = {"return": float(returns.sum(1).mean()), "return_per_episode": per_episode.tolist(), "success": success}
    summary |= {"returns": returns.tolist(), "successes": successes.tolist()}
    metrics = {"eval/return": returns.sum(1).mean()} | {f"eval/return_ep{k + 1}": r for k, r in enumerate(per_episode)}
    if args.env_id.startswith("MetaWorld"):  # and the tasks solved within as many episodes as training's meta-episodes
        metrics |= {"eval/success": success, "eval/success_any": successes[:, : args.episodes_per_task].max(1).mean()}
    return summary, metrics


# TRY NOT TO MODIFY: checkpoints, signals and logging
def save_checkpoint(path, learners, **state):
    """Every learner's state, `state`, the script and the generators; atomic: a temporary file, then a rename."""
    state |= {name: learner.state_dict() for name, learner in learners.items()} | {"script": os.path.basename(__file__)}
    state["rng"] = dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), cuda=torch.cuda.get_rng_state_all())
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def catch_stop_signals():
    """SIGINT (Ctrl-C) or SIGTERM: stop after the iteration, with a checkpoint; a second one stops at once."""
    received = []

    def handle(signum, frame):
        sys.exit(128 + signum) if received else received.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration, with a checkpoint", flush=True)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    return received


def nonfinite(metrics, modules):
    """The name of the first non-finite loss, parameter or normaliser statistic, or None."""
    names = [name for name, value in metrics.items() if name.startswith("losses/") and not math.isfinite(value)]
    for module_name, module in modules.items():
        names += [f"{module_name}.{name}" for name, x in module.state_dict().items() if not torch.isfinite(x).all()]
    return next((name for name in names if name != "losses/explained_variance"), None)


class Logger:
    """Metrics to `runs/{run_name}/metrics.csv` and, with --track, wandb (offline if it fails); progress and ETA."""

    def __init__(self, run_dir, args, run_name, resume_step=None):
        self.path, rows = os.path.join(run_dir, "metrics.csv"), [["global_step", "wall_time", "metric", "value"]]
        if resume_step is not None and os.path.exists(self.path):  # drop what was logged after the checkpoint,
            with open(self.path, newline="") as f:  # and a last row cut short by a killed process
                rows += [row for row in list(csv.reader(f))[1:] if len(row) == 4 and int(row[0]) <= resume_step]
        self.file = open(f"{self.path}.tmp", "w", newline="")  # written whole, then renamed: never half a file
        self.writer, self.wandb, self.latest, self.last_print = csv.writer(self.file), None, {}, 0.0
        self.writer.writerows(rows)
        os.replace(f"{self.path}.tmp", self.path)
        if args.track:
            import wandb

            config = dict(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_name)
            for mode, fallback in ((None, "logging offline instead (`wandb sync` later)"), ("offline", "csv only")):
                try:
                    self.wandb = wandb.init(mode=mode, id=run_name, resume="allow", save_code=True, **config)
                    break
                except Exception as e:  # no network, no login, a failing server
                    warnings.warn(f"wandb.init failed ({type(e).__name__}: {e}); {fallback}")
                    wandb.teardown()  # else the failed run keeps its id, and the offline run cannot take it

    def log(self, metrics, step, total, last=False):
        """Writes the metrics; prints progress every second on a terminal, every 30 s in a log file, and at the end."""
        self.writer.writerows([step, f"{time.time():.3f}", name, f"{value:.6g}"] for name, value in metrics.items())
        self.latest.update(metrics)
        if self.wandb is not None:
            try:
                self.wandb.log(metrics, step=step)
            except Exception as e:
                warnings.warn(f"wandb.log failed ({e}); continuing with metrics.csv only")
                self.wandb = None
        tty, sps = sys.stdout.isatty(), self.latest.get("charts/SPS", 0.0)
        if last or time.time() - self.last_print >= (1 if tty else 30):
            self.last_print, eta = time.time(), (total - step) / max(sps, 1e-9) / 3600
            line = f"{step:>11,}/{total:,} frames ({100 * step / total:5.1f}%) | {sps:,.0f} SPS | ETA {eta:5.2f} h"
            line += "".join(f" | {k} {v:.2f}" for k, v in self.latest.items() if k in ("charts/return", "eval/return"))
            print(("\r" if tty else "") + line, end="" if tty and not last else "\n", flush=True)
        self.file.flush()  # each iteration's rows are on disk before a checkpoint is written

    def close(self):
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish()


# ALGO LOGIC: PPO's update, which trains the task encoder too
def ppo_update(agent, encoder, optimizer, encoder_optimizer, batch, args):
    """PPO's update on the rollout `batch` (a dict of (T, N, ...) tensors) in minibatches of whole env sequences, which
    the encoder re-runs from their initial memory, so that the PPO loss trains it (recurrent PPO). Returns the logs."""
    env_inds, clipfracs, encoder_grad_norms = np.arange(args.num_envs), [], []
    envs_per_batch = args.num_envs // args.num_minibatches
    for epoch in range(args.update_epochs):
        np.random.shuffle(env_inds)
        for start in range(0, args.num_envs, envs_per_batch):
            mb = {key: value[:, env_inds[start : start + envs_per_batch]] for key, value in batch.items()}
            # META-RL LOGIC: re-run the encoder over these envs' rollouts, so that the PPO loss reaches it
            inputs = [mb[key] for key in ("enc_actions", "raw_rewards", "enc_next_obs", "starts", "hidden")]
            latents = encode_rollout(encoder, *inputs).flatten(0, 1)
            mb = {key: value.flatten(0, 1) for key, value in mb.items() if key != "hidden"}
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], latents, mb["actions"])
            logratio = newlogprob - mb["logprobs"]
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl, approx_kl = (-logratio).mean(), ((ratio - 1) - logratio).mean()
                clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

            # Policy loss
            pg_loss1 = -mb["advantages"] * ratio
            pg_loss2 = -mb["advantages"] * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
            pg_loss = torch.max(pg_loss1, pg_loss2).mean()

            # Value loss: Huber, clipped with the same epsilon, times 0.5 (VariBAD's)
            newvalue = newvalue.view(-1)
            v_loss = F.smooth_l1_loss(newvalue, mb["returns"], reduction="none")
            if args.clip_vloss:
                v_clipped = mb["values"] + torch.clamp(newvalue - mb["values"], -args.clip_coef, args.clip_coef)
                v_loss = torch.max(v_loss, F.smooth_l1_loss(v_clipped, mb["returns"], reduction="none"))
            v_loss = 0.5 * v_loss.mean()

            entropy_loss = entropy.mean()
            loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
            optimizer.zero_grad()
            encoder_optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            encoder_grad_norms.append(nn.utils.clip_grad_norm_(encoder.parameters(), args.encoder_max_grad_norm).item())
            optimizer.step()
            encoder_optimizer.step()

    y_pred, y_true = batch["values"].flatten().cpu().numpy(), batch["returns"].flatten().cpu().numpy()
    var_y = np.var(y_true)
    return {
        "charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item(),
        "losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item(),
        "losses/old_approx_kl": old_approx_kl.item(), "losses/approx_kl": approx_kl.item(),
        "losses/clipfrac": np.mean(clipfracs),
        "losses/explained_variance": np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
        "losses/encoder_grad_norm": np.mean(encoder_grad_norms),
    }  # fmt: skip


if __name__ == "__main__":
    args, ckpt = parse_args()  # a resumed run keeps the checkpoint's settings
    if args.num_envs % args.num_minibatches:  # RL2's minibatches are whole env sequences
        sys.exit(f"error: --num-envs {args.num_envs} must be a multiple of --num-minibatches {args.num_minibatches}")
    num_iterations = args.total_timesteps // (args.num_envs * args.num_steps)
    run_name = ckpt["run_name"] if ckpt else f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    video_dir = os.path.join("videos", run_name) if args.capture_video else None

    # TRY NOT TO MODIFY: seeding
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.distributions.Distribution.set_default_validate_args(False)  # faster; a NaN must reach `nonfinite`
    if args.cuda and not torch.cuda.is_available():
        warnings.warn("--cuda was given but no GPU is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    train_envs = envs.make_vector_env(args.env_id, args.episodes_per_task, args.num_envs, args.async_envs)
    obs_space, action_space = train_envs.single_observation_space, train_envs.single_action_space
    obs_dim, action_dim = obs_space.shape[0], gym.spaces.flatdim(action_space)  # flatdim: n if discrete
    eval_tasks = envs.evaluation_tasks(args.env_id, args.num_eval_tasks, args.eval_seed)

    agent = Agent(obs_space, action_space, args).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    encoder = Encoder(obs_dim, action_dim, args).to(device)
    encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=args.learning_rate, fused=True)  # its own, same lr
    reward_normalizer = RewardNormalizer(args.num_envs, args.gamma, args.reward_clip)
    finished_returns = []  # the returns of the episodes of each meta-episode finished in this iteration
    learners = dict(agent=agent, optimizer=optimizer, encoder=encoder, encoder_optimizer=encoder_optimizer)
    learners.update(reward_rms=reward_normalizer.rms)  # all that a checkpoint always holds
    global_step, saved_iteration = (ckpt["global_step"], ckpt["iteration"]) if ckpt else (0, 0)
    start_iteration = saved_iteration + 1
    if args.resume:
        for name, learner in learners.items():
            learner.load_state_dict(ckpt[name])
        torch.set_rng_state(ckpt["rng"]["torch"])  # and the generators continue where they stopped
        np.random.set_state(ckpt["rng"]["numpy"])
        torch.cuda.set_rng_state_all(ckpt["rng"].get("cuda", []))  # a GPU's too (none in older checkpoints)
        print(f"resuming {run_name} at iteration {start_iteration}, {global_step:,} frames")
    os.makedirs(run_dir, exist_ok=True)
    logger = Logger(run_dir, args, run_name, resume_step=global_step if args.resume else None)
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(dataclasses.asdict(args), f, indent=2)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")

    # ALGO Logic: Storage setup (final_values: the value of the true final state where a time limit cut a meta-episode)
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_space.shape).to(device)
    latents = torch.zeros((args.num_steps, args.num_envs, 2 * args.latent_dim)).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + action_space.shape).to(device)
    logprobs, rewards, terminals, final_values = torch.zeros((4, args.num_steps, args.num_envs)).to(device)
    # META-RL LOGIC: what the encoder saw at every step, and where meta-episodes began, to re-run it in the update
    enc_actions = torch.zeros((args.num_steps, args.num_envs, action_dim)).to(device)
    raw_rewards = torch.zeros((args.num_steps, args.num_envs, 1)).to(device)
    enc_next_obs = torch.zeros((args.num_steps, args.num_envs) + obs_space.shape).to(device)
    starts = torch.zeros((args.num_steps, args.num_envs), dtype=torch.bool).to(device)

    # TRY NOT TO MODIFY: start the game
    start_time, start_step = time.time(), global_step
    next_obs = torch.Tensor(train_envs.reset(seed=args.seed + 1000 * (start_iteration - 1))[0]).to(device)
    hidden = torch.zeros((1, args.num_envs, args.encoder_gru_hidden_size), device=device)  # the memory, zero at first
    next_start = torch.ones(args.num_envs, dtype=torch.bool, device=device)  # every env starts a meta-episode
    if args.resume and ckpt["rollout"] is not None:  # META-RL LOGIC: every env continues its meta-episode and memory
        train_envs.envs, next_obs = pickle.loads(ckpt["rollout"]["envs"]), ckpt["rollout"]["next_obs"].to(device)
        hidden, next_start = ckpt["rollout"]["hidden"].to(device), ckpt["rollout"]["next_start"].to(device)
        reward_normalizer.returns = ckpt["rollout"]["reward_returns"]
    elif args.resume:
        warnings.warn(f"{args.env_id} envs cannot be restored exactly (not pickled): fresh meta-episodes")
    stop = catch_stop_signals()  # Ctrl-C / SIGTERM: a checkpoint at the end of the iteration, then exit
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / num_iterations
            optimizer.param_groups[0]["lr"] = encoder_optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        # META-RL LOGIC: the hidden state is carried across iterations; the update re-runs the encoder from here. The
        # first latent comes from the current encoder, as `encode_rollout` recomputes it in the update.
        initial_hidden = hidden.clone()
        with torch.inference_mode():  # the rollout, without autograd's bookkeeping (the update recomputes it)
            next_latent = latent_before(encoder, hidden[0], next_start)

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step], latents[step], starts[step] = next_obs, next_latent, next_start

                # ALGO LOGIC: action logic (the values are computed after the rollout, in one batch)
                action, logprob, _ = agent.act(agent.features(next_obs, next_latent))
                actions[step], logprobs[step], action_np = action, logprob, action.cpu().numpy()

                # TRY NOT TO MODIFY: execute the game and log data.
                next_obs_np, reward, terminations, truncations, infos = train_envs.step(action_np)
                done = np.logical_or(terminations, truncations)
                rewards[step] = torch.as_tensor(reward_normalizer(reward, done), device=device)
                terminals[step] = torch.as_tensor(done, dtype=torch.float32, device=device)
                if ended := infos.get("final_info"):  # the returns of the episodes of the meta-episodes ended here
                    finished_returns += list(ended["episode_returns"][ended["_episode_returns"]])

                # META-RL LOGIC: the encoder sees the sampled action, the raw reward and the true next state
                enc_action = envs.action_vectors(action_np, action_space)
                enc_next = envs.true_next_obs(next_obs_np, infos)
                enc_actions[step], enc_next_obs[step] = torch.as_tensor(enc_action), torch.as_tensor(enc_next)
                raw_rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device).view(-1, 1)
                next_latent, hidden = encoder.step(enc_actions[step], raw_rewards[step], enc_next_obs[step], hidden)
                # META-RL LOGIC: a meta-episode cut by the time limit bootstraps from the value of its true final state,
                # with the latent that has seen the last transition (--proper-time-limits)
                final_values[step] = 0.0
                if args.proper_time_limits and truncations.any():
                    final_value = agent.get_value(torch.as_tensor(enc_next, device=device), next_latent).view(-1)
                    cut = torch.as_tensor(truncations & ~terminations, device=device)
                    final_values[step] = torch.where(cut, final_value, 0.0)
                next_start = torch.as_tensor(done, device=device)
                # META-RL LOGIC: a finished meta-episode resets the memory; the next one starts at the prior
                if done.any():
                    next_latent = torch.where(next_start.unsqueeze(-1), encoder.prior(1)[0], next_latent)
                    hidden = torch.where(next_start.view(1, -1, 1), torch.zeros_like(hidden), hidden)
                next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32, device=device)

        metrics = {}
        if finished_returns:  # the mean return of the meta-episodes finished in this iteration, and of their episodes
            per_episode, finished_returns = np.mean(finished_returns, axis=0), []
            metrics = {"charts/return": per_episode.sum()}
            metrics.update({f"charts/return_ep{k + 1}": r for k, r in enumerate(per_episode)})
        if global_step >= args.precollect_frames:
            with torch.no_grad():  # the rollout's values in one batch, and the bootstrap value
                values = agent.get_value(obs.flatten(0, 1), latents.flatten(0, 1)).view(args.num_steps, args.num_envs)
                next_value = agent.get_value(next_obs, next_latent).reshape(1, -1)
            advantages, returns = compute_gae(rewards, values, terminals, final_values, next_value, args)
            if args.norm_adv:  # over the whole rollout (VariBAD), not per minibatch
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-5)
            batch = dict(obs=obs, actions=actions.long() if agent.discrete else actions)
            batch.update(logprobs=logprobs, advantages=advantages, returns=returns, values=values)
            batch.update(enc_actions=enc_actions, raw_rewards=raw_rewards, enc_next_obs=enc_next_obs, starts=starts)
            batch["hidden"] = initial_hidden
            # META-RL LOGIC: the state normaliser is updated once per iteration, from the whole rollout
            agent.obs_rms.update(obs)
            metrics.update(ppo_update(agent, encoder, optimizer, encoder_optimizer, batch, args))

        metrics["charts/SPS"] = (global_step - start_step) / (time.time() - start_time)
        last = iteration == num_iterations
        if (args.eval_every and iteration % args.eval_every == 0) or last:
            eval_results = evaluate(agent, encoder, args, eval_tasks, device, video_dir if last else None)
            metrics.update(eval_results[1])
        logger.log(metrics, global_step, args.total_timesteps, last)
        if problem := nonfinite(metrics, {"agent": agent, "encoder": encoder}):
            kept = f"the last good checkpoint, {checkpoint_path} (iteration {saved_iteration}), is kept"
            kept = kept if saved_iteration else "no checkpoint was saved (--save-model keeps one every --save-every)"
            sys.exit(f"error: non-finite {problem} at iteration {iteration} ({global_step:,} frames); {kept}")
        if (args.save_model and (iteration % args.save_every == 0 or last)) or stop:
            rollout = None  # the rest of what the next iteration depends on, where the envs pickle with their state
            if isinstance(train_envs, gym.vector.SyncVectorEnv) and train_envs.envs[0].unwrapped.snapshot_by_pickle:
                rollout = dict(envs=pickle.dumps(train_envs.envs), next_obs=next_obs, hidden=hidden)
                rollout.update(next_start=next_start, reward_returns=reward_normalizer.returns)
            save_checkpoint(checkpoint_path, learners, run_name=run_name, args=dataclasses.asdict(args),
                            iteration=iteration, global_step=global_step, rollout=rollout)  # fmt: skip
            saved_iteration = iteration
        if stop:
            print(f"{signal.Signals(stop[0]).name}: stopped at iteration {iteration} ({global_step:,} frames); "
                  f"continue with --resume {checkpoint_path}", flush=True)  # fmt: skip
            logger.close()
            sys.exit(128 + stop[0])

    # the final evaluation on the held-out tasks (the last iteration's), with the returns of every task and episode
    if start_iteration > num_iterations:  # a finished run resumed: evaluate again
        eval_results = evaluate(agent, encoder, args, eval_tasks, device, video_dir)
    result = {"env_id": args.env_id, "global_step": global_step, "tasks": [np.asarray(t).tolist() for t in eval_tasks]}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result | eval_results[0], f, indent=1)
    train_envs.close()
    logger.close()
