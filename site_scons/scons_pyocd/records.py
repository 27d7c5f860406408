"""What the tool knows each board holds, and who may use a probe right now.

A **board record** (``<state>/records/<probe>.json``, see :mod:`.paths`) is kept per
probe unique id. It holds the chip last seen behind that probe (its factory unique
id and target) and one **entry** per *owner* (the build-tree file of an
``env.Flash`` node) describing the image that owner flashed: the image file's and
content's digests, the flashing options, and for every flash page the image
touches, the page's start and end, the image's byte ranges inside it, a digest of
the image's bytes there, and the CRC-32 of the whole page as the chip held it
right after (``pages``). An entry is *valid* only after its flash fully succeeded
and verified.

The rules that keep "record says X => the chip holds X" true:

- **Before any write** to the chip, every entry with a page among those about to
  be erased or programmed (all of them for a mass erase) is marked invalid with
  the reason and a unique event id, and that is saved first; so a write that
  fails, is interrupted, or is killed leaves no claim (:meth:`BoardRecord.invalidate`).
- **Whatever the tool learns** about pages (a comparison, a verify, a flash)
  is checked against every entry with those pages (:meth:`BoardRecord.learn`):
  a page whose CRC is not the one the entry recorded invalidates the entry,
  unless the tool knows the page's whole new content and the entry's own bytes
  are intact in it (another image rewrote the rest of a shared page). An entry
  invalidated only by a write whose new content keeps its bytes is valid again.
- **Another chip** behind the same probe (a different unique id) invalidates
  every entry (:meth:`BoardRecord.see_chip`).
- A record that cannot be read, or is not what this version writes, claims
  nothing (with a warning naming the file).

Whether a flash is up to date (:meth:`BoardRecord.up_to_date`) is decided when
the flash node runs, from this file and the image file only (no probe, no
pyOCD), and once more under the probe lock right before anything is written.

A **probe lock** (``<state>/locks/<probe>.lock``, ``flock``) serializes every
operation on one probe across processes; the kernel releases it when its holder
dies, and a waiter prints who holds it.

Files are written atomically (temporary file, then rename) with private
permissions, and opened without following symbolic links. This module imports
neither SCons nor pyOCD.
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
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from . import options as option_table, paths, report
from .ranges import overlaps
from .errors import FlashError

#: The record format this version reads and writes; a record of another version claims nothing.
VERSION = 2
#: Entries kept per board; the oldest invalid ones go first.
MAX_ENTRIES = 32
Range = Tuple[int, int]


def board_key(probe_id: str) -> str:
    """A file name for a probe id: readable, and distinct for distinct ids."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", probe_id)[:64] or "_"
    if safe != probe_id or safe.startswith("."):
        safe = f"{safe.lstrip('.') or '_'}-{hashlib.sha256(probe_id.encode()).hexdigest()[:8]}"
    return safe


def _state_problem(path: Path, what: str, exc: OSError) -> FlashError:
    return FlashError(f"cannot {what} {path} ({exc.strerror or exc}). Check that the state directory "
                      "(SCONS_PYOCD_STATE_DIR) is yours, writable, and the disk is not full.")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (temporary file in the same directory,
    fsync, rename; a symbolic link at ``path`` is replaced, never followed), readable by the
    owner only. Raises FlashError naming the path."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise _state_problem(path, "write", exc) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _state_problem(path, "write", exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: Path) -> Optional[bytes]:
    """The bytes of a state file, None if it does not exist. A symbolic link is not
    followed (it reads as unreadable: FlashError)."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FlashError(f"{path} is a symbolic link; the tool does not follow links in its state "
                             "directory. Remove the link (the tool recreates the file).") from None
        raise _state_problem(path, "read", exc) from None
    with os.fdopen(fd, "rb") as f:
        return f.read()


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (the cheap test of 'same image file as last time')."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def masked_digest(read: Callable[[int, int], bytes], ranges: Sequence[Range]) -> str:
    """SHA-256 of the bytes at ``ranges`` (each ``(start, end)``, end exclusive), as
    ``read(address, length)`` gives them, with each range's address and length."""
    digest = hashlib.sha256()
    for lo, hi in ranges:
        digest.update(struct.pack("<QQ", lo, hi - lo))
        digest.update(read(lo, hi - lo))
    return digest.hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:   # no login name (containers): the uid says enough
        return str(os.getuid())


