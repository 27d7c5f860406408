"""``scons flash`` / ``erase`` / ``verify`` end to end: the real scons, the real pyOCD,
the simulated STM32VLDiscovery. Assertions are on what the board holds and counted.
"""

import os
import re
import subprocess

import pytest

from scons_project import (ALIASES, FAST_FAIL, HANG, PAGE, Project, aliases_project, holds, killed_after,
                           random_image, scons_command, units)
from scons_pyocd.images import load_image
from scons_pyocd.records import probe_lock
from scons_pyocd.sim.board import FLASH_BASE

SIZE = 20 * PAGE          # 20 pages


@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-a", SIZE)



def test_first_flash_programs_every_page_and_the_second_is_a_no_op(project):
    result, delta = project.counters_after("flash")
    # An erased chip: nothing to erase (every page is found blank), every half-word programmed.
    assert (delta["mass_erases"], delta["pages_erased"], delta["halfwords_programmed"]) == \
        (0, 0, units(project.data))
    assert holds(project, project.data)
    assert result.stdout.strip().splitlines()[-1].startswith(
        "flash stm32f100rb via sim-a: fw.hex 0x08000000-0x08004FFF: 20 of 20 pages changed (0 erased, "
        "20 programmed), 20 KiB in ")
    assert project.record_entry()["valid"]

    before = project.board.counters()
    assert not project.imports_pyocd("flash")
    assert project.board.counters() == before            # no connect, nothing at all
    result = project.run("flash")
    assert result.stdout.startswith("flash is up to date (image fw.hex ")
    assert "at 0x08000000-0x08004FFF, board sim-a" in result.stdout


def test_auto_erase_never_mass_erases_over_data_outside_the_image(project):
    project.board.write_flash(FLASH_BASE, random_image(SIZE, seed=9))      # another image
    project.board.write_flash(FLASH_BASE + 100 * PAGE + 3, b"\x5a")    # someone else's data
    result, delta = project.counters_after("flash")
    assert (delta["mass_erases"], delta["pages_erased"]) == (0, 20)
    assert "20 of 20 pages changed" in result.stdout
    assert holds(project, project.data)
    assert project.board.read_flash(FLASH_BASE + 100 * PAGE, 8) == b"\xff\xff\xff\x5a\xff\xff\xff\xff"


