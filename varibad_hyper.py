# Docs: README.md, section "The scripts"
"""VariBAD (Zintgraf et al. 2020) with a *hypernetwork* policy (Beck et al. 2022, 2023), in one file.

A recurrent VAE encodes the meta-episode so far into a posterior over the task, q(m | tau_:t) = N(mu_t, sigma_t);
it is trained only by the ELBO (reward / state decoders + KL to the previous posterior). A hypernetwork generates
every weight of the policy's base network from the latent [mu_t, logvar_t] (detached and running-normalised), with
Bias-HyperInit by default, and the policy is trained by PPO on k episodes per task (the BAMDP, or meta-episode).

Differs from `varibad_standard.py` only in the policy: there the latent is concatenated to the state; here a
hypernetwork generates the policy's weights from the latent (`HyperNetwork`, `hyper_init_`, `--hyper-init`).

    python varibad_hyper.py --env-id GridNavi            # the paper's preset for GridNavi
    python varibad_hyper.py --env-id CheetahDir --help    # shows CheetahDir's preset values as defaults
"""

import csv
import dataclasses
import json
import math
import multiprocessing
import os
import pickle
import random
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.distributions.normal import Normal

import envs


@dataclass
class Args:
    """`--env-id X` loads the paper's preset for X (METHOD.md E.2); any flag given overrides it."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, use CUDA when a GPU is present (a warning and the CPU otherwise)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "hyper-meta-rl"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """if toggled, record the final evaluation's meta-episodes to `videos/{run_name}`"""
    save_model: bool = False
    """if toggled, save checkpoints to `runs/{run_name}/checkpoint.pt` (every `--save-every` iterations and at the end)"""

    # Algorithm specific arguments
    env_id: str = "GridNavi"
    """the id of the environment (one of envs.ENV_IDS)"""
    total_timesteps: int = 4_000_000
    """total frames of the experiment, precollection included"""
    learning_rate: float = 3e-4
    """the learning rate of the policy optimizer"""
    num_envs: int = 16
    """the number of parallel game environments"""
    num_steps: int = 60
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = False
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.95
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 2
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.05
    """the surrogate clipping coefficient (also clips the value loss)"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.1
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    adam_eps: float = 1e-5
    """the epsilon of the policy's Adam optimizer"""
    reward_clip: float = 10.0
    """normalised rewards (divided by the std of the discounted return) are clipped to +-this"""
    async_envs: bool = False
    """if toggled, step the environments in subprocesses (AsyncVectorEnv; for machines with many cores)"""

    # Meta-RL arguments
    episodes_per_task: int = 4
    """episodes per meta-episode (task), the BAMDP horizon is this x the env's episode length"""
    eval_every: int = 25
    """evaluate on the held-out tasks every this many iterations (0: only at the end)"""
    num_eval_tasks: int = 21
    """number of held-out evaluation tasks (finite task sets, e.g. GridNavi's 21 goals, are cycled through)"""
    eval_seed: int = 1_000_003
    """seed of the generator that draws the held-out evaluation tasks (the same for every run)"""
    num_eval_episodes: int = 0
    """episodes per held-out task in an evaluation (0: --episodes-per-task; Meta-World: 10, as the papers)"""
    proper_time_limits: bool = False
    """if toggled, a meta-episode cut by the time limit bootstraps from its final state's value (MuJoCo, Meta-World)"""
    save_every: int = 250
    """with --save-model, write a checkpoint every this many iterations"""
    resume: Optional[str] = None
    """path of a checkpoint to continue training from"""
    eval_checkpoint: Optional[str] = None
    """path of a checkpoint to evaluate (no training; with --capture-video, records videos)"""

    # VariBAD arguments
    latent_dim: int = 5
    """size of the task latent m (the policy sees [mu, logvar], twice this)"""
    encoder_gru_hidden_size: int = 256
    """hidden size of the encoder's GRU"""
    encoder_gru_chrono: int = 0
    """if T >= 2: chrono init of the GRU's update-gate bias, log U(1, T-1), for memory over ~T steps (0: zero bias)"""
    action_embedding_size: int = 0
    """encoder/decoder action embedding size (0: actions are not encoded, as on GridNavi)"""
    reward_embedding_size: int = 8
    """encoder/decoder reward embedding size"""
    state_embedding_size: int = 32
    """encoder/decoder state embedding size"""
    policy_state_embedding_dim: int = 256
    """the policy's state embedding size"""
    policy_latent_embedding_dim: int = 25
    """the policy's latent embedding size: the width of the hypernetwork's input e"""
    hyper_init: Literal["bias", "weight", "hfi", "naive", "kaiming"] = "bias"
    """init of the hypernetwork heads: bias (Bias-HyperInit), weight (Weight-HyperInit), hfi, naive (normc), kaiming"""
    reward_decoder: Literal["grid", "mlp", "none"] = "grid"
    """reward decoder: 'grid' (per-cell Bernoulli), 'mlp' (regression) or 'none'"""
    reward_decoder_layers: tuple[int, ...] = (32, 32)
    """hidden layers of the reward decoder"""
    state_decoder_layers: tuple[int, ...] = ()
    """hidden layers of the state decoder (empty: no state decoder)"""
    kl_weight: float = 1.0
    """weight of the KL term of the ELBO"""
    vae_lr: float = 1e-3
    """learning rate of the VAE (encoder and decoders)"""
    vae_batch_num_trajs: int = 25
    """meta-episodes per VAE batch"""
    num_vae_updates: int = 3
    """VAE gradient steps per iteration (after the PPO update)"""
    vae_buffer_size: int = 100_000
    """capacity of the VAE's FIFO buffer of whole meta-episodes"""
    vae_subsample_elbos: int = 0
    """ELBO terms (time steps t) drawn per meta-episode (0: all)"""
    vae_subsample_decodes: int = 0
    """transitions decoded per ELBO term (0: all)"""
    precollect_frames: int = 5000
    """frames collected with the initial policy before any update (counted in the budget)"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


_MUJOCO = dict(proper_time_limits=True,
               num_envs=16, num_steps=400, total_timesteps=75_000_000, clip_coef=0.1, adam_eps=1e-8, ent_coef=0.01,
               gamma=0.97, gae_lambda=0.9, action_embedding_size=16, reward_embedding_size=16, reward_decoder="mlp",
               reward_decoder_layers=(64, 32), kl_weight=0.1, vae_batch_num_trajs=10, num_vae_updates=1,
               vae_buffer_size=10_000, vae_subsample_elbos=50, vae_subsample_decodes=50, num_eval_tasks=16)
_METAWORLD = dict(_MUJOCO, num_eval_episodes=10,
                  num_envs=8, num_steps=600, num_minibatches=8, ent_coef=0.001, reward_clip=1e5, kl_weight=1.0,
                  reward_decoder_layers=(128, 64, 32), num_vae_updates=3, num_eval_tasks=10)
# METHOD.md E.2. HumanoidDir has no committed preset: it takes the MuJoCo settings with one 2 x 200 meta-episode
# per rollout. TMaze follows MC-LS / the authors' T-maze sets (one 4 x 100 meta-episode per rollout), with a chrono
# init of the GRU (ours, README "Where we deviate"): with zero gate biases, the gradient across the 98-step
# corridor is ~1e-20.
PRESETS = {
    "GridNavi": {},
    "GridNaviDense": {},
    "GridNaviShow": {},
    "CheetahDir": _MUJOCO,
    "CheetahVel": _MUJOCO,
    "AntDir": dict(_MUJOCO, num_steps=200, num_minibatches=1, policy_latent_embedding_dim=10),
    "HumanoidDir": _MUJOCO,
    "WalkerRandParams": dict(_MUJOCO, num_steps=200, num_minibatches=2, clip_coef=0.05, latent_dim=10, kl_weight=1.0,
                             action_embedding_size=32, reward_embedding_size=32, reward_decoder="none",
                             state_decoder_layers=(256, 128)),
    "MetaWorldML1": dict(_METAWORLD, total_timesteps=50_000_000, policy_latent_embedding_dim=10),
    "MetaWorldML10": dict(_METAWORLD, total_timesteps=100_000_000, state_decoder_layers=(128, 64, 32)),
    "TMaze": dict(num_steps=400, total_timesteps=1_500_000, latent_dim=12, action_embedding_size=8, encoder_gru_chrono=100,
                  reward_decoder="mlp", reward_decoder_layers=(32, 32), vae_buffer_size=10_000,
                  vae_subsample_elbos=50, vae_subsample_decodes=50, num_eval_tasks=16, eval_every=10),
}


def apply_preset(args: Args) -> Args:
    """Returns `args` with every field of its env's preset (and the env's episodes per task) filled in."""
    preset = dict(PRESETS[args.env_id], episodes_per_task=envs.EPISODES_PER_TASK[args.env_id])
    return dataclasses.replace(args, **preset)


def parse_args(argv=None) -> Args:
    """tyro parsing on top of the preset of the `--env-id` found in argv, so that `--help` shows the preset."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env_id = Args.env_id
    for i, arg in enumerate(argv):
        if arg in ("--env-id", "--env_id") and i + 1 < len(argv):
            env_id = argv[i + 1]
        elif arg.startswith(("--env-id=", "--env_id=")):
            env_id = arg.split("=", 1)[1]
    if env_id not in envs.ENV_IDS:
        sys.exit(f"error: unknown --env-id {env_id!r}; valid ids: {', '.join(envs.ENV_IDS)}")
    args = tyro.cli(Args, default=apply_preset(Args(env_id=env_id)), args=argv)
    error = args_error(args)
    if error:
        sys.exit(f"error: {error}")
    return args


