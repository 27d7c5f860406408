"""Findings of a newcomer's review (after issues 10-14), each through the real ``scons`` on the
simulated board, asserting on what the chip holds, its counters, or what the tool printed
about it.

A finding that is not fixed yet is marked ``xfail(strict=True)`` with the reason, so that
the test starts failing the build (XPASS) the day it is fixed.
"""

import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from scons_project import ALIASES, HANG, PAGE, Project, holds, random_image, run_on_a_terminal
from scons_pyocd.sim import serve
from scons_pyocd.sim.board import BoardState



def unplug(board: str, where: Path) -> None:
    """Take the simulated board ``board`` away (as unplugging its probe would): its directory
    leaves $SCONS_PYOCD_SIM_DIR."""
    shutil.move(str(BoardState(board).path), str(where / board))


# -- 1. an empty (or partial) PYOCD_PROBE: the probe the tool reached is the one its next no-op trusts

@pytest.fixture
def default_probe(tmp_path, monkeypatch):
    """A project with PYOCD_PROBE empty ("the only probe attached"), simulated boards listed."""
    monkeypatch.setenv("SCONS_PYOCD_SIM_LIST", "1")
    p = Project(tmp_path / "p", "sim-x")
    p.data = random_image(8 * PAGE, seed=3)
    p.image(p.data)
    p.sconstruct(ALIASES, probe="")
    p.run("flash")
    assert holds(p, p.data)
    unplug("sim-x", tmp_path)           # another probe, with an erased board, takes its place
    p.board = BoardState.create("sim-y")
    return p


def test_after_a_failed_verify_on_another_probe_flash_programs_it(default_probe):
    p = default_probe
    result = p.run("verify", check=False)
    assert "verify failed on probe sim-y" in result.stderr      # the tool reached sim-y ...
    result, delta = p.counters_after("flash")
    # ... so "up to date" from sim-x's record would be false about the chip attached
    assert "up to date" not in result.stdout, result.stdout
    assert delta["connects"] == 1 and holds(p, p.data)


def test_after_a_flash_that_failed_on_another_probe_the_next_run_does_not_say_up_to_date(default_probe):
    p = default_probe
    p.board.set_fault("power_loss_after_halfwords", 300)      # power lost mid-flash
    result = p.run("flash", "--force-flash", check=False)
    assert result.returncode != 0 and not holds(p, p.data)
    p.board.clear_faults()
    result, delta = p.counters_after("flash")
    assert "up to date" not in result.stdout, result.stdout
    assert delta["connects"] == 1 and holds(p, p.data)


# -- 2. a raw binary linked behind a bootloader, larger than the bootloader ---------------------

FIRMWARE_C = r"""
#include <stdint.h>
extern uint32_t _estack;
void Reset_Handler(void);
void Default_Handler(void) { for (;;) {} }
typedef void (*handler)(void);
__attribute__((section(".isr_vector"), used))
const handler vectors[16] = {(handler)&_estack, Reset_Handler, Default_Handler, Default_Handler,
                             Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0,
                             Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};
const uint8_t pad[PAD] = {1, 2, 3, 4, 5, 6, 7, 8};
volatile uint32_t counter;
void Reset_Handler(void) { for (;;) counter += pad[counter % PAD]; }
"""

LINKER_SCRIPT = """MEMORY {{ FLASH (rx) : ORIGIN = 0x{origin:08X}, LENGTH = 0x{length:X}
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 8K }}
ENTRY(Reset_Handler)
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {{
 .isr_vector : {{ KEEP(*(.isr_vector)) }} > FLASH
 .text : {{ *(.text .text.*) *(.rodata .rodata.*) . = ALIGN(4); }} > FLASH
 .bss (NOLOAD) : {{ *(.bss .bss.* COMMON) }} > RAM
}}
"""


