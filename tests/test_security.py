"""What a firmware tree can make ``scons flash`` do, and where the tool keeps its state.

- File names are never given to a shell: names with ``$(...)``, backquotes, ``;``, quotes,
  spaces and non-ASCII characters flash, verify and erase, and run nothing.
- pyOCD's ``pyocd.yaml`` / ``pyocd_user.py`` in the tree run nothing for flash, verify or
  erase, even when the yaml names a script (the opt-in is tested in test_tool_loading.py).
- Records, locks and simulated boards go to a private per-user directory (0700 folders,
  0600 files, even under umask 000), nothing to $TMPDIR or /tmp.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scons_project import PAGE, Project, random_image, scons_command
from scons_pyocd.sim.board import FLASH_BASE

HOSTILE = [
    "fw $(touch PWNED-dollar).hex",
    "fw `touch PWNED-backquote`.hex",
    "fw; touch PWNED-semicolon; .hex",
    "fw' \"quoted\" && touch PWNED-and.hex",
    "fïrmwäre ünïcode €.hex",
    "-fw leading dash.hex",
]


def no_marker(*folders):
    return not [p for folder in folders for p in Path(folder).rglob("PWNED*") if p.is_file()]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_names_flash_verify_and_erase_and_run_nothing(tmp_path, name):
    p = Project(tmp_path / "hostile dir $(touch PWNED-dir)", "sim-sec")
    data = random_image(3 * PAGE + 1, seed=len(name))
    (p.dir / "PWNED-dir-not-a-file").mkdir()       # a marker here would be a file, this is a folder
    path = p.dir / name
    p.image(data, name=name)
    # SCons expands '$' in strings naming nodes (and drops '$(' even when written '$$('):
    # a name holding one is given as a node, which the tool takes as it is.
    p.sconstruct(f"env.FlashAliases(env.fs.File({name!r}))\n".replace("{", "{{").replace("}", "}}"))
    result = p.run("flash")
    assert " onto stm32f100rb via sim-sec: " in result.stdout
    assert p.board.read_flash(FLASH_BASE, len(data)) == data
    assert f"{path} matches (crc)" in p.run("verify").stdout
    assert p.run("flash").stdout.startswith("flash is up to date")
    p.run("erase")
    assert p.board.read_flash() == b"\xff" * (128 * PAGE)
    assert no_marker(tmp_path, os.getcwd())


def test_pyocd_config_and_user_script_in_the_tree_run_for_no_operation(tmp_path):
    p = Project(tmp_path / "tree", "sim-sec")
    data = random_image(2 * PAGE, seed=3)
    p.image(data)
    marker = p.dir / "user-script-ran"
    script = f"open({str(marker)!r}, 'a').write('ran\\n')\n"
    (p.dir / "pyocd_user.py").write_text(script)
    (p.dir / "evil.py").write_text(script)
    (p.dir / "pyocd.yaml").write_text("user_script: evil.py\nfrequency: 1\n")
    (p.dir / ".pyocd.yaml").write_text("user_script: evil.py\n")
    p.sconstruct("env.FlashAliases('{image}')\n")
    p.run("flash")
    p.run("verify")
    p.run("flash", "--force-flash", "--flash-check")
    p.run("erase")
    p.run("-n", "flash")
    assert not marker.exists()
    assert p.board.read_flash() == b"\xff" * (128 * PAGE)


def _modes(root: Path):
    return {str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
            for path in [root, *root.rglob("*")]}


def test_state_is_private_per_user_and_never_in_tmp(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    p = Project(tmp_path / "proj", "sim-private", create_board=False)
    data = random_image(2 * PAGE, seed=4)
    p.image(data)
    p.sconstruct("env.FlashAliases('{image}')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SCONS_PYOCD_STATE_DIR", "SCONS_PYOCD_SIM_DIR", "XDG_STATE_HOME")}
    env.update(HOME=str(home), TMPDIR=str(tmpdir))
    created = subprocess.run([sys.executable, "-m", "scons_pyocd.sim", "create", "sim-private"], env=env,
                             capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0))
    assert created.returncode == 0, created.stderr
    for args in (["flash"], ["verify"]):
        result = subprocess.run(scons_command() + ["-Q", *args], cwd=p.dir, env=env, capture_output=True,
                                text=True, timeout=300, preexec_fn=lambda: os.umask(0))
        assert result.returncode == 0, result.stderr
    state = home / ".local" / "state" / "scons-pyocd"
    modes = _modes(state)
    assert {"records", "locks", "sim", "sim/sim-private"} <= set(modes)
    assert any(name.startswith("records/") and name.endswith(".json") for name in modes)
    assert any(name.startswith("locks/") for name in modes)
    for name, mode in modes.items():
        path = state / name
        if path.is_dir():
            assert mode == 0o700, f"{name}: {oct(mode)}"
        elif not name.startswith("sim/"):          # records and locks
            assert mode == 0o600, f"{name}: {oct(mode)}"
        else:                                      # the simulated chip: never readable by others
            assert mode & 0o077 == 0 or path.parent.stat().st_mode & 0o077 == 0
    assert list(tmpdir.iterdir()) == []
    assert (state / "sim" / "sim-private" / "flash.bin").read_bytes()[:len(data)] == data
