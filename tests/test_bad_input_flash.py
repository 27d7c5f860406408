"""Every bad image through the real ``scons flash``: the exact message on stderr (the
file as the user named it, the line or address, what is wrong, what to do), no
traceback, and the simulated board untouched: not a write, not even a connect
(every counter unchanged), and no record of a flash.

The files are the corpus of ``tests/bad_images`` (the parser's own tests are in
``test_images.py``) plus ELF files, an image larger than flash and a missing file,
all in a folder whose name has a space and non-ASCII characters.
"""

import shutil
import struct
from pathlib import Path

import pytest

from scons_project import PAGE, Project, random_image, without_progress, write_image
from scons_pyocd.sim.board import FLASH_BASE
from test_images import EM_X86_64, PT_LOAD, make_elf

CORPUS = Path(__file__).parent / "bad_images"
FOLDER = "my fïrmwäre"
HEX_TODO = "The file is corrupt or not Intel HEX: rebuild it (for example objcopy -O ihex)."
LINK_TODO = ("Check that the image was linked for this chip (the FLASH origin and length in its "
             "linker script) and that the target is the right one.")
F100 = "stm32f100rb flash 0x08000000-0x0801FFFF (128 KiB)"

#: file -> the message after "<path of the file>" (SCons prints "scons: *** [<record>] " first).
MESSAGES = {
    "after_eof.hex": ", line 4: data after the end-of-file record on line 3 (concatenated HEX files?). "
                     "Merge HEX files with a tool such as srec_cat, or remove the extra lines.",
    "bad_checksum.hex": f", line 3: bad checksum 0x00 (expected 0x68). {HEX_TODO}",
    "bad_extended_address.hex": f", line 1: malformed extended linear address record (type 04). {HEX_TODO}",
    "duplicate_start.hex": f", line 4: second start address record. {HEX_TODO}",
    "elf_named.bin": ": is an ELF file, not a raw binary (it starts with '\\x7fELF'). Flash the ELF "
                     "itself, or make the binary with objcopy -O binary.",
    "empty.bin": ": the file is empty. Rebuild it; the build that wrote it probably failed.",
    "empty.hex": ": the file is empty. Rebuild it; the build that wrote it probably failed.",
    "eof_with_data.hex": f", line 3: end-of-file record carries data. {HEX_TODO}",
    "hex_named.bin": ": is Intel HEX text, not a raw binary (it starts with an Intel HEX record). "
                     "Rename it to .hex, or make the binary with objcopy -O binary.",
    "missing_eof.hex": f": no end-of-file record (:00000001FF) after line 4; the file is truncated. {HEX_TODO}",
    "non_hex_chars.hex": f", line 2: character 'G' at column 12 is not a hex digit. {HEX_TODO}",
    "not_hex.hex": f", line 1: does not start with ':', so this is not an Intel HEX file. {HEX_TODO}",
    "odd_hex_digits.hex": f", line 3: odd number of hex digits (21); the line is truncated. {HEX_TODO}",
    "only_eof.hex": ": contains no data. Check that the build wrote the image (an empty file, or an "
                    "ELF whose loadable sections are all empty).",
    "outside_flash.hex": f": bytes 0x00000000-0x0000001F (32 bytes) lie outside {F100}. {LINK_TODO}",
    "overlap_different.hex": ", line 3: 8 byte(s) from 0x08000008 were already written by line 2, with "
                             "different data. An Intel HEX file must write each address once: rebuild "
                             "it, or merge HEX files with a tool such as srec_cat.",
    "overlap_same.hex": ", line 3: 8 byte(s) from 0x08000008 were already written by line 2, with the "
                        "same data. An Intel HEX file must write each address once: rebuild it, or "
                        "merge HEX files with a tool such as srec_cat.",
    "past_flash_end.hex": f": bytes 0x08020000-0x0802000F (16 bytes) run past the end of {F100}. {LINK_TODO}",
    "short_record.hex": f", line 3: record too short (2 bytes; a record has at least 5); the line is "
                        f"truncated. {HEX_TODO}",
    "truncated_line.hex": f", line 3: record says 16 data bytes but holds 5; the line is truncated or "
                          f"corrupt. {HEX_TODO}",
    "unknown_record_type.hex": f", line 3: unknown record type 0x06 (Intel HEX defines 00-05). {HEX_TODO}",
    # Made here:
    "no load.elf": ": has no loadable data (no allocated section with file contents). Rebuild "
                   "the firmware, and flash the linked ELF (for NuttX, the file named 'nuttx').",
    "no load, no sections.elf": ": has no loadable data (no PT_LOAD program header with file contents). "
                                "Rebuild the firmware, and flash the linked ELF (for NuttX, the file named "
                                "'nuttx').",
    # No base address given: the flash start, but its vector table says 0x08000800.
    "linked after a bootloader.bin": ": its vector table (initial SP 0x20002000, reset vector 0x08000895) "
                                     "says it was linked to run elsewhere: the reset handler is outside the "
                                     "pages 0x08000000-0x080007FF it would occupy at 0x08000000, the flash "
                                     "start, where a raw binary goes when no base address is given. There it "
                                     "would not start, and it would overwrite what those pages hold. It was "
                                     "probably linked at 0x08000800 (the start of the flash page holding its "
                                     "lowest exception handler, 0x08000890): set PYOCD_BASE_ADDRESS (or "
                                     "--base-address) to its link address, or flash the ELF or .hex, which "
                                     "carry their addresses.",
    "x86-64.elf": ": is an ELF file for EM_X86_64, not ARM (EM_ARM). Build it with an ARM toolchain "
                  "(arm-none-eabi-gcc), and flash the firmware, not a host program.",
    "too big.hex": f": the image holds 132,096 bytes, 1,024 more than the 131,072 bytes of {F100}. "
                   f"Make the image smaller, or check the target. {LINK_TODO}",
    "too big.bin": f": the image holds 132,096 bytes, 1,024 more than the 131,072 bytes of {F100}. "
                   "Make the image smaller, or check the target. A raw binary goes at "
                   "PYOCD_BASE_ADDRESS (here 0x08000000): set it to the start of flash, or check the "
                   "file is for this chip.",
}

