"""Simulated boards exist only when created (issue 11, failing case 8 "Simulated boards by typo").

- A mistyped ``sim-`` id is an error that lists the boards that exist and says how to create
  one, through the real ``scons``, the real ``pyocd`` and ``scons-pyocd-sim``; nothing is
  created and no board is touched.
- pyOCD's own enumeration (``pyocd list``, ``pyocd flash`` without ``-u``) does not see
  simulated boards unless ``SCONS_PYOCD_SIM_LIST=1`` asks for them.
- Every created board has its own 96-bit unique id; ``factory`` keeps it unless told otherwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scons_project import Project, random_image
from scons_pyocd import paths
from scons_pyocd.errors import FlashError
from scons_pyocd.sim import BoardExists, BoardState, NoSuchBoard, create_board, ensure_board, list_boards
from scons_pyocd.sim.board import FLASH_BASE, InvalidBoardId, UNIQUE_ID_HEX_DIGITS

SIM_CLI = [sys.executable, "-m", "scons_pyocd.sim"]
LIST_ENV = "SCONS_PYOCD_SIM_LIST"


def sim_dir() -> Path:
    return paths.sim_root_path()


def run(argv, env_extra=None, **kw):
    env = dict(os.environ)
    env.pop(LIST_ENV, None)
    env.update(env_extra or {})
    return subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=120, **kw)


def needs_entry_point():
    from importlib.metadata import entry_points
    if not [ep for ep in entry_points(group="pyocd.probe") if ep.name == "sim"]:
        pytest.skip("scons-pyocd is not pip-installed: pyOCD's command line has no sim probe type")


def untouched(board: BoardState, flash: bytes, counters: dict) -> bool:
    return board.read_flash() == flash and board.counters() == counters


# -- through scons -------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["option", "variable"])
def test_scons_flash_with_a_mistyped_sim_id_is_a_clear_error_and_creates_nothing(tmp_path, how):
    p = Project(tmp_path / "p", "sim-mine")
    flash, counters = p.board.read_flash(), p.board.counters()
    p.image(random_image(3000))
    if how == "option":
        p.sconstruct("env.FlashAliases('fw.hex')\n")
        result = p.run("flash", "--probe=sim-m", check=False)
    else:
        p.sconstruct("env.FlashAliases('fw.hex')\n", probe="sim-m")
        result = p.run("flash", check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("scons: *** [fw.hex.sim-m.flashed] no simulated board 'sim-m': "
                                    "the simulated boards that exist are sim-mine"), result.stderr
    assert "Did you mean sim-mine?" in result.stderr
    assert "create it with 'scons-pyocd-sim create sim-m'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (sim_dir() / "sim-m").exists()
    assert list_boards() == ["sim-mine"]
    assert untouched(p.board, flash, counters)                 # the board it resembles: not opened
    assert "flash stm32f100rb via" not in result.stdout


def test_scons_flash_on_a_machine_without_simulated_boards_says_so(tmp_path):
    p = Project(tmp_path / "p", "sim-none", create_board=False)
    p.sconstruct("env.FlashAliases('fw.hex')\n")
    p.image(random_image(1000))
    result = p.run("flash", check=False)
    assert result.returncode != 0
    assert "no simulated board 'sim-none': no simulated board exists yet (in " in result.stderr
    assert "create it with 'scons-pyocd-sim create sim-none'" in result.stderr
    assert "Traceback" not in result.stderr
    assert list_boards() == []
    # Once created, the same command flashes it.
    board = create_board("sim-none")
    p.run("flash")
    assert board.read_flash(FLASH_BASE, 1000) == random_image(1000)


def test_scons_does_not_pick_a_simulated_board_unless_asked(tmp_path):
    p = Project(tmp_path / "p", "sim-only")
    p.sconstruct("env.FlashAliases('fw.hex')\n", probe="")
    p.image(random_image(1000))
    result = p.run("flash", check=False)
    assert result.returncode != 0 and "no debug probe found" in result.stderr
    assert p.board.counters()["connects"] == 0
    p.run("flash", env={LIST_ENV: "1"})
    assert p.board.read_flash(FLASH_BASE, 1000) == random_image(1000)


# -- pyOCD's own command line ------------------------------------------------------------------------

def test_pyocd_list_hides_simulated_boards_unless_the_switch_is_set():
    needs_entry_point()
    create_board("sim-listed")
    hidden = run([sys.executable, "-m", "pyocd", "list"])
    assert hidden.returncode == 0, hidden.stderr
    assert "sim-listed" not in hidden.stdout
    shown = run([sys.executable, "-m", "pyocd", "list"], {LIST_ENV: "1"})
    assert shown.returncode == 0, shown.stderr
    assert "sim-listed" in shown.stdout and "STM32VLDiscovery (simulated)" in shown.stdout


def test_pyocd_flash_without_u_does_not_stop_at_a_prompt_over_simulated_boards(tmp_path):
    needs_entry_point()
    a, b = create_board("sim-one"), create_board("sim-two")
    image = tmp_path / "img.bin"
    image.write_bytes(random_image(2048))
    # -W: do not wait for a probe to be plugged in (what a script passes).
    argv = [sys.executable, "-m", "pyocd", "flash", "-W", "-t", "stm32f100rb", "--base-address", hex(FLASH_BASE),
            str(image)]
    result = run(argv, cwd=tmp_path)
    assert result.returncode != 0
    assert "sim-one" not in result.stdout + result.stderr     # no menu of simulated boards
    assert a.counters()["connects"] == 0 and b.counters()["connects"] == 0
    # An explicit id flashes that board.
    result = run(argv[:5] + ["-u", "sim-two"] + argv[5:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b.read_flash(FLASH_BASE, 2048) == image.read_bytes() and a.counters()["connects"] == 0


def test_pyocd_with_a_mistyped_sim_id_lists_the_boards_and_creates_nothing(tmp_path):
    needs_entry_point()
    create_board("sim-mine")
    result = run([sys.executable, "-m", "pyocd", "commander", "-u", "sim-mien", "-c", "read32 0x08000000"],
                 cwd=tmp_path)
    assert result.returncode != 0
    assert "no simulated board 'sim-mien': the simulated boards that exist are sim-mine" in result.stderr
    assert not (sim_dir() / "sim-mien").exists()


# -- scons-pyocd-sim ----------------------------------------------------------------------------------

def test_sim_command_creates_lists_and_refuses_unknown_boards():
    assert run(SIM_CLI + ["list"]).stdout == ""
    shown = run(SIM_CLI + ["show", "sim-x"])
    assert shown.returncode == 2
    assert shown.stderr.startswith("scons-pyocd-sim: error: no simulated board 'sim-x': no simulated board "
                                   "exists yet")
    assert "Traceback" not in shown.stderr and not sim_dir().joinpath("sim-x").exists()
    made = run(SIM_CLI + ["create", "sim-x"])
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("sim-x: ")
    assert run(SIM_CLI + ["list"]).stdout.split() == ["sim-x"]
    again = run(SIM_CLI + ["create", "sim-x"])
    assert again.returncode == 2 and "simulated board 'sim-x' already exists" in again.stderr
    assert run(SIM_CLI + ["create", "sim-x", "--exist-ok"]).returncode == 0
    for command in (["fault", "sim-y", "hang_after", "5"], ["poke", "sim-y", "0x08000000", "00"],
                    ["factory", "sim-y"], ["counters", "sim-y"]):
        result = run(SIM_CLI + command)
        assert result.returncode == 2 and "the simulated boards that exist are sim-x" in result.stderr, command
    assert list_boards() == ["sim-x"]
    bad = run(SIM_CLI + ["create", "sim/../x"])
    assert bad.returncode == 2 and "invalid simulated board id" in bad.stderr


def test_created_boards_have_their_own_unique_ids_and_the_chip_reports_them():
    ids = {create_board(f"sim-u{i}").identity()["unique_id"] for i in range(8)}
    assert len(ids) == 8 and all(len(uid) == UNIQUE_ID_HEX_DIGITS for uid in ids)
    pytest.importorskip("pyocd")
    from pyocd.core.helpers import ConnectHelper
    from scons_pyocd import sim
    sim.register()
    for board_id in ("sim-u0", "sim-u1"):
        with ConnectHelper.session_with_chosen_probe(unique_id=board_id, target_override="stm32f100rb") as s:
            uid = bytes(s.target.read_memory_block8(0x1FFFF7E8, 12)).hex()
        assert uid == BoardState(board_id).identity()["unique_id"]


def test_factory_keeps_the_unique_id_unless_told_otherwise():
    board = create_board("sim-f")
    uid = board.identity()["unique_id"]
    board.write_flash(FLASH_BASE, b"\x00" * 8)
    board.set_identity("stm32f103re")
    assert run(SIM_CLI + ["factory", "sim-f"]).returncode == 0
    ident = board.identity()
    assert ident["unique_id"] == uid and ident["idcode"] == 0x10016420
    assert board.read_flash(FLASH_BASE, 8) == b"\xff" * 8
    assert run(SIM_CLI + ["factory", "sim-f", "--new-unique-id"]).returncode == 0
    assert board.identity()["unique_id"] != uid
    assert run(SIM_CLI + ["factory", "sim-f", "--unique-id", "00112233445566778899AABB"]).returncode == 0
    assert board.identity()["unique_id"] == "00112233445566778899aabb"
    bad = run(SIM_CLI + ["factory", "sim-f", "--unique-id", "1234"])
    assert bad.returncode != 0 and "24 hex digits" in bad.stderr
    assert board.identity()["unique_id"] == "00112233445566778899aabb"
    made = run(SIM_CLI + ["create", "sim-g", "--unique-id", "0123456789abcdef01234567"])
    assert made.returncode == 0 and BoardState("sim-g").identity()["unique_id"] == "0123456789abcdef01234567"


# -- the Python API ------------------------------------------------------------------------------------

def test_python_api_opens_creates_and_ensures():
    with pytest.raises(NoSuchBoard) as err:
        BoardState("sim-api")
    assert isinstance(err.value, FlashError) and err.value.existing == []
    assert not sim_dir().joinpath("sim-api").exists()
    board = create_board("sim-api")
    with pytest.raises(BoardExists):
        create_board("sim-api")
    board.write_flash(FLASH_BASE, b"kept")
    again = ensure_board("sim-api")                     # exists: left as it is
    assert again.read_flash(FLASH_BASE, 4) == b"kept"
    assert again.identity()["unique_id"] == board.identity()["unique_id"]
    assert ensure_board("sim-api2").read_flash(FLASH_BASE, 4) == b"\xff" * 4
    with pytest.raises(NoSuchBoard) as err:
        BoardState("sim-ap")
    assert err.value.existing == ["sim-api", "sim-api2"] and "Did you mean sim-api" in str(err.value)
    with pytest.raises(InvalidBoardId):
        BoardState("../escape")
    with pytest.raises(ValueError):                      # InvalidBoardId is a ValueError too
        create_board("a b")
    assert json.loads((sim_dir() / "sim-api" / "identity.json").read_text())["idcode"] == 0x10016420


@pytest.mark.parametrize("variables", [{"SCONS_PYOCD_SIM_DIR": "s"}, {"SCONS_PYOCD_STATE_DIR": "st"},
                                       {"XDG_STATE_HOME": "x"}, {}])
def test_looking_for_boards_looks_where_they_are_created(tmp_path, monkeypatch, variables):
    for name in ("SCONS_PYOCD_SIM_DIR", "SCONS_PYOCD_STATE_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in variables.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    looked = paths.sim_root_path()
    assert not looked.exists()                         # looking creates nothing
    assert paths.sim_root() == looked
