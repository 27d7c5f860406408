"""Flash, erase, verify and check, each in the order that keeps the board records honest.

Every operation: decide from the board record whether anything must be done (a
flash only; no probe, no pyOCD), find the probe, take its lock (across
processes), decide again under it, connect, check the chip is the configured
target and note its unique id, then — only for writes — invalidate the board
record for what is about to change, write, verify, and record what the chip now
holds. A failure anywhere after the invalidation (an error, Ctrl-C, the process
killed) leaves the record invalid, so the next ``scons flash`` programs again.

No SCons here (the builders call these functions) and no direct pyOCD (that
is :mod:`.session`). Each function returns the line to print.
"""

import binascii
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import records, remote, report
from .errors import FlashError
from .images import EXTENSIONS, Image, check_fits, check_vector_table, load_image
from .session import Connection, Settings, find_probe, fit_regions

Say = Callable[[str], None]
Range = Tuple[int, int]


@dataclass
class Job:
    """Who asks, for the board record: ``owner`` is the build-tree file standing for the
    flash (its absolute path), ``project`` the SConstruct's directory, ``options`` the
    effective flashing options that decide a reflash (target included)."""
    owner: str = ""
    project: str = ""
    options: Dict[str, Any] = field(default_factory=dict)

    def recorded_options(self) -> Dict[str, Any]:
        """``options`` as the board record stores them (JSON values)."""
        return json.loads(json.dumps(self.options, sort_keys=True, default=str))


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


def load_early(path: str, base_address: Optional[int], target: str) -> Optional[Image]:
    """Read the image before touching the probe (a flash, or ``scons -n``'s plan preview), when
    its addresses are known without it (None: a raw binary whose base is the flash start of a
    target named only by the probe)."""
    if base_address is None and is_raw_binary(path):
        base_address = default_base_address(target)
        if base_address is None:
            return None
        image = load_at_flash_start(path, base_address, target)
    else:
        image = load_image(path, base_address)
    _check_fits_offline(image, target)
    return image


def check_guessed_address(image: Image, path: str, base_address: Optional[int], record: "records.BoardRecord",
                          job: Job) -> None:
    """A raw binary given no base address goes to the flash start: a guess. Refuse it when it
    would overwrite another image that the same project (SConstruct directory) flashed onto this
    board, as the board record says (an application's .bin over the bootloader flashed before
    it): nothing is written, the message says what to set. An image another tree flashed there
    (another checkout, another build of the same firmware) is simply replaced: that is what
    flashing a board with a new build means."""
    if base_address is not None or not is_raw_binary(path) or not job.project:
        return
    held = [entry for entry in record.holders(image.ranges(), skip_owner=job.owner)
            if entry.get("project") == job.project               # this project's other image
            and entry.get("image_sha256") != image.sha256()]      # the same bytes there: no harm
    if not held:
        return
    other = held[0]
    raise FlashError(
        f"{path}: a raw binary has no addresses, and with PYOCD_BASE_ADDRESS empty it would go to the "
        f"flash start, 0x{image.start:08X}-0x{image.end - 1:08X}, over {other.get('image', 'another image')} "
        f"({report.span(records.image_ranges(other))}, flashed from {other.get('project') or '?'}), which board "
        f"{record.probe_id} holds. Nothing was written. Set PYOCD_BASE_ADDRESS (--base-address) to the "
        "address the binary was linked for, or flash its .hex or ELF, which carry their addresses.")


def _first_sentence(exc: Exception) -> str:
    return str(exc).split(". ")[0]


def _image_digest(path: str, base_address: Optional[int], target: str) -> Callable[[], str]:
    """A function giving the content digest of the image file (parsed only when called)."""
    def digest() -> str:
        try:
            image = load_early(path, base_address, target)
        except FlashError:
            return "unreadable"
        return image.sha256() if image is not None else "raw binary at an unknown address"
    return digest


