"""The README and docs/guide.md run as written: every ```python block, in order, in one fresh
Python process (one notebook kernel per page), in an empty working directory, with nothing on
stderr (no warning, no progress bar into a pipe). One test installs xpnn into a new virtual
environment without the test extra, as the README tells a reader to, and runs the pages there."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"

# Runs one page's blocks in one namespace, like cells of one notebook; a failure names its block.
RUNNER = r"""
import re, sys, traceback
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
namespace = {"__name__": "__main__"}
for number, block in enumerate(blocks, 1):
    try:
        exec(compile(block, f"{path} (python block {number})", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
print(f"ran {len(blocks)} blocks")
"""


def python_blocks(path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def run_page(python, page, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS", "PYTHONSTARTUP")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([python, "-c", RUNNER, str(page)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def check_ran(result, page):
    blocks = len(python_blocks(page))
    assert result.returncode == 0, f"{page.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert result.stderr == "", f"{page.name} wrote to stderr (a warning or a progress bar):\n{result.stderr[-5000:]}"
    assert result.stdout.rstrip().endswith(f"ran {blocks} blocks")


def test_the_pages_have_python_blocks_and_the_readme_links_the_guide():
    assert len(python_blocks(README)) >= 1 and len(python_blocks(GUIDE)) >= 8
    assert "(docs/guide.md)" in README.read_text()
    assert "array_api_strict" not in "".join(python_blocks(README)), "the test extra is not what the README installs"


def test_readme_runs_in_a_fresh_process(tmp_path):
    result = run_page(sys.executable, README, tmp_path)
    check_ran(result, README)
    assert "loss after 300 steps" in result.stdout and "same model in float64" in result.stdout


def test_guide_runs_in_a_fresh_process(tmp_path):
    pytest.importorskip("matplotlib", reason="the guide installs the plot extra")
    result = run_page(sys.executable, GUIDE, tmp_path)
    check_ran(result, GUIDE)
    assert (tmp_path / "digits.npz").is_file() and (tmp_path / "curves.png").is_file()
    assert "DataLoader(1437 samples, batch_size=64, shuffle=True, 23 batches, device=cpu)" in result.stdout
    assert list(tmp_path.iterdir()), "the pages write into their working directory, not the repository"


def _source_tree(target):
    """The files a plain ``pip install .`` builds from, copied so the build writes nothing here."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "xpnn", target / "xpnn", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
    return target


def _pip(python, *args, timeout=240):
    return subprocess.run([python, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True, timeout=timeout)


def test_pages_run_on_a_plain_install_without_the_test_extra(tmp_path):
    """What the README shows runs after ``pip install .`` (the guide after ``pip install '.[plot]'``),
    with none of the test extra (array_api_strict, pytest, hypothesis) installed."""
    probe = _pip(sys.executable, "download", "--no-deps", "--quiet", "--dest", str(tmp_path / "probe"), "tqdm", timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"the package index is not reachable: {(probe.stderr.strip().splitlines() or ['pip download failed'])[-1]}")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    python = str(tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python")
    (tmp_path / "src").mkdir()
    source = _source_tree(tmp_path / "src")
    installed = _pip(python, "install", "--quiet", str(source))
    assert installed.returncode == 0, installed.stderr[-3000:]
    absent = subprocess.run([python, "-c", "import array_api_strict"], capture_output=True, text=True)
    assert absent.returncode != 0, "the plain install must not bring the test extra"
    (tmp_path / "readme").mkdir()
    check_ran(run_page(python, README, tmp_path / "readme"), README)
    installed = _pip(python, "install", "--quiet", f"{source}[plot]")
    assert installed.returncode == 0, installed.stderr[-3000:]
    (tmp_path / "guide").mkdir()
    check_ran(run_page(python, GUIDE, tmp_path / "guide"), GUIDE)
