"""What to run: the named suites of `benchmark/run.py`, and the grids of the Weights & Biases sweeps.

    python benchmark/suites.py              # (re)writes benchmark/sweeps/*.yaml from SWEEPS below

A suite is a list of entries (script x env id x seeds, plus flags). Every run has a key,
`{script}__{env_id}__{label}__s{seed}`, which names its folders (`benchmark/work/{key}/`,
`benchmark/results/runs/{key}/`); two suites that contain the same key share that run. The label says how the run
differs from the script's preset: by default the `--hyper-init` value (`bias` when not given) for the hypernetwork
scripts and `preset` for the standard ones; entries that change the budget name it (`bias-2M`).
"""

import os
from dataclasses import dataclass, field

SCRIPTS = ("varibad_standard", "varibad_hyper", "rl2_standard", "rl2_hyper")
SEEDS = (73, 20, 3)  # the papers' seeds (docs/method.md, Presets)
INITS = ("bias", "weight", "hfi", "naive", "kaiming")  # the hypernetwork scripts' --hyper-init choices


@dataclass(frozen=True)
class Entry:
    script: str
    env_id: str
    seeds: tuple[int, ...]
    flags: tuple[str, ...] = ()
    label: str = ""  # empty: default_label(script, flags)


@dataclass(frozen=True)
class Run:
    key: str
    script: str
    env_id: str
    label: str
    seed: int
    flags: tuple[str, ...] = field(default=())


def flag_value(flags, name):
    """The value of `--name` in a list of CLI flags (either spelling, `--a-b x` or `--a_b=x`), or None."""
    names = {f"--{name}", f"--{name.replace('-', '_')}"}
    for i, flag in enumerate(flags):
        if flag in names and i + 1 < len(flags):
            return flags[i + 1]
        if "=" in flag and flag.split("=", 1)[0] in names:
            return flag.split("=", 1)[1]
    return None


