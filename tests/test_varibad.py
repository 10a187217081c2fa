"""varibad_standard.py and varibad_hyper.py: their parts imported as modules (the shared blocks once, the Agent of
both), and the whole scripts run with tiny budgets. Hypernetwork specifics: test_hypernetwork.py."""

import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
import varibad_hyper
import varibad_standard
import varibad_standard as vs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_presets_cover_every_env_and_apply_paper_values():
    assert set(vs.PRESETS) == set(envs.ENV_IDS)
    grid = vs.apply_preset(vs.Args(env_id="GridNavi"))
    assert (grid.num_envs, grid.num_steps, grid.total_timesteps, grid.clip_coef, grid.ent_coef) == (
        16,
        60,
        4_000_000,
        0.05,
        0.1,
    )
    assert (grid.episodes_per_task, grid.reward_decoder, grid.action_embedding_size) == (4, "grid", 0)
    ant = vs.apply_preset(vs.Args(env_id="AntDir"))
    assert (ant.num_steps, ant.num_minibatches, ant.policy_latent_embedding_dim, ant.kl_weight, ant.adam_eps) == (
        200,
        1,
        10,
        0.1,
        1e-8,
    )
    walker = vs.apply_preset(vs.Args(env_id="WalkerRandParams"))
    assert (walker.latent_dim, walker.reward_decoder, walker.state_decoder_layers, walker.episodes_per_task) == (
        10,
        "none",
        (256, 128),
        2,
    )


def test_command_line_flags_override_the_preset():
    args, ckpt = vs.parse_args(["--env-id", "CheetahDir", "--learning-rate", "1e-3", "--num-envs", "4"])
    assert ckpt is None
    assert (args.learning_rate, args.num_envs, args.num_steps, args.kl_weight) == (1e-3, 4, 400, 0.1)


def test_meta_episode_wrapper_counts_episodes_and_sets_the_done_bit():
    env = envs.make_env("GridNavi", 4)()
    assert env.observation_space.shape == (3,)
    obs, _ = env.reset(seed=0)
    task = env.unwrapped.get_task()
    assert obs[2] == 0
    inner_ends, steps = 0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated  # the grid has no terminal state: the meta-episode ends by the time limit
        np.testing.assert_array_equal(env.unwrapped.get_task(), task)  # one task for the whole meta-episode
        if "inner_final_obs" in info:
            inner_ends += 1
            assert obs[2] == 1 and info["inner_final_obs"][2] == 1
            np.testing.assert_array_equal(obs[:2], [0, 0])  # the new episode's start observation
        elif not truncated:
            assert obs[2] == 0
        if truncated:
            break
    assert (steps, inner_ends, env.episode) == (60, 3, 4)
    env.reset()
    assert env.episode == 0


def test_meta_episode_wrapper_draws_tasks_from_its_seed_and_takes_a_given_task():
    tasks = []
    for _ in range(2):
        env = envs.make_env("GridNavi", 4)()
        env.reset(seed=3)
        tasks.append(
            [tuple(env.unwrapped.get_task())] + [tuple((env.reset(), env.unwrapped.get_task())[1]) for _ in range(5)]
        )
    assert tasks[0] == tasks[1] and len(set(tasks[0])) > 1
    env.reset(options={"task": [4, 4]})
    np.testing.assert_array_equal(env.unwrapped.get_task(), [4, 4])


def test_single_episode_envs_get_no_done_bit_and_the_200th_step_arrives_truncated():
    env = envs.make_env("CheetahDir", 1)()
    assert env.observation_space.shape == (20,)
    env.reset(seed=0)
    for t in range(200):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (t == 199)


def test_a_fall_ends_the_meta_episode_terminated_and_the_wrapper_passes_raw_actions():
    env = envs.make_env("AntDir", 1)()
    env.reset(seed=0)
    env.unwrapped.set_state(np.r_[0, 0, 1.5, 1, 0, 0, 0, np.zeros(8)], env.unwrapped.init_qvel)  # torso above 1.0
    _, reward, terminated, truncated, info = env.step(np.full(8, 3.0))
    assert terminated and not truncated
    assert info["reward_ctrl"] == pytest.approx(-36.0)  # 0.5 * 3^2 * 8: the cost of the unclipped action


