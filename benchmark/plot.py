"""Redraws every figure and table from the collected runs, offline (no wandb): `python benchmark/plot.py`.

Reads `{results}/runs/{key}/metrics.csv.gz` and `eval.json` (written by benchmark/run.py; key =
`{script}__{env_id}__{label}__s{seed}`) and groups the runs by (script, env id, label) across seeds. For every suite
of benchmark/suites.py that has finished runs it draws `{results}/plots/{suite}.png`, one row per env id:
  1. eval/return (held-out tasks, deterministic actions; eval/success on Meta-World) against frames: the mean over
     seeds, each seed's curve linearly interpolated onto a common grid of frames first, with a 68%
     percentile-bootstrap interval of the mean;
  2. the same against wall-clock hours of training (pauses between a stop and a `--resume` left out);
  3. the adaptation curve: the final evaluation's return in each episode of the meta-episode (eval.json).
GridNavi (docs/method.md) and TMaze get the Bayes-optimal and uniformly random returns as reference lines; the env
ids in `{results}/baselines.json` (benchmark/baselines.py: zero and uniformly random actions on the scripts' evaluation
tasks) get those two policies' returns (success rates on Meta-World). Runs of no suite go to `other.png`.
`{results}/tables.md` has, per suite, the final evaluation's mean +- std over seeds (population std, ddof=0; the value
alone for one seed) of the meta-episode return, of each episode's return (where a meta-episode has several) and
(Meta-World) of the success rate.
"""

import argparse
import csv
import gzip
import json
import math
import os
import sys
import textwrap
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suites import SEEDS, SUITES, expand, parse_key  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# expected returns (meta-episode, and per episode) of the Bayes-optimal and random policies: GridNavi's from
# docs/method.md; TMaze's by construction (the indicator is shown in every episode: always +4; a coin flip at the end:
# 0.5)
BOUNDS = {
    "GridNavi": {
        "Bayes-optimal": (37.214, (4.0, 11.071, 11.071, 11.071)),
        "uniform random": (-4.662, (-1.166, -1.166, -1.166, -1.166)),
    },
    "TMaze": {"Bayes-optimal": (16.0, (4.0, 4.0, 4.0, 4.0)), "uniform random": (2.0, (0.5, 0.5, 0.5, 0.5))},
}
GRID_POINTS = 200
BOOTSTRAP_SAMPLES = 2000


# --------------------------------------------------------------------------------------------------------------------
# reading
def reference_lines(results_dir):
    """env id -> {name: (value on the curves' metric, per-episode returns)}: BOUNDS, then benchmark/baselines.py's
    trivial policies from `{results_dir}/baselines.json` (if present) for the env ids that BOUNDS lacks."""
    lines = {env_id: dict(bounds) for env_id, bounds in BOUNDS.items()}
    path = os.path.join(results_dir, "baselines.json")
    if os.path.exists(path):
        with open(path) as f:
            for row in json.load(f):
                if row["env_id"] in BOUNDS:
                    continue
                value = row["success"] if curve_metric(row["env_id"]) == "eval/success" else round(row["return"], 2)
                name = {"zero": "zero actions", "random": "uniform random"}[row["policy"]]
                lines.setdefault(row["env_id"], {})[name] = (value, tuple(row["return_per_episode"]))
    return lines


def curve_metric(env_id):
    """The learning curves' metric: the success rate on Meta-World (what the papers report), else the return."""
    return "eval/success" if env_id.startswith("MetaWorld") else "eval/return"


def read_metrics(path, names=("eval/return", "eval/success", "charts/SPS")):
    """{metric: (steps, values)} of a long-format metrics.csv, sorted by step. A resumed run appends to the file and
    re-logs the steps after its checkpoint: the later row of a step wins. Also "_wall": (steps, wall times)."""
    series, wall = defaultdict(dict), {}
    with gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["global_step"])
            wall[step] = float(row["wall_time"])
            if row["metric"] in names:
                series[row["metric"]][step] = float(row["value"])
    out = {name: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)])) for name, d in series.items()}
    out["_wall"] = (np.array(sorted(wall)), np.array([wall[s] for s in sorted(wall)]))
    return out


