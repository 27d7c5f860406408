"""Faults, interruptions, wrong target definitions and concurrent builds, through the real
``scons`` and pyOCD against the simulated board.

The invariant checked after every failure: no valid board record claims an image the
chip does not hold, the error names what happened and what to do, the next ``scons
flash`` (fault cleared) leaves the chip holding exactly the image with everything outside
it as it was, and ``scons verify`` passes. Each fault is injected at several points of the
flash (fractions of a calibrated run: connecting, erasing, programming, verifying).
Single-point versions live in test_tool_flash.py.
"""

import os
import signal
import subprocess
import time

import pytest

from scons_project import (ALIASES, FAST_FAIL, HANG, PAGE, Project, killed_after, random_image, scons_command,
                           without_progress)
from scons_pyocd.images import Image
from scons_pyocd.sim.board import FLASH_BASE, FLASH_SIZE

PAGES = 16
FOREIGN = FLASH_BASE + 100 * PAGE + 6      # someone else's data, outside every image here
NOT_RECORDED = "The board is not recorded as flashed; run the command again once fixed."


def sha(data, base=FLASH_BASE):
    return Image([(base, data)]).sha256()


def old_and_new(pages=PAGES):
    """Image A, and B with every other page changed."""
    a = random_image(pages * PAGE, seed=21)
    b = bytearray(a)
    for page in range(0, pages, 2):
        b[page * PAGE + 5] ^= 0xFF
    return a, bytes(b)


def transfers(delta):
    return (delta["dp_bytes_read"] + delta["dp_bytes_written"]) // 4


_calibration = {}


def calibrate(tmp_path):
    """Debug-port transfers and half-words of the A -> B flash (deterministic), measured once."""
    if not _calibration:
        p = Project(tmp_path / "calibrate", "sim-calibrate")
        a, b = old_and_new()
        p.board.write_flash(FOREIGN, b"\x5a")
        p.sconstruct(ALIASES, PYOCD_OPTIONS=FAST_FAIL)
        p.image(a)
        p.run("flash")
        p.image(b)
        _, delta = p.counters_after("flash")
        _calibration.update(transfers=transfers(delta), halfwords=delta["halfwords_programmed"])
    return _calibration


@pytest.fixture
def project(tmp_path):
    """Image A flashed (and recorded), foreign data beyond it, image B written to fw.hex."""
    p = Project(tmp_path / "p", "sim-rel")
    p.a, p.b = old_and_new()
    p.board.write_flash(FOREIGN, b"\x5a")
    p.sconstruct(ALIASES, PYOCD_OPTIONS=FAST_FAIL)
    p.image(p.a)
    p.run("flash")
    p.image(p.b)
    p.expected_rest = p.board.read_flash(FLASH_BASE + len(p.a))
    return p


def check_failed(project, result):
    """A failed flash: one message, no traceback, no record claiming what the chip lacks."""
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert without_progress(result.stderr).startswith("scons: *** [fw.hex.sim-rel.flashed] ")
    assert not project.record_file().exists()
    entry = project.record_entry()
    if entry is not None and entry["valid"]:
        # Only possible when the failure came before any write: the chip still holds A.
        assert entry["image_sha256"] == sha(project.a)
        assert project.board.read_flash(FLASH_BASE, len(project.a)) == project.a
    assert project.board.read_flash(FLASH_BASE + len(project.a)) == project.expected_rest


def check_recovers(project):
    """The next flash programs B exactly, keeps the rest, records it; verify passes; then up to date."""
    result, delta = project.counters_after("flash")
    assert not result.stdout.startswith("flash is up to date"), "a false 'up to date' after a failure"
    assert delta["connects"] == 1
    assert project.board.read_flash(FLASH_BASE, len(project.b)) == project.b
    assert project.board.read_flash(FLASH_BASE + len(project.b)) == project.expected_rest
    entry = project.record_entry()
    assert entry["valid"] and entry["image_sha256"] == sha(project.b)
    assert "matches (crc)" in project.run("verify").stdout
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0


# -- faults at several points --------------------------------------------------------------

