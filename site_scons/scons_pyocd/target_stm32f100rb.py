"""pyOCD target definition for the STM32F100RB (STM32VLDiscovery).

Memory: 128 KiB flash at 0x08000000 in 1 KiB pages, 8 KiB SRAM at 0x20000000.

Flash algorithm: pyOCD's built-in STM32F103RC algorithm drives the same FPEC
(PM0063 and PM0075 describe the same controller), so its code is reused as is.
Its RAM layout is moved inside 8 KiB (the F103RC's assumes 64 KiB):

==========================  =========================
algorithm code + data       0x20000000 (static base 0x20000200)
page buffers (double)       0x20000800, 0x20000C00
stack                       0x20001000-0x20001800 (top 0x20001800)
CRC analyzer (smart flash)  0x20001800-0x20001E00
==========================  =========================

The algorithm's ``init`` only clears FLASH_SR; ``erase_sector`` and
``program_page`` unlock the FPEC themselves. Page size is the F100's 1 KiB.
"""

from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from pyocd.target.builtin import target_STM32F103RC as _f103

DBGMCU_CR = 0xE0042004
#: Keep the watchdogs and timers stopped while the core is halted; debug in low-power modes.
DBGMCU_CR_VALUE = 0x7E3FFF07

FLASH_ALGO = dict(_f103.FLASH_ALGO)
FLASH_ALGO.update({
    "load_address": 0x20000000,
    "static_base": 0x20000200,
    "page_buffers": [0x20000800, 0x20000C00],
    "begin_stack": 0x20001800,
    "analyzer_supported": True,
    "analyzer_address": 0x20001800,
})


class STM32F100RB(CoreSightTarget):
    """STM32F100RB: Cortex-M3, 128 KiB flash (1 KiB pages), 8 KiB SRAM."""

    VENDOR = "STMicroelectronics"

    MEMORY_MAP = MemoryMap(
        FlashRegion(start=0x08000000, length=0x20000, blocksize=0x400, is_boot_memory=True,
                    algo=FLASH_ALGO, erased_byte_value=0xFF),
        RamRegion(start=0x20000000, length=0x2000),
    )

    def __init__(self, session):
        super().__init__(session, self.MEMORY_MAP)

    def post_connect_hook(self):
        self.write_memory(DBGMCU_CR, DBGMCU_CR_VALUE)
