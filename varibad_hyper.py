# Docs: docs/varibad.md
"""VariBAD (Zintgraf et al. 2020) with a *hypernetwork* policy (Beck et al. 2022, 2023), in one file.

A recurrent VAE, trained only by the ELBO, encodes the meta-episode so far into a posterior over the task,
q(m | tau_:t) = N(mu_t, sigma_t). A hypernetwork generates every weight of the policy's base network from the latent
[mu_t, logvar_t], with Bias-HyperInit by default. PPO trains the policy on meta-episodes: k episodes of one task.
Differs from `varibad_standard.py` only in the policy (there the latent is concatenated to the state).

    python varibad_hyper.py --env-id CheetahDir   # the paper's preset for CheetahDir (--help shows it)
"""

import collections
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
from typing import Literal, Optional

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
    latent_dim: int = 5  # size of the task latent m (the policy sees [mu, logvar], twice this)
    encoder_gru_hidden_size: int = 256  # hidden size of the encoder's GRU
    encoder_gru_chrono: int = 0  # if T >= 2: chrono init of the GRU's update-gate bias, for memory over ~T steps
    action_embedding_size: int = 0  # encoder/decoder action embedding size (0: actions are not encoded, as on GridNavi)
    reward_embedding_size: int = 8  # encoder/decoder reward embedding size
    state_embedding_size: int = 32  # encoder/decoder state embedding size
    policy_state_embedding_dim: int = 256  # the policy's state embedding size
    policy_latent_embedding_dim: int = 25  # the policy's latent embedding size: the width of the hypernetwork's input e
    hyper_init: Literal["bias", "weight", "hfi", "naive", "kaiming"] = "bias"  # the hypernetwork's initialisation

    # VariBAD arguments
    reward_decoder: Literal["grid", "mlp", "none"] = "grid"  # 'grid' (a Bernoulli per cell), 'mlp' (regression) or none
    reward_decoder_layers: tuple[int, ...] = (32, 32)  # hidden layers of the reward decoder
    state_decoder_layers: tuple[int, ...] = ()  # hidden layers of the state decoder (empty: no state decoder)
    kl_weight: float = 1.0  # weight of the KL term of the ELBO
    vae_lr: float = 1e-3  # learning rate of the VAE (encoder and decoders)
    vae_batch_num_trajs: int = 25  # meta-episodes per VAE batch
    num_vae_updates: int = 3  # VAE gradient steps per iteration (after the PPO update)
    vae_buffer_size: int = 100_000  # capacity of the VAE's FIFO buffer of whole meta-episodes
    vae_subsample_elbos: int = 0  # ELBO terms (time steps t) drawn per meta-episode (0: all)
    vae_subsample_decodes: int = 0  # transitions decoded per ELBO term (0: all)


# The papers' settings per benchmark, and where they come from: docs/method.md, Presets.
# fmt: off
_MUJOCO = dict(proper_time_limits=True, num_envs=16, num_steps=400, total_timesteps=75_000_000, clip_coef=0.1,
               adam_eps=1e-8, ent_coef=0.01, gamma=0.97, gae_lambda=0.9, action_embedding_size=16,
               reward_embedding_size=16, num_eval_tasks=16, reward_decoder="mlp", reward_decoder_layers=(64, 32),
               kl_weight=0.1, vae_batch_num_trajs=10, num_vae_updates=1, vae_buffer_size=10_000,
               vae_subsample_elbos=50, vae_subsample_decodes=50)
_METAWORLD = dict(_MUJOCO, num_eval_episodes=10, num_envs=8, num_steps=600, num_minibatches=8, ent_coef=0.001,
                  reward_clip=1e5, num_eval_tasks=10, kl_weight=1.0, reward_decoder_layers=(128, 64, 32),
                  num_vae_updates=3)