def training_hours(steps, wall, sps=None):
    """Elapsed hours of training at each logged step. Wall-clock differences between consecutive logged steps are
    summed, except a gap of more than 20x the median difference (and over a minute): the run was stopped or paused
    there, and the gap counts as one median iteration. The first step's time comes from the SPS logged with it
    (`charts/SPS` is frames over training time since the start) when there is one, under the same rule."""
    if len(steps) == 0:
        return np.zeros(0)
    first = 0.0
    if sps is not None and len(sps[0]) and sps[0][0] == steps[0] and sps[1][0] > 0:
        first = steps[0] / sps[1][0]
    gaps = np.concatenate([[first], np.diff(wall)])
    if len(gaps) > 1:
        median = np.median(gaps[1:])
        gaps = np.where((gaps > 20 * median) & (gaps > 60), median, gaps)
    return np.cumsum(gaps) / 3600


def load_runs(results_dir):
    """{key: run dict} of every run folder under `{results_dir}/runs/` that has an eval.json."""
    runs = {}
    runs_dir = os.path.join(results_dir, "runs")
    for key in sorted(os.listdir(runs_dir) if os.path.isdir(runs_dir) else []):
        folder = os.path.join(runs_dir, key)
        if not os.path.exists(os.path.join(folder, "eval.json")):
            continue
        try:
            script, env_id, label, seed = parse_key(key)
        except ValueError:
            print(f"skipping {folder}: not named {{script}}__{{env_id}}__{{label}}__s{{seed}}")
            continue
        with open(os.path.join(folder, "eval.json")) as f:
            result = json.load(f)
        paths = [os.path.join(folder, name) for name in ("metrics.csv.gz", "metrics.csv")]  # .csv: collected by hand
        csv_path = next((path for path in paths if os.path.exists(path)), None)
        metrics = read_metrics(csv_path) if csv_path else {}
        curve = metrics.get(curve_metric(env_id), (np.zeros(0), np.zeros(0)))
        hours = np.zeros(0)
        if len(curve[0]):
            wall_steps, wall = metrics["_wall"]
            all_hours = training_hours(wall_steps, wall, metrics.get("charts/SPS"))
            hours = np.interp(curve[0], wall_steps, all_hours)
        runs[key] = {
            "key": key,
            "script": script,
            "env_id": env_id,
            "label": label,
            "seed": seed,
            "eval": result,
            "steps": curve[0],
            "values": curve[1],
            "hours": hours,
        }
    return runs


