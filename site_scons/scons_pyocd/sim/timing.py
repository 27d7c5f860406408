"""The simulated board's device clock: what each operation costs in device time.

Flash figures are the STM32F100xB datasheet's (flash memory characteristics):
half-word programming 40 / 52.5 / 70 us (min / typ / max), page erase and mass
erase 20-40 ms. The defaults take the typical programming time and the minimum
erase times. A board may override any of them in ``timing.json`` in its
directory (keys as in :data:`DEFAULTS`).

Debug-port time: each SWD transfer (DP or AP register read or write) costs
:data:`SWD_BITS_PER_TRANSFER` clock cycles at the probe's SWD frequency: 8
request bits, 1 turnaround, 3 acknowledge bits, 1 turnaround, 32 data bits,
1 parity bit. A probe's USB round trip is not part of the wire; a board can add
one per blocking read (``usb_roundtrip_us``, default 0) to model a specific probe.

Core time: the core runs at 8 MHz (HSI after reset; the flash algorithm does not
touch the clock tree) and the model charges 1.5 cycles per 16-bit unit of Thumb
code executed, which is close to the Cortex-M3's typical CPI for this kind of
code. Flash operations dominate anyway: one half-word program is 420 cycles.
"""

SWD_BITS_PER_TRANSFER = 46

DEFAULTS = {
    "halfword_program_us": 52.5,
    "page_erase_ms": 20.0,
    "mass_erase_ms": 20.0,
    "core_clock_hz": 8_000_000.0,
    "cycles_per_halfword_of_code": 1.5,
    "usb_roundtrip_us": 0.0,
    #: Used until the host sets a frequency (pyOCD's default is 1 MHz).
    "default_swd_hz": 1_000_000.0,
}


class Timing:
    """Durations in seconds, from :data:`DEFAULTS` overridden by a board's ``timing.json``."""

    def __init__(self, overrides=None):
        values = dict(DEFAULTS)
        values.update(overrides or {})
        unknown = set(values) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown timing key(s): {', '.join(sorted(unknown))}")
        self.halfword_program_s = values["halfword_program_us"] * 1e-6
        self.page_erase_s = values["page_erase_ms"] * 1e-3
        self.mass_erase_s = values["mass_erase_ms"] * 1e-3
        self.core_s_per_code_halfword = values["cycles_per_halfword_of_code"] / values["core_clock_hz"]
        self.usb_roundtrip_s = values["usb_roundtrip_us"] * 1e-6
        self.swd_hz = values["default_swd_hz"]

    def transfer_s(self, count: int = 1) -> float:
        """Wire time of ``count`` SWD transfers at the current frequency."""
        return count * SWD_BITS_PER_TRANSFER / self.swd_hz
