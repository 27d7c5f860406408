"""The STM32F100's reset and clock control (RCC), enough of it to switch clocks honestly.

Registers at 0x40021000 (RM0041 §6.3; reset values in brackets). Modelled:

``CR`` (0x00) [0x00000083]
    HSION (0) / HSIRDY (1), HSITRIM (7:3, reset 16), HSEON (16) / HSERDY (17),
    HSEBYP (18), CSSON (19), PLLON (24) / PLLRDY (25). A RDY bit is set only once
    its source has run for its start-up time in device time (below). HSION cannot
    be cleared while the HSI is the system clock, directly or through the PLL, or
    is selected to become it; HSEON likewise for the HSE; PLLON while the PLL is
    or is selected to become the system clock (RM0041 §6.3.1).
``CFGR`` (0x04) [0x00000000]
    SW (1:0: 0 HSI, 1 HSE, 2 PLL, 3 not allowed), SWS (3:2, read-only), HPRE
    (7:4, the AHB prescaler: 0xxx = 1, 1000..1111 = 2, 4, 8, 16, 64, 128, 256,
    512), PPRE1/PPRE2/ADCPRE/MCO stored, PLLSRC (16: 0 = HSI/2, 1 = PREDIV1
    output), PLLXTPRE (17, the same bit as CFGR2.PREDIV1[0]), PLLMUL (21:18:
    0000 = x2 ... 1101 = x15, 1110 and 1111 = x16). PLLSRC, PLLXTPRE and PLLMUL
    can be written only while the PLL is off (RM0041 §6.3.2).
``AHBENR`` (0x14) [0x00000014]
    DMA1EN (0), SRAMEN (2), FLITFEN (4), CRCEN (6): CRCEN clocks the CRC unit.
``CFGR2`` (0x2C) [0x00000000]
    PREDIV1 (3:0: divide by 1..16) for the HSE into the PLL; value line only;
    writable only while the PLL is off (RM0041 §6.3.12).

The other RCC registers (CIR, APBxRSTR, APBxENR, BDCR, CSR) are plain storage.

Clock switching (RM0041 §6.2.7): SWS follows SW only once the selected source is
ready (oscillator stable, PLL locked); selecting a source that is not ready yet
makes the switch happen when it becomes ready. Start-up times (device time,
from the STM32F100xB datasheet DS6517, overridable per board in ``timing.json``):
HSI 2 us (tsu(HSI), HSI oscillator table), HSE 2 ms (tSU(HSE) typical, HSE 4-24
MHz oscillator table; it depends on the crystal), PLL lock 200 us (tLOCK, PLL
characteristics table, maximum). The PLL starts to lock once both PLLON is set
and its input is ready. (These three are the figures REFERENCE.md takes from
DS6517 and the STM32F10x datasheets share; DS6517's table text itself could not
be re-read when this was written: check them against it.)

Frequencies: HSI 8 MHz (DS6517); HSE 8 MHz, the STM32VLDiscovery's crystal X2
(UM0919). The core and the AHB run at HCLK = SYSCLK / HPRE; :attr:`hclk_hz` is
what the simulator charges code and CRC time at.

Out of specification: DS6517 allows SYSCLK/HCLK up to 24 MHz, a PLL input of 1-24
MHz and a PLL output of 16-24 MHz. The simulator does not refuse other settings
(a real chip accepts the register writes and may or may not run); the core runs
at the computed frequency, and every switch onto an out-of-spec system clock is
counted in ``clock_out_of_spec`` and logged, so a test or benchmark can insist
that it never happens. SW = 3 ("not allowed") never switches and is counted too.

Not modelled: the clock security system, HSE bypass (stored only), MCO, Stop and
Standby modes, the RCC interrupts, the reset flags in CSR.
"""

import logging
import math
from typing import Optional

LOG = logging.getLogger(__name__)

CR, CFGR, CIR, AHBENR, CFGR2 = 0x00, 0x04, 0x08, 0x14, 0x2C

CR_HSION, CR_HSIRDY, CR_HSEON, CR_HSERDY = 1 << 0, 1 << 1, 1 << 16, 1 << 17
CR_HSEBYP, CR_CSSON, CR_PLLON, CR_PLLRDY = 1 << 18, 1 << 19, 1 << 24, 1 << 25
CR_HSITRIM_MASK = 0xF8
CR_WRITABLE = CR_HSION | CR_HSITRIM_MASK | CR_HSEON | CR_HSEBYP | CR_CSSON | CR_PLLON
CR_RESET = 0x00000083  # HSION, HSIRDY, HSITRIM = 16 (HSICAL reads 0 here)

