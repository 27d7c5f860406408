"""The simulated STM32F100's CRC unit and RCC, at register level, per RM0041 and DS6517.

Registers are driven through the debug port (a real pyOCD session on the
simulated probe) and, where the core's own time matters, by Thumb code run on
the simulated Cortex-M3 (assembled with arm-none-eabi-gcc). Times asserted are
device time, never wall time.
"""

import subprocess
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from scons_pyocd import sim
from scons_pyocd.sim.board import BoardState, FLASH_BASE
from scons_pyocd.sim.crc import crc_words, rbit, zlib_crc32_from_unit

pytest.importorskip("pyocd")
from pyocd.core.helpers import ConnectHelper  # noqa: E402

sim.register()

RCC = 0x40021000
RCC_CR, RCC_CFGR, RCC_AHBENR, RCC_CFGR2 = RCC + 0x00, RCC + 0x04, RCC + 0x14, RCC + 0x2C
HSION, HSIRDY, HSEON, HSERDY, PLLON, PLLRDY = 1, 2, 1 << 16, 1 << 17, 1 << 24, 1 << 25
PLLSRC, PLLXTPRE = 1 << 16, 1 << 17
CRCEN = 1 << 6
CRC = 0x40023000
CRC_DR, CRC_IDR, CRC_CR = CRC, CRC + 4, CRC + 8
FPEC = 0x40022000
KEYR, SR, CR = FPEC + 0x04, FPEC + 0x0C, FPEC + 0x10
EOP = 0x20
SRAM = 0x20000000
#: A real F100 at 24 MHz from HSE / 2 x 6 reads these (REFERENCE.md).
CFGR_24MHZ, CFGR2_24MHZ = 0x0013000A, 0x00000001


def open_session(board_id="sim-clk"):
    BoardState.create(board_id, exist_ok=True)
    return ConnectHelper.session_with_chosen_probe(unique_id=board_id, target_override="stm32f100rb",
                                                   options={"frequency": 4_000_000})


@pytest.fixture
def session():
    with open_session() as s:
        s.target.halt()
        yield s


def poll(target, address, mask, limit=100_000):
    """Read ``address`` until ``mask`` is set; the number of reads it took (bounded: catches hangs)."""
    for n in range(limit):
        if target.read32(address) & mask:
            return n
    raise AssertionError(f"0x{address:08x} & 0x{mask:x} never set")


def pll_24mhz_from_hse(t):
    """The sequence firmware uses (RM0041 §6.2): HSE on, PREDIV1 /2, PLL x6 from PREDIV1, PLL on, SW = PLL."""
    t.write32(RCC_CR, t.read32(RCC_CR) | HSEON)
    poll(t, RCC_CR, HSERDY)
    t.write32(RCC_CFGR2, 1)
    t.write32(RCC_CFGR, PLLSRC | PLLXTPRE | (4 << 18))
    t.write32(RCC_CR, t.read32(RCC_CR) | PLLON)
    poll(t, RCC_CR, PLLRDY)
    t.write32(RCC_CFGR, t.read32(RCC_CFGR) | 2)


# -- the CRC arithmetic (pure) -------------------------------------------------------------------

def bitwise_crc(words, crc=0xFFFFFFFF):
    """RM0041's CRC written out bit by bit, independently of the table-driven model."""
    for word in words:
        crc ^= word
        for _ in range(32):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@pytest.mark.parametrize("words, expected", [
    ([0x00000000], 0xC704DD7B),          # one zero word from reset (REFERENCE.md)
    ([], 0xFFFFFFFF),
    ([0xFFFFFFFF], bitwise_crc([0xFFFFFFFF])),
    ([0x12345678, 0x9ABCDEF0], bitwise_crc([0x12345678, 0x9ABCDEF0])),
])
def test_crc_arithmetic_known_vectors(words, expected):
    assert crc_words(words) == expected


@settings(max_examples=300)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=16), st.integers(0, 0xFFFFFFFF))
def test_crc_arithmetic_matches_the_bitwise_definition(words, init):
    assert crc_words(words, init) == bitwise_crc(words, init)


