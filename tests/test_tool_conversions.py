"""The conversion builders through the real scons, against intelhex and pyelftools."""

import pytest
from elftools.elf.elffile import ELFFile
from intelhex import IntelHex

from scons_project import PAGE, Project, random_image
from scons_pyocd.sim.board import FLASH_BASE


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path / "conv", "sim-conv")


def intelhex_image(path) -> dict:
    ih = IntelHex(str(path))
    return {a: ih[a] for a in ih.addresses()}


def test_bin_to_hex_at_the_target_flash_start_and_back(project):
    data = random_image(3 * PAGE + 5)
    (project.dir / "fw.bin").write_bytes(data)
    project.sconstruct("env.HexFromBin('fw.bin')\nenv.BinFromHex('back.bin', 'fw.hex')\n")
    result = project.run(".")
    assert "convert fw.bin -> fw.hex" in result.stdout
    assert intelhex_image(project.dir / "fw.hex") == {FLASH_BASE + i: b for i, b in enumerate(data)}
    assert (project.dir / "back.bin").read_bytes() == data
    assert project.run(".").stdout.strip() == "scons: `.' is up to date."     # cached


def test_base_address_change_rebuilds_the_hex(project):
    (project.dir / "fw.bin").write_bytes(b"\x01\x02\x03\x04")
    project.sconstruct("env.HexFromBin('fw.bin')\n")
    project.run(".")
    project.run(".", "--base-address=0x08001000")
    assert min(IntelHex(str(project.dir / "fw.hex")).addresses()) == 0x08001000


def test_hex_with_a_gap_to_bin_uses_the_fill_byte(project):
    ih = IntelHex()
    ih[FLASH_BASE] = 0xAA
    ih[FLASH_BASE + 4] = 0xBB
    ih.write_hex_file(str(project.dir / "gap.hex"))
    project.sconstruct("env.BinFromHex('gap.hex')\n", PYOCD_FILL=0x00)
    project.run(".")
    assert (project.dir / "gap.bin").read_bytes() == b"\xaa\x00\x00\x00\xbb"


def test_bin_without_base_or_target_is_a_clear_error(project):
    (project.dir / "fw.bin").write_bytes(b"\x01\x02")
    project.sconstruct("env.HexFromBin('fw.bin')\n", target="")
    result = project.run(".", check=False)
    assert "fw.bin: a raw binary has no addresses; set PYOCD_BASE_ADDRESS" in result.stderr
    assert "Traceback" not in result.stderr


def test_nuttx_elf_to_hex_and_bin_match_nuttx_s_own(project, shared_firmware):
    nuttx = shared_firmware / "stm32vldiscovery-nsh-v1"
    (project.dir / "nuttx").write_bytes((nuttx / "nuttx").read_bytes())
    project.sconstruct("env.HexFromElf('nuttx')\nenv.BinFromElf('nuttx')\n")
    project.run(".")
    assert intelhex_image(project.dir / "nuttx.hex") == intelhex_image(nuttx / "nuttx.hex")
    assert (project.dir / "nuttx.bin").read_bytes() == (nuttx / "nuttx.bin").read_bytes()
    with open(nuttx / "nuttx", "rb") as f:
        loads = [seg for seg in ELFFile(f).iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
        lowest = min(seg["p_paddr"] for seg in loads)
    assert min(IntelHex(str(project.dir / "nuttx.hex")).addresses()) == lowest == FLASH_BASE


def test_a_converted_image_flashes(project, shared_firmware):
    nuttx = shared_firmware / "stm32vldiscovery-nsh-v1"
    (project.dir / "nuttx").write_bytes((nuttx / "nuttx").read_bytes())
    project.sconstruct("env.FlashAliases(env.HexFromElf('nuttx'))\n")
    project.run("flash")
    data = (nuttx / "nuttx.bin").read_bytes()
    assert project.board.read_flash(FLASH_BASE, len(data)) == data
