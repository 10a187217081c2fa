"""What the agent believes: belief, behaviour and hypernetwork figures from a checkpoint of any of the four scripts.

    python beliefs.py runs/GridNavi__varibad_hyper__1__1700000000/checkpoint.pt

The tool rebuilds the run's agent and task encoder with the script's own classes (it imports the script, as CleanRL's
evaluation helpers import the Agent they evaluate), plays one meta-episode on every held-out task exactly as the
script's evaluation does (`envs.run_meta_episodes`, deterministic actions, the latent updated after every step), and
writes into the checkpoint's folder (or --out):

- `beliefs_latent.png`, for the first --num-tasks tasks: the latent over the meta-episode (VariBAD: the posterior's
  mean +- one standard deviation per dimension; RL2: the latent) beside the behaviour: the path walked (grid worlds),
  the forward velocity against the target (MuJoCo), the hand and object path (Meta-World), else the return so far.
- `beliefs_grid.png` and `beliefs_grid.gif` (VariBAD on the grid worlds): for each task and episode, the reward
  decoder's probability of reward 1 in every cell, p(r = 1 | cell, mu_t), decoded from the posterior mean at the
  episode's first step (the GIF: at every step), with the path walked and the true goal. The 25 values are independent
  per-cell probabilities, not a distribution over the goal: they need not sum to 1.
- `hypernetwork.png` (hypernetwork scripts): the actor's generated first-layer weights W1(e_t) = A e_t + c for every
  held-out task at every step, projected on their two principal components, and their distance from the prior's
  weights, ||W1(e_t) - W1(e_0)|| / ||W1(e_0)||. Every task starts at the prior's latent, so at the same weights; the
  figure shows how far, and how differently per task, the hypernetwork moves the policy as the belief changes.
- `beliefs.npz`: the arrays behind the figures (latents, hypernetwork inputs, positions, heatmaps, returns).

A run that was tracked (--track) gets the figures in its wandb run as well (offline if wandb cannot connect).
"""

import argparse
import importlib
import os
import sys
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

import envs

SCRIPTS = ("varibad_standard.py", "varibad_hyper.py", "rl2_standard.py", "rl2_hyper.py")
GRID_SIZE = 5


