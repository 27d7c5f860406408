"""Run the firmware a simulated board holds, for a bounded number of instructions.

The debug-port simulator does not execute code from flash (after ``reset run``
the core just reports "running"). This module does, separately, so that one can
see what was flashed actually runs: it boots the Cortex-M3 from the vector
table in the board's flash, with flash and SRAM as memory, the simulator's RCC
model (:mod:`.rcc`: oscillator start-up, PLL lock, clock switching), AFIO and the
GPIO ports as plain registers, and records every change of the STM32VLDiscovery's
LED pins (PC8 blue, PC9 green). Time is core time: 1.5 cycles per 16-bit unit of
code at the HCLK the firmware configured (8 MHz HSI after reset), as in
:mod:`.timing`.

What is not modeled stops the run with a message rather than pretending:
interrupts and exceptions (SysTick, a HardFault), and peripherals other than
RCC, AFIO, GPIOA-E, FPEC and the private peripheral bus. NuttX, which sets up
interrupts and timers, therefore runs until it first needs one; a bare-metal
busy-wait blinky runs for as long as it is given.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from unicorn import Uc, UcError, UC_ARCH_ARM, UC_MODE_THUMB, UC_MODE_MCLASS, UC_HOOK_BLOCK, UC_HOOK_INTR
from unicorn import arm_const as A

from .board import BoardState, FLASH_BASE, FLASH_SIZE
from .rcc import ResetClockControl
from .timing import Timing

SRAM_BASE, SRAM_SIZE = 0x20000000, 0x2000
GPIOC = 0x40011000
ODR, BSRR, BRR = 0x0C, 0x10, 0x14
LEDS = {8: "PC8 (blue LED)", 9: "PC9 (green LED)"}
RCC_BASE = 0x40021000


@dataclass
class FirmwareRun:
    """What happened: LED changes as (seconds since reset, pin name, on), and why the run ended."""
    led_events: List[Tuple[float, str, bool]] = field(default_factory=list)
    instructions_budget: int = 0
    stopped: str = "instruction budget used up"
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [f"t={t:9.6f} s  {name} {'on' if on else 'off'}" for t, name, on in self.led_events]
        lines.append(f"stopped after {self.seconds:.6f} s of core time: {self.stopped}")
        return "\n".join(lines)


class _Clock:
    """What the RCC model needs from a chip: the time, the timing constants, counters."""

    def __init__(self, timing: Timing):
        self.now = 0.0
        self.timing = timing
        self.counters = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


class _Peripherals:
    """The RCC model; AFIO, GPIOA-E and the FPEC as storage; GPIOC's ODR changes are recorded."""

    BLOCKS = [(0x40010000, 0x1C00), (RCC_BASE, 0x400), (0x40022000, 0x400)]

    def __init__(self, run: FirmwareRun, clock: _Clock, rcc: ResetClockControl):
        self.regs = {}
        self.odr = 0
        self.run = run
        self.clock = clock
        self.rcc = rcc

    def decoded(self, address: int) -> bool:
        return any(base <= address < base + size for base, size in self.BLOCKS)

    def read(self, address: int) -> int:
        if address == GPIOC + ODR:
            return self.odr
        if RCC_BASE <= address < RCC_BASE + 0x400:
            return self.rcc.read(address - RCC_BASE)
        return self.regs.get(address, 0)

    def write(self, address: int, value: int) -> None:
        if address == GPIOC + BSRR:
            self._set_odr((self.odr | (value & 0xFFFF)) & ~(value >> 16))
        elif address == GPIOC + BRR:
            self._set_odr(self.odr & ~(value & 0xFFFF))
        elif address == GPIOC + ODR:
            self._set_odr(value & 0xFFFF)
        elif RCC_BASE <= address < RCC_BASE + 0x400:
            self.rcc.write(address - RCC_BASE, value)
        else:
            self.regs[address] = value

    def _set_odr(self, new: int) -> None:
        changed = self.odr ^ new
        self.odr = new
        for pin, name in LEDS.items():
            if changed >> pin & 1:
                self.run.led_events.append((self.clock.now, name, bool(new >> pin & 1)))


def run_firmware(board_id: str, max_instructions: int = 5_000_000, max_led_events: Optional[int] = None) -> FirmwareRun:
    """Boot the board's firmware and run it for at most ``max_instructions`` instructions."""
    board = BoardState(board_id)
    flash = board.read_flash()
    run = FirmwareRun(instructions_budget=max_instructions)
    clock = _Clock(Timing.for_board(board))
    rcc = ResetClockControl(clock)
    periph = _Peripherals(run, clock, rcc)
    ppb = {}
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    try:
        uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_M3)
    except (AttributeError, UcError):
        pass
    for base in (0, FLASH_BASE):
        uc.mem_map(base, FLASH_SIZE)
        uc.mem_write(base, flash)
    uc.mem_map(SRAM_BASE, SRAM_SIZE)
    stop = []

    def fail(message: str) -> None:
        stop.append(message)
        uc.emu_stop()

    def mmio_read(uc_, offset, size, base):
        address = base + offset
        if base == 0x40000000 and periph.decoded(address):
            word = periph.read(address & ~3)
            return (word >> ((address & 3) * 8)) & ((1 << (8 * size)) - 1)
        if base == 0xE0000000:
            return ppb.get(address, 0)
        fail(f"read of 0x{address:08x}: a peripheral the simulator does not model")
        return 0

    def mmio_write(uc_, offset, size, value, base):
        address = base + offset
        if base == 0x40000000 and periph.decoded(address):
            periph.write(address & ~3, value)
            if max_led_events is not None and len(run.led_events) >= max_led_events:
                fail(f"{max_led_events} LED changes seen")
        elif base == 0xE0000000:
            ppb[address] = value
        else:
            fail(f"write of 0x{address:08x}: a peripheral the simulator does not model")

    uc.mmio_map(0x40000000, 0x30000, mmio_read, 0x40000000, mmio_write, 0x40000000)
    uc.mmio_map(0xE0000000, 0x100000, mmio_read, 0xE0000000, mmio_write, 0xE0000000)

    def on_block(uc_, address, size, user_data):
        clock.now += size // 2 * rcc.s_per_code_halfword
        if clock.now >= rcc.next_change_at:
            rcc.advance()

    def on_interrupt(uc_, intno, user_data):
        fail(f"exception {intno} at pc=0x{uc_.reg_read(A.UC_ARM_REG_PC):08x} (exceptions are not modeled)")

    uc.hook_add(UC_HOOK_BLOCK, on_block)
    uc.hook_add(UC_HOOK_INTR, on_interrupt)
    sp = int.from_bytes(flash[0:4], "little")
    pc = int.from_bytes(flash[4:8], "little")
    if pc == 0xFFFFFFFF or not pc & 1:
        run.stopped = "no firmware: the vector table is erased or invalid"
        return run
    uc.reg_write(A.UC_ARM_REG_MSP, sp)
    try:
        uc.emu_start(pc, 0xFFFFFFFF, count=max_instructions)
    except UcError as err:
        stop.append(f"{err} at pc=0x{uc.reg_read(A.UC_ARM_REG_PC):08x}")
    if stop:
        run.stopped = stop[0]
    run.seconds = clock.now
    return run