# the fields of every script that must be > 0 (the other numbers must be >= 0; absent fields are skipped)
POSITIVE = ("total_timesteps", "learning_rate", "num_envs", "num_steps", "num_minibatches", "update_epochs", "clip_coef",
            "max_grad_norm", "encoder_max_grad_norm", "adam_eps", "reward_clip", "gamma", "episodes_per_task",
            "num_eval_tasks", "save_every", "latent_dim", "encoder_gru_hidden_size", "reward_embedding_size",
            "state_embedding_size", "policy_state_embedding_dim", "policy_latent_embedding_dim", "vae_lr",
            "vae_batch_num_trajs", "vae_buffer_size")


def args_error(args):
    """The first problem with `args`, as one line saying what is wrong and what would be right; None if none."""
    for field in dataclasses.fields(args):
        name, value, flag = field.name, getattr(args, field.name), "--" + field.name.replace("_", "-")
        if field.name in ("batch_size", "minibatch_size", "num_iterations") or isinstance(value, (bool, str, type(None))):
            continue
        values = value if isinstance(value, tuple) else (value,)
        if not all(math.isfinite(v) for v in values):
            return f"{flag} is {value}; it must be a finite number"
        if isinstance(value, tuple):
            if not all(v > 0 for v in values):
                return f"{flag} {' '.join(map(str, value))}: every layer size must be > 0"
            continue
        if name in POSITIVE and value <= 0:
            return f"{flag} is {value}; it must be > 0"
        if value < 0:
            return f"{flag} is {value}; it must be >= 0"
    if args.encoder_gru_chrono == 1:
        return "--encoder-gru-chrono 1: give 0 (zero bias) or a memory span T >= 2"
    if args.gamma > 1 or args.gae_lambda > 1:
        return f"--gamma {args.gamma} and --gae-lambda {args.gae_lambda} must be at most 1"
    batch = args.num_envs * args.num_steps
    if batch % args.num_minibatches:
        return (f"--num-minibatches {args.num_minibatches} does not divide the rollout of --num-envs {args.num_envs} x "
                f"--num-steps {args.num_steps} = {batch} frames")
    if args.total_timesteps < batch:
        return (f"--total-timesteps {args.total_timesteps} is less than one rollout (--num-envs {args.num_envs} x "
                f"--num-steps {args.num_steps} = {batch} frames)")
    if args.num_eval_episodes and (args.num_eval_episodes > 1) != (args.episodes_per_task > 1):
        return (f"--num-eval-episodes {args.num_eval_episodes}: give 0 or, with {args.episodes_per_task} episode(s) "
                f"per task, {'more than one' if args.episodes_per_task > 1 else 'one'} (the observation's done bit)")
    if args.resume and args.eval_checkpoint:
        return "give either --resume (continue training) or --eval-checkpoint (evaluate only), not both"
    return None


# flags that a resumed run (or an evaluated checkpoint) may change on the command line (--total-timesteps: train
# longer); it keeps all the others
RUNTIME_FLAGS = ("total_timesteps", "cuda", "track", "wandb_project_name", "wandb_entity", "capture_video",
                 "save_model", "save_every", "async_envs", "eval_every", "num_eval_tasks", "num_eval_episodes")


def checkpoint_args(args, ckpt):
    """The checkpoint's settings, with the RUNTIME_FLAGS given on the command line. Any other setting given that
    differs from the checkpoint's stops with an error, rather than silently changing the run."""
    given, preset = dataclasses.asdict(args), dataclasses.asdict(apply_preset(Args(env_id=args.env_id)))
    saved = {k: v for k, v in ckpt["args"].items() if k in given}
    for name, value in given.items():
        if value == preset[name] or name not in saved or value == saved[name]:
            continue  # not given (a flag equal to the preset is taken as not given), or the same
        if name not in RUNTIME_FLAGS and name not in ("resume", "eval_checkpoint"):
            sys.exit(f"error: --{name.replace('_', '-')} {value} differs from the checkpoint's {saved[name]}; a run "
                     "keeps its settings (start a new run to change them)")
        saved[name] = value
    return Args(**{**saved, "resume": args.resume, "eval_checkpoint": args.eval_checkpoint})


# TRY NOT TO MODIFY: environments
class MetaEpisodeWrapper(gym.Wrapper):
    """Turns an env into the BAMDP of meta-RL: one task for `episodes_per_task` consecutive episodes.

    META-RL LOGIC: `reset()` draws a new task from the wrapper's own seeded generator (or takes `options["task"]`).
    When an inner episode ends (terminated or truncated), the MDP is reset with the *same* task and the new start
    observation is returned with a done bit of 1 (appended to the observation when episodes_per_task > 1); the
    inner episode's last observation goes to `info["inner_final_obs"]` for the encoder. Only the end of the last
    episode ends the meta-episode, with that episode's own `terminated` / `truncated` (a time limit truncates).
    Actions reach the env as the policy sampled them: the env charges its control cost on them and simulates them
    clipped (as the authors' envs do).
    """

    def __init__(self, env, episodes_per_task: int, split: str = "train"):
        super().__init__(env)
        self.episodes_per_task, self.split = episodes_per_task, split
        self.task_rng = np.random.default_rng()
        self.episode = 0
        if episodes_per_task > 1:
            box = env.observation_space
            self.observation_space = gym.spaces.Box(
                np.append(box.low, 0.0).astype(np.float32), np.append(box.high, 1.0).astype(np.float32)
            )

    def _obs(self, obs, done_bit):
        return np.append(obs, np.float32(done_bit)).astype(np.float32) if self.episodes_per_task > 1 else obs

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.task_rng = np.random.default_rng(seed)
        task = (options or {}).get("task")
        if task is None:
            task = self.env.unwrapped.sample_task(self.task_rng, split=self.split)
        obs, info = self.env.reset(seed=seed, options={"task": task})
        self.episode = 0
        return self._obs(obs, 0.0), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            return self._obs(obs, 0.0), reward, False, False, info
        self.episode += 1
        if self.episode == self.episodes_per_task:
            return self._obs(obs, 1.0), reward, terminated, truncated, info  # the meta-episode ends
        info = dict(info, inner_final_obs=self._obs(obs, 1.0))
        obs, _ = self.env.reset()  # same task, fresh start state
        return self._obs(obs, 1.0), reward, False, False, info