def load_run(path):
    """(script module, args, agent, encoder, decoder or None, run name) of a checkpoint, with the script's classes."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a missing file, or not a checkpoint
        sys.exit(f"error: {path!r} is not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())})")
    if not isinstance(ckpt, dict) or ckpt.get("script") not in SCRIPTS:
        sys.exit(f"error: {path!r} is not a checkpoint of one of {', '.join(SCRIPTS)}")
    module = importlib.import_module(ckpt["script"][: -len(".py")])
    args = module.Args(**{k: v for k, v in ckpt["args"].items() if k in module.Args.__dataclass_fields__})
    env = envs.make_env(args.env_id, args.episodes_per_task)()
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    obs_dim, action_dim = obs_space.shape[0], envs.action_vectors(action_space.sample(), action_space).size
    agent, encoder = module.Agent(obs_space, action_space, args), module.Encoder(obs_dim, action_dim, args)
    agent.load_state_dict(ckpt["agent"])
    encoder.load_state_dict(ckpt["encoder"])
    decoder = None
    if "decoder" in ckpt:
        decoder = module.Decoder(obs_dim, action_dim, args)
        decoder.load_state_dict(ckpt["decoder"])
    return module, args, agent.eval(), encoder.eval(), decoder, ckpt["run_name"]


@torch.no_grad()
def play(agent, encoder, args, tasks, on_step=None):
    """One meta-episode per task, as the script's `evaluate` plays it; every step recorded (and passed to
    `on_step(i, env, reward, info)` if given, as `envs.run_meta_episodes` calls it). Returns a dict of arrays,
    (tasks, steps, ...) padded with NaN after a task's last step: obs, latent (what the policy saw before acting), e
    (the hypernetwork's input, hypernetwork scripts only), episode (the inner episode of each step), reward, position
    (grid worlds: the cell after the step; GridNaviShow shows the goal's cell for an episode that ends on the start
    cell, as the agent saw it), and per task the returns (tasks, episodes) and steps."""
    latent, hidden = encoder.prior(len(tasks))
    seen = dict(obs=[], latent=[], e=[])
    per_task = [dict(reward=[], ended=[], position=[], velocity=[]) for _ in tasks]

    def policy(obs, previous):
        nonlocal latent, hidden
        if previous is not None:
            latent, hidden = encoder.step(*(torch.as_tensor(x) for x in previous), hidden)
        features = agent.features(torch.as_tensor(obs, dtype=torch.float32), latent)
        seen["obs"].append(obs.copy())
        seen["latent"].append(latent.numpy().copy())
        if isinstance(features, tuple):  # the hypernetwork scripts' features: (state embedding, e)
            seen["e"].append(features[1].numpy().copy())
        return agent.act(features, deterministic=True)[0].numpy()

    def record_step(i, env, reward, info):
        if on_step is not None:
            on_step(i, env, reward, info)
        record = per_task[i]
        record["reward"].append(reward)
        record["ended"].append("inner_final_obs" in info)  # an inner episode ended here (not the last one)
        if args.env_id.startswith("GridNavi"):  # the agent's cell (before the reset, if one followed)
            cell = info["inner_final_obs"][:2] if "inner_final_obs" in info else env.unwrapped._pos
            record["position"].append(np.asarray(cell, dtype=np.float64))
        velocity = info.get("forward_velocity", info.get("x_velocity"))
        if velocity is not None:
            record["velocity"].append(velocity)

    k = args.num_eval_episodes or args.episodes_per_task
    returns, _, steps = envs.run_meta_episodes(args.env_id, tasks, k, args.eval_seed, policy, on_step=record_step)
    T = int(steps.max())
    out = {name: np.stack(values, 1) for name, values in seen.items() if values}  # (tasks, T, ...)
    for name in ("reward", "ended", "position", "velocity"):
        if per_task[0][name]:
            example = np.asarray(per_task[0][name][0], dtype=np.float64)
            padded = np.full((len(tasks), T, *example.shape), np.nan)
            for i, record in enumerate(per_task):
                padded[i, : steps[i]] = np.asarray(record[name], dtype=np.float64)
            out[name] = padded
    for name in ("obs", "latent", "e"):
        if name in out:
            out[name] = out[name].astype(np.float64)
            for i in range(len(tasks)):
                out[name][i, steps[i] :] = np.nan
    ended = np.nan_to_num(out.pop("ended"))
    out["episode"] = np.concatenate([np.zeros((len(tasks), 1)), np.cumsum(ended, 1)[:, :-1]], 1).astype(np.int64)
    out["returns"], out["steps"] = returns, steps
    return out


@torch.no_grad()
def grid_beliefs(decoder, latents, latent_dim):
    """The grid reward decoder's p(reward = 1 | cell, mu) for latents (..., 2 * latent_dim) as (..., y, x) maps: an
    independent Bernoulli per cell (the decoder's cell index is x * 5 + y), decoded from the posterior mean mu."""
    mu = torch.as_tensor(latents[..., :latent_dim], dtype=torch.float32)
    p = torch.sigmoid(decoder.reward(mu)).numpy()
    return p.reshape(*p.shape[:-1], GRID_SIZE, GRID_SIZE).swapaxes(-1, -2)  # [..., x, y] -> [..., y, x]


def hypernetwork_weights(agent, e):
    """Principal-component coordinates (tasks, T, 2), their explained variance, and the relative distance from the
    prior's weights (tasks, T) of the actor's generated first-layer weights W1(e) = A e + c. W1 is affine in e, so with
    A = QR (Q orthonormal columns) every distance and projection of the W1's equals that of the e's mapped by R:
    exact, without building a 256 x 256 matrix per point."""
    head = agent.actor.weight_heads[0]
    A, c = head.weight.detach().double(), head.bias.detach().double()
    R = torch.linalg.qr(A, mode="r")[1]
    E = torch.as_tensor(e, dtype=torch.float64)  # (tasks, T, d_e), NaN after a task's last step
    valid = ~torch.isnan(E[..., 0])
    points = E[valid] @ R.T  # the W1's, isometrically: ||W1(e) - W1(e')|| = ||R (e - e')||
    centred = points - points.mean(0)
    U, S, _ = torch.linalg.svd(centred, full_matrices=False)
    coords = torch.full((*E.shape[:2], 2), float("nan"), dtype=torch.float64)
    coords[valid] = (U[:, :2] * S[:2]).to(coords.dtype)
    explained = (S[:2] ** 2 / max(float((S**2).sum()), 1e-300)).numpy()
    prior_e = E[:, :1]  # every task starts at the prior's latent, so at the same weights
    distance = ((E - prior_e) @ R.T).norm(dim=-1) / (A @ prior_e[0, 0] + c).norm()
    return coords.numpy(), explained, distance.numpy()


def episode_bounds(episode):
    """The steps at which an inner episode starts, after the first."""
    return np.flatnonzero(np.diff(episode) > 0) + 1


def plot_latents(data, args, tasks, shown, variational, path):
    """For the tasks `shown` (indices): the latent over the meta-episode (mean +- std for VariBAD) and the behaviour."""
    fig, axes = plt.subplots(len(shown), 2, figsize=(12, 3 * len(shown)), squeeze=False)
    for row, i in enumerate(shown):
        T = int(data["steps"][i])
        latent, t = data["latent"][i, :T], np.arange(T)
        ax = axes[row, 0]
        if variational:
            mu, std = latent[:, : args.latent_dim], np.exp(0.5 * latent[:, args.latent_dim :])
            for d in range(args.latent_dim):
                (line,) = ax.plot(t, mu[:, d], lw=1)
                ax.fill_between(t, mu[:, d] - std[:, d], mu[:, d] + std[:, d], color=line.get_color(), alpha=0.2)
            ax.set_ylabel("posterior mean +- std")
        else:
            ax.plot(t, latent, lw=1)
            ax.set_ylabel("latent")
        for start in episode_bounds(data["episode"][i, :T]):
            ax.axvline(start, color="grey", ls=":", lw=1)
        ax.set_title(f"task {np.round(np.asarray(tasks[i]), 2).tolist()}: latent over the meta-episode", fontsize=9)
        ax.set_xlabel("step")
        plot_behaviour(axes[row, 1], data, i, args, tasks[i])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_behaviour(ax, data, i, args, task):
    T, episode = int(data["steps"][i]), data["episode"][i, : int(data["steps"][i])]
    returns = " ".join(f"{r:.1f}" for r in data["returns"][i])
    if "position" in data:  # grid worlds: the path of each episode from the start cell
        for j in range(int(episode.max()) + 1):
            cells = np.concatenate([[[0.0, 0.0]], data["position"][i, :T][episode == j]])
            jitter = 0.08 * (j - 1.5)
            ax.plot(cells[:, 0] + jitter, cells[:, 1] + jitter, "-o", ms=3, lw=1, label=f"episode {j + 1}")
        ax.plot(*np.asarray(task)[:2], "*", color="gold", ms=18, mec="k", label="goal")
        ax.set(xlim=(-0.5, GRID_SIZE - 0.5), ylim=(-0.5, GRID_SIZE - 0.5), aspect="equal", xlabel="x", ylabel="y")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    elif "velocity" in data:  # MuJoCo: the forward (x) velocity; the target where the task is one
        ax.plot(np.arange(T), data["velocity"][i, :T], lw=1, label="forward velocity")
        if args.env_id == "CheetahVel":
            ax.axhline(float(np.asarray(task)[0]), color="k", ls="--", lw=1, label="target velocity")
        for start in episode_bounds(episode):
            ax.axvline(start, color="grey", ls=":", lw=1)
        ax.set(xlabel="step", ylabel="velocity")
        ax.legend(fontsize=7)
    elif args.env_id.startswith("MetaWorld"):  # the hand (obs 0:3) and the object (obs 4:7), seen from above
        obs = data["obs"][i, :T]
        ax.plot(obs[:, 0], obs[:, 1], lw=1, label="hand")
        ax.plot(obs[:, 4], obs[:, 5], lw=1, label="object")
        ax.set(xlabel="x", ylabel="y", aspect="equal")
        ax.legend(fontsize=7)
    else:  # the return so far in each episode
        rewards = np.nan_to_num(data["reward"][i, :T])
        so_far = np.array([rewards[(episode == episode[t]) & (np.arange(T) <= t)].sum() for t in range(T)])
        ax.plot(np.arange(T), so_far, lw=1)
        ax.set(xlabel="step", ylabel="return so far in the episode")
    ax.set_title(f"behaviour; episode returns {returns}", fontsize=9)


def draw_grid(ax, belief, path, goal, title, image=None, ticks=True):
    """One grid panel: the per-cell probabilities, the path and the goal."""
    if image is None:
        image = ax.imshow(belief, origin="lower", vmin=0, vmax=1, cmap="viridis")
    else:
        image.set_data(belief)
    for line in list(ax.lines):
        line.remove()
    ax.plot(path[:, 0], path[:, 1], "-o", color="white", ms=3, lw=1.5)
    ax.plot(*goal, "*", color="gold", ms=16, mec="k")
    ax.set_title(title, fontsize=8)
    ax.set_xticks(range(GRID_SIZE) if ticks else [])
    ax.set_yticks(range(GRID_SIZE) if ticks else [])
    return image


def plot_grid(data, beliefs, tasks, shown, png_path, gif_path):
    """beliefs_grid.png (the tasks `shown` x episodes, the belief at each episode's first step) and beliefs_grid.gif
    (the first of them, every step)."""
    k = int(data["episode"].max()) + 1
    fig, axes = plt.subplots(len(shown), k, figsize=(2.6 * k + 1, 2.6 * len(shown)), squeeze=False)
    for row, i in enumerate(shown):
        T, episode = int(data["steps"][i]), data["episode"][i]
        for j in range(k):
            steps = np.flatnonzero(episode[:T] == j)
            path = np.concatenate([[[0.0, 0.0]], data["position"][i, steps]])
            title = f"goal {np.asarray(tasks[i]).astype(int).tolist()}, episode {j + 1}"
            image = draw_grid(axes[row, j], beliefs[i, steps[0]], path, np.asarray(tasks[i]), title)
    fig.colorbar(image, ax=axes, label="p(reward = 1 | cell, posterior mean)", shrink=0.8)
    fig.suptitle("The reward decoder's belief at each episode's first step, and the path then walked")
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

    i = shown[0]
    T, episode = int(data["steps"][i]), data["episode"][i]
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k + 1, 3), squeeze=False)
    images = [None] * k

    def frame(t):  # the belief at step t (before acting) and the path so far; earlier episodes as they ended
        for j in range(k):
            steps = np.flatnonzero((episode[:T] == j) & (np.arange(T) <= t))
            walked = steps[:-1] if j == episode[t] else steps  # the current step's move is still to come
            path = np.concatenate([[[0.0, 0.0]], data["position"][i, walked]]) if len(steps) else np.zeros((0, 2))
            belief = beliefs[i, steps[-1]] if len(steps) else np.full((GRID_SIZE, GRID_SIZE), np.nan)
            title = f"episode {j + 1}" + (f", step {len(steps)}" if j == episode[t] else "")
            images[j] = draw_grid(axes[0, j], belief, path, np.asarray(tasks[i]), title, images[j], ticks=False)
        return images

    frame(0)
    fig.colorbar(images[0], ax=axes, label="p(reward = 1 | cell, posterior mean)", shrink=0.8)
    fig.suptitle(f"goal {np.asarray(tasks[i]).astype(int).tolist()}: the reward decoder's belief before each action")
    pictures = []
    for t in range(T):  # each frame drawn once (matplotlib's animation writers draw every frame twice)
        frame(t)
        fig.canvas.draw()
        pictures.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB"))
    pictures[0].save(gif_path, save_all=True, append_images=pictures[1:], duration=250, loop=0)
    plt.close(fig)