WORDING = {
    "disconnect_after": ["probe sim-rel disconnected while ", "Check the USB cable and the probe's power"],
    "hang_after": ["the target behind probe sim-rel stopped answering while ",
                   "Check the target's power and the SWD wiring"],
    "fault_after": ["the target behind probe sim-rel refused a memory access while ",
                    "check PYOCD_TARGET, or connect with PYOCD_CONNECT='under-reset'"],
    "power_loss_after_halfwords": ["no answer from the target behind probe sim-rel while ",
                                   "Check that the target is powered and wired to the probe"],
}
NO_CORE = "no CPU core answered behind probe sim-rel while connecting: the target stopped answering"
PHASES = ("connecting", "reading the chip's identity", "comparing", "flashing", "verifying", "resetting")


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.45, 0.97])
@pytest.mark.parametrize("fault", ["disconnect_after", "hang_after", "fault_after"])
def test_a_transfer_fault_at_any_point_leaves_no_false_record_and_the_next_flash_recovers(
        project, tmp_path, fault, fraction):
    point = max(1, int(calibrate(tmp_path)["transfers"] * fraction))
    project.board.set_fault(fault, point)
    result = project.run("flash", check=False)
    check_failed(project, result)
    message = result.stderr
    assert message.rstrip().endswith(NOT_RECORDED)
    if NO_CORE in message:       # the fault hit pyOCD's scan of the chip while connecting
        assert "Check the target's power and the SWD wiring" in message
    else:
        first, todo = WORDING[fault]
        assert first in message and todo in message, message
        assert message.split(first, 1)[1].startswith(PHASES), message
    assert project.board.faults() == {}, "the fault fired"
    check_recovers(project)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_power_lost_mid_page_at_any_point_leaves_no_false_record_and_the_next_flash_recovers(
        project, tmp_path, fraction):
    point = int(calibrate(tmp_path)["halfwords"] * fraction) + 1
    project.board.set_fault("power_loss_after_halfwords", point)
    result, delta = project.counters_after("flash", check=False)
    check_failed(project, result)
    first, todo = WORDING["power_loss_after_halfwords"]
    assert first in result.stderr and todo in result.stderr and NOT_RECORDED in result.stderr
    assert delta["halfwords_programmed"] == point - 1 or delta["halfwords_programmed"] == point
    assert project.board.read_flash(FLASH_BASE, len(project.b)) not in (project.a, project.b)
    check_recovers(project)


