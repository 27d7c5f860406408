"""The ELF reader against ``arm-none-eabi-objcopy`` over real linker layouts (tests/elf_corpus.py,
built once per session with the real Arm GNU toolchain), and the founding failure of issue 10
end to end: an application linked after a 2 KiB bootloader must not destroy it.

For every layout: our image equals what objcopy writes (``-O ihex`` parsed, ``-O binary``
byte for byte), and the converters write it. For a representative few: flashing the ELF,
objcopy's hex and objcopy's bin through the real ``scons flash`` leaves the simulated chip
holding the same bytes.
"""

import logging
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import elf_corpus
from scons_project import Project, random_image
from scons_pyocd.errors import FlashError
from scons_pyocd.images import Image, hex_bytes, load_image, write_bin
from scons_pyocd.sim.board import FLASH_BASE

FLASH_SIZE = 128 * 1024
APP = 0x08000800            # the application's FLASH origin behind a 2 KiB bootloader


@pytest.fixture(scope="session")
def corpus(arm_toolchain, tmp_path_factory):
    """Every case of elf_corpus.CASES, built once: name -> elf_corpus.Built."""
    return elf_corpus.build_all(tmp_path_factory.mktemp("elf-corpus"))


NAMES = [case.name for case in elf_corpus.CASES]
SECTIONED = [case.name for case in elf_corpus.CASES if not case.strip_sections]