def test_proper_time_limits_only_on_mujoco_and_meta_world():
    for env_id in envs.ENV_IDS:
        args = vs.apply_preset(vs.Args(env_id=env_id))
        assert args.proper_time_limits == (env_id not in ("GridNavi", "GridNaviDense", "GridNaviShow", "TMaze")), env_id


def reference_gae(rewards, values, terminals, final_values, next_value, gamma, lam):
    """Plain per-env loop: A_t = sum_l (gamma lam)^l delta_t+l, stopping after a terminal step, where the next state's
    value is the final state's (0 unless a time limit cut the meta-episode there)."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for u in range(t, T):
                next_v = next_value[n] if u == T - 1 else values[u + 1, n]
                next_v = final_values[u, n] if terminals[u, n] else next_v
                delta = rewards[u, n] + gamma * next_v - values[u, n]
                total += discount * delta
                if terminals[u, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_equals_a_plain_reference_loop():
    rng = np.random.default_rng(0)
    T, N = 37, 5
    rewards, values, next_value = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=N)
    terminals = (rng.random((T, N)) < 0.1).astype(float)
    final_values = terminals * (rng.random((T, N)) < 0.5) * rng.normal(size=(T, N))  # some ends are time-limit cuts
    inputs = (torch.tensor(x) for x in (rewards, values, terminals, final_values, next_value))
    adv, ret = vs.compute_gae(*inputs, SimpleNamespace(gamma=0.97, gae_lambda=0.9))
    expected = reference_gae(rewards, values, terminals, final_values, next_value, 0.97, 0.9)
    np.testing.assert_allclose(adv.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), expected + values, atol=1e-10)


def test_a_truncated_step_bootstraps_from_its_final_value_and_a_terminal_one_does_not():
    rewards, values = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    terminals, final_values, next_value = (
        torch.tensor([[1.0, 1.0]]),
        torch.tensor([[2.0, 0.0]]),
        torch.tensor([[9.0, 9.0]]),
    )
    adv, _ = vs.compute_gae(
        rewards, values, terminals, final_values, next_value, SimpleNamespace(gamma=0.9, gae_lambda=0.95)
    )
    np.testing.assert_allclose(adv.numpy(), [[1.0 + 0.9 * 2.0 - 0.5, 1.0 - 0.5]])  # never the next task's 9.0


def fake_batch(args, obs_dim, action_dim, lengths, H):
    B = len(lengths)
    torch.manual_seed(0)
    obs = torch.randint(0, 5, (H, B, obs_dim)).float()
    next_obs = torch.randint(0, 5, (H, B, obs_dim)).float()
    actions = torch.randn(H, B, action_dim)
    rewards = torch.where(torch.rand(H, B, 1) < 0.2, 1.0, -0.1)
    return obs, actions, rewards, next_obs, torch.tensor(lengths)


ELBO_DIMS = {
    "GridNavi": (3, 5),
    "CheetahDir": (20, 6),
    "WalkerRandParams": (18, 6),
    "MetaWorldML10": (40, 4),
    "TMaze": (5, 4),
}


@pytest.mark.parametrize("env_id", ELBO_DIMS)
def test_elbo_terms_are_finite_scalars_and_train_the_vae(env_id):
    args = vs.apply_preset(vs.Args(env_id=env_id))
    obs_dim, action_dim = ELBO_DIMS[env_id]
    H = args.episodes_per_task * gym.spec(env_id).max_episode_steps
    encoder, decoder = vs.Encoder(obs_dim, action_dim, args), vs.Decoder(obs_dim, action_dim, args)
    batch = fake_batch(args, obs_dim, action_dim, [H, H - 7, 3], H)
    terms = vs.elbo_terms(encoder, decoder, batch, args)
    for term in terms:
        assert term.shape == () and torch.isfinite(term)
    assert terms[2] > 0  # the KL of the prior to N(0, I) is not zero at init
    assert (terms[0] > 0) == (args.reward_decoder != "none")  # Walker: state decoder only
    assert (terms[1] > 0) == bool(args.state_decoder_layers)  # Walker and ML10
    # padding beyond a meta-episode's length does not count
    padded = list(batch)
    padded[2] = batch[2].clone()
    padded[2][H - 5 :, 1] = 123.0
    torch.manual_seed(1)
    a = vs.elbo_terms(encoder, decoder, batch, args, generator=torch.Generator().manual_seed(0))
    b = vs.elbo_terms(encoder, decoder, padded, args, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.stack(a), torch.stack(b))


def authors_kl(kl, subsample_elbos, rng):
    """The authors' vae.py reduction, transcribed: kl (H + 1, B) of equal-length meta-episodes; with subsampling,
    `kl[elbo_indices]` with E * B indices drawn from 0..H (rows for all B meta-episodes), summed over everything."""
    if subsample_elbos:
        elbo_indices = torch.as_tensor(rng.integers(0, kl.shape[0], subsample_elbos * kl.shape[1]))
        kl = kl[elbo_indices]
    return kl.sum(dim=0).sum(dim=0).mean()


@pytest.mark.parametrize("env_id", ["GridNavi", "CheetahDir"])
def test_elbo_kl_equals_the_authors_reduction(env_id):
    """GridNavi (all t): equal on a fixed batch. CheetahDir (50 t drawn per meta-episode, B = 10): equal in
    expectation, B^2 = 100 times a per-meta-episode average, over 300 draws (meta-episodes shortened to 30 steps and
    one decode per term, for speed: neither changes the KL's reduction)."""
    args = vs.apply_preset(vs.Args(env_id=env_id))
    obs_dim, action_dim = ELBO_DIMS[env_id]
    H = args.episodes_per_task * gym.spec(env_id).max_episode_steps if env_id == "GridNavi" else 30
    if args.vae_subsample_decodes:
        args = dataclasses.replace(args, vae_subsample_decodes=1)
    B = args.vae_batch_num_trajs
    torch.manual_seed(0)
    encoder, decoder = vs.Encoder(obs_dim, action_dim, args), vs.Decoder(obs_dim, action_dim, args)
    batch = fake_batch(args, obs_dim, action_dim, [H] * B, H)
    with torch.no_grad():
        prior, hidden = encoder.prior(B)
        mu, logvar = torch.cat([prior.unsqueeze(0), encoder(*batch[1:4], hidden)[0]]).chunk(2, -1)
        zeros = torch.zeros_like(mu[:1])
        normal = lambda mean, logvar: torch.distributions.Normal(mean, (0.5 * logvar).exp())  # noqa: E731
        kl = torch.distributions.kl_divergence(  # KL(q_t || q_t-1), q_-1 = N(0, I): (H + 1, B)
            normal(mu, logvar), normal(torch.cat([zeros, mu[:-1]]), torch.cat([zeros, logvar[:-1]]))
        ).sum(-1)
        draws = 300 if args.vae_subsample_elbos else 1
        ours = np.mean(
            [vs.elbo_terms(encoder, decoder, batch, args, torch.Generator().manual_seed(s))[2] for s in range(draws)]
        )
        rng = np.random.default_rng(0)
        theirs = np.mean([authors_kl(kl, args.vae_subsample_elbos, rng) for _ in range(draws)])
    per_meta_episode = kl.sum(0).mean().item() * (args.vae_subsample_elbos / (H + 1) if args.vae_subsample_elbos else 1)
    if args.vae_subsample_elbos:
        assert ours == pytest.approx(theirs, rel=0.02) and ours == pytest.approx(B * B * per_meta_episode, rel=0.02)
    else:
        assert ours == pytest.approx(theirs, rel=1e-5) and ours == pytest.approx(B * per_meta_episode, rel=1e-5)


@pytest.mark.parametrize("module", [varibad_standard, varibad_hyper], ids=lambda m: m.__name__)
def test_reward_normaliser_is_the_authors_vecnormalize(module):
    """r / sqrt(Var(discounted return) + 1e-8), clipped; the return accumulator is per env, reset at a meta-episode
    end *before* the statistics are updated (the authors' order: the finished return enters them as 0)."""
    norm = module.RewardNormalizer(2, 0.9, 10.0)
    seen = []
    for rewards, ends in [([1.0, 2.0], [False, False]), ([1.0, 2.0], [False, True]), ([3.0, -1.0], [False, False])]:
        out = norm(np.array(rewards), np.array(ends))
        seen.append(norm.returns.copy())
        var = np.var(np.concatenate(seen), ddof=0)  # the running variance, up to its 1e-4 prior count
        np.testing.assert_allclose(out, np.clip(np.array(rewards) / np.sqrt(var + 1e-8), -10, 10), rtol=1e-3)
    np.testing.assert_allclose(seen[1], [1.9, 0.0])  # env 1's meta-episode ended: its return restarts from 0
    np.testing.assert_allclose(seen[2], [1.9 * 0.9 + 3.0, -1.0])
    # the clip: the first reward of 1e6 is 100 running stds (the prior's count of 1e-4 keeps the variance at 1e8)
    assert module.RewardNormalizer(1, 0.9, 10.0)(np.array([1e6]), np.array([False]))[0] == 10.0
    assert module.RewardNormalizer(1, 0.9, 200.0)(np.array([1e6]), np.array([False]))[0] == pytest.approx(
        100.0, rel=1e-3
    )


def test_meta_world_success_is_the_papers_formula(monkeypatch):
    """The authors' metalearner.py: per episode, the fraction of tasks with a success in it; then the mean over
    episodes. Tasks 0-2 (rows) over 4 episodes: 2/3, 0, 1/3, 1/3 -> 1/3 (solved in any episode: 1.0)."""
    successes = np.array([[1, 0, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0.0]])
    args = dataclasses.replace(vs.apply_preset(vs.Args(env_id="MetaWorldML1")), episodes_per_task=2)
    monkeypatch.setattr(envs, "run_meta_episodes", lambda *_: (np.zeros((3, 4)), successes))  # the episodes played
    encoder = SimpleNamespace(prior=lambda n: (None, None))
    summary, metrics = vs.evaluate(None, encoder, args, [0, 1, 2], torch.device("cpu"))
    assert summary["success"] == metrics["eval/success"] == pytest.approx(1 / 3)
    success_ret = torch.tensor(successes) * 7  # theirs counts success steps per episode
    assert summary["success"] == pytest.approx((success_ret > 0).float().mean(dim=0).mean().item())
    assert metrics["eval/success_any"] == pytest.approx(2 / 3)  # solved within the first 2 episodes: tasks 0 and 1


def test_each_decoder_has_its_own_embeddings_as_the_authors():
    """ML10 decodes rewards and states: two sets of state / action embeddings; Walker (states only) and CheetahDir
    (rewards only) one each, and the state decoder's loss does not depend on the reward decoder's embeddings."""
    sizes = {}
    for env_id in ("MetaWorldML10", "WalkerRandParams", "CheetahDir"):
        args = vs.apply_preset(vs.Args(env_id=env_id))
        obs_dim, action_dim = ELBO_DIMS[env_id]
        decoder = vs.Decoder(obs_dim, action_dim, args)
        sizes[env_id] = sum(hasattr(decoder, name) for name in ("reward_embed", "state_embed"))
    assert sizes == {"MetaWorldML10": 2, "WalkerRandParams": 1, "CheetahDir": 1}
    args = vs.apply_preset(vs.Args(env_id="MetaWorldML10"))
    decoder = vs.Decoder(40, 4, args)
    m, obs, actions, rewards = (
        torch.randn(1, 7, 5),
        torch.randn(1, 1, 7, 40),
        torch.randn(1, 1, 7, 4),
        torch.randn(1, 1, 7, 1),
    )
    decoder.losses(m, obs, actions, rewards, obs, torch.ones(1, 1, 7, dtype=torch.bool))[1].backward()
    assert decoder.reward_embed[0].weight.grad is None and decoder.state_embed[0].weight.grad.abs().sum() > 0


def test_grid_reconstruction_equals_the_plain_sum_of_bernoulli_losses():
    """The grid decoder's NLL equals sum_t sum_i BCE(logit_t[cell(s'_i)], 1[r_i = 1]) / B, decoded one at a time."""
    args = vs.apply_preset(vs.Args(env_id="GridNavi"))
    encoder, decoder = vs.Encoder(3, 5, args), vs.Decoder(3, 5, args)
    lengths = [60, 45, 12]
    batch = fake_batch(args, 3, 5, lengths, 60)
    rec, _, _ = vs.elbo_terms(encoder, decoder, batch, args, generator=torch.Generator().manual_seed(4))
    # the same posterior samples, decoded one transition at a time
    g = torch.Generator().manual_seed(4)
    prior, hidden = encoder.prior(3)
    posterior, _ = encoder(batch[1], batch[2], batch[3], hidden)
    mu, logvar = torch.cat([prior.unsqueeze(0), posterior]).chunk(2, -1)
    m = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
    total = 0.0
    for b, length in enumerate(lengths):
        for t in range(length + 1):
            logits = decoder.reward(m[t, b])
            for i in range(length):
                cell = int(batch[3][i, b, 0].round() * 5 + batch[3][i, b, 1].round())
                label = float(batch[2][i, b, 0] == 1.0)
                total += torch.nn.functional.binary_cross_entropy_with_logits(logits[cell], torch.tensor(label))
    assert torch.allclose(rec, total / 3, rtol=1e-4)


def test_a_state_decoder_beside_the_grid_decoder_is_trained():
    args = dataclasses.replace(vs.apply_preset(vs.Args(env_id="GridNavi")), state_decoder_layers=(16,))
    encoder, decoder = vs.Encoder(3, 5, args), vs.Decoder(3, 5, args)
    rec_reward, rec_state, _ = vs.elbo_terms(encoder, decoder, fake_batch(args, 3, 5, [60, 12], 60), args)
    rec_state.backward()
    assert rec_reward > 0 and rec_state > 0 and decoder.state[0].weight.grad.abs().sum() > 0


def test_encoder_prior_is_one_gru_step_on_zero_input():
    args = vs.apply_preset(vs.Args(env_id="CheetahDir"))
    encoder = vs.Encoder(20, 6, args)
    with torch.no_grad():  # as after training: with the zero initial biases, one step from zero stays at zero
        encoder.gru.bias_ih_l0.normal_()
    prior, hidden = encoder.prior(3)
    assert prior.shape == (3, 2 * args.latent_dim) and torch.all(hidden == 0)  # real sequences start from zero
    out, _ = encoder.gru(torch.zeros(1, 3, encoder.gru.input_size), torch.zeros(1, 3, encoder.gru.hidden_size))
    assert torch.equal(prior, encoder.readout(out[0]))  # the read-out of one GRU step on a zero input
    assert not torch.allclose(prior, encoder.readout(torch.zeros(3, encoder.gru.hidden_size)))  # not of the zero state


def test_trajectory_buffer_keeps_the_newest_meta_episodes_and_samples_them_padded():
    dims = (2, 1, 1, 2)  # obs, action, reward, next obs
    buffer = vs.TrajectoryBuffer(3, dims, seed=0)
    trajs = [torch.full((length, 6), float(i)) for i, length in enumerate([4, 2, 5, 3, 1])]
    for n, traj in enumerate(trajs):
        buffer.trajs.append(traj)
        assert len(buffer.trajs) == min(n + 1, 3)  # it grows to its capacity, then stays there
    assert [t[0, 0].item() for t in buffer.trajs] == [2.0, 3.0, 4.0]  # 0 and 1, the oldest, were dropped in turn
    copy = vs.TrajectoryBuffer(3, dims, seed=1)
    copy.load_state_dict(buffer.state_dict())
    obs, actions, rewards, next_obs, lengths = buffer.sample(3, torch.device("cpu"))
    assert obs.shape == (5, 3, 2) and actions.shape == rewards.shape == (5, 3, 1) and next_obs.shape == (5, 3, 2)
    assert sorted(lengths.tolist()) == [1, 3, 5]  # all three, each once (no replacement)
    for b, length in enumerate(lengths.tolist()):
        which = {1: 4.0, 3: 3.0, 5: 2.0}[length]
        assert torch.all(obs[:length, b] == which) and torch.all(obs[length:, b] == 0)  # zero-padded after its end
    again = copy.sample(3, torch.device("cpu"))  # a restored buffer draws the same batches
    assert all(torch.equal(x, y) for x, y in zip(again, (obs, actions, rewards, next_obs, lengths)))


def test_an_iteration_starts_from_the_unfinished_meta_episodes_re_encoded():
    """encode_unfinished gives each env the latent and hidden state that the current encoder reaches by stepping
    through that env's unfinished meta-episode from the start; the prior for an env with none."""
    args = vs.apply_preset(vs.Args(env_id="CheetahDir"))
    encoder, dims = vs.Encoder(20, 6, args), (20, 6, 1, 20)
    rng = np.random.default_rng(0)
    running = [[rng.normal(size=47).astype(np.float32) for _ in range(n)] for n in (3, 0, 5)]
    latent, hidden = vs.encode_unfinished(encoder, running, dims, torch.device("cpu"))
    with torch.no_grad():
        for n, transitions in enumerate(running):
            want, h = encoder.prior(1)
            for transition in transitions:
                _, action, reward, next_obs = torch.tensor(transition).split(dims)
                want, h = encoder.step(action.view(1, -1), reward, next_obs.view(1, -1), h)
            torch.testing.assert_close(latent[n : n + 1], want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(hidden[:, n : n + 1], h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vs", [varibad_standard, varibad_hyper], ids=lambda m: m.__name__)
@pytest.mark.parametrize("env_id", ["GridNavi", "CheetahDir"])
def test_agent_interface_and_checkpoint_round_trip_reproduces_actions(env_id, vs, tmp_path):
    args = vs.apply_preset(vs.Args(env_id=env_id))
    env = envs.make_env(env_id, args.episodes_per_task)()
    agent = vs.Agent(env.observation_space, env.action_space, args)
    obs = torch.randn(8, env.observation_space.shape[0])
    latent = torch.randn(8, 2 * args.latent_dim)
    agent.obs_rms.update(obs * 3 + 1)
    agent.latent_rms.update(latent * 2)
    action, logprob, entropy, value = agent.get_action_and_value(obs, latent)
    assert logprob.shape == entropy.shape == (8,) and value.shape == (8, 1)
    assert agent.get_value(obs, latent).shape == (8, 1)
    vs.save_checkpoint(tmp_path / "ckpt.pt", {"agent": agent})
    assert not (tmp_path / "ckpt.pt.tmp").exists()
    restored = vs.Agent(env.observation_space, env.action_space, args)
    restored.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=False)["agent"])
    torch.manual_seed(5)
    a1 = agent.get_action_and_value(obs, latent)
    torch.manual_seed(5)
    a2 = restored.get_action_and_value(obs, latent)
    for x, y in zip(a1, a2):
        assert torch.equal(x, y)
    d1 = agent.act(agent.features(obs, latent), deterministic=True)[0]
    assert torch.equal(d1, restored.act(restored.features(obs, latent), deterministic=True)[0])


def test_standard_init_normc_rows_and_heads():
    args = vs.apply_preset(vs.Args(env_id="CheetahDir"))
    env = envs.make_env("CheetahDir", 1)()
    agent = vs.Agent(env.observation_space, env.action_space, args)
    for layer in (agent.actor[0], agent.actor[2], agent.critic[0], agent.critic[2]):
        assert torch.allclose(layer.weight.norm(dim=1), torch.full((layer.out_features,), 5 / 3))
        assert torch.all(layer.bias == 0)
    assert torch.allclose(agent.actor[4].weight.norm(dim=1), torch.ones(6))  # continuous head: normc, gain 1


def run_script(tmp_path, *flags, timeout=240, script="varibad_standard.py"):
    cmd = [sys.executable, os.path.join(ROOT, script), *flags]
    return subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT},
    )


