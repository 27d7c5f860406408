"""The Cortex-M3 core of the simulated chip, executed by Unicorn (Thumb, M-profile).

Only code in SRAM is executed: that is where pyOCD loads its flash algorithm
and its CRC analyzer. SRAM is Unicorn RAM; every other region (flash, system
memory, option bytes, peripherals, the private peripheral bus) is mapped as MMIO
whose accesses go through the chip's bus, so the core and the debug port see one
memory and the FPEC sees the core's half-word writes. An access to an address
the chip does not decode stops the run as a bus fault.

A BKPT instruction stops the run (the flash algorithm returns to a BKPT at its
load address). Code running outside SRAM (the firmware after ``reset run``) is
not executed: the core just reports that it is running.
"""

from unicorn import Uc, UcError, UC_ARCH_ARM, UC_MODE_THUMB, UC_MODE_MCLASS, UC_HOOK_INTR, UC_HOOK_BLOCK
from unicorn import arm_const as A

SRAM_BASE = 0x20000000

#: Mapped for the core as MMIO (start, size); 4 KiB aligned as Unicorn requires.
MMIO_WINDOWS = (
    (0x00000000, 0x20000),      # flash boot alias
    (0x08000000, 0x20000),      # main flash
    (0x1FFFF000, 0x1000),       # system memory, option bytes
    (0x40000000, 0x30000),      # APB1/APB2/AHB peripherals
    (0xE0000000, 0x100000),     # private peripheral bus
)

#: DCRSR REGSEL -> Unicorn register (ARMv7-M ARM, C1.6.3).
_REGSEL = {i: getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)}
_REGSEL.update({13: A.UC_ARM_REG_SP, 14: A.UC_ARM_REG_LR, 15: A.UC_ARM_REG_PC, 16: A.UC_ARM_REG_XPSR,
                17: A.UC_ARM_REG_MSP, 18: A.UC_ARM_REG_PSP})

EXCP_BKPT = 7
XPSR_T = 1 << 24


class StopRun(Exception):
    """Raised inside a bus access to stop the core (bus fault, power loss)."""