PRESETS = {
    "GridNavi": {}, "GridNaviDense": {}, "GridNaviShow": {},
    "CheetahDir": _MUJOCO, "CheetahVel": _MUJOCO, "HumanoidDir": _MUJOCO,
    "AntDir": dict(_MUJOCO, num_steps=200, num_minibatches=1, policy_latent_embedding_dim=10),
    "WalkerRandParams": dict(_MUJOCO, num_steps=200, num_minibatches=2, clip_coef=0.05, latent_dim=10,
                             action_embedding_size=32, reward_embedding_size=32, kl_weight=1.0, reward_decoder="none",
                             state_decoder_layers=(256, 128)),
    "MetaWorldML1": dict(_METAWORLD, total_timesteps=50_000_000, policy_latent_embedding_dim=10),
    "MetaWorldML10": dict(_METAWORLD, total_timesteps=100_000_000, state_decoder_layers=(128, 64, 32)),
    "TMaze": dict(num_steps=400, total_timesteps=1_500_000, latent_dim=12, action_embedding_size=8, num_eval_tasks=16,
                  encoder_gru_chrono=100, eval_every=10, reward_decoder="mlp", reward_decoder_layers=(32, 32),
                  vae_buffer_size=10_000, vae_subsample_elbos=50, vae_subsample_decodes=50),
}
# fmt: on
# the numbers that may be 0 (every other number must be > 0)
MAY_BE_ZERO = """seed gae_lambda ent_coef vf_coef precollect_frames eval_every num_eval_episodes eval_seed
encoder_gru_chrono action_embedding_size kl_weight num_vae_updates vae_subsample_elbos vae_subsample_decodes""".split()


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


# ALGO LOGIC: the VAE (VariBAD's task encoder and decoders)
def mlp(sizes, activation=nn.ReLU):
    layers = [module for n_in, n_out in zip(sizes[:-1], sizes[1:]) for module in (nn.Linear(n_in, n_out), activation())]
    return nn.Sequential(*layers[:-1])


class Encoder(nn.Module):
    """q(m | tau_:t): relu embeddings of (a_t, r_t, s_t+1) -> GRU -> [mu, logvar]; the prior reads a zero input."""

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


class Decoder(nn.Module):
    """p(r_i+1, s_i+1 | s_i, a_i, m), each decoder with its own embeddings. Reward: 'grid', a Bernoulli logit of 'r = 1'
    per cell from m alone, or 'mlp', from [m, s_i+1, a_i, s_i]. State (if it has layers): from [m, s_i, a_i]."""

    def __init__(self, obs_dim, action_dim, args, num_cells=25):
        super().__init__()
        self.reward_kind, L = args.reward_decoder, args.latent_dim
        S, A = args.state_embedding_size, args.action_embedding_size

        def embeddings():  # a decoder's own embeddings of a state and an action (none if A = 0)
            return nn.ModuleList([nn.Linear(obs_dim, S), *([nn.Linear(action_dim, A)] if A else [])])

        if self.reward_kind != "none":
            self.reward_embed = embeddings()
            self.reward = mlp([L if self.reward_kind == "grid" else L + 2 * S + A, *args.reward_decoder_layers,
                               num_cells if self.reward_kind == "grid" else 1])  # fmt: skip
        if args.state_decoder_layers:
            self.state_embed = embeddings()
            self.state = mlp([L + S + A, *args.state_decoder_layers, obs_dim])

    def losses(self, m, obs, actions, rewards, next_obs, valid):
        """The summed NLLs (reward, state) of transitions (E, D, B, ...) decoded by samples m (E, B, L), if `valid`."""
        rec_reward = rec_state = torch.zeros((), device=m.device)
        if self.reward_kind == "grid":  # a logit of "r = 1" per cell from m alone, read at the cell each step reached
            cells = (next_obs[..., 0].round() * 5 + next_obs[..., 1].round()).long().transpose(1, 2)  # (E, B, D)
            logits = self.reward(m).gather(-1, cells).transpose(1, 2)  # (E, D, B); -log p(r = 1) = softplus(-logit)
            rec_reward = (torch.where(rewards[..., 0] == 1.0, F.softplus(-logits), F.softplus(logits)) * valid).sum()
        m = m.unsqueeze(1).expand(-1, obs.shape[1], -1, -1)
        if self.reward_kind == "mlp":
            state, *action = [F.relu(embed(v)) for embed, v in zip(self.reward_embed, (obs, actions))]
            x = torch.cat([m, F.relu(self.reward_embed[0](next_obs)), *action, state], -1)
            rec_reward = ((self.reward(x)[..., 0] - rewards[..., 0]) ** 2 * valid).sum()
        if hasattr(self, "state"):
            x = torch.cat([m, *[F.relu(embed(v)) for embed, v in zip(self.state_embed, (obs, actions))]], -1)
            rec_state = (((self.state(x) - next_obs) ** 2).mean(-1) * valid).sum()
        return rec_reward, rec_state


