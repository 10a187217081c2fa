"""rl2_hyper.py and rl2_standard.py: the encoder trained by the PPO loss, recurrent PPO's bookkeeping, smoke runs."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import envs
import rl2_hyper
import rl2_standard
import varibad_hyper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = [rl2_hyper, rl2_standard]


def step_by_step_latents(encoder, actions, rewards, next_obs, starts, hidden):
    """What the rollout computes: the prior where a meta-episode starts (memory from zero), then one GRU step per
    transition."""
    latents = []
    prior, _ = encoder.prior(1)
    latent = encoder.readout(hidden[0])
    for t in range(starts.shape[0]):
        start = starts[t].unsqueeze(-1)
        latent = torch.where(start, prior, latent)
        hidden = torch.where(start.unsqueeze(0), torch.zeros_like(hidden), hidden)
        latents.append(latent)
        out, hidden = encoder(actions[t : t + 1], rewards[t : t + 1], next_obs[t : t + 1], hidden)
        latent = out[0]
    return torch.stack(latents)


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_encode_rollout_recomputes_the_rollout_latents_in_one_batch(module):
    torch.manual_seed(0)
    args = module.apply_preset(module.Args(env_id="CheetahDir"))
    encoder = module.Encoder(20, 6, args)
    T, N = 50, 5
    actions, rewards, next_obs = torch.randn(T, N, 6), torch.randn(T, N, 1), torch.randn(T, N, 20)
    starts = torch.zeros(T, N, dtype=torch.bool)
    starts[0, 0] = starts[17, 1] = starts[0, 2] = starts[30, 2] = starts[49, 3] = True  # env 4: no start at all
    hidden = torch.randn(1, N, 256) * 0.3
    expected = step_by_step_latents(encoder, actions, rewards, next_obs, starts, hidden)
    got = module.encode_rollout(encoder, actions, rewards, next_obs, starts, hidden)
    assert got.shape == (T, N, 2 * args.latent_dim)
    assert torch.allclose(got, expected, atol=1e-5)
    # the memory is reset only where a meta-episode starts: env 4 carries its initial state through all 50 steps
    no_memory = module.encode_rollout(encoder, actions, rewards, next_obs, starts, torch.zeros_like(hidden))
    assert (got[:, 4] - no_memory[:, 4]).abs().max() > 1e-4
    assert torch.allclose(got[17:, 1], no_memory[17:, 1], atol=1e-6)  # after its start, env 1 forgets the past
    # and the loss reaches every encoder parameter
    got.pow(2).sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def run(script, tmp_path, *flags, timeout=300):
    cmd = [sys.executable, os.path.join(ROOT, script), *flags]
    out = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if not d.name.endswith("-eval")]
    return run_dir


def read_metric(run_dir, name):
    rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    return [float(r[3]) for r in rows if r[2] == name]


def env_states(rollout):
    """Each env's position, goal, and returns so far, from a checkpoint's pickled envs."""
    unpickled = pickle.loads(rollout["envs"])
    return [(env.unwrapped._pos.tolist(), env.unwrapped.get_task().tolist(), env.returns.tolist()) for env in unpickled]


@pytest.mark.parametrize("script", ["rl2_hyper.py", "rl2_standard.py"])
def test_rollout_split_over_two_iterations_gives_the_same_actions(script, tmp_path):
    """No updates (precollection covers the budget): 50 steps rolled out as two iterations of 25 must leave every env
    where one iteration of 50 leaves it: the same memory (which needs the hidden state carried across the iteration
    boundary) and the same env states (the same actions, which needs the latents carried too)."""
    flags = ["--env-id", "GridNaviDense", "--num-envs", "4", "--total-timesteps", "200", "--precollect-frames", "1000"]
    flags += ["--eval-every", "0", "--num-eval-tasks", "1", "--seed", "5", "--save-model"]
    flags += ["--hyper-init", "weight"] if "hyper" in script else []
    rollouts = []
    for num_steps in ("50", "25"):
        (tmp_path / num_steps).mkdir()
        run_dir = run(script, tmp_path / num_steps, *flags, "--num-steps", num_steps)
        rollouts.append(torch.load(run_dir / "checkpoint.pt", weights_only=False)["rollout"])
    whole, split = rollouts
    assert whole["hidden"].abs().sum() > 0 and torch.equal(whole["hidden"], split["hidden"])
    assert env_states(whole) == env_states(split) and torch.equal(whole["next_obs"], split["next_obs"])


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_the_first_latent_of_a_rollout_comes_from_the_updated_encoder(module):
    """The rollout's step-0 latent (`latent_before` at the iteration start) equals what `encode_rollout` recomputes for
    step 0 in the update, with the encoder after the last update, not the latent the old encoder produced."""
    torch.manual_seed(0)
    args = module.apply_preset(module.Args(env_id="CheetahDir"))
    encoder = module.Encoder(20, 6, args)
    T, N = 4, 3
    actions, rewards, next_obs = torch.randn(T, N, 6), torch.randn(T, N, 1), torch.randn(T, N, 20)
    hidden, starts = torch.randn(1, N, 256) * 0.3, torch.zeros(T, N, dtype=torch.bool)
    starts[0, 2] = True  # env 2 starts a new meta-episode with this rollout: the prior
    old_latent = module.latent_before(encoder, hidden[0], starts[0])
    with torch.no_grad():  # an update of the encoder
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    first = module.latent_before(encoder, hidden[0], starts[0])
    recomputed = module.encode_rollout(encoder, actions, rewards, next_obs, starts, hidden)[0]
    assert torch.allclose(first, recomputed, atol=1e-6)
    assert (first[:2] - old_latent[:2]).abs().min() > 1e-4  # the old encoder's latent would not match
    assert torch.allclose(first[2], encoder.prior(1)[0][0])


def encoder_weights(script_module, ckpt, env_id="GridNavi"):
    """(initial encoder, trained encoder) state dicts: the initial one rebuilt from the seed as the script does."""
    args = script_module.Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["args"].items()})
    torch.manual_seed(args.seed)
    env = envs.make_env(env_id, args.episodes_per_task)()
    script_module.Agent(env.observation_space, env.action_space, args)
    initial = script_module.Encoder(env.observation_space.shape[0], env.action_space.n, args).state_dict()
    return initial, ckpt["encoder"]


@pytest.mark.parametrize(
    "script, module, trained",
    [
        ("rl2_hyper.py", rl2_hyper, True),
        ("rl2_standard.py", rl2_standard, True),
        ("varibad_hyper.py", varibad_hyper, False),
    ],
)
def test_the_ppo_loss_trains_the_encoder_in_rl2_only(script, module, trained, tmp_path):
    flags = [
        "--env-id",
        "GridNavi",
        "--total-timesteps",
        "1920",
        "--precollect-frames",
        "0",
        "--eval-every",
        "0",
        "--num-eval-tasks",
        "1",
        "--save-model",
        "--seed",
        "11",
    ]
    if script.startswith("varibad"):
        flags += ["--num-vae-updates", "0"]  # only PPO updates: the encoder must not move
    run_dir = run(script, tmp_path, *flags)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    initial, final = encoder_weights(module, ckpt)
    # (allclose: the orthogonal GRU init goes through LAPACK, whose last bits depend on the thread count)
    changed = [k for k in initial if not torch.allclose(initial[k], final[k], atol=1e-6)]
    assert ("gru.weight_hh_l0" in changed) == trained, changed
    if trained:
        assert min(read_metric(run_dir, "losses/encoder_grad_norm")) > 0
    else:
        assert changed == []


@pytest.mark.parametrize("script", ["rl2_hyper.py", "rl2_standard.py"])
@pytest.mark.parametrize("env_id", ["GridNavi", "TMaze", "CheetahDir"])
def test_smoke(script, env_id, tmp_path):
    flags = [
        "--env-id",
        env_id,
        "--num-envs",
        "2",
        "--num-minibatches",
        "2",
        "--num-steps",
        "50",
        "--total-timesteps",
        "300",
        "--precollect-frames",
        "0",
        "--num-eval-tasks",
        "2",
        "--eval-every",
        "2",
        "--save-model",
    ]
    run_dir = run(script, tmp_path, *flags)
    result = json.loads((run_dir / "eval.json").read_text())
    assert np.isfinite(result["return"]) and len(result["returns"]) == 2
    assert read_metric(run_dir, "losses/policy_loss") and read_metric(run_dir, "eval/return_ep1")


def test_minibatches_must_be_whole_env_sequences(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "rl2_hyper.py"),
            "--env-id",
            "GridNavi",
            "--num-envs",
            "6",
            "--num-minibatches",
            "4",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "multiple of --num-minibatches" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_rl2_latent_is_not_normalised(module):
    """The RL2 policy sees the encoder's read-out as it is, with no running normaliser (nothing that could be updated)
    between them, so that the PPO gradient reaches the encoder unscaled; the state is normalised."""
    args = module.apply_preset(module.Args(env_id="CheetahDir"))
    env = envs.make_env("CheetahDir", 1)()
    agent = module.Agent(env.observation_space, env.action_space, args)
    latent, obs = 5 * torch.randn(6, 2 * args.latent_dim) + 3, torch.randn(6, 20)
    assert torch.equal(agent.latent_rms(latent), latent) and not hasattr(agent.latent_rms, "update")
    agent.obs_rms.update(obs * 4 + 2)
    assert not torch.allclose(agent.obs_rms(obs), obs)


def rollout_batch(module, **sizes):
    """The args, agent, encoder (parameters perturbed, so that the latents matter to the policy) and a rollout batch of
    6 steps x 4 envs whose actions and log-probabilities come from the latents the rollout computes step by step."""
    torch.manual_seed(0)
    T, N = 6, 4
    args = module.apply_preset(module.Args(env_id="GridNavi"))
    args = module.Args(**{**vars(args), "num_envs": N, "num_steps": T, **sizes})
    env = envs.make_env("GridNavi", args.episodes_per_task)()
    agent, encoder = module.Agent(env.observation_space, env.action_space, args), module.Encoder(3, 5, args)
    with torch.no_grad():
        for param in [*agent.parameters(), *encoder.parameters()]:
            param.add_(0.3 * torch.randn_like(param))
    obs = torch.randint(0, 5, (T, N, 3)).float()
    enc_actions = torch.eye(5)[torch.randint(0, 5, (T, N))]
    raw_rewards, enc_next_obs = torch.randn(T, N, 1), torch.randint(0, 5, (T, N, 3)).float()
    starts, hidden = torch.zeros(T, N, dtype=torch.bool), torch.randn(1, N, args.encoder_gru_hidden_size) * 0.5
    starts[0, 1], starts[3, 2] = True, True
    with torch.no_grad():
        latents = step_by_step_latents(encoder, enc_actions, raw_rewards, enc_next_obs, starts, hidden)
        actions, logprobs, _ = agent.act(agent.features(obs.flatten(0, 1), latents.flatten(0, 1)))
    batch = dict(obs=obs, actions=actions.view(T, N), logprobs=logprobs.view(T, N), advantages=torch.randn(T, N))
    batch.update(returns=torch.randn(T, N), values=torch.randn(T, N), enc_actions=enc_actions, raw_rewards=raw_rewards)
    batch.update(enc_next_obs=enc_next_obs, starts=starts, hidden=hidden)
    return args, agent, encoder, batch


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_ppo_minibatches_recompute_the_latents_the_rollout_acted_on(module):
    """Each minibatch (whole env sequences, shuffled) re-runs the encoder; its latents must be the rollout's, step by
    step and env by env: with learning rates 0 every probability ratio is then 1, so nothing is clipped even at a
    clip range of 1e-4. A time-major / env-major mix-up, or the wrong envs' memory, gives ratios far from 1."""
    args, agent, encoder, batch = rollout_batch(module, num_minibatches=2, update_epochs=2, clip_coef=1e-4)
    optimizer = torch.optim.SGD(agent.parameters(), lr=0.0)
    encoder_optimizer = torch.optim.SGD(encoder.parameters(), lr=0.0)
    logs = module.ppo_update(agent, encoder, optimizer, encoder_optimizer, batch, args)
    assert logs["losses/clipfrac"] == 0.0 and abs(logs["losses/approx_kl"]) < 1e-8