def segments_image(path: Path) -> Image:
    """What the reader took before issue 10: every PT_LOAD's file bytes at its p_paddr."""
    with open(path, "rb") as f:
        data = f.read()
        loads = [s.header for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD" and s["p_filesz"]]
    return Image([(p["p_paddr"], data[p["p_offset"]:p["p_offset"] + p["p_filesz"]]) for p in loads])


# --- the reader is objcopy -------------------------------------------------------------

@pytest.mark.parametrize("name", SECTIONED)
def test_image_is_what_objcopy_writes(corpus, name, tmp_path):
    built = corpus[name]
    image = load_image(built.elf)
    assert image.elf_rule == "sections"
    assert image == load_image(built.hex), f"{name}: our image differs from objcopy -O ihex"
    # Our Intel HEX holds the same records' content at the same addresses.
    (tmp_path / "ours.hex").write_bytes(hex_bytes(image))
    assert load_image(tmp_path / "ours.hex") == load_image(built.hex)
    if built.case.huge_binary:
        # objcopy -O binary would write hundreds of MiB; ours refuses (see the gap tests).
        with pytest.raises(FlashError, match="lie .* apart, more than 16 MiB"):
            write_bin(image, tmp_path / "ours.bin")
        return
    write_bin(image, tmp_path / "ours.bin", fill=0x00)                # objcopy's gaps are zeros
    assert (tmp_path / "ours.bin").read_bytes() == built.bin_zero.read_bytes()
    write_bin(image, tmp_path / "ours-ff.bin")                         # PYOCD_FILL's default
    assert (tmp_path / "ours-ff.bin").read_bytes() == built.bin_ff.read_bytes()


def hex_records(text: bytes):
    """(type, absolute address, data) of each record of an Intel HEX file."""
    records, base = [], 0
    for line in text.splitlines():
        raw = bytes.fromhex(line[1:].decode())
        kind, offset, data = raw[3], raw[1] << 8 | raw[2], raw[4:-1]
        if kind in (2, 4):
            base = int.from_bytes(data, "big") << (4 if kind == 2 else 16)
        records.append((kind, base + offset if kind == 0 else offset, data))
    return records


@pytest.mark.parametrize("name", SECTIONED)
def test_hex_text_differs_from_objcopy_s_only_in_line_ends_start_record_and_record_split(corpus, name):
    """docs/images.md states the textual differences; here they are exactly those."""
    built = corpus[name]
    theirs, ours = built.hex.read_bytes(), hex_bytes(load_image(built.elf))
    assert theirs.count(b"\r\n") == theirs.count(b"\n") and b"\r" not in ours      # CRLF vs LF
    theirs, ours = hex_records(theirs), hex_records(ours)
    with open(built.elf, "rb") as f:
        entry = ELFFile(f)["e_entry"]
    # objcopy adds a start linear address record (type 05) holding e_entry; we write none.
    assert [r for r in theirs if r[0] == 5] == [(5, 0, entry.to_bytes(4, "big"))]
    assert not [r for r in ours if r[0] in (3, 5)]
    assert [r for r in theirs if r[0] in (1, 2, 4)] == [r for r in ours if r[0] in (1, 2, 4)]
    # Data records: the same bytes at the same addresses, split differently (objcopy starts
    # a record at each section, we every 16 bytes of a contiguous run).
    def flat(records):
        return Image([(address, data) for kind, address, data in records if kind == 0])
    assert flat(theirs) == flat(ours)
    assert max(len(data) for kind, _, data in ours if kind == 0) == 16


#: The layouts where whole PT_LOAD segments are not the firmware: the reader before issue 10
#: wrote the ELF header (and the program headers and padding after it) in front of the code,
#: NOLOAD bytes, or alignment padding between sections, or failed (overlapping segments).
SEGMENTS_ARE_NOT_THE_FIRMWARE = {
    "origin-0x08000400": "headers", "origin-0x08000800": "headers", "origin-0x08000A00": "headers",
    "max-page-64k-0x08001000": "headers", "data-at-fixed-lma": "headers", "noload-between": "headers",
    "noload-first": "NOLOAD", "nostartfiles": "headers", "nostdlib": "headers", "cxx": "headers",
    "section-in-no-segment": "overlap", "stripped-0x08000800": "headers", "ramfunc-in-sram": "padding",
}


@pytest.mark.parametrize("name", NAMES)
def test_the_corpus_holds_layouts_the_segment_rule_gets_wrong(corpus, name):
    built = corpus[name]
    reference = load_image(built.hex)
    try:
        old = segments_image(built.elf)
    except FlashError:
        old = None
    wrong = SEGMENTS_ARE_NOT_THE_FIRMWARE.get(name)
    if wrong is None:
        assert old == reference
    elif wrong == "overlap":
        assert old is None
    elif wrong == "padding":        # alignment padding between two sections, filled in
        assert old.size > reference.size and all(old.data_at(a, len(d)) == d for a, d in reference.segments)
    else:
        assert old != reference and old.start < reference.start
        assert old.data_at(old.start, 4) == (b"\x7fELF" if wrong == "headers" else b"\0\0\0\0")


# --- an ELF without a section table ----------------------------------------------------

@pytest.mark.parametrize("name", ["stripped-0x08000000", "stripped-0x08000800"])
def test_elf_without_section_table_falls_back_to_segments_and_says_so(corpus, name, caplog):
    built = corpus[name]
    refused = subprocess.run(["arm-none-eabi-objcopy", "-O", "ihex", str(built.elf), "/dev/null"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "has no sections" in refused.stderr
    with caplog.at_level(logging.WARNING, logger="scons_pyocd.images"):
        image = load_image(built.elf)
    assert image.elf_rule == "segments"
    assert image == segments_image(built.elf)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(built.elf)]
    reference = load_image(built.hex)              # objcopy of the ELF before stripping
    if name == "stripped-0x08000000":
        assert image == reference                   # the segments hold nothing but sections here
    else:
        # The fallback's hazard, documented: the first segment maps the ELF header at 0x08000000.
        assert image.start == FLASH_BASE and image.data_at(FLASH_BASE, 4) == b"\x7fELF"
        assert image.data_at(reference.start, reference.end - reference.start) == reference.to_bytes()


# --- flashing: ELF, hex and bin give the same chip -------------------------------------

FLASHED = ["origin-0x08000800", "noload-between", "two-regions", "cxx"]


@pytest.mark.parametrize("name", FLASHED)
def test_elf_hex_and_bin_flash_the_same_chip(corpus, name, tmp_path):
    built = corpus[name]
    reference = load_image(built.hex)
    chips = {}
    for fmt, source in (("elf", built.elf), ("hex", built.hex), ("bin", built.bin_ff)):
        project = Project(tmp_path / fmt, f"sim-layout-{fmt}")
        image = f"app.{fmt}"
        shutil.copyfile(source, project.dir / image)
        project.sconstruct("env.FlashAliases('{image}')\n", image=image,
                           **({"PYOCD_BASE_ADDRESS": f"0x{reference.start:08X}"} if fmt == "bin" else {}))
        result = project.run("flash", "verify")
        assert f"{image} matches" in result.stdout
        chips[fmt] = project.board.read_flash(FLASH_BASE, FLASH_SIZE)
    assert chips["elf"] == chips["hex"] == chips["bin"] == Image(reference.segments).data_at(FLASH_BASE, FLASH_SIZE)


# --- the founding failure --------------------------------------------------------------

BOOTLOADER = random_image(2048, seed=10)


def section(elf: Path, name: str):
    """(LMA, bytes) of a section, the LMA as objdump -h prints it."""
    out = subprocess.run(["arm-none-eabi-objdump", "-h", str(elf)], capture_output=True, text=True, check=True).stdout
    lma = int(re.search(rf"^\s*\d+\s+{re.escape(name)}\s+\S+\s+\S+\s+(\S+)", out, re.M).group(1), 16)
    with open(elf, "rb") as f:
        return lma, ELFFile(f).get_section_by_name(name).data()


def test_an_application_linked_after_a_bootloader_leaves_the_bootloader_alone(corpus, tmp_path):
    built = corpus["origin-0x08000800"]
    project = Project(tmp_path / "boot", "sim-boot")
    project.image(BOOTLOADER, "boot.hex")
    shutil.copyfile(built.elf, project.dir / "app.elf")
    project.sconstruct("""\
        env.FlashAliases('boot.hex', flash='flash-boot', erase='erase-boot', verify='verify-boot')
        env.FlashAliases('app.elf')
        env.HexFromElf('app.hex', 'app.elf')
        env.BinFromElf('app.bin', 'app.elf')
        """)
    project.run("flash-boot")
    assert project.board.read_flash(FLASH_BASE, 2048) == BOOTLOADER

    result = project.run("flash", "verify")
    chip = project.board.read_flash(FLASH_BASE, FLASH_SIZE)
    assert chip[:2048] == BOOTLOADER, "the bootloader must survive byte for byte"
    vectors_at, vectors = section(built.elf, ".isr_vector")
    text_at, text = section(built.elf, ".text")
    data_at, data = section(built.elf, ".data")
    assert vectors_at == APP and chip[APP - FLASH_BASE:][:len(vectors)] == vectors
    assert chip[text_at - FLASH_BASE:][:len(text)] == text
    assert text_at + len(text) <= data_at < text_at + len(text) + 64      # .data's LMA: right after the code
    assert chip[data_at - FLASH_BASE:][:len(data)] == data
    assert struct.unpack_from("<I", data, 4)[0] == 0x12345678             # 'counter''s initial value
    assert "app.elf matches (crc)" in result.stdout
    assert "boot.hex matches (crc): 0x08000000-0x080007FF in " in project.run("verify-boot").stdout

    project.run("app.hex", "app.bin")
    assert load_image(project.dir / "app.hex") == load_image(built.hex) == load_image(built.elf)
    assert (project.dir / "app.bin").read_bytes() == built.bin_ff.read_bytes() == built.bin_zero.read_bytes()


# --- refusals that touch no probe ------------------------------------------------------

def misplaced_bin_message(path: Path, binary: bytes) -> str:
    words = struct.unpack_from("<16I", binary)
    lowest = min(w & ~1 for w in words[1:] if w & 1)
    return (f"{path}: its vector table (initial SP 0x{words[0]:08X}, reset vector 0x{words[1]:08X}) says it "
            "was linked to run elsewhere: the reset handler is outside the pages 0x08000000-0x080007FF it "
            "would occupy at 0x08000000, the flash start, where a raw binary goes when no base address is "
            "given. There it would not start, and it would overwrite what those pages hold. It was probably "
            "linked at 0x08000800 (the start of the flash page holding its lowest exception handler, "
            f"0x{lowest:08X}): set PYOCD_BASE_ADDRESS (or --base-address) to its link address, or flash the "
            "ELF or .hex, which carry their addresses.")


def test_a_bin_linked_after_a_bootloader_is_not_flashed_at_the_flash_start(corpus, tmp_path):
    built = corpus["origin-0x08000800"]
    project = Project(tmp_path / "bin", "sim-misplaced")
    project.image(BOOTLOADER, "boot.hex")
    binary = built.bin_ff.read_bytes()
    (project.dir / "app.bin").write_bytes(binary)
    project.sconstruct("""\
        env.FlashAliases('boot.hex', flash='flash-boot', erase='erase-boot', verify='verify-boot')
        env.FlashAliases('app.bin')
        env.HexFromBin('app.hex', 'app.bin')
        """)
    project.run("flash-boot")
    before = project.board.read_flash()
    expected = misplaced_bin_message(project.dir / "app.bin", binary)
    for target in ("flash", "verify", "app.hex"):
        result, delta = project.counters_after(target, check=False)
        # SCons names the failed node first: the flash record, the verify node, app.hex.
        assert re.fullmatch(r"scons: \*\*\* \[[^\]\n]+\] " + re.escape(expected) + "\n", result.stderr), target
        assert delta["connects"] == 0 and project.board.read_flash() == before
        assert not (project.dir / "app.hex").exists()
    # An explicit base address wins: the same file goes where it was linked.
    project.run("flash", "--base-address=0x08000800")
    chip = project.board.read_flash(FLASH_BASE, FLASH_SIZE)
    assert chip[:2048] == BOOTLOADER and chip[APP - FLASH_BASE:][:len(binary)] == binary


@pytest.mark.parametrize("target, limit", [("stm32f100rb", "the target's 128 KiB of flash"),
                                           ("", "16 MiB (the limit when PYOCD_TARGET is not set)")])
def test_bin_from_an_elf_with_a_section_loaded_in_sram_is_refused(corpus, tmp_path, target, limit):
    built = corpus["ramfunc-in-sram"]
    project = Project(tmp_path / "gap", "sim-gap")
    shutil.copyfile(built.elf, project.dir / "app.elf")
    project.sconstruct("env.BinFromElf('app.bin', 'app.elf')\nenv.HexFromElf('app.hex', 'app.elf')\n",
                       target=target)
    image = load_image(built.elf)
    (a, a_data), (b, b_data) = image.segments[-2:]
    gap = b - a - len(a_data)
    result, delta = project.counters_after("app.bin", check=False)
    assert result.stderr == (
        f"scons: *** [app.bin] {project.dir / 'app.bin'}: not written: the data of {project.dir / 'app.elf'} "
        f"at 0x{a:08X}-0x{a + len(a_data) - 1:08X} and at 0x{b:08X}-0x{b + len(b_data) - 1:08X} lie "
        f"{gap:,} bytes ({gap / (1 << 20):.1f} MiB) apart, more than {limit}, and a raw binary would fill "
        "the gap. A section probably has its load address outside flash (one that runs from SRAM needs "
        "AT> FLASH in the linker script); or convert to .hex, which keeps gaps empty.\n")
    assert (a, b) == (0x08000048, 0x20000000)
    assert delta["connects"] == 0
    assert not (project.dir / "app.bin").exists()
    project.run("app.hex")                                  # the .hex keeps the gap empty
    assert load_image(project.dir / "app.hex") == load_image(built.hex)
