"""scons_pyocd.images: reading, converting and checking firmware images.

intelhex is the reference: our Intel HEX reader must accept what it accepts (with
the same data) and our writer must produce what it produces.
"""

import io
import logging
import os
import random
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from intelhex import AddressOverlapError, IntelHex

from scons_pyocd.errors import FlashError
from scons_pyocd.images import (MAX_GAP_WITHOUT_TARGET, Image, check_fits, check_gap_fill,
                                check_vector_table, convert, hex_bytes, load_image, write_bin, write_hex)

CORPUS = Path(__file__).parent / "bad_images"
FLASH = 0x08000000
F100_FLASH = [("flash", FLASH, 0x20000)]
PAGE = 1024
NUTTX = ("stm32vldiscovery-nsh-v1", "stm32vldiscovery-nsh-v2", "stm32vldiscovery-nsh-v3-codeshift")

PT_LOAD = 1
EM_ARM, EM_X86_64 = 40, 62


# --- helpers ---------------------------------------------------------------------------

SHT_PROGBITS, SHT_NOBITS, SHT_STRTAB = 1, 8, 3
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 1, 2, 4, 0x400
PT_TLS = 7


def make_elf(segments, machine=EM_ARM, e_type=2, elf64=False, sections=None, entry=0x08000001):
    """A minimal little-endian ELF as a linker writes it: the program headers, their data,
    then a section header table.

    ``segments`` holds ``(p_type, paddr, vaddr, data, memsz)``; ``data`` may be the index
    of an earlier segment whose file bytes this one covers too (a PT_TLS inside a PT_LOAD). ``sections`` holds
    ``(name, sh_type, sh_flags, sh_addr, where)``, ``where`` being ``(segment, offset, size)``
    (bytes of that segment's data) or ``bytes`` (data of its own, after the segments'); by
    default each PT_LOAD gets an allocated PROGBITS section over its data and a NOBITS one
    over the rest of its memory, as ld makes them. ``sections=False``: no section table."""
    ehsize, phentsize = (64, 56) if elf64 else (52, 32)
    shentsize = 64 if elf64 else 40
    phoff = ehsize
    offset = phoff + phentsize * len(segments)
    body = b""
    phdrs = b""
    offsets = []
    for p_type, paddr, vaddr, data, memsz in segments:
        if isinstance(data, int):       # the same file bytes as segment number ``data``
            at, data = offsets[data], segments[data][3]
        else:
            at = offset + len(body)
            body += data
        offsets.append(at)
        if elf64:
            phdrs += struct.pack("<IIQQQQQQ", p_type, 5, at, vaddr, paddr, len(data), memsz, 4)
        else:
            phdrs += struct.pack("<IIIIIIII", p_type, at, vaddr, paddr, len(data), memsz, 5, 4)
    if sections is None:
        sections = []
        for index, (p_type, paddr, vaddr, data, memsz) in enumerate(segments):
            if p_type == PT_LOAD and data:
                sections.append((f".load{index}", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, vaddr,
                                 (index, 0, len(data))))
            if p_type == PT_LOAD and memsz > len(data):
                sections.append((f".bss{index}", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, vaddr + len(data),
                                 (index, len(data), memsz - len(data))))
    strtab = b"\0.shstrtab\0"
    headers = []
    for name, sh_type, flags, addr, where in (sections or []):
        name_at = len(strtab)
        strtab += name.encode() + b"\0"
        if isinstance(where, bytes):
            sh_offset, size = offset + len(body), len(where)
            body += where
        else:
            segment, start, size = where
            sh_offset = offsets[segment] + start
        headers.append((name_at, sh_type, flags, addr, sh_offset, size))
    strtab_off = offset + len(body)
    shoff = strtab_off + len(strtab)
    headers.append((1, SHT_STRTAB, 0, 0, strtab_off, len(strtab)))
    if elf64:
        shdrs = bytes(shentsize) + b"".join(struct.pack("<IIQQQQIIQQ", n, t, f, a, o, s, 0, 0, 1, 0)
                                            for n, t, f, a, o, s in headers)
    else:
        shdrs = bytes(shentsize) + b"".join(struct.pack("<IIIIIIIIII", n, t, f, a, o, s, 0, 0, 1, 0)
                                            for n, t, f, a, o, s in headers)
    shnum, shstrndx = len(headers) + 1, len(headers)
    if sections is False:
        shoff = shnum = shstrndx = 0
        strtab = shdrs = b""
    if elf64:
        header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), e_type, machine, 1, entry,
                             phoff if segments else 0, shoff, 0, ehsize, phentsize, len(segments),
                             shentsize, shnum, shstrndx)
    else:
        header = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), e_type, machine, 1, entry,
                             phoff if segments else 0, shoff, 0x05000200, ehsize, phentsize, len(segments),
                             shentsize, shnum, shstrndx)
    return header + phdrs + body + strtab + shdrs


TEXT = bytes(range(256)) * 2                     # 512 bytes of code at 0x08000000
DATA = b"\xd0\xda" * 32                          # .data: runs at 0x20000000, loaded after .text


def firmware_elf(**kw):
    """A NuttX-like layout: .text, .data with LMA after .text and VMA in RAM, .bss."""
    return make_elf([(PT_LOAD, FLASH, FLASH, TEXT, len(TEXT)),
                     (PT_LOAD, FLASH + len(TEXT), 0x20000000, DATA, len(DATA)),
                     (PT_LOAD, 0x20000040, 0x20000040, b"", 0x800)], **kw)


def intelhex_of(image):
    ih = IntelHex()
    for address, data in image.segments:
        ih.puts(address, data)
    return ih


def intelhex_text(image):
    out = io.StringIO()
    intelhex_of(image).write_hex_file(out)
    return out.getvalue().encode()


def intelhex_image(path):
    ih = IntelHex(str(path))
    return Image([(start, ih.tobinstr(start, end - 1)) for start, end in ih.segments()])


def changed_pages(a, b, page=PAGE):
    pages = sorted(set(a.pages(page)) | set(b.pages(page)))
    return [p for p in pages if a.data_at(p, page) != b.data_at(p, page)]


def message(exc_info):
    return str(exc_info.value)


# --- Image -----------------------------------------------------------------------------

