"""Our STM32F1 flash algorithm and the command tables the tool runs through it.

- The committed blob is what its source assembles to, and fits its RAM layout.
- The command tables (:mod:`scons_pyocd.flash_algo.commands`, pure): the CRC the host expects,
  the runs worth programming, how a plan is cut into calls (checked by running the calls on a
  model of ``Exec``).
- The algorithm itself on the simulated chip, through pyOCD: every command, the clocks raised
  to 24 MHz and put back exactly, the flash controller locked again, errors reported with the
  command that failed, and pyOCD's own use of its CMSIS entries.
"""

import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from scons_pyocd.flash_algo import commands as c
from scons_pyocd.images import Image
from scons_pyocd.plan import Costs, Geometry, Options, PageState, Region, crc32, make_plan

ROOT = Path(__file__).resolve().parent.parent
FLASH = 0x08000000
PAGE = 1024
REGION = Region(FLASH, 128 * PAGE, PAGE, page_erase_s=0.020, program_unit_s=52.5e-6, mass_erase_s=0.020)
GEOMETRY = Geometry((REGION,))
HALVES = [(0x20000500, 0xD80), (0x20001280, 0xD80)]
SWD_4MHZ = 46 / 4e6 / 4


def rand(n, seed):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


def ensure_toolchain():
    if shutil.which("arm-none-eabi-gcc") is None:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "install-toolchain")], capture_output=True, text=True)
        if shutil.which("arm-none-eabi-gcc") is None:
            pytest.skip(f"arm-none-eabi-gcc could not be installed: {result.stderr.strip()[-300:]}")


# -- the blob -------------------------------------------------------------------------------

def test_committed_blob_matches_the_assembly_source():
    ensure_toolchain()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-flash-algo"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_algorithm_fits_the_ram_layout():
    from scons_pyocd.session import _pyocd
    _pyocd()        # pyOCD first: its plugin loading imports our targets
    from scons_pyocd.flash_algo import stm32f1_fpec_blob as blob
    from scons_pyocd.target_stm32f100rb import EXTENSION, FLASH_ALGO
    assert blob.CODE_SIZE <= 0x400
    assert blob.EXEC_SIZE <= blob.EXTRA_SIZE <= blob.CODE_SIZE and blob.EXEC_SIZE % 4 == 0
    assert all(0 < off < blob.CODE_SIZE and off & 1 for off in blob.ENTRY_OFFSETS.values())
    assert blob.ENTRY_OFFSETS["ExecA"] < blob.EXEC_SIZE and blob.ENTRY_OFFSETS["ExecB"] < blob.EXEC_SIZE
    assert blob.INSTRUCTIONS[0] & 0xFFFF == 0xBE00  # BKPT first: every routine returns to it
    (a, alen), (b, blen) = EXTENSION["halves"]
    assert FLASH_ALGO["begin_stack"] <= a and a + alen == b and b + blen == 0x20002000
    assert list(EXTENSION["halves"]) == HALVES
    assert FLASH_ALGO["begin_data"] == FLASH_ALGO["page_buffers"][0]   # pyOCD before 0.43


# -- the command tables (pure) -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64).map(lambda b: b[:len(b) // 4 * 4]))
def test_the_crc_the_host_expects_is_what_the_crc_unit_computes(data):
    from scons_pyocd.sim.crc import crc_words, zlib_crc32_from_unit
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    assert c.unit_crc(data) == crc_words(words)
    assert zlib_crc32_from_unit(data) == zlib.crc32(data)