# -- what an entry says about pages ------------------------------------------------------
#: One page of an entry, as stored: {"end": int, "crc": int, "ranges": [[lo, hi], ...], "sha256": str}.
PageClaim = Dict[str, Any]


def page_claims(image, page_crcs: Mapping[int, int], page_size_at: Callable[[int], int]) -> Dict[int, PageClaim]:
    """The ``pages`` of an entry for ``image`` (an :class:`~scons_pyocd.images.Image`) on a chip
    whose pages now have ``page_crcs`` (page start -> CRC-32 of the whole page)."""
    claims: Dict[int, PageClaim] = {}
    for start, crc in sorted(page_crcs.items()):
        end = start + page_size_at(start)
        ranges = [(max(lo, start), min(hi, end)) for lo, hi in image.ranges() if lo < end and start < hi]
        if ranges:
            claims[start] = {"end": end, "crc": crc, "ranges": [list(r) for r in ranges],
                             "sha256": masked_digest(image.data_at, ranges)}
    return claims


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_page(key: str, page: Any) -> bool:
    try:
        start = int(key, 16)
    except (TypeError, ValueError):
        return False
    return (isinstance(page, dict) and _is_int(page.get("end")) and page["end"] > start
            and _is_int(page.get("crc")) and isinstance(page.get("sha256"), str)
            and isinstance(page.get("ranges"), list)
            and all(isinstance(r, list) and len(r) == 2 and all(map(_is_int, r)) and start <= r[0] < r[1] <= page["end"]
                    for r in page["ranges"]))


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("owner"), str):
        return False
    if not isinstance(entry.get("valid"), bool) or not isinstance(entry.get("pages", {}), dict):
        return False
    if entry.get("valid"):
        needed = ("file_sha256", "image_sha256", "target")
        if not all(isinstance(entry.get(k), str) for k in needed) or not isinstance(entry.get("options"), dict):
            return False
    if not isinstance(entry.get("invalidated", {}), dict):
        return False
    return all(_valid_page(k, v) for k, v in entry.get("pages", {}).items())


def _hex(address: int) -> str:
    return f"0x{address:08X}"