def test_image_sorts_merges_adjacent_and_drops_empty():
    image = Image([(0x110, b"\x03"), (0x100, b"\x01\x02"), (0x102, bytearray(b"\x09")), (0x200, b"")], "x")
    assert image.segments == ((0x100, b"\x01\x02\x09"), (0x110, b"\x03"))
    assert image.ranges() == [(0x100, 0x103), (0x110, 0x111)]
    assert (image.size, image.start, image.end) == (4, 0x100, 0x111)
    assert image == Image([(0x100, b"\x01"), (0x101, b"\x02\x09"), (0x110, b"\x03")])


def test_image_rejects_overlap_naming_both_ranges():
    with pytest.raises(FlashError) as exc:
        Image([(0x08000000, bytes(16)), (0x08000008, bytes(16))], "fw.hex")
    assert message(exc).startswith("fw.hex: data at 0x08000008-0x08000017 overlaps data at 0x08000000-0x0800000F")


def test_sha256_covers_addresses_and_data_not_the_split():
    image = Image([(FLASH, b"abc"), (FLASH + 16, b"d")])
    assert image.sha256() == Image([(FLASH, b"ab"), (FLASH + 2, b"c"), (FLASH + 16, b"d")]).sha256()
    assert image.sha256() != Image([(FLASH + 1, b"abc"), (FLASH + 16, b"d")]).sha256()
    assert image.sha256() != Image([(FLASH, b"abd"), (FLASH + 16, b"d")]).sha256()
    # Pinned: change detection records must survive tool upgrades.
    import hashlib
    expected = hashlib.sha256(struct.pack("<QQ", FLASH, 3) + b"abc" + struct.pack("<QQ", FLASH + 16, 1) + b"d")
    assert image.sha256() == expected.hexdigest()


def test_pages_data_at_and_to_bytes():
    image = Image([(FLASH + 0x3FF, b"\x01\x02"), (FLASH + 0x1000, b"\x03")])
    assert image.pages(PAGE) == [FLASH, FLASH + 0x400, FLASH + 0x1000]
    assert image.data_at(FLASH + 0x3FE, 4) == b"\xff\x01\x02\xff"
    assert image.data_at(FLASH + 0x3FE, 4, fill=0) == b"\x00\x01\x02\x00"
    assert image.data_at(FLASH + 0x2000, 2) == b"\xff\xff"
    flat = image.to_bytes(fill=0xA5)
    assert len(flat) == 0x1000 - 0x3FF + 1
    assert flat[:2] == b"\x01\x02" and flat[-1:] == b"\x03" and set(flat[2:-1]) == {0xA5}


def test_empty_image_has_no_start_and_does_not_fit():
    empty = Image([], "nothing.hex")
    assert empty.size == 0 and empty.ranges() == [] and empty.pages(PAGE) == []
    for action in (lambda: empty.start, lambda: empty.to_bytes(), lambda: check_fits(empty, F100_FLASH)):
        with pytest.raises(FlashError, match=r"^nothing\.hex: contains no data\."):
            action()


# --- bad-input corpus ------------------------------------------------------------------

#: file -> substrings of the message after "<path>" (the first names the location).
LOAD_ERRORS = {
    "bad_checksum.hex": [", line 3: bad checksum 0x00 (expected 0x68)", "rebuild it"],
    "unknown_record_type.hex": [", line 3: unknown record type 0x06 (Intel HEX defines 00-05)"],
    "truncated_line.hex": [", line 3: record says 16 data bytes but holds 5; the line is truncated"],
    "odd_hex_digits.hex": [", line 3: odd number of hex digits (21); the line is truncated"],
    "non_hex_chars.hex": [", line 2: character 'G' at column 12 is not a hex digit"],
    "short_record.hex": [", line 3: record too short (2 bytes; a record has at least 5)"],
    "overlap_different.hex": [", line 3: 8 byte(s) from 0x08000008 were already written by line 2, "
                              "with different data", "srec_cat"],
    "overlap_same.hex": [", line 3: 8 byte(s) from 0x08000008 were already written by line 2, "
                         "with the same data"],
    "missing_eof.hex": [": no end-of-file record (:00000001FF) after line 4; the file is truncated"],
    "after_eof.hex": [", line 4: data after the end-of-file record on line 3 (concatenated HEX files?)"],
    "empty.hex": [": the file is empty. Rebuild it"],
    "only_eof.hex": [": contains no data."],
    "not_hex.hex": [", line 1: does not start with ':', so this is not an Intel HEX file"],
    "eof_with_data.hex": [", line 3: end-of-file record carries data"],
    "bad_extended_address.hex": [", line 1: malformed extended linear address record (type 04)"],
    "duplicate_start.hex": [", line 4: second start address record"],
    "empty.bin": [": the file is empty."],
    "elf_named.bin": [": is an ELF file, not a raw binary", "objcopy -O binary"],
    "hex_named.bin": [": is Intel HEX text, not a raw binary", "Rename it to .hex"],
}

FIT_ERRORS = {
    "outside_flash.hex": [": bytes 0x00000000-0x0000001F (32 bytes) lie outside flash "
                          "0x08000000-0x0801FFFF (128 KiB)", "linker script"],
    "past_flash_end.hex": [": bytes 0x08020000-0x0802000F (16 bytes) run past the end of flash "
                           "0x08000000-0x0801FFFF (128 KiB)"],
}


def test_corpus_is_covered():
    listed = set(LOAD_ERRORS) | set(FIT_ERRORS) | {"good.hex", "README.md"}
    assert {p.name for p in CORPUS.iterdir()} == listed


@pytest.mark.parametrize("name", sorted(LOAD_ERRORS))
def test_bad_file_is_rejected_naming_file_and_place(name, tmp_path):
    # Copied under a name with a space and non-ASCII characters: messages must name it as is.
    path = tmp_path / f"my fïrmwäre {name}"
    shutil.copy(CORPUS / name, path)
    with pytest.raises(FlashError) as exc:
        load_image(path, base_address=FLASH)
    text = message(exc)
    assert text.startswith(str(path) + LOAD_ERRORS[name][0]), text
    for part in LOAD_ERRORS[name][1:]:
        assert part in text


