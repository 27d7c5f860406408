"""Shared test fixtures.

Every test gets its own per-user state directory (records, locks) and its own
simulated-board directory, so tests never see each other's boards or the
developer's real state.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE_SCONS = ROOT / "site_scons"
if str(SITE_SCONS) not in sys.path:
    sys.path.insert(0, str(SITE_SCONS))

#: Real NuttX builds, present when the repository sits beside ../shared.
SHARED_FIRMWARE = ROOT.parent / "shared" / "firmware"


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Point the tool's state and the simulator at fresh private directories."""
    root = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SCONS_PYOCD_STATE_DIR", str(root))
    monkeypatch.setenv("SCONS_PYOCD_SIM_DIR", str(root / "sim"))
    # Subprocesses (scons, pyocd) find the package even without pip install.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SITE_SCONS), os.environ.get("PYTHONPATH")])))
    return root


@pytest.fixture
def shared_firmware():
    """The ../shared/firmware folder, or skip when this clone has none beside it."""
    if not SHARED_FIRMWARE.is_dir():
        pytest.skip("../shared/firmware is not beside this checkout")
    return SHARED_FIRMWARE


@pytest.fixture(scope="session")
def arm_toolchain():
    """arm-none-eabi-gcc on PATH: installed with scripts/install-toolchain when we may (root
    with apt-get, as in CI), skipped only when we cannot."""
    import shutil
    import subprocess
    if shutil.which("arm-none-eabi-gcc"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("arm-none-eabi-gcc is missing and cannot be installed here: run scripts/install-toolchain")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-toolchain")], capture_output=True, text=True)
    if result.returncode != 0 or not shutil.which("arm-none-eabi-gcc"):
        pytest.fail("scripts/install-toolchain could not install the toolchain:\n" + result.stdout + result.stderr)
