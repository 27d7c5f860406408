"""Our STM32F1 flash algorithm: the committed blob is what its source assembles to."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ensure_toolchain():
    if shutil.which("arm-none-eabi-gcc") is None:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "install-toolchain")], capture_output=True, text=True)
        if shutil.which("arm-none-eabi-gcc") is None:
            pytest.skip(f"arm-none-eabi-gcc could not be installed: {result.stderr.strip()[-300:]}")


def test_committed_blob_matches_the_assembly_source():
    ensure_toolchain()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-flash-algo"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_algorithm_fits_the_ram_layout():
    from scons_pyocd.flash_algo import stm32f1_fpec_blob as blob
    assert blob.CODE_SIZE <= 0x400
    assert all(0 < off < blob.CODE_SIZE and off & 1 for off in blob.ENTRY_OFFSETS.values())
    assert blob.INSTRUCTIONS[0] & 0xFFFF == 0xBE00  # BKPT first: every routine returns to it