@pytest.mark.parametrize("module", SCRIPTS, ids=lambda m: m.__name__)
def test_the_encoder_has_its_own_gradient_clip(module):
    """RL2's encoder gradient is clipped by --encoder-max-grad-norm on its own, not with the policy's: one SGD step
    of rate 1 moves the encoder's parameters by exactly that norm (its gradient is larger), the policy by its own."""
    args, agent, encoder, batch = rollout_batch(module, num_minibatches=1, update_epochs=1, encoder_max_grad_norm=1e-3)
    before = [torch.cat([p.detach().flatten().clone() for p in net.parameters()]) for net in (agent, encoder)]
    optimizer = torch.optim.SGD(agent.parameters(), lr=1.0)
    encoder_optimizer = torch.optim.SGD(encoder.parameters(), lr=1.0)
    logs = module.ppo_update(agent, encoder, optimizer, encoder_optimizer, batch, args)
    after = [torch.cat([p.detach().flatten() for p in net.parameters()]) for net in (agent, encoder)]
    assert logs["losses/encoder_grad_norm"] > 1e-2  # the gradient before the clip
    assert (after[1] - before[1]).norm().item() == pytest.approx(1e-3, rel=1e-3)
    assert (after[0] - before[0]).norm().item() == pytest.approx(args.max_grad_norm, rel=1e-3)  # larger too