def remote_board(probe: str, job: Job, settings: Optional[Settings] = None,
                 served: Optional[remote.Served] = None):
    """For a ``remote:``/``labgrid:`` probe: ``(served, job, settings)`` with what its server
    serves now (:func:`remote.lookup`, no pyOCD), the job's options keyed by the served
    board (PYOCD_PROBE becomes the served probe id, a labgrid place adds its acquisition)
    and the target defaulting to the served board's; the job's owner names the served board
    too. ``(None, job, settings)`` otherwise."""
    if not remote.is_remote(probe):
        return None, job, settings
    served = served or remote.lookup(probe)
    options = dict(job.options, PYOCD_PROBE=served.probe_id, **served.claims)
    if not options.get("PYOCD_TARGET") and served.target:
        options["PYOCD_TARGET"] = served.target
    if settings is not None and not settings.target and served.target:
        settings = dataclasses.replace(settings, target=served.target)
    # The owner names the board, not the address: '<image>.<configured probe>.flashed' becomes
    # '<image>.<served probe id>.flashed', as for the same board on a local probe.
    owner, configured = job.owner, f".{records.board_key(probe)}.flashed"
    if owner.endswith(configured):
        owner = owner[:-len(configured)] + f".{records.board_key(served.probe_id)}.flashed"
    return served, dataclasses.replace(job, options=options, owner=owner), settings


def decide(path: str, probe: str, base_address: Optional[int], job: Job, name: Optional[str] = None,
           served: Optional[remote.Served] = None) -> Tuple[Optional[str], str]:
    """``(why, line)``: why a flash is needed, or None when the board record says the board
    behind ``probe`` holds ``job.owner``'s image with these options; then ``line`` is
    ``flash is up to date (image NAME SHA at RANGE, board PROBE, flashed TIME[, at SERVER])``
    (``name``: what it calls the image), else ''. Reads the record (once) and the image file
    only: no probe, no pyOCD (a no-op ``scons flash`` costs this). For a remote probe the
    server is asked what it serves first (:func:`remote_board`; no pyOCD either), unless
    ``served`` is given, with ``job`` as :func:`remote_board` keyed it."""
    if remote.is_remote(probe) and served is None:
        served, job, _ = remote_board(probe, job)
    board = served.probe_id if served is not None else records.resolved_probe(probe)
    if not board:
        return "no probe has been used yet (PYOCD_PROBE is empty)", ""
    record = records.BoardRecord(board)
    why = record.up_to_date(job.owner, path, job.recorded_options(),
                            _image_digest(path, base_address, job.options.get("PYOCD_TARGET", "")))
    if why is not None:
        return why, ""
    where = f", at {served.where}" if served is not None else ""
    return None, f"flash is up to date ({record.describe(job.owner, name)}{where})"


def _find(probe: str, served: Optional[remote.Served], say: Say):
    """The probe ``probe`` names now (:func:`session.find_probe`), remembered at once as what an
    empty or partial ``probe`` means: whatever happens next on it (a failed verify, a flash
    that fails or is interrupted), the next no-op reads the record of the probe reached, not
    of the one reached before (whose record would say "up to date" about another chip)."""
    found = find_probe(probe, served, say)
    records.remember_resolved_probe(probe, found.unique_id)
    return found


def _phase(settings: Settings, name: str) -> None:
    """Start a phase of ``settings.progress`` (when it is a progress object, not a flag)."""
    if hasattr(settings.progress, "phase"):
        settings.progress.phase(name)


def _progress_done(settings: Settings) -> None:
    if hasattr(settings.progress, "done"):
        settings.progress.done()


def _facts(image: Image, path: str, connection: Connection, probe_id: str, job: Job) -> Dict[str, Any]:
    return dict(image=image.source, file_sha256=records.file_digest(path), image_sha256=image.sha256(),
                target=connection.target_name, options=job.recorded_options(), probe=probe_id,
                project=job.project)