def make_env(env_id, episodes_per_task, split="train", render_mode=None):
    def thunk():
        if multiprocessing.parent_process() is not None:  # an --async-envs worker: Ctrl-C is for the main process
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return MetaEpisodeWrapper(gym.make(env_id, render_mode=render_mode), episodes_per_task, split)

    return thunk


def evaluation_tasks(env, n, seed):
    """The held-out tasks: an env's finite task list (`all_tasks`, e.g. GridNavi's 21 goals) cycled to n entries,
    otherwise n draws from the test split with a generator seeded by `seed`."""
    if hasattr(env.unwrapped, "all_tasks"):
        tasks = env.unwrapped.all_tasks("test")
        return [tasks[i % len(tasks)] for i in range(n)]
    rng = np.random.default_rng(seed)
    return [env.unwrapped.sample_task(rng, split="test") for _ in range(n)]


# TRY NOT TO MODIFY: running statistics (VariBAD's normalisers)
class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm); buffers, so they travel with the state_dict."""

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

    def normalize(self, x):
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).to(x.dtype)


class RewardNormalizer:
    """Divides rewards by the running std of the discounted return (per env, reset at meta-episode ends), then
    clips. The policy and critic see normalised rewards; the task encoder always sees raw rewards. As in the
    authors' VecNormalize, a finished meta-episode's return is reset before the statistics see it (they see a 0)."""

    def __init__(self, num_envs, gamma, clip):
        self.rms, self.gamma, self.clip = RunningMeanStd(), gamma, clip
        self.returns = np.zeros(num_envs)

    def __call__(self, rewards, terminals):
        self.returns = self.returns * self.gamma + rewards
        self.returns[terminals] = 0.0
        self.rms.update(torch.as_tensor(self.returns))
        return np.clip(rewards / math.sqrt(self.rms.var.item() + 1e-8), -self.clip, self.clip)


# ALGO LOGIC: the VAE (VariBAD's task encoder and decoders)
def encoder_actions(actions, action_space):
    """The actions as the VAE sees them: discrete ones one-hot, continuous ones as sampled (unclipped, as the
    authors' encoder sees them)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return np.eye(action_space.n, dtype=np.float32)[actions]
    return np.asarray(actions, dtype=np.float32)


class Encoder(nn.Module):
    """q(m | tau_:t): embeddings of (a_t, r_t, s_t+1) -> GRU -> [mu, logvar]. The prior (t = 0) is the read-out of
    one GRU step on a zero input from the zero state; real sequences start from the zero state."""

    def __init__(self, obs_dim, action_dim, args):
        super().__init__()
        self.action_embed = nn.Linear(action_dim, args.action_embedding_size) if args.action_embedding_size else None
        self.reward_embed = nn.Linear(1, args.reward_embedding_size)
        self.state_embed = nn.Linear(obs_dim, args.state_embedding_size)
        input_size = args.action_embedding_size + args.reward_embedding_size + args.state_embedding_size
        self.gru = nn.GRU(input_size, args.encoder_gru_hidden_size)
        for name, param in self.gru.named_parameters():
            nn.init.orthogonal_(param) if "weight" in name else nn.init.zeros_(param)
        if args.encoder_gru_chrono:  # h' = (1 - z) n + z h: a large update-gate bias keeps h (Tallec & Ollivier 2018)
            z_bias = self.gru.bias_hh_l0.data[args.encoder_gru_hidden_size : 2 * args.encoder_gru_hidden_size]
            z_bias.uniform_(1, args.encoder_gru_chrono - 1).log_()
        self.readout = nn.Linear(args.encoder_gru_hidden_size, 2 * args.latent_dim)

    def embed(self, actions, rewards, next_obs):
        parts = [F.relu(self.reward_embed(rewards)), F.relu(self.state_embed(next_obs))]
        if self.action_embed is not None:
            parts.insert(0, F.relu(self.action_embed(actions)))
        return torch.cat(parts, -1)

    def forward(self, actions, rewards, next_obs, hidden):
        """Sequences (T, B, ...) and hidden (1, B, H) -> latents (T, B, 2 * latent_dim), hidden."""
        out, hidden = self.gru(self.embed(actions, rewards, next_obs), hidden)
        return self.readout(out), hidden

    def prior(self, batch_size):
        device = self.readout.weight.device
        hidden = torch.zeros(1, batch_size, self.gru.hidden_size, device=device)
        out, _ = self.gru(torch.zeros(1, batch_size, self.gru.input_size, device=device), hidden)
        return self.readout(out[0]), hidden


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class TransitionEmbedding(nn.Module):
    """A decoder's relu embeddings of a state and, given, an action (none where the action embedding size is 0)."""

    def __init__(self, obs_dim, action_dim, args):
        super().__init__()
        self.state = nn.Linear(obs_dim, args.state_embedding_size)
        self.action = nn.Linear(action_dim, args.action_embedding_size) if args.action_embedding_size else None

    def forward(self, obs, actions=None):
        parts = [F.relu(self.state(obs))]
        if actions is not None and self.action is not None:
            parts.append(F.relu(self.action(actions)))
        return parts


class Decoder(nn.Module):
    """p(r_i+1, s_i+1 | s_i, a_i, m). 'grid': per-cell Bernoulli logits of 'reward = 1', one head per cell,
    from m alone; 'mlp': reward regression from [m, emb(s_i+1), emb(a_i), emb(s_i)]; optional state regression
    of s_i+1 from [m, emb(s_i), emb(a_i)]. Each decoder has its own embeddings, as the authors'."""

    def __init__(self, obs_dim, action_dim, args, num_cells=25):
        super().__init__()
        self.reward_kind, L = args.reward_decoder, args.latent_dim
        emb = args.state_embedding_size + args.action_embedding_size
        if self.reward_kind != "none":  # (created but unused by the 'grid' decoder)
            self.reward_embed = TransitionEmbedding(obs_dim, action_dim, args)
        if self.reward_kind == "grid":
            self.reward = mlp([L, *args.reward_decoder_layers, num_cells])
        elif self.reward_kind == "mlp":
            self.reward = mlp([L + emb + args.state_embedding_size, *args.reward_decoder_layers, 1])
        self.state = None
        if args.state_decoder_layers:
            self.state_embed = TransitionEmbedding(obs_dim, action_dim, args)
            self.state = mlp([L + emb, *args.state_decoder_layers, obs_dim])

    def losses(self, m, obs, actions, rewards, next_obs):
        """Per-transition negative log-likelihoods (reward, state) of the 'mlp' and state decoders, each of the
        batch shape of `rewards[..., 0]` (the 'grid' decoder is evaluated in `elbo_terms`)."""
        rec_reward = rec_state = torch.zeros_like(rewards[..., 0])
        if self.reward_kind == "mlp":
            state, *action = self.reward_embed(obs, actions)
            x = torch.cat([m, *self.reward_embed(next_obs), *action, state], -1)
            rec_reward = (self.reward(x)[..., 0] - rewards[..., 0]) ** 2
        if self.state is not None:
            rec_state = ((self.state(torch.cat([m, *self.state_embed(obs, actions)], -1)) - next_obs) ** 2).mean(-1)
        return rec_reward, rec_state


def gaussian_kl(mu, logvar, mu_prior, logvar_prior):
    """KL(N(mu, exp(logvar)) || N(mu_prior, exp(logvar_prior))), summed over the last dimension."""
    return 0.5 * (logvar_prior - logvar + (logvar.exp() + (mu - mu_prior) ** 2) / logvar_prior.exp() - 1).sum(-1)


def elbo_terms(encoder, decoder, batch, args, generator=None):
    """The negative ELBO's three terms for a batch of whole meta-episodes (time-major, padded; `lengths` (B,)).

    For every t = 0..H (t = 0: the prior) the posterior q_t decodes the transitions i of the *whole* meta-episode
    (past and future) and pays KL(q_t || q_t-1), with q_-1 = N(0, I). With subsampling, `vae_subsample_elbos` t
    and `vae_subsample_decodes` i per meta-episode are drawn with replacement. The reconstruction terms are summed
    over t and i and averaged over the B meta-episodes; the KL is weighted as the authors' code weighs it (below).
    Returns (reward NLL, state NLL, KL)."""
    obs, actions, rewards, next_obs, lengths = batch
    H, B = rewards.shape[:2]
    device = rewards.device
    prior, hidden = encoder.prior(B)
    posterior, _ = encoder(actions, rewards, next_obs, hidden)
    latents = torch.cat([prior.unsqueeze(0), posterior])  # (H + 1, B, 2L)
    mu, logvar = latents.chunk(2, -1)
    kl = gaussian_kl(mu, logvar, torch.cat([torch.zeros_like(mu[:1]), mu[:-1]]), torch.cat([torch.zeros_like(logvar[:1]), logvar[:-1]]))
    m = mu + torch.randn(mu.shape, device=device, generator=generator) * (0.5 * logvar).exp()  # decoders see samples

    cols = torch.arange(B, device=device)
    if args.vae_subsample_elbos:
        u = torch.rand(args.vae_subsample_elbos, B, device=device, generator=generator)
        t_idx = (u * (lengths + 1)).long()  # (E, B), each in 0..length
    else:
        t_idx = torch.arange(H + 1, device=device).unsqueeze(1).expand(H + 1, B)
    if args.vae_subsample_decodes:
        u = torch.rand(t_idx.shape[0], args.vae_subsample_decodes, B, device=device, generator=generator)
        i_idx = (u * lengths).long()  # (E, D, B), each in 0..length-1
    else:
        i_idx = torch.arange(H, device=device).view(1, H, 1).expand(t_idx.shape[0], H, B)
    valid_t = t_idx <= lengths
    valid = valid_t.unsqueeze(1) & (i_idx < lengths)

    m_sel = m[t_idx, cols]  # (E, B, L)
    pick = lambda x: x[i_idx, cols]  # noqa: E731  (E, D, B, ...)
    if decoder.reward_kind == "grid":  # the per-cell heads depend on m only: decode once per t, count labels per cell
        cells = (pick(next_obs)[..., 0].round() * 5 + pick(next_obs)[..., 1].round()).long().transpose(1, 2)  # (E, B, D)
        positive = (pick(rewards)[..., 0] == 1.0).transpose(1, 2)
        counts = torch.zeros(2, *t_idx.shape, 25, device=device)  # how often each cell is decoded with label 0 / 1
        counts[0].scatter_add_(-1, cells, (valid.transpose(1, 2) & ~positive).float())
        counts[1].scatter_add_(-1, cells, (valid.transpose(1, 2) & positive).float())
        logits = decoder.reward(m_sel)  # (E, B, 25); BCE: softplus(logit) for label 0, softplus(-logit) for label 1
        rec_reward = (counts[0] * F.softplus(logits) + counts[1] * F.softplus(-logits)).sum() / B
        rec_state = torch.zeros((), device=device)
    else:
        m_dec = m_sel.unsqueeze(1).expand(-1, i_idx.shape[1], -1, -1)
        rec_reward, rec_state = decoder.losses(m_dec, pick(obs), pick(actions), pick(rewards), pick(next_obs))
        rec_reward, rec_state = (rec_reward * valid).sum() / B, (rec_state * valid).sum() / B
    # META-RL LOGIC: the authors' ELBO (their vae.py) sums the KL over the B meta-episodes instead of averaging it,
    # and with ELBO subsampling charges every drawn t for all B meta-episodes. Their KL thus weighs B (all t) or B^2
    # (subsampled) times a per-meta-episode average; every paper result and preset kl_weight was tuned with it.
    kl = (kl[t_idx, cols] * valid_t).sum() * (B if args.vae_subsample_elbos else 1)
    return rec_reward, rec_state, kl


class TrajectoryBuffer:
    """FIFO buffer of whole meta-episodes for the VAE, padded to the longest possible meta-episode. Storage grows
    by doubling up to `capacity`, so a large buffer costs memory only once it is filled."""

    def __init__(self, capacity, max_len, obs_dim, action_dim):
        self.capacity, self.max_len, self.size, self.ptr = capacity, max_len, 0, 0
        self.dims = {"obs": obs_dim, "actions": action_dim, "rewards": 1, "next_obs": obs_dim}
        self.data = {k: torch.zeros(0, max_len, d) for k, d in self.dims.items()}
        self.lengths = torch.zeros(0, dtype=torch.long)

    def add(self, length, **traj):
        if self.ptr >= self.lengths.shape[0]:
            grow = min(self.capacity, max(64, 2 * self.lengths.shape[0])) - self.lengths.shape[0]
            self.data = {k: torch.cat([v, torch.zeros(grow, *v.shape[1:])]) for k, v in self.data.items()}
            self.lengths = torch.cat([self.lengths, torch.zeros(grow, dtype=torch.long)])
        for k, v in traj.items():
            self.data[k][self.ptr].zero_()
            self.data[k][self.ptr, :length] = torch.as_tensor(v[:length])
        self.lengths[self.ptr] = length
        self.ptr, self.size = (self.ptr + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size, rng, device):
        idx = torch.as_tensor(rng.choice(self.size, size=min(batch_size, self.size), replace=False))
        lengths = self.lengths[idx]
        H = int(lengths.max())
        seqs = [self.data[k][idx, :H].transpose(0, 1).to(device) for k in ("obs", "actions", "rewards", "next_obs")]
        return (*seqs, lengths.to(device))

    def state_dict(self):
        n = self.lengths.shape[0]
        return {"data": {k: v[:n] for k, v in self.data.items()}, "lengths": self.lengths, "size": self.size, "ptr": self.ptr}

    def load_state_dict(self, state):
        self.data, self.lengths = state["data"], state["lengths"]
        self.size, self.ptr = state["size"], state["ptr"]


# ALGO LOGIC: the policy
def normc_(weight, gain=1.0):
    """normc: each output row ~ N(0, I), rescaled to L2 norm `gain` (VariBAD's and the hypernetwork papers' init)."""
    with torch.no_grad():
        weight.normal_()
        weight.mul_(gain / weight.norm(dim=1, keepdim=True))
    return weight


def layer_init(layer, gain=5 / 3):
    normc_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class HyperNetwork(nn.Module):
    """A base MLP (tanh between layers) whose every weight and bias is generated from the task embedding e.

    META-RL LOGIC: the hypernetwork is linear in e, as in every paper experiment: base layer l (n_in -> n_out) has a
    weight head Linear(d_e, n_out * n_in) and a bias head Linear(d_e, n_out), so W_l(e) = reshape(A_l e + c_l).
    `forward` never builds the (batch, n_out, n_in) weights: W_l(e) x = A_l (x outer e) + c_l x, one matrix product
    on the (batch, n_in * d_e) outer product (the same FLOPs, about 10x less memory). `generate` builds them, for
    tests and diagnostics."""

    def __init__(self, embed_dim, sizes, init, out_init):
        super().__init__()
        pairs = list(zip(sizes[:-1], sizes[1:]))
        self.weight_heads = nn.ModuleList(nn.Linear(embed_dim, n_out * n_in) for n_in, n_out in pairs)
        self.bias_heads = nn.ModuleList(nn.Linear(embed_dim, n_out) for _, n_out in pairs)
        for layer, (w_head, b_head) in enumerate(zip(self.weight_heads, self.bias_heads)):
            hyper_init_(w_head, b_head, *pairs[layer], init, out_init if layer == len(pairs) - 1 else "hidden")

    def forward(self, features):
        x, e = features
        for layer, (w_head, b_head) in enumerate(zip(self.weight_heads, self.bias_heads)):
            n_out, n_in = b_head.out_features, x.shape[-1]
            outer = torch.einsum("bi,bk->bik", x, e).flatten(-2)  # (batch, n_in * d_e), index i * d_e + k
            x = F.linear(outer, w_head.weight.view(n_out, -1)) + F.linear(x, w_head.bias.view(n_out, n_in)) + b_head(e)
            if layer < len(self.weight_heads) - 1:
                x = torch.tanh(x)
        return x

    def generate(self, e):
        """The generated parameters [(W (batch, n_out, n_in), b (batch, n_out)) per layer]."""
        return [(w(e).view(*e.shape[:-1], b.out_features, -1), b(e)) for w, b in zip(self.weight_heads, self.bias_heads)]


def base_init_(weight, bias, kind):
    """The standard script's init of a base layer, drawn into the given (n_out, n_in) / (n_out,) views."""
    if kind == "hidden":
        normc_(weight, 5 / 3)
        nn.init.zeros_(bias)
    elif kind == "discrete":
        nn.init.orthogonal_(weight, 0.01)
        nn.init.zeros_(bias)
    elif kind == "continuous":
        normc_(weight, 1.0)
        nn.init.zeros_(bias)
    else:  # "critic": PyTorch's default Linear init, U(+-1/sqrt(n_in)) for weight and bias
        bound = 1 / math.sqrt(weight.shape[1])
        nn.init.uniform_(weight, -bound, bound)
        nn.init.uniform_(bias, -bound, bound)


@torch.no_grad()
def hyper_init_(w_head, b_head, n_in, n_out, init, kind):
    """Initialises one layer's heads with the scheme `init` (METHOD.md B.1-B.4); `kind` is the base layer's role."""
    d_e = w_head.in_features
    if init == "bias":
        # Bias-HyperInit: zero head weights, and head biases drawn from the base layer's own init. At step 0 every
        # latent gets the same, correctly initialised base network (theta = 0 e + c); the task dependence is learned
        # because dL/dA = (dL/dtheta) e^T is not zero.
        for head in (w_head, b_head):
            nn.init.zeros_(head.weight)
        base_init_(w_head.bias.view(n_out, n_in), b_head.bias, kind)
    elif init == "weight":
        # Weight-HyperInit: column k of the weight head is an independent draw of the base init, its bias is zero. The
        # bias head, as the authors', has zero weights and the base init in its bias (zero except the critic output).
        for k in range(d_e):
            weight = torch.empty(n_out, n_in)
            base_init_(weight, torch.empty(n_out), kind)
            w_head.weight[:, k] = weight.flatten()
        nn.init.zeros_(w_head.bias)
        nn.init.zeros_(b_head.weight)
        base_init_(torch.empty(n_out, n_in), b_head.bias, kind)
    elif init == "hfi":
        # Hyperfan-in (Chang et al. 2020), the "weights and biases generated" variant: Var = g^2 / (2 d_e n_in) for
        # weight heads and g^2 / (2 d_e) for bias heads, with the base layer's gain g. HFI assumes a unit-variance
        # input; e is computed from the running-normalised latent in VariBAD but from the raw latent in RL2 (the RL2
        # latent is never normalised, so that the PPO gradient reaches the encoder), as in the authors' code.
        gain = {"hidden": 5 / 3, "discrete": 0.01, "continuous": 1.0, "critic": 1.0}[kind]
        nn.init.uniform_(w_head.weight, -gain * math.sqrt(3 / (2 * d_e * n_in)), gain * math.sqrt(3 / (2 * d_e * n_in)))
        nn.init.uniform_(b_head.weight, -gain * math.sqrt(3 / (2 * d_e)), gain * math.sqrt(3 / (2 * d_e)))
        nn.init.zeros_(w_head.bias)
        nn.init.zeros_(b_head.bias)
    elif init == "naive":
        # The heads initialised like ordinary layers (normc, gain 5/3 over their d_e inputs): the failing baseline.
        for head in (w_head, b_head):
            layer_init(head)
    elif init == "kaiming":
        # The 2023 paper's "RNN+HN Kaiming" ablation: every head initialised like an ordinary tanh layer by PyTorch's
        # kaiming_uniform_ over its d_e inputs, zero head biases.
        for head in (w_head, b_head):
            nn.init.kaiming_uniform_(head.weight, nonlinearity="tanh")
            nn.init.zeros_(head.bias)
    else:
        raise ValueError(f"--hyper-init must be one of bias, weight, hfi, naive, kaiming; got {init!r}")


class Agent(nn.Module):
    """Hypernetwork policy: the state embedding (256, tanh) is the input of a base net 256 -> 256 -> 128 -> head whose
    weights a hypernetwork generates from e = tanh(latent embedding); actor and critic have their own heads, the
    Gaussian log-std is a shared parameter. The state is running-normalised, and so is the latent in VariBAD."""

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
        self.actor = HyperNetwork(d_e, [*sizes, out_dim], args.hyper_init, "discrete" if self.discrete else "continuous")

    def features(self, obs, latent):
        """(state embedding, hypernetwork input e): the base networks' input and what generates their weights."""
        return self.state_embed(self.obs_rms.normalize(obs)), self.latent_embed(self.latent_rms.normalize(latent))

    def get_value(self, obs, latent):
        return self.critic(self.features(obs, latent))

    def get_action_and_value(self, obs, latent, action=None, deterministic=False):
        x = self.features(obs, latent)
        return (*self.act(x, action, deterministic), self.critic(x))

    def act(self, x, action=None, deterministic=False):
        """(action, log-probability, entropy) from features x; samples unless an action is given (or the mode)."""
        out = self.actor(x)
        if self.discrete:
            dist = Categorical(logits=out)
            if action is None:
                action = out.argmax(-1) if deterministic else dist.sample()
            return action, dist.log_prob(action), dist.entropy()
        dist = Normal(out, self.actor_logstd.expand_as(out).exp().clamp(min=1e-6))
        if action is None:
            action = out if deterministic else dist.sample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1)


