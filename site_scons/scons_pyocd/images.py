"""Firmware images: read raw binary, Intel HEX and ELF files, convert between them,
and check them against a target's memory map.

Pure functions with no SCons and no pyOCD: the builders call them, the tests call
them directly. Every bad input raises :class:`~scons_pyocd.errors.FlashError` with
a message that names the file, where in it (line, offset, program header), what is
wrong and what to do; no intelhex, pyelftools or OS exception escapes.

Intel HEX is read and written here rather than through ``intelhex.IntelHex``,
whose one-dict-entry-per-byte store takes about 0.7 s to convert a 2 MiB image
either way (this module: about 0.1 s). The reader accepts exactly what
``IntelHex.loadhex`` accepts, with the same addresses and data, except that it
also rejects a file without an end-of-file record, records after the end-of-file
record, and a file with no data (a truncated, concatenated or empty build output). Like intelhex it rejects
any address written twice, even with the same byte. The writer's output is
byte-identical to ``IntelHex.write_hex_file`` (16 data bytes a record, ``\\n``
line ends, no start-address record). The tests hold both claims against intelhex.
pyelftools is imported only when an ELF file is read.
"""

import binascii
import hashlib
import io
import logging
import os
import re
import struct
from bisect import bisect_right
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .errors import FlashError

LOG = logging.getLogger(__name__)
PathLike = Union[str, "os.PathLike[str]"]
Segment = Tuple[int, bytes]
#: A memory region as the caller describes it: (name, start address, length in bytes).
Region = Tuple[str, int, int]
#: An address range: (start, end), end exclusive.
Range = Tuple[int, int]
#: A flash region: (start, end, page size), end exclusive, in bytes.
FlashRange = Tuple[int, int, int]

FORMATS = ("bin", "hex", "elf")
EXTENSIONS = {".bin": "bin", ".hex": "hex", ".ihex": "hex", ".elf": "elf", ".axf": "elf"}
ELF_MAGIC = b"\x7fELF"
ADDRESS_LIMIT = 1 << 32

_HEX_TODO = "The file is corrupt or not Intel HEX: rebuild it (for example objcopy -O ihex)."
_ELF_TODO = "Rebuild the firmware, and flash the linked ELF (for NuttX, the file named 'nuttx')."
_LINK_TODO = ("Check that the image was linked for this chip (the FLASH origin and length in its "
              "linker script) and that the target is the right one.")


def _name(path: PathLike) -> str:
    return os.fsdecode(os.fspath(path))


def _span(start: int, end: int) -> str:
    """An address range as the datasheets write it: both ends inclusive."""
    return f"0x{start:08X}-0x{end - 1:08X}"


def _bytes(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n:,} bytes"


