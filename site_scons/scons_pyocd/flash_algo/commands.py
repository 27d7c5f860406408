"""Command tables for the ``Exec`` entry of our flash algorithm (``stm32f1_fpec.S``), and how a
:class:`~scons_pyocd.plan.Plan` is cut into calls that fit the algorithm's RAM. Pure: no pyOCD.

One call of ``Exec`` runs one table: erase pages, program runs of bytes, check ranges (CRC-32
and blankness through the STM32 CRC unit). The RAM the algorithm leaves free is split in two
halves; while one call runs from one half, the host loads the next call into the other, so
the flash controller is kept busy and the host's transfers hide behind it. Each half holds,
in this order: the table, the data the table programs, the results it writes.

A call's contents are chosen so that the host's transfer of the next call fits in the time
the flash controller needs for the current one (:func:`write_calls`): the first call starts
small (or with the erases, which need no data), the next ones grow to fill a half.
"""

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

END, ERASE, MASS, PROG, CHECK = 0, 1, 2, 3, 4
MAX_ARG = (1 << 28) - 1
#: A run of erased half-words at least this long is not transferred nor programmed.
GAP = 32


def op(code: int, arg: int = 0) -> int:
    if not 0 <= arg <= MAX_ARG:
        raise ValueError(f"command argument {arg} out of range")
    return code << 28 | arg


