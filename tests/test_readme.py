"""The README's two commands cannot rot: they are what .ci/run runs, and the demo's
``scons flash`` is run here on a copy of the checkout (the setup half is run by CI
itself, on a clean clone, through .ci/run)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scons_project import scons_command
from scons_pyocd.images import load_image
from scons_pyocd.sim.board import FLASH_BASE, BoardState, list_boards

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must open with a ```sh block holding the two commands"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    setup_and_flash, setup_and_test = readme_commands()
    assert setup_and_flash == "bash scripts/setup && .venv/bin/scons flash"
    assert setup_and_test == "bash scripts/setup && .venv/bin/python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == setup_and_test
    assert (ROOT / "README.md").read_text().find("```sh") < 20      # it starts with them


def checkout_copy(dest: Path) -> Path:
    """The files git tracks (plus untracked, unignored ones), as a fresh clone would have them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())
    return dest


@pytest.fixture
def clone(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return checkout_copy(tmp_path / "scons-pyocd")


def test_the_demo_builds_and_flashes_the_simulated_board_then_is_a_no_op(clone, arm_toolchain):
    assert list_boards() == []                              # a fresh machine: no simulated board yet
    run = lambda *args: subprocess.run(scons_command() + list(args), cwd=clone, capture_output=True,
                                       text=True, timeout=600)
    first = run("flash")
    assert first.returncode == 0, first.stdout + first.stderr
    board = BoardState("sim-vldiscovery")                   # the demo created its own board
    assert board.counters()["connects"] == 1
    assert re.search(r"^flash build/blinky/blinky.hex onto stm32f100rb via sim-vldiscovery: 1 of 1 pages changed, .* verified \(crc\)$",
                     first.stdout, re.M), first.stdout
    image = load_image(clone / "build" / "blinky" / "blinky.hex")
    assert image.start == FLASH_BASE and len(image.segments) == 1
    image = image.to_bytes()
    assert board.read_flash(FLASH_BASE, len(image)) == image
    assert board.read_flash(FLASH_BASE + len(image), 64) == b"\xff" * 64

    before = board.counters()
    again = run("flash")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "flash is up to date (image " in again.stdout
    assert "arm-none-eabi-gcc" not in again.stdout          # nothing rebuilt
    assert board.counters() == before                       # the probe was not even opened

    blink = run("-Q", "blink")
    assert blink.returncode == 0, blink.stdout + blink.stderr
    assert "PC8 (blue LED) on" in blink.stdout and "PC9 (green LED) on" in blink.stdout


def test_the_demo_creates_only_its_own_board_and_refuses_a_mistyped_one(clone, arm_toolchain):
    result = subprocess.run(scons_command() + ["-Q", "flash", "--probe=sim-vldiscovry"], cwd=clone,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "no simulated board 'sim-vldiscovry': no simulated board exists yet" in result.stderr
    assert "scons-pyocd-sim create sim-vldiscovry" in result.stderr and "Traceback" not in result.stderr
    assert list_boards() == []


def test_blink_refuses_a_real_probe(clone):
    result = subprocess.run(scons_command() + ["-Q", "blink", "--probe=066DFF485550755187121336"],
                            cwd=clone, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "scons: *** scons blink runs the simulated board only; 066DFF485550755187121336 is not " \
        "a simulated probe" in result.stderr
    assert "Error:" not in result.stderr
