"""The persistent state of one simulated STM32VLDiscovery board.

A board exists only once created: :func:`create_board` (or ``BoardState.create``,
or ``scons-pyocd-sim create ID``) makes it; :class:`BoardState` opens one that
exists and raises :class:`NoSuchBoard` (a FlashError naming the boards that do
exist and how to create one) otherwise, so a mistyped probe id is an error, never
a new blank board. :func:`ensure_board` creates a board only when it is missing
(what the demo's SConstruct does for ``sim-vldiscovery``).

Each created board gets its own random 96-bit unique id (the chip's UID at
0x1FFFF7E8), as two real chips would have; ``restore_factory`` keeps it unless
asked for a new one.

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

import difflib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

from .. import paths
from ..errors import FlashError

FLASH_BASE = 0x08000000
FLASH_SIZE = 128 * 1024
PAGE_SIZE = 1024
OPTION_BYTES_SIZE = 16

#: STM32F100RB identity (REFERENCE.md): DEV_ID 0x420, REV_ID 0x1001 (rev Z). The unique id
#: here is what boards created before unique ids were per board report; new boards get
#: a random one (:func:`new_unique_id`).
DEFAULT_IDENTITY = {
    "idcode": 0x10016420,
    "flash_kb": 128,
    "cpuid": 0x411FC231,
    "dpidr": 0x1BA01477,
    "unique_id": "3256ff0a4d48323714201243",
}

#: A few identities worth simulating as "the wrong chip".
KNOWN_IDENTITIES = {
    "stm32f100rb": {k: v for k, v in DEFAULT_IDENTITY.items() if k != "unique_id"},
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
    "pause_after_halfwords": "the probe stops at its first transfer after N half-words programmed in one "
                             "session, its counters saved, until the board's 'paused' file is removed "
                             "(for tests that interrupt a flash at a known point)",
    "pause_after_pages_erased": "the same, after N pages erased in one session",
}

#: How long a paused probe waits at most for its 'paused' file to go (s): a safety net only.
PAUSE_LIMIT_S = 3600

#: The chip's 96-bit unique id (0x1FFFF7E8-0x1FFFF7F3) as hex digits in identity.json.
UNIQUE_ID_HEX_DIGITS = 24

_BOARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidBoardId(FlashError, ValueError):
    """A simulated board id with characters a board directory cannot have."""


class NoSuchBoard(FlashError, LookupError):
    """No simulated board with this id has been created. ``board_id``, ``existing`` (ids), ``root``."""

    def __init__(self, message: str, board_id: str, root: Path, existing: list):
        super().__init__(message)
        self.board_id, self.root, self.existing = board_id, root, existing


def _no_such_board(board_id: str, root: Path) -> NoSuchBoard:
    existing = list_boards(root)
    close = difflib.get_close_matches(board_id, existing, n=1)
    there = (f"the simulated boards that exist are {', '.join(existing)} (in {root})" if existing
             else f"no simulated board exists yet (in {root})")
    guess = f" Did you mean {close[0]}?" if close else ""
    return NoSuchBoard(f"no simulated board {board_id!r}: {there}.{guess} A simulated board exists only "
                       f"once created: create it with 'scons-pyocd-sim create {board_id}' (or, from Python, "
                       f"scons_pyocd.sim.create_board({board_id!r})), or give the id of one that exists.",
                       board_id, root, existing)


class BoardExists(FlashError, FileExistsError):
    """``create`` of a board id that is already taken."""


def new_unique_id() -> str:
    """A random 96-bit unique id, as 24 hex digits (the layout of 0x1FFFF7E8-0x1FFFF7F3)."""
    return secrets.token_bytes(UNIQUE_ID_HEX_DIGITS // 2).hex()


def check_board_id(board_id: str) -> str:
    """``board_id`` if it can name a board directory; InvalidBoardId otherwise."""
    if not isinstance(board_id, str) or not _BOARD_ID.match(board_id):
        raise InvalidBoardId(f"invalid simulated board id {board_id!r}: use letters, digits, '-', '_' "
                             "and '.' (up to 64), starting with a letter or digit, e.g. sim-mine.")
    return board_id


def default_option_bytes() -> bytes:
    """Factory option bytes: RDP 0xA5 (not read-protected), no write protection."""
    pairs = [0xA5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    return bytes(b for v in pairs for b in (v, v ^ 0xFF))


class BoardState:
    """One existing simulated board's directory: its flash, option bytes, identity, counters and faults.

    ``BoardState(board_id)`` opens a board that exists (NoSuchBoard otherwise, InvalidBoardId for
    an id no directory can have; both are FlashErrors). ``root`` is the board's directory when
    it is not ``<sim root>/<board_id>``. :meth:`create` makes a new board.
    """

    def __init__(self, board_id: str, root: Optional[Path] = None):
        self.board_id = check_board_id(board_id)
        self.path = Path(root) if root is not None else paths.sim_root_path() / board_id
        if not self._file("flash.bin").is_file():
            raise _no_such_board(board_id, self.path.parent)
        self._repair()

    @classmethod
    def create(cls, board_id: str, root: Optional[Path] = None, unique_id: Optional[str] = None,
               exist_ok: bool = False) -> "BoardState":
        """Create board ``board_id``: erased flash, factory option bytes, the STM32F100RB's identity
        with ``unique_id`` (24 hex digits; a random one by default), zero counters, no faults.

        An existing board is returned unchanged with ``exist_ok``; BoardExists otherwise.
        """
        check_board_id(board_id)
        uid = _check_unique_id(unique_id) if unique_id is not None else new_unique_id()
        path = Path(root) if root is not None else paths.sim_root() / board_id
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = dict(DEFAULT_IDENTITY, unique_id=uid)
        made = cls._create_exclusive(path / "identity.json",
                                     (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())
        if not made and (path / "flash.bin").is_file():
            if exist_ok:
                return cls(board_id, path)
            raise BoardExists(f"simulated board {board_id!r} already exists (in {path}); use it as it is, "
                              f"or 'scons-pyocd-sim factory {board_id}' to erase it.")
        for name, data in (("option_bytes.bin", default_option_bytes()),
                           ("counters.json", _json_bytes({k: 0 for k in COUNTER_NAMES})),
                           ("faults.json", _json_bytes({}))):
            cls._atomic_write(path / name, data)
        cls._atomic_write(path / "flash.bin", b"\xff" * FLASH_SIZE)  # last: the board exists from here on
        return cls(board_id, path)

    @staticmethod
    def _create_exclusive(path: Path, data: bytes) -> bool:
        """Write ``path`` only if it does not exist (atomically); whether this call wrote it."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    # -- files ----------------------------------------------------------------
    def _file(self, name: str) -> Path:
        return self.path / name

    def _repair(self) -> None:
        """Put back a missing or truncated file of an existing board (never its identity)."""
        flash = self._file("flash.bin")
        if flash.stat().st_size != FLASH_SIZE:
            self._atomic_write(flash, b"\xff" * FLASH_SIZE)
        if not self._file("option_bytes.bin").exists():
            self._atomic_write(self._file("option_bytes.bin"), default_option_bytes())
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
        self._atomic_write(self._file(name), _json_bytes(data))

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
        ``set_identity("stm32f100rb")`` restores the default. The board keeps its own
        unique id unless ``unique_id`` is given. ValueError on an unknown name or field."""
        ident = dict(DEFAULT_IDENTITY, unique_id=self.identity()["unique_id"])
        if name is not None:
            if name not in KNOWN_IDENTITIES:
                raise ValueError(f"unknown identity {name!r}; known: {', '.join(sorted(KNOWN_IDENTITIES))}")
            ident.update(KNOWN_IDENTITIES[name])
        unknown = set(fields) - set(DEFAULT_IDENTITY)
        if unknown:
            raise ValueError(f"unknown identity field(s): {', '.join(sorted(unknown))}")
        if "unique_id" in fields:
            fields["unique_id"] = _check_unique_id(fields["unique_id"])
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

    # -- pausing a session (the pause_after_halfwords fault) -------------------------------
    @property
    def _pause_marker(self) -> Path:
        return self.path / "paused"

    def pause(self) -> None:
        """Block the calling session until :meth:`resume` (or PAUSE_LIMIT_S): the probe side."""
        self._pause_marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + PAUSE_LIMIT_S
        while self._pause_marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    def paused(self) -> bool:
        """Whether a session of this board is paused (the test side)."""
        return self._pause_marker.exists()

    def resume(self) -> None:
        """Let a paused session go on."""
        self._pause_marker.unlink(missing_ok=True)

    def restore_factory(self, unique_id: Optional[str] = None) -> None:
        """Erased flash, default option bytes and identity, no faults, zero counters.

        The board keeps its own unique id (it is the same chip) unless ``unique_id`` is
        given: 24 hex digits, or ``"new"`` for a fresh random one (another chip)."""
        if unique_id is not None:
            unique_id = new_unique_id() if unique_id == "new" else _check_unique_id(unique_id)
        self.erase_flash()
        self.write_option_bytes(default_option_bytes())
        if unique_id is None:
            self.set_identity()
        else:
            self.set_identity(unique_id=unique_id)
        self.clear_faults()
        self.reset_counters()


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _check_unique_id(value: str) -> str:
    text = str(value).lower()
    if not re.fullmatch(f"[0-9a-f]{{{UNIQUE_ID_HEX_DIGITS}}}", text):
        raise ValueError(f"invalid unique id {value!r}: give 24 hex digits (96 bits)")
    return text


def list_boards(root: Optional[Path] = None) -> list:
    """Ids of the boards that exist under the simulator directory (nothing is created)."""
    base = Path(root) if root is not None else paths.sim_root_path()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "flash.bin").is_file())


def create_board(board_id: str, unique_id: Optional[str] = None) -> BoardState:
    """Create simulated board ``board_id`` (see :meth:`BoardState.create`); BoardExists if it exists."""
    return BoardState.create(board_id, unique_id=unique_id)


def ensure_board(board_id: str) -> BoardState:
    """The simulated board ``board_id``, created (with a random unique id) if it does not exist yet.

    For a project's own default board, e.g. the demo SConstruct's ``sim-vldiscovery``; an id
    typed by a user should go through :class:`BoardState`, so that a typo is an error."""
    return BoardState.create(board_id, exist_ok=True)