@pytest.mark.parametrize("script", ["varibad_standard.py", "varibad_hyper.py"])
def test_smoke_gridnavi_trains_evaluates_and_saves(tmp_path, script):
    flags = [
        "--env-id",
        "GridNavi",
        "--total-timesteps",
        "2880",
        "--precollect-frames",
        "960",
        "--eval-every",
        "2",
        "--save-model",
        "--save-every",
        "2",
        "--seed",
        "3",
    ]
    out = run_script(tmp_path, *flags, script=script)
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = (run_dir / "metrics.csv").read_text()
    for name in (
        "charts/SPS",
        "charts/return",
        "charts/return_ep4",
        "losses/vae_kl",
        "losses/policy_loss",
        "eval/return",
        "eval/return_ep1",
    ):
        assert f",{name}," in metrics
    result = json.loads((run_dir / "eval.json").read_text())
    assert len(result["returns"]) == 21 and len(result["returns"][0]) == 4  # all 21 goals, 4 episodes each
    returns = np.array(result["returns"])  # the summary is the per-task, per-episode returns' mean
    assert result["return"] == pytest.approx(returns.sum(1).mean()) and result["return_per_episode"] == pytest.approx(
        returns.mean(0).tolist()
    )
    ckpt = run_dir / "checkpoint.pt"
    buffer = torch.load(ckpt, weights_only=False)["vae_buffer"]  # obs 3, action 5, reward 1, next obs 3 per step
    rewards = buffer["steps"][:, 8]
    assert len(buffer["lengths"]) > 0 and set(rewards.tolist()) <= {np.float32(-0.1), 1.0}  # raw, not normalised
    out = run_script(tmp_path, str(ckpt), "--capture-video", script="evaluate.py")  # the script's own evaluation
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["returns"] == result["returns"]
    videos = list((tmp_path / "videos" / f"{run_dir.name}-eval").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000  # resuming: test_reliability.py, for all four scripts


def test_smoke_cheetahdir(tmp_path):
    out = run_script(
        tmp_path,
        "--env-id",
        "CheetahDir",
        "--num-envs",
        "2",
        "--num-steps",
        "200",
        "--num-minibatches",
        "2",
        "--total-timesteps",
        "1200",
        "--precollect-frames",
        "400",
        "--num-eval-tasks",
        "2",
        "--eval-every",
        "0",
        "--save-model",
    )
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = (run_dir / "metrics.csv").read_text()
    assert ",losses/vae_reconstruction_reward," in metrics and ",eval/return_ep1," in metrics
    # MuJoCo envs are not pickled: a resume warns and starts fresh meta-episodes, with the networks and buffer restored
    ckpt = str(run_dir / "checkpoint.pt")
    out = run_script(tmp_path, "--env-id", "CheetahDir", "--resume", ckpt, "--total-timesteps", "1600")
    assert out.returncode == 0, out.stderr
    assert "CheetahDir envs cannot be restored exactly (not pickled): fresh meta-episodes" in out.stderr
    assert json.loads((run_dir / "eval.json").read_text())["global_step"] == 1600


@pytest.mark.parametrize(
    "script, env_id",
    [("varibad_standard.py", env_id) for env_id in envs.ENV_IDS]
    + [("varibad_hyper.py", "GridNavi"), ("varibad_hyper.py", "AntDir")],
)
def test_every_benchmark_runs_a_short_budget(script, env_id, tmp_path):
    """One iteration as long as a meta-episode at its longest: the VAE then trains on one finished meta-episode."""
    longest = gym.spec(env_id).max_episode_steps * envs.EPISODES_PER_TASK[env_id]
    flags = [
        "--num-envs",
        "1",
        "--num-steps",
        str(longest),
        "--num-minibatches",
        "2",
        "--total-timesteps",
        str(longest),
        "--precollect-frames",
        "0",
        "--num-eval-tasks",
        "1",
        "--vae-batch-num-trajs",
        "2",
        "--eval-every",
        "0",
    ]
    preset = vs.apply_preset(vs.Args(env_id=env_id))
    if preset.num_eval_episodes:  # Meta-World evaluates 10 episodes (the papers'); 3 here show the setting is used
        assert env_id.startswith("MetaWorld") and preset.num_eval_episodes == 10
        flags += ["--num-eval-episodes", "3"]
    out = run_script(tmp_path, "--env-id", env_id, *flags, script=script)
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = json.loads((run_dir / "eval.json").read_text())
    assert len(result["returns"][0]) == (3 if preset.num_eval_episodes else envs.EPISODES_PER_TASK[env_id])
    assert np.isfinite(result["return"])
    assert ",losses/vae_loss," in (run_dir / "metrics.csv").read_text()  # the VAE trained on real data


def test_unknown_env_id_is_one_clear_line(tmp_path):
    out = run_script(tmp_path, "--env-id", "GridNav")
    assert out.returncode != 0
    assert "unknown --env-id 'GridNav'" in out.stderr and "GridNavi" in out.stderr and "Traceback" not in out.stderr


def test_async_envs_give_the_same_training_data_as_sync_ones(tmp_path):
    """AsyncVectorEnv steps the same environments in subprocesses: with the same seed, the same returns."""
    flags = [
        "--env-id",
        "GridNavi",
        "--num-envs",
        "4",
        "--num-minibatches",
        "2",
        "--total-timesteps",
        "480",
        "--precollect-frames",
        "0",
        "--eval-every",
        "0",
        "--num-eval-tasks",
        "1",
        "--seed",
        "2",
    ]
    returns = []
    for extra in ([], ["--async-envs"]):
        (tmp_path / str(len(extra))).mkdir()
        out = run_script(tmp_path / str(len(extra)), *flags, *extra)
        assert out.returncode == 0, out.stderr
        (run_dir,) = (tmp_path / str(len(extra)) / "runs").iterdir()
        returns.append(
            [line for line in (run_dir / "metrics.csv").read_text().splitlines() if ",charts/return," in line]
        )
    assert len(returns[0]) == 2
    assert [r.split(",")[3] for r in returns[0]] == [r.split(",")[3] for r in returns[1]]


def test_async_envs_resume_with_fresh_meta_episodes(tmp_path):
    """Envs in subprocesses cannot be pickled with their state: a resumed --async-envs run says so and starts fresh
    meta-episodes, with the networks, buffer and generators restored, and runs to its new budget."""
    flags = ["--env-id", "GridNavi", "--num-envs", "4", "--num-minibatches", "2", "--precollect-frames", "0"]
    flags += ["--eval-every", "0", "--num-eval-tasks", "1", "--async-envs"]
    out = run_script(tmp_path, *flags, "--total-timesteps", "240", "--save-model")
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["rollout"] is None  # nothing to restore
    out = run_script(tmp_path, *flags, "--total-timesteps", "480", "--resume", str(run_dir / "checkpoint.pt"))
    assert out.returncode == 0, out.stderr
    assert "GridNavi envs cannot be restored exactly (not pickled): fresh meta-episodes" in out.stderr
    assert json.loads((run_dir / "eval.json").read_text())["global_step"] == 480


def test_every_layer_size_must_be_positive():
    with pytest.raises(SystemExit, match=r"--reward-decoder-layers is \(32, 0\); it must be > 0"):
        vs.parse_args(["--env-id", "GridNavi", "--reward-decoder-layers", "32", "0"])
