"""Command tables for the ``Exec`` entry of our flash algorithm (``stm32f1_fpec.S``), and how a
:class:`~scons_pyocd.plan.Plan` is cut into calls that fit the algorithm's RAM. Pure: no pyOCD.

One call of ``Exec`` runs one table: erase pages, program runs of bytes, check ranges (CRC-32
through the STM32 CRC unit, or blankness), compare words. The RAM the algorithm leaves free is
split in two halves; while one call runs from one half, the host loads the next call into the
other, so the flash controller is kept busy and the host's transfers hide behind it. A call's
table, data and status word go at the start of its half (the host writes them in one block),
its results after the status word.

:func:`write_calls` sizes each call so that loading the next one takes no longer than the
flash controller is busy with the current one: the first call carries the erases, which
need no data, or only a little data; the next ones grow to fill a half.
"""

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

END, ERASE, MASS, PROG, CRC, BLANK, ZCRC, CLOCK, CMP = 0, 1, 2, 3, 4, 5, 6, 7, 8
CHECKS = (CRC, BLANK, ZCRC)
#: The status word before the call ends (the algorithm writes 0 or a failure there).
PENDING = 0xFFFFFFFF
MAX_ARG = (1 << 28) - 1
#: A run of erased half-words at least this long (bytes) is neither loaded nor programmed.
GAP = 32

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rbit(value: int) -> int:
    return int(f"{value & 0xFFFFFFFF:032b}"[::-1], 2)


def unit_crc(data: bytes) -> int:
    """What the CRC command returns for ``data`` (a whole number of words): the STM32 CRC
    unit's CRC_DR after feeding its little-endian words as they are, from the reset value.

    The unit's CRC-32 (0x04C11DB7, MSB first, no reflection, no final XOR; RM0041 section 3)
    of that bit stream is zlib's (reflected) CRC-32 of the same bits in the other order: each
    word's bytes reversed, each byte's bits reversed. So zlib computes it at C speed.
    """
    if len(data) % 4:
        raise ValueError("the CRC unit takes whole words")
    swapped = bytearray(len(data))
    for k in range(4):
        swapped[k::4] = data[3 - k::4]
    return _rbit(zlib.crc32(bytes(swapped).translate(_REVERSED)) ^ 0xFFFFFFFF)


def op(code: int, arg: int = 0) -> int:
    if not 0 <= arg <= MAX_ARG:
        raise ValueError(f"command argument {arg} out of range")
    return code << 28 | arg