def elbo_terms(encoder, decoder, batch, args, generator=None):
    """The negative ELBO's terms (reward NLL, state NLL, KL) for whole meta-episodes (time-major, zero-padded): each
    posterior q_t, t = 0..H (or drawn t), decodes the meta-episode's transitions (or drawn ones); KL(q_t || q_t-1)."""
    obs, actions, rewards, next_obs, lengths = batch
    (H, B), device = rewards.shape[:2], rewards.device
    prior, hidden = encoder.prior(B)
    mu, logvar = torch.cat([prior.unsqueeze(0), encoder(actions, rewards, next_obs, hidden)[0]]).chunk(2, -1)
    mu_prev, logvar_prev = (torch.cat([torch.zeros_like(x[:1]), x[:-1]]) for x in (mu, logvar))  # q_-1 = N(0, I)
    kl = 0.5 * (logvar_prev - logvar + (logvar.exp() + (mu - mu_prev) ** 2) / logvar_prev.exp() - 1).sum(-1)
    m = mu + torch.randn(mu.shape, device=device, generator=generator) * (0.5 * logvar).exp()  # decoders see samples
    if args.vae_subsample_elbos:  # the time steps t (E, B), each in 0..length
        ts = (torch.rand(args.vae_subsample_elbos, B, device=device, generator=generator) * (lengths + 1)).long()
    else:
        ts = torch.arange(H + 1, device=device).unsqueeze(1).expand(H + 1, B)
    if args.vae_subsample_decodes:  # the transitions i (E, D, B), each in 0..length-1
        i = (torch.rand(len(ts), args.vae_subsample_decodes, B, device=device, generator=generator) * lengths).long()
    else:
        i = torch.arange(H, device=device).view(1, H, 1).expand(len(ts), H, B)
    columns, valid_t = torch.arange(B, device=device), ts <= lengths
    decoded = [x[i, columns] for x in (obs, actions, rewards, next_obs)]
    rec_reward, rec_state = decoder.losses(m[ts, columns], *decoded, valid_t.unsqueeze(1) & (i < lengths))
    # META-RL LOGIC: the authors' ELBO sums the KL over the B meta-episodes instead of averaging it, and with ELBO
    # subsampling charges every drawn t for all B meta-episodes (B^2 times an average); the presets were tuned so.
    kl = (kl[ts, columns] * valid_t).sum() * (B if args.vae_subsample_elbos else 1)
    return rec_reward / B, rec_state / B, kl


class TrajectoryBuffer:
    """The VAE's FIFO buffer of whole meta-episodes, each a (length, obs + action + reward + obs) tensor."""

    def __init__(self, capacity, dims, seed):
        self.trajs, self.dims, self.rng = collections.deque(maxlen=capacity), dims, np.random.default_rng(seed)

    def sample(self, batch_size, device):
        """(obs, actions, rewards, next_obs), each (H, B, ...) zero-padded to the longest, and the lengths (B,)."""
        idx = self.rng.choice(len(self.trajs), min(batch_size, len(self.trajs)), replace=False)
        trajs = [self.trajs[i] for i in idx]
        padded = nn.utils.rnn.pad_sequence(trajs).to(device).split(self.dims, -1)
        return (*(x.contiguous() for x in padded), torch.tensor([len(traj) for traj in trajs], device=device))

    def state_dict(self):  # one tensor: saving 100,000 small ones takes seconds
        steps = torch.cat(list(self.trajs)) if self.trajs else torch.zeros(0, sum(self.dims))
        return dict(steps=steps, lengths=[len(t) for t in self.trajs], rng=self.rng.bit_generator.state)

    def load_state_dict(self, state):
        self.trajs.extend(state["steps"].split(state["lengths"]))
        self.rng.bit_generator.state = state["rng"]


@torch.inference_mode()
def encode_unfinished(encoder, running, dims, device):
    """META-RL LOGIC: each env's unfinished meta-episode (`running`) re-encoded by the current encoder."""
    latent, hidden = encoder.prior(len(running))
    lengths = np.array([len(transitions) for transitions in running])
    if lengths.max() > 0:
        steps = [torch.tensor(np.array(transitions, np.float32).reshape(-1, sum(dims))) for transitions in running]
        _, actions, rewards, next_obs = nn.utils.rnn.pad_sequence(steps).to(device).split(dims, -1)
        out, _ = encoder.gru(encoder.embed(actions, rewards, next_obs), hidden)
        last = out[np.maximum(lengths - 1, 0), np.arange(len(running))]
        started = torch.as_tensor(lengths > 0, device=device).unsqueeze(-1)
        latent, hidden = torch.where(started, encoder.readout(last), latent), torch.where(started, last, hidden[0])
    return latent, hidden.view(1, len(running), -1)