@pytest.mark.parametrize("name", sorted(FIT_ERRORS))
def test_image_outside_flash_is_rejected(name):
    image = load_image(CORPUS / name)
    with pytest.raises(FlashError) as exc:
        check_fits(image, F100_FLASH)
    text = message(exc)
    assert text.startswith(str(CORPUS / name) + FIT_ERRORS[name][0]), text
    for part in FIT_ERRORS[name][1:]:
        assert part in text


def test_good_corpus_file_loads():
    image = load_image(CORPUS / "good.hex")
    assert image.segments == ((FLASH, bytes(range(32))),)
    assert image.fmt == "hex" and image == intelhex_image(CORPUS / "good.hex")
    check_fits(image, F100_FLASH)


@pytest.mark.parametrize("name", ["overlap_different.hex", "overlap_same.hex"])
def test_intelhex_rejects_any_overlap_by_default_and_so_do_we(name):
    """intelhex's default raises AddressOverlapError even for identical bytes;
    we reject both too, so a file never loads here but not in pyOCD or vice versa."""
    with pytest.raises(AddressOverlapError):
        IntelHex(str(CORPUS / name))
    with pytest.raises(FlashError, match="already written by line 2"):
        load_image(CORPUS / name)


@pytest.mark.parametrize("name", ["bad_checksum.hex", "unknown_record_type.hex", "truncated_line.hex",
                                  "odd_hex_digits.hex", "non_hex_chars.hex", "short_record.hex",
                                  "eof_with_data.hex", "bad_extended_address.hex", "duplicate_start.hex",
                                  "not_hex.hex"])
def test_intelhex_agrees_these_files_are_bad(name):
    with pytest.raises(Exception):
        IntelHex(str(CORPUS / name))


@pytest.mark.parametrize("name", ["missing_eof.hex", "after_eof.hex", "only_eof.hex", "empty.hex"])
def test_stricter_than_intelhex_on_truncated_concatenated_or_empty_files(name):
    IntelHex(str(CORPUS / name))       # intelhex loads these silently (part of the data, or none)
    with pytest.raises(FlashError):
        load_image(CORPUS / name)


def test_start_address_record_is_read_and_dropped():
    assert hex_bytes(load_image(CORPUS / "good.hex")) == (CORPUS / "good.hex").read_bytes().replace(
        b":0400000508000135B9\n", b"")