class BoardRecord:
    """The record of one board (one probe unique id). Load, change under the probe lock, save.

    ``warn`` receives a sentence when the file had to be ignored (unreadable,
    malformed, another format version).
    """

    def __init__(self, probe_id: str, warn: Callable[[str], None] = paths.warn):
        self.probe_id = probe_id
        self.path = record_path(probe_id)
        self._warn = warn
        self.data = self._load()

    def _empty(self) -> dict:
        return {"version": VERSION, "probe": self.probe_id, "chip": None, "entries": []}

    def _load(self) -> dict:
        raw = read_private(self.path)
        if raw is None:
            return self._empty()
        try:
            data = json.loads(raw)
        except ValueError:
            self._warn(f"board record {self.path} is not valid JSON; it is ignored (the board is "
                       "treated as unknown and compared on the next flash).")
            return self._empty()
        if not isinstance(data, dict) or data.get("version") != VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            if version != 1:     # a version 1 record (older scons-pyocd) is replaced quietly
                self._warn(f"board record {self.path} is not a version {VERSION} record; it is ignored "
                           "(the board is treated as unknown and compared on the next flash).")
            return self._empty()
        entries = data.get("entries")
        chip = data.get("chip")
        if not isinstance(entries, list) or not (chip is None or (
                isinstance(chip, dict) and isinstance(chip.get("unique_id"), (str, type(None))))):
            self._warn(f"board record {self.path} is malformed; it is ignored (the board is treated "
                       "as unknown and compared on the next flash).")
            return self._empty()
        good = [e for e in entries if _valid_entry(e)]
        if len(good) != len(entries):
            self._warn(f"board record {self.path}: {len(entries) - len(good)} malformed entr"
                       f"{'y' if len(entries) - len(good) == 1 else 'ies'} ignored (the images they "
                       "described are treated as unknown and compared on the next flash).")
        data["entries"] = good
        data["probe"] = self.probe_id
        return data

    @property
    def entries(self) -> List[dict]:
        return self.data["entries"]

    @property
    def chip(self) -> Optional[dict]:
        return self.data.get("chip")

    def entry(self, owner: str) -> Optional[dict]:
        for entry in self.entries:
            if entry.get("owner") == owner:
                return entry
        return None

    # -- the decision ----------------------------------------------------------------
    def up_to_date(self, owner: str, image_file: str, options: Mapping[str, Any],
                   image_digest: Callable[[], str]) -> Optional[str]:
        """None when the board holds ``owner``'s image as recorded; otherwise why not, as a
        phrase ('no valid record: ...', 'the image changed', 'PYOCD_FREQUENCY changed: ...').

        ``options`` are the effective flashing options (target included); ``image_digest``
        is called (parsing the image) only when the file's bytes changed, so a reformatted
        file with the same content is still up to date.
        """
        entry = self.entry(owner)
        if entry is None:
            if not self.entries and self.chip is None:
                return f"no record of board {self.probe_id}"
            return f"nothing recorded for this image on board {self.probe_id}"
        if not entry.get("valid"):
            why = entry.get("invalidated", {})
            return (f"record invalidated: {why.get('reason', 'unknown reason')} "
                    f"({why.get('time', '?')})")
        changed = [name for name in sorted(set(options) | set(entry["options"]))
                   if options.get(name) != entry["options"].get(name)]
        if changed:
            return "; ".join(f"{name} changed: {_shown(name, entry['options'].get(name))} -> "
                             f"{_shown(name, options.get(name))}" for name in changed)
        try:
            same_file = file_digest(image_file) == entry["file_sha256"]
        except OSError:
            same_file = False
        if not same_file and image_digest() != entry["image_sha256"]:
            return f"the image changed (recorded {entry['image_sha256'][:12]})"
        return None

    def describe(self, owner: str, name: Optional[str] = None) -> str:
        """What the board holds for ``owner``, for 'flash is up to date (...)': the image (called
        ``name`` when given), its digest and address range, the board, when it was flashed."""
        entry = self.entry(owner)
        if entry is None or not entry.get("valid"):
            return f"board {self.probe_id}: no valid record"
        ranges = image_ranges(entry)
        where = f" at {report.span(ranges)}" if ranges else ""
        return (f"image {name + ' ' if name else ''}{entry['image_sha256'][:12]}{where}, board {self.probe_id}, "
                f"flashed {entry.get('time', '?')}")

    # -- changes: call these while holding the probe lock ------------------------------
    def see_chip(self, unique_id: Optional[str], target: str) -> bool:
        """Record the chip seen behind the probe. A different unique id than last time (another
        chip, same probe) invalidates every entry. Returns True when that happened. Saves."""
        chip = self.chip
        replaced = (chip is not None and unique_id is not None and chip.get("unique_id") not in (None, unique_id))
        if replaced:
            self.invalidate(None, f"another chip is behind probe {self.probe_id} (unique id {unique_id}, "
                                  f"was {chip.get('unique_id')})", save=False)
        self.data["chip"] = {"unique_id": unique_id, "target": target, "seen": _now()}
        self.save()
        return replaced

    def invalidate(self, ranges: Optional[Sequence[Range]], reason: str, save: bool = True) -> str:
        """Mark every valid entry with a page overlapping ``ranges`` (None: every entry)
        invalid, and save. Returns the event id (unique), for :meth:`learn`."""
        event = uuid.uuid4().hex
        stamp = {"reason": reason, "time": _now(), "event": event}
        for entry in self.entries:
            if entry.get("valid") and (ranges is None or overlaps(_entry_ranges(entry), ranges)):
                entry["valid"] = False
                entry["invalidated"] = dict(stamp)
        if save:
            self.save()
        return event

    def explain(self, event: str, reason: str) -> None:
        """Replace the reason of every entry the write of ``event`` invalidated (it failed: say
        how, instead of 'started, not completed'); save."""
        for entry in self.entries:
            why = entry.get("invalidated", {})
            if not entry.get("valid") and why.get("event") == event:
                entry["invalidated"] = dict(why, reason=reason, time=_now())
        self.save()

    def holders(self, ranges: Sequence[Range], skip_owner: Optional[str] = None) -> List[dict]:
        """The valid entries (other than ``skip_owner``'s) whose image bytes overlap ``ranges``."""
        return [entry for entry in self.entries
                if entry.get("valid") and entry.get("owner") != skip_owner
                and overlaps(image_ranges(entry), ranges)]

    def learn(self, page_crcs: Mapping[int, int], contents: Mapping[int, bytes], source: str,
              event: Optional[str] = None, touched: Optional[Sequence[Range]] = None,
              skip_owner: Optional[str] = None) -> None:
        """Check every entry against what the tool now knows of the chip; save.

        ``page_crcs``: page start -> CRC-32 of the whole page as the chip holds it now.
        ``contents``: page start -> the whole page's bytes, where known. A page whose CRC
        differs from an entry's invalidates the entry, unless its content is known and
        keeps the entry's bytes (the entry's CRC is then updated). ``source`` says who
        learned it (for the reason). ``event``/``touched``: the id :meth:`invalidate`
        returned before the write that led here, and the ranges that write changed (None:
        the whole chip); an entry invalidated by exactly that write is valid again when
        every page of it the write touched is known and keeps its bytes. ``skip_owner``'s
        entry is left alone (its caller claims it next).
        """
        for entry in self.entries:
            if entry.get("owner") == skip_owner:
                continue
            kept = set()
            survived = True
            for key, page in entry.get("pages", {}).items():
                start = int(key, 16)
                if start not in page_crcs:
                    continue
                if page["crc"] != page_crcs[start]:
                    data = contents.get(start)
                    if data is None or masked_digest(
                            lambda lo, n, s=start, d=data: d[lo - s:lo - s + n], page["ranges"]) != page["sha256"]:
                        survived = False
                        break
                    page["crc"] = page_crcs[start]     # the rest of a shared page changed, not ours
                if start in contents:
                    kept.add(start)
            if not survived:
                # valid until now, or invalidated before the write that led here ("... started,
                # not completed"): the write completed, and this is what it did to the entry
                if entry.get("valid") or (event is not None and entry.get("invalidated", {}).get("event") == event):
                    entry["valid"] = False
                    entry["invalidated"] = {"reason": f"page {_hex(start)} holds other data ({source})",
                                            "time": _now(), "event": uuid.uuid4().hex}
                continue
            if (not entry.get("valid") and event is not None
                    and entry.get("invalidated", {}).get("event") == event):
                hit = [r for r in _entry_ranges(entry) if touched is None or overlaps([r], touched)]
                if all(lo in kept for lo, _ in hit):
                    entry["valid"] = True
                    entry.pop("invalidated", None)
        self.save()

    def claim(self, owner: str, pages: Mapping[int, PageClaim], **facts) -> None:
        """Record that ``owner``'s image is on the board (after a verified flash), and save.
        ``facts``: file_sha256, image_sha256, target, options, image, project, probe."""
        self.data["entries"] = [e for e in self.entries if e.get("owner") != owner]
        entry = {"owner": owner, "valid": True, "time": _now(), "user": _user(), "host": socket.gethostname(),
                 "pages": {_hex(start): dict(page) for start, page in sorted(pages.items())}}
        entry.update(facts)
        self.entries.append(entry)
        self._trim()
        self.save()

    def forget(self, owner: Optional[str] = None) -> int:
        """Drop ``owner``'s entry (None: the whole record); return how many entries went."""
        if owner is None:
            count = len(self.entries)
            self.data = self._empty()
        else:
            count = len(self.entries)
            self.data["entries"] = [e for e in self.entries if e.get("owner") != owner]
            count -= len(self.entries)
        self.save()
        return count

    def _trim(self) -> None:
        while len(self.entries) > MAX_ENTRIES:
            invalid = [e for e in self.entries if not e.get("valid")]
            self.entries.remove((invalid or self.entries)[0])

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def _shown(name: str, value: Any) -> str:
    """A recorded option value for people: '4 MHz', '0x08000000', '(empty)'."""
    if value in (None, "", {}):
        return "(empty)"
    option = option_table.BY_NAME.get(name)
    if option is not None and name in ("PYOCD_FREQUENCY", "PYOCD_BASE_ADDRESS") and isinstance(value, int):
        return option_table.shown(option, value)
    return str(value)