@pytest.mark.parametrize("data,expected", [
    (b"", []),
    (b"\xff" * 64, []),
    (b"\x01\x02" + b"\xff" * 62, [(0, b"\x01\x02")]),
    (b"\xff" * 30 + b"\x01\x02", [(30, b"\x01\x02")]),
    # a short run of erased half-words is programmed through (skipped by the algorithm)
    (b"\x01\x02" + b"\xff" * 4 + b"\x03\x04", [(0, b"\x01\x02" + b"\xff" * 4 + b"\x03\x04")]),
    # a long one is not loaded
    (b"\x01\x02" + b"\xff" * 40 + b"\x03\x04", [(0, b"\x01\x02"), (42, b"\x03\x04")]),
    (b"\xff\x00" + b"\xff" * 40, [(0, b"\xff\x00")]),
])
def test_runs_leave_out_long_stretches_of_erased_half_words(data, expected):
    assert c.runs(0x100, data) == [(0x100 + at, part) for at, part in expected]


class Exec:
    """A model of the algorithm's Exec on a Python flash and RAM, for checking the tables."""

    def __init__(self, flash: bytearray):
        self.flash = flash
        self.ram = {}
        self.log = []

    def load(self, base, words):
        for i, w in enumerate(words):
            self.ram[base + 4 * i] = w

    def word(self, address):
        if FLASH <= address < FLASH + len(self.flash):
            return int.from_bytes(self.flash[address - FLASH:address - FLASH + 4], "little")
        return self.ram[address]

    def bytes_at(self, address, n):
        return b"".join(self.word(address + i).to_bytes(4, "little") for i in range(0, n, 4))[:n]

    def run(self, base):
        status = self.ram[base]
        at = status + 4
        i = base + 4
        while True:
            head = self.ram[i]
            code, arg = head >> 28, head & c.MAX_ARG
            if code == c.END:
                break
            if code in (c.MASS, c.CLOCK):
                self.log.append((code, arg))
                if code == c.MASS:
                    self.flash[:] = b"\xff" * len(self.flash)
                i += 4
                continue
            a, b = self.ram[i + 4], self.ram[i + 8]
            self.log.append((code, arg, a, b))
            if code == c.ERASE:
                for k in range(arg):
                    page = (a + k * b - FLASH) // PAGE * PAGE
                    self.flash[page:page + PAGE] = b"\xff" * PAGE
            elif code == c.PROG:
                data = self.bytes_at(b, arg)
                for k in range(0, arg, 2):
                    new = data[k:k + 2]
                    old = self.flash[a - FLASH + k:a - FLASH + k + 2]
                    if new == b"\xff\xff" and old == b"\xff\xff":
                        continue
                    assert old == b"\xff\xff", f"programming over data at 0x{a + k:08X}"
                    self.flash[a - FLASH + k:a - FLASH + k + 2] = new
            elif code in (c.CRC, c.ZCRC):
                for k in range(arg):
                    data = self.bytes_at(a + k * b, b)
                    self.ram[at] = c.unit_crc(data) if code == c.CRC else zlib.crc32(data)
                    at += 4
            elif code == c.BLANK:
                flags = bytes(int(self.bytes_at(a + k * b, b) == b"\xff" * b) for k in range(arg))
                flags += b"\0" * (-len(flags) % 4)
                for k in range(0, len(flags), 4):
                    self.ram[at] = int.from_bytes(flags[k:k + 4], "little")
                    at += 4
            elif code == c.CMP:
                bits = [self.word(a + 4 * k) != self.word(b + 4 * k) for k in range(arg)]
                for k in range(0, arg, 32):
                    self.ram[at] = sum(1 << j for j, bit in enumerate(bits[k:k + 32]) if bit)
                    at += 4
            i += 12
        self.ram[status] = 0
        return [self.ram.get(status + 4 * k, 0) for k in range(1, 1 + 2048)]


def plan_for(chip: bytes, data: bytes, options=Options()):
    """A plan from exact facts about a model chip holding ``chip``."""
    image = Image([(FLASH, data)])
    facts = {}
    for _, page in GEOMETRY.touched(image.ranges()):
        content = chip[page - FLASH:page - FLASH + PAGE].ljust(PAGE, b"\xff")
        facts[page] = PageState(crc=crc32(content), data=content)
    for page in range(FLASH, FLASH + 128 * PAGE, PAGE):
        if page not in facts:
            facts[page] = PageState(blank=chip[page - FLASH:page - FLASH + PAGE].ljust(PAGE, b"\xff") == b"\xff" * PAGE)
    return make_plan(image, GEOMETRY, facts, options, Costs(skips_erased_units=True))


