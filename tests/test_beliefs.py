"""beliefs.py: it plays the held-out tasks as the scripts' evaluation does, and its figures show what they say."""

import os

import numpy as np
import pytest
import torch
from conftest import generate

import beliefs
import envs
import rl2_hyper
import rl2_standard
import varibad_hyper
import varibad_standard

MODULES = {m.__name__: m for m in (varibad_standard, varibad_hyper, rl2_standard, rl2_hyper)}


def build(module, env_id, seed=0, **overrides):
    """The script's args, agent, encoder and decoder (VariBAD) for env_id, every parameter perturbed so that the
    policy, the latents and the generated weights depend on what the encoder saw (as after training)."""
    args = module.apply_preset(module.Args(env_id=env_id))
    args = module.Args(**{**vars(args), "num_eval_tasks": 3, **overrides})
    env = envs.make_env(env_id, args.episodes_per_task)()
    obs_dim = env.observation_space.shape[0]
    action_dim = envs.action_vectors(env.action_space.sample(), env.action_space).size
    torch.manual_seed(seed)
    nets = [module.Agent(env.observation_space, env.action_space, args), module.Encoder(obs_dim, action_dim, args)]
    if hasattr(module, "Decoder"):
        nets.append(module.Decoder(obs_dim, action_dim, args))
    env.close()
    with torch.no_grad():
        for net in nets:
            for param in net.parameters():
                param.add_(0.3 * torch.randn_like(param))
    return args, *nets


def save(path, module, args, agent, encoder, decoder=None):
    ckpt = dict(script=f"{module.__name__}.py", run_name="test-run", args=vars(args), agent=agent.state_dict())
    ckpt.update(encoder=encoder.state_dict(), **({"decoder": decoder.state_dict()} if decoder is not None else {}))
    torch.save(ckpt, path)
    return str(path)


@pytest.mark.parametrize(
    "name, env_id",
    [*((name, "GridNavi") for name in MODULES), ("varibad_hyper", "CheetahDir"), ("rl2_standard", "CheetahDir")],
)
def test_the_tool_plays_as_the_evaluation_and_writes_its_figures(tmp_path, name, env_id):
    module = MODULES[name]
    overrides = dict(num_eval_tasks=2) if env_id == "CheetahDir" else {}
    args, agent, encoder, *decoder = build(module, env_id, **overrides)
    beliefs.main([save(tmp_path / "checkpoint.pt", module, args, agent, encoder, *decoder), "--num-tasks", "2"])

    tasks = envs.evaluation_tasks(env_id, args.num_eval_tasks, args.eval_seed)
    returns = module.evaluate(agent.eval(), encoder.eval(), args, tasks, torch.device("cpu"))[0]["returns"]
    data = np.load(tmp_path / "beliefs.npz")
    np.testing.assert_array_equal(data["returns"], returns)  # the same meta-episodes as the script's evaluation
    expected = {"beliefs_latent.png", "beliefs.npz", "checkpoint.pt"}
    grid_decoder = name.startswith("varibad") and env_id == "GridNavi"
    expected |= {"beliefs_grid.png", "beliefs_grid.gif"} if grid_decoder else set()
    expected |= {"hypernetwork.png"} if name.endswith("hyper") else set()
    assert set(os.listdir(tmp_path)) == expected
    T, steps = data["latent"].shape[1], data["steps"]
    assert T == steps.max() and data["latent"].shape[2] == 2 * args.latent_dim
    assert (data["episode"][:, -1] == args.episodes_per_task - 1).all()  # every inner episode was counted
    key = "position" if env_id == "GridNavi" else "velocity"
    assert np.isfinite(data[key]).all() and (key != "position" or np.isin(data[key], np.arange(5)).all())


def test_the_grid_heatmap_is_the_decoders_per_cell_probability_as_its_loss_reads_the_cells():
    """Cell (x, y) of the heatmap is p(r = 1) for a transition into (x, y), as the decoder's training loss scores
    it: its reward NLL for a reward of 1 there is -log of the heatmap's value."""
    args, _, _, decoder = build(varibad_hyper, "GridNavi", seed=3)
    latents = torch.randn(4, 2 * args.latent_dim)
    heatmaps = beliefs.grid_beliefs(decoder, latents.numpy(), args.latent_dim)  # (4, y, x)
    assert heatmaps.shape == (4, 5, 5) and not np.allclose(heatmaps.sum((1, 2)), 1)  # independent per cell
    for n, latent in enumerate(latents):
        for x in range(5):
            for y in range(5):
                next_obs = torch.tensor([x, y, 0.0]).view(1, 1, 1, 3)
                one, valid = torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool)
                m = latent[: args.latent_dim].view(1, 1, -1)
                nll, _ = decoder.losses(m, torch.zeros_like(next_obs), None, one, next_obs, valid)
                assert np.isclose(heatmaps[n, y, x], np.exp(-nll.item()), rtol=1e-5)


def test_the_weight_figure_projects_the_generated_weights_exactly():
    """hypernetwork_weights works with R of A = QR instead of the 256 x 256 generated matrices: its distances and
    principal components equal those of the matrices that the actor's hypernetwork generates."""
    args, agent, _ = build(varibad_hyper, "GridNavi", seed=5)[:3]
    e = torch.tanh(torch.randn(2, 4, args.policy_latent_embedding_dim))
    e[:, 0] = e[0, 0]  # every task starts at the prior's e
    e[1, 3] = float("nan")  # the second task ended a step earlier
    coords, explained, distance = beliefs.hypernetwork_weights(agent, e.numpy())

    with torch.no_grad():
        valid = ~torch.isnan(e[..., 0])
        weights = generate(agent.actor, e[valid])[0][0].flatten(1).double()  # (points, 256 * 256)
        prior = weights[0]
        expected = (weights - prior).norm(dim=1) / prior.norm()
        np.testing.assert_allclose(distance[valid.numpy()], expected.numpy(), rtol=1e-6, atol=1e-6)
        U, S, _ = torch.linalg.svd(weights - weights.mean(0), full_matrices=False)
    pcs = (U[:, :2] * S[:2]).numpy()
    got = coords[valid.numpy()]
    signs = np.sign((got * pcs).sum(0))  # a principal component's sign is arbitrary
    np.testing.assert_allclose(got * signs, pcs, rtol=1e-5, atol=1e-6 * np.abs(pcs).max())
    np.testing.assert_allclose(explained, (S[:2] ** 2 / (S**2).sum()).numpy(), rtol=1e-6)
    assert np.isnan(coords[1, 3]).all() and np.isnan(distance[1, 3])


def test_the_tool_says_what_is_wrong_with_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        beliefs.main([str(tmp_path / "notes.pt")])
    torch.save({"agent": {}}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a checkpoint of one of"):
        beliefs.main([str(tmp_path / "other.pt")])