# --- formats ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, fmt", [
    ("fw.bin", b"\x01\x02", "bin"),
    ("FW.BIN", b"\x01\x02", "bin"),
    ("fw.hex", (CORPUS / "good.hex").read_bytes(), "hex"),
    ("fw.ihex", (CORPUS / "good.hex").read_bytes(), "hex"),
    ("fw.elf", firmware_elf(), "elf"),
    ("fw.axf", firmware_elf(), "elf"),
    ("nuttx", firmware_elf(), "elf"),
    ("fw.out", firmware_elf(), "elf"),
])
def test_format_from_extension_or_elf_magic(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_bytes(content)
    assert load_image(path, base_address=FLASH).fmt == fmt


def test_unknown_extension_without_elf_magic(tmp_path):
    path = tmp_path / "firmware.img"
    path.write_bytes(b"\x00\x10\x00\x20")
    with pytest.raises(FlashError) as exc:
        load_image(path, base_address=FLASH)
    assert message(exc).startswith(f"{path}: cannot tell the image format from the name (extension '.img')")
    assert load_image(path, base_address=FLASH, fmt="bin").segments == ((FLASH, b"\x00\x10\x00\x20"),)
    with pytest.raises(FlashError, match="unknown image format 'srec'; use one of bin, hex, elf"):
        load_image(path, fmt="srec")


def test_bin_needs_base_address(tmp_path):
    path = tmp_path / "nuttx.bin"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(FlashError) as exc:
        load_image(path)
    assert message(exc).startswith(f"{path}: a raw binary has no addresses; set PYOCD_BASE_ADDRESS")
    assert load_image(path, base_address="0x08000000") == Image([(FLASH, b"\x01\x02\x03\x04")])
    for bad in ("flash", -1, 1 << 32, 1.5, True):
        with pytest.raises(FlashError, match="PYOCD_BASE_ADDRESS .* like 0x08000000"):
            load_image(path, base_address=bad)
    with pytest.raises(FlashError, match="run past the 4 GiB address space"):
        load_image(path, base_address=0xFFFFFFFE)


def test_base_address_is_ignored_for_hex():
    assert load_image(CORPUS / "good.hex", base_address=0).start == FLASH


def test_hex_with_crlf_lone_cr_and_blank_lines(tmp_path):
    text = (CORPUS / "good.hex").read_bytes()
    expected = load_image(CORPUS / "good.hex")
    for variant in (text.replace(b"\n", b"\r\n"), text.replace(b"\n", b"\r"), text.replace(b"\n", b"\n\n")):
        path = tmp_path / "v.hex"
        path.write_bytes(variant)
        assert load_image(path) == expected == intelhex_image(path)


def test_hex_trailing_padding_after_eof_is_ignored(tmp_path):
    path = tmp_path / "padded.hex"
    path.write_bytes((CORPUS / "good.hex").read_bytes() + b"\x1a\n   \n\x00\x00")
    assert load_image(path) == load_image(CORPUS / "good.hex")


def test_hex_segment_address_records(tmp_path):
    path = tmp_path / "seg.hex"
    path.write_bytes(b":020000021000EC\n:0400100001020304E2\n:00000001FF\n")
    assert load_image(path).segments == ((0x10010, b"\x01\x02\x03\x04"),)
    assert load_image(path) == intelhex_image(path)


def test_hex_writer_rejects_addresses_beyond_4_gib():
    with pytest.raises(FlashError, match="beyond the 4 GiB that Intel HEX can address"):
        hex_bytes(Image([(0xFFFFFFFF, b"\x01\x02")], "big"))


# --- ELF -------------------------------------------------------------------------------

def test_elf_uses_load_addresses_and_skips_bss(tmp_path):
    path = tmp_path / "nuttx"
    path.write_bytes(firmware_elf())
    image = load_image(path)
    assert image.segments == ((FLASH, TEXT + DATA),)
    assert (image.fmt, image.elf_rule) == ("elf", "sections")


def test_elf_to_hex_and_bin(tmp_path):
    (tmp_path / "nuttx").write_bytes(firmware_elf())
    assert convert(tmp_path / "nuttx", tmp_path / "nuttx.bin") == load_image(tmp_path / "nuttx")
    assert (tmp_path / "nuttx.bin").read_bytes() == TEXT + DATA
    convert(tmp_path / "nuttx", tmp_path / "nuttx.hex")
    assert intelhex_image(tmp_path / "nuttx.hex") == Image([(FLASH, TEXT + DATA)])


HEADERS = b"\x7fELF" + bytes(0x7FC)             # what ld maps in front of code linked at 0x08000800


def load_elf(tmp_path, **kw):
    path = tmp_path / "fw.elf"
    path.write_bytes(make_elf(**kw))
    return load_image(path)


def test_elf_takes_sections_not_the_segment_bytes_around_them(tmp_path):
    # One PT_LOAD from 0x08000000 holding 2 KiB of headers and padding, then .text; and a
    # NOLOAD (NOBITS) section, a non-allocated one and an empty one, none of them flashed.
    segment = HEADERS + TEXT
    image = load_elf(tmp_path, segments=[(PT_LOAD, FLASH, FLASH, segment, len(segment) + 0x100)], sections=[
        (".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, FLASH + 0x800, (0, 0x800, len(TEXT))),
        (".noload", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, FLASH + 0x800 + len(TEXT), (0, len(segment), 0x100)),
        (".comment", SHT_PROGBITS, 0, 0, b"GCC: 12.2"),
        (".empty", SHT_PROGBITS, SHF_ALLOC, FLASH + 0x400, (0, 0x400, 0)),
        (".inactive", 0, SHF_ALLOC, FLASH + 0x400, (0, 0x400, 16)),          # SHT_NULL
    ])
    assert image.segments == ((FLASH + 0x800, TEXT),)


def test_elf_without_a_section_table_is_read_by_segments_and_says_so(tmp_path, caplog):
    path = tmp_path / "fw.elf"
    path.write_bytes(make_elf([(PT_LOAD, FLASH, FLASH, HEADERS + TEXT, 0x800 + len(TEXT))], sections=False))
    with caplog.at_level(logging.WARNING, logger="scons_pyocd.images"):
        image = load_image(path)
    assert (image.segments, image.elf_rule) == (((FLASH, HEADERS + TEXT),), "segments")
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: has no section table, so its PT_LOAD program headers are taken whole (objcopy "
        "refuses such a file): they may hold the ELF header and alignment padding in front of the "
        "firmware. Flash the ELF as the linker wrote it, or a .hex made from it."]
    caplog.clear()
    load_image(write(tmp_path / "with-sections.elf", firmware_elf()))
    assert not caplog.records


def write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("what, segment, section_addr, expected", [
    # The LMA comes from the PT_LOAD holding the section's file bytes and run addresses:
    # p_paddr + (sh_offset - p_offset), whatever sh_addr says beyond that.
    ("through its segment", (PT_LOAD, FLASH + 0x200, 0x20000000, DATA, len(DATA)), 0x20000010, FLASH + 0x210),
    # Run addresses outside the segment's: not in it, so the LMA is the VMA (as in BFD).
    ("VMA outside the segment", (PT_LOAD, FLASH + 0x200, 0x20000000, DATA, len(DATA)), 0x20001000, 0x20001000),
    # Several PT_LOADs with p_paddr all 0: BFD ignores the physical addresses.
    ("all p_paddr zero", (PT_LOAD, 0, FLASH + 0x200, DATA, len(DATA)), FLASH + 0x210, FLASH + 0x210),
])
def test_elf_section_load_address(tmp_path, what, segment, section_addr, expected):
    code = (PT_LOAD, 0 if what == "all p_paddr zero" else FLASH, FLASH, TEXT, len(TEXT))
    image = load_elf(tmp_path, segments=[code, segment], sections=[
        (".text", SHT_PROGBITS, SHF_ALLOC, FLASH, (0, 0, len(TEXT))),
        (".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, section_addr, (1, 0x10, 0x20))])
    assert image == Image([(FLASH, TEXT), (expected, DATA[0x10:0x30])]), what


def test_elf_section_in_no_segment_loads_at_its_run_address(tmp_path):
    image = load_elf(tmp_path, segments=[(PT_LOAD, FLASH, FLASH, TEXT, len(TEXT))], sections=[
        (".text", SHT_PROGBITS, SHF_ALLOC, FLASH, (0, 0, len(TEXT))),
        (".orphan", SHT_PROGBITS, SHF_ALLOC, FLASH + 0x1000, b"\x5a" * 8)])
    assert image.segments == ((FLASH, TEXT), (FLASH + 0x1000, b"\x5a" * 8))


def test_elf_thread_local_section_loads_through_pt_tls(tmp_path):
    tdata = b"\x71" * 16
    image = load_elf(tmp_path, segments=[(PT_LOAD, FLASH, FLASH, TEXT, len(TEXT)),
                                         (PT_LOAD, FLASH + 0x200, 0x20000000, tdata, 16),
                                         (PT_TLS, FLASH + 0x300, 0x20000000, 1, 16)], sections=[
        (".text", SHT_PROGBITS, SHF_ALLOC, FLASH, (0, 0, len(TEXT))),
        (".tdata", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE | SHF_TLS, 0x20000000, (1, 0, 16))])
    assert image.segments == ((FLASH, TEXT), (FLASH + 0x300, tdata))


def test_elf_for_another_architecture_handmade(tmp_path):
    path = tmp_path / "host.elf"
    path.write_bytes(make_elf([(PT_LOAD, 0x400000, 0x400000, b"\x90" * 16, 16)], machine=EM_X86_64, elf64=True))
    with pytest.raises(FlashError) as exc:
        load_image(path)
    assert message(exc).startswith(f"{path}: is an ELF file for EM_X86_64, not ARM (EM_ARM)")


def test_elf_for_another_architecture_from_cc(tmp_path):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "hello program"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True)
    with pytest.raises(FlashError, match=r"is an ELF file for EM_\w+, not ARM"):
        load_image(exe)


def _overlapping(**kw):
    return make_elf([(PT_LOAD, FLASH, FLASH, bytes(32), 32), (PT_LOAD, FLASH + 16, FLASH + 16, bytes(32), 32)], **kw)


@pytest.mark.parametrize("elf, expected", [
    (make_elf([]), ": has no loadable data (no allocated section with file contents)."),
    (make_elf([], sections=False), ": has no loadable data (no PT_LOAD program header with file contents)."),
    (make_elf([(PT_LOAD, 0x20000000, 0x20000000, b"", 0x100)]), ": has no loadable data (no allocated section"),
    (make_elf([(PT_LOAD, 0x20000000, 0x20000000, b"", 0x100)], sections=False), ": has no loadable data (no PT_LOAD"),
    (make_elf([], e_type=1, sections=[(".text", SHT_PROGBITS, SHF_ALLOC, 0, b"\x70\x47")]),
     ": is an object file (ET_REL), not a linked program: its sections have no addresses yet."),
    (_overlapping(), ", sections 1 (.load0) and 2 (.load1): load addresses 0x08000000-0x0800001F and "
                     "0x08000010-0x0800002F overlap. Fix the linker script's AT() load addresses."),
    (_overlapping(sections=False), ", program headers 0 and 1: load addresses 0x08000000-0x0800001F and "
                                   "0x08000010-0x0800002F overlap"),
    (make_elf([(PT_LOAD, 0xFFFFFFF0, 0xFFFFFFF0, bytes(32), 32)]),
     ", section 1 (.load0): load address 0xFFFFFFF0 + 32 bytes runs past 4 GiB"),
    (make_elf([(PT_LOAD, 0xFFFFFFF0, 0xFFFFFFF0, bytes(32), 32)], sections=False),
     ", program header 0: load address 0xFFFFFFF0 + 32 bytes runs past 4 GiB"),
    (b"\x7fELF" + bytes(12), ": corrupt or truncated ELF file"),
    (b"\x7fELF\x01\x01\x01" + bytes(9) + b"\xff" * 40, ": is an ELF file for machine number 65535, not ARM"),
    (b"\x7fELF\x03" + firmware_elf()[5:], ": corrupt or truncated ELF file"),
])
def test_bad_elf(tmp_path, elf, expected):
    path = tmp_path / "fw.elf"
    path.write_bytes(elf)
    with pytest.raises(FlashError) as exc:
        load_image(path)
    assert message(exc).startswith(str(path) + expected), message(exc)


@pytest.mark.parametrize("sections", [None, False], ids=["sections", "segments"])
def test_truncated_elf_is_rejected_wherever_it_is_cut(tmp_path, sections):
    whole = firmware_elf(sections=sections)
    path = tmp_path / "nuttx"
    for size in range(4, len(whole)):
        path.write_bytes(whole[:size])
        with pytest.raises(FlashError, match="truncated"):
            load_image(path)


def test_elf_data_past_end_of_file(tmp_path):
    elf = bytearray(firmware_elf(sections=False))
    struct.pack_into("<I", elf, 52 + 16, 0x10000)           # program header 0: p_filesz
    path = write(tmp_path / "fw.elf", bytes(elf))
    with pytest.raises(FlashError, match=r", program header 0: its 65,536 bytes at file offset 0x94 run past the end"):
        load_image(path)
    elf = bytearray(firmware_elf())
    shoff = struct.unpack_from("<I", elf, 0x20)[0]
    struct.pack_into("<I", elf, shoff + 40 + 20, 0x10000)   # section 1: sh_size
    path = write(tmp_path / "fw.elf", bytes(elf))
    with pytest.raises(FlashError, match=r", section 1 \(\.load0\): its 65,536 bytes at file offset 0x94 run "
                                         r"past the end of the file \(\d+ bytes\); the file is truncated"):
        load_image(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupt_elf_raises_only_flash_error(tmp_path, data):
    elf = bytearray(firmware_elf())
    for _ in range(data.draw(st.integers(1, 8))):
        elf[data.draw(st.integers(4, len(elf) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fw.elf"
    path.write_bytes(bytes(elf))
    try:
        load_image(path)
    except FlashError:
        pass


# --- files and the OS ------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "no such dir" / "nuttx.hex"
    with pytest.raises(FlashError, match=r"no such file\. Check the path, or build the image first\.") as exc:
        load_image(path)
    assert message(exc).startswith(str(path))


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(FlashError, match=r": is a directory, not an image file"):
        load_image(tmp_path, fmt="hex")
    with pytest.raises(FlashError, match=r": cannot write \(is a directory\)"):
        write_hex(Image([(FLASH, b"\x01")]), tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.hex"
    shutil.copy(CORPUS / "good.hex", path)
    path.chmod(0)
    try:
        if not os.access(path, os.R_OK):
            with pytest.raises(FlashError, match=r"secret\.hex: cannot be read \(permission denied\)"):
                load_image(path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    # Root reads anything: simulate the OS refusing so the translation is tested everywhere.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(FlashError, match=r"secret\.hex: cannot be read \(permission denied\)"):
        load_image(path)


def test_other_os_errors_are_translated(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr("builtins.open", fail)
    with pytest.raises(FlashError, match=r"fw\.hex: cannot be read \(Input/output error\)"):
        load_image(tmp_path / "fw.hex")
    with pytest.raises(FlashError, match=r"fw\.hex: cannot write \(Input/output error\)"):
        write_hex(Image([(FLASH, b"\x01")]), tmp_path / "fw.hex")


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    real_open = open

    class DiskFull:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", lambda *a, **kw: DiskFull(real_open(*a, **kw)))
    target = tmp_path / "out.hex"
    with pytest.raises(FlashError, match=r"out\.hex: cannot write \(No space left on device\)"):
        write_hex(Image([(FLASH, bytes(100))]), target)
    assert not target.exists()


def test_file_that_cannot_be_opened_for_writing_is_left_alone(tmp_path, monkeypatch):
    target = tmp_path / "protected.bin"
    target.write_bytes(b"old")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(FlashError, match=r"protected\.bin: cannot write \(permission denied\)"):
        write_bin(Image([(FLASH, b"\x01")]), target)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"


def test_write_into_missing_directory(tmp_path):
    target = tmp_path / "missing" / "out.bin"
    with pytest.raises(FlashError, match=r"out\.bin: cannot write \(its directory .* does not exist\)"):
        write_bin(Image([(FLASH, b"\x01")]), target)
    assert not target.exists()


def test_unicode_and_space_paths_round_trip(tmp_path):
    src = tmp_path / "répertoire à espaces" / "fïrm wäre.hex"
    src.parent.mkdir()
    shutil.copy(CORPUS / "good.hex", src)
    dst = src.with_name("sortie 固件.bin")
    assert convert(src, dst).start == FLASH
    assert load_image(dst, FLASH) == load_image(src)


def test_convert_rejects_unknown_output_and_bad_fill(tmp_path):
    with pytest.raises(FlashError, match=r"out\.elf: can only convert to Intel HEX"):
        convert(CORPUS / "good.hex", tmp_path / "out.elf")
    with pytest.raises(FlashError, match=r"gap fill 256 is not a byte value"):
        convert(CORPUS / "good.hex", tmp_path / "out.bin", fill=256)


def test_convert_bin_without_base_address(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x01")
    with pytest.raises(FlashError, match="PYOCD_BASE_ADDRESS"):
        convert(tmp_path / "a.bin", tmp_path / "a.hex")


def test_conversions_are_deterministic(tmp_path):
    (tmp_path / "fw.elf").write_bytes(firmware_elf())
    for out in ("a.hex", "b.hex", "a.bin", "b.bin"):
        convert(tmp_path / "fw.elf", tmp_path / out)
    assert (tmp_path / "a.hex").read_bytes() == (tmp_path / "b.hex").read_bytes()
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


# --- check_fits ------------------------------------------------------------------------

@pytest.mark.parametrize("segments", [
    [(FLASH, bytes(0x20000))],
    [(FLASH, b"\x01"), (FLASH + 0x1FFFF, b"\x02")],
])
def test_fits(segments):
    check_fits(Image(segments), F100_FLASH)


def test_image_larger_than_flash():
    image = Image([(FLASH, bytes(0x20000 + 2048))], "big.bin", "bin")
    with pytest.raises(FlashError) as exc:
        check_fits(image, F100_FLASH)
    assert message(exc).startswith("big.bin: the image holds 133,120 bytes, 2,048 more than the 131,072 bytes "
                                   "of flash 0x08000000-0x0801FFFF (128 KiB).")
    assert "PYOCD_BASE_ADDRESS (here 0x08000000)" in message(exc)


def test_bin_at_wrong_base_address():
    with pytest.raises(FlashError) as exc:
        check_fits(Image([(0, bytes(1024))], "nuttx.bin", "bin"), F100_FLASH)
    assert message(exc) == ("nuttx.bin: bytes 0x00000000-0x000003FF (1 KiB) lie outside flash 0x08000000-0x0801FFFF "
                            "(128 KiB). A raw binary goes at PYOCD_BASE_ADDRESS (here 0x00000000): set it to "
                            "the start of flash, or check the file is for this chip.")


def test_fits_across_adjacent_regions_but_not_across_a_gap():
    regions = [("bank2", 0x08010000, 0x10000), ("bank1", FLASH, 0x10000), ("ram", 0x20000000, 0x2000)]
    check_fits(Image([(0x0800FFF0, bytes(32)), (0x20000000, bytes(16))]), regions)
    with pytest.raises(FlashError, match=r"bytes 0x08020000-0x0802000F \(16 bytes\) run past the end of "
                                         r"bank1 0x08000000-0x0800FFFF \(64 KiB\), bank2 0x08010000-0x0801FFFF "
                                         r"\(64 KiB\), ram 0x20000000-0x20001FFF \(8 KiB\)"):
        check_fits(Image([(0x0801FFF0, bytes(32))]), regions)
    with pytest.raises(FlashError, match=r"bytes 0x1FFFFFF8-0x1FFFFFFF \(8 bytes\) lie outside"):
        check_fits(Image([(0x1FFFFFF8, bytes(16))]), regions)


def test_check_fits_without_regions():
    with pytest.raises(FlashError, match="no memory regions"):
        check_fits(Image([(FLASH, b"\x01")], "fw.hex"), [])


# --- a raw binary's vector table -------------------------------------------------------

F100_PAGES = [(FLASH, FLASH + 0x20000, PAGE)]
F100_SRAM = [(0x20000000, 0x20002000)]
TOP = 0x20002000                                  # initial SP: the top of the F100's SRAM


def raw_binary(words, size):
    data = struct.pack(f"<{len(words)}I", *words)
    return Image([(FLASH, data + bytes(size - len(data)))], "fw.bin", "bin")


def refusal(link, sp, reset, pages, why):
    return (f"fw.bin: its vector table (initial SP 0x{sp:08X}, reset vector 0x{reset:08X}) says it was "
            f"linked to run elsewhere: the reset handler is outside the pages {pages} it would occupy at "
            "0x08000000, the flash start, where a raw binary goes when no base address is given. There it "
            "would not start, and it would overwrite what those pages hold. It was probably linked at "
            f"0x{link:08X} ({why}): set PYOCD_BASE_ADDRESS (or --base-address) to its link address, or "
            "flash the ELF or .hex, which carry their addresses.")


PAGE_WHY = "the start of the flash page holding its lowest exception handler, 0x{:08X}"

VECTOR_TABLE_CASES = [
    # (what, words, size, None when it passes, else (suggested link address, why))
    ("linked at the flash start", [TOP, 0x08000101, 0x08000181], 0x5C8, None),
    ("reset handler past the data but in its last page", [TOP, 0x080007F1], 0x500, None),
    ("not a vector table: SP outside SRAM", [0x10002000, 0x08000895], 0x5C8, None),
    ("not a vector table: SP not word-aligned", [TOP - 2, 0x08000895], 0x5C8, None),
    ("not a vector table: reset vector even (not Thumb)", [TOP, 0x08000894], 0x5C8, None),
    ("not a vector table: reset vector outside flash", [TOP, 0x00000895], 0x5C8, None),
    ("shorter than two words", [TOP], 4, None),
    ("linked after a 2 KiB bootloader", [TOP, 0x08000895, 0x08000891, 0x08000891], 0x5C8,
     (0x08000800, PAGE_WHY.format(0x08000890))),
    ("lowest handler below the reset handler", [TOP, 0x08004235, 0x08004051, 0x08004051], 0x1000,
     (0x08004000, PAGE_WHY.format(0x08004050))),
    ("a handler too far below to be in the binary is not counted", [TOP, 0x08004235, 0x08000201], 0x1000,
     (0x08004000, PAGE_WHY.format(0x08004234))),
    ("a handler above the reset handler is not counted", [TOP, 0x08004235, 0x08004F01], 0x1000,
     (0x08004000, PAGE_WHY.format(0x08004234))),
    ("smaller than a page, not page-aligned", [TOP, 0x08004A11, 0x08004A01], 0x100,
     (0x08004A00, "its lowest exception handler, 0x08004A00, rounded down to the vector table's "
                  "128-byte alignment")),
    ("tiny", [TOP, 0x08004A79, 0x08004A71, 0], 16, (0x08004A70, "its lowest exception handler")),
]


@pytest.mark.parametrize("what, words, size, refused", VECTOR_TABLE_CASES, ids=[c[0] for c in VECTOR_TABLE_CASES])
def test_raw_binary_vector_table(what, words, size, refused):
    image = raw_binary(words, size)
    if refused is None:
        check_vector_table(image, F100_PAGES, F100_SRAM)
        return
    end = FLASH + -(-size // PAGE) * PAGE
    with pytest.raises(FlashError) as exc:
        check_vector_table(image, F100_PAGES, F100_SRAM)
    assert message(exc) == refusal(refused[0], words[0], words[1], f"0x08000000-0x{end - 1:08X}", refused[1])
    # At the suggested address the binary holds its reset handler.
    assert refused[0] <= words[1] & ~1 < refused[0] + size


def test_raw_binary_vector_table_not_checked_without_a_memory_map():
    check_vector_table(raw_binary([TOP, 0x08000895], 0x5C8), [], [])


def test_convert_checks_a_raw_binary_only_at_the_default_base(tmp_path):
    source = write(tmp_path / "app.bin", raw_binary([TOP, 0x08000895, 0x08000891], 0x5C8).segments[0][1])
    with pytest.raises(FlashError, match=r"app\.bin: its vector table .* probably linked at 0x08000800 "):
        convert(source, tmp_path / "app.hex", FLASH, flash=F100_PAGES, ram=F100_SRAM, default_base=True)
    assert not (tmp_path / "app.hex").exists()
    # A base address given explicitly wins, even the flash start.
    assert convert(source, tmp_path / "app.hex", FLASH, flash=F100_PAGES, ram=F100_SRAM).start == FLASH
    assert convert(source, tmp_path / "app.hex", 0x08000800, flash=F100_PAGES, ram=F100_SRAM).start == 0x08000800


# --- gap fill in a raw binary ----------------------------------------------------------

def gap_message(gap, limit_text, a, b, out="app.bin", src="app.elf"):
    return (f"{out}: not written: the data of {src} at {a} and at {b} lie {gap} apart, more than "
            f"{limit_text}, and a raw binary would fill the gap. A section probably has its load address "
            "outside flash (one that runs from SRAM needs AT> FLASH in the linker script); or convert to "
            ".hex, which keeps gaps empty.")


def two_pieces(gap):
    start = FLASH + 16 + gap
    return Image([(FLASH, b"\x01" * 16), (start, b"\x02" * 16)], "app.elf", "elf"), start


@pytest.mark.parametrize("flash_size, limit_text", [
    (0x20000, "the target's 128 KiB of flash"),
    (None, "16 MiB (the limit when PYOCD_TARGET is not set)"),
])
def test_gap_fill_limit(flash_size, limit_text):
    limit = flash_size or MAX_GAP_WITHOUT_TARGET
    check_gap_fill(two_pieces(limit)[0], flash_size)                  # a gap of the limit: fine
    image, start = two_pieces(limit + 1)
    with pytest.raises(FlashError) as exc:
        check_gap_fill(image, flash_size, "app.bin")
    size = f"{limit + 1:,} bytes" if limit < 1 << 20 else f"{limit + 1:,} bytes ({(limit + 1) / (1 << 20):.1f} MiB)"
    assert message(exc) == gap_message(size, limit_text, "0x08000000-0x0800000F", f"0x{start:08X}-0x{start + 15:08X}")


def test_write_bin_refuses_a_section_loaded_in_sram_and_writes_nothing(tmp_path):
    elf = write(tmp_path / "app.elf", make_elf([(PT_LOAD, FLASH, FLASH, TEXT, len(TEXT)),
                                                (PT_LOAD, 0x20000000, 0x20000000, DATA, len(DATA))]))
    for flash, limit_text in ((F100_PAGES, "the target's 128 KiB of flash"),
                              ((), "16 MiB (the limit when PYOCD_TARGET is not set)")):
        with pytest.raises(FlashError) as exc:
            convert(elf, tmp_path / "app.bin", flash=flash)
        assert message(exc) == gap_message("402,652,672 bytes (384.0 MiB)", limit_text, "0x08000000-0x080001FF",
                                           "0x20000000-0x2000003F", tmp_path / "app.bin", elf)
        assert not (tmp_path / "app.bin").exists()
    convert(elf, tmp_path / "app.hex")                                 # a .hex keeps the gap empty
    assert load_image(tmp_path / "app.hex") == load_image(elf)


# --- properties ------------------------------------------------------------------------

WINDOW = 0x20000


@st.composite
def images(draw, window=WINDOW, longest=None):
    """Random non-overlapping segments within ``window`` bytes at 0x08000000, each at
    most ``longest`` bytes long."""
    cuts = sorted(draw(st.sets(st.integers(0, window), min_size=2, max_size=12)))
    if len(cuts) % 2:
        cuts.pop()
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    pairs = [(a, b if longest is None else min(b, a + longest)) for a, b in zip(cuts[::2], cuts[1::2])]
    return Image([(FLASH + a, rng.randbytes(b - a)) for a, b in pairs], "random")


workdir_settings = settings(max_examples=60, deadline=None,
                            suppress_health_check=[HealthCheck.function_scoped_fixture])


@workdir_settings
@given(images(), st.integers(0, 255))
def test_round_trip_segments_hex_bin(tmp_path, image, fill):
    write_hex(image, tmp_path / "a.hex")
    assert load_image(tmp_path / "a.hex") == image
    assert (tmp_path / "a.hex").read_bytes() == intelhex_text(image)
    base = write_bin(image, tmp_path / "a.bin", fill=fill)
    assert base == image.start
    flat = Image([(image.start, image.to_bytes(fill))])
    assert load_image(tmp_path / "a.bin", base) == flat
    assert (tmp_path / "a.bin").read_bytes() == intelhex_of(image).tobinstr(pad=fill)
    assert convert(tmp_path / "a.bin", tmp_path / "b.hex", base) == flat
    assert load_image(tmp_path / "b.hex") == flat
    assert convert(tmp_path / "a.hex", tmp_path / "b.bin", fill=fill) == image
    assert (tmp_path / "b.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()
    for page in image.pages(PAGE):
        assert image.data_at(page, PAGE, fill) == flat.data_at(page, PAGE, fill)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images(window=0x30000))
def test_reader_agrees_with_intelhex(tmp_path, image):
    text = intelhex_text(image)
    ours = Image(load_hex_text(tmp_path, text).segments)
    assert ours == image
    ih = IntelHex(io.StringIO(text.decode()))
    assert ih.segments() == image.ranges()


def load_hex_text(directory, text):
    path = directory / "x.hex"
    path.write_bytes(text)
    return load_image(path)


def corruptions():
    """One edit to one line: substitute, insert or delete a character, cut the line, drop it."""
    return st.tuples(st.sampled_from(["sub", "ins", "del", "cut", "drop"]), st.integers(0, 10 ** 6),
                     st.integers(0, 10 ** 6), st.sampled_from(list(b"0123456789ABCDEFabcdefG: \r\x00\xff")))


def corrupt(text, edit):
    kind, line_pick, pos_pick, char = edit
    lines = text.split(b"\n")[:-1]
    n = line_pick % len(lines)
    line = lines[n]
    pos = pos_pick % (len(line) + 1)
    if kind == "sub":
        pos = pos_pick % len(line)
        line = line[:pos] + bytes([char]) + line[pos + 1:]
    elif kind == "ins":
        line = line[:pos] + bytes([char]) + line[pos:]
    elif kind == "del":
        pos = pos_pick % len(line)
        line = line[:pos] + line[pos + 1:]
    elif kind == "cut":
        line = line[:pos]
    else:
        return b"".join(l + b"\n" for i, l in enumerate(lines) if i != n)
    lines[n] = line
    return b"".join(l + b"\n" for l in lines)


def intelhex_verdict(directory, text):
    """intelhex's reading of ``text`` from a file (text mode: universal newlines), or None."""
    path = directory / "reference.hex"
    path.write_bytes(text)
    try:
        ih = IntelHex(str(path))
    except Exception:
        return None
    return Image([(s, ih.tobinstr(s, e - 1)) for s, e in ih.segments()])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images(longest=256), corruptions())
def test_corrupted_hex_raises_flash_error_and_agrees_with_intelhex(tmp_path, image, edit):
    bad = corrupt(intelhex_text(image), edit)
    assume(bad != intelhex_text(image))
    reference = intelhex_verdict(tmp_path, bad)
    try:
        ours = load_hex_text(tmp_path, bad)
    except FlashError as exc:
        # Where intelhex accepts, we reject only the documented extra cases.
        event("both reject" if reference is None else "only we reject")
        if reference is not None:
            assert ("no end-of-file record" in str(exc) or "after the end-of-file record" in str(exc)
                    or "contains no data" in str(exc) or "the file is empty" in str(exc)), str(exc)
        return
    event("both accept")
    assert reference is not None
    assert ours == reference


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images(), st.integers(0, 10 ** 6), st.integers(1, 15))
def test_any_changed_hex_digit_is_caught(tmp_path, image, pick, delta):
    text = bytearray(intelhex_text(image))
    digits = [i for i, c in enumerate(text) if chr(c) in "0123456789ABCDEF"]
    i = digits[pick % len(digits)]
    text[i] = ord("%X" % ((int(chr(text[i]), 16) + delta) % 16))
    with pytest.raises(FlashError):
        load_hex_text(tmp_path, bytes(text))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_garbage_as_hex_raises_only_flash_error(tmp_path, blob):
    try:
        load_hex_text(tmp_path, blob)
    except FlashError:
        pass


# --- real NuttX builds -----------------------------------------------------------------

def nuttx(firmware, version):
    folder = firmware / version
    return load_image(folder / "nuttx"), load_image(folder / "nuttx.bin", FLASH), load_image(folder / "nuttx.hex")


@pytest.mark.parametrize("version", NUTTX)
def test_nuttx_elf_equals_bin_and_hex(shared_firmware, version):
    elf, binary, hexfile = nuttx(shared_firmware, version)
    assert elf == binary == hexfile
    assert elf.sha256() == binary.sha256() == hexfile.sha256()
    assert hexfile == intelhex_image(shared_firmware / version / "nuttx.hex")
    check_fits(elf, F100_FLASH)
    assert len(elf.pages(PAGE)) == 39


def test_nuttx_elf_keeps_data_at_its_load_address(shared_firmware):
    elf = load_image(shared_firmware / NUTTX[0] / "nuttx")
    # .data runs at 0x20000000 but is stored after .text; the image is one flash segment.
    assert elf.ranges() == [(FLASH, FLASH + 39476)]


def test_nuttx_conversions_match_objcopy_and_intelhex(shared_firmware, tmp_path):
    folder = shared_firmware / NUTTX[0]
    assert convert(folder / "nuttx", tmp_path / "nuttx.bin") is not None
    assert (tmp_path / "nuttx.bin").read_bytes() == (folder / "nuttx.bin").read_bytes()
    convert(folder / "nuttx", tmp_path / "nuttx.hex")
    reference = IntelHex(str(folder / "nuttx.hex"))
    reference.start_addr = None
    out = io.StringIO()
    reference.write_hex_file(out)
    assert (tmp_path / "nuttx.hex").read_bytes() == out.getvalue().encode()
    convert(folder / "nuttx.hex", tmp_path / "from-hex.bin")
    assert (tmp_path / "from-hex.bin").read_bytes() == (folder / "nuttx.bin").read_bytes()


def test_nuttx_changed_pages(shared_firmware):
    v1, v2, v3 = (load_image(shared_firmware / v / "nuttx") for v in NUTTX)
    assert len(changed_pages(v1, v1)) == 0
    assert len(changed_pages(v1, v2)) == 2
    assert len(changed_pages(v1, v3)) == 39
    assert len({v1.sha256(), v2.sha256(), v3.sha256()}) == 3
