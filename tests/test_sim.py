"""The simulated STM32VLDiscovery, driven through pyOCD's public API.

Everything here goes through real pyOCD: probe discovery, DAP, MEM-AP, core
debug, pyOCD's flash algorithm running on the emulated core, smart flash.
"""

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from scons_pyocd import sim
from scons_pyocd.sim.board import BoardState, FLASH_BASE, FLASH_SIZE

pyocd = pytest.importorskip("pyocd")
from pyocd.core import exceptions  # noqa: E402
from pyocd.core.helpers import ConnectHelper  # noqa: E402
from pyocd.flash.file_programmer import FileProgrammer  # noqa: E402

sim.register()

FPEC = 0x40022000
KEYR, SR, CR, AR, WRPR = FPEC + 0x04, FPEC + 0x0C, FPEC + 0x10, FPEC + 0x14, FPEC + 0x20
KEY1, KEY2 = 0x45670123, 0xCDEF89AB
PG, PER, MER, STRT, LOCK = 1, 2, 4, 0x40, 0x80
BSY, PGERR, WRPRTERR, EOP = 1, 4, 16, 32


def open_session(board_id, **options):
    # A target that stops answering makes pyOCD poll until its flash timeouts (10 s by
    # default) run out; shorter ones keep the fault tests quick.
    opts = {"frequency": 4_000_000, "flash.timeout.program": 2.0, "flash.timeout.erase_sector": 2.0,
            "flash.timeout.analyzer": 2.0, "flash.timeout.init": 2.0}
    opts.update(options)
    return ConnectHelper.session_with_chosen_probe(unique_id=board_id, target_override="stm32f100rb",
                                                   options=opts)


def program(board_id, path, **kw):
    with open_session(board_id) as session:
        FileProgrammer(session, progress=lambda _: None).program(str(path), **kw)


def delta(board, before):
    after = board.counters()
    return {k: after[k] - before[k] for k in after}


def synthetic_image(size, seed=1):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(size))


@pytest.fixture
def board():
    return BoardState.create("sim-test")


# -- discovery and identity -------------------------------------------------------------

def test_probe_is_found_by_id_and_reports_the_stm32f100rb(board):
    with open_session("sim-test") as session:
        target = session.target
        assert session.probe.unique_id == "sim-test"
        assert target.read32(0xE0042000) == 0x10016420
        assert target.read16(0x1FFFF7E0) == 128
        assert target.read32(0xE000ED00) == 0x411FC231
        assert session.target.cores[0].name.lower().startswith("cortex-m3")
    assert board.counters()["connects"] == 1


def test_two_boards_are_independent(tmp_path):
    BoardState.create("sim-a")
    BoardState.create("sim-b")
    image = tmp_path / "a.bin"
    image.write_bytes(synthetic_image(3000))
    program("sim-a", image, base_address=FLASH_BASE)
    assert BoardState("sim-a").read_flash(FLASH_BASE, 3000) == image.read_bytes()
    assert BoardState("sim-b").read_flash() == b"\xff" * FLASH_SIZE


def test_unmapped_address_faults_instead_of_reading_zero(board):
    with open_session("sim-test") as session:
        with pytest.raises(exceptions.TransferFaultError):
            session.target.read32(0x60000000)
        with pytest.raises(exceptions.TransferFaultError):
            session.target.read32(0x20002000)  # just past the 8 KiB of SRAM
        # The sticky error is cleared: the next access works.
        assert session.target.read32(0xE0042000) == 0x10016420


def test_wrong_identity_is_reported(board):
    board.set_identity("stm32f103re")
    with open_session("sim-test") as session:
        assert session.target.read32(0xE0042000) & 0xFFF == 0x414
        assert session.target.read16(0x1FFFF7E0) == 512


def test_board_in_use_by_another_process_is_refused(board):
    with open_session("sim-test"):
        code = textwrap.dedent("""
            import sys
            from scons_pyocd import sim; sim.register()
            from pyocd.core.helpers import ConnectHelper
            try:
                ConnectHelper.session_with_chosen_probe(unique_id="sim-test", target_override="stm32f100rb").open()
            except Exception as e:
                print(type(e).__name__, e); sys.exit(3)
        """)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert "in use by another process" in result.stdout
    assert str(os.getpid()) in result.stdout