@pytest.mark.parametrize("chip,data", [
    (b"", rand(78_128, 1)),                                  # erased chip: no erase
    (rand(78_128, 2), rand(78_128, 1)),                      # another image: one mass erase
    (rand(78_128, 1), bytes(b ^ (i == 39_000) for i, b in enumerate(rand(78_128, 1)))),   # one byte
    (rand(128 * PAGE, 3), rand(128 * PAGE, 4)),             # the whole flash
    (rand(4 * PAGE, 5) + b"\xff" * 100 * PAGE + b"x", rand(3 * PAGE + 7, 6)),   # page erases, a partial page
])
def test_write_calls_carry_the_plan_out_and_keep_the_flash_busy(chip, data):
    plan = plan_for(chip, data)
    pipeline = c.Pipeline(HALVES, SWD_4MHZ, crc_s_per_byte=0.06e-6)
    regions = {p: REGION for p in plan.page_sizes}
    calls = c.write_calls(plan, pipeline, regions)
    flash = bytearray(chip.ljust(128 * PAGE, b"\xff"))
    model = Exec(flash)
    checked = {}
    for i, call in enumerate(calls):
        assert call.size <= 0xD80 and call.base == HALVES[i % 2][0]
        if i:   # loading this call takes no longer than the one before keeps the flash busy
            assert call.loaded_bytes * SWD_4MHZ <= max(calls[i - 1].device_s * 0.9 + 320 * SWD_4MHZ, 0)
        model.load(call.base, call.image())
        results = model.run(call.base)
        for kind, address, size, value in call.decode(results[:call.results_words]):
            checked[address] = value
    assert flash[:len(data)] == data
    assert sorted(checked) == [w.address for w in plan.program]          # each page checked once
    assert all(checked[w.address] == c.unit_crc(w.data) for w in plan.program)
    erases = [entry for entry in model.log if entry[0] in (c.ERASE, c.MASS)]
    first = calls[0]
    assert first.data == b"" or first.loaded_bytes <= pipeline.first_bytes + 64   # the first call starts at once
    if plan.mass_erase:
        assert erases[0] == (c.MASS, 0) and len(erases) == 1
    else:
        assert [e[2] for e in erases] == list(plan.erase)
    # Each page is erased before anything is programmed into it, and checked after its last byte.
    seen = {}
    for k, entry in enumerate(model.log):
        if entry[0] == c.ERASE:
            seen.setdefault(entry[2], {})["erase"] = k
        elif entry[0] == c.PROG:
            page = (entry[2] - FLASH) // PAGE * PAGE + FLASH
            seen.setdefault(page, {}).setdefault("prog", []).append(k)
        elif entry[0] == c.CRC:
            seen.setdefault(entry[2], {})["check"] = k
    for page, events in seen.items():
        if "erase" in events and "prog" in events:
            assert events["erase"] < min(events["prog"])
        if "prog" in events:
            assert max(events["prog"]) < events["check"]
    assert sum(call.units for call in calls) == plan.units


def test_check_calls_split_what_does_not_fit_a_half():
    checks = [(c.CRC, FLASH + i * PAGE, PAGE) for i in range(128)] + [(c.BLANK, FLASH, 128 * PAGE)] * 300
    calls = c.check_calls(checks, HALVES)
    assert len(calls) > 1 and all(call.size <= 0xD80 for call in calls)
    ranges = [(k, a, s) for call in calls for k, a, s, n in call.checks for _ in range(n)]
    assert len(ranges) == len(checks)
    assert calls[0].checks[0] == (c.CRC, FLASH, PAGE, 128)     # consecutive pages: one command