# ALGO LOGIC: the policy
@torch.no_grad()
def normc_(weight, gain=1.0):
    """normc: each output row ~ N(0, I), rescaled to L2 norm `gain` (VariBAD's and the hypernetwork papers' init)."""
    return weight.normal_().mul_(gain / weight.norm(dim=1, keepdim=True))


def base_init_(weight, bias, kind):
    """The standard policy's init of a base layer, drawn into the given (n_out, n_in) and (n_out,) views."""
    if kind == "critic":  # PyTorch's default Linear init, U(+-1/sqrt(n_in)) for weight and bias
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(weight, -bound, bound)
        return nn.init.uniform_(bias, -bound, bound)
    nn.init.orthogonal_(weight, 0.01) if kind == "discrete" else normc_(weight, 5 / 3 if kind == "hidden" else 1.0)
    nn.init.zeros_(bias)


@torch.no_grad()
def hyper_init_(w_head, b_head, n_in, n_out, init, kind):
    """Initialises a layer's heads by `init` (docs/method.md); `kind`: the base layer's role (hidden, critic, ...)."""
    d_e = w_head.in_features
    for param in (*w_head.parameters(), *b_head.parameters()):
        nn.init.zeros_(param)
    if init == "bias":  # Bias-HyperInit: at step 0, every latent gets the same, correctly initialised base network
        base_init_(w_head.bias.view(n_out, n_in), b_head.bias, kind)
    elif init == "weight":  # Weight-HyperInit: column k of a weight head is a draw of the base init; bias heads as bias
        for k in range(d_e):
            base_init_(w_head.weight[:, k].view(n_out, n_in), torch.empty(n_out), kind)
        base_init_(torch.empty(n_out, n_in), b_head.bias, kind)
    elif init == "hfi":  # Hyperfan-in: Var = g^2 / (2 d_e n_in) for weight heads, g^2 / (2 d_e) for bias heads
        gain = {"hidden": 5 / 3, "discrete": 0.01, "continuous": 1.0, "critic": 1.0}[kind]
        for head, fan_in in ((w_head, d_e * n_in), (b_head, d_e)):
            nn.init.uniform_(head.weight, -gain * math.sqrt(3 / (2 * fan_in)), gain * math.sqrt(3 / (2 * fan_in)))
    elif init in ("naive", "kaiming"):  # naive: the heads initialised like ordinary layers (normc, gain 5/3), the
        for weight in (w_head.weight, b_head.weight):  # failing baseline; kaiming: the 2023 paper's ablation
            normc_(weight, 5 / 3) if init == "naive" else nn.init.kaiming_uniform_(weight, nonlinearity="tanh")
    else:
        raise ValueError(f"--hyper-init must be one of bias, weight, hfi, naive, kaiming; got {init!r}")


class HyperNetwork(nn.Module):
    """META-RL LOGIC: a base MLP (tanh between layers) whose every weight and bias is linear in the task embedding e:
    W_l(e) = reshape(A_l e + c_l), applied as W_l(e) x = A_l (x outer e) + c_l x without building W_l(e)."""

    def __init__(self, embed_dim, sizes, init, out_init):
        super().__init__()
        pairs = list(zip(sizes[:-1], sizes[1:]))
        self.weight_heads = nn.ModuleList(nn.Linear(embed_dim, n_out * n_in) for n_in, n_out in pairs)
        self.bias_heads = nn.ModuleList(nn.Linear(embed_dim, n_out) for _, n_out in pairs)
        for layer, (w_head, b_head) in enumerate(zip(self.weight_heads, self.bias_heads)):
            hyper_init_(w_head, b_head, *pairs[layer], init, out_init if layer == len(pairs) - 1 else "hidden")

    def forward(self, features):
        x, e = features  # the base network's input (the state embedding) and the task embedding
        for layer, (w_head, b_head) in enumerate(zip(self.weight_heads, self.bias_heads)):
            n_out, n_in = b_head.out_features, x.shape[-1]
            outer = torch.bmm(x.unsqueeze(2), e.unsqueeze(1)).flatten(-2)  # (batch, n_in * d_e), index i * d_e + k
            x = F.linear(outer, w_head.weight.view(n_out, -1)) + F.linear(x, w_head.bias.view(n_out, n_in)) + b_head(e)
            x = torch.tanh(x) if layer < len(self.weight_heads) - 1 else x
        return x