# -- flashing through pyOCD ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nuttx.bin", "nuttx.hex"])
def test_real_nuttx_image_flashes_and_reads_back(board, shared_firmware, name):
    path = shared_firmware / "stm32vldiscovery-nsh-v1" / name
    expected = (shared_firmware / "stm32vldiscovery-nsh-v1" / "nuttx.bin").read_bytes()
    program("sim-test", path, base_address=FLASH_BASE if name.endswith(".bin") else None)
    with open_session("sim-test") as session:
        assert bytes(session.target.read_memory_block8(FLASH_BASE, len(expected))) == expected
    assert board.read_flash(FLASH_BASE, len(expected)) == expected
    # pyOCD programs whole pages through our algorithm, which skips 0xFFFF over erased half-words.
    padded = expected.ljust(39 * 1024, b"\xff")
    assert board.counters()["halfwords_programmed"] == sum(
        padded[i:i + 2] != b"\xff\xff" for i in range(0, 39 * 1024, 2))


def test_synthetic_image_survives_a_new_process(board, tmp_path):
    data = synthetic_image(10 * 1024 + 77, seed=7)
    image = tmp_path / "img.bin"
    image.write_bytes(data)
    program("sim-test", image, base_address=FLASH_BASE + 0x4000)
    code = textwrap.dedent(f"""
        from scons_pyocd import sim; sim.register()
        from pyocd.core.helpers import ConnectHelper
        with ConnectHelper.session_with_chosen_probe(unique_id="sim-test", target_override="stm32f100rb") as s:
            print(bytes(s.target.read_memory_block8({FLASH_BASE + 0x4000}, {len(data)})).hex())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert bytes.fromhex(out.strip()) == data
    # Flash outside the image stays erased.
    assert board.read_flash(FLASH_BASE, 0x4000) == b"\xff" * 0x4000


def test_smart_flash_programs_nothing_for_an_unchanged_image_and_one_page_for_one_byte(board, tmp_path):
    data = bytearray(synthetic_image(20 * 1024, seed=3))
    image = tmp_path / "img.bin"
    image.write_bytes(data)
    program("sim-test", image, base_address=FLASH_BASE)

    before = board.counters()
    program("sim-test", image, base_address=FLASH_BASE)
    d = delta(board, before)
    assert d["halfwords_programmed"] == 0 and d["pages_erased"] == 0 and d["connects"] == 1

    data[5 * 1024 + 100] ^= 0x5A
    image.write_bytes(data)
    before = board.counters()
    program("sim-test", image, base_address=FLASH_BASE)
    d = delta(board, before)
    assert d["pages_erased"] == 1
    assert d["halfwords_programmed"] == 512
    assert board.read_flash(FLASH_BASE, len(data)) == bytes(data)


def test_nuttx_v1_to_v2_programs_the_two_changed_pages(board, shared_firmware):
    program("sim-test", shared_firmware / "stm32vldiscovery-nsh-v1" / "nuttx.bin", base_address=FLASH_BASE)
    before = board.counters()
    program("sim-test", shared_firmware / "stm32vldiscovery-nsh-v2" / "nuttx.bin", base_address=FLASH_BASE)
    d = delta(board, before)
    v1 = (shared_firmware / "stm32vldiscovery-nsh-v1" / "nuttx.bin").read_bytes()
    v2 = (shared_firmware / "stm32vldiscovery-nsh-v2" / "nuttx.bin").read_bytes()
    pages = [p for p in range(39) if v1[p * 1024:(p + 1) * 1024] != v2[p * 1024:(p + 1) * 1024]]
    # Our algorithm skips 0xFFFF over erased half-words.
    assert d["pages_erased"] == 2 and d["halfwords_programmed"] == sum(
        v2.ljust(39 * 1024, b"\xff")[i:i + 2] != b"\xff\xff" for p in pages for i in range(p * 1024, (p + 1) * 1024, 2))
    assert board.read_flash(FLASH_BASE, len(v2)) == v2


def test_device_time_accounts_for_every_flash_operation(board, tmp_path):
    """The clock is at least the datasheet cost of what was done, plus bounded wire time."""
    image = tmp_path / "img.bin"
    image.write_bytes(synthetic_image(16 * 1024, seed=9))
    program("sim-test", image, base_address=FLASH_BASE)
    c = board.counters()
    flash_time = c["pages_erased"] * 20e-3 + c["mass_erases"] * 20e-3 + c["halfwords_programmed"] * 52.5e-6
    wire_time = (c["dp_bytes_read"] + c["dp_bytes_written"]) / 4 * 46 / 4e6
    assert c["pages_erased"] == 16 and c["halfwords_programmed"] == 16 * 512
    assert flash_time <= c["device_time_s"] <= flash_time + wire_time + 0.05


def test_chip_erase_mass_erases(board, tmp_path):
    board.write_flash(FLASH_BASE + 0x10000, b"\x00" * 16)
    image = tmp_path / "img.bin"
    image.write_bytes(synthetic_image(2048))
    with open_session("sim-test") as session:
        FileProgrammer(session, chip_erase="chip", progress=lambda _: None).program(str(image), base_address=FLASH_BASE)
    assert board.counters()["mass_erases"] == 1
    assert board.read_flash(FLASH_BASE + 0x10000, 16) == b"\xff" * 16


def test_reset_halt_loads_the_vector_table(board, tmp_path):
    vectors = (0x20002000).to_bytes(4, "little") + (0x08000101).to_bytes(4, "little")
    board.write_flash(FLASH_BASE, vectors)
    with open_session("sim-test") as session:
        session.target.reset_and_halt()
        assert session.target.read_core_register("sp") == 0x20002000
        assert session.target.read_core_register("pc") == 0x08000100
        session.target.reset()
        assert session.target.get_state().name == "RUNNING"


# -- FPEC at register level -------------------------------------------------------------------------

@pytest.fixture
def halted(board):
    with open_session("sim-test") as session:
        session.target.halt()
        yield session.target


def unlock(t):
    t.write32(KEYR, KEY1)
    t.write32(KEYR, KEY2)
    assert not t.read32(CR) & LOCK


def test_fpec_resets_locked_and_unlocks_with_the_key_sequence(halted):
    assert halted.read32(CR) & LOCK
    halted.write32(CR, PG)  # ignored while locked
    assert halted.read32(CR) == LOCK
    unlock(halted)


def test_programming_a_half_word(halted, board):
    unlock(halted)
    halted.write32(CR, PG)
    halted.write16(FLASH_BASE + 0x100, 0x1234)
    assert halted.read32(SR) & EOP and not halted.read32(SR) & (BSY | PGERR)
    assert halted.read16(FLASH_BASE + 0x100) == 0x1234
    assert board.read_flash(FLASH_BASE + 0x100, 2) == b"\x34\x12"
    assert halted.read16(0x100) == 0x1234  # boot alias


def test_programming_a_non_erased_half_word_sets_pgerr_and_changes_nothing(halted):
    unlock(halted)
    halted.write32(CR, PG)
    halted.write16(FLASH_BASE + 0x200, 0x1234)
    halted.write32(SR, EOP)
    halted.write16(FLASH_BASE + 0x200, 0x4321)
    assert halted.read32(SR) & PGERR
    assert halted.read16(FLASH_BASE + 0x200) == 0x1234
    halted.write32(SR, PGERR)
    assert not halted.read32(SR) & PGERR
    halted.write16(FLASH_BASE + 0x200, 0x0000)  # zero may always be written
    assert halted.read16(FLASH_BASE + 0x200) == 0 and not halted.read32(SR) & PGERR


def test_word_write_to_flash_is_a_bus_error(halted):
    unlock(halted)
    halted.write32(CR, PG)
    with pytest.raises(exceptions.TransferFaultError):
        halted.write32(FLASH_BASE + 0x300, 0x12345678)
        halted.flush()
    assert halted.read32(FLASH_BASE + 0x300) == 0xFFFFFFFF


def test_wrong_key_locks_the_fpec_until_reset(halted):
    with pytest.raises(exceptions.TransferFaultError):
        halted.write32(KEYR, 0x12345678)
        halted.flush()
    with pytest.raises(exceptions.TransferFaultError):
        halted.write32(KEYR, KEY1)  # locked out: even the right key faults
        halted.flush()
    assert halted.read32(CR) & LOCK
    halted.reset_and_halt()
    unlock(halted)


def test_page_erase_and_mass_erase_clear_main_flash_only(halted, board):
    board.write_flash(FLASH_BASE + 0x400, b"\x00" * 8)
    board.write_flash(FLASH_BASE + 0x1F000, b"\x00" * 8)
    halted.reset_and_halt()  # the chip sees the new flash contents
    option_bytes = bytes(halted.read_memory_block8(0x1FFFF800, 16))
    unlock(halted)
    halted.write32(CR, PER)
    halted.write32(AR, FLASH_BASE + 0x400)
    halted.write32(CR, PER | STRT)
    assert halted.read32(SR) & EOP
    assert board.read_flash(FLASH_BASE + 0x400, 8) == b"\xff" * 8
    assert board.read_flash(FLASH_BASE + 0x1F000, 8) == b"\x00" * 8
    halted.write32(CR, MER)
    halted.write32(CR, MER | STRT)
    assert halted.read32(SR) & EOP
    assert board.read_flash() == b"\xff" * FLASH_SIZE
    assert bytes(halted.read_memory_block8(0x1FFFF800, 16)) == option_bytes
    counters = halted.session.probe.chip.counters  # saved to counters.json when the probe closes
    assert counters["pages_erased"] == 1 and counters["mass_erases"] == 1


def test_write_protected_pages_refuse_program_and_erase(board):
    board.set_write_protection([8])  # protects pages 8-11
    with open_session("sim-test") as session:
        t = session.target
        t.halt()
        assert t.read32(WRPR) == 0xFFFFFFFB  # group 2 = pages 8-11
        unlock(t)
        t.write32(CR, PG)
        t.write16(FLASH_BASE + 9 * 1024, 0x1111)
        assert t.read32(SR) & WRPRTERR
        assert t.read16(FLASH_BASE + 9 * 1024) == 0xFFFF
        t.write32(SR, WRPRTERR)
        t.write16(FLASH_BASE + 12 * 1024, 0x2222)  # the next group is not protected
        assert t.read16(FLASH_BASE + 12 * 1024) == 0x2222
        t.write32(CR, MER)
        t.write32(CR, MER | STRT)
        assert t.read32(SR) & WRPRTERR  # mass erase refused while pages are protected
        assert t.read16(FLASH_BASE + 12 * 1024) == 0x2222


def test_write_protected_chip_makes_pyocd_flash_fail(board, tmp_path):
    board.set_write_protection(range(128))
    image = tmp_path / "img.bin"
    image.write_bytes(synthetic_image(1024))
    with pytest.raises(exceptions.FlashFailure):
        program("sim-test", image, base_address=FLASH_BASE)
    assert board.read_flash(FLASH_BASE, 1024) == b"\xff" * 1024


def test_read_protection_blocks_debug_reads_of_main_flash(board):
    board.write_flash(FLASH_BASE, b"\x12\x34")
    board.set_read_protection(True)
    with open_session("sim-test") as session:
        with pytest.raises(exceptions.TransferFaultError):
            session.target.read32(FLASH_BASE)
        assert session.target.read32(0xE0042000) == 0x10016420
        assert session.target.read32(FPEC + 0x1C) & 2  # OBR.RDPRT


# -- injected faults -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, exc", [
    ("disconnect_after", exceptions.ProbeDisconnected),
    ("hang_after", exceptions.TransferTimeoutError),
    ("fault_after", exceptions.TransferFaultError),
])
@pytest.mark.parametrize("after", [300, 2500, 6000])
def test_link_faults_surface_as_pyocd_errors_and_are_one_shot(board, tmp_path, fault, exc, after):
    data = synthetic_image(24 * 1024, seed=after)  # about 6,500 transfers in all
    image = tmp_path / "img.bin"
    image.write_bytes(data)
    board.set_fault(fault, after)
    with pytest.raises(exc):
        program("sim-test", image, base_address=FLASH_BASE)
    assert fault not in board.faults()
    program("sim-test", image, base_address=FLASH_BASE)
    assert board.read_flash(FLASH_BASE, len(data)) == data


@pytest.mark.parametrize("halfwords", [1, 700, 3000])
def test_power_loss_leaves_a_half_programmed_page(board, tmp_path, halfwords):
    data = synthetic_image(8 * 1024, seed=halfwords)
    image = tmp_path / "img.bin"
    image.write_bytes(data)
    board.set_fault("power_loss_after_halfwords", halfwords)
    with pytest.raises(exceptions.TransferError):
        program("sim-test", image, base_address=FLASH_BASE)
    flash = board.read_flash(FLASH_BASE, len(data))
    done = 2 * halfwords
    assert flash[:done] == data[:done]
    page_end = (done // 1024 + 1) * 1024
    assert flash[done:page_end] == b"\xff" * (page_end - done)  # the rest of that page: erased
    assert board.counters()["halfwords_programmed"] == halfwords
    program("sim-test", image, base_address=FLASH_BASE)
    assert board.read_flash(FLASH_BASE, len(data)) == data


# -- command line ------------------------------------------------------------------------------------------

def test_pyocd_command_line_flashes_a_board_by_its_id(tmp_path):
    """Needs the package's pyocd.probe entry point (pip install). Listing: tests/test_sim_boards.py."""
    from importlib.metadata import entry_points
    if not [ep for ep in entry_points(group="pyocd.probe") if ep.name == "sim"]:
        pytest.skip("scons-pyocd is not pip-installed: no pyocd.probe entry point")
    BoardState.create("sim-cli")
    data = synthetic_image(4096, seed=11)
    image = tmp_path / "img.bin"
    image.write_bytes(data)
    run = dict(capture_output=True, text=True, cwd=tmp_path, timeout=120)
    out = subprocess.run([sys.executable, "-m", "pyocd", "flash", "-u", "sim-cli", "-t", "stm32f100rb",
                          "--base-address", hex(FLASH_BASE), str(image)], **run)
    assert out.returncode == 0, out.stderr
    assert BoardState("sim-cli").read_flash(FLASH_BASE, len(data)) == data


def test_sim_command_counters_faults_and_identity():
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "scons_pyocd.sim", *args], capture_output=True, text=True,
                              check=True).stdout
    cli("create", "sim-c")
    cli("fault", "sim-c", "disconnect_after", "10")
    assert BoardState("sim-c").faults() == {"disconnect_after": 10}
    cli("fault", "sim-c", "--clear")
    assert BoardState("sim-c").faults() == {}
    cli("identity", "sim-c", "stm32f103re")
    assert BoardState("sim-c").identity()["idcode"] == 0x10036414
    cli("poke", "sim-c", "0x08000010", "de", "ad")
    shown = json.loads(cli("show", "sim-c"))
    assert shown["flash_pages_programmed"] == 1 and shown["identity"]["idcode"] == "0x10036414"
    assert "sim-c" in cli("list").split()
    counters = json.loads(cli("counters", "sim-c", "--reset"))
    assert set(counters) >= {"connects", "halfwords_programmed", "device_time_s"}


