"""pyOCD target definition for the STM32F100RB (STM32VLDiscovery).

Memory: 128 KiB flash at 0x08000000 in 1 KiB pages, 8 KiB SRAM at 0x20000000.

Flash algorithm: our own (``flash_algo/stm32f1_fpec.S``), for the FPEC that
PM0063 (value line) and PM0075 describe. Unlike pyOCD's stock STM32F103
algorithm it keeps the FPEC busy: it fetches the next half-word while the
previous one programs and does not read each half-word back (the tool verifies
the written pages by CRC on the host). RAM layout inside 8 KiB:

==========================  =========================
algorithm code              0x20000000 (static base 0x20000200, unused)
page buffers (double)       0x20000800, 0x20000C00
stack                       0x20001000-0x20001800 (top 0x20001800)
CRC analyzer (smart flash)  0x20001800-0x20001E00
==========================  =========================
"""

from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion

from .flash_algo import stm32f1_fpec_blob as _blob

DBGMCU_CR = 0xE0042004
#: Debug in sleep/stop/standby; watchdogs and timers stopped while the core is halted.
DBGMCU_CR_VALUE = 0x7E3FFF07

LOAD_ADDRESS = 0x20000000

FLASH_ALGO = {
    "load_address": LOAD_ADDRESS,
    "instructions": list(_blob.INSTRUCTIONS),
    "pc_init": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["Init"],
    "pc_unInit": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["UnInit"],
    "pc_eraseAll": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["EraseChip"],
    "pc_erase_sector": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["EraseSector"],
    "pc_program_page": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["ProgramPage"],
    "static_base": 0x20000200,
    "begin_stack": 0x20001800,
    "page_buffers": [0x20000800, 0x20000C00],
    "min_program_length": 2,
    "analyzer_supported": True,
    "analyzer_address": 0x20001800,
}
assert _blob.CODE_SIZE <= 0x200, "the flash algorithm must fit below its static base"


class STM32F100RB(CoreSightTarget):
    """STM32F100RB: Cortex-M3, 128 KiB flash (1 KiB pages), 8 KiB SRAM."""

    VENDOR = "STMicroelectronics"

    MEMORY_MAP = MemoryMap(
        # Weights (s) from the datasheet, for pyOCD's and the tool's erase choices: page and
        # mass erase 20 ms (t_ERASE, t_ME), 512 half-words at 52.5 us (t_PROG) per page.
        FlashRegion(start=0x08000000, length=0x20000, blocksize=0x400, is_boot_memory=True,
                    algo=FLASH_ALGO, erased_byte_value=0xFF, erase_all_weight=0.020,
                    erase_sector_weight=0.020, program_page_weight=0.027),
        RamRegion(start=0x20000000, length=0x2000),
    )

    def __init__(self, session):
        super().__init__(session, self.MEMORY_MAP)

    def post_connect_hook(self):
        self.write_memory(DBGMCU_CR, DBGMCU_CR_VALUE)
