"""The pyOCD layer: find the probe, connect, check the chip, erase, program, verify.

Knows nothing of SCons and nothing of records: callers (:mod:`.operations`)
decide when to lock, what to record, what to print. pyOCD is imported inside
functions, so importing this module costs nothing.

Every pyOCD, USB or OS exception is translated here into
:class:`~scons_pyocd.errors.FlashError` saying what happened, on which probe,
and what to do.

Security: pyOCD by default reads ``pyocd.yaml`` and executes ``pyocd_user.py``
from its project directory (the working directory). A firmware tree must not
get code run by ``scons flash``, so sessions are opened with ``no_config`` and
``user_script`` set to the null device, and with ``project_dir`` the current
directory (pyOCD ``chdir``s into it, which would disturb a parallel build).
``PYOCD_OPTIONS`` can turn either back on (see the user guide).
"""

import binascii
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .errors import FlashError
from .images import Image, check_fits
from .targets import IDENTITIES

Range = Tuple[int, int]
#: Called with the address ranges about to be erased or written (None: the whole chip),
#: after every check passed and before the first write.
BeforeWrite = Callable[[Optional[List[Range]]], None]

LOG = logging.getLogger(__name__)

#: Options the tool sets on every session; PYOCD_OPTIONS entries win over them.
SAFE_OPTIONS = {
    "no_config": True,            # do not read pyocd.yaml from the project directory
    "user_script": os.devnull,    # do not execute pyocd_user.py from it
    "auto_unlock": False,         # never mass-erase a locked chip unasked
    "cache.enable_memory": False,  # verify reads the chip, not a cache
    "hide_programming_progress": True,
}


def _pyocd():
    """Import pyOCD and make this package's probe type and targets known to it."""
    from . import sim, targets
    sim.register()
    targets.register()
    import pyocd.core.exceptions
    return pyocd