# ALGO LOGIC: PPO's advantages
def compute_gae(rewards, values, terminals, final_values, next_value, gamma, gae_lambda):
    """GAE over a rollout (T, N). `terminals[t]` is 1 where step t ended the meta-episode: there the next state (a new
    task's) is not bootstrapped, but `final_values[t]` is: the value of the true final state where the time limit cut
    the meta-episode (--proper-time-limits), else 0. Inner episode ends are not terminal: they do not cut GAE."""
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(rewards.shape[0])):
        nextvalues = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        nextnonterminal = 1.0 - terminals[t]
        delta = rewards[t] + gamma * (nextvalues * nextnonterminal + final_values[t]) - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


# TRY NOT TO MODIFY: evaluation
@torch.no_grad()
def evaluate(agent, encoder, args, tasks, device, video_dir=None):
    """One meta-episode of --num-eval-episodes episodes per held-out task, deterministic actions, starting from the
    encoder's prior. Returns per-episode returns (num_tasks, episodes) and success flags (1 where the env reported a
    success in that episode)."""
    render_mode = "rgb_array" if video_dir else None
    k = args.num_eval_episodes or args.episodes_per_task
    eval_envs = [make_env(args.env_id, k, "test", render_mode)() for _ in tasks]
    if video_dir:
        eval_envs[0] = gym.wrappers.RecordVideo(eval_envs[0], video_dir, episode_trigger=lambda _: True, disable_logger=True)
    n = len(tasks)
    returns, successes = np.zeros((n, k)), np.zeros((n, k))
    obs = np.stack([env.reset(seed=args.eval_seed + i, options={"task": task})[0] for i, (env, task) in enumerate(zip(eval_envs, tasks))])
    latent, hidden = encoder.prior(n)
    episode, active = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    while active.any():
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
        action, _, _ = agent.act(agent.features(obs_t, latent), deterministic=True)
        action_np = action.cpu().numpy()
        next_obs, rewards, enc_next = obs.copy(), np.zeros(n, dtype=np.float32), obs.copy()
        for i in np.flatnonzero(active):
            next_obs[i], rewards[i], terminated, truncated, info = eval_envs[i].step(action_np[i])
            enc_next[i] = info.get("inner_final_obs", next_obs[i])
            returns[i, episode[i]] += rewards[i]
            successes[i, episode[i]] = max(successes[i, episode[i]], float(info.get("success", 0.0)))
            if terminated or truncated or "inner_final_obs" in info:
                episode[i] += 1
            active[i] = not (terminated or truncated)
        enc_action = torch.as_tensor(encoder_actions(action_np, eval_envs[0].action_space), device=device)
        latent, hidden = encoder(
            enc_action.unsqueeze(0), torch.as_tensor(rewards, device=device).view(1, n, 1),
            torch.as_tensor(enc_next, dtype=torch.float32, device=device).unsqueeze(0), hidden,
        )
        latent = latent[0]
        obs = next_obs
    for env in eval_envs:
        env.close()
    return returns, successes


