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
from .images import EXTENSIONS, Image, check_fits, check_vector_table, load_image
from .session import Board, Settings, find_probe, fit_regions

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


def _memory_map(target: str):
    """A pyOCD target's memory map, from its class, without connecting (None if unknown)."""
    if not target:
        return None
    from .session import _pyocd
    _pyocd()
    from pyocd.target import TARGET
    return getattr(TARGET.get(target.lower()), "MEMORY_MAP", None)


def default_base_address(target: str) -> Optional[int]:
    """The boot flash start of a pyOCD target, from its class, without connecting (None if unknown)."""
    memory_map = _memory_map(target)
    boot = memory_map.get_boot_memory() if memory_map is not None else None
    return boot.start if boot is not None else None


def memory_ranges(target: str, memory_map=None):
    """``(flash, ram)`` of ``memory_map``, else of the pyOCD target class (without connecting),
    as :func:`images.check_vector_table` takes them; empty lists when the target is unknown."""
    memory_map = memory_map if memory_map is not None else _memory_map(target)
    if memory_map is None:
        return [], []
    from pyocd.core.memory_map import MemoryType
    return ([(r.start, r.end + 1, r.sector_size or r.blocksize or 1)
             for r in memory_map.iter_matching_regions(type=MemoryType.FLASH)],
            [(r.start, r.end + 1) for r in memory_map.iter_matching_regions(type=MemoryType.RAM)])


def load_at_flash_start(path: str, start: int, target: str, memory_map=None) -> Image:
    """A raw binary given no base address, at the flash start ``start``, unless its vector
    table says it was linked elsewhere (:func:`images.check_vector_table`)."""
    image = load_image(path, start)
    check_vector_table(image, *memory_ranges(target, memory_map))
    return image


def check_target_definition(target: str) -> None:
    """Refuse, before the probe is opened, a pyOCD definition of a known chip whose flash
    sectors are not the chip's erase unit (a wrong CMSIS pack, an edited target class).

    Smaller sectors would make every sector erase wipe its neighbours too, data outside
    the image included, with the image itself verifying fine; larger ones fail mid-flash.
    """
    from .targets import IDENTITIES
    identity = IDENTITIES.get(target.lower()) if target else None
    memory_map = _memory_map(target) if identity is not None and identity.sector_size else None
    if memory_map is None:
        return
    from pyocd.core.memory_map import MemoryType
    for region in memory_map.iter_matching_regions(type=MemoryType.FLASH):
        size = region.sector_size
        if size and size != identity.sector_size:
            raise FlashError(
                f"the pyOCD target definition of {target} declares {size}-byte flash sectors at "
                f"0x{region.start:08X}, but the {identity.description} erases "
                f"{identity.sector_size}-byte pages. Nothing was written: with it a flash would "
                f"{'erase data outside the image' if size < identity.sector_size else 'fail half-way'}. "
                f"Check where the definition of {target} comes from (a CMSIS pack, pyocd_user.py, "
                "the SConstruct) and correct its flash sector size.")


def _check_fits_offline(image: Image, target: str) -> None:
    """Refuse an image that does not fit the flash of a chip this tool knows (``IDENTITIES``)
    before the probe is opened. Other targets are checked once connected (the board checks
    every time): there a misfit often means a wrong target name, which the connection
    diagnoses better than a complaint about the image."""
    from .targets import IDENTITIES
    if not target or target.lower() not in IDENTITIES:
        return
    memory_map = _memory_map(target)
    if memory_map is None:
        return
    from pyocd.core.memory_map import MemoryType
    regions = fit_regions(target, memory_map.iter_matching_regions(type=MemoryType.FLASH))
    if regions:
        check_fits(image, regions)


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
        image = load_at_flash_start(path, base_address, target)
    else:
        image = load_image(path, base_address)
    _check_fits_offline(image, target)
    return image


def _first_sentence(exc: Exception) -> str:
    return str(exc).split(". ")[0]


def _now() -> str:
    return time.strftime("%H:%M:%S")


def flash(path: str, settings: Settings, probe: str = "", base_address: Optional[int] = None,
          job: Job = Job(), check: bool = False, say: Say = print) -> str:
    """Program the image file ``path``; with ``check``, first compare the chip and program only
    if it differs. Returns the line to print."""
    check_target_definition(settings.target)
    image = _load(path, base_address, settings.target)
    found = find_probe(probe)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        with Board.open(settings, found) as board:
            if image is None:
                image = load_at_flash_start(path, board.flash_start(), settings.target, board.target.memory_map)
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
                image = load_at_flash_start(path, board.flash_start(), settings.target, board.target.memory_map)
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
    check_target_definition(settings.target)
    found = find_probe(probe)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        with Board.open(settings, found) as board:
            what = "mass erase" if ranges is None else "sector erase"
            return board.erase(ranges, lambda r: record.invalidate(
                r, f"{what} by scons erase from {job.project or '?'} at {_now()}"))