def flash(path: str, settings: Settings, probe: str = "", base_address: Optional[int] = None,
          job: Job = Job(), check: bool = False, force: bool = False, say: Say = print,
          explain: Optional[Say] = None, name: Optional[str] = None,
          page_map: Optional[Say] = None) -> str:
    """Make the board hold the image file ``path``: nothing when the board record says it does
    (unless ``check``: compare the chip, or ``force``: flash anyway), else program the pages
    that differ. ``explain`` is told why the board is connected (None: it is not, the
    record says the board holds the image with these options). ``name``: what the
    lines call the image (default: ``path``); ``page_map`` is given the page map after a
    flash. Returns the line to print (see :mod:`.report`)."""
    started = time.monotonic()
    name = name or path
    served, job, settings = remote_board(probe, job, settings)
    if force or check:
        why, line = "--force-flash" if force else "--flash-check", ""
    else:
        why, line = decide(path, probe, base_address, job, name, served)
    if explain is not None:
        explain(why)
    if why is None:
        return line
    try:
        return _flash(path, settings, probe, base_address, job, check, force, say, name, page_map, started,
                      served)
    finally:
        _progress_done(settings)


def _flash(path, settings, probe, base_address, job, check, force, say, name, page_map, started,
           served) -> str:
    check_target_definition(settings.target)
    image = load_early(path, base_address, settings.target)
    found = _find(probe, served, say)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        if not (check or force) and record.up_to_date(
                job.owner, path, job.recorded_options(),
                _image_digest(path, base_address, settings.target)) is None:
            # another build flashed it while this one waited for the probe
            return f"flash is up to date ({record.describe(job.owner, name)})"
        if image is not None:
            check_guessed_address(image, path, base_address, record, job)
        _phase(settings, "connecting")
        with Connection.open(settings, found) as connection:
            connection.check_identity()
            if image is None:
                image = load_at_flash_start(path, connection.flash_start(), settings.target,
                                            connection.target.memory_map)
                check_guessed_address(image, path, base_address, record, job)
            record.see_chip(connection.chip_unique_id(), connection.target_name)
            facts = _facts(image, path, connection, probe_id, job)
            if check:
                connection.check_fits(image)
                _phase(settings, "comparing")
                survey = connection.survey(image)
                record.learn(survey.page_crcs, {}, f"compared with {image.source}", skip_owner=job.owner)
                if not survey.differing:
                    record.claim(job.owner, records.page_claims(image, survey.page_crcs,
                                                                connection.page_size_at), **facts)
                    return (f"flash is up to date (checked on the chip: image {name} {image.sha256()[:12]} "
                            f"at {report.span(image.ranges())}, board {probe_id})")
            started_reason = f"flash of {image.source} from {job.project or '?'} started, not completed"
            events: List[Tuple[str, Optional[List[Range]]]] = []

            def before_write(ranges):
                events.append((record.invalidate(ranges, started_reason), ranges))

            try:
                result = connection.flash(image, before_write)
            except FlashError as exc:
                if events:     # say why in the record
                    record.explain(events[0][0], f"flash of {image.source} failed: {_first_sentence(exc)}")
                raise
            event, touched = events[0] if events else (None, [])
            record.learn(result.page_crcs, result.written, f"flash of {image.source}", event=event,
                         touched=touched, skip_owner=job.owner)
            record.claim(job.owner, records.page_claims(image, result.page_crcs, connection.page_size_at),
                         **facts)
    _progress_done(settings)
    if served is not None:
        result.probe = served.via
    if page_map is not None:
        page_map(report.page_map(result, name))
    return report.flash_line(result, name, image.ranges(), time.monotonic() - started)


def verify(path: str, settings: Settings, probe: str = "", base_address: Optional[int] = None,
           job: Job = Job(), say: Say = print, name: Optional[str] = None) -> str:
    """Compare the chip with the image; a difference invalidates the record and raises.
    ``name``: what the line calls the image (default: ``path``)."""
    try:
        return _verify(path, settings, probe, base_address, job, say, name or path, time.monotonic())
    finally:
        _progress_done(settings)