def success_rate(successes):
    """The papers' Meta-World success (the authors' metalearner.py): the fraction of tasks with a success in an
    episode, averaged over the episodes. `successes` (tasks, episodes) is 1 where a task succeeded in an episode."""
    return float((np.asarray(successes) > 0).mean(0).mean())


# TRY NOT TO MODIFY: checkpoints and logging
def save_checkpoint(path, **state):
    """Atomic: write to a temporary file, then rename (a killed save never leaves a corrupt checkpoint)."""
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, env_id=None):
    if not os.path.isfile(path):
        sys.exit(f"error: checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        sys.exit(f"error: {path!r} is not a readable checkpoint ({type(e).__name__}: {e})")
    if not isinstance(ckpt, dict) or "args" not in ckpt or "agent" not in ckpt:
        sys.exit(f"error: {path!r} is not a checkpoint of this repository's scripts")
    if ckpt.get("script") != os.path.basename(__file__):
        sys.exit(f"error: {path!r} was written by {ckpt['script']}, not {os.path.basename(__file__)}")
    if env_id is not None and ckpt["args"]["env_id"] != env_id:
        sys.exit(f"error: {path!r} is a checkpoint for {ckpt['args']['env_id']}, not --env-id {env_id}")
    return ckpt


def random_state():
    """Every global generator the training loop draws from (torch: actions; numpy: minibatch shuffles)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_random_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def env_snapshot(vector_env):
    """The envs' exact state for an exact resume, where one can be taken: the pure-Python envs (GridNavi, TMaze:
    `snapshot_by_pickle`) in a SyncVectorEnv are pickled whole. MuJoCo's and Meta-World's simulators do not pickle
    with their state, and --async-envs keeps the envs in other processes: those runs resume with fresh meta-episodes."""
    if isinstance(vector_env, gym.vector.SyncVectorEnv) and getattr(vector_env.envs[0].unwrapped, "snapshot_by_pickle", False):
        return pickle.dumps(vector_env.envs)
    return None


class StopSignal:
    """SIGINT (Ctrl-C) or SIGTERM asks the training loop to stop at the end of the current iteration, after a
    checkpoint; a second signal stops at once (the last checkpoint is intact: saves are atomic)."""

    def __init__(self):
        self.signum = None
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        if self.signum is not None:
            sys.exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this iteration (a checkpoint is saved); send it again to "
              "stop at once", flush=True)


def nonfinite(metrics, modules):
    """The name of the first non-finite loss, parameter or normaliser statistic, or None."""
    for name, value in metrics.items():
        if name.startswith("losses/") and name != "losses/explained_variance" and not math.isfinite(value):
            return name
    for module_name, module in modules.items():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return f"{module_name}.{name}"
    return None


class Logger:
    """Every metric to `runs/{run_name}/metrics.csv` (long format: global_step, wall_time, metric, value) and, with
    --track, to wandb; a progress line on the console. wandb failures never stop training."""

    def __init__(self, run_dir, args, run_name, resume_step=None):
        self.csv_path = os.path.join(run_dir, "metrics.csv")
        rows = [["global_step", "wall_time", "metric", "value"]]
        if resume_step is not None and os.path.exists(self.csv_path):  # drop what was logged after the checkpoint
            with open(self.csv_path, newline="") as f:
                rows += [row for row in list(csv.reader(f))[1:] if int(row[0]) <= resume_step]
        with open(f"{self.csv_path}.tmp", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        os.replace(f"{self.csv_path}.tmp", self.csv_path)
        self.file = open(self.csv_path, "a", newline="")
        self.writer = csv.writer(self.file)
        self.wandb, self.latest, self.last_print = None, {}, 0.0
        if args.track:
            self.wandb = self._init_wandb(args, run_name)

    @staticmethod
    def _init_wandb(args, run_name):
        try:
            import wandb
        except ImportError:
            warnings.warn("--track: wandb is not installed; metrics go to metrics.csv only")
            return None
        kwargs = dict(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_name,
                      id=run_name.replace("/", "_"), resume="allow", save_code=True)
        try:
            return wandb.init(**kwargs)
        except Exception as e:  # no network, no login, a failing server: fall back to an offline run
            warnings.warn(f"wandb.init failed ({type(e).__name__}: {e}); logging offline instead (`wandb sync` later)")
            try:
                return wandb.init(mode="offline", **kwargs)
            except Exception as e2:
                warnings.warn(f"offline wandb failed too ({e2}); metrics go to metrics.csv only")
                return None

    def log(self, metrics, step):
        now = time.time()
        for name, value in metrics.items():
            self.writer.writerow([step, f"{now:.3f}", name, f"{value:.6g}"])
            self.latest[name] = value
        if self.wandb is not None:
            try:
                self.wandb.log(metrics, step=step)
            except Exception as e:
                warnings.warn(f"wandb.log failed ({e}); continuing with metrics.csv only")
                self.wandb = None

    def progress(self, step, total, sps, force=False):
        now = time.time()
        if not force and now - self.last_print < (0.5 if sys.stdout.isatty() else 30):
            return
        self.last_print = now
        eta = (total - step) / max(sps, 1e-9)
        line = f"{step:>11,}/{total:,} frames ({100 * step / total:5.1f}%) | {sps:,.0f} SPS | ETA {eta / 3600:5.2f} h"
        for name, label in (("charts/return", "train return"), ("eval/return", "eval return")):
            if name in self.latest:
                line += f" | {label} {self.latest[name]:.2f}"
        print(("\r" + line) if sys.stdout.isatty() else line, end="" if sys.stdout.isatty() else "\n", flush=True)
        self.file.flush()

    def flush(self):
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        if sys.stdout.isatty():
            print()
        self.file.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception:
                pass


if __name__ == "__main__":
    args = parse_args()
    ckpt = load_checkpoint(args.resume or args.eval_checkpoint, args.env_id) if (args.resume or args.eval_checkpoint) else None
    if ckpt is not None:  # a resumed (or evaluated) run keeps the checkpoint's settings
        args = checkpoint_args(args, ckpt)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if ckpt is not None:  # a resumed run keeps its name and folder; an evaluation records to `{name}-eval`
        run_name = ckpt["run_name"] if args.resume else f"{ckpt['run_name']}-eval"
    run_dir = os.path.join("runs", run_name)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # no argument validation in the action distributions: it costs time, and a NaN must reach the non-finite check
    torch.distributions.Distribution.set_default_validate_args(False)
    if args.cuda and not torch.cuda.is_available():
        warnings.warn("--cuda was given but no GPU is available: running on the CPU")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    env_fns = [make_env(args.env_id, args.episodes_per_task) for _ in range(args.num_envs)]
    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs_ = vector_env(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_space, action_space = envs_.single_observation_space, envs_.single_action_space
    obs_dim = obs_space.shape[0]
    action_dim = action_space.n if isinstance(action_space, gym.spaces.Discrete) else action_space.shape[0]
    max_meta_len = args.episodes_per_task * gym.spec(args.env_id).max_episode_steps
    probe_env = make_env(args.env_id, args.episodes_per_task, "test")()
    eval_tasks = evaluation_tasks(probe_env, args.num_eval_tasks, args.eval_seed)
    probe_env.close()

    agent = Agent(obs_space, action_space, args).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    encoder = Encoder(obs_dim, action_dim, args).to(device)
    decoder = Decoder(obs_dim, action_dim, args).to(device)
    vae_optimizer = optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=args.vae_lr, fused=True)
    vae_buffer = TrajectoryBuffer(args.vae_buffer_size, max_meta_len, obs_dim, action_dim)
    vae_rng = np.random.default_rng(args.seed)
    reward_normalizer = RewardNormalizer(args.num_envs, args.gamma, args.reward_clip)
    global_step, start_iteration, saved_iteration = 0, 1, 0
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        encoder.load_state_dict(ckpt["encoder"])
        decoder.load_state_dict(ckpt["decoder"])
    if args.eval_checkpoint:
        video_dir = os.path.join("videos", run_name) if args.capture_video else None
        returns, successes = evaluate(agent, encoder, args, eval_tasks, device, video_dir)
        print(json.dumps({"checkpoint": args.eval_checkpoint, "return": returns.sum(1).mean(),
                          "return_per_episode": returns.mean(0).tolist(),
                          "success_per_episode": successes.mean(0).tolist(), "success": success_rate(successes)}))
        sys.exit(0)
    if args.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        vae_optimizer.load_state_dict(ckpt["vae_optimizer"])
        vae_buffer.load_state_dict(ckpt["vae_buffer"])
        vae_rng.bit_generator.state = ckpt["vae_rng"]
        reward_normalizer.rms.load_state_dict(ckpt["reward_rms"])
        global_step, start_iteration = ckpt["global_step"], ckpt["iteration"] + 1
        saved_iteration = ckpt["iteration"]
        print(f"resuming {run_name} at iteration {start_iteration}, {global_step:,} frames")
    os.makedirs(run_dir, exist_ok=True)
    logger = Logger(run_dir, args, run_name, resume_step=global_step if args.resume else None)
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(dataclasses.asdict(args), f, indent=2)

    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")

    def checkpoint(iteration):
        """Everything the next iteration depends on, so that a resumed run continues exactly (see env_snapshot)."""
        logger.flush()
        snapshot = env_snapshot(envs_)
        rollout = None if snapshot is None else dict(
            envs=snapshot, next_obs=next_obs, running=running, running_len=running_len, episode_returns=episode_returns,
            episode_index=episode_index, reward_returns=reward_normalizer.returns,
        )
        save_checkpoint(
            checkpoint_path, script=os.path.basename(__file__), run_name=run_name,
            args=dataclasses.asdict(args), iteration=iteration, global_step=global_step, agent=agent.state_dict(),
            encoder=encoder.state_dict(), decoder=decoder.state_dict(), optimizer=optimizer.state_dict(),
            vae_optimizer=vae_optimizer.state_dict(), vae_buffer=vae_buffer.state_dict(),
            vae_rng=vae_rng.bit_generator.state, reward_rms=reward_normalizer.rms.state_dict(),
            random_state=random_state(), rollout=rollout,
        )
        return iteration

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_space.shape).to(device)
    latents = torch.zeros((args.num_steps, args.num_envs, 2 * args.latent_dim)).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    terminals = torch.zeros((args.num_steps, args.num_envs)).to(device)
    final_values = torch.zeros((args.num_steps, args.num_envs)).to(device)  # where a time limit cut a meta-episode
    # META-RL LOGIC: the unfinished meta-episode of every env (raw rewards, executed actions), for the VAE buffer
    # and for re-encoding after the encoder has changed.
    running = {
        "obs": np.zeros((max_meta_len, args.num_envs, obs_dim), np.float32),
        "actions": np.zeros((max_meta_len, args.num_envs, action_dim), np.float32),
        "rewards": np.zeros((max_meta_len, args.num_envs, 1), np.float32),
        "next_obs": np.zeros((max_meta_len, args.num_envs, obs_dim), np.float32),
    }
    running_len = np.zeros(args.num_envs, dtype=np.int64)
    episode_returns = np.zeros((args.num_envs, args.episodes_per_task))
    episode_index = np.zeros(args.num_envs, dtype=np.int64)
    finished_returns = []

    # TRY NOT TO MODIFY: start the game
    start_time, start_step = time.time(), global_step
    next_obs, _ = envs_.reset(seed=args.seed + 1000 * (start_iteration - 1))
    next_obs = torch.Tensor(next_obs).to(device)
    if args.resume:
        rollout = ckpt.get("rollout")
        if rollout is not None:  # META-RL LOGIC: every env continues its meta-episode where it stopped
            envs_.envs = pickle.loads(rollout["envs"])
            next_obs = rollout["next_obs"].to(device)
            running, running_len = rollout["running"], rollout["running_len"]
            episode_returns, episode_index = rollout["episode_returns"], rollout["episode_index"]
            reward_normalizer.returns = rollout["reward_returns"]
        else:
            warnings.warn(f"{args.env_id} envs cannot be restored exactly (see env_snapshot): the resumed run starts "
                          "fresh meta-episodes")
        set_random_state(ckpt["random_state"])
    video_dir = os.path.join("videos", run_name) if args.capture_video else None
    stop = StopSignal()  # Ctrl-C / SIGTERM: checkpoint at the end of the iteration, then exit
    for iteration in range(start_iteration, args.num_iterations + 1):
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        # META-RL LOGIC: re-encode each env's unfinished meta-episode with the current encoder (empty: the prior)
        with torch.no_grad():
            next_latent, hidden = encoder.prior(args.num_envs)
            if running_len.max() > 0:
                T = int(running_len.max())
                seq = [torch.as_tensor(running[k][:T], device=device) for k in ("actions", "rewards", "next_obs")]
                gru_out, _ = encoder.gru(encoder.embed(*seq), hidden)
                last = gru_out[torch.as_tensor(np.maximum(running_len - 1, 0), device=device), torch.arange(args.num_envs)]
                started = torch.as_tensor(running_len > 0, device=device).unsqueeze(-1)
                next_latent = torch.where(started, encoder.readout(last), next_latent)
                hidden = torch.where(started, last, hidden[0]).unsqueeze(0)

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            latents[step] = next_latent

            # ALGO LOGIC: action logic
            with torch.no_grad():  # the values are computed after the rollout, in one batch
                action, logprob, _ = agent.act(agent.features(next_obs, next_latent))
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            action_np = action.cpu().numpy()
            next_obs_np, reward, terminations, truncations, infos = envs_.step(action_np)
            done = np.logical_or(terminations, truncations)
            rewards[step] = torch.as_tensor(reward_normalizer(reward, done), device=device)
            terminals[step] = torch.as_tensor(done, dtype=torch.float32, device=device)

            # META-RL LOGIC: the encoder sees the true next state of this transition: the inner episode's last
            # observation at an inner episode end, the meta-episode's last one at a meta-episode end.
            enc_next = next_obs_np.copy()
            for key in ("inner_final_obs", "final_obs"):
                if key in infos:
                    mask = infos[f"_{key}"]
                    enc_next[mask] = np.stack(infos[key][mask])
            inner_end = infos.get("_inner_final_obs", np.zeros(args.num_envs, dtype=bool))
            enc_action = encoder_actions(action_np, action_space)
            t_idx, cols = running_len, np.arange(args.num_envs)
            running["obs"][t_idx, cols] = obs[step].cpu().numpy()
            running["actions"][t_idx, cols] = enc_action
            running["rewards"][t_idx, cols, 0] = reward
            running["next_obs"][t_idx, cols] = enc_next
            running_len += 1
            with torch.no_grad():
                next_latent, hidden = encoder(
                    torch.as_tensor(enc_action, device=device).unsqueeze(0),
                    torch.as_tensor(reward, dtype=torch.float32, device=device).view(1, -1, 1),
                    torch.as_tensor(enc_next, device=device).unsqueeze(0), hidden,
                )
                next_latent = next_latent[0]
            # META-RL LOGIC: with --proper-time-limits, a meta-episode cut by the time limit bootstraps from the value
            # of its true final state, with the latent that has seen the last transition
            final_values[step] = 0.0
            if args.proper_time_limits and truncations.any():
                cut = torch.as_tensor(truncations & ~terminations, device=device)
                with torch.no_grad():
                    final_value = agent.get_value(torch.as_tensor(enc_next, device=device), next_latent).view(-1)
                final_values[step] = torch.where(cut, final_value, 0.0)
            episode_returns[cols, episode_index] += reward
            episode_index += inner_end
            for i in np.flatnonzero(done):  # META-RL LOGIC: a finished meta-episode: store it, reset the memory
                vae_buffer.add(int(running_len[i]), **{k: v[:, i] for k, v in running.items()})
                finished_returns.append(episode_returns[i].copy())
                running_len[i], episode_index[i], episode_returns[i] = 0, 0, 0.0
            if done.any():
                with torch.no_grad():
                    prior, _ = encoder.prior(1)
                reset = torch.as_tensor(done, device=device)
                next_latent = torch.where(reset.unsqueeze(-1), prior, next_latent)
                hidden = torch.where(reset.view(1, -1, 1), torch.zeros_like(hidden), hidden)
            next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32, device=device)

        metrics = {}
        if finished_returns:
            per_episode = np.mean(finished_returns, axis=0)
            metrics["charts/return"] = per_episode.sum()
            metrics.update({f"charts/return_ep{k + 1}": r for k, r in enumerate(per_episode)})
            finished_returns = []

        if global_step >= args.precollect_frames:
            # the rollout's values in one batch (cheaper than step by step), and the bootstrap value
            with torch.no_grad():
                values = agent.get_value(obs.flatten(0, 1), latents.flatten(0, 1)).view(args.num_steps, args.num_envs)
                next_value = agent.get_value(next_obs, next_latent).reshape(1, -1)
            advantages, returns = compute_gae(rewards, values, terminals, final_values, next_value, args.gamma,
                                              args.gae_lambda)

            # flatten the batch
            b_obs = obs.reshape((-1,) + obs_space.shape)
            b_latents = latents.reshape(-1, 2 * args.latent_dim)
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1,) + action_space.shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)
            if args.norm_adv:  # over the whole rollout (VariBAD), not per minibatch
                b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-5)
            # META-RL LOGIC: the policy's normalisers are updated once per iteration, from the whole rollout
            agent.obs_rms.update(b_obs)
            agent.latent_rms.update(b_latents)

            # Optimizing the policy and value network
            b_inds = np.arange(args.batch_size)
            clipfracs = []
            for epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.minibatch_size * args.num_minibatches, args.minibatch_size):
                    mb_inds = b_inds[start : start + args.minibatch_size]
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb_inds], b_latents[mb_inds], b_actions.long()[mb_inds] if agent.discrete else b_actions[mb_inds]
                    )
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]
                    mb_advantages = b_advantages[mb_inds]

                    # Policy loss
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                    # Value loss: Huber, clipped with the same epsilon, times 0.5 (VariBAD's)
                    newvalue = newvalue.view(-1)
                    v_loss_unclipped = F.smooth_l1_loss(newvalue, b_returns[mb_inds], reduction="none")
                    if args.clip_vloss:
                        v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef)
                        v_loss_clipped = F.smooth_l1_loss(v_clipped, b_returns[mb_inds], reduction="none")
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * v_loss_unclipped.mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # ALGO LOGIC: VAE updates on whole meta-episodes from the buffer (the RL loss never reaches the encoder)
            vae_losses = []
            for _ in range(args.num_vae_updates if vae_buffer.size else 0):
                batch = vae_buffer.sample(args.vae_batch_num_trajs, vae_rng, device)
                rec_reward, rec_state, kl = elbo_terms(encoder, decoder, batch, args)
                vae_loss = rec_reward + rec_state + args.kl_weight * kl
                vae_optimizer.zero_grad()
                vae_loss.backward()
                vae_optimizer.step()
                vae_losses.append([vae_loss.item(), rec_reward.item(), rec_state.item(), kl.item()])

            metrics.update({
                "charts/learning_rate": optimizer.param_groups[0]["lr"], "losses/value_loss": v_loss.item(),
                "losses/policy_loss": pg_loss.item(), "losses/entropy": entropy_loss.item(),
                "losses/old_approx_kl": old_approx_kl.item(), "losses/approx_kl": approx_kl.item(),
                "losses/clipfrac": np.mean(clipfracs), "losses/explained_variance": explained_var,
            })
            if vae_losses:
                mean = np.mean(vae_losses, axis=0)
                metrics.update({"losses/vae_loss": mean[0], "losses/vae_reconstruction_reward": mean[1],
                                "losses/vae_reconstruction_state": mean[2], "losses/vae_kl": mean[3]})

        sps = (global_step - start_step) / (time.time() - start_time)
        metrics["charts/SPS"] = sps
        last = iteration == args.num_iterations
        if (args.eval_every and iteration % args.eval_every == 0) or last:
            eval_returns, eval_successes = evaluate(agent, encoder, args, eval_tasks, device, video_dir if last else None)
            metrics["eval/return"] = eval_returns.sum(1).mean()
            metrics.update({f"eval/return_ep{k + 1}": r for k, r in enumerate(eval_returns.mean(0))})
            if args.env_id.startswith("MetaWorld"):  # and the tasks solved in a meta-episode as long as training's
                metrics["eval/success"] = success_rate(eval_successes)
                metrics["eval/success_any"] = eval_successes[:, : args.episodes_per_task].max(1).mean()
        logger.log(metrics, global_step)
        logger.progress(global_step, args.total_timesteps, sps, force=last)
        problem = nonfinite(metrics, {"agent": agent, "encoder": encoder, "decoder": decoder})
        if problem:  # stop before the bad state reaches a checkpoint
            kept = (f"the last good checkpoint, {checkpoint_path} (iteration {saved_iteration}), is kept" if saved_iteration
                    else "no checkpoint was saved (--save-model keeps one every --save-every iterations)")
            sys.exit(f"error: non-finite {problem} at iteration {iteration} ({global_step:,} frames); {kept}")
        if (args.save_model and (iteration % args.save_every == 0 or last)) or stop.signum:
            saved_iteration = checkpoint(iteration)
        if stop.signum:
            print(f"{signal.Signals(stop.signum).name}: stopped at iteration {iteration} ({global_step:,} frames); "
                  f"continue with --resume {checkpoint_path}", flush=True)
            logger.close()
            sys.exit(128 + stop.signum)

    # the final evaluation on the held-out tasks (the last iteration's), with the per-episode returns of every task
    if start_iteration > args.num_iterations:  # a finished run resumed: evaluate again
        eval_returns, eval_successes = evaluate(agent, encoder, args, eval_tasks, device, video_dir)
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({"env_id": args.env_id, "global_step": global_step, "tasks": [np.asarray(t).tolist() for t in eval_tasks],
                   "return": float(eval_returns.sum(1).mean()), "return_per_episode": eval_returns.mean(0).tolist(),
                   "returns": eval_returns.tolist(), "successes": eval_successes.tolist()}, f, indent=1)
    envs_.close()
    logger.close()
