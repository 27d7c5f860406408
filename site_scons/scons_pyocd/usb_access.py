"""Why a plugged-in ST-Link is not listed: what pyOCD cannot say without its log.

pyOCD skips an ST-Link it may not open (Linux without udev rules) and one it does not
support (the STM32VLDiscovery's own ST-Link/V1) without a word unless its log is on.
:func:`problems` reads Linux's sysfs (no USB access, no pyOCD) and says so, for the
"no probe found" messages and ``scons probes``. Elsewhere it finds nothing.

USB ids: STMicroelectronics' vendor id 0x0483 and the ST-Link product ids pyOCD's
driver lists (``pyocd/probe/stlink/usb.py``), plus the ST-Link/V1's 0x3744.
"""

import os
from pathlib import Path
from typing import Callable, List

ST = "0483"
#: product id -> name, for the ST-Links pyOCD drives.
STLINKS = {"3748": "ST-Link/V2", "374a": "ST-Link/V2-1", "374b": "ST-Link/V2-1", "3752": "ST-Link/V2-1",
           "374e": "ST-Link/V3", "374f": "ST-Link/V3", "3753": "ST-Link/V3", "3754": "ST-Link/V3",
           "3755": "ST-Link/V3", "3757": "ST-Link/V3"}
STLINK_V1 = "3744"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return ""


def problems(sys_root: str = "/sys/bus/usb/devices", dev_root: str = "/dev/bus/usb",
             access: Callable[[str, int], bool] = os.access) -> List[str]:
    """One sentence per ST-Link plugged in that pyOCD cannot use: one this user may not open
    (``access``: the udev rules are missing), or an ST-Link/V1. Empty when there is none, or
    no sysfs."""
    found = []
    root = Path(sys_root)
    if not root.is_dir():
        return found
    for device in sorted(root.iterdir()):
        if _read(device / "idVendor") != ST:
            continue
        product = _read(device / "idProduct")
        if product == STLINK_V1:
            found.append(f"an ST-Link/V1 ({ST}:{product}, e.g. the STM32VLDiscovery's own) is plugged in: "
                         "pyOCD does not support it; use an ST-Link/V2 or later (docs/real-hardware.md)")
            continue
        if product not in STLINKS:
            continue
        try:
            node = Path(dev_root) / f"{int(_read(device / 'busnum')):03d}" / f"{int(_read(device / 'devnum')):03d}"
        except ValueError:
            continue
        if node.exists() and not access(str(node), os.R_OK | os.W_OK):
            found.append(f"an {STLINKS[product]} ({ST}:{product}) is plugged in at {node}, but you may not "
                         "open it: install the udev rules (bash scripts/install-udev-rules, or scripts/setup "
                         "--udev), then unplug and plug it again")
    return found


def hint() -> str:
    """The problems as a sentence to add to a message ('' when none)."""
    found = problems()
    return (" Note: " + "; ".join(found) + ".") if found else ""