def _verify(path, settings, probe, base_address, job, say, name, started) -> str:
    served, job, settings = remote_board(probe, job, settings)
    image = load_early(path, base_address, settings.target)
    found = _find(probe, served, say)
    probe_id = found.unique_id
    mode = settings.verify if settings.verify != "none" else "crc"
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        _phase(settings, "connecting")
        with Connection.open(settings, found) as connection:
            connection.check_identity()
            if image is None:
                image = load_at_flash_start(path, connection.flash_start(), settings.target,
                                            connection.target.memory_map)
            record.see_chip(connection.chip_unique_id(), connection.target_name)
            connection.check_fits(image)
            try:
                survey = connection.verify(image, mode)
            except FlashError as exc:
                record.invalidate(connection.pages(image), f"verify of {image.source} failed: {_first_sentence(exc)}")
                raise
            record.learn(survey.page_crcs, {}, f"verify of {image.source}")
            target = connection.target_name
    via = served.via if served is not None else probe_id
    return (f"verify {target} via {via}: {name} matches ({mode}): {report.span(image.ranges())} "
            f"in {time.monotonic() - started:.1f} s")


def erase(settings: Settings, probe: str = "", ranges: Optional[Sequence[Range]] = None,
          job: Job = Job(), say: Say = print, image_path: Optional[str] = None,
          base_address: Optional[int] = None) -> str:
    """Mass erase (``ranges`` and ``image_path`` None); or erase the pages overlapping
    ``ranges``; or erase the bytes of the image file ``image_path``: its pages are erased
    and the bytes beside it in pages it shares with other data are written back (it is
    flashed as all 0xFF), so nothing the user did not ask to erase is lost."""
    try:
        return _erase(settings, probe, ranges, job, say, image_path, base_address, time.monotonic())
    finally:
        _progress_done(settings)


def _erase(settings, probe, ranges, job, say, image_path, base_address, started) -> str:
    served, job, settings = remote_board(probe, job, settings)
    check_target_definition(settings.target)
    image = load_early(image_path, base_address, settings.target) if image_path else None
    found = _find(probe, served, say)
    probe_id = found.unique_id
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        if image is not None:
            check_guessed_address(image, image_path, base_address, record, job)
        _phase(settings, "connecting")
        with Connection.open(settings, found) as connection:
            connection.check_identity()
            record.see_chip(connection.chip_unique_id(), connection.target_name)
            what = "mass erase" if ranges is None and not image_path else "page erase"
            reason = f"{what} by scons erase from {job.project or '?'}"
            events: List[Tuple[str, Optional[List[Range]]]] = []

            def before_write(spans):
                events.append((record.invalidate(spans, reason), spans))

            if image_path:
                if image is None:
                    image = load_at_flash_start(image_path, connection.flash_start(), settings.target,
                                                connection.target.memory_map)
                    check_guessed_address(image, image_path, base_address, record, job)
                connection.check_fits(image)
                blank = Image([(lo, b"\xff" * (hi - lo)) for lo, hi in image.ranges()], image.source, image.fmt)
                result = connection.flash(blank, before_write)
                record.learn(result.page_crcs, result.written, reason, event=events[0][0] if events else None,
                             touched=events[0][1] if events else [])
                pages = len(connection.pages(image))
                line = (f"erase {connection.target_name} via {probe_id}: {image.source} "
                        f"({pages} page{'s' if pages != 1 else ''}; other data in them kept)")
            else:
                line = connection.erase(ranges, before_write)
                if events and events[0][1] is not None:
                    geometry = connection.geometry()
                    erased = {page: region.blank_page() for lo, hi in events[0][1]
                              for region, page in geometry.pages_of(lo, hi)}
                    record.learn({lo: binascii.crc32(data) & 0xFFFFFFFF for lo, data in erased.items()}, erased,
                                 reason, event=events[0][0], touched=events[0][1])
            if served is not None:
                line = line.replace(f" via {probe_id}:", f" via {served.via}:", 1)
    return f"{line} in {time.monotonic() - started:.1f} s"

