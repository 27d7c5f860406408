"""The simulated STM32F100RB: memory map, debug registers, resets and the device clock.

The chip is what sits behind the MEM-AP: :meth:`Chip.bus_read` and
:meth:`Chip.bus_write` are the AHB, used by the debug port and by the core
alike. Its parts:

- main flash (the board's ``flash.bin``, memory-mapped so every change is on
  disk at once) at 0x08000000 and aliased at 0 (boot from flash), programmed
  only through the FPEC (:mod:`.fpec`);
- system memory with the flash size register (0x1FFFF7E0) and the 96-bit unique
  id (0x1FFFF7E8), and the option bytes at 0x1FFFF800;
- 8 KiB SRAM (held by the core's Unicorn instance);
- the RCC (:mod:`.rcc`: oscillators, PLL, clock switching, the AHB prescaler,
  peripheral clock enables) and the CRC calculation unit (:mod:`.crc`);
- the other peripherals a flash algorithm and a firmware's start-up touch
  (AFIO, GPIOA-E) as plain registers;
- the private peripheral bus: SCS (CPUID, AIRCR, DFSR, DHCSR, DCRSR, DCRDR,
  DEMCR), DWT (4 comparators), FPB (6 code comparators), ITM, TPIU, ETM,
  DBGMCU (IDCODE, CR) and the ROM table, with CoreSight component ids.

Anything else is not decoded and answers with a bus fault (the debug port
answers FAULT), as on the real part. Bit-band aliases are not modeled.
"""

import mmap
from typing import Optional

from .board import BoardState, FLASH_BASE, FLASH_SIZE, PAGE_SIZE
from .core import Core
from .crc import CrcUnit
from .fpec import BusFault, FlashController, PowerLost, OPTION_BYTES_BASE
from .rcc import ResetClockControl
from .timing import Timing

SRAM_BASE, SRAM_SIZE = 0x20000000, 8 * 1024
SYSMEM_BASE, SYSMEM_SIZE = 0x1FFFF000, 0x800
FLASH_SIZE_REG = 0x1FFFF7E0
UNIQUE_ID_REG = 0x1FFFF7E8
FPEC_BASE = 0x40022000
RCC_BASE = 0x40021000
CRC_BASE = 0x40023000

# System control space and debug registers (ARMv7-M ARM, C1.6).
CPUID, ICSR, VTOR, AIRCR, CPACR = 0xE000ED00, 0xE000ED04, 0xE000ED08, 0xE000ED0C, 0xE000ED88
DFSR, DHCSR, DCRSR, DCRDR, DEMCR = 0xE000ED30, 0xE000EDF0, 0xE000EDF4, 0xE000EDF8, 0xE000EDFC
DBGMCU_IDCODE, DBGMCU_CR = 0xE0042000, 0xE0042004
DWT_CTRL, FP_CTRL = 0xE0001000, 0xE0002000
ROM_TABLE = 0xE00FF000

DBGKEY = 0xA05F
C_DEBUGEN, C_HALT, C_STEP, C_MASKINTS = 1, 2, 4, 8
S_REGRDY, S_HALT, S_SLEEP, S_LOCKUP = 1 << 16, 1 << 17, 1 << 18, 1 << 19
S_RETIRE_ST, S_RESET_ST = 1 << 24, 1 << 25
DFSR_HALTED, DFSR_BKPT, DFSR_DWTTRAP, DFSR_VCATCH, DFSR_EXTERNAL = 1, 2, 4, 8, 16
DEMCR_VC_CORERESET, DEMCR_VC_HARDERR = 1 << 0, 1 << 10
AIRCR_VECTKEY = 0x05FA
AIRCR_VECTRESET, AIRCR_SYSRESETREQ = 1 << 0, 1 << 2

#: CoreSight components on the PPB: base -> (ARM part number, component class).
COMPONENTS = {
    0xE000E000: (0x000, 0xE),   # SCS (Cortex-M3)
    0xE0001000: (0x002, 0xE),   # DWT
    0xE0002000: (0x003, 0xE),   # FPB
    0xE0000000: (0x001, 0xE),   # ITM
    0xE0040000: (0x923, 0x9),   # TPIU
    0xE0041000: (0x924, 0x9),   # ETM
    ROM_TABLE: (0x4C3, 0x1),    # Cortex-M3 ROM table
}
ROM_ENTRIES = (0xE000E000, 0xE0001000, 0xE0002000, 0xE0000000, 0xE0040000, 0xE0041000)
ARM_JEP106 = 0x3B  # with continuation code 4