@pytest.mark.parametrize("page", [0, 8, 14])
def test_a_write_protected_page_anywhere_in_the_image_fails_loudly_then_recovers(project, page):
    project.board.set_write_protection([page])       # WRP covers the 4-page group holding it
    result = project.run("flash", check=False)
    check_failed(project, result)
    assert ("the chip refused to erase flash while flashing" in result.stderr
            and "A page may be write-protected (WRP option bytes)" in result.stderr), result.stderr
    group = range(page // 4 * 4, page // 4 * 4 + 4)
    chip = project.board.read_flash(FLASH_BASE, len(project.a))
    for p in group:                                   # the protected pages were not touched
        assert chip[p * PAGE:(p + 1) * PAGE] == project.a[p * PAGE:(p + 1) * PAGE]
    project.board.set_write_protection([])
    check_recovers(project)


def test_a_read_protected_chip_fails_loudly_then_recovers(project):
    project.board.set_read_protection(True)
    result, delta = project.counters_after("flash", check=False)
    check_failed(project, result)
    assert "read-protected" in result.stderr and NOT_RECORDED in result.stderr, result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0
    project.board.set_read_protection(False)
    check_recovers(project)


@pytest.mark.parametrize("chip,reported", [("stm32f103re", "device id 0x414"), ("stm32f103rb", "device id 0x410")])
def test_the_wrong_chip_is_refused_without_a_write_then_the_right_one_recovers(project, chip, reported):
    project.board.set_identity(chip)
    result, delta = project.counters_after("flash", check=False)
    check_failed(project, result)
    assert (f"the chip behind probe sim-rel is not a STM32F100RB (value line, 128 KiB flash): it reports "
            f"{reported}") in result.stderr
    assert "Nothing was written" in result.stderr
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0
    assert project.board.read_flash(FLASH_BASE, len(project.a)) == project.a
    project.board.set_identity("stm32f100rb")
    check_recovers(project)


# -- Ctrl-C and SIGKILL at several points ----------------------------------------------------

BIG = 60


def start_flash(project, *args):
    return subprocess.Popen(scons_command() + ["-Q", "flash", *args], cwd=project.dir, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def start_paused_at(project, point):
    """Start a flash that the simulated probe pauses at ``point`` (a pause fault and its count,
    set before the flash starts); wait (bounded) until it has paused there, at its first
    transfer past the count: the point is reached exactly, however busy the machine.
    Returns (the scons process, the board's counters at the pause)."""
    fault, count = point
    project.board.set_fault(fault, count)
    proc = start_flash(project)
    deadline = time.monotonic() + HANG          # a safety net, not a timing assertion
    while not project.board.paused():
        assert proc.poll() is None, "scons ended before the point was reached:\n" + proc.stderr.read()
        assert time.monotonic() < deadline, "scons never reached the point"
        time.sleep(0.005)
    return proc, project.board.counters()


POINTS = {
    "erasing": ("pause_after_pages_erased", 10),
    "programming-early": ("pause_after_halfwords", 10 * PAGE // 2),
    "programming-late": ("pause_after_halfwords", 48 * PAGE // 2),
}


@pytest.fixture
def big(tmp_path):
    p = Project(tmp_path / "big", "sim-rel")
    p.a = random_image(BIG * PAGE, seed=31)
    p.b = random_image(BIG * PAGE, seed=32)             # every page differs
    p.board.write_flash(FOREIGN + 10 * PAGE, b"\xa5")   # so no mass erase: pages one by one
    p.sconstruct(ALIASES)
    p.image(p.a)
    p.run("flash")
    p.image(p.b)
    p.expected_rest = p.board.read_flash(FLASH_BASE + len(p.a))
    return p


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_an_interrupted_or_killed_flash_at_any_point_recovers(big, signal_name, point):
    base = big.board.counters()
    proc, at = start_paused_at(big, POINTS[point])
    fault, count = POINTS[point]
    done = "halfwords_programmed" if fault == "pause_after_halfwords" else "pages_erased"
    assert at[done] - base[done] >= count                       # the point was reached
    programmed = at["halfwords_programmed"] - base["halfwords_programmed"]
    assert programmed < BIG * PAGE // 2, "stopped mid-flash"
    os.killpg(proc.pid, getattr(signal, signal_name))
    big.board.resume()
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode != 0
    assert "Traceback" not in err
    if signal_name == "SIGINT":
        assert "Build interrupted" in err, err     # SCons words it; the flash stopped between pages
    entry = big.record_entry()
    assert entry is not None and not entry["valid"]
    assert "not completed" in entry["invalidated"]["reason"] or "failed" in entry["invalidated"]["reason"]
    assert not big.record_file().exists()
    assert big.board.read_flash(FLASH_BASE + len(big.a)) == big.expected_rest
    big.board.clear_faults()
    check_recovers(big)


# -- the probe lock: released when its holder is killed ------------------------------------

def test_a_killed_flash_releases_the_probe_to_the_process_waiting_for_it(big, tmp_path):
    other = Project(tmp_path / "other", "sim-rel")
    other.data = random_image(8 * PAGE, seed=33)
    other.image(other.data, base=FLASH_BASE + 110 * PAGE)
    other.sconstruct(ALIASES)
    holder, _ = start_paused_at(big, POINTS["programming-early"])
    waiter = subprocess.Popen(scons_command() + ["-Q", "flash"], cwd=other.dir, env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with killed_after(waiter):
        assert waiter.stdout.readline().strip() == f"waiting for probe sim-rel held by pid {holder.pid}"
    assert waiter.poll() is None
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=HANG)
    big.board.resume()
    out, err = waiter.communicate(timeout=HANG)
    assert waiter.returncode == 0, err
    assert "flash stm32f100rb via sim-rel: " in out
    assert big.board.read_flash(FLASH_BASE + 110 * PAGE, len(other.data)) == other.data
    assert other.record_entry()["valid"]
    entry = big.record_entry()
    assert entry is not None and not entry["valid"]
    big.expected_rest = big.board.read_flash(FLASH_BASE + len(big.a))    # with other's image
    check_recovers(big)                   # and the killed project's image goes on next time
    assert other.board.read_flash(FLASH_BASE + 110 * PAGE, len(other.data)) == other.data


# -- target definitions whose sectors are not the chip's pages (pyOCD #708, #1700, #1983) --

WRONG_TARGET = """\
from pyocd.target import TARGET
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from scons_pyocd.target_stm32f100rb import FLASH_ALGO, STM32F100RB

class Wrong(STM32F100RB):
    MEMORY_MAP = MemoryMap(
        FlashRegion(start=0x08000000, length=0x20000, blocksize={sector}, is_boot_memory=True,
                    algo=FLASH_ALGO, erased_byte_value=0xFF),
        RamRegion(start=0x20000000, length=0x2000))

TARGET[{name!r}] = Wrong
"""

PATTERN = bytes(range(256)) * (4 * PAGE // 256)      # the first 4 pages before each flash


@pytest.fixture
def mid(tmp_path):
    p = Project(tmp_path / "mid", "sim-mid")
    p.board.write_flash(FLASH_BASE, PATTERN)
    return p


def expected_chip(start, data, base=PATTERN):
    chip = bytearray(base)
    chip[start:start + len(data)] = data
    return bytes(chip)


@pytest.mark.parametrize("sector", [512, 2048])
def test_a_wrong_definition_of_a_known_chip_is_refused_before_the_probe_is_opened(mid, sector):
    """A CMSIS pack or a script replacing stm32f100rb with other sector sizes."""
    mid.image(random_image(PAGE // 2, seed=5), base=FLASH_BASE + PAGE // 2)
    mid.sconstruct(WRONG_TARGET.format(sector=sector, name="stm32f100rb") + ALIASES)
    before = mid.board.counters()
    for command in ("flash", "erase"):
        result = mid.run(command, check=False)
        what = "erase data outside the image" if sector < PAGE else "fail half-way"
        assert result.stderr.endswith(
            f"the pyOCD target definition of stm32f100rb declares {sector}-byte flash sectors at 0x08000000, "
            f"but the STM32F100RB (value line, 128 KiB flash) erases 1024-byte pages. Nothing was written: "
            f"with it a flash would {what}. Check where the definition of stm32f100rb comes from (a CMSIS "
            "pack, pyocd_user.py, the SConstruct) and correct its flash sector size.\n"), result.stderr
    assert mid.board.counters() == before
    assert mid.board.read_flash(FLASH_BASE, len(PATTERN)) == PATTERN


@pytest.mark.parametrize("sector", [512, 2048])
@pytest.mark.parametrize("start,length", [(0x200, 0x400), (0x300, 0x81)])
def test_an_unknown_definition_with_wrong_sectors_never_reports_success_over_a_wrong_image(
        mid, sector, start, length):
    """No identity to check against: the flash either fails loudly or the chip holds the image
    (what lies outside it in the same chip page may be lost: see docs/reliability.md)."""
    data = random_image(length, seed=start + length)
    mid.image(data, base=FLASH_BASE + start)
    mid.sconstruct(WRONG_TARGET.format(sector=sector, name="wrong_sectors") + ALIASES, target="wrong_sectors")
    result = mid.run("flash", check=None)
    assert "Traceback" not in result.stderr
    chip = mid.board.read_flash(FLASH_BASE, len(PATTERN))
    entry = mid.record_entry()
    if result.returncode == 0:
        assert chip[start:start + length] == data
        assert entry["valid"]
        mid.run("verify")
    else:
        assert without_progress(result.stderr).startswith("scons: *** [fw.hex.sim-mid.flashed] ")
        assert NOT_RECORDED in result.stderr or "verify failed" in result.stderr
        assert entry is None or not entry["valid"]
        verify = mid.run("verify", check=None)
        assert chip[start:start + length] == data if verify.returncode == 0 else "verify failed" in verify.stderr
    # The right definition puts it right.
    mid.sconstruct(ALIASES)
    mid.run("flash")
    assert mid.board.read_flash(FLASH_BASE + start, length) == data
    mid.run("verify")


EDGES = [(0x0, 0x3FF, "auto"), (0x1, 0x400, "auto"), (0x200, 0x400, "auto"), (0x3FE, 4, "auto"),
         (0x3FF, 1, "auto"), (0x10, 3 * PAGE + 7, "auto"), (0x401, 2 * PAGE - 3, "auto"),
         (0x1, 0x400, "sector"), (0x3FF, 1, "sector"), (0x10, 3 * PAGE + 7, "sector"),
         (0x1, 0x400, "chip"), (0x3FF, 1, "chip"), (0x401, 2 * PAGE - 3, "chip")]


@pytest.mark.parametrize("start,length,erase", EDGES, ids=[f"{s:#x}+{n:#x}-{e}" for s, n, e in EDGES])
def test_images_starting_or_ending_mid_page_keep_or_erase_the_rest_as_documented(mid, erase, start, length):
    data = random_image(length, seed=start * 7 + length)
    mid.image(data, base=FLASH_BASE + start)
    mid.sconstruct(ALIASES, PYOCD_ERASE=erase)
    # auto and sector: bytes of a touched page outside the image are read first and written
    # back. chip: the mass erase clears every page the image does not touch; pyOCD keeps the
    # rest of the pages it does touch (keep_unwritten), as in the other modes.
    rest = bytearray(PATTERN)
    if erase == "chip":
        touched = range(start // PAGE, (start + length - 1) // PAGE + 1)
        for page in range(len(PATTERN) // PAGE):
            if page not in touched:
                rest[page * PAGE:(page + 1) * PAGE] = b"\xff" * PAGE
    rest = bytes(rest)
    mid.run("flash")
    assert mid.board.read_flash(FLASH_BASE, len(PATTERN)) == expected_chip(start, data, rest)
    mid.run("verify", "--verify=read")
    # One byte changed: only its page is redone, the rest still as documented.
    changed = bytearray(data)
    changed[-1] ^= 0x81
    mid.image(bytes(changed), base=FLASH_BASE + start)
    mid.run("flash")
    assert mid.board.read_flash(FLASH_BASE, len(PATTERN)) == expected_chip(start, bytes(changed), rest)
    assert mid.record_entry()["valid"]
    mid.run("verify")
    assert mid.board.read_flash(FLASH_BASE + len(PATTERN)) == b"\xff" * (FLASH_SIZE - len(PATTERN))
