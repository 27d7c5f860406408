"""The simulated board's device clock: what each operation costs in device time.

Flash figures are the STM32F100xB datasheet's (DS6517, flash memory
characteristics): half-word programming 40 / 52.5 / 70 us (min / typ / max),
page erase and mass erase 20-40 ms. The defaults take the typical programming
time and the minimum erase times. The FPEC times its operations from the HSI
whatever SYSCLK is, so these do not depend on the clock configuration (the
HSI must be on, see :mod:`.fpec`). A board may override any value in
``timing.json`` in its directory (keys as in :data:`DEFAULTS`).

Debug-port time: each SWD transfer (DP or AP register read or write) costs
:data:`SWD_BITS_PER_TRANSFER` clock cycles at the probe's SWD frequency: 8
request bits, 1 turnaround, 3 acknowledge bits, 1 turnaround, 32 data bits,
1 parity bit. A probe's USB round trip is not part of the wire; a board can add
one per blocking read (``usb_roundtrip_us``, default 0) to model a specific probe.

Core time: the core runs at HCLK, which the RCC model (:mod:`.rcc`) derives from
the clock configuration: 8 MHz HSI after reset. The model charges 1.5 HCLK
cycles per 16-bit unit of Thumb code executed, close to the Cortex-M3's typical
CPI for this kind of code, plus 4 HCLK cycles per word fed to the CRC unit
(RM0041 §3.2). Clock sources and start-up times:

- ``hsi_hz`` 8 MHz: the internal RC oscillator (DS6517, HSI oscillator characteristics);
- ``hse_hz`` 8 MHz: the STM32VLDiscovery's HSE crystal X2 (UM0919);
- ``hsi_startup_us`` 2: tsu(HSI), DS6517 HSI oscillator characteristics (1-2 us);
- ``hse_startup_us`` 2000: tSU(HSE), DS6517 HSE 4-24 MHz oscillator characteristics,
  typical 2 ms (it depends on the crystal);
- ``pll_lock_us`` 200: tLOCK, DS6517 PLL characteristics (maximum).
"""

SWD_BITS_PER_TRANSFER = 46

DEFAULTS = {
    "halfword_program_us": 52.5,
    "page_erase_ms": 20.0,
    "mass_erase_ms": 20.0,
    "hsi_hz": 8_000_000.0,
    "hse_hz": 8_000_000.0,
    "hsi_startup_us": 2.0,
    "hse_startup_us": 2000.0,
    "pll_lock_us": 200.0,
    "cycles_per_halfword_of_code": 1.5,
    "usb_roundtrip_us": 0.0,
    #: Used until the host sets a frequency (pyOCD's default is 1 MHz).
    "default_swd_hz": 1_000_000.0,
}


class Timing:
    """Durations in seconds and frequencies in Hz, from :data:`DEFAULTS` overridden by a board's
    ``timing.json``. ValueError on an unknown key."""

    def __init__(self, overrides=None):
        values = dict(DEFAULTS)
        values.update(overrides or {})
        unknown = set(values) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown timing key(s): {', '.join(sorted(unknown))}")
        self.halfword_program_s = values["halfword_program_us"] * 1e-6
        self.page_erase_s = values["page_erase_ms"] * 1e-3
        self.mass_erase_s = values["mass_erase_ms"] * 1e-3
        self.hsi_hz = values["hsi_hz"]
        self.hse_hz = values["hse_hz"]
        self.hsi_startup_s = values["hsi_startup_us"] * 1e-6
        self.hse_startup_s = values["hse_startup_us"] * 1e-6
        self.pll_lock_s = values["pll_lock_us"] * 1e-6
        self.cycles_per_code_halfword = values["cycles_per_halfword_of_code"]
        self.usb_roundtrip_s = values["usb_roundtrip_us"] * 1e-6
        self.swd_hz = values["default_swd_hz"]

    @classmethod
    def for_board(cls, board) -> "Timing":
        """The timing of ``board`` (a :class:`.board.BoardState`): its ``timing.json`` over the defaults."""
        return cls(board._read_json("timing.json") if (board.path / "timing.json").exists() else None)

    def transfer_s(self, count: int = 1) -> float:
        """Wire time of ``count`` SWD transfers at the current frequency."""
        return count * SWD_BITS_PER_TRANSFER / self.swd_hz