class Agent(nn.Module):
    """Hypernetwork policy: base nets 256 -> 256 -> 128 -> head on tanh(state embedding), their weights generated from
    e = tanh(latent embedding), actor and critic separate; a log-std parameter; state and latent running-normalised."""

    def __init__(self, observation_space, action_space, args):
        super().__init__()
        obs_dim, latent_size = observation_space.shape[0], 2 * args.latent_dim
        self.obs_rms, self.latent_rms = RunningMeanStd((obs_dim,)), RunningMeanStd((latent_size,))
        self.state_embed = nn.Sequential(nn.Linear(obs_dim, args.policy_state_embedding_dim), nn.Tanh())
        self.latent_embed = nn.Sequential(nn.Linear(latent_size, args.policy_latent_embedding_dim), nn.Tanh())
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = action_space.n if self.discrete else action_space.shape[0]
        sizes, d_e = [args.policy_state_embedding_dim, 256, 128], args.policy_latent_embedding_dim
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(1, out_dim))
        self.critic = HyperNetwork(d_e, [*sizes, 1], args.hyper_init, "critic")
        out_kind = "discrete" if self.discrete else "continuous"
        self.actor = HyperNetwork(d_e, [*sizes, out_dim], args.hyper_init, out_kind)

    def features(self, obs, latent):
        return self.state_embed(self.obs_rms(obs)), self.latent_embed(self.latent_rms(latent))

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


# ALGO LOGIC: PPO's update
def ppo_update(agent, optimizer, batch, args):
    """PPO's clipped-surrogate update on the rollout `batch` (a dict of (T, N, ...) tensors); returns what to log."""
    batch = {key: value.flatten(0, 1) for key, value in batch.items()}
    b_inds, clipfracs = np.arange(len(batch["obs"])), []
    minibatch_size = len(b_inds) // args.num_minibatches
    for epoch in range(args.update_epochs):
        np.random.shuffle(b_inds)
        for start in range(0, len(b_inds), minibatch_size):
            mb = {key: value[b_inds[start : start + minibatch_size]] for key, value in batch.items()}
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["latents"], mb["actions"])
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
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()

    y_pred, y_true = batch["values"].cpu().numpy(), batch["returns"].cpu().numpy()
    var_y = np.var(y_true)
    return {
        "charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item(),
        "losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item(),
        "losses/old_approx_kl": old_approx_kl.item(), "losses/approx_kl": approx_kl.item(),
        "losses/clipfrac": np.mean(clipfracs),
        "losses/explained_variance": np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y,
    }  # fmt: skip