class Image:
    """The bytes to write to a target, at their addresses.

    ``segments`` is any iterable of ``(address, data)``. The image keeps them sorted,
    drops empty ones and merges adjacent ones, so two images holding the same bytes at
    the same addresses are equal and hash alike however they were split (equality
    ignores ``source`` and ``fmt``). Overlapping segments raise :class:`FlashError`.

    ``source`` is the file the image came from, named in error messages; ``fmt`` is
    the format it was read as (``"bin"``, ``"hex"``, ``"elf"``) or None. ``elf_rule`` says
    how an ELF was read: ``"sections"`` (what objcopy writes, see :func:`load_image`) or
    ``"segments"`` (a file without a section table); None for other formats.
    """

    __slots__ = ("segments", "source", "fmt", "elf_rule", "_starts")

    def __init__(self, segments: Iterable[Tuple[int, bytes]], source: Optional[PathLike] = None,
                 fmt: Optional[str] = None):
        self.source = _name(source) if source is not None else "<image>"
        self.fmt = fmt
        self.elf_rule: Optional[str] = None
        runs: List[list] = []      # [start, end, [data, ...]]
        for address, data in sorted(((int(a), bytes(d)) for a, d in segments if len(d)),
                                    key=lambda seg: seg[0]):
            if address < 0:
                raise FlashError(f"{self.source}: negative address {address}. "
                                 "Addresses start at 0; check how the image was built.")
            if runs and address < runs[-1][1]:
                raise FlashError(
                    f"{self.source}: data at {_span(address, address + len(data))} overlaps "
                    f"data at {_span(runs[-1][0], runs[-1][1])}. "
                    "An image must hold one byte per address; rebuild it.")
            if runs and address == runs[-1][1]:
                runs[-1][1] += len(data)
                runs[-1][2].append(data)
            else:
                runs.append([address, address + len(data), [data]])
        self.segments: Tuple[Segment, ...] = tuple(
            (start, parts[0] if len(parts) == 1 else b"".join(parts)) for start, _, parts in runs)
        self._starts = [start for start, _ in self.segments]

    def __eq__(self, other):
        if not isinstance(other, Image):
            return NotImplemented
        return self.segments == other.segments

    def __hash__(self):
        return hash(self.segments)

    def __repr__(self):
        if not self.segments:
            return f"<Image {self.source!r}: empty>"
        return (f"<Image {self.source!r}: {len(self.segments)} segment(s), {self.size} bytes "
                f"in {_span(self.start, self.end)}>")

    def ranges(self) -> List[Tuple[int, int]]:
        """The ``(start, end)`` address range of each segment, end exclusive, sorted."""
        return [(start, start + len(data)) for start, data in self.segments]

    @property
    def size(self) -> int:
        """Bytes of data, gaps not counted."""
        return sum(len(data) for _, data in self.segments)

    def _require_data(self) -> None:
        if not self.segments:
            raise FlashError(f"{self.source}: contains no data. "
                             "Check that the build wrote the image (an empty file, or an ELF "
                             "whose loadable sections are all empty).")

    @property
    def start(self) -> int:
        """The lowest address holding data."""
        self._require_data()
        return self.segments[0][0]

    @property
    def end(self) -> int:
        """One past the highest address holding data."""
        self._require_data()
        start, data = self.segments[-1]
        return start + len(data)

    def sha256(self) -> str:
        """Hex SHA-256 of the addresses and the data, independent of the file format.

        Stable across runs and versions of this tool for change detection: a 16-byte
        header per segment (address, length, both little-endian 64-bit), then its bytes.
        """
        digest = hashlib.sha256()
        for start, data in self.segments:
            digest.update(struct.pack("<QQ", start, len(data)))
            digest.update(data)
        return digest.hexdigest()

    def pages(self, page_size: int) -> List[int]:
        """Sorted start addresses of the ``page_size``-aligned pages that hold data."""
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, not {page_size}")
        pages = set()
        for start, data in self.segments:
            first = start - start % page_size
            last = start + len(data) - 1
            pages.update(range(first, last - last % page_size + 1, page_size))
        return sorted(pages)

    def data_at(self, address: int, length: int, fill: int = 0xFF) -> bytes:
        """``length`` bytes from ``address``; addresses with no data read as ``fill``."""
        _check_fill(fill)
        out = bytearray((fill,)) * length
        stop = address + length
        index = max(bisect_right(self._starts, address) - 1, 0)
        for start, data in self.segments[index:]:
            if start >= stop:
                break
            lo, hi = max(start, address), min(start + len(data), stop)
            if lo < hi:
                out[lo - address:hi - address] = data[lo - start:hi - start]
        return bytes(out)

    def to_bytes(self, fill: int = 0xFF) -> bytes:
        """The image flat from :attr:`start` to :attr:`end`, gaps filled with ``fill``."""
        _check_fill(fill)
        base = self.start
        out = bytearray((fill,)) * (self.end - base)
        for start, data in self.segments:
            out[start - base:start - base + len(data)] = data
        return bytes(out)


def _check_fill(fill: int) -> None:
    if not isinstance(fill, int) or not 0 <= fill <= 0xFF:
        raise FlashError(f"gap fill {fill!r} is not a byte value; use 0-255 (0xFF is erased flash).")


# --- reading ---------------------------------------------------------------------------

