"""pyOCD target definition for the STM32F100RB (STM32VLDiscovery).

Memory: 128 KiB flash at 0x08000000 in 1 KiB pages, 8 KiB SRAM at 0x20000000.

Flash timings (the region's weights, which the tool's flash plan takes as the
datasheet's): STM32F100xB datasheet DS6517, "Flash memory characteristics":
half-word programming tPROG 40 / 52.5 / 70 us (min / typ / max), page erase
tERASE 20-40 ms, mass erase tME 20-40 ms. The plan uses the typical programming
time and the minimum erase times, as the simulated board does.

Flash algorithm: our own (``flash_algo/stm32f1_fpec.S``), for the FPEC that
PM0063 (value line) and PM0075 describe. Its CMSIS entries serve pyOCD's own
flash code; its ``Exec`` entry runs the tool's command tables (erase, program,
CRC-unit checks; see :mod:`.flash_algo.commands`), declared to the tool under
the ``scons_pyocd`` key of the algorithm's dict (pyOCD ignores keys it does not
know). RAM layout inside 8 KiB:

==============================  =========================================
algorithm code and its state    0x20000000-0x200003FF
stack                           0x20000400-0x200004FF (top 0x20000500)
pyOCD's page buffers            0x20000500, 0x20000900 (1 KiB each)
pyOCD's CRC analyzer            0x20000D00-0x200012FF
the tool's command tables       0x20000500-0x2000127F and 0x20001280-0x20001FFF
                                (overlapping pyOCD's areas, unused meanwhile)
==============================  =========================================
"""

from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion

from .flash_algo import stm32f1_fpec_blob as _blob

DBGMCU_CR = 0xE0042004
#: Debug in sleep/stop/standby; watchdogs and timers stopped while the core is halted.
DBGMCU_CR_VALUE = 0x7E3FFF07

LOAD_ADDRESS = 0x20000000
CODE_END = 0x20000400
STACK_TOP = 0x20000500
PAGE_BUFFERS = [0x20000500, 0x20000900]
RAM_END = 0x20002000

#: DS6517, "Flash memory characteristics".
HALFWORD_PROGRAM_S = 52.5e-6      # tPROG typical
PAGE_ERASE_S = 20e-3              # tERASE minimum
MASS_ERASE_S = 20e-3              # tME minimum
PAGE_SIZE = 0x400

#: What the tool's executor needs to know of the algorithm: ExecA/ExecB and the RAM halves they
#: read their tables from, how much of the blob they need, the core clock the CLOCK command
#: raises SYSCLK to (24 MHz, the F100's maximum). The cycles per 32-bit word are the loops of
#: stm32f1_fpec.S at 1.5 cycles per 16-bit unit of Thumb code, plus the CRC unit's 4 AHB cycles
#: per word (RM0041 section 3): CRC 9 units per 6 words, ZCRC 7 per word, BLANK 9 per 6 words
#: (no CRC unit).
EXTENSION = {
    "pc_exec": (LOAD_ADDRESS + _blob.ENTRY_OFFSETS["ExecA"], LOAD_ADDRESS + _blob.ENTRY_OFFSETS["ExecB"]),
    "halves": ((LOAD_ADDRESS + _blob.WORK_OFFSETS[0], _blob.WORK_OFFSETS[1] - _blob.WORK_OFFSETS[0]),
               (LOAD_ADDRESS + _blob.WORK_OFFSETS[1], RAM_END - LOAD_ADDRESS - _blob.WORK_OFFSETS[1])),
    "exec_words": _blob.EXEC_SIZE // 4,
    "extra_words": _blob.EXTRA_SIZE // 4,
    "clock_hz": 24_000_000,
    "crc_cycles_per_word": 9 * 1.5 / 6 + 4,
    "zcrc_cycles_per_word": 7 * 1.5 + 4,
    "blank_cycles_per_word": 9 * 1.5 / 6,
    #: FLASH_OBR and its RDPRT bit (RM0041): read protection, checked before the algorithm runs.
    "rdp_register": (0x4002201C, 0x2),
}

FLASH_ALGO = {
    "load_address": LOAD_ADDRESS,
    "instructions": list(_blob.INSTRUCTIONS),
    "pc_init": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["Init"],
    "pc_unInit": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["UnInit"],
    "pc_eraseAll": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["EraseChip"],
    "pc_erase_sector": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["EraseSector"],
    "pc_program_page": LOAD_ADDRESS + _blob.ENTRY_OFFSETS["ProgramPage"],
    "static_base": CODE_END,
    "begin_stack": STACK_TOP,
    # pyOCD 0.43 and later read page_buffers; earlier ones begin_data (the first buffer).
    "begin_data": PAGE_BUFFERS[0],
    "page_buffers": PAGE_BUFFERS,
    "min_program_length": 2,
    "analyzer_supported": True,
    "analyzer_address": 0x20000D00,
    "scons_pyocd": EXTENSION,
}
assert LOAD_ADDRESS + _blob.CODE_SIZE <= CODE_END, "the flash algorithm must fit below its stack"
assert LOAD_ADDRESS + _blob.WORK_OFFSETS[0] >= STACK_TOP, "the tables must not overlap the stack"


class STM32F100RB(CoreSightTarget):
    """STM32F100RB: Cortex-M3, 128 KiB flash (1 KiB pages), 8 KiB SRAM."""

    VENDOR = "STMicroelectronics"

    MEMORY_MAP = MemoryMap(
        # Weights (s), the datasheet's times: page and mass erase, one 1 KiB page programmed
        # (512 half-words).
        FlashRegion(start=0x08000000, length=0x20000, blocksize=PAGE_SIZE, is_boot_memory=True,
                    algo=FLASH_ALGO, erased_byte_value=0xFF, erase_all_weight=MASS_ERASE_S,
                    erase_sector_weight=PAGE_ERASE_S,
                    program_page_weight=PAGE_SIZE // 2 * HALFWORD_PROGRAM_S),
        RamRegion(start=0x20000000, length=0x2000),
    )

    def __init__(self, session):
        super().__init__(session, self.MEMORY_MAP)

    def post_connect_hook(self):
        self.write_memory(DBGMCU_CR, DBGMCU_CR_VALUE)