def _kib(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    kib = n / 1024
    return f"{kib:.0f} KiB" if kib == int(kib) or kib >= 10 else f"{kib:.1f} KiB"


# -- settings and results ---------------------------------------------------------------

@dataclass
class Settings:
    """How to reach and treat the chip. Values are already checked (see :mod:`.options`).

    ``target``: pyOCD target name ('' = the probe's board default). ``frequency``: SWD
    clock in Hz (None = pyOCD's default). ``connect``: halt / under-reset / attach.
    ``reset``: run / halt / none after writing. ``erase``: auto / sector / chip.
    ``verify``: crc / read / none. ``options``: extra pyOCD session options.
    ``progress``: draw a progress bar on stderr (None: when stderr is a terminal).
    ``debug``: show pyOCD's log on stderr. ``should_stop``: polled between pages; when it
    returns True the operation stops with a FlashError (the caller's Ctrl-C).
    """
    target: str = ""
    frequency: Optional[int] = None
    connect: str = "halt"
    reset: str = "run"
    erase: str = "auto"
    verify: str = "crc"
    options: Mapping[str, Any] = field(default_factory=dict)
    progress: Optional[bool] = None
    debug: bool = False
    should_stop: Optional[Callable[[], bool]] = None


@dataclass
class FlashResult:
    """Figures of one flash, from pyOCD's ProgrammingInfo (never from its log)."""
    target: str
    probe: str
    pages_total: int
    pages_programmed: int
    bytes_programmed: int
    sectors_erased: int
    chip_erase: bool
    seconds: float
    verify: str
    ranges: List[Range]
    #: Every page the image touches: ``zlib.crc32`` of the whole page after the flash.
    page_crcs: Dict[int, int] = field(default_factory=dict)
    #: The whole content, after the flash, of every page that was erased or programmed.
    written: Dict[int, bytes] = field(default_factory=dict)
    #: The plan that was carried out (None before plans existed).
    plan: Any = None

    def summary(self, image: Optional[str] = None) -> str:
        """The flash's line; with ``image`` (its file, as shown) it names it, so the lines of
        several boards flashed at once say which image went where."""
        if self.chip_erase:
            what = f"mass erase, {self.pages_programmed} of {self.pages_total} pages programmed"
        else:
            what = f"{self.pages_programmed} of {self.pages_total} pages changed"
        flashed = f"{image} onto {self.target}" if image else self.target
        line = (f"flash {flashed} via {self.probe}: {what}, {_kib(self.bytes_programmed)} "
                f"in {self.seconds:.1f} s")
        if self.verify != "none":
            line += f", verified ({self.verify})"
        return line


@dataclass
class Survey:
    """What a look at the chip learned about the pages an image touches.

    ``page_crcs``: page start -> ``zlib.crc32`` of the whole page as the chip holds it.
    ``differing``: the pages whose bytes inside the image's ranges differ from the image.
    """
    page_crcs: Dict[int, int]
    differing: List[int]


class Mismatch(NamedTuple):
    address: int
    expected: int
    found: int
    count: int          # differing bytes in the block where the first difference is


class ProbeInfo(NamedTuple):
    unique_id: str
    description: str

    def __str__(self):
        return f"{self.unique_id} ({self.description})"


# -- error translation ------------------------------------------------------------------

def _probe_hint(probe_id: str) -> str:
    return (f"Is another program (a debugger, pyocd gdbserver, OpenOCD, another build) using probe "
            f"{probe_id}? Close it and try again; check the USB cable.")


@contextlib.contextmanager
def translate(probe_id: str, doing: str) -> Iterator[None]:
    """Turn anything pyOCD, libusb or the OS raises while ``doing`` into a FlashError."""
    try:
        yield
    except FlashError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:
        raise _translated(exc, probe_id, doing) from None


def _translated(exc: Exception, probe_id: str, doing: str) -> FlashError:
    from pyocd.core import exceptions as x
    from . import remote
    if remote.seen(probe_id) is not None:     # a board behind a probe server: the connection's own errors
        from .remote_probe import translated
        error = translated(exc, probe_id, doing)
        if error is not None:
            return error
    text = str(exc) or type(exc).__name__
    where = remote.label(probe_id)
    nothing = "The board is not recorded as flashed; run the command again once fixed."
    if isinstance(exc, x.ProbeDisconnected):
        return FlashError(f"{where} disconnected while {doing} ({text}). Check the USB cable and the "
                          f"probe's power, then try again. {nothing}")
    if isinstance(exc, x.TransferTimeoutError):
        return FlashError(f"the target behind {where} stopped answering while {doing} ({text}). Check "
                          "the target's power and the SWD wiring, reset or power-cycle the board, or try "
                          f"PYOCD_CONNECT='under-reset' or a lower PYOCD_FREQUENCY. {nothing}")
    if isinstance(exc, x.TransferFaultError):
        return FlashError(f"the target behind {where} refused a memory access while {doing} ({text}). "
                          "The chip may be read-protected, in a low-power mode, or not the configured "
                          f"target; check PYOCD_TARGET, or connect with PYOCD_CONNECT='under-reset'. {nothing}")
    if isinstance(exc, x.TransferError):
        return FlashError(f"no answer from the target behind {where} while {doing} ({text}). Check that "
                          "the target is powered and wired to the probe (SWDIO, SWCLK, GND), or lower "
                          f"PYOCD_FREQUENCY. {nothing}")
    if isinstance(exc, x.FlashEraseFailure):
        return FlashError(f"the chip refused to erase flash while {doing} ({text}), via {where}. A page may "
                          "be write-protected (WRP option bytes) or the chip read-protected (RDP); remove "
                          f"the protection (e.g. pyocd commander, or STM32CubeProgrammer) and try again. {nothing}")
    if isinstance(exc, x.FlashProgramFailure):
        return FlashError(f"the chip refused to program flash while {doing} ({text}), via {where}. A page "
                          "may be write-protected (WRP option bytes) or the chip read-protected (RDP); "
                          f"remove the protection and try again. {nothing}")
    if isinstance(exc, x.FlashFailure):
        return FlashError(f"the flash algorithm failed while {doing} ({text}), via {where}. Check "
                          f"PYOCD_TARGET, reset or power-cycle the board and try again. {nothing}")
    if isinstance(exc, x.TargetSupportError):
        return FlashError(f"pyOCD cannot drive this target while {doing} ({text}). Check PYOCD_TARGET "
                          "('pyocd list --targets' lists the built-in ones; others need a CMSIS pack: "
                          "'pyocd pack install NAME').")
    if isinstance(exc, x.ProbeError):
        return FlashError(f"{where} could not be used while {doing} ({text}). {_probe_hint(probe_id)}")
    if isinstance(exc, x.TimeoutError):
        return FlashError(f"timed out while {doing} via {where} ({text}). Reset or power-cycle the board, "
                          f"check the wiring, and try again. {nothing}")
    if isinstance(exc, x.DebugError) and "No cores were discovered" in text:
        # pyOCD swallows the transfer errors of its AP and ROM-table scan and reports this.
        return FlashError(f"no CPU core answered behind {where} while {doing}: the target stopped "
                          "answering, or is not powered, held in reset or asleep. Check the target's "
                          "power and the SWD wiring, reset or power-cycle the board, or try "
                          f"PYOCD_CONNECT='under-reset' or a lower PYOCD_FREQUENCY. {nothing}")
    if isinstance(exc, x.Error):
        text = text.rstrip(".!") or type(exc).__name__
        return FlashError(f"pyOCD failed while {doing} via {where}: {text}. Run with --pyocd-debug "
                          f"for pyOCD's log. {nothing}")
    if type(exc).__name__ == "USBError" or isinstance(exc, OSError):
        return FlashError(f"USB/OS error on {where} while {doing}: {text}. Check the cable and that you "
                          "may use the probe (on Linux, pyOCD's udev rules); " + _probe_hint(probe_id))
    return FlashError(f"unexpected {type(exc).__name__} from pyOCD on {where} while {doing}: {text}. "
                      f"Run with --pyocd-debug and report it. {nothing}")


# -- probes -----------------------------------------------------------------------------

def _describe(probe) -> ProbeInfo:
    try:
        return ProbeInfo(probe.unique_id, probe.description)
    except Exception as exc:   # a probe that cannot even be described is listed as such
        return ProbeInfo(getattr(probe, "unique_id", "?"), f"inaccessible: {exc}")


def list_probes() -> List[ProbeInfo]:
    """Every debug probe pyOCD can see (including simulated boards that exist)."""
    _pyocd()
    from pyocd.probe.aggregator import DebugProbeAggregator
    with translate("(any)", "listing probes"):
        probes = DebugProbeAggregator.get_all_connected_probes()
    return sorted((_describe(p) for p in probes), key=lambda info: info.unique_id)


def find_probe(wanted: str, served=None, say: Callable[[str], None] = print):
    """The one probe matching ``wanted`` (a unique id or a unique part of one; '' = the only
    probe attached). A FlashError lists what is attached otherwise.

    ``remote:HOST:PORT`` and ``labgrid:PLACE`` (or ``served``, what :func:`remote.lookup`
    found for them) give the probe behind that server (:mod:`.remote_probe`); ``say``
    reports a wait for the server's lock."""
    from . import remote
    if served is None and remote.is_remote(wanted):
        served = remote.lookup(wanted)
    _pyocd()
    if served is not None:
        from .remote_probe import attach
        return attach(served, say)
    from pyocd.probe.aggregator import DebugProbeAggregator
    with translate(wanted or "(any)", "looking for the probe"):
        matches = DebugProbeAggregator.get_all_connected_probes(unique_id=wanted or None)
    if len(matches) == 1:
        return matches[0]
    exact = [p for p in matches if wanted and p.unique_id == wanted]
    if len(exact) == 1:
        return exact[0]
    attached = "; ".join(str(p) for p in list_probes()) or "none"
    if not matches and not wanted:
        raise FlashError("no debug probe found. Plug the probe in (and on Linux install pyOCD's udev "
                         "rules), or set PYOCD_PROBE / --probe; for the simulated board use "
                         "--probe=sim-vldiscovery.")
    if not matches:
        raise FlashError(f"no probe matches PYOCD_PROBE={wanted!r}: attached probes are: {attached}. "
                         "Check the cable, or set PYOCD_PROBE / --probe to one of them.")
    listed = "; ".join(str(_describe(p)) for p in matches)
    if not wanted:
        raise FlashError(f"several debug probes are attached: {listed}. Choose one with PYOCD_PROBE "
                         "or --probe=ID.")
    raise FlashError(f"PYOCD_PROBE={wanted!r} matches several probes: {listed}. Give more of the "
                     "unique id.")


# -- progress ---------------------------------------------------------------------------

class Interrupted(FlashError):
    """The user stopped the operation (Ctrl-C) between two pages."""


class Progress:
    """A one-line progress bar on stderr, or nothing when stderr is not a terminal.

    pyOCD calls it between pages, which makes it the place to honour ``should_stop``.
    """

    WIDTH = 30

    def __init__(self, enabled: Optional[bool], should_stop: Optional[Callable[[], bool]] = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        self.should_stop = should_stop
        self.label = ""
        self._shown = -1

    def phase(self, label: str) -> Callable[[float], None]:
        self.label = label
        self._shown = -1
        return self

    def __call__(self, fraction: float) -> None:
        if self.should_stop is not None and self.should_stop():
            self.done()
            raise Interrupted(f"interrupted (Ctrl-C) while {self.label or 'working'}: the operation "
                              "stopped between two pages. The board is not recorded as flashed; run "
                              "the command again to finish.")
        if not self.enabled:
            return
        percent = max(0, min(100, int(fraction * 100)))
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.WIDTH * percent // 100
        sys.stderr.write(f"\r{self.label:11} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {percent:3d}%")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._shown >= 0:
            sys.stderr.write("\r" + " " * (self.WIDTH + 20) + "\r")
            sys.stderr.flush()
        self._shown = -1


@contextlib.contextmanager
def _pyocd_logging(debug: bool) -> Iterator[None]:
    """pyOCD's log on stderr at debug level when asked, silent otherwise."""
    logger = logging.getLogger("pyocd")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("pyocd %(levelname)s %(name)s: %(message)s"))
        logger.handlers = [handler]
        logger.setLevel(logging.DEBUG)
    else:
        logger.handlers = [logging.NullHandler()]
        logger.setLevel(logging.CRITICAL + 1)
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


# -- the board --------------------------------------------------------------------------

class Connection:
    """An open pyOCD session on one probe and its chip. Use as a context manager::

        with Connection.open(settings, probe) as connection:
            connection.check_identity()
            result = connection.flash(image, before_write)
    """

    def __init__(self, settings: Settings, probe):
        self.settings = settings
        self.probe_id: str = probe.unique_id
        self._probe = probe
        self._session = None
        self._progress = Progress(False if settings.debug else settings.progress, settings.should_stop)
        self._logging = contextlib.ExitStack()

    # -- connection ---------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, probe) -> "Connection":
        connection = cls(settings, probe)
        connection._open()
        return connection

    def session_options(self) -> Dict[str, Any]:
        s = self.settings
        options: Dict[str, Any] = dict(SAFE_OPTIONS)
        options["project_dir"] = os.getcwd()
        options["connect_mode"] = s.connect
        options["resume_on_disconnect"] = s.reset == "run"
        if s.target:
            options["target_override"] = s.target
        if s.frequency:
            options["frequency"] = s.frequency
        options.update(s.options)
        return options

    def _open(self) -> None:
        _pyocd()
        from pyocd.core.session import Session
        self._logging.enter_context(_pyocd_logging(self.settings.debug))
        try:
            with translate(self.probe_id, "connecting"):
                cwd = os.getcwd()
                session = None
                try:
                    session = Session(self._probe, options=self.session_options())
                    session.open()
                except Exception as exc:
                    if session is not None:     # give the probe back (a probe server's lock too)
                        with contextlib.suppress(Exception):
                            session.close()
                    raise self._setup_failure(exc) from None
                finally:
                    if os.getcwd() != cwd:   # a user-set project_dir made pyOCD chdir
                        os.chdir(cwd)
                self._session = session
        except BaseException:
            self._logging.close()
            raise

    def _setup_failure(self, exc: Exception) -> Exception:
        """pyOCD's own errors go to :func:`translate`; anything else while the session opens
        (a KeyError for an access port the chip lacks, say) means pyOCD's idea of the target
        does not fit the chip."""
        from pyocd.core import exceptions as x
        if isinstance(exc, (x.Error, OSError)) or type(exc).__name__ == "USBError":
            return exc
        target = self.settings.target or "the probe's default target"
        return FlashError(
            f"pyOCD could not set up {target} on the chip behind probe {self.probe_id} "
            f"({type(exc).__name__}: {exc}): the chip is probably not a {target}. Nothing was "
            "written. Check PYOCD_TARGET (the chip's pyOCD target name) and that the probe is "
            "wired to the right board; --pyocd-debug shows pyOCD's log.")

    def close(self) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                with contextlib.suppress(Exception):
                    session.close()
        finally:
            self._progress.done()
            self._logging.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def target(self):
        return self._session.target

    @property
    def target_name(self) -> str:
        return self.settings.target or getattr(self._session.board, "target_type", "") or "?"

    # -- memory map ---------------------------------------------------------------------
    def flash_regions(self) -> list:
        from pyocd.core.memory_map import MemoryType
        regions = list(self.target.memory_map.iter_matching_regions(type=MemoryType.FLASH))
        if not regions:
            raise FlashError(f"target {self.target_name} has no flash in pyOCD's memory map (via probe "
                             f"{self.probe_id}). Set PYOCD_TARGET to the chip's pyOCD target name.")
        return regions

    def flash_start(self) -> int:
        """Where a raw binary goes by default: the boot flash region's start."""
        boot = self.target.memory_map.get_boot_memory()
        return boot.start if boot is not None and boot.is_flash else self.flash_regions()[0].start

    def check_fits(self, image: Image) -> None:
        """Refuse an image with any byte outside the target's flash (nothing written)."""
        check_fits(image, fit_regions(self.target_name, self.flash_regions()))

    def sectors(self, image: Image) -> List[Range]:
        """The sector-aligned ranges an image's data falls in (merged)."""
        pages: List[Range] = []
        for region in self.flash_regions():
            size = region.sector_size or region.blocksize
            pages += [(page, page + size) for page in image.pages(size) if region.start <= page < region.end]
        return _merge(pages)

    # -- identity -----------------------------------------------------------------------
    def check_identity(self) -> str:
        """Refuse unless the chip reports the configured target's device id and flash size.

        Returns a one-line description; targets with no entry in :data:`IDENTITIES` are
        not checked (the line says so).
        """
        name = self.target_name
        expected = IDENTITIES.get(name.lower())
        if expected is None:
            return f"identity not checked: no device id known for target {name}"
        with translate(self.probe_id, "reading the chip's identity"):
            idcode = self.target.read32(expected.idcode_address)
            flash_kb = (self.target.read16(expected.flash_size_address)
                        if expected.flash_size_address is not None else None)
        dev_id = idcode & expected.dev_id_mask
        problems = []
        if dev_id != expected.dev_id:
            problems.append(f"device id 0x{dev_id:03X} (DBGMCU_IDCODE 0x{idcode:08X} at "
                            f"0x{expected.idcode_address:08X}), expected 0x{expected.dev_id:03X}")
        if expected.flash_kb is not None and flash_kb != expected.flash_kb:
            problems.append(f"{flash_kb} KiB of flash (register 0x{expected.flash_size_address:08X}), "
                            f"expected {expected.flash_kb} KiB")
        if problems:
            raise FlashError(f"the chip behind probe {self.probe_id} is not a {expected.description}: it "
                             f"reports {' and '.join(problems)}. Nothing was written. Check the wiring "
                             f"(is the probe connected to the right board?) and PYOCD_TARGET (now {name}).")
        return f"{expected.description}, DBGMCU_IDCODE 0x{idcode:08X}"

    def chip_unique_id(self) -> Optional[str]:
        """The chip's factory unique id as lowercase hex (96 bits on STM32), or None when the
        target has no known identity (:data:`IDENTITIES`)."""
        expected = IDENTITIES.get(self.target_name.lower())
        if expected is None or expected.unique_id_address is None:
            return None
        with translate(self.probe_id, "reading the chip's unique id"):
            data = self.target.read_memory_block8(expected.unique_id_address, expected.unique_id_bytes)
        return bytes(data).hex()

    # -- what the chip holds --------------------------------------------------------------
    def page_size_at(self, address: int) -> int:
        for region in self.flash_regions():
            if region.start <= address <= region.end:
                return region.sector_size or region.blocksize
        raise FlashError(f"0x{address:08X} is not in the flash of {self.target_name}.")

    def pages(self, image: Image) -> List[Range]:
        """Every flash page the image touches, as (start, end)."""
        pages: List[Range] = []
        for region in self.flash_regions():
            size = region.sector_size or region.blocksize
            pages += [(page, page + size) for page in image.pages(size) if region.start <= page < region.end]
        return pages

    def survey(self, image: Image) -> Survey:
        """The CRC of every page ``image`` touches, as the chip holds it, and which of them differ
        from the image inside its ranges (pages are read whole)."""
        self.check_fits(image)
        crcs: Dict[int, int] = {}
        differing: List[int] = []
        with translate(self.probe_id, f"comparing {image.source} with the chip"):
            for lo, hi in self.pages(image):
                data = bytes(self.target.read_memory_block8(lo, hi - lo))
                crcs[lo] = binascii.crc32(data) & 0xFFFFFFFF
                if _first_difference(image, lo, data, image.data_at(lo, hi - lo)) is not None:
                    differing.append(lo)
        return Survey(crcs, differing)

    def _facts_after(self, image: Image, programmed: Sequence[Range]) -> Tuple[Dict[int, int], Dict[int, bytes]]:
        """(page CRCs, whole content of the programmed pages) after a verified flash of ``image``:
        pages the image fills are its bytes; the others are read."""
        crcs: Dict[int, int] = {}
        written: Dict[int, bytes] = {}
        covered = image.ranges()
        with translate(self.probe_id, f"reading back {image.source}"):
            for lo, hi in self.pages(image):
                if _subtract([(lo, hi)], covered):
                    data = bytes(self.target.read_memory_block8(lo, hi - lo))
                else:
                    data = image.data_at(lo, hi - lo)
                crcs[lo] = binascii.crc32(data) & 0xFFFFFFFF
                if _intersect([(lo, hi)], programmed):
                    written[lo] = data
        return crcs, written

    # -- writing ------------------------------------------------------------------------
    def _builders(self, image: Image) -> list:
        """One pyOCD FlashBuilder per flash region the image touches, data added."""
        builders = []
        for region in self.flash_regions():
            builder = None
            for start, data in image.segments:
                lo, hi = max(start, region.start), min(start + len(data), region.end + 1)
                if lo < hi:
                    if builder is None:
                        builder = region.flash.get_flash_builder()
                        builder.log_performance = False
                        builders.append(builder)
                    builder.add_data(lo, data[lo - start:hi - start])
        return builders

    def flash(self, image: Image, before_write: BeforeWrite = lambda ranges: None) -> FlashResult:
        """Program ``image`` per the erase policy, verify it, reset per ``settings.reset``.

        Checks (identity, fit) come first; ``before_write`` is called with the ranges
        about to change (None for a mass erase) just before the first write.

        Smart flash compares every page of the image with the chip (on-chip CRC) and
        programs those that differ; ``verify='crc'`` then checks the pages programmed. The
        board record is never trusted for this: a board rewritten behind the tool's back
        must not be reported as verified.
        """
        s = self.settings
        self.check_identity()
        self.check_fits(image)
        ranges = self.sectors(image)
        builders = self._builders(image)
        # auto: pyOCD may pick a mass erase only when the image's sectors are the whole flash,
        # so nothing outside the image is ever erased.
        whole = sum(hi - lo for lo, hi in ranges) == sum(r.length for r in self.flash_regions())
        chip_erase = {"chip": "chip", "sector": "sector"}.get(s.erase, "auto" if whole else "sector")
        smart = s.erase == "auto"
        trust_crc = bool(s.options.get("fast_program", True))   # verify follows anyway
        keep = bool(s.options.get("keep_unwritten", True))     # preserve the rest of a touched sector
        # Only with one flash region: a mass erase may clear every region, and only this
        # one is checked blank.
        if s.erase == "auto" and not whole and len(builders) == 1 and len(self.flash_regions()) == 1:
            with translate(self.probe_id, f"comparing {image.source} with the chip"):
                chip_erase = self._cheaper_erase(builders[0], trust_crc, keep)
        before_write(None if chip_erase == "chip" else ranges)
        perfs = []
        with translate(self.probe_id, f"flashing {image.source}"):
            for builder in builders:
                builder.erase(chip_erase=chip_erase, smart_flash=smart, fast_verify=trust_crc,
                              keep_unwritten=keep, progress_cb=self._progress.phase("erasing"))
                perfs.append(builder.program(smart_flash=smart, fast_verify=trust_crc, keep_unwritten=keep,
                                             progress_cb=self._progress.phase("programming")))
                if chip_erase == "chip":
                    chip_erase = "sector"     # one mass erase clears every region
            self._progress.done()
        written_part = self._written_part(image, builders)
        if s.verify != "none":
            self._check_equal(written_part if s.verify == "crc" else image, s.verify)
        page_crcs, written = self._facts_after(
            image, ranges if chip_erase == "chip" or written_part is image else
            _merge([(lo - lo % self.page_size_at(lo), hi) for lo, hi in written_part.ranges()]))
        self.reset_after()
        return FlashResult(
            target=self.target_name, probe=self.probe_id,
            pages_total=sum(p.program_page_count + p.skipped_page_count for p in perfs),
            pages_programmed=sum(p.program_page_count for p in perfs),
            bytes_programmed=sum(p.program_byte_count for p in perfs),
            sectors_erased=sum(p.erase_sector_count for p in perfs),
            chip_erase=any(p.program_type == 2 for p in perfs),   # FlashBuilder.FLASH_CHIP_ERASE
            seconds=sum(p.erase_time + p.program_time for p in perfs),
            verify=s.verify, ranges=ranges, page_crcs=page_crcs, written=written)

    @staticmethod
    def _written_part(image: Image, builders: list) -> Image:
        """What ``verify='crc'`` must check after programming: the image's bytes in the pages
        just programmed. The other pages were found equal to the image by smart flash's
        on-chip CRC (compared with the image's CRC on the host) and were not touched.
        The whole image when pyOCD does not say which pages it programmed."""
        try:
            pages = [(page.addr, page.addr + page.size) for builder in builders
                     for page in builder.page_list if page.same is not True]
        except AttributeError:   # FlashBuilder internals of another pyOCD
            return image
        segments = []
        for lo, hi in _intersect(image.ranges(), _merge(pages)):
            segments.append((lo, image.data_at(lo, hi - lo)))
        return Image(segments, image.source, image.fmt)

    def _cheaper_erase(self, builder, trust_crc: bool, keep: bool) -> str:
        """``'chip'`` when a mass erase then programming the image costs less than erasing and
        programming the sectors that differ, *and* every sector outside the image's is already
        erased (so the mass erase loses nothing); ``'sector'`` otherwise.

        Costs are pyOCD's own estimates (the flash region's weights, from the datasheet for
        our targets), from its smart-flash analysis of the image's pages (an on-chip CRC
        per page, which the programming step then reuses). The blank check runs only when
        the mass erase would win: an on-chip CRC of the rest of the flash.
        """
        try:   # FlashBuilder internals (pyOCD 0.36-0.46); another pyOCD falls back to 'sector'
            builder._prepare_sectors_and_pages(keep, True)
            _, sector_weight = builder._compute_sector_erase_pages_and_weight(trust_crc)
            _, chip_weight = builder._compute_chip_erase_pages_and_weight()
            touched = [(sector.addr, sector.addr + sector.size) for sector in builder.sector_list]
        except AttributeError:
            return "sector"
        region = builder.flash.region
        rest = _subtract([(region.start, region.end + 1)], sorted(touched))
        check_weight = sum(hi - lo for lo, hi in rest) * BLANK_CHECK_WEIGHT_PER_BYTE
        LOG.debug("erase estimate: sectors %.3f s, chip %.3f s + blank check %.3f s",
                  sector_weight, chip_weight, check_weight)
        if chip_weight + check_weight >= sector_weight:
            return "sector"
        return "chip" if self._is_blank(region, rest) else "sector"

    def _is_blank(self, region, ranges: Sequence[Range]) -> bool:
        """Whether every byte of ``ranges`` (inside ``region``) reads as erased: an on-chip CRC
        of each analyzer block inside them, reads for the rest."""
        erased = region.erased_byte_value
        size = _analyzer_block_size(region)
        blocks = [(block, size) for lo, hi in ranges for block in _whole_blocks(lo, hi, size)]
        for lo, hi in _subtract(ranges, [(block, block + size) for block, _ in blocks]):
            if any(b != erased for b in self.target.read_memory_block8(lo, hi - lo)):
                return False
        blank_crc = binascii.crc32(bytes([erased]) * size) & 0xFFFFFFFF
        return all(crc == blank_crc for crc in _chip_crcs(region, blocks)) if blocks else True

    def erase(self, ranges: Optional[Sequence[Range]] = None,
              before_write: BeforeWrite = lambda ranges: None) -> str:
        """Mass erase (``ranges`` None), or erase every sector overlapping ``ranges``; return
        the line to print."""
        from pyocd.flash.eraser import FlashEraser
        self.check_identity()
        regions = self.flash_regions()
        if ranges is None:
            before_write(None)
            with translate(self.probe_id, "erasing the chip"):
                FlashEraser(self._session, FlashEraser.Mode.CHIP).erase()
            self.reset_after()
            return f"erase {self.target_name} via {self.probe_id}: mass erase"
        spans: List[Range] = []
        for lo, hi in ranges:
            region = next((r for r in regions if r.start <= lo and hi <= r.end + 1), None)
            if region is None or lo >= hi:
                raise FlashError(
                    f"erase range 0x{lo:08X}-0x{hi - 1:08X} is not inside the flash of {self.target_name} "
                    f"({', '.join(f'0x{r.start:08X}-0x{r.end:08X}' for r in regions)}). Nothing was "
                    "erased; check the range.")
            address = lo
            while address < hi:
                info = region.flash.get_sector_info(address)
                spans.append((info.base_addr, info.base_addr + info.size))
                address = info.base_addr + info.size
        before_write(spans)
        with translate(self.probe_id, "erasing sectors"):
            FlashEraser(self._session, FlashEraser.Mode.SECTOR).erase(spans)
        self.reset_after()
        return (f"erase {self.target_name} via {self.probe_id}: {len(spans)} sectors, "
                f"0x{spans[0][0]:08X}-0x{spans[-1][1] - 1:08X}")

    def reset_after(self) -> None:
        mode = self.settings.reset
        with translate(self.probe_id, f"resetting the target ({mode})"):
            if mode == "run":
                self.target.reset()
            elif mode == "halt":
                self.target.reset_and_halt()

    # -- comparing ------------------------------------------------------------------------
    def verify(self, image: Image, mode: Optional[str] = None) -> Optional[Survey]:
        """Raise FlashError at the first byte where the chip differs from ``image``; return what
        was learned of the image's pages (None with mode 'none')."""
        mode = mode or self.settings.verify
        if mode == "none":
            return None
        self._check_equal(image, mode)
        return self.survey(image)

    def _check_equal(self, image: Image, mode: str) -> None:
        mismatch = self.compare(image, mode)
        if mismatch is not None:
            raise FlashError(
                f"verify failed on probe {self.probe_id}: at 0x{mismatch.address:08X} the chip holds "
                f"0x{mismatch.found:02X}, {image.source} has 0x{mismatch.expected:02X} "
                f"({mismatch.count} byte(s) differ in that block). The board is not recorded as "
                "flashed: run scons flash again (with PYOCD_ERASE='sector' if it persists); if it "
                "fails again, the flash may be worn or protected.")

    def compare(self, image: Image, mode: str = "crc") -> Optional[Mismatch]:
        """The first difference between the chip and ``image``, or None.

        ``crc``: 4 KiB-aligned blocks entirely inside the image are compared by an on-chip
        CRC32 (pyOCD's analyzer), the rest is read back; a block whose CRC differs is read
        to find the address. ``read``: every byte is read back.
        """
        with translate(self.probe_id, f"verifying {image.source}"):
            blocks = self._crc_blocks(image) if mode == "crc" else []
            covered = [(block, block + size) for _, block, size in blocks]
            reads = self._crc_mismatches(image, blocks) + _subtract(image.ranges(), covered)
            progress = self._progress.phase("verifying")
            total = sum(hi - lo for lo, hi in reads) or 1
            done = 0
            for lo, hi in sorted(reads):
                for chunk in range(lo, hi, 4096):
                    end = min(chunk + 4096, hi)
                    found = bytes(self.target.read_memory_block8(chunk, end - chunk))
                    expected = image.data_at(chunk, end - chunk)
                    mismatch = None if found == expected else _first_difference(image, chunk, found, expected)
                    if mismatch is not None:
                        self._progress.done()
                        return mismatch
                    done += end - chunk
                    progress(done / total)
            self._progress.done()
        return None

    def _crc_blocks(self, image: Image) -> List[Tuple[Any, int, int]]:
        """``(region, address, size)`` of each analyzer block (:func:`_analyzer_block_size`)
        lying entirely inside the image."""
        blocks = []
        for region in self.flash_regions():
            if region.flash is None or not getattr(region.flash, "use_analyzer", False):
                continue
            size = _analyzer_block_size(region)
            for start, data in image.segments:
                lo, hi = max(start, region.start), min(start + len(data), region.end + 1)
                blocks += [(region, block, size) for block in _whole_blocks(lo, hi, size)]
        return blocks

    def _crc_mismatches(self, image: Image, blocks: List[Tuple[Any, int, int]]) -> List[Range]:
        """The blocks whose on-chip CRC32 differs from the image's."""
        differing: List[Range] = []
        for region in {id(r): r for r, _, _ in blocks}.values():
            group = [(block, size) for r, block, size in blocks if r is region]
            crcs = _chip_crcs(region, group)
            differing += [(block, block + size) for (block, size), crc in zip(group, crcs)
                          if crc != binascii.crc32(image.data_at(block, size)) & 0xFFFFFFFF]
        return differing


#: Estimated cost (s) of checking one byte of flash is blank with the on-chip CRC, for
#: weighing a mass erase against sector erases (pyOCD's analyzer on an STM32F100 at its 8 MHz
#: reset clock, as the simulated board charges it: about 2 us a byte).
BLANK_CHECK_WEIGHT_PER_BYTE = 2.0e-6


def _analyzer_block_size(region) -> int:
    """pyOCD's analyzer encodes a block as ``(address // size) << 16 | log2(size)`` in 32 bits,
    so ``address // size`` must stay below 0x10000: the smallest power of two, at least a
    sector, that allows it (4 KiB for flash at 0x08000000)."""
    size = 1 << max(10, ((region.sector_size or region.blocksize or 1024) - 1).bit_length())
    while region.end // size >= 0x10000:
        size <<= 1
    return size


def fit_regions(name: str, regions) -> List[Tuple[str, int, int]]:
    """``(name, start, length)`` of flash regions, as :func:`images.check_fits` takes them."""
    return [(f"{name} {r.name or 'flash'}", r.start, r.length) for r in regions]


def _whole_blocks(lo: int, hi: int, size: int) -> range:
    """Addresses of the ``size``-aligned blocks lying entirely inside ``[lo, hi)``."""
    return range(-(-lo // size) * size, hi - size + 1, size)


def _chip_crcs(region, blocks: Sequence[Tuple[int, int]]) -> List[int]:
    """The on-chip CRC32 (pyOCD's analyzer) of each ``(address, size)`` block of ``region``."""
    flash = region.flash
    flash.init(flash.Operation.VERIFY)
    try:
        return list(flash.compute_crcs(blocks))
    finally:
        flash.cleanup()


def _merge(ranges: Sequence[Range]) -> List[Range]:
    """Sorted ranges with touching or overlapping ones joined."""
    out: List[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _intersect(a: Sequence[Range], b: Sequence[Range]) -> List[Range]:
    """The parts common to two sorted lists of disjoint ranges."""
    return [(max(lo, blo), min(hi, bhi)) for lo, hi in a for blo, bhi in b if max(lo, blo) < min(hi, bhi)]


def _subtract(ranges: Sequence[Range], holes: Sequence[Range]) -> List[Range]:
    """``ranges`` minus ``holes`` (both sorted, end exclusive)."""
    out: List[Range] = []
    for lo, hi in ranges:
        address = lo
        for hlo, hhi in holes:
            if hhi <= address or hlo >= hi:
                continue
            if hlo > address:
                out.append((address, hlo))
            address = max(address, hhi)
        if address < hi:
            out.append((address, hi))
    return out


def _first_difference(image: Image, base: int, found: bytes, expected: bytes) -> Optional[Mismatch]:
    """The first address in ``base..`` where the chip differs from the image's own bytes
    (gaps between the image's segments are not compared)."""
    diffs = [a for lo, hi in image.ranges() for a in range(max(lo, base), min(hi, base + len(found)))
             if found[a - base] != expected[a - base]]
    if not diffs:
        return None
    first = diffs[0]
    return Mismatch(first, expected[first - base], found[first - base], len(diffs))
