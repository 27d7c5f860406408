"""Flash, erase, verify and check, each in the order that keeps the board records honest.

Every operation: find the probe, take its lock (across processes), connect,
check the chip is the configured target, then — only for writes — invalidate
the board record for what is about to change, write, verify, and record a
success. A failure anywhere after the invalidation (an error, Ctrl-C, the
process killed) leaves the record invalid, so the next ``scons flash``
programs again.

No SCons here (the builders call these functions) and no direct pyOCD (that
is :mod:`.session`). Each function returns the line to print.
"""

import hashlib
import os
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from . import records
from .errors import FlashError
from .images import EXTENSIONS, Image, load_image
from .session import Board, Settings, find_probe

Say = Callable[[str], None]


@dataclass
class Job:
    """Who asks, for the board record: ``owner`` is the build-tree file standing for the
    flash (its absolute path), ``token`` what SCons compared for it this build,
    ``project`` the SConstruct's directory, ``options`` the effective flashing options."""
    owner: str = ""
    token: str = ""
    project: str = ""
    options: Optional[dict] = None

    def options_digest(self) -> str:
        text = json.dumps(self.options or {}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_base_address(target: str) -> Optional[int]:
    """The boot flash start of a pyOCD target, from its class, without connecting (None if unknown)."""
    if not target:
        return None
    from .session import _pyocd
    _pyocd()
    from pyocd.target import TARGET
    memory_map = getattr(TARGET.get(target.lower()), "MEMORY_MAP", None)
    boot = memory_map.get_boot_memory() if memory_map is not None else None
    return boot.start if boot is not None else None


def is_raw_binary(path: str) -> bool:
    """A .bin file: its data goes at PYOCD_BASE_ADDRESS, or the target's flash start."""
    return EXTENSIONS.get(os.path.splitext(path)[1].lower()) == "bin"


def _load(path: str, base_address: Optional[int], target: str) -> Optional[Image]:
    """Read the image before touching the probe, when its addresses are known without it
    (None: a raw binary whose base is the flash start of a target named only by the probe)."""
    if base_address is None and is_raw_binary(path):
        base_address = default_base_address(target)
        if base_address is None:
            return None
    return load_image(path, base_address)


def _first_sentence(exc: Exception) -> str:
    return str(exc).split(". ")[0]


def _now() -> str:
    return time.strftime("%H:%M:%S")


def flash(path: str, settings: Settings, probe: str = "", base_address: Optional[int] = None,
          job: Job = Job(), check: bool = False, say: Say = print) -> str:
    """Program the image file ``path``; with ``check``, first compare the chip and program only
    if it differs. Returns the line to print."""
    image = _load(path, base_address, settings.target)
    found = find_probe(probe)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        with Board.open(settings, found) as board:
            if image is None:
                image = load_image(path, board.flash_start())
            facts = dict(image=image.source, image_sha256=image.sha256(), target=board.target_name,
                         probe=probe_id, options=job.options_digest(), project=job.project)
            if check:
                board.check_identity()
                board.check_fits(image)
                if board.compare(image, "crc") is None:
                    record.claim(job.owner, job.token, board.sectors(image), **facts)
                    records.remember_resolved_probe(probe, probe_id)
                    return (f"flash is up to date (checked on the chip: image {image.sha256()[:12]}, "
                            f"board {probe_id})")
            started = f"flash of {image.source} from {job.project or '?'} started {_now()}, not completed"
            written = []

            def before_write(ranges):
                record.invalidate(ranges, started)
                written.append(ranges)

            try:
                result = board.flash(image, before_write)
            except FlashError as exc:
                if written:     # say why in the record (and in --debug=explain)
                    record.invalidate(written[0], f"flash of {image.source} failed: {_first_sentence(exc)}")
                raise
            record.claim(job.owner, job.token, result.ranges, **facts)
    records.remember_resolved_probe(probe, probe_id)
    return result.summary()


def verify(path: str, settings: Settings, probe: str = "", base_address: Optional[int] = None,
           job: Job = Job(), say: Say = print) -> str:
    """Compare the chip with the image; a difference invalidates the record and raises."""
    image = _load(path, base_address, settings.target)
    found = find_probe(probe)
    probe_id = found.unique_id
    mode = settings.verify if settings.verify != "none" else "crc"
    with records.probe_lock(probe_id, on_wait=say):
        with Board.open(settings, found) as board:
            if image is None:
                image = load_image(path, board.flash_start())
            board.check_identity()
            board.check_fits(image)
            try:
                board.verify(image, mode)
            except FlashError as exc:
                records.BoardRecord(probe_id).invalidate(
                    board.sectors(image), f"verify of {image.source} failed: {_first_sentence(exc)}")
                raise
            target = board.target_name
    return f"verify {target} via {probe_id}: {image.source} matches ({mode})"


def erase(settings: Settings, probe: str = "", ranges: Optional[Sequence[Tuple[int, int]]] = None,
          job: Job = Job(), say: Say = print) -> str:
    """Mass erase (``ranges`` None) or erase the sectors overlapping ``ranges``."""
    found = find_probe(probe)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        with Board.open(settings, found) as board:
            what = "mass erase" if ranges is None else "sector erase"
            return board.erase(ranges, lambda r: record.invalidate(
                r, f"{what} by scons erase from {job.project or '?'} at {_now()}"))
