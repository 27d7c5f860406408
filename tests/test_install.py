"""The package as a user installs it: ``pip install`` of a checkout (not editable) into a
fresh virtual environment, used from a tree without ``site_scons/``.

Without the ``[sim]`` extra nothing installs Unicorn, pyOCD still works, the real-hardware
path ends with a clear "no probe" message (no traceback), and a ``sim-`` probe says what
to install. With it, a real probe's id still never imports the simulator.

The environments are made once per test session (about 15 s each with pip's cache; pip
reaches PyPI for what is not cached). Waits are bounded generously (pip: 15 min) only to
catch a hang.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scons_project import random_image, write_image
from test_readme import checkout_copy

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 900
RUN_TIMEOUT = 300
REAL_PROBE = "066DFF485550755187121336"

#: Appended to an SConstruct: at exit, write which of these modules were imported.
WATCH = """
import atexit, os, sys
def _report():
    if os.environ.get('IMPORTED'):
        watched = ('unicorn', 'scons_pyocd.sim.chip', 'scons_pyocd.sim.probe', 'scons_pyocd.sim.core')
        open(os.environ['IMPORTED'], 'w').write(' '.join(m for m in watched if m in sys.modules))
atexit.register(_report)
"""


def _environ(**extra) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ.update(extra)
    return environ


def _make_venv(where: Path, extras: str = "") -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    source = checkout_copy(where / "src")
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=PIP_TIMEOUT)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", f"{source}{extras}"],
                            capture_output=True, text=True, timeout=PIP_TIMEOUT, env=_environ())
    assert result.returncode == 0, f"pip install {source}{extras} failed:\n{result.stdout}\n{result.stderr}"
    return venv


@pytest.fixture(scope="session")
def plain_venv(tmp_path_factory):
    """A fresh venv with ``pip install <checkout>`` (no extras)."""
    return _make_venv(tmp_path_factory.mktemp("plain-install"))


@pytest.fixture(scope="session")
def sim_venv(tmp_path_factory):
    """A fresh venv with ``pip install <checkout>[sim]``."""
    return _make_venv(tmp_path_factory.mktemp("sim-install"), "[sim]")


def _tree(where: Path, probe: str) -> Path:
    """A firmware tree without site_scons: the documented line loads the installed tool."""
    where.mkdir(parents=True, exist_ok=True)
    write_image(where / "fw.hex", random_image(2048))
    (where / "SConstruct").write_text(textwrap.dedent(f"""\
        import scons_pyocd
        env = Environment(tools=['default', 'pyocd_tool'], toolpath=[scons_pyocd.TOOLPATH],
                          PYOCD_TARGET='stm32f100rb', PYOCD_PROBE={probe!r})
        env.FlashAliases('fw.hex')
        """) + WATCH)
    return where


def _run(venv: Path, tree: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "scons"), "-Q", *args], cwd=tree, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, env=_environ(**env))


def test_installed_without_the_simulator(plain_venv, tmp_path):
    python = str(plain_venv / "bin" / "python")
    check = subprocess.run([python, "-c", "import importlib.util, scons_pyocd; "
                            "print(importlib.util.find_spec('unicorn') is None, scons_pyocd.__file__)"],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_environ(), cwd=tmp_path)
    no_unicorn, installed_at = check.stdout.split()
    assert no_unicorn == "True", "pip install without [sim] installed Unicorn"
    assert str(plain_venv) in installed_at and "site-packages" in installed_at    # not this checkout

    # The real-hardware path, end to end: a clear message, no traceback, nothing imported
    # from the simulator.
    tree = _tree(tmp_path / "fw", "")
    marker = tmp_path / "imported"
    result = _run(plain_venv, tree, "flash", IMPORTED=str(marker))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no debug probe found. Plug the probe in" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert marker.read_text() == ""
    result = _run(plain_venv, tree, "flash", f"--probe={REAL_PROBE}")
    assert result.returncode == 2
    assert f"no probe matches PYOCD_PROBE='{REAL_PROBE}': attached probes are: none" in result.stderr
    assert "Traceback" not in result.stderr

    # A simulated board says what to install.
    result = _run(plain_venv, tree, "flash", "--probe=sim-vldiscovery")
    assert result.returncode == 2
    assert ("probe sim-vldiscovery is a simulated board, but the simulator is not installed (it needs "
            "Unicorn): install it with pip install 'scons-pyocd[sim]'") in result.stderr
    assert "Traceback" not in result.stderr

    # The listings and pyOCD's own command line work without it.
    probes = subprocess.run([str(plain_venv / "bin" / "scons-pyocd"), "probes"], capture_output=True,
                            text=True, timeout=RUN_TIMEOUT, env=_environ(), cwd=tmp_path)
    assert probes.returncode == 0 and probes.stdout.startswith("no debug probe found"), probes.stderr
    assert _run(plain_venv, tree, "probes").stdout.startswith("no debug probe found")
    targets = subprocess.run([str(plain_venv / "bin" / "pyocd"), "list", "--targets"], capture_output=True,
                             text=True, timeout=RUN_TIMEOUT, env=_environ(), cwd=tmp_path)
    assert targets.returncode == 0 and "stm32f100rb" in targets.stdout, targets.stderr
    assert "flash" in _run(plain_venv, tree, "-h").stdout


def test_installed_with_the_simulator(sim_venv, tmp_path):
    # A real probe's id still does not import the simulator, though pyOCD loads the entry point.
    tree = _tree(tmp_path / "fw", REAL_PROBE)
    marker = tmp_path / "imported"
    result = _run(sim_venv, tree, "flash", IMPORTED=str(marker))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"no probe matches PYOCD_PROBE='{REAL_PROBE}'" in result.stderr
    assert marker.read_text() == ""

    # The simulated board, through pyOCD's entry point, from the installed package.
    board = subprocess.run([str(sim_venv / "bin" / "scons-pyocd-sim"), "create", "sim-installed"],
                           capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_environ())
    assert board.returncode == 0, board.stderr
    result = _run(sim_venv, tree, "flash", "--probe=sim-installed", IMPORTED=str(marker))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flash stm32f100rb via sim-installed: fw.hex 0x08000000-0x080007FF:" in result.stdout
    assert "unicorn" in marker.read_text().split()
    listed = subprocess.run([str(sim_venv / "bin" / "pyocd"), "list"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=_environ(SCONS_PYOCD_SIM_LIST="1"))
    assert "sim-installed" in listed.stdout, listed.stdout + listed.stderr
    probes = subprocess.run([str(sim_venv / "bin" / "scons-pyocd"), "probes"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=_environ())
    assert "sim-installed" in probes.stdout, probes.stdout + probes.stderr