CFGR_SW_MASK, CFGR_HPRE_MASK = 0x3, 0xF0
CFGR_PLLSRC, CFGR_PLLXTPRE, CFGR_PLLMUL_MASK = 1 << 16, 1 << 17, 0xF << 18
CFGR_PLL_BITS = CFGR_PLLSRC | CFGR_PLLXTPRE | CFGR_PLLMUL_MASK
#: SW, HPRE, PPRE1, PPRE2, ADCPRE, PLLSRC, PLLXTPRE, PLLMUL, MCO (bits 22-23 are reserved on the value line).
CFGR_WRITABLE = 0x3 | 0xF0 | 0x700 | 0x3800 | 0xC000 | CFGR_PLL_BITS | 0x7000000

AHBENR_CRCEN = 1 << 6
AHBENR_WRITABLE = 0x55  # DMA1EN, SRAMEN, FLITFEN, CRCEN on a medium-density value line part
AHBENR_RESET = 0x14

HSI, HSE, PLL = 0, 1, 2
SOURCE_NAMES = {HSI: "HSI", HSE: "HSE", PLL: "PLL", 3: "SW=3 (not allowed)"}
AHB_DIVIDERS = {8: 2, 9: 4, 10: 8, 11: 16, 12: 64, 13: 128, 14: 256, 15: 512}

#: DS6517 limits: SYSCLK (and so HCLK) at most 24 MHz; PLL input 1-24 MHz, output 16-24 MHz.
SYSCLK_MAX_HZ = 24_000_000
PLL_IN_HZ = (1_000_000, 24_000_000)
PLL_OUT_HZ = (16_000_000, 24_000_000)


