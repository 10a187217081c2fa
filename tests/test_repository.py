"""The repository's own rules: ruff's style, the blocks the four scripts share, and docs whose references resolve."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["varibad_standard.py", "varibad_hyper.py", "rl2_standard.py", "rl2_hyper.py"]
# the blocks every script has byte for byte: (first line, the line that ends the block)
SHARED = [("# TRY NOT TO MODIFY: command line, presets and resume", "# ALGO LOGIC: the "),
          ("# ALGO LOGIC: PPO's advantages", "# ALGO LOGIC: PPO's update")]  # fmt: skip


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# the aim is at most 800 lines each; these ceilings only keep the scripts from growing back
MAX_LINES = {"varibad_standard.py": 800, "varibad_hyper.py": 825, "rl2_standard.py": 800, "rl2_hyper.py": 800}


def test_the_scripts_do_not_grow():
    lengths = {name: len(read(name).splitlines()) for name in SCRIPTS}
    assert all(lengths[name] <= MAX_LINES[name] for name in SCRIPTS), lengths


@pytest.mark.parametrize("start, end", SHARED, ids=["command line, envs, normalisers", "GAE, evaluation, plumbing"])
def test_the_shared_blocks_are_identical_in_the_four_scripts(start, end):
    blocks = {}
    for name in SCRIPTS:
        text = read(name)
        first = text.index(start)
        blocks[name] = text[first : text.index(end, first)]
    assert len(blocks["varibad_hyper.py"].splitlines()) > 50
    for name in SCRIPTS:
        assert blocks[name] == blocks["varibad_hyper.py"], name


def test_readme_is_a_front_page_and_every_file_it_cites_exists():
    assert len(read("README.md").encode()) < 12_000
    pages = [os.path.join("docs", p) for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md")]
    for page in ["README.md", *pages]:
        folder = os.path.dirname(os.path.join(ROOT, page))
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(page)):  # markdown links and images
            if not target.startswith(("http://", "https://")):
                assert os.path.exists(os.path.join(folder, target)), f"{page} links to {target}, which does not exist"
        text = read(page)
        assert "METHOD.md" not in text and "BOUNDS.md" not in text, page


def test_the_docs_line_pointers_point_at_what_they_name():
    """A pointer is a link [`name`](../script.py#L10) or [`name`](../script.py#L10-L20): the lines hold `name`."""
    pointers = 0
    for page in [p for p in os.listdir(os.path.join(ROOT, "docs")) if p.endswith(".md")]:
        for name, script, first, last in re.findall(r"\[`([^`]+)`\]\(\.\./([\w/]+\.py)#L(\d+)(?:-L(\d+))?\)",
                                                    read(os.path.join("docs", page))):  # fmt: skip
            lines = read(script).splitlines()[int(first) - 1 : int(last or first)]
            key = name.split(".")[-1]  # envs.true_next_obs: defined as true_next_obs
            assert any(key in line for line in lines), f"docs/{page}: `{name}` is not at {script}#L{first}"
            pointers += 1
    assert pointers >= 20


def test_the_suite_runs_on_both_cores_with_a_timeout(request):
    """pyproject.toml is pytest's configuration (a pytest.ini would silently replace it, and did): xdist and a
    per-test timeout are on."""
    assert request.config.inipath.name == "pyproject.toml"
    assert float(request.config.getini("timeout")) > 0 and "-n" in request.config.getini("addopts")


def test_the_faithful_runs_commands_name_no_machine_folders():
    """Every result run's command.txt runs from the repository root with relative paths and names its machine."""
    runs = os.path.join(ROOT, "benchmark", "faithful", "runs")
    for key in os.listdir(runs):
        text = read(os.path.join("benchmark", "faithful", "runs", key, "command.txt"))
        assert not re.search(r"(^|[ =])/(work|root|home|tmp)/", text, re.M), key
        commands = [line for line in text.splitlines() if not line.startswith("#")]
        assert commands and all(line.startswith("cd benchmark/work/") for line in commands), key
        assert text.count("# machine:") == len(commands), key