@settings(max_examples=300)
@given(st.binary(max_size=256).map(lambda b: b[:len(b) // 4 * 4]))
def test_rbit_words_and_inverted_rbit_result_give_zlib_crc32(data):
    assert zlib_crc32_from_unit(data) == zlib.crc32(data)


def test_whole_words_only():
    with pytest.raises(ValueError):
        zlib_crc32_from_unit(b"abc")


# -- the CRC unit through the debug port ---------------------------------------------------------

def test_crc_unit_reset_values_and_one_zero_word(session):
    t = session.target
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    assert t.read32(CRC_DR) == 0xFFFFFFFF
    assert t.read32(CRC_IDR) == 0 and t.read32(CRC_CR) == 0
    t.write32(CRC_DR, 0)
    assert t.read32(CRC_DR) == 0xC704DD7B


def test_crc_unit_feeds_words_as_the_manual_says(session):
    t = session.target
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=8))
    def check(words):
        t.write32(CRC_CR, 1)
        for w in words:
            t.write32(CRC_DR, w)
        assert t.read32(CRC_DR) == bitwise_crc(words)
    check()


def test_cr_reset_restarts_the_crc_and_leaves_idr_alone(session):
    t = session.target
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    t.write32(CRC_IDR, 0x123456AB)
    assert t.read32(CRC_IDR) == 0xAB  # 8-bit register
    t.write32(CRC_DR, 0xDEADBEEF)
    assert t.read32(CRC_DR) != 0xFFFFFFFF
    t.write32(CRC_CR, 1)
    assert t.read32(CRC_DR) == 0xFFFFFFFF
    assert t.read32(CRC_CR) == 0  # RESET is cleared by hardware
    assert t.read32(CRC_IDR) == 0xAB


def test_crc_unit_without_its_clock_reads_zero_and_ignores_writes(session):
    t = session.target
    chip = session.probe.chip
    assert not t.read32(RCC_AHBENR) & CRCEN  # off after reset (RCC_AHBENR = 0x14)
    assert t.read32(CRC_DR) == 0
    t.write32(CRC_DR, 0)
    t.write32(CRC_IDR, 0x55)
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    assert t.read32(CRC_DR) == 0xFFFFFFFF and t.read32(CRC_IDR) == 0
    assert chip.counters["crc_accesses_clock_off"] == 3 and chip.counters["crc_words"] == 0
    t.write32(CRC_DR, 1)
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) & ~CRCEN)
    assert t.read32(CRC_DR) == 0
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    assert t.read32(CRC_DR) == bitwise_crc([1])  # state kept while the clock was off


def test_system_reset_resets_the_crc_unit_and_its_clock(session):
    t = session.target
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    t.write32(CRC_DR, 7)
    t.write32(CRC_IDR, 9)
    t.reset_and_halt()
    assert t.read32(RCC_AHBENR) == 0x14
    t.write32(RCC_AHBENR, 0x14 | CRCEN)
    assert t.read32(CRC_DR) == 0xFFFFFFFF and t.read32(CRC_IDR) == 0


# -- RCC through the debug port ----------------------------------------------------------------

def test_rcc_reset_values(session):
    t = session.target
    assert t.read32(RCC_CR) == 0x83  # HSION, HSIRDY, HSITRIM = 16
    assert t.read32(RCC_CFGR) == 0 and t.read32(RCC_CFGR2) == 0
    assert t.read32(RCC_AHBENR) == 0x14
    assert session.probe.chip.hclk_hz == 8e6