#: file -> the warning printed (by Python's logging) before the error.
WARNINGS = {
    "no load, no sections.elf": ": has no section table, so its PT_LOAD program headers are taken whole "
                                "(objcopy refuses such a file): they may hold the ELF header and alignment "
                                "padding in front of the firmware. Flash the ELF as the linker wrote it, or "
                                "a .hex made from it.",
}


def _make(folder: Path) -> None:
    for path in CORPUS.iterdir():
        if path.name not in ("README.md", "good.hex"):
            shutil.copy(path, folder / path.name)
    (folder / "no load.elf").write_bytes(make_elf([]))
    (folder / "no load, no sections.elf").write_bytes(make_elf([], sections=False))
    vectors = struct.pack("<4I", 0x20002000, 0x08000895, 0x08000891, 0x08000891)
    (folder / "linked after a bootloader.bin").write_bytes(vectors + random_image(0x5C8 - len(vectors)))
    (folder / "x86-64.elf").write_bytes(
        make_elf([(PT_LOAD, 0x400000, 0x400000, b"\x90" * 16, 16)], machine=EM_X86_64, elf64=True))
    write_image(folder / "too big.hex", random_image(129 * PAGE), FLASH_BASE)
    (folder / "too big.bin").write_bytes(random_image(129 * PAGE, seed=2))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """One project flashing every bad file, each under its own alias."""
    root = tmp_path_factory.mktemp("bad")
    folder = root / "p" / FOLDER
    folder.mkdir(parents=True)
    _make(folder)
    return root / "p"