def test_a_failed_command_is_named():
    call = c.Call(HALVES[0][0])
    call.add_erase(FLASH)
    call.add_prog(FLASH + 0x400, b"\x01\x02")
    assert c.failure(0, call) is None
    code, words, sr = c.failure((12 << 8) | 0x04 | 1, call)        # the second command, PGERR
    assert (code, words[1], sr) == (c.PROG, FLASH + 0x400, 0x04)
    with pytest.raises(ValueError):
        c.failure(c.PENDING, call)


# -- the algorithm on the simulated chip -----------------------------------------------------

@pytest.fixture
def connection():
    from scons_pyocd.session import Connection, Settings, find_probe
    from scons_pyocd.sim.board import BoardState
    board = BoardState.create("sim-algo", exist_ok=True)
    board.restore_factory()
    board.write_flash(FLASH, rand(3 * PAGE, 7))
    with Connection.open(Settings(target="stm32f100rb", frequency=4_000_000), find_probe("sim-algo")) as conn:
        yield conn, board


def rcc(conn):
    t = conn.target
    return {"CR": t.read32(0x40021000) & 0x03FF0003, "CFGR": t.read32(0x40021004),
            "AHBENR": t.read32(0x40021014), "FLASH_CR": t.read32(0x40022010), "ACR": t.read32(0x40022000)}


def test_every_command_on_the_chip_and_the_clocks_put_back(connection):
    conn, board = connection
    before = rcc(conn)
    assert before["CFGR"] == 0 and before["FLASH_CR"] & 0x80       # reset clocks, FPEC locked
    ex = conn.executor()
    data = rand(2 * PAGE, 8)
    call = c.Call(HALVES[0][0])
    call.add_erase(FLASH + PAGE, 2, PAGE)
    call.add_prog(FLASH + PAGE, data[:1500])
    call.add_prog(FLASH + PAGE + 1500, data[1500:])
    call.add_check(c.CRC, FLASH + PAGE, PAGE, 2)
    call.add_check(c.ZCRC, FLASH, PAGE, 3)
    call.add_check(c.BLANK, FLASH, PAGE, 5)
    ex.prepare([call])              # loads the algorithm; the first call raises the clock
    compare = c.Call(HALVES[1][0])  # the next call compares the first one's CRCs
    compare.add_cmp(call.results, [c.unit_crc(data[:PAGE]), 0])
    got = []
    ex.run_calls([call, compare], lambda call, results: got.extend(results))
    chip = board.read_flash(FLASH, 5 * PAGE)
    assert chip[PAGE:3 * PAGE] == data and chip[:PAGE] == rand(3 * PAGE, 7)[:PAGE]
    values = [v for _, _, _, v in call.decode(got[:call.results_words]) + compare.decode(got[call.results_words:])]
    assert values[:2] == [c.unit_crc(data[:PAGE]), c.unit_crc(data[PAGE:])]
    assert values[2:5] == [zlib.crc32(chip[i * PAGE:(i + 1) * PAGE]) for i in range(3)]
    assert values[5:10] == [0, 0, 0, 1, 1]
    assert values[10] == 0b10                  # the first CRC as expected, the second not
    raised = rcc(conn)
    assert raised["CFGR"] & 0xF == 0xA and raised["AHBENR"] & 0x40   # SYSCLK = PLL, CRC clocked
    assert conn.target.read32(0x40021004) & 0x003C0000 == 0x00100000   # PLLMUL x6 (HSI/2: 24 MHz)
    ex.finish(reset_follows=False)
    assert rcc(conn) == before                 # clocks as before, FPEC locked again
    counters = board.counters()
    assert counters["clock_out_of_spec"] == counters["flash_ops_without_hsi"] == 0
    assert counters["crc_accesses_clock_off"] == 0