def test_pll_24mhz_from_hse_reads_as_on_a_real_f100_and_sws_waits_for_lock(session):
    t = session.target
    chip = session.probe.chip
    t0 = chip.now
    t.write32(RCC_CR, t.read32(RCC_CR) | HSEON)
    assert not t.read32(RCC_CR) & HSERDY
    t.write32(RCC_CFGR, 1)  # SW = HSE before it is ready: no switch yet
    assert t.read32(RCC_CFGR) & 0xC == 0
    polls = poll(t, RCC_CR, HSERDY)
    assert polls > 0 and chip.now - t0 >= 2e-3  # tSU(HSE), DS6517
    assert t.read32(RCC_CFGR) & 0xC == 0x4  # switched once ready
    assert chip.hclk_hz == 8e6
    t.write32(RCC_CFGR, 0)  # back to HSI while configuring the PLL
    assert t.read32(RCC_CFGR) & 0xC == 0

    t.write32(RCC_CFGR2, 1)
    t.write32(RCC_CFGR, PLLSRC | PLLXTPRE | (4 << 18) | 2)  # SW = PLL before PLLON
    t1 = chip.now
    t.write32(RCC_CR, t.read32(RCC_CR) | PLLON)
    assert t.read32(RCC_CFGR) & 0xC == 0  # SWS still HSI: the PLL is not locked
    poll(t, RCC_CR, PLLRDY)
    assert chip.now - t1 >= 200e-6  # tLOCK, DS6517
    assert t.read32(RCC_CFGR) == CFGR_24MHZ
    assert t.read32(RCC_CFGR2) == CFGR2_24MHZ
    assert t.read32(RCC_CR) & (HSION | HSIRDY | HSEON | HSERDY | PLLON | PLLRDY) == 0x03030003
    assert chip.hclk_hz == 24e6
    assert chip.counters["clock_out_of_spec"] == 0


def test_pll_fields_are_locked_while_the_pll_runs_and_sources_in_use_stay_on(session):
    t = session.target
    chip = session.probe.chip
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    t.write32(RCC_CFGR, (t.read32(RCC_CFGR) & ~(0xF << 18)) | (7 << 18))  # PLLMUL while PLLON: ignored
    t.write32(RCC_CFGR2, 0)                                             # PREDIV1 while PLLON: ignored
    assert t.read32(RCC_CFGR) == CFGR_24MHZ and t.read32(RCC_CFGR2) == 1
    t.write32(RCC_CR, t.read32(RCC_CR) & ~(PLLON | HSEON))  # in use as the system clock: stay on
    assert t.read32(RCC_CR) & (PLLON | HSEON) == PLLON | HSEON
    t.write32(RCC_CR, t.read32(RCC_CR) & ~HSION)  # the HSI is not in use: it may stop
    assert not t.read32(RCC_CR) & (HSION | HSIRDY)
    assert chip.hclk_hz == 24e6
    # Back to the HSI: it must be on and ready first.
    t.write32(RCC_CFGR, t.read32(RCC_CFGR) & ~3)
    assert t.read32(RCC_CFGR) & 0xC == 0x8  # the HSI is off: no switch
    t.write32(RCC_CR, t.read32(RCC_CR) | HSION)
    poll(t, RCC_CR, HSIRDY)
    assert t.read32(RCC_CFGR) & 0xC == 0
    t.write32(RCC_CR, t.read32(RCC_CR) & ~(PLLON | HSEON))
    assert t.read32(RCC_CR) == 0x83
    assert chip.hclk_hz == 8e6


def test_pllxtpre_and_prediv1_bit0_are_one_bit(session):
    t = session.target
    t.write32(RCC_CFGR2, 0x5)
    assert t.read32(RCC_CFGR) & PLLXTPRE
    t.write32(RCC_CFGR, PLLSRC)  # PLLXTPRE written as 0 clears PREDIV1[0]
    assert t.read32(RCC_CFGR2) == 0x4


def test_reset_restores_the_8mhz_hsi(session):
    t = session.target
    chip = session.probe.chip
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    assert chip.hclk_hz == 24e6
    t.reset_and_halt()  # SYSRESETREQ
    assert t.read32(RCC_CR) == 0x83 and t.read32(RCC_CFGR) == 0 and t.read32(RCC_CFGR2) == 0
    assert chip.hclk_hz == 8e6
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    session.probe.reset()  # nRST
    assert t.read32(RCC_CFGR) == 0 and chip.hclk_hz == 8e6