@pytest.fixture
def project(bad):
    p = Project(bad, "sim-bad")        # the board lives in this test's isolated state dir
    names = sorted(MESSAGES) + ["missing.hex"]
    p.aliases = {name: f"bad{i}" for i, name in enumerate(names)}
    p.sconstruct("".join(f"env.Alias({alias!r}, env.Flash({f'{FOLDER}/{name}'!r}))\n"
                         for name, alias in p.aliases.items()).replace("{", "{{").replace("}", "}}"))
    p.board.write_flash(FLASH_BASE, random_image(4 * PAGE, seed=7))      # something to lose
    return p


def test_the_corpus_is_all_here():
    assert {p.name for p in CORPUS.iterdir()} - {"README.md", "good.hex"} <= set(MESSAGES)


def rejected(project, name):
    """Run ``scons <alias of name>``: it must fail, touch nothing, and return stderr."""
    before_flash = project.board.read_flash()
    before = project.board.counters()
    result = project.run(project.aliases[name], check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert project.board.counters() == before, "the probe must not even be opened"
    assert project.board.read_flash() == before_flash
    record = project.dir / FOLDER / f"{name}.sim-bad.flashed"
    assert not record.exists()
    assert project.record_entry(f"{FOLDER}/{name}") is None
    return result.stderr


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_a_bad_image_is_refused_with_its_message_and_nothing_touched(project, name):
    stderr = rejected(project, name)
    path = project.dir / FOLDER / name
    expected = f"{path}{WARNINGS[name]}\n" if name in WARNINGS else ""
    expected += f"scons: *** [{FOLDER}/{name}.sim-bad.flashed] {path}{MESSAGES[name]}\n"
    assert stderr == expected


def test_a_missing_image_is_named_by_scons_before_anything_runs(project):
    stderr = rejected(project, "missing.hex")
    assert stderr == (f"scons: *** [{FOLDER}/missing.hex.sim-bad.flashed] Source `{FOLDER}/missing.hex' "
                      f"not found, needed by target `{FOLDER}/missing.hex.sim-bad.flashed'.\n")


def test_a_bad_image_fails_the_same_with_keep_going_and_the_good_one_beside_it_flashes(project):
    """``scons -k``: the bad images fail one by one, the good one is flashed, nothing else."""
    good = random_image(3 * PAGE, seed=8)
    write_image(project.dir / FOLDER / "good one.hex", good, FLASH_BASE + 64 * PAGE)
    (project.dir / "SConstruct").write_text((project.dir / "SConstruct").read_text() +
                                            f"env.Alias('good', env.Flash({FOLDER + '/good one.hex'!r}))\n")
    before = project.board.read_flash()
    result = project.run("-k", *project.aliases.values(), "good", check=False)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("scons: *** [") == len(project.aliases)
    after = project.board.read_flash()
    offset = 64 * PAGE
    assert after[offset:offset + len(good)] == good
    assert after[:offset] + after[offset + len(good):] == before[:offset] + before[offset + len(good):]
    assert project.record_entry(f"{FOLDER}/good one.hex")["valid"]


def test_a_raw_binary_for_a_target_without_flash_is_refused_before_any_write(project):
    # pyOCD's generic cortex_m target has no memory map: there is nowhere to put a .bin.
    (project.dir / "fw.bin").write_bytes(random_image(PAGE))
    project.sconstruct("env.Alias('bin', env.Flash('fw.bin'))\n", target="cortex_m")
    before_flash = project.board.read_flash()
    result, delta = project.counters_after("bin", check=False)
    assert without_progress(result.stderr) == ("scons: *** [fw.bin.sim-bad.flashed] target cortex_m has no flash in pyOCD's "
                             "memory map (via probe sim-bad). Set PYOCD_TARGET to the chip's pyOCD target "
                             "name.\n")
    assert delta["pages_erased"] == delta["halfwords_programmed"] == delta["mass_erases"] == 0
    assert project.board.read_flash() == before_flash
    assert project.record_entry("fw.bin") is None
