"""The STM32F100's CRC calculation unit (RM0041 §3), and the pure CRC arithmetic behind it.

Registers at 0x40023000 (RM0041 §3.4; reset values in brackets):

- ``DR`` (0x00) [0xFFFFFFFF]: a write feeds one 32-bit word into the CRC; a read
  returns the CRC so far. CRC-32 with polynomial 0x04C11DB7 (RM0041 §3.2), the
  word fed whole, most significant bit first, with no input or output
  reflection and no final XOR (RM0041 §3.3: the computation is done on the
  whole 32-bit word, not byte by byte).
- ``IDR`` (0x04) [0x00]: an 8-bit scratch register, not touched by ``CR.RESET``.
- ``CR`` (0x08) [0x00]: bit 0 ``RESET`` sets ``DR`` back to 0xFFFFFFFF; it can
  only be set and reads as 0 (cleared by hardware).

Timing: the computation takes 4 AHB clock cycles (HCLK) per word (RM0041 §3.2),
and a write to ``DR`` is stalled until it ends, which is what allows back-to-back
writes (RM0041 §3.3). A core store to ``DR`` is therefore charged 4 HCLK cycles
of device time at the current HCLK, on top of the store's own instruction time.
A debug-port write also occupies the unit for 4 HCLK cycles, but the AHB-AP does
that while the next SWD packet shifts in (11.5 us at 4 MHz SWD against 0.5 us at
8 MHz HCLK), so it adds no device time unless a core access follows at once.

Clock gating: the unit is clocked only while ``RCC_AHBENR.CRCEN`` (bit 6) is set
(reset value of RCC_AHBENR is 0x14: CRCEN clear, RM0041 §6.3.6). RM0041 does not
say what an access to a peripheral with its clock off does; on STM32F1 parts the
peripheral's registers read as zero and ignore writes, with no bus error (the
behaviour reported for USART and GPIO registers accessed before their clock is
enabled). The simulator does exactly that: reads return 0, writes are ignored,
the state kept (DR, IDR) is untouched, and ``crc_accesses_clock_off`` counts it.

Access size: RM0041 §3.4 says the registers are accessed by words. A byte or
half-word write to ``DR`` is modelled as the Cortex-M3 puts it on the AHB, the
value replicated across the 32-bit data bus, and that word is fed (as observed
on the STM32F4, whose CRC unit is the same design); sub-word reads return the
addressed lanes of the word.

Pure helpers (no chip needed): :func:`crc_update` (the unit's arithmetic),
:func:`rbit` and :func:`zlib_crc32_from_unit`, which states the relation the
flash tooling relies on: feeding the bit-reversed little-endian words of the
data and taking ``~rbit(DR)`` gives ``zlib.crc32`` of those bytes.
"""

from typing import Iterable

DR, IDR, CR = 0x00, 0x04, 0x08
CR_RESET = 1
POLYNOMIAL = 0x04C11DB7
INITIAL = 0xFFFFFFFF
#: AHB clock cycles per word fed (RM0041 §3.2).
CYCLES_PER_WORD = 4


def _table():
    table = []
    for byte in range(256):
        c = byte << 24
        for _ in range(8):
            c = ((c << 1) ^ POLYNOMIAL) if c & 0x80000000 else (c << 1)
            c &= 0xFFFFFFFF
        table.append(c)
    return tuple(table)


_TABLE = _table()


def crc_update(crc: int, word: int) -> int:
    """The unit's DR after feeding the 32-bit ``word`` into a DR holding ``crc``.

    CRC-32, polynomial 0x04C11DB7, MSB first, no reflection, no final XOR (RM0041 §3).
    ``crc_update(0xFFFFFFFF, 0) == 0xC704DD7B``.
    """
    crc = (crc ^ word) & 0xFFFFFFFF
    for _ in range(4):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[crc >> 24]
    return crc


def crc_words(words: Iterable[int], crc: int = INITIAL) -> int:
    """DR after feeding ``words`` (32-bit ints) in order, from ``crc`` (the reset value by default)."""
    for word in words:
        crc = crc_update(crc, word)
    return crc


def rbit(value: int) -> int:
    """The 32-bit ``value`` with its bit order reversed (the Cortex-M3 ``RBIT`` instruction)."""
    return int(f"{value & 0xFFFFFFFF:032b}"[::-1], 2)


def zlib_crc32_from_unit(data: bytes) -> int:
    """``zlib.crc32(data)`` computed the way the unit can: ``~rbit(DR)`` after feeding ``rbit`` of
    each little-endian word. ``len(data)`` must be a multiple of 4 (ValueError otherwise)."""
    if len(data) % 4:
        raise ValueError(f"the CRC unit takes whole words: {len(data)} bytes is not a multiple of 4")
    words = (rbit(int.from_bytes(data[i:i + 4], "little")) for i in range(0, len(data), 4))
    return rbit(crc_words(words)) ^ 0xFFFFFFFF


class CrcUnit:
    """The CRC unit of one chip: registers, clock gating and its AHB time.

    ``chip`` supplies ``now`` (device seconds), ``rcc`` (for CRCEN and HCLK) and ``count``.
    """

    def __init__(self, chip):
        self.chip = chip
        self.reset()

    def reset(self) -> None:
        """System reset: DR 0xFFFFFFFF, IDR 0, the unit idle."""
        self.dr = INITIAL
        self.idr = 0
        self.busy_until = 0.0

    def _clocked(self) -> bool:
        if self.chip.rcc.crc_clock_enabled:
            return True
        self.chip.count("crc_accesses_clock_off")
        return False

    def _wait(self) -> None:
        # An access while the previous word is still being computed is stalled until it ends.
        if self.chip.now < self.busy_until:
            self.chip.now = self.busy_until

    def read(self, offset: int, size: int, debug: bool = False) -> int:
        """A bus read of ``size`` bytes at ``offset`` from 0x40023000."""
        if not self._clocked():
            return 0
        if not debug:
            self._wait()
        word = {DR: self.dr, IDR: self.idr}.get(offset & ~3, 0)  # CR and reserved words read 0
        shift = (offset & 3) * 8
        return (word >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int, debug: bool = False) -> None:
        """A bus write of ``size`` bytes at ``offset``; ``debug`` for the AHB-AP (no core stall)."""
        if not self._clocked():
            return
        reg = offset & ~3
        if size == 4:
            word = value & 0xFFFFFFFF
        elif size == 2:
            word = (value & 0xFFFF) * 0x00010001
        else:
            word = (value & 0xFF) * 0x01010101
        if reg == DR:
            start = max(self.chip.now, self.busy_until)
            self.busy_until = start + CYCLES_PER_WORD / self.chip.rcc.hclk_hz
            self.dr = crc_update(self.dr, word)
            self.chip.count("crc_words")
            if not debug:
                self.chip.now = self.busy_until  # the store completes when the computation does
        elif reg == IDR:
            lane = (offset & 3) * 8
            if lane == 0:
                self.idr = word & 0xFF
        elif reg == CR:
            if word & CR_RESET:
                if not debug:
                    self._wait()
                self.dr = INITIAL