def test_a_clock_tree_set_up_by_firmware_is_left_alone(connection):
    conn, board = connection
    t = conn.target
    t.write32(0x40021004, 0x00040000)          # PLL x3 from HSI/2 = 12 MHz, as a firmware might
    t.write32(0x40021000, t.read32(0x40021000) | 0x01000000)
    while not t.read32(0x40021000) & 0x02000000:
        pass
    t.write32(0x40021004, 0x00040002)
    before = rcc(conn)
    ex = conn.executor()
    call = c.Call(HALVES[0][0])
    call.add_check(c.CRC, FLASH, PAGE)
    ex.run_calls([call])
    assert rcc(conn)["CFGR"] & 0x003F000F == 0x0004000A        # still the firmware's 12 MHz
    ex.finish(reset_follows=False)
    assert rcc(conn) == before


def test_a_write_protected_page_fails_the_erase_command_and_says_where(connection):
    from pyocd.core.exceptions import FlashEraseFailure
    conn, board = connection
    board.set_write_protection([8])
    conn.close()
    from scons_pyocd.session import Connection, Settings, find_probe
    with Connection.open(Settings(target="stm32f100rb", frequency=4_000_000), find_probe("sim-algo")) as conn:
        ex = conn.executor()
        call = c.Call(HALVES[0][0])
        call.add_erase(FLASH + 4 * PAGE)
        call.add_erase(FLASH + 8 * PAGE)
        with pytest.raises(FlashEraseFailure, match=r"page erase failed at 0x08002000 \(WRPRTERR"):
            ex.run_calls([call])
    assert board.counters()["pages_erased"] == 1


def test_pyocds_own_flash_loader_uses_the_cmsis_entries():
    """pyOCD's command line and FlashLoader keep working with our target (Init, EraseSector,
    ProgramPage, UnInit, its CRC analyzer in the page buffers' RAM)."""
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.loader import FlashLoader
    from scons_pyocd import sim, targets
    from scons_pyocd.sim.board import BoardState
    sim.register()
    targets.register()
    board = BoardState.create("sim-loader", exist_ok=True)
    board.restore_factory()
    data = rand(5 * PAGE + 3, 9)
    board.write_flash(FLASH + PAGE, rand(PAGE, 10))
    for erase in ("sector", "chip"):
        with ConnectHelper.session_with_chosen_probe(unique_id="sim-loader", target_override="stm32f100rb",
                                                     options={"frequency": 4_000_000}) as session:
            loader = FlashLoader(session, progress=lambda fraction: None, chip_erase=erase, smart_flash=True)
            loader.add_data(FLASH, list(data))
            loader.commit()
        assert board.read_flash(FLASH, len(data)) == data
        data = rand(5 * PAGE + 3, 11)


@pytest.mark.parametrize("reset", ["none", "run", "halt"])
def test_after_a_flash_the_clocks_are_as_before_and_the_flash_controller_locked(reset):
    """Without a reset the algorithm's last call puts them back; a system reset does it otherwise."""
    from scons_pyocd.session import Connection, Settings, find_probe
    from scons_pyocd.sim.board import BoardState
    board = BoardState.create("sim-clocks", exist_ok=True)
    board.restore_factory()
    data = rand(5 * PAGE, 12)
    with Connection.open(Settings(target="stm32f100rb", frequency=4_000_000, reset=reset),
                         find_probe("sim-clocks")) as conn:
        before = rcc(conn)
        result = conn.flash(Image([(FLASH, data)]))
        assert result.pages_programmed == 5 and board.read_flash(FLASH, len(data)) == data
        after = rcc(conn)
    assert after["CFGR"] == before["CFGR"] == 0 and after["AHBENR"] == before["AHBENR"]
    assert after["CR"] & 0x03000000 == 0 and after["FLASH_CR"] & 0x80     # PLL off, FPEC locked
    assert after["ACR"] == before["ACR"]
    counters = board.counters()
    assert counters["clock_out_of_spec"] == counters["flash_ops_without_hsi"] == 0
    assert counters["resets"] == (0 if reset == "none" else 1)