@dataclass
class Call:
    """One call of Exec: its table and data (the host writes :meth:`image` at ``base``), where
    its results go (:attr:`results`), and what the call stands for.

    ``checks``: ``(kind, address, size, count)`` of each check command, in order (for CMP:
    ``(CMP, a, b, count)``); ``pages_done``: the pages whose last byte this call programs;
    ``units``: half-words programmed; ``device_s``: the estimated device time of the call;
    ``read``: how many result words the host reads back (None: all of them).
    """
    base: int
    words: List[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    checks: List[Tuple[int, int, int, int]] = field(default_factory=list)
    pages_done: List[int] = field(default_factory=list)
    units: int = 0
    device_s: float = 0.0
    read: Optional[int] = None
    _src: List[int] = field(default_factory=list)

    def add_erase(self, address: int, count: int = 1, step: int = 0) -> None:
        self.words += [op(ERASE, count), address, step]

    def add_mass(self) -> None:
        self.words.append(op(MASS))

    def add_clock(self, up: bool) -> None:
        """Raise the core clock (up) or put it back and lock the flash controller."""
        self.words.append(op(CLOCK, int(up)))

    def add_cmp(self, a: int, expected: Sequence[int]) -> None:
        """Compare the ``len(expected)`` words at ``a`` with ``expected`` (carried as the call's
        data): a result bit per word, 1 where they differ."""
        self._src.append(len(self.words) + 2)
        self.words += [op(CMP, len(expected)), a, len(self.data)]
        self.data += b"".join(int(v).to_bytes(4, "little") for v in expected)
        self.checks.append((CMP, a, 0, len(expected)))

    def commands(self) -> List[Tuple[int, int]]:
        """``(opcode, argument)`` of each command, in order."""
        out, words, i = [], self.words, 0
        while i < len(words):
            code = words[i] >> 28
            out.append((code, words[i] & MAX_ARG))
            i += 1 if code in (MASS, CLOCK) else 3
        return out

    @property
    def needs_extra(self) -> bool:
        """Whether the call uses the commands loaded only when needed (MASS, CLOCK 0)."""
        return any(code == MASS or (code == CLOCK and not arg) for code, arg in self.commands())

    def raise_clock_first(self) -> None:
        """Make the call raise the core clock before anything else."""
        self.words.insert(0, op(CLOCK, 1))
        self._src = [index + 1 for index in self._src]

    def add_prog(self, dest: int, data: bytes) -> None:
        if len(data) % 2 or dest % 2 or not data:
            raise ValueError("programming runs are whole half-words")
        self._src.append(len(self.words) + 2)
        self.words += [op(PROG, len(data)), dest, len(self.data)]
        self.data += data

    def add_check(self, kind: int, address: int, size: int, count: int = 1) -> None:
        if kind not in CHECKS:
            raise ValueError(f"not a check: {kind}")
        if size <= 0 or size % 4 or address % 4 or count <= 0:
            raise ValueError(f"check of {count} x {size} bytes at 0x{address:08X}: whole words only")
        self.words += [op(kind, count), address, size]
        self.checks.append((kind, address, size, count))

    @property
    def table_bytes(self) -> int:
        return 4 * (len(self.words) + 2)        # where the results go, the commands, END

    @property
    def loaded_bytes(self) -> int:
        """What the host writes: the table, the data and the status word."""
        return self.table_bytes + -(-len(self.data) // 4) * 4 + 4

    @property
    def results_words(self) -> int:
        return sum(result_words(kind, count) for kind, _, _, count in self.checks)

    @property
    def size(self) -> int:
        return self.loaded_bytes + 4 * self.results_words

    @property
    def status(self) -> int:
        """Where the status word is; the results follow it."""
        return self.base + self.loaded_bytes - 4

    @property
    def results(self) -> int:
        return self.status + 4

    @property
    def read_words(self) -> int:
        """Words the host reads back after the call, from :attr:`status`."""
        return 1 + (self.results_words if self.read is None else self.read)

    def image(self) -> List[int]:
        """The words to write at ``base``: the table (where the results go, the commands, END),
        then the data."""
        words = [self.status] + list(self.words) + [op(END)]
        data_at = self.base + self.table_bytes
        for index in self._src:
            words[index + 1] += data_at
        padded = bytes(self.data) + b"\xff" * (-len(self.data) % 4)
        words += [int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4)]
        return words + [PENDING]

    def decode(self, results: Sequence[int]) -> List[Tuple[int, int, int, int]]:
        """``(kind, address, size, value)`` of every range checked, from the result words read
        at :attr:`results` (as many as were read). ``value``: the CRC; for BLANK 1 (every byte
        erased) or 0; for CMP ``(CMP, a, b, bits)`` per 32 words compared, bit i set where word
        i differs."""
        out, at = [], 0
        for kind, address, size, count in self.checks:
            if at + result_words(kind, count) > len(results):
                break
            if kind == CMP:
                n = (count + 31) // 32
                out += [(CMP, address + 128 * i, size + 128 * i, int(w)) for i, w in enumerate(results[at:at + n])]
                at += n
                continue
            if kind == BLANK:
                n = (count + 3) // 4
                flags = b"".join(int(w).to_bytes(4, "little") for w in results[at:at + n])
                values = list(flags[:count])
                at += n
            else:
                values = [int(v) & 0xFFFFFFFF for v in results[at:at + count]]
                at += count
            out += [(kind, address + i * size, size, v) for i, v in enumerate(values)]
        return out


def result_words(kind: int, count: int) -> int:
    if kind == BLANK:
        return (count + 3) // 4
    if kind == CMP:
        return (count + 31) // 32
    return count


def failure(result: int, call: Call) -> Optional[Tuple[int, List[int], int]]:
    """None when ``Exec`` ended well (status 0); else ``(opcode, the command's words, FLASH_SR
    error bits)`` of the command that failed. ValueError for :data:`PENDING` (the call never
    ended)."""
    if result == PENDING:
        raise ValueError("the call did not end")
    if result == 0:
        return None
    index = (result >> 8) // 4 + 1               # the table's first word is the results' address
    words = call.image()
    code = words[index] >> 28 if index < len(words) else END
    return code, words[index:index + (1 if code in (MASS, CLOCK) else 3)], result & 0xFE


def check_calls(checks: Sequence[Tuple[int, int, int]], halves: Sequence[Tuple[int, int]],
                s_per_byte: Optional[Dict[int, float]] = None) -> List[Call]:
    """Calls that run ``checks`` (``(kind, address, size)``, in order; whole words), each
    fitting a half. ``s_per_byte``: estimated device time per byte of each kind."""
    calls: List[Call] = []
    call: Optional[Call] = None
    length = 0
    runs_: List[Tuple[int, int, int, int]] = []
    for kind, address, size in checks:
        if runs_ and runs_[-1][0] == kind and runs_[-1][2] == size and \
                runs_[-1][1] + runs_[-1][2] * runs_[-1][3] == address:
            runs_[-1] = (kind, runs_[-1][1], size, runs_[-1][3] + 1)
        else:
            runs_.append((kind, address, size, 1))
    for kind, address, size, count in runs_:
        while count:
            n = count if call is not None else 0
            while n and call.size + 12 + 4 * result_words(kind, n) > length:
                n -= 1
            if n == 0:
                base, length = halves[len(calls) % len(halves)]
                call = Call(base)
                calls.append(call)
                continue
            call.add_check(kind, address, size, n)
            call.device_s += n * size * (s_per_byte or {}).get(kind, 0.0)
            address += n * size
            count -= n
    return calls


def runs(address: int, data: bytes, erased: int = 0xFF, gap: int = GAP) -> List[Tuple[int, bytes]]:
    """The parts of ``data`` (to go at ``address`` on an erased page, half-word aligned) worth
    loading and programming: runs of at least ``gap`` bytes of erased half-words, and erased
    half-words at either end, are left out (the algorithm would skip them anyway)."""
    blank = bytes([erased, erased])
    out: List[Tuple[int, bytes]] = []
    start: Optional[int] = None
    i, n = 0, len(data)
    while i < n:
        if data[i:i + 2] != blank:
            if start is None:
                start = i
            i += 2
            continue
        j = i
        while j < n and data[j:j + 2] == blank:
            j += 2
        if start is not None and (j - i >= gap or j >= n):
            out.append((address + start, data[start:i]))
            start = None
        i = j
    if start is not None:
        out.append((address + start, data[start:]))
    return out


@dataclass
class Pipeline:
    """What :func:`write_calls` needs to know of the executor: the RAM halves ``(base, length)``,
    the debug port's time to load one byte into RAM, the first call's data budget when nothing
    runs while it loads, the smallest data budget, and the time per byte of a CRC check."""
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
        self.limit = self.space = 0

    def open(self) -> Call:
        base, length = self.p.halves[len(self.calls) % len(self.p.halves)]
        previous = self.calls[-1] if self.calls else None
        if previous is None:
            budget = self.p.first_bytes
        elif self.p.load_s_per_byte <= 0:
            budget = length
        else:   # load no more than the previous call keeps the flash busy for
            budget = int(previous.device_s / self.p.load_s_per_byte * 0.9)
        self.current = Call(base)
        self.calls.append(self.current)
        self.limit = min(length, max(self.p.min_bytes, budget) + 64)
        self.space = length
        return self.current

    def room(self, results_words: int = 0) -> int:
        """Bytes the current call can still load, keeping room for ``results_words`` more."""
        call = self.current
        if call is None:
            return -1
        return min(self.limit - call.loaded_bytes, self.space - call.size - 4 * results_words)

    def need(self, loaded: int, results_words: int = 0) -> Call:
        if self.room(results_words) < loaded:
            self.open()
        return self.current

    def close(self) -> None:
        self.current = None


def write_calls(plan, pipeline: Pipeline, regions: Dict[int, object]) -> List[Call]:
    """The calls that carry out the plan's erases and programming, and with ``verify='crc'``
    a CRC check of each page programmed, right after its last byte.

    ``regions`` maps each page of the plan to its :class:`~scons_pyocd.plan.Region`. A mass
    erase, or the first page's erase, is a call of its own: it needs no data, and the next
    call loads while it runs. Each other page erase goes with the first bytes programmed into
    its page. A call's data is sized so that loading it takes no longer than the call before
    it keeps the flash busy. Runs of erased half-words are neither loaded nor programmed.
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
    if not plan.mass_erase and plan.program and plan.program[0].erase:
        page = plan.program[0].address
        call = b.open()
        call.add_erase(page)
        call.device_s += regions[page].page_erase_s
        erased.add(page)
        b.close()
    check = 1 if verify else 0           # result words of a page's check
    for write in plan.program:
        region = regions[write.address]
        pieces = runs(write.address, write.data, region.erased)
        if write.erase and write.address not in erased:
            call = b.need(12 + 12 + (min(len(pieces[0][1]), 64) if pieces else 0), check)
            call.add_erase(write.address)
            call.device_s += region.page_erase_s
        for index, (dest, data) in enumerate(pieces):
            last = index == len(pieces) - 1
            while data:
                tail = 12 if last and verify else 0
                call = b.need(12 + 2 + tail, check)
                n = min(len(data), (b.room(check) - 12 - tail) // 2 * 2)
                if n < len(data):
                    n = min(len(data), (b.room(check) - 12) // 2 * 2)
                part, data = data[:n], data[n:]
                call.add_prog(dest, part)
                units = region.program_units(part, True)
                call.units += units
                call.device_s += units * region.program_unit_s
                dest += n
        if verify:
            call = b.need(12, check)
            call.add_check(CRC, write.address, region.page_size)
            call.device_s += region.page_size * pipeline.crc_s_per_byte
        (b.current or (b.calls[-1] if b.calls else b.open())).pages_done.append(write.address)
    longest = max((length for _, length in pipeline.halves), default=0)
    for call in b.calls:
        assert call.size <= longest, "a call outgrew its half"
    return b.calls