#: Peripheral register blocks (base, size, name) kept as plain read/write storage.
PERIPHERALS = (
    (0x40010000, 0x400, "AFIO"),
    (0x40010800, 0x400, "GPIOA"), (0x40010C00, 0x400, "GPIOB"), (0x40011000, 0x400, "GPIOC"),
    (0x40011400, 0x400, "GPIOD"), (0x40011800, 0x400, "GPIOE"),
)
#: Reset values of the plain peripheral registers that are not zero (RM0041).
PERIPHERAL_RESET = {
    **{base + off: 0x44444444 for base in (0x40010800, 0x40010C00, 0x40011000, 0x40011400, 0x40011800)
       for off in (0, 4)},   # GPIOx_CRL/CRH: floating inputs
}

#: The longest run of the core on one resume; code still running after it is
#: treated as free-running firmware (the core reports "running").
MAX_INSTRUCTIONS_PER_RESUME = 20_000_000


def _component_id_register(offset: int, part: int, cls: int) -> Optional[int]:
    ids = {
        0xFD0: 0x04,                                        # PIDR4: 4 KiB, JEP106 continuation 4
        0xFE0: part & 0xFF,                                 # PIDR0
        0xFE4: ((part >> 8) & 0xF) | ((ARM_JEP106 & 0xF) << 4),
        0xFE8: ((ARM_JEP106 >> 4) & 0x7) | 0x8 | (0x1 << 4),
        0xFEC: 0,
        0xFF0: 0x0D, 0xFF4: cls << 4, 0xFF8: 0x05, 0xFFC: 0xB1,
    }
    return ids.get(offset)


class PowerState:
    ON, OFF = "on", "off"