def test_sysclk_above_24mhz_runs_but_is_counted(session):
    t = session.target
    chip = session.probe.chip
    t.write32(RCC_CR, t.read32(RCC_CR) | HSEON)
    poll(t, RCC_CR, HSERDY)
    t.write32(RCC_CFGR, PLLSRC | (4 << 18))  # HSE / 1 x 6 = 48 MHz: out of the F100's spec
    t.write32(RCC_CR, t.read32(RCC_CR) | PLLON)
    poll(t, RCC_CR, PLLRDY)
    assert chip.counters["clock_out_of_spec"] == 0
    t.write32(RCC_CFGR, t.read32(RCC_CFGR) | 2)
    assert t.read32(RCC_CFGR) & 0xC == 0x8
    assert chip.hclk_hz == 48e6 and chip.counters["clock_out_of_spec"] == 1
    t.write32(RCC_CFGR, (t.read32(RCC_CFGR) & ~0xF3) | 0x80 | 2)  # HPRE /2: HCLK 24 MHz
    assert chip.hclk_hz == 24e6


def test_flash_programming_needs_the_hsi(session, tmp_path):
    t = session.target
    chip = session.probe.chip
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    t.write32(RCC_CR, t.read32(RCC_CR) & ~HSION)
    t.write32(KEYR, 0x45670123)
    t.write32(KEYR, 0xCDEF89AB)
    t.write32(CR, 1)  # PG
    t.write16(FLASH_BASE + 0x40, 0x1234)
    assert t.read16(FLASH_BASE + 0x40) == 0xFFFF and not t.read32(SR) & EOP
    assert chip.counters["flash_ops_without_hsi"] == 1
    t.write32(RCC_CR, t.read32(RCC_CR) | HSION)
    poll(t, RCC_CR, HSIRDY)
    t.write16(FLASH_BASE + 0x40, 0x1234)
    assert t.read16(FLASH_BASE + 0x40) == 0x1234 and t.read32(SR) & EOP
    assert chip.counters["flash_ops_without_hsi"] == 1 and chip.counters["halfwords_programmed"] == 1


def test_flash_operation_time_does_not_depend_on_sysclk(session):
    """The FPEC times program and erase from the HSI: DS6517's figures at any SYSCLK."""
    t = session.target
    chip = session.probe.chip
    t.write32(KEYR, 0x45670123)
    t.write32(KEYR, 0xCDEF89AB)
    t.write32(CR, 1)

    def program_time(address):
        start = chip.now
        t.write16(address, 0x1111)  # the wire transfers, then 52.5 us of programming
        return chip.fpec.busy_until - start

    at_8 = program_time(FLASH_BASE)
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    at_24 = program_time(FLASH_BASE + 2)
    assert at_8 == pytest.approx(at_24, rel=1e-9)
    assert at_8 > chip.timing.halfword_program_s


# -- code on the core ------------------------------------------------------------------------------

CRC_LOOP = """
    .syntax unified
    .thumb
    .global _start
_start:                     @ r0 = address, r1 = words, r6 = CRC_DR; returns DR in r0
1:  ldr   r5, [r0], #4
    rbit  r5, r5
    str   r5, [r6]
    subs  r1, r1, #1
    bne   1b
    ldr   r0, [r6]
    bkpt  #0
"""

COUNT_LOOP = """
    .syntax unified
    .thumb
    .global _start
_start:                     @ r0 = iterations
1:  subs  r0, r0, #1
    bne   1b
    bkpt  #0
"""