def link_bin(directory: Path, name: str, origin: int, pad: int) -> bytes:
    """A raw binary (objcopy -O binary) of a small Cortex-M program linked at ``origin``."""
    (directory / "fw.c").write_text(FIRMWARE_C)
    (directory / f"{name}.ld").write_text(LINKER_SCRIPT.format(origin=origin, length=0x08020000 - origin))
    run = dict(cwd=directory, check=True, capture_output=True, timeout=HANG)
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-O1", "-nostdlib", f"-DPAD={pad}",
                    "-T", f"{name}.ld", "-o", f"{name}.elf", "fw.c"], **run)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", f"{name}.elf", f"{name}.bin"], **run)
    return (directory / f"{name}.bin").read_bytes()


def test_an_application_bin_larger_than_its_offset_is_not_written_over_the_bootloader(tmp_path, arm_toolchain):
    p = Project(tmp_path / "bin", "sim-bin")
    boot = link_bin(p.dir, "boot", 0x08000000, 0x980)           # 2.4 KiB bootloader
    app = link_bin(p.dir, "app", 0x08000A00, 0xC00)             # 3 KiB application behind it
    p.sconstruct("env.FlashAliases('boot.bin', flash='flash-boot', erase='erase-boot', verify='verify-boot')\n"
                 "env.FlashAliases('app.bin', flash='flash-app', erase='erase-app', verify='verify-app')\n")
    p.run("flash-boot")
    assert holds(p, boot)
    result, delta = p.counters_after("flash-app", check=None)
    assert holds(p, boot), "the bootloader was overwritten by app.bin at the flash start"
    assert result.returncode != 0 and "PYOCD_BASE_ADDRESS" in result.stderr
    assert delta["connects"] == 0
    p.run("flash-app", "--base-address=0x08000A00")
    assert holds(p, boot) and holds(p, app, 0x08000A00)


def test_a_bin_from_another_tree_replaces_the_image_at_the_flash_start(tmp_path):
    """Another checkout (or another build) of the same firmware flashing its .bin at the flash
    start replaces what the first tree flashed there: the guess is refused only over an image
    the same project flashed (its bootloader), not over another tree's build."""
    first, second = Project(tmp_path / "one", "sim-tree"), Project(tmp_path / "two", "sim-tree")
    old, new = random_image(3 * PAGE, seed=21), random_image(5 * PAGE, seed=22)
    for p, data in ((first, old), (second, new)):
        p.image(data, name="fw.bin")
        p.sconstruct(ALIASES, image="fw.bin")
    first.run("flash")
    assert holds(first, old)
    result, delta = second.counters_after("flash")
    assert result.returncode == 0 and delta["connects"] == 1, result.stdout + result.stderr
    assert holds(second, new)
    assert not first.run("flash").stdout.startswith("flash is up to date")
    assert holds(first, old)


# -- 3. scons probes with a probe server -------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    """A project flashing sim-r through ``pyocd server`` (127.0.0.1, port 0), killed by PID."""
    p = Project(tmp_path / "r", "sim-r")
    server = serve.start("sim-r", timeout=60)
    try:
        p.data = random_image(4 * PAGE, seed=7)
        p.image(p.data)
        p.sconstruct(ALIASES, probe=server.probe)
        p.server = server
        yield p
    finally:
        server.kill()


def test_scons_probes_names_what_a_probe_server_serves(served):
    served.run("flash")
    result = served.run("probes")
    rows = [line for line in result.stdout.splitlines() if served.server.probe in line]
    assert rows, result.stdout
    row = rows[0]
    assert "vendor / product" not in row                        # pyOCD's placeholders
    assert "sim-r" in row and "stm32f100rb" in row              # the served probe and its target
    assert "yes: 1 image (1 valid)" in row                      # the record of the served board


def test_scons_probes_with_no_server_at_the_address_is_an_error(tmp_path):
    p = Project(tmp_path / "n", "sim-n")
    p.image(random_image(PAGE))
    with socket.socket() as s:                                    # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p.sconstruct(ALIASES, probe=f"remote:127.0.0.1:{port}")
    result = p.run("probes", check=False)
    assert result.returncode != 0
    assert "connection refused" in result.stderr and "Traceback" not in result.stderr


# -- 4. scons -n flash through a probe server: the up-to-date line -------------------------------