class Chip:
    """One STM32F100RB, bound to a board directory for the life of a probe session."""

    def __init__(self, board: BoardState):
        self.board = board
        self.identity = board.identity()
        self.timing = Timing.for_board(board)
        self.page_size = PAGE_SIZE
        self.sram_size = SRAM_SIZE
        self._flash_file = open(board.flash_path, "r+b")
        self.flash = mmap.mmap(self._flash_file.fileno(), FLASH_SIZE)
        self.option_bytes = board.read_option_bytes()
        self.now = 0.0
        self.counters = {k: 0 for k in ("resets", "pages_erased", "mass_erases", "halfwords_programmed",
                                        "crc_words", "crc_accesses_clock_off", "clock_out_of_spec",
                                        "flash_ops_without_hsi")}
        self.halfwords_this_session = 0
        #: Injected faults of this session (see board.FAULTS); the probe fills it at open.
        self.board_faults = {}
        self.last_fault = None
        #: Called after each run of the core (the probe saves the counters then).
        self.on_core_stopped = None
        self.power = PowerState.ON
        self.rcc = ResetClockControl(self)
        self.crc = CrcUnit(self)
        #: Device time of the core's last run (resume to halt), in seconds.
        self.last_run_s = 0.0
        self.core = Core(self, SRAM_SIZE)
        self.fpec = FlashController(self)
        self.sysmem = self._system_memory()
        self.ppb = {}
        self.peripherals = dict(PERIPHERAL_RESET)
        self.dbgmcu_cr = 0
        self.demcr = 0
        self.dhcsr_ctrl = 0
        self.dfsr = 0
        self.dcrdr = 0
        self.prigroup = 0
        self.halted = False
        self.lockup = False
        self.reset_sticky = False
        self.retire_sticky = False
        self.core_busy_until = 0.0
        self._reset_core(count=False)

    def close(self) -> None:
        self.flash.flush()
        self.flash.close()
        self._flash_file.close()

    # -- helpers --------------------------------------------------------------------------
    @property
    def hclk_hz(self) -> float:
        """The AHB clock the core runs at now (Hz), from the RCC's configuration."""
        self.rcc.advance()
        return self.rcc.hclk_hz

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def write_option_bytes(self, data: bytes) -> None:
        self.option_bytes = bytes(data)
        self.board.write_option_bytes(self.option_bytes)

    def before_halfword_program(self) -> None:
        limit = self.board_faults.get("power_loss_after_halfwords")
        if limit is not None and self.halfwords_this_session >= limit:
            self.lose_power()
            raise PowerLost()
        self.halfwords_this_session += 1

    def lose_power(self) -> None:
        self.power = PowerState.OFF
        self.flash.flush()
        self.board.clear_fault("power_loss_after_halfwords")

    def _system_memory(self) -> bytearray:
        mem = bytearray(SYSMEM_SIZE)
        off = FLASH_SIZE_REG - SYSMEM_BASE
        mem[off:off + 2] = int(self.identity["flash_kb"]).to_bytes(2, "little")
        mem[off + 2:off + 4] = b"\xff\xff"
        uid = bytes.fromhex(self.identity["unique_id"])[:12].ljust(12, b"\0")
        off = UNIQUE_ID_REG - SYSMEM_BASE
        mem[off:off + 12] = uid
        return mem

    def flash_offset(self, address: int) -> Optional[int]:
        if FLASH_BASE <= address < FLASH_BASE + FLASH_SIZE:
            return address - FLASH_BASE
        if 0 <= address < FLASH_SIZE:
            return address
        return None

    # -- the bus --------------------------------------------------------------------------
    def bus_read(self, address: int, size: int, debug: bool = False) -> int:
        """An AHB read of ``size`` bytes (1, 2 or 4) at ``address``; BusFault if not decoded.

        ``debug``: the access comes from the debug port (AHB-AP), not the core.
        """
        if self.power != PowerState.ON:
            raise PowerLost()
        offset = self.flash_offset(address)
        if offset is not None:
            if self.fpec.rdp_active:
                raise BusFault(f"main flash is read-protected (0x{address:08x})")
            return int.from_bytes(self.flash[offset:offset + size], "little")
        if SRAM_BASE <= address < SRAM_BASE + SRAM_SIZE:
            return int.from_bytes(self.core.sram_read(address, size), "little")
        if SYSMEM_BASE <= address < SYSMEM_BASE + SYSMEM_SIZE:
            off = address - SYSMEM_BASE
            return int.from_bytes(self.sysmem[off:off + size], "little")
        if OPTION_BYTES_BASE <= address < OPTION_BYTES_BASE + 16:
            off = address - OPTION_BYTES_BASE
            return int.from_bytes(self.option_bytes[off:off + size], "little")
        if CRC_BASE <= address < CRC_BASE + 0x400:
            return self.crc.read(address - CRC_BASE, size, debug=debug)
        word = self._read_register(address & ~3)
        shift = (address & 3) * 8
        return (word >> shift) & ((1 << (8 * size)) - 1)

    def bus_write(self, address: int, size: int, value: int, debug: bool = False) -> None:
        """An AHB write of ``size`` bytes; BusFault if not decoded or refused. ``debug`` as for reads."""
        if self.power != PowerState.ON:
            raise PowerLost()
        value &= (1 << (8 * size)) - 1
        offset = self.flash_offset(address)
        if offset is not None:
            if self.fpec.rdp_active:
                raise BusFault(f"main flash is read-protected (0x{address:08x})")
            self.fpec.flash_write(address, size, value)
            return
        if SRAM_BASE <= address < SRAM_BASE + SRAM_SIZE:
            self.core.sram_write(address, value.to_bytes(size, "little"))
            return
        if OPTION_BYTES_BASE <= address < OPTION_BYTES_BASE + 16:
            self.fpec.option_write(address, size, value)
            return
        if SYSMEM_BASE <= address < SYSMEM_BASE + SYSMEM_SIZE:
            raise BusFault(f"system memory is read-only (0x{address:08x})")
        if CRC_BASE <= address < CRC_BASE + 0x400:
            self.crc.write(address - CRC_BASE, size, value, debug=debug)
            return
        base = address & ~3
        if size != 4:
            shift = (address & 3) * 8
            mask = ((1 << (8 * size)) - 1) << shift
            value = (self._peek_register(base) & ~mask) | ((value << shift) & mask)
        self._write_register(base, value)

    def _peek_register(self, address: int) -> int:
        """The stored value behind a register, for sub-word writes (the RCC's read only carries out
        a pending clock switch, which its write does first anyway)."""
        if address in (DHCSR,):
            return self.dhcsr_ctrl
        if RCC_BASE <= address < RCC_BASE + 0x400:
            return self.rcc.read(address - RCC_BASE)
        return self.ppb.get(address, self.peripherals.get(address, 0))

    def _decode_fault(self, address: int):
        return BusFault(f"no memory or register at 0x{address:08x}")

    def _read_register(self, address: int) -> int:
        if FPEC_BASE <= address < FPEC_BASE + 0x400:
            return self.fpec.read(address - FPEC_BASE)
        if RCC_BASE <= address < RCC_BASE + 0x400:
            return self.rcc.read(address - RCC_BASE)
        for base, size, _name in PERIPHERALS:
            if base <= address < base + size:
                return self.peripherals.get(address, 0)
        if 0xE0000000 <= address < 0xE0100000:
            return self._read_ppb(address)
        raise self._decode_fault(address)

    def _write_register(self, address: int, value: int) -> None:
        if FPEC_BASE <= address < FPEC_BASE + 0x400:
            self.fpec.write(address - FPEC_BASE, value)
            return
        if RCC_BASE <= address < RCC_BASE + 0x400:
            self.rcc.write(address - RCC_BASE, value)
            return
        for base, size, _name in PERIPHERALS:
            if base <= address < base + size:
                self.peripherals[address] = value
                return
        if 0xE0000000 <= address < 0xE0100000:
            self._write_ppb(address, value)
            return
        raise self._decode_fault(address)

    # -- private peripheral bus ----------------------------------------------------------
    def _component_base(self, address: int) -> Optional[int]:
        base = address & ~0xFFF
        return base if base in COMPONENTS or base == (DBGMCU_IDCODE & ~0xFFF) else None

    def _read_ppb(self, address: int) -> int:
        base = self._component_base(address)
        if base is None:
            raise self._decode_fault(address)
        if base in COMPONENTS and (address & 0xFFF) >= 0xFD0:
            part, cls = COMPONENTS[base]
            value = _component_id_register(address & 0xFFF, part, cls)
            return 0 if value is None else value
        if address == DHCSR:
            return self._read_dhcsr()
        if address == DCRDR:
            return self.dcrdr
        if address == DEMCR:
            return self.demcr
        if address == DFSR:
            return self.dfsr
        if address == CPUID:
            return self.identity["cpuid"]
        if address == AIRCR:
            return (0xFA05 << 16) | (self.prigroup << 8)
        if address == CPACR or 0xE000EF30 <= address < 0xE000EF50:
            return 0  # no FPU on the Cortex-M3: CPACR and the FP registers are RAZ/WI
        if address == DBGMCU_IDCODE:
            return self.identity["idcode"]
        if address == DBGMCU_CR:
            return self.dbgmcu_cr
        if address == DWT_CTRL:
            return 0x40000000 | (self.ppb.get(address, 0) & 0x0FFFFFFF)  # NUMCOMP = 4
        if address == FP_CTRL:
            return 0x260 | (self.ppb.get(address, 0) & 1)  # NUM_CODE = 6, NUM_LIT = 2
        if base == ROM_TABLE:
            index = (address - ROM_TABLE) // 4
            if index < len(ROM_ENTRIES):
                return ((ROM_ENTRIES[index] - ROM_TABLE) & 0xFFFFF000 | 0x3) & 0xFFFFFFFF
            if address == ROM_TABLE + 0xFCC:
                return 1  # MEMTYPE: system memory present
            return 0
        return self.ppb.get(address, 0)

    def _write_ppb(self, address: int, value: int) -> None:
        base = self._component_base(address)
        if base is None:
            raise self._decode_fault(address)
        if address == DHCSR:
            self._write_dhcsr(value)
        elif address == DCRSR:
            self._write_dcrsr(value)
        elif address == DCRDR:
            self.dcrdr = value
        elif address == DEMCR:
            self.demcr = value & 0x010F07F1
        elif address == DFSR:
            self.dfsr &= ~value
        elif address == AIRCR:
            self._write_aircr(value)
        elif address == DBGMCU_CR:
            self.dbgmcu_cr = value
        elif address in (CPUID, DBGMCU_IDCODE, CPACR) or base == ROM_TABLE or (address & 0xFFF) >= 0xFD0:
            pass  # read-only
        elif address == FP_CTRL:
            if value & 2:  # KEY must be set for the write to take effect
                self.ppb[address] = value & 1
        else:
            self.ppb[address] = value

    # -- core debug ------------------------------------------------------------------------
    def _settle_core(self) -> None:
        """A poll of the core's state while it works skips ahead to when it is done."""
        if self.core_busy_until > self.now:
            self.now = self.core_busy_until

    def _read_dhcsr(self) -> int:
        self._settle_core()
        value = self.dhcsr_ctrl | S_REGRDY
        if self.halted:
            value |= S_HALT
        if self.lockup:
            value |= S_LOCKUP
        if self.reset_sticky:
            value |= S_RESET_ST
        if self.retire_sticky:
            value |= S_RETIRE_ST
        self.reset_sticky = False
        self.retire_sticky = False
        return value

    def _write_dhcsr(self, value: int) -> None:
        if (value >> 16) != DBGKEY:
            return
        self._settle_core()
        ctrl = value & 0x2F
        self.dhcsr_ctrl = ctrl
        if not ctrl & C_DEBUGEN:
            if self.halted:
                self._resume()
            return
        if ctrl & C_HALT:
            if not self.halted:
                self._halt(DFSR_HALTED)
        elif self.halted:
            if ctrl & C_STEP:
                self._step()
            else:
                self._resume()

    def _write_dcrsr(self, value: int) -> None:
        regsel = value & 0x7F
        if value & (1 << 16):
            self.core.write_reg(regsel, self.dcrdr)
        else:
            self.dcrdr = self.core.read_reg(regsel)

    def _write_aircr(self, value: int) -> None:
        if (value >> 16) != AIRCR_VECTKEY:
            return
        self.prigroup = (value >> 8) & 7
        if value & AIRCR_SYSRESETREQ:
            self.system_reset()
        elif value & AIRCR_VECTRESET:
            self._reset_core()

    def _halt(self, reason: int) -> None:
        self.halted = True
        self.lockup = False
        self.dfsr |= reason

    def _resume(self) -> None:
        self.halted = False
        self.retire_sticky = True
        if self.core.runs_code_at(self.core.pc):
            self._run_core(MAX_INSTRUCTIONS_PER_RESUME)
        # Otherwise the firmware runs from flash: the simulator reports "running".

    def _step(self) -> None:
        self.halted = False
        self.retire_sticky = True
        if self.core.runs_code_at(self.core.pc):
            self._run_core(1)
        if not self.halted and not self.lockup:
            self._halt(DFSR_HALTED)

    def _run_core(self, budget: int) -> None:
        """Run the core in its own timeline; the host sees it busy until that time."""
        start = self.now
        reason, detail = self.core.run(budget)
        self.core_busy_until = self.now
        self.last_run_s = self.now - start
        self.now = start
        if self.on_core_stopped is not None:
            self.on_core_stopped()
        if reason == "bkpt":
            self._halt(DFSR_BKPT)
        elif reason == "fault":
            self.last_fault = detail
            if self.demcr & DEMCR_VC_HARDERR and self.dhcsr_ctrl & C_DEBUGEN:
                self._halt(DFSR_VCATCH)
            else:
                self.lockup = True
        elif reason == "power":
            pass  # the chip is off; every transfer fails from now on
        elif budget == 1:
            self._halt(DFSR_HALTED)
        # "limit": still running (free-running code); stays not halted.

    # -- resets -----------------------------------------------------------------------------
    def _reset_core(self, count: bool = True) -> None:
        sp = int.from_bytes(self.flash[0:4], "little") if not self.fpec.rdp_active else 0xFFFFFFFF
        pc = int.from_bytes(self.flash[4:8], "little") if not self.fpec.rdp_active else 0xFFFFFFFF
        self.core.reset(sp, pc)
        self.dfsr = 0
        self.lockup = False
        self.core_busy_until = self.now
        self.reset_sticky = True
        if count:
            self.count("resets")
        if self.demcr & DEMCR_VC_CORERESET and self.dhcsr_ctrl & C_DEBUGEN:
            self._halt(DFSR_VCATCH)
        else:
            self.halted = False
            if pc == 0xFFFFFFFF or not pc & 1:
                self.lockup = True  # an erased vector table: the core cannot start

    def system_reset(self) -> None:
        """SYSRESETREQ or nRST: core, FPEC, RCC (back to the 8 MHz HSI), CRC unit and peripherals
        reset; debug registers, DBGMCU and SRAM keep their state."""
        self.fpec.reset()
        self.rcc.reset()
        self.crc.reset()
        self.peripherals = dict(PERIPHERAL_RESET)
        self._reset_core()