if __name__ == "__main__":
    args, ckpt = parse_args()  # a resumed run keeps the checkpoint's settings
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
    decoder = Decoder(obs_dim, action_dim, args).to(device)
    vae_optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=args.vae_lr, fused=True)
    dims = (obs_dim, action_dim, 1, obs_dim)  # a transition as the VAE stores it: obs, action, reward, next obs
    vae_buffer = TrajectoryBuffer(args.vae_buffer_size, dims, args.seed)
    running = [[] for _ in range(args.num_envs)]  # META-RL LOGIC: the transitions of each env's unfinished meta-episode
    reward_normalizer = RewardNormalizer(args.num_envs, args.gamma, args.reward_clip)
    finished_returns = []  # the returns of the episodes of each meta-episode finished in this iteration
    learners = dict(agent=agent, optimizer=optimizer, encoder=encoder, decoder=decoder, vae_optimizer=vae_optimizer)
    learners.update(vae_buffer=vae_buffer, reward_rms=reward_normalizer.rms)  # all that a checkpoint always holds
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

    # TRY NOT TO MODIFY: start the game
    start_time, start_step = time.time(), global_step
    next_obs = torch.Tensor(train_envs.reset(seed=args.seed + 1000 * (start_iteration - 1))[0]).to(device)
    if args.resume and ckpt["rollout"] is not None:  # META-RL LOGIC: every env continues its meta-episode
        train_envs.envs, next_obs = pickle.loads(ckpt["rollout"]["envs"]), ckpt["rollout"]["next_obs"].to(device)
        running, reward_normalizer.returns = ckpt["rollout"]["running"], ckpt["rollout"]["reward_returns"]
    elif args.resume:
        warnings.warn(f"{args.env_id} envs cannot be restored exactly (not pickled): fresh meta-episodes")
    stop = catch_stop_signals()  # Ctrl-C / SIGTERM: a checkpoint at the end of the iteration, then exit
    for iteration in range(start_iteration, num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate
        next_latent, hidden = encode_unfinished(encoder, running, dims, device)

        with torch.inference_mode():  # the rollout, without autograd's bookkeeping (the update recomputes it)
            for step in range(0, args.num_steps):
                global_step += args.num_envs
                obs[step], latents[step] = next_obs, next_latent

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
                transitions = np.concatenate([obs[step].cpu().numpy(), enc_action, reward[:, None], enc_next], 1)
                for record, transition in zip(running, transitions.astype(np.float32)):
                    record.append(transition)
                _, *enc_inputs = torch.as_tensor(transitions, dtype=torch.float32, device=device).split(dims, -1)
                next_latent, hidden = encoder.step(*enc_inputs, hidden)
                # META-RL LOGIC: a meta-episode cut by the time limit bootstraps from the value of its true final state,
                # with the latent that has seen the last transition (--proper-time-limits)
                final_values[step] = 0.0
                if args.proper_time_limits and truncations.any():
                    final_value = agent.get_value(torch.as_tensor(enc_next, device=device), next_latent).view(-1)
                    cut = torch.as_tensor(truncations & ~terminations, device=device)
                    final_values[step] = torch.where(cut, final_value, 0.0)
                # META-RL LOGIC: a finished meta-episode goes to the VAE; the next one starts at the prior
                if done.any():
                    for i in np.flatnonzero(done):
                        vae_buffer.trajs.append(torch.tensor(np.array(running[i])))  # the oldest goes when it is full
                        running[i] = []
                    reset = torch.as_tensor(done, device=device)
                    next_latent = torch.where(reset.unsqueeze(-1), encoder.prior(1)[0], next_latent)
                    hidden = torch.where(reset.view(1, -1, 1), torch.zeros_like(hidden), hidden)
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
            batch = dict(obs=obs, latents=latents, actions=actions.long() if agent.discrete else actions)
            batch.update(logprobs=logprobs, advantages=advantages, returns=returns, values=values)
            # META-RL LOGIC: the policy's normalisers are updated once per iteration, from the whole rollout
            agent.obs_rms.update(obs)
            agent.latent_rms.update(latents)
            metrics.update(ppo_update(agent, optimizer, batch, args))

            # ALGO LOGIC: VAE updates on whole meta-episodes from the buffer (the RL loss never reaches the encoder)
            vae_losses = []
            for _ in range(args.num_vae_updates if vae_buffer.trajs else 0):
                vae_batch = vae_buffer.sample(args.vae_batch_num_trajs, device)
                rec_reward, rec_state, kl = elbo_terms(encoder, decoder, vae_batch, args)
                vae_loss = rec_reward + rec_state + args.kl_weight * kl
                vae_optimizer.zero_grad()
                vae_loss.backward()
                vae_optimizer.step()
                vae_losses.append([vae_loss.item(), rec_reward.item(), rec_state.item(), kl.item()])
            names = ("vae_loss", "vae_reconstruction_reward", "vae_reconstruction_state", "vae_kl")
            metrics.update(zip([f"losses/{name}" for name in names], np.mean(vae_losses, axis=0)) if vae_losses else {})

        metrics["charts/SPS"] = (global_step - start_step) / (time.time() - start_time)
        last = iteration == num_iterations
        if (args.eval_every and iteration % args.eval_every == 0) or last:
            eval_results = evaluate(agent, encoder, args, eval_tasks, device, video_dir if last else None)
            metrics.update(eval_results[1])
        logger.log(metrics, global_step, args.total_timesteps, last)
        if problem := nonfinite(metrics, {"agent": agent, "encoder": encoder, "decoder": decoder}):
            kept = f"the last good checkpoint, {checkpoint_path} (iteration {saved_iteration}), is kept"
            kept = kept if saved_iteration else "no checkpoint was saved (--save-model keeps one every --save-every)"
            sys.exit(f"error: non-finite {problem} at iteration {iteration} ({global_step:,} frames); {kept}")
        if (args.save_model and (iteration % args.save_every == 0 or last)) or stop:
            rollout = None  # the rest of what the next iteration depends on, where the envs pickle with their state
            if isinstance(train_envs, gym.vector.SyncVectorEnv) and train_envs.envs[0].unwrapped.snapshot_by_pickle:
                rollout = dict(envs=pickle.dumps(train_envs.envs), next_obs=next_obs, running=running)
                rollout["reward_returns"] = reward_normalizer.returns
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