def plot_hypernetwork(coords, explained, distance, data, args, path):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(coords)))
    for i, colour in enumerate(colours):
        T = int(data["steps"][i])
        left.plot(coords[i, :T, 0], coords[i, :T, 1], "-", color=colour, lw=0.8, alpha=0.8)
        left.plot(coords[i, T - 1, 0], coords[i, T - 1, 1], "o", color=colour, ms=4)
        right.plot(np.arange(T), distance[i, :T], color=colour, lw=0.8)
    left.plot(coords[0, 0, 0], coords[0, 0, 1], "k*", ms=14, label="the prior (step 0, every task)")
    left.set(xlabel=f"PC 1 ({100 * explained[0]:.0f}% of the variance)", ylabel=f"PC 2 ({100 * explained[1]:.0f}%)")
    left.set_title(f"generated first-layer weights W1(e_t), one colour per task (--hyper-init {args.hyper_init})")
    left.legend(fontsize=8)
    for start in episode_bounds(data["episode"][0, : int(data["steps"][0])]):
        right.axvline(start, color="grey", ls=":", lw=1)
    right.set(xlabel="step", ylabel="||W1(e_t) - W1(e_0)|| / ||W1(e_0)||")
    right.set_title("how far the policy's first layer moves from the prior's")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_to_wandb(args, run_name, paths):
    """The figures into the run's wandb run (offline if wandb cannot connect); a warning if that fails."""
    try:
        import wandb

        config = dict(project=args.wandb_project_name, entity=args.wandb_entity, id=run_name, resume="allow")
        try:
            run = wandb.init(**config)
        except Exception as e:
            warnings.warn(f"wandb.init failed ({type(e).__name__}: {e}); logging offline instead")
            wandb.teardown()
            run = wandb.init(mode="offline", **config)
        media = {os.path.basename(p): wandb.Image(p) for p in paths if p.endswith(".png")}
        media |= {os.path.basename(p): wandb.Video(p, format="gif") for p in paths if p.endswith(".gif")}
        run.log({f"beliefs/{name}": value for name, value in media.items()})
        run.finish()
    except Exception as e:
        warnings.warn(f"the figures were not logged to wandb ({type(e).__name__}: {e})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint.pt written by one of the four scripts (--save-model)")
    parser.add_argument("--num-tasks", type=int, default=3, help="held-out tasks in the per-task figures")
    parser.add_argument("--out", default=None, help="folder for the files (default: the checkpoint's folder)")
    opts = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only, no windows
    module, args, agent, encoder, decoder, run_name = load_run(opts.checkpoint)
    out = opts.out or os.path.dirname(os.path.abspath(opts.checkpoint))
    os.makedirs(out, exist_ok=True)
    tasks = envs.evaluation_tasks(args.env_id, args.num_eval_tasks, args.eval_seed)
    data = play(agent, encoder, args, tasks)
    shown = np.unique(np.linspace(0, len(tasks) - 1, min(opts.num_tasks, len(tasks))).round().astype(int))
    paths = [os.path.join(out, "beliefs_latent.png")]
    plot_latents(data, args, tasks, shown, decoder is not None, paths[0])
    if decoder is not None and getattr(decoder, "reward_kind", None) == "grid":
        data["grid_belief"] = grid_beliefs(decoder, data["latent"], args.latent_dim)
        paths += [os.path.join(out, "beliefs_grid.png"), os.path.join(out, "beliefs_grid.gif")]
        plot_grid(data, data["grid_belief"], tasks, shown, *paths[-2:])
    if "e" in data:
        coords, explained, distance = hypernetwork_weights(agent, data["e"])
        data |= dict(weight_pcs=coords, weight_distance=distance)
        paths.append(os.path.join(out, "hypernetwork.png"))
        plot_hypernetwork(coords, explained, distance, data, args, paths[-1])
    np.savez_compressed(os.path.join(out, "beliefs.npz"), tasks=np.asarray(tasks, dtype=np.float64), **data)
    paths.append(os.path.join(out, "beliefs.npz"))
    if args.track:
        log_to_wandb(args, run_name, paths)
    print(f"{run_name} ({module.__name__}, {args.env_id}): mean return {data['returns'].sum(1).mean():.2f} over "
          f"{len(tasks)} held-out tasks; wrote {', '.join(os.path.relpath(p) for p in paths)}")  # fmt: skip


if __name__ == "__main__":
    main()