# -- resets and option bytes --------------------------------------------------------------------------------

def test_sysresetreq_locks_the_fpec_and_vectreset_does_not(halted):
    unlock(halted)
    halted.write32(0xE000ED0C, (0x05FA << 16) | 1)  # VECTRESET: core only
    assert not halted.read32(CR) & LOCK
    halted.write32(0xE000ED0C, (0x05FA << 16) | 4)  # SYSRESETREQ: the whole system
    assert halted.read32(CR) & LOCK
    halted.write32(0xE000ED0C, 4)  # without VECTKEY: ignored
    assert halted.read32(CR) & LOCK


def test_option_byte_programming_takes_effect_at_reset_and_rdp_removal_mass_erases(board):
    OPTKEYR, OPTPG, OPTER, OPTWRE = FPEC + 0x08, 0x10, 0x20, 0x200
    board.write_flash(FLASH_BASE, b"\x11\x22\x33\x44")
    board.set_read_protection(True)
    with open_session("sim-test") as session:
        t = session.target
        t.halt()
        assert t.read32(FPEC + 0x1C) & 2  # RDPRT
        unlock(t)
        t.write32(OPTKEYR, KEY1)
        t.write32(OPTKEYR, KEY2)
        assert t.read32(CR) & OPTWRE
        t.write32(CR, OPTER | OPTWRE)
        t.write32(CR, OPTER | STRT | OPTWRE)
        assert t.read8(0x1FFFF800) == 0xFF
        t.write32(CR, OPTPG | OPTWRE)
        t.write16(0x1FFFF800, 0x00A5)  # RDP back to 0xA5: unprotect, which mass-erases first
        assert t.read16(0x1FFFF800) == 0x5AA5
        t.write16(0x1FFFF808, 0x00FE)  # WRP0: protect pages 0-3
        t.reset_and_halt()
        assert not t.read32(FPEC + 0x1C) & 2
        assert t.read32(WRPR) & 1 == 0
        assert t.read32(FLASH_BASE) == 0xFFFFFFFF
    assert board.read_flash(FLASH_BASE, 4) == b"\xff" * 4
    assert board.read_option_bytes()[0] == 0xA5


def test_vector_catch_halts_on_a_faulting_algorithm(board):
    """Code that faults on the core halts it with DFSR.VCATCH (pyOCD sets VC_HARDERR)."""
    with open_session("sim-test") as session:
        t = session.target
        t.halt()
        t.write_memory_block8(0x20000000, [0x01, 0x49, 0x08, 0x68, 0x00, 0xBE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60])
        t.write32(0xE000EDFC, t.read32(0xE000EDFC) | (1 << 10))
        t.write_core_register("pc", 0x20000000)
        t.write_core_register("xpsr", 1 << 24)
        t.resume()
        assert t.get_state().name == "HALTED"
        assert t.read32(0xE000ED30) & 8  # VCATCH