class ResetClockControl:
    """The RCC of one chip. ``chip`` supplies ``now`` (device seconds), ``timing`` and ``count``."""

    def __init__(self, chip):
        self.chip = chip
        self.hclk_hz = 0.0
        #: Device seconds per 16-bit unit of code at the current HCLK (``cycles_per_halfword_of_code``
        #: / HCLK, see :mod:`.timing`): what the core charges for the code it runs.
        self.s_per_code_halfword = 0.0
        self.reset()

    # -- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """System reset (nRST, SYSRESETREQ, power-on): HSI on and ready, SYSCLK = HSI 8 MHz."""
        self.cr = CR_RESET & ~CR_HSIRDY
        self.cfgr = 0
        self.cfgr2 = 0
        self.ahbenr = AHBENR_RESET
        self.other = {}
        self.sws = HSI
        # Times (device seconds) at which each source became or becomes ready; None while off.
        self.hsi_ready_at: Optional[float] = -math.inf
        self.hse_ready_at: Optional[float] = None
        self.pll_on_at: Optional[float] = None
        self.next_change_at = math.inf
        self._notify()

    @property
    def crc_clock_enabled(self) -> bool:
        return bool(self.ahbenr & AHBENR_CRCEN)

    def _now(self) -> float:
        return self.chip.now

    def pll_input_hz(self) -> float:
        if self.cfgr & CFGR_PLLSRC:
            return self.chip.timing.hse_hz / ((self.cfgr2 & 0xF) + 1)
        return self.chip.timing.hsi_hz / 2

    def pll_multiplier(self) -> int:
        return min(((self.cfgr >> 18) & 0xF) + 2, 16)

    def source_hz(self, source: int) -> float:
        if source == HSI:
            return float(self.chip.timing.hsi_hz)
        if source == HSE:
            return float(self.chip.timing.hse_hz)
        return self.pll_input_hz() * self.pll_multiplier()

    def ready_at(self, source: int) -> Optional[float]:
        """When ``source`` (HSI, HSE, PLL) is or will be ready; None if it never will as things stand."""
        if source == HSI:
            return self.hsi_ready_at
        if source == HSE:
            return self.hse_ready_at
        if source == PLL:
            if self.pll_on_at is None:
                return None
            feed = self.hse_ready_at if self.cfgr & CFGR_PLLSRC else self.hsi_ready_at
            if feed is None:
                return None
            return max(self.pll_on_at, feed) + self.chip.timing.pll_lock_s
        return None

    def is_ready(self, source: int, now: Optional[float] = None) -> bool:
        at = self.ready_at(source)
        return at is not None and (self._now() if now is None else now) >= at

    def hsi_ready(self) -> bool:
        """HSION and HSIRDY: what the FPEC needs to program or erase (RM0041 flash chapter)."""
        return self.is_ready(HSI)

    @property
    def sysclk_hz(self) -> float:
        return self.source_hz(self.sws)

    def ahb_divider(self) -> int:
        return AHB_DIVIDERS.get((self.cfgr >> 4) & 0xF, 1)

    def uses(self, source: int) -> bool:
        """Whether ``source`` drives SYSCLK, directly or through the PLL, or is selected to."""
        sw = self.cfgr & CFGR_SW_MASK
        for sel in {self.sws, sw}:
            if sel == source:
                return True
            if sel == PLL and source != PLL and ((self.cfgr & CFGR_PLLSRC) != 0) == (source == HSE):
                return True
        return False

    # -- time -----------------------------------------------------------------------
    def advance(self) -> None:
        """Carry out a pending clock switch whose source has become ready by now."""
        sw = self.cfgr & CFGR_SW_MASK
        if sw == self.sws or sw == 3:
            self.next_change_at = math.inf
            return
        at = self.ready_at(sw)
        if at is None:
            self.next_change_at = math.inf
            return
        if self._now() < at:
            self.next_change_at = at
            return
        self.sws = sw
        self.next_change_at = math.inf
        self._check_spec()
        self._notify()

    def _notify(self) -> None:
        hclk = self.source_hz(self.sws) / self.ahb_divider()
        if hclk != self.hclk_hz:
            self.hclk_hz = hclk
            self.s_per_code_halfword = self.chip.timing.cycles_per_code_halfword / hclk

    def _check_spec(self) -> None:
        problems = []
        sysclk = self.sysclk_hz
        if sysclk > SYSCLK_MAX_HZ:
            problems.append(f"SYSCLK {sysclk / 1e6:g} MHz is above the F100's 24 MHz")
        if self.sws == PLL:
            pll_in, pll_out = self.pll_input_hz(), sysclk
            if not PLL_IN_HZ[0] <= pll_in <= PLL_IN_HZ[1]:
                problems.append(f"PLL input {pll_in / 1e6:g} MHz is outside 1-24 MHz")
            if not PLL_OUT_HZ[0] <= pll_out <= PLL_OUT_HZ[1]:
                problems.append(f"PLL output {pll_out / 1e6:g} MHz is outside 16-24 MHz")
        if problems:
            self.chip.count("clock_out_of_spec")
            LOG.warning("simulated STM32F100: clock out of the datasheet's range: %s", "; ".join(problems))

    # -- registers --------------------------------------------------------------------
    def read(self, offset: int) -> int:
        """A word read at ``offset`` from 0x40021000."""
        self.advance()
        if offset == CR:
            value = self.cr & ~(CR_HSIRDY | CR_HSERDY | CR_PLLRDY)
            if self.cr & CR_HSION and self.is_ready(HSI):
                value |= CR_HSIRDY
            if self.cr & CR_HSEON and self.is_ready(HSE):
                value |= CR_HSERDY
            if self.cr & CR_PLLON and self.is_ready(PLL):
                value |= CR_PLLRDY
            return value
        if offset == CFGR:
            return (self.cfgr & ~0xC) | (self.sws << 2)
        if offset == AHBENR:
            return self.ahbenr
        if offset == CFGR2:
            return self.cfgr2
        return self.other.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        """A word write at ``offset`` from 0x40021000."""
        self.advance()
        now = self._now()
        if offset == CR:
            self._write_cr(value & 0xFFFFFFFF, now)
        elif offset == CFGR:
            self._write_cfgr(value & 0xFFFFFFFF)
        elif offset == AHBENR:
            self.ahbenr = value & AHBENR_WRITABLE
        elif offset == CFGR2:
            if not self.cr & CR_PLLON:
                self.cfgr2 = value & 0xF
                self.cfgr = (self.cfgr & ~CFGR_PLLXTPRE) | ((value & 1) << 17)
        else:
            self.other[offset] = value & 0xFFFFFFFF
        self.advance()
        self._notify()

    def _write_cr(self, value: int, now: float) -> None:
        old = self.cr
        new = (old & ~CR_WRITABLE) | (value & CR_WRITABLE)
        for bit, source in ((CR_HSION, HSI), (CR_HSEON, HSE), (CR_PLLON, PLL)):
            if old & bit and not new & bit and self.uses(source):
                new |= bit  # cannot be cleared while it drives, or is selected to drive, SYSCLK
        if old & CR_HSEON:
            new = (new & ~CR_HSEBYP) | (old & CR_HSEBYP)  # HSEBYP is writable only while HSE is off
        self.cr = new
        t = self.chip.timing
        if new & CR_HSION and not old & CR_HSION:
            self.hsi_ready_at = now + t.hsi_startup_s
        elif not new & CR_HSION:
            self.hsi_ready_at = None
        if new & CR_HSEON and not old & CR_HSEON:
            self.hse_ready_at = now + t.hse_startup_s
        elif not new & CR_HSEON:
            self.hse_ready_at = None
        if new & CR_PLLON and not old & CR_PLLON:
            self.pll_on_at = now
        elif not new & CR_PLLON:
            self.pll_on_at = None

    def _write_cfgr(self, value: int) -> None:
        keep = CFGR_PLL_BITS if self.cr & CR_PLLON else 0
        self.cfgr = (self.cfgr & keep) | (value & CFGR_WRITABLE & ~keep)
        if not keep:
            # PLLXTPRE and PREDIV1[0] are one bit (RM0041 §6.3.12).
            self.cfgr2 = (self.cfgr2 & ~1) | ((self.cfgr >> 17) & 1)
        if (self.cfgr & CFGR_SW_MASK) == 3:
            self.chip.count("clock_out_of_spec")
            LOG.warning("simulated STM32F100: RCC_CFGR.SW = 3 is not allowed; the system clock stays %s",
                        SOURCE_NAMES[self.sws])