def test_dry_run_up_to_date_line_through_a_probe_server_describes_the_record(served):
    served.run("flash")
    before = served.board.counters()
    result = served.run("-n", "flash")
    assert result.stdout.startswith("flash is up to date (image fw.hex "), result.stdout
    assert "no valid record" not in result.stdout
    assert served.board.counters() == before                       # the probe was not opened


# -- 5. a terminal that reports no width --------------------------------------------------------

def test_progress_shows_on_a_terminal_of_zero_columns(tmp_path):
    """A pseudo-terminal whose size was never set (0 x 0, e.g. `script` run without one):
    tqdm draws nothing at width 0, so lines are wanted."""
    p = Project(tmp_path / "t", "sim-t")
    p.image(random_image(16 * PAGE, seed=2))
    p.sconstruct(ALIASES)
    _, shown = run_on_a_terminal(p, "flash", columns=None)     # never sized: 0 columns
    assert "programming" in shown, repr(shown)
    assert holds(p, random_image(16 * PAGE, seed=2))


# -- 6. a project option of the tool's name, declared after the tool, of another kind ------------

@pytest.mark.xfail(strict=True, reason=(
    "the tool's --verify takes a value and is in SCons's parser when the project's switch "
    "--verify is added after env.Tool: SCons's parser stops at '--verify option requires an "
    "argument' before the project's option exists (the same for a tool switch such as "
    "--page-map against a project option that takes a value)."))
def test_a_project_switch_declared_after_the_tool_keeps_its_name(tmp_path):
    p = Project(tmp_path / "o", "sim-o")
    p.image(random_image(PAGE))
    p.sconstruct(ALIASES + "AddOption('--verify', dest='unit_tests', action='store_true', help='run unit tests')\n"
                 "print('unit tests:', GetOption('unit_tests'))\n")
    result = p.run("--verify", "flash")
    assert "unit tests: True" in result.stdout
    assert p.board.counters()["connects"] == 1


# -- 7. why a record is invalid, after another tree's flash completed ---------------------------

def test_the_record_does_not_call_a_completed_flash_unfinished(tmp_path):
    one = Project(tmp_path / "one", "sim-s")
    one.image(random_image(4 * PAGE, seed=1))
    one.sconstruct(ALIASES)
    two = Project(tmp_path / "two", "sim-s")
    two.image(random_image(4 * PAGE, seed=2))
    two.sconstruct(ALIASES)
    one.run("flash")
    two.run("flash")                                  # completes, and overwrites one's pages
    result = one.run("-n", "flash")
    assert "would flash" in result.stdout
    assert "started, not completed" not in result.stdout, result.stdout
    assert f"record invalidated: page 0x08000000 holds other data (flash of {two.dir / 'fw.hex'})" \
        in result.stdout, result.stdout
    _, delta = one.counters_after("flash")
    assert delta["connects"] == 1 and holds(one, random_image(4 * PAGE, seed=1))


# -- 8. several boards in one SConstruct, and --probe -------------------------------------------

def test_probe_on_the_command_line_with_per_call_probes_is_a_clear_error(tmp_path):
    """farm.md's SConstruct (one FlashAliases per board, PYOCD_PROBE per call) with
    --probe=ID: every call now means the same board."""
    a = Project(tmp_path / "f", "sim-fa")
    Project(tmp_path / "f", "sim-fb")
    a.image(random_image(PAGE))
    a.sconstruct(textwrap.dedent("""\
        env.FlashAliases('fw.hex', flash='flash-a', erase='erase-a', verify='verify-a', PYOCD_PROBE='sim-fa')
        env.FlashAliases('fw.hex', flash='flash-b', erase='erase-b', verify='verify-b', PYOCD_PROBE='sim-fb')
        env.Alias('flash', ['flash-a', 'flash-b'])
        """))
    result = a.run("flash", "--probe=sim-fa", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Two environments with different actions" not in result.stderr, result.stderr
    assert "--probe" in result.stderr and "SConstruct" in result.stderr
    assert a.board.counters()["connects"] == 0