#: The whole job a flash tool's CRC routine does: 24 MHz from HSE/2 x 6, CRC, clocks restored.
PLL_CRC_RESTORE = """
    .syntax unified
    .thumb
    .global _start
_start:                     @ r0 = address, r1 = words; returns zlib-ordered DR in r0
    ldr   r4, =0x40021000
    ldr   r5, [r4, #0x14]
    orr   r5, r5, #0x40         @ CRCEN
    str   r5, [r4, #0x14]
    ldr   r5, [r4]
    orr   r5, r5, #0x10000      @ HSEON
    str   r5, [r4]
1:  ldr   r5, [r4]
    tst   r5, #0x20000          @ HSERDY
    beq   1b
    movs  r5, #1                @ PREDIV1 = /2
    str   r5, [r4, #0x2c]
    ldr   r5, =0x00130000       @ PLLSRC = PREDIV1, PLLXTPRE, PLLMUL = x6
    str   r5, [r4, #4]
    ldr   r5, [r4]
    orr   r5, r5, #0x1000000    @ PLLON
    str   r5, [r4]
2:  ldr   r5, [r4]
    tst   r5, #0x2000000        @ PLLRDY
    beq   2b
    ldr   r5, [r4, #4]
    orr   r5, r5, #2            @ SW = PLL
    str   r5, [r4, #4]
3:  ldr   r5, [r4, #4]
    and   r5, r5, #0xC
    cmp   r5, #8                @ SWS = PLL
    bne   3b
    ldr   r6, =0x40023000
    movs  r5, #1
    str   r5, [r6, #8]          @ CRC_CR.RESET
4:  ldr   r5, [r0], #4
    rbit  r5, r5
    str   r5, [r6]
    subs  r1, r1, #1
    bne   4b
    ldr   r0, [r6]
    rbit  r0, r0
    mvns  r0, r0
    ldr   r5, [r4, #4]
    bic   r5, r5, #3            @ SW = HSI
    str   r5, [r4, #4]
5:  ldr   r5, [r4, #4]
    tst   r5, #0xC              @ SWS = HSI
    bne   5b
    ldr   r5, [r4]
    bic   r5, r5, #0x1000000    @ PLL off
    str   r5, [r4]
    ldr   r5, [r4]
    bic   r5, r5, #0x10000      @ HSE off
    str   r5, [r4]
    movs  r5, #0
    str   r5, [r4, #4]          @ CFGR and CFGR2 back to their reset values
    str   r5, [r4, #0x2c]
    ldr   r5, [r4, #0x14]
    bic   r5, r5, #0x40         @ CRCEN off
    str   r5, [r4, #0x14]
    bkpt  #0
    .ltorg
"""


def assemble(source, tmp_path):
    """Thumb machine code for ``source`` linked at SRAM (arm-none-eabi-gcc)."""
    src, elf, out = tmp_path / "code.S", tmp_path / "code.elf", tmp_path / "code.bin"
    src.write_text(source)
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-nostdlib", "-nostartfiles",
                    f"-Wl,-Ttext=0x{SRAM:08x}", "-Wl,--entry=_start", "-o", str(elf), str(src)], check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".text", str(elf), str(out)], check=True)
    return out.read_bytes()


def run_on_core(t, code, **registers):
    """Load ``code`` at SRAM, set registers, resume until its BKPT; the core's device time."""
    t.write_memory_block8(SRAM, list(code))
    for name, value in registers.items():
        t.write_core_register(name, value)
    t.write_core_register("sp", SRAM + 0x2000)
    t.write_core_register("pc", SRAM)
    t.write_core_register("xpsr", 1 << 24)
    t.resume()
    for _ in range(1000):
        if t.get_state().name == "HALTED":
            break
    assert t.get_state().name == "HALTED"
    assert t.read_core_register("pc") != SRAM  # it ran
    return t.session.probe.chip.last_run_s


def test_core_time_scales_with_hclk_3x_from_8_to_24_mhz(session, tmp_path, arm_toolchain):
    t = session.target
    code = assemble(COUNT_LOOP, tmp_path)
    at_8 = run_on_core(t, code, r0=10_000)
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    at_24 = run_on_core(t, code, r0=10_000)
    assert at_8 / at_24 == pytest.approx(3.0, rel=1e-9)
    assert at_8 == pytest.approx(10_000 * 2 * 1.5 / 8e6, rel=1e-3)  # subs + bne: 2 half-words a turn
    t.write32(RCC_CFGR, (t.read32(RCC_CFGR) & ~0xF0) | 0x80)  # HPRE = /2: HCLK 12 MHz
    assert run_on_core(t, code, r0=10_000) == pytest.approx(2 * at_24, rel=1e-9)


