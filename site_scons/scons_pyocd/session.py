"""The pyOCD layer: find the probe, connect, check the chip, ask it what a flash plan needs,
carry the plan out (erase, program, verify).

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

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from . import usb_access
from .errors import FlashError, Interrupted  # noqa: F401 (Interrupted: part of this module's API)
from .images import Image, check_fits
from .progress import Progress, View
from .report import kib
if TYPE_CHECKING:      # .plan is imported where it is used: a no-op build importing this module skips it
    from .plan import Costs, Geometry, Options, PageState, Plan, Query, Region, Step  # noqa: F401
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


def _pyocd(probe: Optional[str] = None, simulated: bool = False):
    """Import pyOCD and make this package's targets known to it; the simulated probe type too
    when ``probe`` names a simulated board (``sim-...``), when ``simulated`` asks for it
    (listing probes, or ``SCONS_PYOCD_SIM_LIST=1``), or when ``probe`` is '' (any attached
    probe) and the simulator is installed. None: no probe is looked for (targets only).
    A real probe's id never imports the simulator (see :mod:`.sim_plugin`). A simulated
    board without the simulator installed is a FlashError saying what to install."""
    import pyocd.core.exceptions
    from . import sim_plugin, targets
    targets.register()
    named = probe is not None and sim_plugin.is_simulated(probe)
    simulated = simulated or sim_plugin.listing_enabled()      # SCONS_PYOCD_SIM_LIST=1: the user asks
    if not (named or simulated or (probe == "" and sim_plugin.simulator_installed())):
        return pyocd
    if not sim_plugin.simulator_installed():
        if named:
            raise FlashError(
                f"probe {probe} is a simulated board, but the simulator is not installed (it needs "
                "Unicorn): install it with pip install 'scons-pyocd[sim]' (from a checkout: pip "
                "install '.[sim]'), or give a real probe's unique id (scons probes lists them).")
        return pyocd
    from pyocd.probe.aggregator import PROBE_CLASSES
    PROBE_CLASSES.setdefault("sim", sim_plugin.SimProbeFinder)
    return pyocd


# -- settings and results ---------------------------------------------------------------

@dataclass
class Settings:
    """How to reach and treat the chip. Values are already checked (see :mod:`.options`).

    ``target``: pyOCD target name ('' = the probe's board default). ``frequency``: SWD
    clock in Hz (None = pyOCD's default). ``connect``: halt / under-reset / attach.
    ``reset``: run / halt / none after writing. ``erase``: auto / sector / chip.
    ``verify``: crc / read / none. ``options``: extra pyOCD session options.
    ``progress``: the object to report progress to (:class:`scons_pyocd.progress.Progress`);
    None: progress is not shown (Ctrl-C is still honoured through ``should_stop``).
    ``debug``: show pyOCD's log and the flash plan on stderr. ``should_stop``: polled between
    steps (an algorithm call, a page); when it
    returns True the operation stops with a FlashError (the caller's Ctrl-C).
    """
    target: str = ""
    frequency: Optional[int] = None
    connect: str = "halt"
    reset: str = "run"
    erase: str = "auto"
    verify: str = "crc"
    options: Mapping[str, Any] = field(default_factory=dict)
    progress: Any = None
    debug: bool = False
    should_stop: Optional[Callable[[], bool]] = None


@dataclass
class FlashResult:
    """Figures of one flash, from its plan. ``seconds``: wall time of the writing and verifying;
    ``ranges``: the page ranges the image touches."""
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
        line = (f"flash {flashed} via {self.probe}: {what}, {kib(self.bytes_programmed)} "
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
    if isinstance(exc, x.ProbeError) and "older firmware" in text:
        return FlashError(f"{where} runs ST-Link firmware older than pyOCD supports ({text}). Update it with "
                          "ST's ST-LINK firmware upgrade tool (STSW-LINK007) to V2J24 or later, then try "
                          "again (docs/real-hardware.md). Nothing was written.")
    if isinstance(exc, x.ProbeError) and "frequency is too low" in text:
        return FlashError(f"{where} cannot run SWD that slowly ({text}): an ST-Link/V2 goes down to 5 kHz. "
                          "Raise PYOCD_FREQUENCY / --frequency (e.g. 100kHz). Nothing was written.")
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


def list_probes(simulated: bool = False) -> List[ProbeInfo]:
    """Every debug probe pyOCD can see; simulated boards that exist too when ``simulated``
    (or when the simulated probe type is registered already)."""
    _pyocd(simulated=simulated)
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
    _pyocd(wanted)
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
        raise FlashError("no debug probe found. Plug the probe in (and on Linux install the udev "
                         "rules: docs/real-hardware.md), or set PYOCD_PROBE / --probe; for the simulated "
                         "board use --probe=sim-vldiscovery." + usb_access.hint())
    if not matches:
        raise FlashError(f"no probe matches PYOCD_PROBE={wanted!r}: attached probes are: {attached}. "
                         "Check the cable, or set PYOCD_PROBE / --probe to one of them." + usb_access.hint())
    listed = "; ".join(str(_describe(p)) for p in matches)
    if not wanted:
        raise FlashError(f"several debug probes are attached: {listed}. Choose one with PYOCD_PROBE "
                         "or --probe=ID.")
    raise FlashError(f"PYOCD_PROBE={wanted!r} matches several probes: {listed}. Give more of the "
                     "unique id.")


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


# -- the connection ---------------------------------------------------------------------

class Connection:
    """An open pyOCD session on one probe and its chip. Use as a context manager::

        with Connection.open(settings, probe) as connection:
            connection.check_identity()
            result = connection.flash(image, before_write)

    Flashing is planned first (:mod:`.plan`, pure) from what the chip is asked, then the plan
    is carried out by an executor that uses pyOCD's public API only: our own flash
    algorithm's command tables when the target's algorithm declares them
    (:class:`_FpecExecutor`), pyOCD's ``Flash`` calls and memory reads otherwise
    (:class:`_PyocdExecutor`).
    """

    def __init__(self, settings: Settings, probe):
        self.settings = settings
        self.probe_id: str = probe.unique_id
        self._probe = probe
        self._session = None
        self._progress = settings.progress if hasattr(settings.progress, "phase") else \
            Progress(View(), settings.should_stop)
        self._logging = contextlib.ExitStack()
        self._executor = None
        self._geometry: Optional[Geometry] = None

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
        _pyocd(self.probe_id)
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
            if self._executor is not None and session is not None:
                with contextlib.suppress(Exception):
                    self._executor.finish()
            if session is not None:
                with contextlib.suppress(Exception):
                    session.close()
        finally:
            self._executor = None
            self._geometry = None
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
        """The page-aligned ranges an image's data falls in (merged)."""
        from .ranges import merge
        return merge(self.pages(image))

    def pages(self, image: Image) -> List[Range]:
        """Every flash page the image touches, as ``(start, end)``, in address order."""
        return [(page, page + region.page_size) for region, page in self.geometry().touched(image.ranges())]

    def page_size_at(self, address: int) -> int:
        region = self.geometry().region_at(address)
        if region is None:
            raise FlashError(f"0x{address:08X} is not in the flash of {self.target_name}.")
        return region.page_size

    def geometry(self) -> Geometry:
        """The flash regions as :mod:`.plan` sees them, timings from pyOCD's region weights
        (for our targets, the datasheet's: see :mod:`.target_stm32f100rb`). Computed once per
        connection: pyOCD settles the memory map and its flash objects while the session opens
        (the target's init sequence, ``create_flash``), not after."""
        if self._geometry is None:
            self._geometry = geometry_of(self.flash_regions())
        return self._geometry

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
        with translate(self.probe_id, "reading the chip's identity (unique id)"):
            data = self.target.read_memory_block8(expected.unique_id_address, expected.unique_id_bytes)
        return bytes(data).hex()

    # -- planning ---------------------------------------------------------------------------
    def executor(self):
        """The executor for this target's flash (created once per connection)."""
        if self._executor is None:
            self._executor = _executor_for(self, self.flash_regions())
        return self._executor

    def _facts(self, image: Image, options: Options, doing: str) -> Tuple[Dict[int, PageState], List[Step]]:
        """Ask the chip what the plan needs to know (see :func:`.plan.make_plan`)."""
        from .plan import (Step, blank_check_ranges, estimate_survey, needs_reading, partial_pages,
                           states_from_data, survey_query, untouched_states)
        geometry = self.geometry()
        ex = self.executor()
        chip: Dict[int, PageState] = {}
        steps: List[Step] = []
        with translate(self.probe_id, doing):
            if options.erase == "auto":
                query = survey_query(image, geometry)
            else:       # nothing to compare; only what keeping the bytes beside the image needs
                query = survey_query(image, geometry, partial_pages(image, geometry) if options.keep_unwritten else [])
            if query.pages:
                self._progress.phase("comparing", len(query.pages))
                chip.update(ex.answer(image, geometry, query, self._progress))
                steps.append(Step("compare", f"{len(query.pages)} page(s) {ex.how_compared}",
                                  estimate_survey(query, ex.costs)))
            blank = blank_check_ranges(image, geometry, chip, options, ex.costs)
            if blank:
                self._progress.phase("blank check", len(blank))
                found = ex.blank(blank, self._progress)
                for (lo, hi), is_blank in zip(blank, found):
                    if is_blank:
                        chip.update(untouched_states(geometry, image, [(lo, hi)]))
                nbytes = sum(hi - lo for lo, hi in blank)
                steps.append(Step("blank check", f"{kib(nbytes)} outside the image: "
                                  f"{'blank' if all(found) else 'NOT blank'}", nbytes * ex.costs.crc_per_byte))
            read = needs_reading(image, geometry, chip, options)
            if read:
                pages = _read_pages(self.target, read, geometry)
                chip.update(states_from_data(image, geometry, pages))
                nbytes = sum(len(d) for d in pages.values())
                steps.append(Step("read", f"{len(read)} page(s) to keep the bytes beside the image",
                                  nbytes * ex.costs.read_per_byte))
            self._progress.done()
        return chip, steps

    def plan(self, image: Image) -> Plan:
        """Check the chip, ask it what the plan needs, and plan the flash of ``image`` (nothing
        is written). With ``settings.debug`` the plan is printed on stderr."""
        from .plan import PlanError, make_plan
        self.check_identity()
        self.check_fits(image)
        options = _plan_options(self.settings)
        chip, steps = self._facts(image, options, f"comparing {image.source} with the chip")
        try:
            plan = make_plan(image, self.geometry(), chip, options, self.executor().costs, steps)
        except PlanError as exc:
            raise FlashError(f"cannot plan the flash of {image.source} on {self.target_name}: {exc}. "
                             "Nothing was written; please report it.") from None
        if self.settings.debug:
            sys.stderr.write(plan.describe() + "\n")
            sys.stderr.flush()
        return plan

    # -- writing ------------------------------------------------------------------------
    def flash(self, image: Image, before_write: BeforeWrite = lambda ranges: None) -> FlashResult:
        """Program ``image`` per the plan (see :mod:`.plan`), verify it, reset per ``settings.reset``.

        Checks (identity, fit) and the questions to the chip come first; ``before_write`` is
        called once, with the merged page ranges about to be erased or programmed (None for a
        mass erase), just before the first write, and not at all when nothing needs writing.
        Which pages differ is always asked of the chip, never taken from a record.
        """
        import time
        plan = self.plan(image)
        ex = self.executor()
        started = time.monotonic()
        if plan.writes:
            before_write(plan.ranges())
            with translate(self.probe_id, f"flashing {image.source}"):
                ex.run(plan, self._progress)
        if plan.verify == "read":
            with translate(self.probe_id, f"verifying {image.source}"):
                self._progress.phase("verifying", len(plan.verify_pages))
                self._verify_read(image, plan)
        seconds = time.monotonic() - started
        self._progress.done()
        with translate(self.probe_id, f"flashing {image.source}"):
            ex.finish(reset_follows=self.resets_the_chip())
        self.reset_after()
        written = {w.address: w.data for w in plan.program}
        for region in plan.mass_erase:     # every other page of a mass-erased region ends blank
            for r in self.geometry().regions:
                if r.group == region.group:
                    blank = r.blank_page()
                    written.update((page, blank) for page in range(r.start, r.end, r.page_size)
                                   if page not in written)
        return FlashResult(
            target=self.target_name, probe=self.probe_id, pages_total=plan.pages_total,
            pages_programmed=len(plan.program),
            bytes_programmed=sum(len(w.data) for w in plan.program),
            sectors_erased=len(plan.erase), chip_erase=bool(plan.mass_erase), seconds=seconds,
            verify=plan.verify, ranges=self.sectors(image), page_crcs=plan.page_crcs(), written=written,
            plan=plan)

    def _verify_read(self, image: Image, plan: Plan) -> None:
        """Read back every page the image touches: programmed pages whole, the others where
        the image has bytes. FlashError at the first difference."""
        programmed = {w.address: w.data for w in plan.program}
        for page in plan.verify_pages:
            size = plan.page_sizes[page]
            found = bytes(self.target.read_memory_block8(page, size))
            if page in programmed:
                if found != programmed[page]:
                    raise self._verify_failed(image, _page_mismatch(page, programmed[page], found))
            else:
                mismatch = _first_difference(image, page, found, image.data_at(page, size))
                if mismatch is not None:
                    raise self._verify_failed(image, mismatch)
            self._progress.advance()

    def erase(self, ranges: Optional[Sequence[Range]] = None,
              before_write: BeforeWrite = lambda ranges: None) -> str:
        """Mass erase (``ranges`` None), or erase every page overlapping ``ranges``; return
        the line to print."""
        from .plan import merge
        self.check_identity()
        geometry = self.geometry()
        if ranges is None:
            before_write(None)
            with translate(self.probe_id, "erasing the chip"):
                self.executor().erase(geometry.regions, None, self._progress)
                self.executor().finish(reset_follows=self.resets_the_chip())
            self.reset_after()
            return f"erase {self.target_name} via {self.probe_id}: mass erase"
        pages: List[int] = []
        for lo, hi in ranges:
            region = geometry.region_at(lo)
            if region is None or lo >= hi or hi > region.end:
                raise FlashError(
                    f"erase range 0x{lo:08X}-0x{hi - 1:08X} is not inside the flash of {self.target_name} "
                    f"({', '.join(f'0x{r.start:08X}-0x{r.end - 1:08X}' for r in geometry.regions)}). Nothing was "
                    "erased; check the range.")
            pages += range(region.page_of(lo), hi, region.page_size)
        pages = sorted(set(pages))
        spans = merge((p, p + geometry.region_at(p).page_size) for p in pages)
        before_write(spans)
        with translate(self.probe_id, "erasing sectors"):
            self.executor().erase(geometry.regions, pages, self._progress)
            self.executor().finish(reset_follows=self.resets_the_chip())
        self.reset_after()
        return (f"erase {self.target_name} via {self.probe_id}: {len(pages)} page{'s' if len(pages) != 1 else ''}, "
                f"0x{spans[0][0]:08X}-0x{spans[-1][1] - 1:08X}")

    def resets_the_chip(self) -> bool:
        """Whether :meth:`reset_after` resets the whole chip (clocks, flash controller), not the
        core alone: pyOCD's core-only reset types (``reset_type`` in ``PYOCD_OPTIONS``) do not."""
        core_only = {"sw_core", "sw_vectreset", "sw_emulated"}
        return self.settings.reset != "none" and str(self.settings.options.get("reset_type", "")) not in core_only

    def reset_after(self) -> None:
        mode = self.settings.reset
        with translate(self.probe_id, f"resetting the target ({mode})"):
            if mode == "run":
                self.target.reset()
            elif mode == "halt":
                self.target.reset_and_halt()

    # -- comparing ------------------------------------------------------------------------
    def survey(self, image: Image) -> Survey:
        """The CRC of every page ``image`` touches, as the chip holds it, and which of them differ
        from the image inside its ranges."""
        from .plan import survey_query
        self.check_fits(image)
        geometry = self.geometry()
        ex = self.executor()
        with translate(self.probe_id, f"comparing {image.source} with the chip"):
            query = survey_query(image, geometry)
            self._progress.phase("comparing", len(query.pages))
            facts = ex.answer(image, geometry, query, self._progress, crcs_of_differing=True)
            self._progress.done()
        differing = sorted(page for page, state in facts.items() if not state.matches)
        return Survey({page: state.crc for page, state in facts.items()}, differing)

    def verify(self, image: Image, mode: Optional[str] = None) -> Optional[Survey]:
        """Raise FlashError at the first byte where the chip differs from ``image``; return what
        was learned of the image's pages (None with mode 'none')."""
        mode = mode or self.settings.verify
        if mode == "none":
            return None
        if mode == "read":
            mismatch = self.compare(image, "read")
            if mismatch is not None:
                raise self._verify_failed(image, mismatch)
            return self.survey(image)
        survey = self.survey(image)
        if survey.differing:
            raise self._verify_failed(image, self._first_mismatch(image, survey.differing))
        return survey

    def compare(self, image: Image, mode: str = "crc") -> Optional[Mismatch]:
        """The first difference between the chip and ``image``, or None. ``crc``: pages compared
        on the chip, those that differ read back to find the address; ``read``: every byte of
        the image read back."""
        self.check_fits(image)
        if mode == "crc":
            survey = self.survey(image)
            return self._first_mismatch(image, survey.differing) if survey.differing else None
        with translate(self.probe_id, f"verifying {image.source}"):
            ranges = image.ranges()
            self._progress.phase("verifying", sum(hi - lo for lo, hi in ranges))
            for lo, hi in ranges:
                for chunk in range(lo, hi, 4096):
                    end = min(chunk + 4096, hi)
                    found = bytes(self.target.read_memory_block8(chunk, end - chunk))
                    mismatch = _first_difference(image, chunk, found, image.data_at(chunk, end - chunk))
                    if mismatch is not None:
                        self._progress.done()
                        return mismatch
                    self._progress.advance(end - chunk)
            self._progress.done()
        return None

    def _first_mismatch(self, image: Image, pages: Sequence[int]) -> Mismatch:
        """The first differing byte in ``pages`` (read back)."""
        geometry = self.geometry()
        with translate(self.probe_id, f"verifying {image.source}"):
            for page in pages:
                size = geometry.region_at(page).page_size
                found = bytes(self.target.read_memory_block8(page, size))
                mismatch = _first_difference(image, page, found, image.data_at(page, size))
                if mismatch is not None:
                    return mismatch
        return Mismatch(pages[0], 0, 0, 0)      # the CRC differed, the bytes read do not (a race)

    def _verify_failed(self, image: Image, mismatch: Mismatch) -> FlashError:
        return verify_failed(self.probe_id, image.source, mismatch)


def verify_failed(probe_id: str, source: str, mismatch: Mismatch) -> FlashError:
    """The error for a chip that does not hold what it should (``source``: the image)."""
    return FlashError(
        f"verify failed on probe {probe_id}: at 0x{mismatch.address:08X} the chip holds "
        f"0x{mismatch.found:02X}, {source} has 0x{mismatch.expected:02X} "
        f"({mismatch.count} byte(s) differ in that block). The board is not recorded as "
        "flashed: run scons flash again (with PYOCD_ERASE='sector' if it persists); if it "
        "fails again, the flash may be worn or protected.")


# -- geometry from pyOCD ----------------------------------------------------------------------

def preview(image: Image, settings: Settings) -> Optional[str]:
    """The plan of a flash of ``image`` as far as it is known without the chip (``scons -n``):
    from the pyOCD target class's memory map, without opening a probe. None when the target
    is not known offline."""
    from .plan import Costs, PlanError
    from .plan import preview as plan_preview
    if not settings.target:
        return None
    _pyocd()
    from pyocd.core.memory_map import MemoryType
    from pyocd.target import TARGET
    memory_map = getattr(TARGET.get(settings.target.lower()), "MEMORY_MAP", None)
    if memory_map is None:
        return None
    geometry = geometry_of(list(memory_map.iter_matching_regions(type=MemoryType.FLASH)))
    ext = None
    for region in memory_map.iter_matching_regions(type=MemoryType.FLASH):
        ext = (region.algo or {}).get(FPEC_EXTENSION)
    costs = _fpec_costs(ext, _swd_s_per_byte(settings))[0] if ext else Costs()
    try:
        return plan_preview(image, geometry, _plan_options(settings), costs)
    except PlanError:
        return None


def _plan_options(settings: Settings) -> Options:
    """The :class:`.plan.Options` of ``settings``."""
    from .plan import Options
    return Options(erase=settings.erase, verify=settings.verify,
                   keep_unwritten=bool(settings.options.get("keep_unwritten", True)))


def geometry_of(regions) -> Geometry:
    """:class:`.plan.Geometry` of pyOCD flash regions. Timings from the regions' weights:
    ``erase_sector_weight`` (one page erase), ``erase_all_weight`` (mass erase, when the
    algorithm has EraseChip), ``program_page_weight`` (one pyOCD page, spread over its
    program units). Regions sharing one flash algorithm are one mass-erase group."""
    from .plan import Geometry, Region
    out = []
    for r in regions:
        size = r.sector_size or r.blocksize
        flash = r.flash
        algo = getattr(flash, "flash_algo", None) if flash is not None else r.algo
        unit = max(1, (algo or {}).get("min_program_length", 0) or 2)
        page = r.page_size or size
        if flash is not None:
            mass = r.erase_all_weight if flash.is_valid and flash.is_erase_all_supported else None
        else:       # a memory map not bound to a target yet: the algorithm says
            mass = r.erase_all_weight if algo and "pc_eraseAll" in algo else None
        out.append(Region(start=r.start, length=r.length, page_size=size, page_erase_s=r.erase_sector_weight,
                          program_unit_s=r.program_page_weight * unit / page, mass_erase_s=mass,
                          erased=r.erased_byte_value, program_unit=unit,
                          mass_group=id(algo) if algo is not None else None, name=r.name or "flash"))
    return Geometry(tuple(out))


def _executor_for(connection: Connection, regions):
    """Our command-table executor when every flash region runs our algorithm, else pyOCD's."""
    algos = [getattr(r.flash, "flash_algo", None) if r.flash is not None else None for r in regions]
    if algos and all(a is not None and FPEC_EXTENSION in a for a in algos) and \
            len({id(a) for a in algos}) == 1:
        return _FpecExecutor(connection, regions[0], algos[0][FPEC_EXTENSION])
    return _PyocdExecutor(connection, regions)


def _swd_s_per_byte(settings: Settings) -> float:
    frequency = settings.frequency or 1_000_000      # pyOCD's default
    return 46 / frequency / 4       # one 46-bit SWD transfer per word


# -- executing a plan through our flash algorithm ------------------------------------------------

#: The key of our flash algorithm's description in pyOCD's flash algo dict
#: (see :mod:`.target_stm32f100rb`).
FPEC_EXTENSION = "scons_pyocd"


def _fpec_costs(ext: Mapping[str, Any], swd: float) -> Tuple[Costs, Dict[int, float]]:
    """The plan's :class:`.plan.Costs` of our flash algorithm (its description ``ext``; ``swd``:
    seconds per byte over the debug port), and the device time (s) per byte of each check
    command (CRC, ZCRC, BLANK) at the core clock the checks run at (``clock_hz``; 8 MHz when
    the algorithm does not raise the clock)."""
    from .plan import Costs
    from .flash_algo import commands as c
    clock = ext.get("clock_hz", 8_000_000)
    rates = {c.CRC: ext["crc_cycles_per_word"] / clock / 4,
             c.ZCRC: ext["zcrc_cycles_per_word"] / clock / 4,
             c.BLANK: ext["blank_cycles_per_word"] / clock / 4}
    costs = Costs(crc_per_byte=rates[c.CRC], read_per_byte=swd, call=12 * swd * 4, skips_erased_units=True)
    return costs, rates


class _FpecExecutor:
    """Carries plans out with our flash algorithm's ``ExecA``/``ExecB`` command tables
    (:mod:`.flash_algo.commands`): one call erases, programs several pages and checks them
    with the CRC unit; while it runs the next call is loaded into the other RAM half. Through
    pyOCD's public target API only: memory block writes and reads (loading the algorithm's
    Exec part, tables, data, results), core registers (PC to start a call; SP and xPSR once),
    ``resume``, ``get_state``, ``halt``.

    The first call raises the core clock (24 MHz from the PLL) for the CRC work; ``finish``
    puts it back and locks the flash controller, unless a reset follows (which does both).
    """

    how_compared = "by on-chip CRC (CRC unit)"

    def __init__(self, connection: Connection, region, ext: Mapping[str, Any]):
        from .flash_algo import commands
        self.c = commands
        self.connection = connection
        self.region = region
        self.target = connection.target
        self.ext = ext
        self.algo = region.flash.flash_algo
        self.halves = [tuple(h) for h in ext["halves"]]
        self.entries = {self.halves[0][0]: ext["pc_exec"][0], self.halves[1][0]: ext["pc_exec"][1]}
        swd = _swd_s_per_byte(connection.settings)
        #: ``rates``: device time (s) per byte of each check command, for :func:`.commands.check_calls`.
        self.costs, self.rates = _fpec_costs(ext, swd)
        self.load_s_per_byte = swd
        self.loaded = self.extra_loaded = self.clock_pending = False
        self.raise_clock = bool(ext.get("clock_hz"))
        self._first_call = True

    # -- the algorithm ----------------------------------------------------------------------
    def _ensure(self) -> None:
        if self.loaded:
            return
        obr = self.ext.get("rdp_register")
        if obr is not None and self.target.read32(obr[0]) & obr[1]:
            raise FlashError(
                f"the chip behind probe {self.connection.probe_id} is read-protected (RDP): its flash "
                "cannot be read or written through the debug port. Nothing was written. Remove the "
                "protection (pyocd commander's 'unlock', or STM32CubeProgrammer; this mass-erases "
                "the chip) and try again. The board is not recorded as flashed; run the command "
                "again once fixed.")
        if not self.target.is_halted():
            self.target.halt()
        self.target.write_memory_block32(self.algo["load_address"],
                                         self.algo["instructions"][:self.ext["exec_words"]])
        self.loaded = True
        self.extra_loaded = False
        self._first_call = True

    def _ensure_extra(self) -> None:
        """Load the commands used only now and then (MASS, CLOCK 0)."""
        if not self.extra_loaded:
            start, end = self.ext["exec_words"], self.ext["extra_words"]
            self.target.write_memory_block32(self.algo["load_address"] + 4 * start,
                                             self.algo["instructions"][start:end])
            self.extra_loaded = True

    def finish(self, reset_follows: bool = False) -> None:
        """Put the clocks back and lock the flash controller (a call of its own), unless a
        system reset follows, which does both."""
        if not self.loaded:
            return
        try:
            if not reset_follows:
                call = self.c.Call(self.halves[0][0])
                call.add_clock(False)
                self.run_calls([call])
        finally:
            self.loaded = False

    def _start(self, call) -> None:
        regs, values = ["pc"], [self.entries[call.base]]
        if self._first_call:
            regs += ["sp", "xpsr"]
            values += [self.algo["begin_stack"], 0x01000000]      # xPSR: Thumb state
            self._first_call = False
        self.target.write_core_registers_raw(regs, values)
        self.target.resume()

    def _wait(self, call, timeout: float) -> List[int]:
        """Wait for the call's BKPT; its status word and the results the host reads. FlashFailure
        when it did not get to the end."""
        import time
        from pyocd.core import exceptions as x
        from pyocd.core.target import Target
        deadline = time.monotonic() + timeout
        while True:
            state = self.target.get_state()
            if state in (Target.State.HALTED, Target.State.LOCKUP):
                break
            if time.monotonic() > deadline:
                self.target.halt()
                self._first_call = True
                raise x.FlashFailure(f"the flash algorithm did not finish within {timeout:.0f} s")
        if state != Target.State.HALTED:
            self.target.halt()
        words = list(self.target.read_memory_block32(call.status, call.read_words))
        if state != Target.State.HALTED or words[0] == self.c.PENDING:
            self._first_call = True         # set SP again before the next call
            pc = self.target.read_core_register("pc")
            raise x.FlashFailure(f"the flash algorithm stopped at pc=0x{pc:08X} before the end "
                                 f"({'locked up' if state == Target.State.LOCKUP else 'a fault'})")
        return words

    def _timeout(self, call) -> float:
        base = float(self.connection.session_options().get("flash.timeout.program", 10.0))
        return base + 3 * call.device_s

    def _check_result(self, call, status: int) -> None:
        from pyocd.core import exceptions as x
        failed = self.c.failure(status, call)
        if failed is None:
            return
        code, words, sr = failed
        what = {0x04: "PGERR: the half-word was not erased", 0x10: "WRPRTERR: write-protected"}
        flags = ", ".join(text for bit, text in what.items() if sr & bit) or f"FLASH_SR 0x{sr:02X}"
        if code in (self.c.ERASE, self.c.MASS):
            where = f" at 0x{words[1]:08X}" if code == self.c.ERASE else ""
            raise x.FlashEraseFailure(f"{'page' if code == self.c.ERASE else 'mass'} erase failed{where} "
                                      f"({flags})", address=words[1] if code == self.c.ERASE else None,
                                      result_code=status)
        dest = words[1] if len(words) > 1 else 0
        raise x.FlashProgramFailure(f"programming 0x{dest:08X}-0x{dest + (words[0] & 0xFFFFFFF) - 1:08X} "
                                    f"failed ({flags})", address=dest, result_code=status)

    def prepare(self, calls) -> None:
        """Load the algorithm if needed; the first call after loading raises the core clock.
        Call it before computing addresses inside the calls (it may add a command)."""
        if not self.loaded:
            self._ensure()
            self.clock_pending = self.raise_clock
        c = self.c
        busy = any(code not in (c.ERASE, c.MASS) for call in calls for code, _ in call.commands())
        if self.clock_pending and busy:     # erasing alone gains nothing from a faster core
            calls[0].raise_clock_first()
            self.clock_pending = False

    def run_calls(self, calls, on_done=None, progress: Optional[Progress] = None) -> None:
        """Run ``calls`` in order, loading each while the one before runs. ``on_done(call,
        results)`` gets each call's results; ``progress.advance`` is called after each call
        (Ctrl-C is honoured there: after a call ends, before the next starts)."""
        if not calls:
            return
        self.prepare(calls)
        if any(call.needs_extra for call in calls):
            self._ensure_extra()
        self.target.write_memory_block32(calls[0].base, calls[0].image())
        self._start(calls[0])
        running = 0
        try:
            for i, call in enumerate(calls):
                if i + 1 < len(calls):
                    nxt = calls[i + 1]
                    self.target.write_memory_block32(nxt.base, nxt.image())
                words = self._wait(call, self._timeout(call))
                running = None
                self._check_result(call, words[0])
                if progress is not None:
                    progress.check()
                if i + 1 < len(calls):
                    self._start(calls[i + 1])
                    running = i + 1
                if on_done is not None:
                    on_done(call, words[1:])
                if progress is not None:
                    progress.advance(len(call.pages_done))
        except BaseException:
            if running is not None:     # let the running call end before giving up
                with contextlib.suppress(Exception):
                    self._wait(calls[running], self._timeout(calls[running]))
            raise

    # -- questions -------------------------------------------------------------------------------
    def answer(self, image: Image, geometry: Geometry, query: Query, progress: Progress,
               crcs_of_differing: bool = False) -> Dict[int, PageState]:
        """Answer ``query`` with the CRC unit. The comparisons are CRCs of the chip's ranges;
        when there are many, the values the image should give are loaded while the CRCs run and
        compared on the chip, so only a bit per range comes back."""
        from .plan import Answers, crc32, page_states
        c = self.c
        answers = Answers()
        expected = [c.unit_crc(image.data_at(a, n)) for a, n in query.compares]
        first = [(c.ZCRC, a, n) for a, n in query.crcs] + [(c.BLANK, a, n) for a, n in query.blanks]
        checks = first + [(c.CRC, a, n) for a, n in query.compares]
        calls = c.check_calls(checks, self.halves, self.rates)
        self.prepare(calls)
        crcs: Dict[Range, int] = {}
        on_chip = len(calls) == 1 and len(expected) > 8
        if on_chip:     # a second call compares the CRCs with what the image gives
            survey = calls[0]
            before = sum(c.result_words(kind, count) for kind, _, _, count in survey.checks
                         if kind != c.CRC)
            survey.read = before
            compare = c.Call(self.halves[1][0])
            compare.add_cmp(survey.results + 4 * before, expected)
            calls.append(compare)
        found: Dict[Tuple[int, int, int], int] = {}
        bits: List[int] = []

        def done(call, results):
            if on_chip and call is calls[-1]:
                bits.extend(results)
                return
            for kind, address, size, value in call.decode(results):
                found[(kind, address, size)] = value

        self.run_calls(calls, done, progress)
        if on_chip:
            differ = [i for i in range(len(expected)) if bits[i // 32] >> (i % 32) & 1]
            for i, (a, n) in enumerate(query.compares):
                answers.equal[(a, n)] = i not in differ
            if differ:      # the chip's CRC of the ranges that differ (blank pages have a known one)
                lo, hi = min(differ), max(differ) + 1
                words = self.target.read_memory_block32(calls[0].results + 4 * (before + lo), hi - lo)
                for i in differ:
                    crcs[query.compares[i]] = words[i - lo]
        else:
            for i, (a, n) in enumerate(query.compares):
                crcs[(a, n)] = found[(c.CRC, a, n)]
                answers.equal[(a, n)] = crcs[(a, n)] == expected[i]
        for a, n in query.crcs:
            answers.crcs[(a, n)] = found[(c.ZCRC, a, n)]
        for a, n in query.blanks:
            answers.blank[(a, n)] = bool(found[(c.BLANK, a, n)])
        # Pages whose CRC says blank are confirmed blank exactly (the AND of their words);
        # differing pages get their zlib CRC when asked for.
        regions = {page: region for region, page in geometry.touched(image.ranges())}
        confirm, zcrc = [], []
        for page in query.pages:
            region = regions[page]
            key = (page, region.page_size)
            if key in answers.equal and not answers.equal[key]:
                if crcs[key] == c.unit_crc(region.blank_page()):
                    confirm.append((c.BLANK, page, region.page_size))
                if crcs_of_differing:
                    zcrc.append((c.ZCRC, page, region.page_size))
            elif key in answers.crcs and answers.crcs[key] == crc32(region.blank_page()):
                confirm.append((c.BLANK, page, region.page_size))
        if confirm or zcrc:
            more = self._checks(confirm + zcrc, None)
            for kind, page, size in confirm:
                answers.blank[(page, size)] = bool(more[(kind, page, size)])
            for kind, page, size in zcrc:
                answers.crcs[(page, size)] = more[(kind, page, size)]
        answers.words = self._words(query.words)
        return page_states(image, geometry, query, answers)

    def _checks(self, checks, progress: Optional[Progress]) -> Dict[Tuple[int, int, int], int]:
        calls = self.c.check_calls(checks, self.halves, self.rates)
        found: Dict[Tuple[int, int, int], int] = {}

        def done(call, results):
            for kind, address, size, value in call.decode(results):
                found[(kind, address, size)] = value

        self.run_calls(calls, done, progress)
        return found

    def _words(self, addresses: Sequence[int]) -> Dict[int, int]:
        return {address: self.target.read32(address) for address in addresses}

    def blank(self, ranges: Sequence[Range], progress: Progress) -> List[bool]:
        found = self._checks([(self.c.BLANK, lo, hi - lo) for lo, hi in ranges], progress)
        return [bool(found[(self.c.BLANK, lo, hi - lo)]) for lo, hi in ranges]

    # -- writing ---------------------------------------------------------------------------------
    def run(self, plan: Plan, progress: Progress) -> None:
        c = self.c
        geometry = self.connection.geometry()
        regions = {page: geometry.region_at(page) for page in plan.page_sizes}
        pipeline = c.Pipeline(self.halves, self.load_s_per_byte, crc_s_per_byte=self.costs.crc_per_byte)
        calls = c.write_calls(plan, pipeline, regions)
        expected = {w.address: c.unit_crc(w.data) for w in plan.program}
        bad: List[int] = []

        def done(call, results):
            for kind, address, size, value in call.decode(results):
                if kind == c.CRC and value != expected[address]:
                    bad.append(address)
            if bad:
                raise _VerifyMismatch(bad[0])

        progress.phase("programming", len(plan.program) or 1)
        try:
            self.run_calls(calls, done, progress)
        except _VerifyMismatch as exc:
            data = next(w.data for w in plan.program if w.address == exc.page)
            raise verify_failed(self.connection.probe_id, plan.source,
                                _page_mismatch(exc.page, data, self.target.read_memory_block8(exc.page, len(data))))
        progress.done()

    def erase(self, regions: Sequence[Region], pages: Optional[Sequence[int]], progress: Progress) -> None:
        c = self.c
        calls = []
        if pages is None:
            call = c.Call(self.halves[0][0])
            call.add_mass()
            calls.append(call)
        else:
            for i in range(0, len(pages), 16):        # Ctrl-C every 16 pages
                call = c.Call(self.halves[len(calls) % 2][0])
                for page in pages[i:i + 16]:
                    call.add_erase(page)
                    call.device_s += regions[0].page_erase_s
                call.pages_done = list(pages[i:i + 16])
                calls.append(call)
        progress.phase("erasing", len(pages) if pages is not None else 1)
        self.run_calls(calls, None, progress)
        progress.done()


def _read_pages(target, pages: Sequence[int], geometry: Geometry) -> Dict[int, bytes]:
    """``pages`` read whole from the chip (any executor: plain memory reads)."""
    return {page: bytes(target.read_memory_block8(page, geometry.region_at(page).page_size)) for page in pages}


def _page_mismatch(page: int, expected: bytes, found) -> Mismatch:
    """The first difference in a page read back after programming it with ``expected``."""
    found = bytes(found)
    diffs = [i for i in range(len(expected)) if found[i] != expected[i]] or [0]
    return Mismatch(page + diffs[0], expected[diffs[0]], found[diffs[0]], len(diffs))


class _VerifyMismatch(Exception):
    def __init__(self, page: int):
        super().__init__(page)
        self.page = page


# -- executing a plan through pyOCD's flash API -----------------------------------------------------

class _PyocdExecutor:
    """Carries plans out on any target through pyOCD's public ``Flash`` API: ``init``,
    ``erase_sector``, ``erase_all``, ``program_page``, ``compute_crcs`` (pyOCD's CRC analyzer,
    when the algorithm has it) and memory reads. Pages are compared by the analyzer in blocks
    where it can (whole power-of-two blocks inside the image), by reading otherwise."""

    how_compared = "by reading them back (or pyOCD's on-chip CRC analyzer)"

    def __init__(self, connection: Connection, regions):
        from .plan import Costs
        self.connection = connection
        self.target = connection.target
        self.regions = list(regions)
        swd = _swd_s_per_byte(connection.settings)
        self.costs = Costs(crc_per_byte=swd, read_per_byte=swd, call=25 * swd * 4, skips_erased_units=False)
        self._active = []

    def _pyocd_region(self, address: int):
        return next(r for r in self.regions if r.start <= address <= r.end)

    def finish(self, reset_follows: bool = False) -> None:
        active, self._active = self._active, []
        for flash in active:
            flash.cleanup()

    def _init(self, flash, operation) -> None:
        flash.init(operation, reset=False)
        if flash not in self._active:
            self._active.append(flash)

    def _read(self, address: int, n: int) -> bytes:
        return bytes(self.target.read_memory_block8(address, n))

    def _page_data(self, image: Image, geometry: Geometry, pages: Sequence[int]) -> Dict[int, bytes]:
        """The pages as the chip holds them; pages inside analyzer blocks whose CRC matches the
        image's are taken from the image instead of read."""
        from .plan import crc32, merge
        known: Dict[int, bytes] = {}
        by_region: Dict[int, List[int]] = {}
        for page in pages:
            by_region.setdefault(self._pyocd_region(page).start, []).append(page)
        for start, mine in by_region.items():
            region = self._pyocd_region(start)
            flash = region.flash
            if flash is None or not getattr(flash, "use_analyzer", False):
                continue
            size = _analyzer_block_size(region)
            inside = merge(image.ranges())
            blocks = [b for lo, hi in inside for b in range(-(-lo // size) * size, hi - size + 1, size)
                      if region.start <= b and b + size <= region.end + 1]
            if not blocks:
                continue
            self._init(flash, flash.Operation.VERIFY)
            crcs = list(flash.compute_crcs([(b, size) for b in blocks]))
            for block, crc in zip(blocks, crcs):
                data = image.data_at(block, size)
                if crc == crc32(data):
                    page_size = geometry.region_at(block).page_size
                    for page in range(block, block + size, page_size):
                        known[page] = data[page - block:page - block + page_size]
        out = {}
        for page in pages:
            size = geometry.region_at(page).page_size
            out[page] = known[page] if page in known else self._read(page, size)
        return out

    def answer(self, image: Image, geometry: Geometry, query: Query, progress: Progress,
               crcs_of_differing: bool = False) -> Dict[int, PageState]:
        from .plan import states_from_data
        data = self._page_data(image, geometry, query.pages)
        progress.advance(len(query.pages))
        return states_from_data(image, geometry, data)

    def blank(self, ranges: Sequence[Range], progress: Progress) -> List[bool]:
        out = []
        for lo, hi in ranges:
            region = self.connection.geometry().region_at(lo)
            erased = bytes([region.erased]) * 4096
            ok = True
            for chunk in range(lo, hi, 4096):
                n = min(4096, hi - chunk)
                if self._read(chunk, n) != erased[:n]:
                    ok = False
                    break
            out.append(ok)
            progress.advance()
        return out

    def run(self, plan: Plan, progress: Progress) -> None:
        progress.phase("erasing", len(plan.erase) + len(plan.mass_erase))
        for region in plan.mass_erase:
            flash = self._pyocd_region(region.start).flash
            self._init(flash, flash.Operation.ERASE)
            flash.erase_all()
            progress.advance()
        for page in plan.erase:
            flash = self._pyocd_region(page).flash
            self._init(flash, flash.Operation.ERASE)
            flash.erase_sector(page)
            progress.advance()
        progress.phase("programming", len(plan.program))
        for write in plan.program:
            region = self._pyocd_region(write.address)
            flash = region.flash
            self._init(flash, flash.Operation.PROGRAM)
            step = region.page_size or len(write.data)
            erased = bytes([region.erased_byte_value]) * step
            for offset in range(0, len(write.data), step):
                chunk = write.data[offset:offset + step]
                if chunk != erased[:len(chunk)]:
                    flash.program_page(write.address + offset, list(chunk))
            progress.advance()
        progress.done()
        if plan.verify == "crc" and plan.program:
            progress.phase("verifying", len(plan.program))
            for write in plan.program:
                found = self._read(write.address, len(write.data))
                if found != write.data:
                    raise verify_failed(self.connection.probe_id, plan.source,
                                        _page_mismatch(write.address, write.data, found))
                progress.advance()
            progress.done()

    def erase(self, regions: Sequence[Region], pages: Optional[Sequence[int]], progress: Progress) -> None:
        if pages is None:
            done = set()
            progress.phase("erasing", len(self.regions))
            for region in self.regions:
                flash = region.flash
                if flash is None or id(flash.flash_algo) in done:
                    continue
                done.add(id(flash.flash_algo))
                self._init(flash, flash.Operation.ERASE)
                flash.erase_all()
                progress.advance()
            progress.done()
            return
        progress.phase("erasing", len(pages))
        for page in pages:
            flash = self._pyocd_region(page).flash
            self._init(flash, flash.Operation.ERASE)
            flash.erase_sector(page)
            progress.advance()
        progress.done()


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


def _first_difference(image: Image, base: int, found: bytes, expected: bytes) -> Optional[Mismatch]:
    """The first address in ``base..`` where the chip differs from the image's own bytes
    (gaps between the image's segments are not compared)."""
    diffs = [a for lo, hi in image.ranges() for a in range(max(lo, base), min(hi, base + len(found)))
             if found[a - base] != expected[a - base]]
    if not diffs:
        return None
    first = diffs[0]
    return Mismatch(first, expected[first - base], found[first - base], len(diffs))