def _entry_ranges(entry: dict) -> List[Range]:
    """The whole pages an entry claims."""
    return [(int(key, 16), page["end"]) for key, page in entry.get("pages", {}).items()]


def image_ranges(entry: dict) -> List[Range]:
    """The image bytes an entry claims, ``(start, end)`` per page it lies in."""
    return [tuple(r) for page in entry.get("pages", {}).values() for r in page["ranges"]]


def record_path(probe_id: str) -> Path:
    """Where the board record of ``probe_id`` lives (it may not exist)."""
    return paths.state_dir("records") / f"{board_key(probe_id)}.json"


# -- which probe a configured id meant last time ----------------------------------------
def _resolved_path() -> Path:
    return paths.state_dir("records") / "resolved-probes.json"


def _resolved_map() -> dict:
    try:
        raw = read_private(_resolved_path())
        data = json.loads(raw) if raw is not None else {}
    except (FlashError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(data, dict) else {}


def resolved_probe(configured: str) -> str:
    """The unique id that ``configured`` (an id, a part of one, or '' for 'the only probe
    attached') resolved to last time; ``configured`` itself when unknown.

    The up-to-date decision reads the record of this id without asking USB; when the
    probe behind a partial or empty id changes, the chip's unique id (checked on every
    connection) or ``--flash-check`` notices.
    """
    return _resolved_map().get(configured, configured)


def remember_resolved_probe(configured: str, unique_id: str) -> None:
    """Remember that ``configured`` now means the probe ``unique_id`` (for :func:`resolved_probe`)."""
    if configured == unique_id:
        return
    data = _resolved_map()
    if data.get(configured) == unique_id:
        return
    data[configured] = unique_id
    atomic_write(_resolved_path(), json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- the probe lock ------------------------------------------------------------------
@contextlib.contextmanager
def probe_lock(probe_id: str, on_wait: Callable[[str], None] = lambda message: None) -> Iterator[None]:
    """Hold the lock of ``probe_id`` across processes (and threads) for the ``with`` body.

    When another process holds it, call ``on_wait("waiting for probe X held by pid N")``
    once and block until it is released (the kernel releases it if the holder dies).
    The lock file is opened without following symbolic links.
    """
    path = paths.state_dir("locks") / f"{board_key(probe_id)}.lock"
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FlashError(f"{path} is a symbolic link; the tool does not follow links in its state "
                             "directory. Remove the link (the tool recreates the file).") from None
        raise _state_problem(path, "open the probe lock", exc) from None
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