def test_crc_on_the_core_gives_zlib_crc32_and_costs_4_hclk_cycles_a_word(session, tmp_path, arm_toolchain):
    t = session.target
    board = BoardState("sim-clk")
    data = bytes((i * 37 + 11) & 0xFF for i in range(4096))
    board.write_flash(FLASH_BASE, data)
    t.reset_and_halt()
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    code = assemble(CRC_LOOP, tmp_path)
    words = len(data) // 4
    at_8 = run_on_core(t, code, r0=FLASH_BASE, r1=words, r6=CRC_DR)
    assert rbit(t.read_core_register("r0")) ^ 0xFFFFFFFF == zlib.crc32(data)
    # 7 half-words of code (10.5 cycles) and 4 cycles of CRC computation a word.
    assert at_8 == pytest.approx(words * (7 * 1.5 + 4) / 8e6, rel=1e-3)
    assert session.probe.chip.counters["crc_words"] == words

    t.write32(CRC_CR, 1)
    pll_24mhz_from_hse(t)
    poll(t, RCC_CFGR, 0x8)
    at_24 = run_on_core(t, code, r0=FLASH_BASE, r1=words, r6=CRC_DR)
    assert rbit(t.read_core_register("r0")) ^ 0xFFFFFFFF == zlib.crc32(data)
    assert at_8 / at_24 == pytest.approx(3.0, rel=1e-9)


def test_crc_of_random_sram_data_on_the_core_matches_zlib(session, tmp_path, arm_toolchain):
    t = session.target
    t.write32(RCC_AHBENR, t.read32(RCC_AHBENR) | CRCEN)
    code = assemble(CRC_LOOP, tmp_path)

    @settings(max_examples=15, deadline=None)
    @given(st.binary(min_size=4, max_size=512).map(lambda b: b[:len(b) // 4 * 4]))
    def check(data):
        t.write_memory_block8(SRAM + 0x1000, list(data))
        t.write32(CRC_CR, 1)
        run_on_core(t, code, r0=SRAM + 0x1000, r1=len(data) // 4, r6=CRC_DR)
        assert rbit(t.read_core_register("r0")) ^ 0xFFFFFFFF == zlib.crc32(data)
    check()


def test_a_crc_routine_that_switches_to_the_pll_and_restores_the_clocks(session, tmp_path, arm_toolchain):
    t = session.target
    chip = session.probe.chip
    board = BoardState("sim-clk")
    data = bytes((i * 101 + 7) & 0xFF for i in range(8192))
    board.write_flash(FLASH_BASE, data)
    t.reset_and_halt()
    code = assemble(PLL_CRC_RESTORE, tmp_path)
    run_on_core(t, code, r0=FLASH_BASE, r1=len(data) // 4)
    assert t.read_core_register("r0") == zlib.crc32(data)
    assert t.read32(RCC_CR) == 0x83 and t.read32(RCC_CFGR) == 0 and t.read32(RCC_CFGR2) == 0
    assert t.read32(RCC_AHBENR) == 0x14
    assert chip.hclk_hz == 8e6
    # It waited for the HSE (2 ms) and the PLL (200 us), then ran the CRC at 24 MHz.
    crc_at_24 = len(data) // 4 * (7 * 1.5 + 4) / 24e6
    assert chip.last_run_s > 2e-3 + 200e-6 + crc_at_24
    assert chip.last_run_s < 2e-3 + 200e-6 + crc_at_24 + 100e-6
    assert chip.counters["clock_out_of_spec"] == 0 and chip.counters["crc_accesses_clock_off"] == 0


def test_code_loaded_over_code_that_ran_runs_the_new_code(session, tmp_path, arm_toolchain):
    """The debugger loading a second routine where one already ran (Unicorn caches translations)."""
    t = session.target
    add = lambda n: assemble(f".syntax unified\n.thumb\n.global _start\n_start: adds r0, r0, #{n}\nbkpt #0\n",
                             tmp_path)
    run_on_core(t, add(1), r0=0)
    assert t.read_core_register("r0") == 1
    run_on_core(t, add(2), r0=0)
    assert t.read_core_register("r0") == 2
