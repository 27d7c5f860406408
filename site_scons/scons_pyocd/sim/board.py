"""The persistent state of one simulated STM32VLDiscovery board.

Each board is a directory ``$SCONS_PYOCD_SIM_DIR/<board-id>/`` (see
:mod:`scons_pyocd.paths`) that anyone can inspect:

``flash.bin``
    The 128 KiB of main flash, raw, offset 0 = address 0x08000000. The simulator
    maps it into memory, so every half-word the chip programs is in the file at
    once: a process killed mid-flash leaves exactly what the chip would hold.
``option_bytes.bin``
    The 16 bytes of the option-byte block at 0x1FFFF800 (RDP, USER, DATA0,
    DATA1, WRP0-WRP3, each followed by its complement).
``identity.json``
    What the chip reports: DBGMCU_IDCODE, flash size (KiB), CPUID, DPIDR, the
    96-bit unique id.
``counters.json``
    Connects, resets, pages erased, mass erases, half-words programmed, bytes
    read and written over the debug port, modeled device time, words fed to the
    CRC unit, and what a real chip would not like: CRC accesses with its clock
    off, switches onto an out-of-spec clock, flash operations with the HSI off.
``faults.json``
    Injected faults (see :data:`FAULTS`); empty when the board behaves.
``lock``
    Held (``flock``) by the process that has the probe open.

This module is plain Python: no pyOCD, no Unicorn. Tests and the ``scons-pyocd-sim``
command use it to look at and alter a board between processes.
"""

import json
import os
import re
from pathlib import Path
from typing import Dict, Iterable, Optional

from .. import paths

FLASH_BASE = 0x08000000
FLASH_SIZE = 128 * 1024
PAGE_SIZE = 1024
OPTION_BYTES_SIZE = 16

#: STM32F100RB identity (REFERENCE.md): DEV_ID 0x420, REV_ID 0x1001 (rev Z).
DEFAULT_IDENTITY = {
    "idcode": 0x10016420,
    "flash_kb": 128,
    "cpuid": 0x411FC231,
    "dpidr": 0x1BA01477,
    "unique_id": "3256ff0a4d48323714201243",
}

#: A few identities worth simulating as "the wrong chip".
KNOWN_IDENTITIES = {
    "stm32f100rb": dict(DEFAULT_IDENTITY),
    # High-density STM32F103 (e.g. F103RC/RE): DEV_ID 0x414, 512 KiB.
    "stm32f103re": {"idcode": 0x10036414, "flash_kb": 512},
    # Medium-density STM32F103 (F103RB): DEV_ID 0x410, 128 KiB.
    "stm32f103rb": {"idcode": 0x20036410, "flash_kb": 128},
}

COUNTER_NAMES = (
    "connects",
    "resets",
    "pages_erased",
    "mass_erases",
    "halfwords_programmed",
    "dp_bytes_read",
    "dp_bytes_written",
    "device_time_s",
    "crc_words",
    "crc_accesses_clock_off",
    "clock_out_of_spec",
    "flash_ops_without_hsi",
)

#: Injectable faults: name -> what it does. Each one-shot fault is removed from
#: ``faults.json`` when it fires, so the next session finds a healthy board.
FAULTS = {
    "disconnect_after": "the probe disconnects (USB unplugged) after N debug-port transfers in one session",
    "hang_after": "the target stops answering (SWD WAIT on every transfer) after N transfers in one session",
    "fault_after": "the target answers FAULT to every transfer after N transfers in one session",
    "power_loss_after_halfwords": "power is lost after N half-words programmed in one session, "
                                  "leaving the page half-programmed; the target then does not answer",
}

_BOARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_option_bytes() -> bytes:
    """Factory option bytes: RDP 0xA5 (not read-protected), no write protection."""
    pairs = [0xA5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    return bytes(b for v in pairs for b in (v, v ^ 0xFF))


class BoardState:
    """One simulated board's directory: its flash, option bytes, identity, counters and faults."""

    def __init__(self, board_id: str, root: Optional[Path] = None):
        if not _BOARD_ID.match(board_id):
            raise ValueError(f"invalid simulated board id {board_id!r}: use letters, digits, '-', '_' and '.'")
        self.board_id = board_id
        self.path = Path(root) if root is not None else paths.sim_root() / board_id
        self._ensure()

    # -- files ----------------------------------------------------------------
    def _file(self, name: str) -> Path:
        return self.path / name

    def _ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        flash = self._file("flash.bin")
        if not flash.exists() or flash.stat().st_size != FLASH_SIZE:
            self._atomic_write(flash, b"\xff" * FLASH_SIZE)
        ob = self._file("option_bytes.bin")
        if not ob.exists():
            self._atomic_write(ob, default_option_bytes())
        if not self._file("identity.json").exists():
            self._write_json("identity.json", DEFAULT_IDENTITY)
        if not self._file("counters.json").exists():
            self._write_json("counters.json", {k: 0 for k in COUNTER_NAMES})
        if not self._file("faults.json").exists():
            self._write_json("faults.json", {})

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads(self._file(name).read_text())
        except (OSError, ValueError):
            return {}

    def _write_json(self, name: str, data: dict) -> None:
        self._atomic_write(self._file(name), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    @property
    def flash_path(self) -> Path:
        return self._file("flash.bin")

    @property
    def lock_path(self) -> Path:
        return self._file("lock")

    # -- flash ------------------------------------------------------------------
    def read_flash(self, address: int = FLASH_BASE, length: Optional[int] = None) -> bytes:
        """Main flash contents, by absolute address (default: all 128 KiB)."""
        data = self.flash_path.read_bytes()
        start = address - FLASH_BASE
        end = FLASH_SIZE if length is None else start + length
        if not 0 <= start <= end <= FLASH_SIZE:
            raise ValueError(f"range 0x{address:08x}+{end - start} is outside main flash")
        return data[start:end]

    def write_flash(self, offset_or_address: int, data: bytes) -> None:
        """Alter flash behind the debugger's back (as another tool or the firmware would).

        Accepts an offset into flash or an absolute address in 0x08000000-0x0801FFFF.
        """
        offset = offset_or_address - FLASH_BASE if offset_or_address >= FLASH_BASE else offset_or_address
        if not 0 <= offset <= offset + len(data) <= FLASH_SIZE:
            raise ValueError("write outside main flash")
        with open(self.flash_path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def erase_flash(self) -> None:
        """Erase all of main flash (0xFF), as a mass erase would."""
        self.write_flash(0, b"\xff" * FLASH_SIZE)

    # -- option bytes -----------------------------------------------------------
    def read_option_bytes(self) -> bytes:
        data = self._file("option_bytes.bin").read_bytes()
        return data if len(data) == OPTION_BYTES_SIZE else default_option_bytes()

    def write_option_bytes(self, data: bytes) -> None:
        if len(data) != OPTION_BYTES_SIZE:
            raise ValueError("option bytes are 16 bytes")
        self._atomic_write(self._file("option_bytes.bin"), bytes(data))

    def set_write_protection(self, pages: Iterable[int] = ()) -> None:
        """Write-protect the 4-page groups holding ``pages`` (page numbers 0-127); () clears it.

        WRP0-WRP3 hold one bit per group of 4 pages, 0 = protected (RM0041).
        """
        wrp = 0xFFFFFFFF
        for page in pages:
            if not 0 <= page < FLASH_SIZE // PAGE_SIZE:
                raise ValueError(f"page {page} is outside main flash (0-127)")
            wrp &= ~(1 << (page // 4))
        ob = bytearray(self.read_option_bytes())
        for i in range(4):
            byte = (wrp >> (8 * i)) & 0xFF
            ob[8 + 2 * i] = byte
            ob[9 + 2 * i] = byte ^ 0xFF
        self.write_option_bytes(bytes(ob))

    def set_read_protection(self, enabled: bool = True) -> None:
        """Set RDP to a protecting value (0x00) or back to 0xA5 (unprotected, without the erase)."""
        ob = bytearray(self.read_option_bytes())
        ob[0] = 0x00 if enabled else 0xA5
        ob[1] = ob[0] ^ 0xFF
        self.write_option_bytes(bytes(ob))

    # -- identity -----------------------------------------------------------------
    def identity(self) -> dict:
        ident = dict(DEFAULT_IDENTITY)
        ident.update(self._read_json("identity.json"))
        return ident

    def set_identity(self, name: Optional[str] = None, **fields) -> None:
        """Make the chip report another identity: a name from :data:`KNOWN_IDENTITIES`
        and/or fields (``idcode``, ``flash_kb``, ``cpuid``, ``dpidr``, ``unique_id``).
        ``set_identity("stm32f100rb")`` restores the default."""
        ident = dict(DEFAULT_IDENTITY)
        if name is not None:
            if name not in KNOWN_IDENTITIES:
                raise ValueError(f"unknown identity {name!r}; known: {', '.join(sorted(KNOWN_IDENTITIES))}")
            ident.update(KNOWN_IDENTITIES[name])
        unknown = set(fields) - set(DEFAULT_IDENTITY)
        if unknown:
            raise ValueError(f"unknown identity field(s): {', '.join(sorted(unknown))}")
        ident.update(fields)
        self._write_json("identity.json", ident)

    # -- counters -----------------------------------------------------------------
    def counters(self) -> Dict[str, float]:
        data = {k: 0 for k in COUNTER_NAMES}
        data.update(self._read_json("counters.json"))
        return data

    def save_counters(self, counters: Dict[str, float]) -> None:
        self._write_json("counters.json", counters)

    def reset_counters(self) -> None:
        self.save_counters({k: 0 for k in COUNTER_NAMES})

    # -- faults -------------------------------------------------------------------
    def faults(self) -> Dict[str, int]:
        return self._read_json("faults.json")

    def set_fault(self, name: str, value: int) -> None:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        faults = self.faults()
        faults[name] = int(value)
        self._write_json("faults.json", faults)

    def clear_fault(self, name: str) -> None:
        faults = self.faults()
        faults.pop(name, None)
        self._write_json("faults.json", faults)

    def clear_faults(self) -> None:
        self._write_json("faults.json", {})

    def restore_factory(self) -> None:
        """Erased flash, default option bytes and identity, no faults, zero counters."""
        self.erase_flash()
        self.write_option_bytes(default_option_bytes())
        self.set_identity()
        self.clear_faults()
        self.reset_counters()


def list_boards(root: Optional[Path] = None) -> list:
    """Ids of the boards that exist under the simulator directory."""
    base = Path(root) if root is not None else paths.sim_root()
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "flash.bin").exists()) if base.is_dir() else []