def without_flag(flags, name):
    """`flags` without `--name value` or `--name=value` (either spelling)."""
    names, out, skip = {f"--{name}", f"--{name.replace('-', '_')}"}, [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in names:
            skip = True
        elif flag.split("=", 1)[0] not in names:
            out.append(flag)
    return out


def default_label(script, flags=()):
    if script.endswith("_hyper"):
        return flag_value(flags, "hyper-init") or "bias"
    return "preset"


def run_key(script, env_id, label, seed):
    return f"{script}__{env_id}__{label}__s{seed}"


def parse_key(key):
    """`varibad_hyper__GridNavi__bias__s20` -> ("varibad_hyper", "GridNavi", "bias", 20)."""
    script, env_id, label, seed = key.split("__")
    if not seed.startswith("s"):
        raise ValueError(f"not a run key: {key!r}")
    return script, env_id, label, int(seed[1:])


def expand(entries, seeds=None):
    """Entries -> runs (one per seed; `seeds` replaces every entry's own), in order, without duplicate keys. Two
    entries that give one key different flags are an error (the key would not say which run it is)."""
    runs = {}
    for entry in entries:
        script = entry.script[: -len(".py")] if entry.script.endswith(".py") else entry.script
        if script not in SCRIPTS:
            raise ValueError(f"unknown script {entry.script!r}; one of {', '.join(SCRIPTS)}")
        label = entry.label or default_label(script, entry.flags)
        if not label or "__" in label or "/" in label or label != label.strip():
            raise ValueError(f"label {label!r}: needs to be non-empty, without '__', '/' or surrounding spaces")
        for seed in seeds or entry.seeds:
            run = Run(
                run_key(script, entry.env_id, label, seed), script, entry.env_id, label, int(seed), tuple(entry.flags)
            )
            if run.key in runs and runs[run.key] != run:
                raise ValueError(
                    f"{run.key}: given with flags {runs[run.key].flags} and {run.flags}; use distinct labels"
                )
            runs[run.key] = run
    return list(runs.values())


# ---------------------------------------------------------------------------------------------------------------------
# Suites: the issue's results. Budgets are the presets' (docs/method.md, Presets) unless the label says otherwise.
def _init_flags(init):
    return () if init == "bias" else ("--hyper-init", init)  # bias is the default: the same run as the plain script


MUJOCO_SHORT_ENVS = ("CheetahDir", "CheetahVel", "AntDir", "WalkerRandParams", "MetaWorldML1")

SUITES = {
    "gridnavi": (
        "The four scripts on GridNavi, preset (4M frames), seeds 73 20 3.",
        [Entry(script, "GridNavi", SEEDS) for script in SCRIPTS],
    ),
    "init-gridnavi": (
        "varibad_hyper.py's five initialisations of the hypernetwork on GridNavi, preset (4M frames), seeds 73 20 3.",
        [Entry("varibad_hyper", "GridNavi", SEEDS, _init_flags(init)) for init in INITS],
    ),
    "init-cheetah": (
        "varibad_hyper.py's five initialisations on CheetahDir, 3M frames (the preset is 75M), seeds 73 20.",
        [
            Entry(
                "varibad_hyper",
                "CheetahDir",
                (73, 20),
                (*_init_flags(init), "--total-timesteps", "3000000"),
                f"{init}-3M",
            )
            for init in INITS
        ],
    ),
    "cheetah": (
        "The four scripts on CheetahDir with their presets, 3M frames (the preset is 75M), seeds 73 20: the "
        "hypernetwork against the standard policy for both encoders.",
        [
            Entry(script, "CheetahDir", (73, 20), ("--total-timesteps", "3000000"), f"{default_label(script)}-3M")
            for script in SCRIPTS
        ],
    ),
    "tmaze": (
        "rl2_hyper.py and varibad_hyper.py on TMaze, preset (1.5M frames), seeds 73 20 3; and rl2_hyper.py with the "
        "authors' zero GRU biases instead of the preset's chrono init (label zero-gru-bias), seed 73.",
        [
            Entry("rl2_hyper", "TMaze", (73,), ("--encoder-gru-chrono", "0"), "zero-gru-bias"),
            *(Entry(script, "TMaze", SEEDS) for script in ("rl2_hyper", "varibad_hyper")),
        ],
    ),
    "mujoco-short": (
        "varibad_hyper.py and rl2_hyper.py on the MuJoCo and Meta-World ML1 benchmarks, and varibad_standard.py on "
        "all but CheetahDir (3M in the cheetah suite), 2M frames, seeds 73 20.",
        [
            *(
                Entry(script, env_id, (73, 20), ("--total-timesteps", "2000000"), "bias-2M")
                for env_id in MUJOCO_SHORT_ENVS
                for script in ("varibad_hyper", "rl2_hyper")
            ),
            *(
                Entry("varibad_standard", env_id, (73, 20), ("--total-timesteps", "2000000"), "preset-2M")
                for env_id in MUJOCO_SHORT_ENVS
                if env_id != "CheetahDir"
            ),
        ],
    ),
}


def suite_runs(name, seeds=None):
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; one of {', '.join(SUITES)}")
    return expand(SUITES[name][1], seeds)


# ---------------------------------------------------------------------------------------------------------------------
# Sweeps: the papers' grid, learning rate x seed per benchmark (docs/method.md, Presets), for `wandb sweep` /
# `wandb agent`.
LEARNING_RATES = (3e-3, 1e-3, 3e-4, 1e-4, 3e-5)
SWEEP_ENVS = {  # env id -> (learning rates, seeds, metric the sweep reports)
    "GridNavi": (LEARNING_RATES, SEEDS, "eval/return"),
    "GridNaviDense": (LEARNING_RATES, SEEDS, "eval/return"),
    "GridNaviShow": (LEARNING_RATES, SEEDS, "eval/return"),
    "CheetahDir": (LEARNING_RATES, SEEDS, "eval/return"),
    "CheetahVel": (LEARNING_RATES, SEEDS, "eval/return"),
    "AntDir": (LEARNING_RATES, SEEDS, "eval/return"),
    "WalkerRandParams": (LEARNING_RATES, SEEDS, "eval/return"),
    # the 2022 Pick-Place set: three learning rates, ten seeds
    "MetaWorldML1": ((3e-4, 1e-4, 3e-5), (73, 20, 3, 51, 19, 7, 36, 10, 68, 39), "eval/success"),
    "MetaWorldML10": (LEARNING_RATES, SEEDS, "eval/success"),
    "TMaze": (LEARNING_RATES, SEEDS, "eval/return"),  # our stand-in for MC-LS (docs/environments.md, TMaze)
}
SWEEPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweeps")


def _decimal(x):
    """3e-05 -> '0.00003': YAML 1.1 (PyYAML, which `wandb sweep` uses) reads '3e-05' as a string, not a float."""
    return f"{x:.10f}".rstrip("0")


def sweep_yaml(script, env_id):
    lrs, seeds, metric = SWEEP_ENVS[env_id]
    grid = len(lrs) * len(seeds)
    return f"""\
# W&B sweep: {script}.py on {env_id}, learning rate x seed ({grid} runs; docs/method.md, Presets). Written by
# `python benchmark/suites.py`. From the repository root, `wandb sweep benchmark/sweeps/{script}_{env_id}.yaml` prints
# the sweep id; then `wandb agent ENTITY/hyper-meta-rl/SWEEP_ID` on every machine, one agent per run it has room for.
# Each agent runs `python {script}.py --env-id {env_id} --track --learning_rate=X --seed=Y` with the preset's budget.
program: {script}.py
name: {script} {env_id} lr x seed
project: hyper-meta-rl
method: grid
metric:
  name: {metric}
  goal: maximize
parameters:
  learning_rate:
    values: [{", ".join(_decimal(lr) for lr in lrs)}]
  seed:
    values: [{", ".join(str(s) for s in seeds)}]
command:
  - ${{env}}
  - ${{interpreter}}
  - ${{program}}
  - --env-id
  - {env_id}
  - --track
  - ${{args}}
"""


def sweep_files():
    """{path: text} of every sweep file: each script on each benchmark of SWEEP_ENVS."""
    return {
        os.path.join(SWEEPS_DIR, f"{script}_{env_id}.yaml"): sweep_yaml(script, env_id)
        for script in SCRIPTS
        for env_id in SWEEP_ENVS
    }


if __name__ == "__main__":
    os.makedirs(SWEEPS_DIR, exist_ok=True)
    for path, text in sweep_files().items():
        with open(path, "w") as f:
            f.write(text)
    print(f"wrote {len(sweep_files())} sweep files to {os.path.relpath(SWEEPS_DIR)}/")