def test_auto_erase_picks_a_mass_erase_when_every_page_changes_and_the_rest_is_blank(project):
    project.run("flash")
    other = random_image(SIZE, seed=2)
    project.image(other)
    result, delta = project.counters_after("flash")
    assert (delta["mass_erases"], delta["pages_erased"], delta["halfwords_programmed"]) == (1, 0, SIZE // 2)
    assert holds(project, other)
    # A few pages changed: page erases, never a mass erase.
    changed = bytearray(other)
    changed[3 * PAGE] ^= 1
    changed[11 * PAGE + 5] ^= 1
    project.image(bytes(changed))
    result, delta = project.counters_after("flash")
    assert (delta["mass_erases"], delta["pages_erased"], delta["halfwords_programmed"]) == (0, 2, PAGE)
    assert holds(project, bytes(changed))


def test_a_changed_image_repairs_a_board_rewritten_behind_the_tools_back(project):
    project.run("flash")
    project.board.erase_flash()                                   # another tool erased it
    project.board.write_flash(FLASH_BASE + 15 * PAGE, b"\x00\x00")  # and wrote a little
    changed = bytearray(project.data)
    changed[7 * PAGE + 9] ^= 0xFF
    project.image(bytes(changed))
    # The record still says the old image is there, but the flash compares every page
    # with the chip: never "verified" over flash that is not the image.
    result, delta = project.counters_after("flash")
    assert holds(project, bytes(changed))
    assert delta["halfwords_programmed"] == SIZE // 2 and "verified (crc)" in result.stdout
    project.run("verify")


def test_one_byte_change_programs_exactly_one_page(project):
    project.run("flash")
    changed = bytearray(project.data)
    changed[7 * PAGE + 100] ^= 0xFF
    project.image(bytes(changed))
    result, delta = project.counters_after("flash")
    assert (delta["pages_erased"], delta["halfwords_programmed"], delta["mass_erases"]) == (1, PAGE // 2, 0)
    assert holds(project, bytes(changed))
    assert "1 of 20 pages changed (1 erased, 1 programmed), 1 KiB" in result.stdout


def test_pyocd_debug_prints_the_plan_before_anything_is_written(project):
    project.run("flash")
    changed = bytearray(project.data)
    changed[3 * PAGE + 1] ^= 0x01
    project.image(bytes(changed))
    result, delta = project.counters_after("flash", "--pyocd-debug")
    lines = result.stderr.splitlines()
    first = next(i for i, line in enumerate(lines)
                 if line.startswith("flash plan for ") and "fw.hex: 20 page(s) touched" in line)
    steps = [line.split()[0] for line in lines[first + 1:first + 6]]
    assert steps == ["compare", "erase", "program", "verify", "total"], lines[first:first + 6]
    assert "1 page(s): 0x08000C00-0x08000FFF" in lines[first + 2] and "est." in lines[first + 2]
    assert delta["pages_erased"] == 1 and holds(project, bytes(changed))


@pytest.mark.parametrize("args", [
    ["--erase-mode=sector"],
    ["--frequency=2MHz"],
    ["--reset=halt"],
    ["--verify=read"],
    ["--connect=under-reset"],
    ["--base-address=0x08000000"],
    ["--target="],                      # the probe's own target instead of the named one
], ids=lambda a: a[0])
def test_changing_an_option_reflashes_once(project, args):
    project.run("flash")
    _, delta = project.counters_after("flash", *args)
    assert delta["connects"] == 1, "a changed option must reflash"
    _, delta = project.counters_after("flash", *args)
    assert delta["connects"] == 0, "the same option again is up to date"


def test_changing_an_option_in_the_sconstruct_reflashes(project):
    project.run("flash")
    project.sconstruct(ALIASES, PYOCD_OPTIONS={"flash.timeout.program": 5.0})
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 1


def test_changing_the_probe_flashes_the_other_board_and_keeps_both_up_to_date(project):
    project.run("flash")
    other = Project(project.dir, "sim-b")
    _, delta_b = other.counters_after("flash", "--probe=sim-b")
    assert holds(other, project.data)
    assert delta_b["halfwords_programmed"] == SIZE // 2
    # Back to the first board: it still holds the image and its record says so.
    _, delta_a = project.counters_after("flash", "--probe=sim-a")
    assert delta_a["connects"] == 0


def test_erase_then_flash_reprograms(project):
    project.run("flash")
    result, delta = project.counters_after("erase")
    assert delta["mass_erases"] == 1
    assert re.fullmatch(r"erase stm32f100rb via sim-a: mass erase in \d+\.\d s", result.stdout.strip())
    assert project.board.read_flash() == b"\xff" * 128 * 1024
    assert not project.record_entry()["valid"]
    result, delta = project.counters_after("--debug=explain", "flash")
    assert delta["halfwords_programmed"] == SIZE // 2 and holds(project, project.data)
    assert "mass erase by scons erase" in result.stdout        # --debug=explain says why


def test_erase_of_an_address_range_erases_those_sectors_only(project):
    project.sconstruct(ALIASES + "env.Alias('erase-some', env.Erase(PYOCD_ERASE_RANGES='0x08000400+0x800'))\n")
    project.run("flash")
    result, delta = project.counters_after("erase-some")
    assert (delta["pages_erased"], delta["mass_erases"]) == (2, 0)
    assert project.board.read_flash(FLASH_BASE + PAGE, 2 * PAGE) == b"\xff" * 2 * PAGE
    assert holds(project, project.data[:PAGE]) and holds(project, project.data[3 * PAGE:], FLASH_BASE + 3 * PAGE)
    _, delta = project.counters_after("flash")     # the two pages are blank: programmed, not erased
    assert (delta["pages_erased"], delta["halfwords_programmed"]) == (0, units(project.data, [1, 2]))
    assert holds(project, project.data)


def test_another_project_on_the_same_board_makes_the_first_reflash(project, tmp_path):
    project.run("flash")
    b = Project(tmp_path / "b", "sim-a")
    b.image(random_image(SIZE, seed=2))
    b.sconstruct(ALIASES)
    b.run("flash")
    result, delta = project.counters_after("--debug=explain", "flash")
    assert delta["halfwords_programmed"] == SIZE // 2 and holds(project, project.data)
    assert "flash of " in result.stdout and str(b.dir) in result.stdout
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0
    _, delta = b.counters_after("flash")
    assert delta["halfwords_programmed"] == SIZE // 2


def test_verify_passes_then_fails_naming_the_address_after_the_chip_is_altered(project):
    project.run("flash")
    result, delta = project.counters_after("verify")
    assert "verify stm32f100rb via sim-a:" in result.stdout and "matches (crc)" in result.stdout
    assert delta["pages_erased"] == delta["halfwords_programmed"] == 0
    address = FLASH_BASE + 5 * PAGE + 17
    project.board.write_flash(address, bytes([project.data[5 * PAGE + 17] ^ 0x5A]))
    result = project.run("verify", check=False)
    assert f"verify failed on probe sim-a: at 0x{address:08X} the chip holds" in result.stderr
    assert f"has 0x{project.data[5 * PAGE + 17]:02X}" in result.stderr
    assert not project.record_entry()["valid"]
    _, delta = project.counters_after("flash")          # the failed verify invalidated the record
    assert delta["pages_erased"] == 1 and holds(project, project.data)
    project.run("verify")


def test_verify_by_reading_back_finds_the_same_address(project):
    project.run("flash")
    address = FLASH_BASE + SIZE - 3                        # in the last page
    project.board.write_flash(address, b"\x00")
    result, delta = project.counters_after("verify", "--verify=read", check=False)
    assert f"at 0x{address:08X} the chip holds 0x00" in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == 0      # verify writes nothing
    assert not project.record_entry()["valid"]                               # nor trusts the record
    assert project.board.read_flash(address, 1) == b"\x00"


@pytest.mark.parametrize("fault,value", [
    ("disconnect_after", 1500),
    ("hang_after", 1500),
    ("power_loss_after_halfwords", 3000),
])
def test_a_failed_flash_leaves_no_record_and_the_next_run_programs(project, fault, value):
    project.sconstruct(ALIASES, PYOCD_OPTIONS=FAST_FAIL)
    project.board.set_fault(fault, value)
    result, delta = project.counters_after("flash", check=False)
    assert "The board is not recorded as flashed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not project.record_file().exists()
    entry = project.record_entry()
    assert entry is None or not entry["valid"]
    project.board.clear_faults()
    _, delta = project.counters_after("flash")
    assert delta["halfwords_programmed"] > 0
    assert holds(project, project.data)
    assert project.record_entry()["valid"]
    project.run("verify")


def test_a_write_protected_chip_fails_the_flash_and_leaves_no_record(project):
    # Write-protect pages 0-3: erasing them fails.
    project.board.set_write_protection([0])
    result, delta = project.counters_after("flash", check=False)
    assert delta["connects"] == 1 and delta["pages_erased"] == 0             # page 0 could not be erased
    assert "Traceback" not in result.stderr
    assert "not recorded as flashed" in result.stderr
    entry = project.record_entry()
    assert entry is None or not entry["valid"]
    assert not project.record_file().exists()


def test_the_wrong_chip_is_refused_before_any_write(project):
    project.board.set_identity("stm32f103rb")
    result, delta = project.counters_after("flash", check=False)
    assert "is not a STM32F100RB" in result.stderr and "device id 0x410" in result.stderr
    assert "Nothing was written" in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0
    assert project.board.read_flash() == b"\xff" * 128 * 1024
    project.board.set_identity(flash_kb=64)               # right id, wrong flash size
    result, delta = project.counters_after("flash", check=False)
    assert "64 KiB of flash" in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == 0


def test_a_target_name_for_another_chip_is_refused_before_any_write(project):
    # pyOCD's nrf52840 target looks for an access port the STM32 does not have. A .bin goes
    # to that target's flash start, so the image fits its memory map and the probe is opened.
    (project.dir / "fw.bin").write_bytes(project.data)
    project.sconstruct(ALIASES, image="fw.bin")
    result, delta = project.counters_after("flash", "--target=nrf52840", check=False)
    assert "pyOCD could not set up nrf52840 on the chip behind probe sim-a" in result.stderr
    assert "the chip is probably not a nrf52840. Nothing was written. Check PYOCD_TARGET" in result.stderr
    assert "Traceback" not in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0
    assert project.record_entry("fw.bin") is None


@pytest.mark.parametrize("base,size,expect", [
    (FLASH_BASE + 127 * PAGE, 2 * PAGE, "run past the end of"),
    (0x20000000, PAGE, "lie outside"),
    (FLASH_BASE, 129 * PAGE, "more than the"),
])
def test_an_image_outside_flash_is_refused_before_any_write(project, base, size, expect):
    project.image(random_image(size, seed=3), base=base)
    result, delta = project.counters_after("flash", check=False)
    assert expect in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0


def test_dry_run_shows_what_would_be_flashed_without_touching_the_probe(project):
    result, delta = project.counters_after("-n", "flash")
    assert result.stdout.strip() == "would flash fw.hex onto stm32f100rb via sim-a (board record says: no record of board sim-a)"
    assert delta["connects"] == 0
    project.run("flash")
    result = project.run("-n", "flash")
    assert result.stdout.startswith("flash is up to date")


def test_force_flash_connects_even_when_up_to_date(project):
    project.run("flash")
    result, delta = project.counters_after("flash", "--force-flash")
    assert delta["connects"] == 1 and delta["halfwords_programmed"] == 0
    assert "0 of 20 pages changed" in result.stdout


def test_flash_check_asks_the_chip(project):
    project.run("flash")
    result, delta = project.counters_after("flash", "--flash-check")
    assert delta["connects"] == 1 and delta["halfwords_programmed"] == 0
    assert "flash is up to date (checked on the chip" in result.stdout
    # Another tool rewrites a page: the record cannot know, the chip check does.
    project.board.write_flash(FLASH_BASE + 3 * PAGE, b"\x00\x00")
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0
    _, delta = project.counters_after("flash", "--flash-check")
    assert delta["pages_erased"] == 1 and holds(project, project.data)


def test_comstr_replaces_the_result_line_and_silent_mode_prints_nothing(project):
    project.sconstruct(ALIASES, FLASHCOMSTR="Flashing $SOURCE")
    result = project.run("flash")
    assert result.stdout.strip() == "Flashing fw.hex"
    project.board.erase_flash()
    result = project.run("-s", "flash", "--force-flash")
    assert result.stdout.strip() == ""


def test_raw_binary_goes_to_the_flash_start_and_elf_to_its_load_addresses(project, shared_firmware):
    nuttx = shared_firmware / "stm32vldiscovery-nsh-v1"
    project.sconstruct(f"env.Alias('bin', env.Flash({str(nuttx / 'nuttx.bin')!r}))\n"
                       f"env.Alias('elf', env.Flash({str(nuttx / 'nuttx')!r}))\n")
    result, delta = project.counters_after("bin")
    data = (nuttx / "nuttx.bin").read_bytes()
    assert holds(project, data) and delta["halfwords_programmed"] == units(data)
    assert (project.dir / "nuttx.bin.sim-a.flashed").exists()    # beside the SConstruct, not in ../shared
    _, delta = project.counters_after("elf")                        # same bytes from the ELF: nothing to program
    assert delta["connects"] == 1 and delta["halfwords_programmed"] == 0


def test_nuttx_v1_v2_v3_program_the_pages_that_differ(project, shared_firmware):
    hexes = [shared_firmware / v / "nuttx.hex" for v in
             ("stm32vldiscovery-nsh-v1", "stm32vldiscovery-nsh-v2", "stm32vldiscovery-nsh-v3-codeshift")]
    # v1 onto an erased chip: nothing to erase; v2 differs from v1 in 2 pages: 2 page erases;
    # v3 (every page differs, the rest blank): a mass erase is cheaper than 39 page erases.
    bins = [load_image(path).to_bytes() for path in hexes]
    differ = [p for p in range(len(bins[1]) // PAGE + 1)
              if bins[0][p * PAGE:(p + 1) * PAGE] != bins[1][p * PAGE:(p + 1) * PAGE]]
    assert len(differ) == 2
    expected = [(0, 0, units(bins[0])), (0, 2, units(bins[1], differ)), (1, 0, units(bins[2]))]
    for path, counts in zip(hexes, expected):
        (project.dir / "fw.hex").write_bytes(path.read_bytes())
        _, delta = project.counters_after("flash")
        assert (delta["mass_erases"], delta["pages_erased"], delta["halfwords_programmed"]) == counts
        project.run("verify")


def test_default_probe_is_the_only_one_attached_and_several_are_listed(project, tmp_path, monkeypatch):
    project.sconstruct(ALIASES, probe="")
    project.board.erase_flash()                   # sim-a exists: the only board
    result, delta = project.counters_after("flash", check=False)
    assert "no debug probe found" in result.stderr and delta["connects"] == 0   # hidden from enumeration
    monkeypatch.setenv("SCONS_PYOCD_SIM_LIST", "1")                             # unless asked for
    _, delta = project.counters_after("flash")
    assert delta["halfwords_programmed"] == SIZE // 2
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0
    Project(tmp_path / "x", "sim-second")         # a second board appears
    result = project.run("flash", "--force-flash", check=False)
    assert "several debug probes are attached: sim-a" in result.stderr and "sim-second" in result.stderr


def test_unknown_probe_lists_the_attached_ones(project, monkeypatch):
    monkeypatch.setenv("SCONS_PYOCD_SIM_LIST", "1")
    result, delta = project.counters_after("flash", "--probe=stlink-0042", check=False)
    assert "no probe matches PYOCD_PROBE='stlink-0042': attached probes are: sim-a" in result.stderr
    assert delta["connects"] == 0


def test_bad_option_values_are_refused_while_reading_the_sconstruct(project):
    result = project.run("flash", "--erase-mode=everything", check=False)
    assert "--erase-mode='everything' is not one of auto, sector, chip" in result.stderr
    result = project.run("flash", "--frequency=fast", check=False)
    assert "--frequency='fast' is not a frequency" in result.stderr
    assert project.board.counters()["connects"] == 0


def test_parallel_builds_flash_two_boards_and_serialize_one(tmp_path):
    p = Project(tmp_path / "par", "sim-p")
    data = random_image(8 * PAGE, seed=4)
    p.image(data)
    p.image(random_image(4 * PAGE, seed=5), name="boot.hex", base=FLASH_BASE + 64 * PAGE)
    p.sconstruct("env.Alias('flash', [env.Flash('fw.hex', PYOCD_PROBE='sim-p'),\n"
                 "                    env.Flash('fw.hex', PYOCD_PROBE='sim-q'),\n"
                 "                    env.Flash('boot.hex', PYOCD_PROBE='sim-p')])\n")
    q = Project(tmp_path / "par", "sim-q")
    p.run("-j3", "flash")
    assert holds(p, data) and holds(q, data)
    assert p.board.read_flash(FLASH_BASE + 64 * PAGE, 4 * PAGE) == random_image(4 * PAGE, seed=5)
    assert p.board.counters()["connects"] == 2 and q.board.counters()["connects"] == 1
    before = (p.board.counters(), q.board.counters())
    result = p.run("-j3", "flash")
    assert result.stdout.count("flash is up to date (") == 3, result.stdout
    assert (p.board.counters(), q.board.counters()) == before               # no probe opened


def test_a_second_process_waits_for_the_probe_lock(project):
    project.run("flash")
    project.image(random_image(SIZE, seed=9))
    with probe_lock("sim-a"):
        proc = subprocess.Popen(scons_command() + ["-Q", "flash"], cwd=project.dir, env=dict(os.environ),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with killed_after(proc):
            first = proc.stdout.readline()
        assert first.strip() == f"waiting for probe sim-a held by pid {os.getpid()}"
        assert project.board.counters()["connects"] == 1       # it has not touched the probe
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    assert "20 of 20 pages" in out
    assert project.board.counters()["connects"] == 2


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_an_interrupted_flash_leaves_no_record_and_the_next_run_programs(tmp_path, signal_name):
    import signal
    import time
    p = Project(tmp_path / "int", "sim-int")
    data = random_image(100 * PAGE, seed=11)
    p.image(data)
    p.sconstruct(ALIASES)
    p.board.set_fault("pause_after_halfwords", 1)      # the simulated probe pauses once programming began
    proc = subprocess.Popen(scons_command() + ["-Q", "flash"], cwd=p.dir, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + HANG
    while not p.board.paused() and proc.poll() is None:
        assert time.monotonic() < deadline, "scons never started programming"
        time.sleep(0.005)
    os.killpg(proc.pid, getattr(signal, signal_name))
    p.board.resume()
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode != 0
    assert 0 < p.board.counters()["halfwords_programmed"] < len(data) // 2, "interrupted mid-flash"
    if signal_name == "SIGINT":
        assert "Build interrupted" in err       # SCons words it; the flash stopped between pages
    entry = p.record_entry()
    assert entry is None or not entry["valid"]
    assert not p.record_file().exists()
    _, delta = p.counters_after("flash")
    assert delta["halfwords_programmed"] > 0 and holds(p, data)
    p.run("verify")



GENERIC_TARGET = """\
from pyocd.target import TARGET
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from scons_pyocd.target_stm32f100rb import FLASH_ALGO, STM32F100RB

class Generic(STM32F100RB):
    MEMORY_MAP = MemoryMap(
        FlashRegion(start=0x08000000, length=0x20000, blocksize=0x400, is_boot_memory=True,
                    algo={{k: v for k, v in FLASH_ALGO.items() if k != 'scons_pyocd'}},
                    erased_byte_value=0xFF, erase_all_weight=0.02, erase_sector_weight=0.02,
                    program_page_weight=0.02688),
        RamRegion(start=0x20000000, length=0x2000))

TARGET['generic_f100'] = Generic
"""


def test_a_target_whose_algorithm_has_no_command_tables_is_flashed_through_pyocds_flash_api(project):
    """Other targets (a CMSIS pack, pyOCD's built-in ones) go through pyOCD's public Flash API:
    the same plan, carried out with erase_sector / erase_all / program_page, compared by
    pyOCD's CRC analyzer and reads."""
    project.sconstruct(GENERIC_TARGET + ALIASES, target="generic_f100")
    result, delta = project.counters_after("flash")
    assert holds(project, project.data) and delta["pages_erased"] == delta["mass_erases"] == 0
    assert "20 of 20 pages changed" in result.stdout
    changed = bytearray(project.data)
    changed[5 * PAGE + 9] ^= 0x40
    project.image(bytes(changed))
    result, delta = project.counters_after("flash")
    assert (delta["pages_erased"], delta["mass_erases"]) == (1, 0) and holds(project, bytes(changed))
    assert "1 of 20 pages changed" in result.stdout
    assert "matches (crc)" in project.run("verify").stdout
    # Every page differs and the rest of the flash is blank: one mass erase (EraseChip).
    other = random_image(SIZE, seed=77)
    project.image(other)
    result, delta = project.counters_after("flash", "--verify=read")
    assert (delta["pages_erased"], delta["mass_erases"]) == (0, 1) and holds(project, other)
    assert "mass erase, 20 of 20 pages programmed" in result.stdout
    project.board.write_flash(FLASH_BASE + 7 * PAGE, b"\x00")      # behind the tool's back
    result = project.run("verify", check=False)
    assert f"verify failed on probe sim-a: at 0x{FLASH_BASE + 7 * PAGE:08X}" in result.stderr
