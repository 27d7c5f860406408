"""What helps with a real ST-Link, short of one: the udev rules and their installer, and the
diagnosis of a plugged-in ST-Link pyOCD cannot use (no permission, or an ST-Link/V1), from
a fake sysfs."""

import os
import re
import subprocess
from pathlib import Path

from scons_pyocd import usb_access

ROOT = Path(__file__).resolve().parent.parent


def fake_usb(tmp_path, devices):
    """A sysfs and /dev/bus/usb with ``devices``: (vendor, product, bus, dev)."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    for i, (vendor, product, bus, dev) in enumerate(devices):
        folder = sys_root / f"1-{i + 1}"
        folder.mkdir(parents=True)
        for name, value in (("idVendor", vendor), ("idProduct", product), ("busnum", str(bus)), ("devnum", str(dev))):
            (folder / name).write_text(value + "\n")
        node = dev_root / f"{bus:03d}" / f"{dev:03d}"
        node.parent.mkdir(parents=True, exist_ok=True)
        node.write_bytes(b"")
    (sys_root / "usb1").mkdir(parents=True, exist_ok=True)      # a hub without ids
    return str(sys_root), str(dev_root)


def test_a_stlink_without_permission_and_an_stlink_v1_are_named(tmp_path):
    sys_root, dev_root = fake_usb(tmp_path, [("0483", "3748", 1, 5), ("0483", "3744", 1, 6),
                                            ("0483", "374b", 2, 7), ("1366", "0101", 2, 8)])
    denied = {str(Path(dev_root) / "001" / "005")}
    found = usb_access.problems(sys_root, dev_root, access=lambda path, mode: path not in denied)
    assert found == [
        f"an ST-Link/V2 (0483:3748) is plugged in at {dev_root}/001/005, but you may not open it: install the "
        "udev rules (bash scripts/install-udev-rules, or scripts/setup --udev), then unplug and plug it again",
        "an ST-Link/V1 (0483:3744, e.g. the STM32VLDiscovery's own) is plugged in: pyOCD does not support it; "
        "use an ST-Link/V2 or later (docs/real-hardware.md)"]
    assert usb_access.problems(sys_root, dev_root, access=lambda path, mode: True) == found[1:]
    assert usb_access.problems(str(tmp_path / "no-sysfs"), dev_root) == []


def test_the_udev_rules_cover_every_stlink_pyocd_drives_and_install(tmp_path):
    rules = (ROOT / "scripts" / "udev" / "60-scons-pyocd-stlink.rules").read_text()
    products = set(re.findall(r'ATTR\{idVendor\}=="0483", ATTR\{idProduct\}=="([0-9a-f]{4})"', rules))
    assert products == set(usb_access.STLINKS)
    from pyocd.probe.stlink.usb import STLinkUSBInterface
    assert {f"{pid:04x}" for pid in STLinkUSBInterface.USB_PID_EP_MAP} == products
    dest = tmp_path / "rules.d"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install-udev-rules")], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, UDEV_RULES_DIR=str(dest)))
    assert result.returncode == 0, result.stderr
    assert (dest / "60-scons-pyocd-stlink.rules").read_text() == rules
    assert oct((dest / "60-scons-pyocd-stlink.rules").stat().st_mode & 0o777) == "0o644"
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--udev) UDEV=1" in setup and "bash scripts/install-udev-rules" in setup
    assert re.search(r"pip install .*-e '\.\[sim[,\]]", setup), "setup must install the simulator extra"


def test_what_pyocd_says_about_an_st_link_is_translated():
    from pyocd.core.exceptions import ProbeError
    from scons_pyocd.session import _translated
    old = _translated(ProbeError("STLink 066DFF48 is using an unsupported, older firmware version. Please update "
                                 "to the latest STLink firmware. Current version is V2J21S4, must be at least "
                                 "version v2J24."), "066DFF48", "connecting")
    assert str(old).startswith("probe 066DFF48 runs ST-Link firmware older than pyOCD supports (STLink 066DFF48 "
                               "is using an unsupported")
    assert "STSW-LINK007" in str(old) and "V2J24" in str(old)
    slow = _translated(ProbeError("Selected SWD frequency is too low"), "066DFF48", "connecting")
    assert str(slow).startswith("probe 066DFF48 cannot run SWD that slowly (Selected SWD frequency is too low)")
    other = _translated(ProbeError("busy"), "066DFF48", "connecting")
    assert "Is another program" in str(other)
