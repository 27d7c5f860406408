"""Finding probes and boards: ``scons probes`` and ``scons-pyocd probes`` (every probe pyOCD
sees, vendor/product, board/target, whether a board record exists), ``scons-pyocd boards``
(list, show, forget) for board records of real and simulated boards."""

import json
import re
import subprocess
import sys

import pytest

from scons_project import HANG, PAGE, Project, aliases_project, random_image

SIZE = 4 * PAGE


def cli(*args, check=True):
    """``scons-pyocd`` as installed (``python -m scons_pyocd.cli``: this checkout's code)."""
    result = subprocess.run([sys.executable, "-m", "scons_pyocd.cli", *args], capture_output=True, text=True,
                            timeout=HANG)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-a", SIZE)


def rows(text: str):
    """The table's rows as {unique id: the rest of the line}."""
    return {line.split()[0]: line for line in text.strip().splitlines()[1:]}


def test_scons_probes_lists_every_probe_and_whether_a_record_exists(project, tmp_path):
    Project(tmp_path / "b", "sim-b")
    before = rows(project.run("probes").stdout)
    assert set(before) == {"sim-a", "sim-b"}
    assert re.fullmatch(r"sim-a +scons-pyocd / Simulated ST-Link/V2 \+ STM32VLDiscovery +STM32VLDiscovery "
                        r"\(simulated\) / stm32f100rb +no", before["sim-a"])
    project.run("flash")
    after = rows(project.run("probes").stdout)
    assert after["sim-a"].endswith("yes: 1 image (1 valid)") and after["sim-b"].endswith("no")
    assert project.board.counters()["connects"] == 1          # listing opened no probe
    listed = json.loads(cli("probes", "--json").stdout)
    assert {r["unique_id"]: r["record"] for r in listed} == {"sim-a": "yes: 1 image (1 valid)", "sim-b": "no"}
    assert cli("probes", "--no-sim").stdout.startswith("no debug probe found")
    # A probe server is asked what it serves (test_review_findings.py: a served board's row);
    # nothing listening there is an error, not a row.
    dead = cli("probes", "remote:127.0.0.1:1", check=False)
    assert dead.returncode == 2 and "connection refused" in dead.stderr and "Traceback" not in dead.stderr
    assert "would list the debug probes" in project.run("-n", "probes").stdout


def test_boards_list_show_and_forget(project, tmp_path):
    assert cli("boards").stdout.startswith("no board records")
    project.run("flash")
    other = Project(tmp_path / "b", "sim-b")
    other.image(random_image(SIZE, seed=2))
    other.sconstruct("env.FlashAliases('{image}')\n")
    other.run("flash")
    listing = rows(cli("boards", "list").stdout)
    assert set(listing) == {"sim-a", "sim-b"}
    assert re.fullmatch(r"sim-a +stm32f100rb +[0-9a-f]{24} +1 \(1 valid\) +[-0-9: ]+", listing["sim-a"])

    shown = cli("boards", "show", "sim-a").stdout
    owner = str(project.record_file())
    assert f"owner {owner}" in shown and "fw.hex: valid, flashed" in shown
    assert "4 pages from 0x08000000" in shown and "PYOCD_FREQUENCY=4000000" in shown
    assert json.loads(cli("boards", "show", "sim-a", "--json").stdout)["entries"][0]["owner"] == owner

    # Forgetting one entry, then a whole record: the next flash connects and compares, and
    # programs nothing (the board does hold the image).
    result = cli("boards", "forget", "sim-a", "--owner", owner)
    assert result.stdout.strip() == (f"forgot the entry of {owner} of probe sim-a: the next scons flash "
                                     "there connects and compares the chip.")
    _, delta = project.counters_after("flash")
    assert (delta["connects"], delta["halfwords_programmed"]) == (1, 0)
    assert cli("boards", "forget", "sim-b").stdout.startswith("forgot the board record (1 image) of probe sim-b")
    assert set(rows(cli("boards").stdout)) == {"sim-a"}
    _, delta = other.counters_after("flash")
    assert (delta["connects"], delta["halfwords_programmed"]) == (1, 0)

    for args, message in [(["show", "sim-zz"], "no board record for probe sim-zz"),
                          (["forget", "sim-zz"], "no board record for probe sim-zz"),
                          (["forget", "sim-a", "--owner", "/nowhere"],
                           "the board record of probe sim-a has no entry for /nowhere")]:
        failed = cli("boards", *args, check=False)
        assert failed.returncode == 2 and failed.stderr.startswith(f"scons-pyocd: {message}")
        assert "Traceback" not in failed.stderr


def test_the_simulator_listing_switch_is_read_by_one_name():
    import pyocd.probe.aggregator  # noqa: F401  (first: it loads the pyocd.probe entry points)
    from scons_pyocd import sim_plugin
    from scons_pyocd.sim import probe
    assert sim_plugin.LIST_ENV == probe.LIST_ENV