def group_runs(runs):
    """{(script, env_id, label): [runs by seed]}, in the order of first appearance."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run["script"], run["env_id"], run["label"])].append(run)

    def order(run):  # 73 20 3 first
        return SEEDS.index(run["seed"]) if run["seed"] in SEEDS else len(SEEDS), run["seed"]

    return {g: sorted(rs, key=order) for g, rs in groups.items()}


# --------------------------------------------------------------------------------------------------------------------
# statistics
def bootstrap_ci(samples, rng, level=0.68, n_boot=BOOTSTRAP_SAMPLES):
    """Percentile bootstrap interval of the mean over axis 0 (the seeds): (low, high), each of shape samples[0]."""
    samples = np.asarray(samples, dtype=float)
    idx = rng.integers(0, len(samples), size=(n_boot, len(samples)))
    means = samples[idx].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def smooth(values, window):
    """Trailing moving average over `window` points (fewer at the start)."""
    if window <= 1 or len(values) == 0:
        return values
    values = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(values, 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (c[end] - c[start]) / (end - start)


def curve_on_grid(xs, ys, points=GRID_POINTS):
    """Each seed's (x, y) interpolated onto one grid from the largest first x to the smallest last x (where every
    seed has data): (grid, array of shape (seeds, points)), or None if the seeds do not overlap."""
    pairs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in zip(xs, ys) if len(x)]
    if not pairs:
        return None
    lo, hi = max(x[0] for x, _ in pairs), min(x[-1] for x, _ in pairs)
    if hi < lo:
        return None
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    return grid, np.stack([np.interp(grid, x, y) for x, y in pairs])


def summary(group):
    """The final evaluation of a group's seeds: {name: (mean, std)} for 'return', 'ep1'.. (meta-episodes of several
    episodes), 'success' (Meta-World)."""
    results = [run["eval"] for run in group]
    stats = {"return": [r["return"] for r in results]}
    episodes = min(len(r["return_per_episode"]) for r in results)
    for k in range(episodes if episodes > 1 else 0):  # one-episode meta-episodes (MuJoCo): the return says it all
        stats[f"ep{k + 1}"] = [r["return_per_episode"][k] for r in results]
    if group[0]["env_id"].startswith("MetaWorld"):  # the papers' success (eval/success): tasks solved per episode
        stats["success"] = [float(np.mean(np.mean(np.asarray(r["successes"]) > 0, axis=0))) for r in results]
    return {name: (float(np.mean(v)), float(np.std(v))) for name, v in stats.items()}


# --------------------------------------------------------------------------------------------------------------------
# tables and figures
def mean_std(mean, std, seeds, percent=False):
    """'33.00 ± 2.45' (or '75.0% ± 2.5'); the value alone for one seed, where a std of 0 would say nothing."""
    scale, digits, unit = (100, 1, "%") if percent else (1, 2, "")
    return f"{scale * mean:.{digits}f}{unit}" + (f" ± {scale * std:.{digits}f}" if seeds > 1 else "")


def markdown_table(groups):
    episodes = max((sum(name.startswith("ep") for name in summary(g)) for g in groups.values()), default=0)
    success = any(env_id.startswith("MetaWorld") for _, env_id, _ in groups)
    head = ["script", "env id", "label", "seeds", "frames", "return"] + [f"episode {k + 1}" for k in range(episodes)]
    head += ["success"] if success else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    for (script, env_id, label), group in groups.items():
        stats = summary(group)
        frames = sorted({run["eval"]["global_step"] for run in group})
        cells = [
            f"`{script}.py`",
            env_id,
            label,
            f"{len(group)} ({' '.join(str(r['seed']) for r in group)})",
            "/".join(f"{f:,}" for f in frames),
        ]
        cells += [mean_std(*stats["return"], len(group))]
        cells += [mean_std(*stats[f"ep{k + 1}"], len(group)) if f"ep{k + 1}" in stats else "" for k in range(episodes)]
        if success:
            cells += [mean_std(*stats["success"], len(group), percent=True) if "success" in stats else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def symlog_if_spread(ax, ratio=20):
    """A panel whose lowest value lies more than `ratio` times below its highest (a run whose return falls to
    -70,000 beside runs near 800) gets a symmetric-log y axis, linear up to the power of ten above the highest value
    in either direction: both stay readable."""
    low, high = ax.dataLim.y0, ax.dataLim.y1
    if low < 0 < high and -low > ratio * max(high, 1.0):  # not where every value is negative: linear reads best
        linear = 10 ** math.ceil(math.log10(max(high, 1.0)))
        ax.set_yscale("symlog", linthresh=linear, linscale=2)
        decades = [-linear * 10**k for k in range(math.ceil(math.log10(-low / linear)) + 1)]
        ax.yaxis.set_major_locator(FixedLocator([*decades[::-1], -linear / 2, 0, linear / 2, linear]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
        ax.yaxis.set_minor_locator(NullLocator())


def draw(groups, path, title, window=1, references=BOUNDS):
    """One row per env id: eval return against frames, against hours, and the adaptation curve; `references` as
    `reference_lines` gives them. A panel of widely spread returns is drawn on a symlog scale (symlog_if_spread)."""
    env_ids = list(dict.fromkeys(env_id for _, env_id, _ in groups))
    fig, axes = plt.subplots(len(env_ids), 3, figsize=(16, 3.8 * len(env_ids)), squeeze=False)
    rng = np.random.default_rng(0)  # a fixed seed: redrawing gives the same bands
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys((script, label) for script, _, label in groups))  # one colour each, the same in every row
    for row, env_id in zip(axes, env_ids):
        mine = [(g, runs) for g, runs in groups.items() if g[1] == env_id]
        for i, ((script, _, label), runs) in enumerate(mine):
            color = colors[keys.index((script, label)) % len(colors)]
            name = f"{script} ({label}), {len(runs)} seed{'s' * (len(runs) > 1)}"
            for ax, x_of in ((row[0], "steps"), (row[1], "hours")):
                on_grid = curve_on_grid([r[x_of] for r in runs], [smooth(r["values"], window) for r in runs])
                if on_grid is None:
                    continue
                grid, ys = on_grid
                low, high = bootstrap_ci(ys, rng)
                ax.plot(grid, ys.mean(0), color=color, label=name, marker="o" if len(grid) == 1 else None)
                ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
            per_episode = np.array([r["eval"]["return_per_episode"] for r in runs])
            low, high = bootstrap_ci(per_episode, rng)
            episodes = np.arange(1, per_episode.shape[1] + 1)
            mean = per_episode.mean(0)
            yerr = np.clip([mean - low, high - mean], 0, None)
            row[2].errorbar(
                episodes + 0.04 * (i - len(mine) / 2), mean, yerr=yerr, color=color, marker="o", capsize=3, label=name
            )
        for name, (total, per_episode) in references.get(env_id, {}).items():
            style = {"Bayes-optimal": "--", "zero actions": "-."}.get(name, ":")
            for ax in row[:2]:
                ax.axhline(total, color="black", linestyle=style, linewidth=1, label=f"{name} ({total:g})")
            if len(per_episode) == 1:  # one episode a meta-episode (MuJoCo): a level across the panel, not a point
                row[2].axhline(per_episode[0], color="black", linestyle=style, linewidth=1, label=name)
            else:
                row[2].plot(
                    np.arange(1, len(per_episode) + 1),
                    per_episode,
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label=name,
                )
        row[0].set_xlabel("frames")
        row[1].set_xlabel("wall-clock hours of training")
        row[2].set_xlabel("episode of the meta-episode (final evaluation)")
        # whole episodes only, also where a meta-episode has one episode (MuJoCo): its panel is then the final returns
        most = max(len(r["eval"]["return_per_episode"]) for _, runs in mine for r in runs)
        row[2].set_xlim(0.5, most + 0.5)
        row[2].xaxis.set_major_locator(MaxNLocator(integer=True) if most > 10 else FixedLocator(range(1, most + 1)))
        metric = curve_metric(env_id)
        for ax, ylabel in zip(row, (metric, metric, "return in the episode")):
            ax.set_ylabel(f"{env_id}: {ylabel}")
            ax.grid(alpha=0.3)
            symlog_if_spread(ax)
        row[0].legend(fontsize=8)
    smoothed = f", smoothed over {window} evaluations" if window > 1 else ""
    fig.suptitle(f"{textwrap.fill(title, 140)}\nmean over seeds, 68% bootstrap interval{smoothed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "benchmark", "results"))
    parser.add_argument("--smooth", type=int, default=1, help="moving average over this many evaluations (1: none)")
    args = parser.parse_args(argv)
    runs = load_runs(args.results_dir)
    references = reference_lines(args.results_dir)
    os.makedirs(os.path.join(args.results_dir, "plots"), exist_ok=True)
    figures = []  # (name, description, runs)
    covered = set()
    for name, (description, entries) in SUITES.items():
        keys = [run.key for run in expand(entries)]
        mine = [runs[k] for k in keys if k in runs]
        covered.update(k for k in keys if k in runs)
        if mine:
            figures.append((name, description, mine))
    others = [run for key, run in runs.items() if key not in covered]
    if others:
        figures.append(("other", "Runs of no suite.", others))
    tables = [
        "# Results\n",
        f"Written by `python benchmark/plot.py` from `{os.path.relpath(args.results_dir, ROOT)}/runs/`: the final "
        "evaluation "
        "(held-out tasks, deterministic actions), mean ± std over seeds (population std).\n",
    ]
    for name, description, mine in figures:
        groups = group_runs(mine)
        path = os.path.join(args.results_dir, "plots", f"{name}.png")
        draw(groups, path, f"{name}: {description}", args.smooth, references)
        tables += [f"## {name}\n", f"{description} Figure: `plots/{name}.png`.\n", markdown_table(groups) + "\n"]
        print(f"{os.path.relpath(path)}: {len(groups)} group(s), {len(mine)} run(s)")
    with open(os.path.join(args.results_dir, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    print(f"{os.path.relpath(os.path.join(args.results_dir, 'tables.md'))}: {len(figures)} table(s)")


if __name__ == "__main__":
    main()