class Core:
    """Register file and execution of the chip's Cortex-M3."""

    def __init__(self, chip, sram_size: int):
        self.chip = chip
        self.uc = uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        try:
            uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M3)
        except (AttributeError, UcError):  # older Unicorn: the default M-class model is fine
            pass
        uc.mem_map(SRAM_BASE, sram_size)
        for start, size in MMIO_WINDOWS:
            uc.mmio_map(start, size, self._mmio_read, start, self._mmio_write, start)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        self._stop = None
        self._block_start = 0
        self._block_size = 0
        self._block_charged = 0

    # -- memory (SRAM lives in Unicorn) ---------------------------------------------
    def sram_read(self, address: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(address, size))

    def sram_write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, bytes(data))
        # Unicorn keeps code it has translated; without this, code loaded over code that
        # already ran (a second routine at the same address) would run the old instructions.
        self.uc.ctl_remove_cache(address, address + len(data))

    # -- registers -------------------------------------------------------------------
    def read_reg(self, regsel: int) -> int:
        if regsel in _REGSEL:
            value = self.uc.reg_read(_REGSEL[regsel])
            if regsel == 15:
                value &= ~1
            return value & 0xFFFFFFFF
        if regsel == 20:
            return ((self.uc.reg_read(A.UC_ARM_REG_CONTROL) & 0xFF) << 24
                    | (self.uc.reg_read(A.UC_ARM_REG_FAULTMASK) & 1) << 16
                    | (self.uc.reg_read(A.UC_ARM_REG_BASEPRI) & 0xFF) << 8
                    | (self.uc.reg_read(A.UC_ARM_REG_PRIMASK) & 1))
        return 0

    def write_reg(self, regsel: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if regsel in _REGSEL:
            if regsel == 15:
                value &= ~1
            self.uc.reg_write(_REGSEL[regsel], value)
        elif regsel == 20:
            self.uc.reg_write(A.UC_ARM_REG_PRIMASK, value & 1)
            self.uc.reg_write(A.UC_ARM_REG_BASEPRI, (value >> 8) & 0xFF)
            self.uc.reg_write(A.UC_ARM_REG_FAULTMASK, (value >> 16) & 1)
            self.uc.reg_write(A.UC_ARM_REG_CONTROL, (value >> 24) & 0x3)

    @property
    def pc(self) -> int:
        return self.read_reg(15)

    def reset(self, sp: int, pc: int) -> None:
        """Core reset: registers to their reset values, SP and PC from the vector table."""
        for i in range(13):
            self.uc.reg_write(_REGSEL[i], 0)
        self.write_reg(20, 0)
        self.uc.reg_write(A.UC_ARM_REG_PSP, 0)
        self.uc.reg_write(A.UC_ARM_REG_MSP, sp & 0xFFFFFFFC)
        self.uc.reg_write(A.UC_ARM_REG_LR, 0xFFFFFFFF)
        self.uc.reg_write(A.UC_ARM_REG_PC, pc & ~1)
        self.uc.reg_write(A.UC_ARM_REG_XPSR, XPSR_T if pc & 1 else 0)

    # -- execution ------------------------------------------------------------------------
    def runs_code_at(self, address: int) -> bool:
        return SRAM_BASE <= address < SRAM_BASE + self.chip.sram_size

    def run(self, max_instructions: int):
        """Execute from PC until BKPT, a fault, or the instruction budget.

        Returns ``("bkpt", None)``, ``("fault", message)``, ``("power", None)`` or
        ``("limit", None)``. Charges code execution time to the chip's clock.
        """
        self._stop = None
        self._block_start = self._block_size = self._block_charged = 0
        pc = self.pc
        try:
            self.uc.emu_start(pc | 1, 0xFFFFFFFF, count=max_instructions)
        except UcError as err:
            if self._stop is None:
                self._stop = ("fault", f"{err} at pc=0x{self.pc:08x}")
        finally:
            self._charge(self._block_size)
        return self._stop or ("limit", None)

    def step(self):
        return self.run(1)

    # -- hooks --------------------------------------------------------------------
    def _on_interrupt(self, uc, intno, user_data):
        if intno == EXCP_BKPT:
            self._stop = ("bkpt", None)
        else:
            self._stop = ("fault", f"exception {intno} at pc=0x{self.pc:08x}")
        uc.emu_stop()

    # Code time is charged as the code runs, at the current HCLK (see rcc.py): a
    # block's instructions up to a bus access before that access (so a flash
    # operation starts when the core gets to it), the rest of the block when the
    # next block starts. Instructions after the access that starts a flash
    # operation then overlap with it, as on the real core.
    def _charge(self, upto: int) -> None:
        if upto > self._block_charged:
            chip = self.chip
            chip.now += (upto - self._block_charged) / 2 * chip.rcc.s_per_code_halfword
            self._block_charged = upto
            if chip.now >= chip.rcc.next_change_at:
                chip.rcc.advance()  # a requested clock switch happens while the code runs

    def _charge_to_access(self) -> None:
        pc = self.uc.reg_read(A.UC_ARM_REG_PC) & ~1
        self._charge(min(self._block_size, max(0, pc - self._block_start) + 2))

    def _on_block(self, uc, address, size, user_data):
        self._charge(self._block_size)
        self._block_start, self._block_size, self._block_charged = address, size, 0

    def _mmio_read(self, uc, offset, size, base):
        from .fpec import BusFault, PowerLost
        self._charge_to_access()
        try:
            return self.chip.bus_read(base + offset, size)
        except BusFault as err:
            self._stop = ("fault", f"bus fault reading 0x{base + offset:08x}: {err}")
        except PowerLost:
            self._stop = ("power", None)
        uc.emu_stop()
        return 0

    def _mmio_write(self, uc, offset, size, value, base):
        from .fpec import BusFault, PowerLost
        self._charge_to_access()
        try:
            self.chip.bus_write(base + offset, size, value)
            return
        except BusFault as err:
            self._stop = ("fault", f"bus fault writing 0x{base + offset:08x}: {err}")
        except PowerLost:
            self._stop = ("power", None)
        uc.emu_stop()