@dataclass
class Call:
    """One call of Exec: its table and data (the host writes ``image()`` at ``base``), where
    its results go, and what to do with them.

    ``checks``: ``(address, size, count)`` of each CHECK command, in order; ``pages_done``:
    the pages whose last byte this call programs; ``device_s``: its estimated device time.
    """
    base: int
    words: List[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    checks: List[Tuple[int, int, int]] = field(default_factory=list)
    pages_done: List[int] = field(default_factory=list)
    units: int = 0
    device_s: float = 0.0
    bytes_programmed: int = 0

    # Table entries are built with their data offsets; src addresses are fixed at finish().
    _prog: List[int] = field(default_factory=list)

    def add_erase(self, address: int, count: int = 1, step: int = 0) -> None:
        self.words += [op(ERASE, count), address, step]

    def add_mass(self) -> None:
        self.words.append(op(MASS))

    def add_prog(self, dest: int, data: bytes) -> None:
        if len(data) % 2 or dest % 2:
            raise ValueError("programming runs are whole half-words")
        self._prog.append(len(self.words))
        self.words += [op(PROG, len(data)), dest, len(self.data)]
        self.data += data
        self.bytes_programmed += len(data)

    def add_check(self, address: int, size: int, count: int = 1) -> None:
        if size <= 0 or size % 4 or address % 4 or count <= 0:
            raise ValueError(f"check of {count} x {size} bytes at 0x{address:08X}: whole words only")
        self.words += [op(CHECK, count), address, size]
        self.checks.append((address, size, count))

    @property
    def table_bytes(self) -> int:
        return 4 * (len(self.words) + 1)

    @property
    def results_words(self) -> int:
        return sum(count + (count + 3) // 4 for _, _, count in self.checks)

    def size(self) -> int:
        return self.table_bytes + -(-len(self.data) // 4) * 4 + 4 * self.results_words

    @property
    def table(self) -> int:
        return self.base

    @property
    def results(self) -> int:
        return self.base + self.table_bytes + -(-len(self.data) // 4) * 4

    def image(self) -> List[int]:
        """The words to write at ``base``: the table (END-terminated), then the data."""
        words = list(self.words) + [op(END)]
        data_at = self.base + self.table_bytes
        for index in self._prog:
            words[index + 2] += data_at
        padded = bytes(self.data) + b"\xff" * (-len(self.data) % 4)
        words += [int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4)]
        return words

    def decode(self, results: Sequence[int]) -> List[Tuple[int, int, bool]]:
        """``(address, crc, blank)`` of every range the CHECK commands covered, from the
        ``results_words`` words read at :attr:`results`."""
        out, at = [], 0
        for address, size, count in self.checks:
            crcs = results[at:at + count]
            at += count
            flags = b"".join(int(w).to_bytes(4, "little") for w in results[at:at + (count + 3) // 4])
            at += (count + 3) // 4
            out += [(address + i * size, crcs[i] & 0xFFFFFFFF, bool(flags[i])) for i in range(count)]
        return out


def status(result: int, call: Call) -> Optional[Tuple[int, int]]:
    """None when ``Exec`` succeeded; else ``(command index, FLASH_SR error bits)``."""
    if result == 0:
        return None
    return (result >> 8) // 4, result & 0xFE


def command_at(call: Call, word_index: int) -> Tuple[int, List[int]]:
    """The command starting at ``word_index`` of the call's table: (opcode, its words)."""
    words = call.image()
    code = words[word_index] >> 28
    return code, words[word_index:word_index + (1 if code == MASS else 3)]


def grouped_checks(ranges: Iterable[Tuple[int, int]]) -> List[Tuple[int, int, int]]:
    """``(address, size)`` ranges as CHECK commands ``(address, size, count)``: consecutive
    contiguous ranges of one size become one command."""
    out: List[Tuple[int, int, int]] = []
    for address, size in ranges:
        if out and out[-1][1] == size and out[-1][0] + out[-1][1] * out[-1][2] == address:
            a, s, n = out[-1]
            out[-1] = (a, s, n + 1)
        else:
            out.append((address, size, 1))
    return out


def check_calls(ranges: Sequence[Tuple[int, int]], halves: Sequence[Tuple[int, int]],
                crc_s_per_byte: float = 0.0) -> List[Call]:
    """Calls that check ``ranges`` (``(address, size)``, whole words), each fitting a half."""
    calls: List[Call] = []
    call: Optional[Call] = None
    length = 0
    for address, size, count in grouped_checks(ranges):
        while count:
            n = count if call is not None else 0
            while n and call.size() + 12 + 4 * (n + (n + 3) // 4) > length:   # command, results
                n -= 1
            if n == 0:
                base, length = halves[len(calls) % len(halves)]
                call = Call(base)
                calls.append(call)
                continue
            call.add_check(address, size, n)
            call.device_s += n * size * crc_s_per_byte
            address += n * size
            count -= n
    return calls


def runs(address: int, data: bytes, erased: int = 0xFF, gap: int = GAP) -> List[Tuple[int, bytes]]:
    """The parts of ``data`` (to go at ``address``, half-word aligned) worth programming on an
    erased page: runs of erased half-words of at least ``gap`` bytes are left out."""
    blank = bytes([erased, erased])
    out: List[Tuple[int, bytes]] = []
    start = None
    i = 0
    n = len(data)
    while i < n:
        if data[i:i + 2] == blank:
            j = i
            while j < n and data[j:j + 2] == blank:
                j += 2
            if j - i >= gap or j >= n or start is None:
                if start is not None:
                    out.append((address + start, data[start:i]))
                    start = None
                i = j
                continue
            i = j
            continue
        if start is None:
            start = i
        i += 2
    if start is not None:
        out.append((address + start, data[start:n]))
    return out


@dataclass
class Pipeline:
    """What :func:`write_calls` needs to know of the executor: the RAM halves ``(base, length)``,
    the debug port's time to load one byte into RAM, the first call's data budget when nothing
    runs while it loads, and the on-chip CRC's time per byte."""
    halves: Sequence[Tuple[int, int]]
    load_s_per_byte: float
    first_bytes: int = 256
    min_bytes: int = 256
    crc_s_per_byte: float = 0.0


class _Calls:
    """Builds the list of calls, opening a new one when the current one is full."""

    def __init__(self, pipeline: Pipeline):
        self.p = pipeline
        self.calls: List[Call] = []
        self.current: Optional[Call] = None
        self.limit = 0

    def open(self, first_budget: Optional[int] = None) -> Call:
        base, length = self.p.halves[len(self.calls) % len(self.p.halves)]
        previous = self.calls[-1] if self.calls else None
        call = Call(base)
        self.calls.append(call)
        if previous is None:
            budget = self.p.first_bytes if first_budget is None else first_budget
        elif self.p.load_s_per_byte <= 0:
            budget = length
        else:   # load no more than the previous call keeps the flash busy for
            budget = int(previous.device_s / self.p.load_s_per_byte * 0.9)
        self.limit = min(length, max(self.p.min_bytes, budget) + 64)
        self.space = length
        self.current = call
        return call

    def room(self, results_words: int = 0) -> int:
        """Loaded bytes the current call can still take, keeping ``results_words`` of results."""
        call = self.current
        if call is None:
            return -1
        loaded = call.table_bytes + len(call.data)
        used = call.size() + 4 * results_words + 4
        return min(self.limit - loaded, self.space - used)

    def need(self, loaded: int, results_words: int = 0) -> Call:
        if self.room(results_words) < loaded:
            self.open()
        return self.current

    def close(self) -> None:
        self.current = None


def write_calls(plan, pipeline: Pipeline, regions: Dict[int, object]) -> List[Call]:
    """The calls that carry out the plan's erases, programming and (``verify='crc'``) checks.

    ``regions`` maps each page of the plan to its :class:`~scons_pyocd.plan.Region`. A mass
    erase, or the first page's erase, is a call of its own: it needs no data, and the next
    call loads while it runs. Each other page erase goes with the first bytes programmed into
    its page, each page's check with its last. A call's data is sized so that loading it takes
    no longer than the call before it keeps the flash busy. Runs of erased half-words are
    neither loaded nor programmed (:func:`runs`).
    """
    verify = plan.options.verify == "crc"
    b = _Calls(pipeline)
    erased = set()
    if plan.mass_erase:
        call = b.open()
        for region in plan.mass_erase:
            call.add_mass()
            call.device_s += region.mass_erase_s
        b.close()
    starters = sorted(set(plan.erase) - {w.address for w in plan.program})
    if not plan.mass_erase and plan.program and plan.program[0].erase:
        starters.append(plan.program[0].address)
    if starters:
        call = b.open()
        for page in starters:
            call.add_erase(page)
            call.device_s += regions[page].page_erase_s
            erased.add(page)
        b.close()
    for write in plan.program:
        region = regions[write.address]
        pieces = runs(write.address, write.data, region.erased)
        erase = write.erase and write.address not in erased
        check = 1 + 1 if verify else 0          # results words of the page's check
        if erase:
            first = min(len(pieces[0][1]), 64) if pieces else 0
            call = b.need(12 + 12 + first, check)
            call.add_erase(write.address)
            call.device_s += region.page_erase_s
        if not pieces:
            call = b.need(12 if verify else 0, check)
        for index, (dest, data) in enumerate(pieces):
            last_piece = index == len(pieces) - 1
            while data:
                tail = 12 if last_piece else 0
                call = b.need(12 + 2 + tail, check if last_piece else 0)
                n = min(len(data), (b.room(check if last_piece else 0) - 12 - tail) // 2 * 2)
                if n < len(data) and last_piece:
                    n = min(len(data), (b.room() - 12) // 2 * 2)
                part, data = data[:n], data[n:]
                call.add_prog(dest, part)
                units = region.program_units(part, True)
                call.units += units
                call.device_s += units * region.program_unit_s
                dest += n
        if verify:
            call = b.need(12, check)
            call.add_check(write.address, region.page_size)
            call.device_s += region.page_size * pipeline.crc_s_per_byte
        call.pages_done.append(write.address)
    for call in b.calls:
        assert call.size() <= max(length for _, length in pipeline.halves), "a call outgrew its half"
    return b.calls