def _read(path: PathLike) -> bytes:
    name = _name(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FlashError(f"{name}: no such file. Check the path, or build the image first.") from None
    except IsADirectoryError:
        raise FlashError(f"{name}: is a directory, not an image file. "
                         "Name the firmware file inside it.") from None
    except PermissionError:
        raise FlashError(f"{name}: cannot be read (permission denied). "
                         "Fix the file's permissions or run as its owner.") from None
    except OSError as exc:
        raise FlashError(f"{name}: cannot be read ({exc.strerror or exc}). "
                         "Check the file and the disk it is on.") from None


def _format_of(path: PathLike, data: bytes, fmt: Optional[str]) -> str:
    name = _name(path)
    if fmt is not None:
        if fmt not in FORMATS:
            raise FlashError(f"{name}: unknown image format {fmt!r}; use one of {', '.join(FORMATS)}.")
        return fmt
    ext = os.path.splitext(name)[1].lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    if data.startswith(ELF_MAGIC):
        return "elf"
    raise FlashError(f"{name}: cannot tell the image format from the name "
                     f"({'extension ' + repr(ext) if ext else 'no extension'}) and it is not ELF. "
                     f"Name it {', '.join(sorted(EXTENSIONS))}, or pass the format explicitly.")


def _base(value) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise FlashError(f"PYOCD_BASE_ADDRESS {value!r} is not a number; "
                             "write it like 0x08000000.") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < ADDRESS_LIMIT:
        raise FlashError(f"PYOCD_BASE_ADDRESS {value!r} is not a 32-bit address; "
                         "write it like 0x08000000.")
    return value


def load_image(path: PathLike, base_address: Optional[int] = None, fmt: Optional[str] = None) -> Image:
    """Read a firmware image.

    ``fmt`` is ``"bin"``, ``"hex"`` or ``"elf"``; when None it comes from the extension
    (``.bin``, ``.hex``/``.ihex``, ``.elf``/``.axf``), or the file must start with
    the ELF magic (NuttX names its ELF plain ``nuttx``). ``base_address`` is where a
    raw binary goes (an int, or a string such as ``"0x08000000"``); hex and ELF files
    carry their own addresses and ignore it.

    An ELF image is what ``arm-none-eabi-objcopy -O ihex`` (or ``-O binary``) writes of
    it: the contents of every allocated section (``SHF_ALLOC``) that has file data (not
    ``SHT_NOBITS``, not empty), at its load address (LMA), which BFD derives from the
    ``PT_LOAD`` program header holding the section (``p_paddr + sh_offset - p_offset``);
    a section in no ``PT_LOAD`` loads at its run address. Nothing else: no ELF or program
    headers, no padding between sections, no ``NOLOAD`` bytes. An ELF without a section
    table (objcopy refuses those) is read by its ``PT_LOAD`` segments instead, with a
    warning on the ``scons_pyocd.images`` logger; :attr:`Image.elf_rule` tells which.
    """
    name = _name(path)
    data = _read(path)
    fmt = _format_of(path, data, fmt)
    if not data:
        raise FlashError(f"{name}: the file is empty. Rebuild it; the build that wrote it "
                         "probably failed.")
    if fmt == "bin":
        image = _read_bin(name, data, base_address)
    elif fmt == "hex":
        image = _read_hex(name, data)
    else:
        image = _read_elf(name, data)
    image._require_data()
    return image


#: The first line of an Intel HEX file: a raw binary starting like this is a misnamed .hex.
_HEX_TEXT = re.compile(rb":(?:[0-9A-Fa-f]{2}){5,}\r?\n")


def _read_bin(name: str, data: bytes, base_address) -> Image:
    if data.startswith(ELF_MAGIC):
        raise FlashError(f"{name}: is an ELF file, not a raw binary (it starts with '\\x7fELF'). "
                         "Flash the ELF itself, or make the binary with objcopy -O binary.")
    if _HEX_TEXT.match(data):
        raise FlashError(f"{name}: is Intel HEX text, not a raw binary (it starts with an Intel HEX "
                         "record). Rename it to .hex, or make the binary with objcopy -O binary.")
    if base_address is None:
        raise FlashError(f"{name}: a raw binary has no addresses; set PYOCD_BASE_ADDRESS to where "
                         "it goes (usually the start of flash, 0x08000000 on STM32), or use the "
                         ".hex or ELF file.")
    base = _base(base_address)
    if base + len(data) > ADDRESS_LIMIT:
        raise FlashError(f"{name}: {len(data):,} bytes at PYOCD_BASE_ADDRESS 0x{base:08X} run past "
                         "the 4 GiB address space. Check PYOCD_BASE_ADDRESS and the file.")
    return Image([(base, data)], name, "bin")


_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def _hex_line_error(name: str, number: int, line: bytes) -> FlashError:
    """Why ``line`` (the text after ':') is not hex digits, with the column."""
    for column, byte in enumerate(line, start=2):
        if byte not in _HEXDIGITS:
            shown = chr(byte) if 0x20 < byte < 0x7F else f"byte 0x{byte:02X}"
            return FlashError(f"{name}, line {number}: character {shown!r} at column {column} is not "
                              f"a hex digit. {_HEX_TODO}")
    return FlashError(f"{name}, line {number}: odd number of hex digits ({len(line)}); the line is "
                      f"truncated. {_HEX_TODO}")


def _read_hex(name: str, data: bytes) -> Image:
    """Parse Intel HEX with intelhex's rules (see the module docstring)."""
    unhex = binascii.a2b_hex
    lines = data.splitlines()
    runs: List[Tuple[int, List[bytes]]] = []      # contiguous data, in file order
    run_end = -1
    offset = 0
    start_seen = False
    eof_line = 0
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        if line[0] != 0x3A:  # ':'
            if number == 1:
                raise FlashError(f"{name}, line {number}: does not start with ':', so this is not "
                                 f"an Intel HEX file. {_HEX_TODO}")
            raise FlashError(f"{name}, line {number}: does not start with ':'. {_HEX_TODO}")
        try:
            record = unhex(line[1:])
        except (binascii.Error, ValueError):
            raise _hex_line_error(name, number, line[1:]) from None
        length = len(record)
        if length < 5:
            raise FlashError(f"{name}, line {number}: record too short ({length} bytes; a record has "
                             f"at least 5); the line is truncated. {_HEX_TODO}")
        count = record[0]
        if length != 5 + count:
            raise FlashError(f"{name}, line {number}: record says {count} data bytes but holds "
                             f"{length - 5}; the line is truncated or corrupt. {_HEX_TODO}")
        kind = record[3]
        if kind > 5:
            raise FlashError(f"{name}, line {number}: unknown record type 0x{kind:02X} (Intel HEX "
                             f"defines 00-05). {_HEX_TODO}")
        if sum(record) & 0xFF:
            expected = (record[-1] - sum(record)) & 0xFF
            raise FlashError(f"{name}, line {number}: bad checksum 0x{record[-1]:02X} (expected "
                             f"0x{expected:02X}). {_HEX_TODO}")
        if kind == 0:
            if count:
                address = offset + (record[1] << 8 | record[2])
                if address == run_end:
                    runs[-1][1].append(record[4:-1])
                else:
                    runs.append((address, [record[4:-1]]))
                run_end = address + count
        elif kind == 1:
            if count:
                raise FlashError(f"{name}, line {number}: end-of-file record carries data. {_HEX_TODO}")
            eof_line = number
            break
        elif kind in (2, 4):
            if count != 2 or record[1] or record[2]:
                what = "segment" if kind == 2 else "linear"
                raise FlashError(f"{name}, line {number}: malformed extended {what} address record "
                                 f"(type 0{kind}). {_HEX_TODO}")
            offset = (record[4] << 8 | record[5]) << (4 if kind == 2 else 16)
        else:
            if count != 4 or record[1] or record[2]:
                what = "segment" if kind == 3 else "linear"
                raise FlashError(f"{name}, line {number}: malformed start {what} address record "
                                 f"(type 0{kind}). {_HEX_TODO}")
            if start_seen:
                raise FlashError(f"{name}, line {number}: second start address record. {_HEX_TODO}")
            start_seen = True
    if not eof_line:
        raise FlashError(f"{name}: no end-of-file record (:00000001FF) after line {len(lines)}; the "
                         f"file is truncated. {_HEX_TODO}")
    for number in range(eof_line + 1, len(lines) + 1):
        if lines[number - 1].strip(b" \t\x00\x1a"):
            raise FlashError(f"{name}, line {number}: data after the end-of-file record on line "
                             f"{eof_line} (concatenated HEX files?). Merge HEX files with a tool "
                             "such as srec_cat, or remove the extra lines.")
    segments = [(address, b"".join(parts)) for address, parts in runs]
    segments.sort(key=lambda seg: seg[0])
    reach = -1
    for address, chunk in segments:
        if address < reach:
            raise _hex_overlap(name, lines)
        reach = max(reach, address + len(chunk))
    return Image(segments, name, "hex")


def _hex_overlap(name: str, lines: List[bytes]) -> FlashError:
    """Find the first record that writes an address twice (the file is known valid otherwise)."""
    owner = {}  # address -> (line number, byte)
    offset = 0
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        record = binascii.a2b_hex(line[1:])
        kind = record[3]
        if kind == 1:
            break
        if kind in (2, 4):
            offset = (record[4] << 8 | record[5]) << (4 if kind == 2 else 16)
        if kind != 0:
            continue
        address = offset + (record[1] << 8 | record[2])
        clashes = [(address + i, byte) for i, byte in enumerate(record[4:-1]) if address + i in owner]
        if clashes:
            first_line = owner[clashes[0][0]][0]
            same = all(owner[a][1] == byte for a, byte in clashes)
            return FlashError(
                f"{name}, line {number}: {len(clashes)} byte(s) from 0x{clashes[0][0]:08X} were "
                f"already written by line {first_line}, with {'the same' if same else 'different'} "
                "data. An Intel HEX file must write each address once: rebuild it, or merge HEX "
                "files with a tool such as srec_cat.")
        for i, byte in enumerate(record[4:-1]):
            owner[address + i] = (number, byte)
    raise AssertionError("overlap not found")  # pragma: no cover


#: ELF section flags (the ELF specification's SHF_ALLOC and SHF_TLS).
_SHF_ALLOC, _SHF_TLS = 0x2, 0x400

#: What is logged (warning) when an ELF without a section table is read by its segments.
SEGMENT_FALLBACK = ("%s: has no section table, so its PT_LOAD program headers are taken whole "
                    "(objcopy refuses such a file): they may hold the ELF header and alignment "
                    "padding in front of the firmware. Flash the ELF as the linker wrote it, or a "
                    ".hex made from it.")


#: e_machine of 32-bit ARM (ELF for the Arm Architecture, "ELF header").
EM_ARM = 40


def _raw_machine(data: bytes) -> Optional[int]:
    """The ELF header's e_machine (2 bytes at offset 18, in the byte order EI_DATA gives), or None."""
    if len(data) < 20 or data[5] not in (1, 2):
        return None
    return struct.unpack_from("<H" if data[5] == 1 else ">H", data, 18)[0]


def _read_elf(name: str, data: bytes) -> Image:
    """The image ``objcopy -O ihex`` / ``-O binary`` would write (see docs/images.md): the
    allocated sections with file contents, each at its load address. A file without a
    section table: its PT_LOAD segments' file bytes, at their physical addresses."""
    from elftools.elf.elffile import ELFFile

    if not data.startswith(ELF_MAGIC):
        raise FlashError(f"{name}: not an ELF file (it does not start with '\\x7fELF'). {_ELF_TODO}")
    try:
        try:
            elf = ELFFile(io.BytesIO(data))
            machine = elf["e_machine"]
        except Exception:
            # Older pyelftools fail to open some headers of other machines: the header's own
            # e_machine field (offset 18, EI_DATA's byte order) still says what it is for.
            raw = _raw_machine(data)
            if raw is None or raw == EM_ARM:
                raise
            machine = raw
        if machine != "EM_ARM":
            machine = machine if isinstance(machine, str) else f"machine number {machine}"
            raise FlashError(f"{name}: is an ELF file for {machine}, not ARM (EM_ARM). Build it "
                             "with an ARM toolchain (arm-none-eabi-gcc), and flash the firmware, "
                             "not a host program.")
        # pyelftools reads headers lazily; a file cut short must not pass for a smaller one.
        for what, table, count, entry in (("program", elf["e_phoff"], elf["e_phnum"], elf["e_phentsize"]),
                                          ("section", elf["e_shoff"], elf["e_shnum"], elf["e_shentsize"])):
            if table and table + max(count, 1) * entry > len(data):
                raise FlashError(f"{name}: the {what} header table at file offset 0x{table:X} runs "
                                 f"past the end of the file ({len(data):,} bytes); the file is "
                                 f"truncated. {_ELF_TODO}")
        kind = elf["e_type"]
        if kind == "ET_REL":
            raise FlashError(f"{name}: is an object file (ET_REL), not a linked program: its "
                             f"sections have no addresses yet. {_ELF_TODO}")
        segments = [segment.header for segment in elf.iter_segments()]
        sections = list(elf.iter_sections())[1:] if elf["e_shoff"] else []
        if sections:
            found, what = _elf_sections(name, data, sections, segments), "sections"
        else:
            LOG.warning(SEGMENT_FALLBACK, name)
            found, what = _elf_segments(name, data, segments), "segments"
    except FlashError:
        raise
    except Exception as exc:  # pyelftools raises ELFError, struct and construct errors, ValueError...
        raise FlashError(f"{name}: corrupt or truncated ELF file ({type(exc).__name__}: {exc}). "
                         f"{_ELF_TODO}") from None
    if not found:
        why = ("no allocated section with file contents" if what == "sections"
               else "no PT_LOAD program header with file contents")
        raise FlashError(f"{name}: has no loadable data ({why}). {_ELF_TODO}")
    found.sort(key=lambda seg: seg[0])
    for (a_addr, a_data, a_what), (b_addr, b_data, b_what) in zip(found, found[1:]):
        if b_addr < a_addr + len(a_data):
            both = (f"program headers {a_what} and {b_what}" if what == "segments"
                    else f"sections {a_what} and {b_what}")
            raise FlashError(f"{name}, {both}: load addresses {_span(a_addr, a_addr + len(a_data))} "
                             f"and {_span(b_addr, b_addr + len(b_data))} overlap. Fix the linker "
                             "script's AT() load addresses.")
    image = Image([(address, chunk) for address, chunk, _ in found], name, "elf")
    image.elf_rule = what
    return image


def _elf_sections(name: str, data: bytes, sections, segments) -> list:
    """``(load address, bytes, label)`` of each section objcopy would write."""
    # BFD (_bfd_elf_make_section_from_shdr): when every program header's p_paddr is 0 and
    # there are several PT_LOADs, the physical addresses mean nothing and LMA = VMA.
    no_paddr = (all(p["p_paddr"] == 0 for p in segments)
                and sum(p["p_type"] == "PT_LOAD" and p["p_memsz"] != 0 for p in segments) > 1)
    found = []
    for index, section in enumerate(sections, start=1):
        header = section.header
        if (not header["sh_flags"] & _SHF_ALLOC or header["sh_type"] in ("SHT_NOBITS", "SHT_NULL")
                or header["sh_size"] == 0):
            continue
        label = f"{index} ({section.name or 'no name'})"
        offset, size = header["sh_offset"], header["sh_size"]
        if offset + size > len(data):
            raise FlashError(f"{name}, section {label}: its {size:,} bytes at file offset 0x{offset:X} "
                             f"run past the end of the file ({len(data):,} bytes); the file is "
                             f"truncated. {_ELF_TODO}")
        address = header["sh_addr"] if no_paddr else _load_address(header, segments)
        if address + size > ADDRESS_LIMIT:
            raise FlashError(f"{name}, section {label}: load address 0x{address:X} + {size:,} bytes "
                             f"runs past 4 GiB. {_ELF_TODO}")
        found.append((address, data[offset:offset + size], label))
    return found


def _load_address(section, segments) -> int:
    """A loaded section's LMA as BFD computes it: through the first PT_LOAD (PT_TLS for a
    thread-local section) holding both its file bytes and its run addresses,
    ``p_paddr + (sh_offset - p_offset)``; in no such segment, its run address (VMA)."""
    offset, address, size = section["sh_offset"], section["sh_addr"], section["sh_size"]
    wanted = "PT_TLS" if section["sh_flags"] & _SHF_TLS else "PT_LOAD"
    for segment in segments:
        if (segment["p_type"] == wanted
                and segment["p_offset"] <= offset and offset - segment["p_offset"] + size <= segment["p_filesz"]
                and segment["p_vaddr"] <= address and address - segment["p_vaddr"] + size <= segment["p_memsz"]):
            return segment["p_paddr"] + offset - segment["p_offset"]
    return address


def _elf_segments(name: str, data: bytes, segments) -> list:
    """``(physical address, bytes, index)`` of each PT_LOAD program header with file data."""
    found = []
    for index, segment in enumerate(segments):
        if segment["p_type"] != "PT_LOAD" or segment["p_filesz"] == 0:
            continue
        offset, size, address = segment["p_offset"], segment["p_filesz"], segment["p_paddr"]
        if offset + size > len(data):
            raise FlashError(f"{name}, program header {index}: its {size:,} bytes at file offset "
                             f"0x{offset:X} run past the end of the file ({len(data):,} bytes); "
                             f"the file is truncated. {_ELF_TODO}")
        if address + size > ADDRESS_LIMIT:
            raise FlashError(f"{name}, program header {index}: load address 0x{address:X} + "
                             f"{size:,} bytes runs past 4 GiB. {_ELF_TODO}")
        found.append((address, data[offset:offset + size], index))
    return found


# --- writing ---------------------------------------------------------------------------

def _write(path: PathLike, data: bytes) -> None:
    """Write the whole file, or leave no file behind."""
    name = _name(path)
    try:
        f = open(path, "wb")
    except OSError as exc:
        raise _write_error(name, exc) from None
    try:
        with f:
            f.write(data)
    except OSError as exc:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise _write_error(name, exc) from None


def _write_error(name: str, exc: OSError) -> FlashError:
    if isinstance(exc, IsADirectoryError):
        what = "is a directory"
    elif isinstance(exc, FileNotFoundError):
        what = f"its directory {os.path.dirname(name) or '.'!r} does not exist"
    elif isinstance(exc, PermissionError):
        what = "permission denied"
    else:
        what = exc.strerror or str(exc)
    return FlashError(f"{name}: cannot write ({what}). Check the output path and that its "
                      "directory exists and is writable.")


def hex_bytes(image: Image) -> bytes:
    """The image as Intel HEX text, exactly as ``IntelHex.write_hex_file`` writes it."""
    image._require_data()
    if image.end > ADDRESS_LIMIT:
        raise FlashError(f"{image.source}: data up to 0x{image.end - 1:X} is beyond the 4 GiB that "
                         "Intel HEX can address.")
    records = []
    append = records.append
    extended = image.end - 1 > 0xFFFF
    high = -1
    for address, data in image.segments:
        pos, size = 0, len(data)
        while pos < size:
            if extended and address >> 16 != high:
                high = address >> 16
                record = bytes((2, 0, 0, 4, high >> 8, high & 0xFF))
                append(record + bytes(((-sum(record)) & 0xFF,)))
            low = address & 0xFFFF
            count = min(16, 0x10000 - low, size - pos)
            record = bytes((count, low >> 8, low & 0xFF, 0)) + data[pos:pos + count]
            append(record + bytes(((-sum(record)) & 0xFF,)))
            pos += count
            address += count
    hexlify = binascii.hexlify
    return b"".join([b":" + hexlify(record).upper() + b"\n" for record in records]) + b":00000001FF\n"


def write_hex(image: Image, path: PathLike) -> None:
    """Write ``image`` as Intel HEX (16 data bytes a record, ``\\n`` line ends)."""
    _write(path, hex_bytes(image))


#: The largest gap :func:`write_bin` fills when the target (so its flash size) is unknown.
#: 16 MiB: four times the largest on-chip flash of current Cortex-M parts (4 MiB), far
#: below the gaps between memories that a misplaced section causes (an STM32's flash at
#: 0x08000000 is 128 MiB from its CCM RAM and 384 MiB from its SRAM).
MAX_GAP_WITHOUT_TARGET = 16 << 20


def _size(n: int) -> str:
    """A size for a message: exact bytes, and MiB or KiB when that is shorter to read."""
    if n >= 1 << 20:
        return f"{n:,} bytes ({n / (1 << 20):.1f} MiB)"
    return _bytes(n)


def check_gap_fill(image: Image, flash_size: Optional[int] = None, output: Optional[PathLike] = None) -> None:
    """Refuse to flatten ``image`` into a raw binary whose fill between two pieces of data
    would be larger than ``flash_size`` (the target's flash in bytes), or than
    :data:`MAX_GAP_WITHOUT_TARGET` when None: such a gap cannot be in one flash, and the
    binary would be mostly fill (384 MiB for a section loaded in SRAM instead of flash).
    ``output`` is the binary's path, for the message."""
    limit = flash_size if flash_size else MAX_GAP_WITHOUT_TARGET
    for (a_start, a_data), (b_start, b_data) in zip(image.segments, image.segments[1:]):
        a_end = a_start + len(a_data)
        gap = b_start - a_end
        if gap > limit:
            what = (f"the target's {_bytes(flash_size)} of flash" if flash_size else
                    f"{_bytes(MAX_GAP_WITHOUT_TARGET)} (the limit when PYOCD_TARGET is not set)")
            raise FlashError(
                f"{_name(output) if output is not None else image.source}: not written: the data of "
                f"{image.source} at {_span(a_start, a_end)} and at {_span(b_start, b_start + len(b_data))} "
                f"lie {_size(gap)} apart, more than {what}, and a raw binary would fill the gap. "
                "A section probably has its load address outside flash (one that runs from SRAM "
                "needs AT> FLASH in the linker script); or convert to .hex, which keeps gaps empty.")


def write_bin(image: Image, path: PathLike, fill: int = 0xFF, flash_size: Optional[int] = None) -> int:
    """Write ``image`` flat from its lowest to its highest address, gaps filled with
    ``fill``; return the base address (where the binary must be flashed). A gap larger
    than ``flash_size`` (bytes; :data:`MAX_GAP_WITHOUT_TARGET` when None) is refused,
    see :func:`check_gap_fill`."""
    _check_fill(fill)
    image._require_data()
    check_gap_fill(image, flash_size, path)
    _write(path, image.to_bytes(fill))
    return image.start


def convert(src: PathLike, dst: PathLike, base_address: Optional[int] = None, fill: int = 0xFF,
            flash: Sequence[FlashRange] = (), ram: Sequence[Range] = (),
            default_base: bool = False) -> Image:
    """Convert ``src`` (bin, hex or ELF) to ``dst`` (``.hex``/``.ihex`` or ``.bin``).

    ``base_address`` places a raw binary source; ``fill`` fills gaps in a binary
    output. ``flash`` and ``ram`` are the target's memory as :func:`check_vector_table`
    takes them (empty: no target known): a binary output refuses a gap larger than the
    flash (:func:`check_gap_fill`), and a raw binary source placed at the flash start
    because no base address was given (``default_base``) is refused when its vector table
    says it was linked elsewhere. Returns the image read. Same input, byte-identical output.
    """
    name = _name(dst)
    out = EXTENSIONS.get(os.path.splitext(name)[1].lower())
    if out not in ("hex", "bin"):
        raise FlashError(f"{name}: can only convert to Intel HEX (.hex, .ihex) or raw binary "
                         "(.bin); rename the output.")
    _check_fill(fill)
    image = load_image(src, base_address)
    if default_base:
        check_vector_table(image, flash, ram)
    if out == "hex":
        write_hex(image, dst)
    else:
        write_bin(image, dst, fill, sum(end - start for start, end, _ in flash) or None)
    return image


# --- checking --------------------------------------------------------------------------

def check_fits(image: Image, regions: Sequence[Region]) -> None:
    """Raise :class:`FlashError` unless every byte of ``image`` lies in one of
    ``regions``, given as ``(name, start, length)``, e.g. ``[("flash", 0x08000000, 0x20000)]``.
    Adjacent regions count as one range. An empty image is an error too."""
    image._require_data()
    named = sorted((int(start), int(start) + int(length), str(label))
                   for label, start, length in regions if int(length) > 0)
    if not named:
        raise FlashError(f"{image.source}: no memory regions to check the image against. "
                         "Check the target's memory map.")
    where = ", ".join(f"{label} {_span(start, end)} ({_bytes(end - start)})" for start, end, label in named)
    what_to_do = _LINK_TODO
    if image.fmt == "bin":
        what_to_do = (f"A raw binary goes at PYOCD_BASE_ADDRESS (here 0x{image.start:08X}): set it "
                      "to the start of flash, or check the file is for this chip.")
    total = sum(end - start for start, end, _ in named)
    if image.size > total:
        raise FlashError(f"{image.source}: the image holds {image.size:,} bytes, {image.size - total:,} "
                         f"more than the {total:,} bytes of {where}. Make the image smaller, or "
                         f"check the target. {what_to_do}")
    covered: List[List[int]] = []
    for start, end, _ in named:
        if covered and start <= covered[-1][1]:
            covered[-1][1] = max(covered[-1][1], end)
        else:
            covered.append([start, end])
    for seg_start, seg_end in image.ranges():
        address = seg_start
        for start, end in covered:
            if address < start:
                break
            if address < end:
                address = min(end, seg_end)
            if address >= seg_end:
                break
        if address >= seg_end:
            continue
        # [address, stop) is the first stretch outside every region
        stop = seg_end
        for start, _ in covered:
            if address < start < stop:
                stop = start
        inside_before = address > seg_start
        how = "run past the end of" if inside_before else "lie outside"
        raise FlashError(f"{image.source}: bytes {_span(address, stop)} ({_bytes(stop - address)}) "
                         f"{how} {where}. {what_to_do}")


#: The vector table entries read for handler addresses: the system exceptions 1-15
#: (reset, NMI, HardFault, ..., SysTick; ARMv7-M Architecture Reference Manual, B1.5.2).
_SYSTEM_VECTORS = 16
#: The vector table's smallest alignment: VTOR.TBLOFF is bits [29:7] (ARMv7-M ARM, B3.2.5).
_VTOR_ALIGN = 128


def _page_of(address: int, flash: Sequence[FlashRange]) -> Optional[Range]:
    """The flash page ``(start, end)`` holding ``address``, or None outside flash."""
    for start, end, page in flash:
        if start <= address < end:
            page = page or 1
            first = address - (address - start) % page
            return first, min(first + page, end)
    return None


def check_vector_table(image: Image, flash: Sequence[FlashRange], ram: Sequence[Range]) -> None:
    """Refuse a raw binary placed at the flash start only because no base address was given,
    when its own vector table says it was linked elsewhere.

    ``image`` is the binary as read at that default base; ``flash`` the target's flash
    regions as ``(start, end, page size)`` and ``ram`` its SRAM as ``(start, end)``, ends
    exclusive (both from the pyOCD target's memory map). The file's first two words look
    like a Cortex-M vector table when the first (the initial SP) is a multiple of 4 inside
    SRAM (its top included: the stack grows down from there) and the second (the reset
    vector) is odd (Thumb) with its address in flash. If that reset handler lies outside
    the flash pages the binary would occupy, the binary cannot run where it would go, and
    writing it would overwrite whatever is there (a bootloader, typically): FlashError,
    naming the link address the table suggests (see docs/images.md). Anything else passes.
    """
    if not image.segments or not flash:
        return
    base, data = image.segments[0]
    if len(data) < 8:
        return
    sp, reset = struct.unpack_from("<II", data)
    handler = reset & ~1
    if sp % 4 or not any(start <= sp <= end for start, end in ram) or not reset & 1 \
            or _page_of(handler, flash) is None:
        return
    first, last = _page_of(base, flash), _page_of(base + len(data) - 1, flash)
    low = first[0] if first else base
    high = last[1] if last else base + len(data)
    if low <= handler < high:
        return
    suggested, why = _link_address(data, handler, flash)
    raise FlashError(
        f"{image.source}: its vector table (initial SP 0x{sp:08X}, reset vector 0x{reset:08X}) says "
        f"it was linked to run elsewhere: the reset handler is outside the pages {_span(low, high)} "
        f"it would occupy at 0x{base:08X}, the flash start, where a raw binary goes when no base "
        "address is given. There it would not start, and it would overwrite what those pages hold. "
        f"It was probably linked at 0x{suggested:08X} ({why}): set PYOCD_BASE_ADDRESS (or "
        "--base-address) to its link address, or flash the ELF or .hex, which carry their addresses.")


def _link_address(data: bytes, reset: int, flash: Sequence[FlashRange]) -> Tuple[int, str]:
    """Where a binary whose reset handler is at ``reset`` was most likely linked, and why.

    The vector table sits at the link address and the handlers follow it, in the binary:
    so the link address is at most the lowest handler that lies within the binary's length
    below the reset handler, and the binary placed there must still reach the reset
    handler. The start of the flash page holding that lowest handler (an application
    behind a bootloader starts on a page of its own), else that handler rounded down to
    the vector table's alignment, else the handler itself.
    """
    words = struct.unpack_from(f"<{min(len(data) // 4, _SYSTEM_VECTORS)}I", data)
    handlers = [word & ~1 for word in words[1:]
                if word & 1 and _page_of(word & ~1, flash) is not None and reset - len(data) < (word & ~1) <= reset]
    lowest = min(handlers)
    page = _page_of(lowest, flash)[0]
    if reset < page + len(data):
        return page, f"the start of the flash page holding its lowest exception handler, 0x{lowest:08X}"
    aligned = lowest - lowest % _VTOR_ALIGN
    if reset < aligned + len(data):
        return aligned, (f"its lowest exception handler, 0x{lowest:08X}, rounded down to the vector "
                         f"table's {_VTOR_ALIGN}-byte alignment")
    return lowest, "its lowest exception handler"
