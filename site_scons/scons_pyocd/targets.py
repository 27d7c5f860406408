"""Target definitions this tool adds to pyOCD, and what each chip must report.

pyOCD has no built-in STM32F100RB; :mod:`.target_stm32f100rb` provides it.
:func:`register` adds it to pyOCD's target table in this process (pyOCD's
``pyocd.probe`` entry point calls it too when the package is pip-installed, so
``pyocd flash -t stm32f100rb`` works from the command line).

:data:`IDENTITIES` is what the tool checks before writing to a chip: the
DBGMCU_IDCODE device id and the flash size register. This module imports no
pyOCD; only :func:`register` does.
"""

from typing import NamedTuple, Optional


class ChipIdentity(NamedTuple):
    """Where a chip reports who it is, and what the target definition expects."""
    idcode_address: int
    dev_id_mask: int
    dev_id: int
    flash_size_address: Optional[int]
    flash_kb: Optional[int]
    description: str
    #: The chip's erase unit (page) in bytes: a target definition declaring other flash
    #: sectors would erase data outside the image, or fail mid-flash.
    sector_size: Optional[int] = None
    #: Where the chip's factory-programmed unique device id is, and its length in bytes:
    #: board records remember it, so another chip behind the same probe is noticed.
    unique_id_address: Optional[int] = None
    unique_id_bytes: int = 12


IDENTITIES = {
    # RM0041: DBGMCU_IDCODE DEV_ID 0x420 (value line, low/medium density); F_SIZE in KiB;
    # 1 KiB pages.
    # RM0041, "Device electronic signature": 96-bit unique device id at 0x1FFFF7E8.
    "stm32f100rb": ChipIdentity(0xE0042000, 0xFFF, 0x420, 0x1FFFF7E0, 128,
                                "STM32F100RB (value line, 128 KiB flash)", 1024, 0x1FFFF7E8),
    # RM0008: DEV_ID 0x414 high density (the F103RC is 256 KiB), 2 KiB pages.
    # RM0008, "Device electronic signature": 96-bit unique device id at 0x1FFFF7E8.
    "stm32f103rc": ChipIdentity(0xE0042000, 0xFFF, 0x414, 0x1FFFF7E0, 256,
                                "STM32F103RC (high density, 256 KiB flash)", 2048, 0x1FFFF7E8),
}

_registered = False


def register() -> None:
    """Add this package's targets to pyOCD's target table (idempotent)."""
    global _registered
    if _registered:
        return
    from pyocd.target import TARGET
    from .target_stm32f100rb import STM32F100RB
    TARGET.setdefault("stm32f100rb", STM32F100RB)
    _registered = True
