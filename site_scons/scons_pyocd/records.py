"""What was last flashed onto each board, and who may use a probe right now.

A **board record** (``<state>/records/<probe>.json``, see :func:`paths.state_root`)
lists the images flashed onto one board through this tool, one entry per
*owner* (the build-tree file of an ``env.Flash`` node): image digest, the
sector ranges it occupies, target, probe, options digest, project, user and
time. An entry is *valid* only after its flash fully succeeded and verified.
Before anything is written to the chip, every entry whose sectors the write
touches (all of them for a mass erase) is marked invalid with the reason and a
unique event id, and that is saved first; so a flash that fails, is
interrupted, or is killed leaves no claim that the board holds anything.

:meth:`BoardRecord.token` is what SCons compares (a ``Value`` node beside the
image): for a valid entry, the token stored with it; otherwise a sentence
saying what happened to the board, unique to the event. The flash action
stores the token this build computed with the new entry, so a successful
flash reads back the same token next time (up to date), and any other write
to the board changes it (reflash, and ``--debug=explain`` prints why).

A **probe lock** (``<state>/locks/<probe>.lock``, ``flock``) serializes every
operation on one probe across processes; the kernel releases it when its
holder dies, and a waiter prints who holds it.

Files are written atomically (temporary file, then rename) with private
permissions. This module imports neither SCons nor pyOCD.
"""

import contextlib
import errno
import fcntl
import getpass
import hashlib
import json
import os
import re
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from . import paths
from .errors import FlashError

VERSION = 1
#: Entries kept per board; the oldest invalid ones go first.
MAX_ENTRIES = 32
Range = Tuple[int, int]


def board_key(probe_id: str) -> str:
    """A file name for a probe id: readable, and distinct for distinct ids."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", probe_id)[:64] or "_"
    if safe != probe_id or safe.startswith("."):
        safe = f"{safe.lstrip('.') or '_'}-{hashlib.sha256(probe_id.encode()).hexdigest()[:8]}"
    return safe


def _private_dir(name: str) -> Path:
    path = paths.state_root() / name
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (temporary file in the same directory,
    fsync, rename), readable by the owner only."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:   # no login name (containers): the uid says enough
        return str(os.getuid())


def _overlaps(a: Sequence[Range], b: Sequence[Range]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


class BoardRecord:
    """The record of one board (one probe id). Load, change under the probe lock, save."""

    def __init__(self, probe_id: str):
        self.probe_id = probe_id
        self.path = _private_dir("records") / f"{board_key(probe_id)}.json"
        self.data = self._load()

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = None
        except (OSError, ValueError):
            # A record we cannot read claims nothing: treat the board as unknown.
            data = {"generation": 1, "entries": [], "note": "unreadable record replaced"}
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            data = {"generation": 0, "entries": []}
        data.setdefault("generation", 0)
        data["version"] = VERSION
        data["board"] = self.probe_id
        return data

    @property
    def entries(self) -> List[dict]:
        return self.data["entries"]

    def entry(self, owner: str) -> Optional[dict]:
        for entry in self.entries:
            if entry.get("owner") == owner:
                return entry
        return None

    def token(self, owner: str) -> str:
        """What SCons compares for ``owner`` (see the module docstring)."""
        entry = self.entry(owner)
        if entry is None:
            return (f"board {self.probe_id}: nothing recorded for this image "
                    f"(board generation {self.data['generation']})")
        if entry.get("valid"):
            return entry["token"]
        why = entry.get("invalidated", {})
        return (f"board {self.probe_id}: {why.get('reason', 'record invalidated')} "
                f"({why.get('time', '?')}, event {why.get('event', '?')[:8]})")

    def describe(self, owner: str) -> str:
        """One line for 'flash is up to date (...)': what the board holds for ``owner``."""
        entry = self.entry(owner)
        if entry is None or not entry.get("valid"):
            return f"board {self.probe_id}: no valid record"
        return (f"image {entry['image_sha256'][:12]}, board {self.probe_id}, "
                f"flashed {entry['time']}")

    # -- changes: call these while holding the probe lock ------------------------
    def invalidate(self, ranges: Optional[Sequence[Range]], reason: str) -> None:
        """Mark every entry overlapping ``ranges`` (None: all) invalid, and save."""
        event = uuid.uuid4().hex
        stamp = {"reason": reason, "time": _now(), "event": event}
        for entry in self.entries:
            if ranges is None or _overlaps(entry.get("ranges", []), ranges):
                entry["valid"] = False
                entry["invalidated"] = stamp
        self.data["generation"] += 1
        self.save()

    def claim(self, owner: str, token: str, ranges: Sequence[Range], **facts) -> None:
        """Record that ``owner``'s image is on the board (after a verified flash), and save."""
        self.data["entries"] = [e for e in self.entries if e.get("owner") != owner]
        entry = {"owner": owner, "valid": True, "token": token, "ranges": [list(r) for r in ranges],
                 "time": _now(), "user": _user(), "host": socket.gethostname()}
        entry.update(facts)
        self.entries.append(entry)
        self.data["generation"] += 1
        self._trim()
        self.save()

    def _trim(self) -> None:
        while len(self.entries) > MAX_ENTRIES:
            invalid = [e for e in self.entries if not e.get("valid")]
            self.entries.remove((invalid or self.entries)[0])

    def save(self) -> None:
        try:
            atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise FlashError(f"cannot write the board record {self.path} ({exc.strerror or exc}). "
                             "Check that the state directory (SCONS_PYOCD_STATE_DIR) is writable "
                             "and the disk is not full.") from None


def token(probe_id: str, owner: str) -> str:
    """The change-detection token of ``owner`` on ``probe_id`` (reads one small file)."""
    return BoardRecord(probe_id).token(owner)


# -- which probe a configured id meant last time ----------------------------------------
def _resolved_path() -> Path:
    return _private_dir("records") / "resolved-probes.json"


def _resolved_map() -> dict:
    try:
        data = json.loads(_resolved_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolved_probe(configured: str) -> str:
    """The unique id that ``configured`` (an id, a part of one, or '' for 'the only probe
    attached') resolved to last time; ``configured`` itself when unknown.

    Change detection reads the record of this id without asking USB; when the probe
    behind a partial or empty id changes, only ``--flash-check`` notices.
    """
    return _resolved_map().get(configured, configured)


def remember_resolved_probe(configured: str, unique_id: str) -> None:
    if configured == unique_id or resolved_probe(configured) == unique_id:
        return
    data = _resolved_map()
    data[configured] = unique_id
    atomic_write(_resolved_path(), json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- the probe lock ------------------------------------------------------------------
@contextlib.contextmanager
def probe_lock(probe_id: str, on_wait: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the lock of ``probe_id`` across processes (and threads) for the ``with`` body.

    When another process holds it, call ``on_wait("waiting for probe X held by pid N")``
    once and block until it is released (the kernel releases it if the holder dies).
    """
    path = _private_dir("locks") / f"{board_key(probe_id)}.lock"
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            on_wait(f"waiting for probe {probe_id} held by pid {holder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
