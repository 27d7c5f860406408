"""The blinky example, built with the real ``scons`` and the Arm GNU toolchain.

Each test builds in its own temporary copy of examples/blinky, so the checkout
stays clean and tests do not share SCons state. When the toolchain is missing
and we are root (as in CI), it is installed with scripts/install-toolchain
rather than skipped.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from intelhex import IntelHex

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "blinky"
FLASH_BASE, FLASH_SIZE = 0x08000000, 128 * 1024
SRAM_BASE, SRAM_SIZE = 0x20000000, 8 * 1024
PAGE = 1024
COMPILE = re.compile(r"^\S*gcc -o build/(\S+)\.o -c ", re.M)
LINK = re.compile(r"^\S*gcc -o build/blinky\.elf ", re.M)


def _scons_command():
    """The scons that belongs to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("scons")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("scons")
    if found is None:
        pytest.skip("scons is not installed (pip install -e '.[test]')")
    return [found]


class Blinky:
    """A private copy of examples/blinky and what building it printed."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.build = directory / "build"

    def scons(self, *args, check=True):
        result = subprocess.run(_scons_command() + ["-C", str(self.dir), *args],
                                capture_output=True, text=True)
        if check and result.returncode != 0:
            pytest.fail(f"scons {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def compiled(self, output: str):
        return sorted(COMPILE.findall(output))

    @property
    def elf(self):
        return self.build / "blinky.elf"

    @property
    def bin(self):
        return self.build / "blinky.bin"

    @property
    def hex(self):
        return self.build / "blinky.hex"

    def edit(self, name: str, old: str, new: str):
        path = self.dir / name
        text = path.read_text()
        assert old in text, f"{name} no longer contains {old!r}: update this test"
        path.write_text(text.replace(old, new))


def _copy(tmp_path, name="blinky"):
    dest = tmp_path / name
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", ".sconsign*", "*.pyc"))
    return Blinky(dest)


@pytest.fixture
def blinky(tmp_path, arm_toolchain):
    """A freshly built private copy of the example."""
    b = _copy(tmp_path)
    b.first_output = b.scons().stdout
    return b


def _word(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "little")


def _changed_pages(old: bytes, new: bytes):
    size = max(len(old), len(new))
    return sorted({i // PAGE for i in range(size) if old[i:i + 1] != new[i:i + 1]})


def test_first_build_compiles_every_file_and_writes_three_images(blinky):
    assert blinky.compiled(blinky.first_output) == ["led", "main", "startup"]
    for image in (blinky.elf, blinky.bin, blinky.hex):
        assert image.is_file() and image.stat().st_size > 0, image


def test_bin_starts_with_the_vector_table(blinky):
    data = blinky.bin.read_bytes()
    assert len(data) <= FLASH_SIZE
    assert _word(data, 0) == SRAM_BASE + SRAM_SIZE == 0x20002000
    reset = _word(data, 4)
    assert reset & 1, "reset vector must have the Thumb bit set"
    assert FLASH_BASE <= (reset & ~1) < FLASH_BASE + len(data)
    # Every other non-reserved core exception vector points into the image too.
    for index in (2, 3, 4, 5, 6, 11, 12, 14, 15):
        vector = _word(data, 4 * index)
        assert vector & 1 and FLASH_BASE <= (vector & ~1) < FLASH_BASE + len(data), (index, hex(vector))


def test_elf_layout_vectors_at_flash_base_and_data_loaded_from_flash(blinky):
    data = blinky.bin.read_bytes()
    with open(blinky.elf, "rb") as f:
        elf = ELFFile(f)
        vectors = elf.get_section_by_name(".isr_vector")
        assert vectors["sh_addr"] == FLASH_BASE
        loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
        for seg in loads:   # everything that is loaded is stored in flash
            assert FLASH_BASE <= seg["p_paddr"] and seg["p_paddr"] + seg["p_filesz"] <= FLASH_BASE + len(data)
        data_section = elf.get_section_by_name(".data")
        (data_seg,) = [seg for seg in loads if seg.section_in_segment(data_section)]
        assert SRAM_BASE <= data_seg["p_vaddr"] < SRAM_BASE + SRAM_SIZE, "VMA of .data is in SRAM"
        lma = data_seg["p_paddr"] + data_section["sh_addr"] - data_seg["p_vaddr"]
        assert FLASH_BASE <= lma < FLASH_BASE + len(data), "LMA of .data is in flash"
        # startup.c copies from there: the bin holds .data's initial values at its LMA.
        offset = lma - FLASH_BASE
        assert data[offset:offset + data_section["sh_size"]] == data_section.data()


def test_hex_holds_the_same_bytes_as_bin(blinky):
    data = blinky.bin.read_bytes()
    ih = IntelHex(str(blinky.hex))
    assert ih.minaddr() == FLASH_BASE
    assert ih.maxaddr() == FLASH_BASE + len(data) - 1
    for start, end in ih.segments():
        assert ih.tobinstr(start=start, end=end - 1) == data[start - FLASH_BASE:end - FLASH_BASE]
    assert ih.tobinstr(start=FLASH_BASE, size=len(data)) == data


def test_rebuild_is_a_no_op(blinky):
    before = {p: p.stat().st_mtime_ns for p in (blinky.elf, blinky.bin, blinky.hex)}
    out = blinky.scons().stdout
    assert "is up to date" in out
    assert blinky.compiled(out) == [] and not LINK.search(out)
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_build_is_reproducible_across_directories_and_prefix_spellings(blinky, tmp_path):
    other = _copy(tmp_path, "elsewhere")
    prefix = str(Path(shutil.which("arm-none-eabi-gcc")).with_name("arm-none-eabi-"))
    out = other.scons(f"--arm-prefix={prefix}").stdout
    assert f"{prefix}gcc -o build/led.o" in out
    assert other.bin.read_bytes() == blinky.bin.read_bytes()
    assert other.hex.read_bytes() == blinky.hex.read_bytes()
    assert other.elf.read_bytes() == blinky.elf.read_bytes()


def test_editing_one_constant_recompiles_only_that_file_and_changes_few_bytes(blinky):
    old = blinky.bin.read_bytes()
    blinky.edit("led.c", "#define BLINK_DELAY_LOOPS 400000u", "#define BLINK_DELAY_LOOPS 200000u")
    out = blinky.scons().stdout
    assert blinky.compiled(out) == ["led"]
    assert LINK.search(out)
    new = blinky.bin.read_bytes()
    assert len(new) == len(old), "a same-size constant must not move any code"
    changed = [i for i in range(len(new)) if old[i] != new[i]]
    # 400000 -> 200000 is the initial value of led_delay_loops (.data, stored in flash).
    assert 0 < len(changed) <= 4 and changed[-1] - changed[0] < 4, changed
    assert len(_changed_pages(old, new)) == 1


def test_editing_a_comment_recompiles_but_does_not_relink(blinky):
    old = blinky.bin.read_bytes()
    blinky.edit("main.c", "/* Blink phases", "/* The blink phases")
    out = blinky.scons().stdout
    assert blinky.compiled(out) == ["main"]
    assert not LINK.search(out), "an identical object must not relink (content signatures)"
    assert blinky.bin.read_bytes() == old


def test_firmware_blinks_on_the_simulated_board(blinky):
    from scons_pyocd.sim.board import BoardState, FLASH_BASE as SIM_FLASH_BASE
    from scons_pyocd.sim.firmware import run_firmware

    board = BoardState.create("blinky-test")
    board.erase_flash()
    board.write_flash(SIM_FLASH_BASE, blinky.bin.read_bytes())
    run = run_firmware("blinky-test", max_instructions=50_000_000, max_led_events=6)
    assert run.stopped == "6 LED changes seen", run.describe()
    blue, green = "PC8 (blue LED)", "PC9 (green LED)"
    # Phases: blue, green, both, none.
    assert [(name, on) for _, name, on in run.led_events] == [
        (blue, True), (blue, False), (green, True), (blue, True), (blue, False), (green, False)], run.describe()
    phase = run.led_events[1][0] - run.led_events[0][0]
    assert 0.1 < phase < 2.0, f"a blink phase of {phase:.3f} s is not a visible blink"


def test_missing_toolchain_says_how_to_install_it(tmp_path):
    b = _copy(tmp_path)
    result = b.scons("ARM_PREFIX=no-such-toolchain-", check=False)
    assert result.returncode != 0
    assert "no-such-toolchain-gcc is not on PATH" in result.stderr
    assert "scripts/install-toolchain" in result.stderr
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi" in result.stderr
    assert "Traceback" not in result.stderr
