"""pyOCD debug-probe plugin for the simulated STM32VLDiscovery.

Registered through pyOCD's ``pyocd.probe`` entry point (plugin name ``sim``, :mod:`scons_pyocd.sim_plugin`) when
the package is pip-installed, or in-process by :func:`scons_pyocd.sim.register`.
Probe unique ids are board ids: ``sim-vldiscovery``, ``sim-a``, ``sim-b``... A board
exists only once created (``scons-pyocd-sim create ID``, :func:`.board.create_board`).
An id starting with ``sim-`` (or any id given as ``sim:<id>``) names a board exactly:
when no such board exists the lookup raises :class:`.board.NoSuchBoard`, a
FlashError listing the boards that exist and how to create one (no substring
match, no new board). pyOCD's enumeration (``pyocd list``, a session without a
unique id) does not see simulated boards unless ``SCONS_PYOCD_SIM_LIST=1`` is in
the environment (:data:`LIST_ENV`), so a script's ``pyocd flash`` without ``-u``
on a machine with simulated boards still finds the one real probe.

The probe works at the DAP level (DP and AP register transfers), like pyOCD's
CMSIS-DAP driver, and adds what a real probe and wire add: transfer time on the
device clock (see :mod:`.timing`), byte counters, and injected faults that show
up as the exceptions a real probe raises:

- ``disconnect_after``: :class:`ProbeDisconnected`, as when USB is unplugged;
- ``hang_after``: :class:`TransferTimeoutError` (SWD WAIT, the target stopped answering);
- ``fault_after``: :class:`TransferFaultError` (SWD FAULT);
- ``power_loss_after_halfwords``: :class:`TransferError` (no ACK: the target is unpowered);
- ``pause_after_halfwords``, ``pause_after_pages_erased``: no error; the session stops at a
  transfer, its counters saved, until the test resumes it (:meth:`BoardState.resume`), so that
  it is interrupted at a known point.
"""

import fcntl
import logging
import os
from typing import Optional

from pyocd.board.board_ids import BoardInfo
from pyocd.core import exceptions
from pyocd.probe.debug_probe import DebugProbe

from ..sim_plugin import LIST_ENV, PREFIX, listing_enabled  # noqa: F401  (LIST_ENV: kept as a name here)
from .board import BoardState, COUNTER_NAMES, list_boards
from .chip import Chip, PowerState
from .dap import DapFault, DebugPort
from .fpec import PowerLost

LOG = logging.getLogger(__name__)

BOARD_INFO = BoardInfo(name="STM32VLDiscovery (simulated)", target="stm32f100rb", vendor="scons-pyocd")


class SimProbe(DebugProbe):
    """A simulated debug probe wired to one simulated STM32VLDiscovery board (which must exist)."""

    @classmethod
    def get_all_connected_probes(cls, unique_id: Optional[str] = None, is_explicit: bool = False):
        # Hidden unless asked for: an explicit "sim:" type, or the environment switch.
        if not (is_explicit or listing_enabled()):
            return []
        return [cls(board_id) for board_id in list_boards()]

    @classmethod
    def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False):
        """The board named ``unique_id`` exactly, for ids starting with ``sim-`` (or given as
        ``sim:<id>``); NoSuchBoard / InvalidBoardId (FlashErrors) when there is none."""
        if unique_id and (unique_id.startswith(PREFIX) or is_explicit):
            return cls(unique_id)
        return None

    def __init__(self, board_id: str):
        super().__init__()
        self._board = BoardState(board_id)
        self._board_id = board_id
        self._chip: Optional[Chip] = None
        self._dp: Optional[DebugPort] = None
        self._lock_file = None
        self._is_open = False
        self._protocol = None
        self._frequency = None
        self._transfers = 0
        self._faults = {}
        self._failing = None
        self._reset_asserted = False
        self._baseline = {}
        self._bytes = {"dp_bytes_read": 0, "dp_bytes_written": 0, "connects": 0}

    # -- identity -------------------------------------------------------------------
    @property
    def board(self) -> BoardState:
        return self._board

    @property
    def description(self) -> str:
        return f"{BOARD_INFO.name} [{self._board_id}]"

    @property
    def vendor_name(self) -> str:
        return "scons-pyocd"

    @property
    def product_name(self) -> str:
        return "Simulated ST-Link/V2 + STM32VLDiscovery"

    @property
    def supported_wire_protocols(self):
        return [DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD]

    @property
    def unique_id(self) -> str:
        return self._board_id

    @property
    def wire_protocol(self):
        return self._protocol

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def capabilities(self):
        return set()

    @property
    def associated_board_info(self):
        return BOARD_INFO

    def create_associated_board(self):
        from pyocd.board.board import Board
        return Board(self.session, board_info=BOARD_INFO)

    @property
    def chip(self) -> Optional[Chip]:
        """The chip model while the probe is open (for tests and diagnostics)."""
        return self._chip

    # -- open / close ---------------------------------------------------------------------
    def open(self) -> None:
        if self._is_open:
            return
        lock = open(self._board.lock_path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise exceptions.ProbeError(
                f"simulated probe {self._board_id} is in use by another process (pid {holder})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock_file = lock
        self._faults = self._board.faults()
        self._baseline = self._board.counters()
        self._chip = Chip(self._board)
        self._chip.board_faults = self._faults
        self._chip.on_core_stopped = self.save_counters
        self._dp = DebugPort(self._chip)
        if self._frequency:
            self._chip.timing.swd_hz = self._frequency
        self._transfers = 0
        self._failing = None
        self._bytes = {"dp_bytes_read": 0, "dp_bytes_written": 0, "connects": 0}
        self._is_open = True

    def close(self) -> None:
        if not self._is_open:
            return
        try:
            self.save_counters()
            self._chip.close()
        finally:
            self._chip = None
            self._dp = None
            self._is_open = False
            lock, self._lock_file = self._lock_file, None
            if lock is not None:
                lock.seek(0)
                lock.truncate()
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()

    def save_counters(self) -> None:
        """Write this session's counters into the board's ``counters.json``."""
        if self._chip is None:
            return
        counters = dict(self._baseline)
        for name in COUNTER_NAMES:
            counters.setdefault(name, 0)
        for name, value in self._chip.counters.items():
            counters[name] += value
        for name, value in self._bytes.items():
            counters[name] += value
        counters["device_time_s"] = round(counters["device_time_s"] + self._chip.now, 9)
        self._board.save_counters(counters)

    # -- wire ----------------------------------------------------------------------------
    def connect(self, protocol=None) -> None:
        self._protocol = DebugProbe.Protocol.SWD
        self._bytes["connects"] += 1

    def disconnect(self) -> None:
        self._protocol = None

    def set_clock(self, frequency: float) -> None:
        self._frequency = frequency
        if self._chip is not None:
            self._chip.timing.swd_hz = frequency

    def reset(self) -> None:
        self.assert_reset(True)
        self.assert_reset(False)

    def assert_reset(self, asserted: bool) -> None:
        if self._chip is None:
            return
        if self._reset_asserted and not asserted:
            self._chip.system_reset()
        self._reset_asserted = asserted

    def is_reset_asserted(self) -> bool:
        return self._reset_asserted

    def flush(self) -> None:
        pass

    # -- transfers ---------------------------------------------------------------------------
    def _transfer(self, fn, *args, is_read: bool, is_ap: bool = True):
        """Run one DP/AP transfer: faults, device time, counters, exception translation.

        A hung or faulting target answers WAIT or FAULT to AP transfers only: the
        SW-DP itself keeps answering (DPIDR, ABORT, CTRL/STAT), as on real silicon.
        """
        if not self._is_open:
            raise exceptions.ProbeError(f"simulated probe {self._board_id} is not open")
        self._transfers += 1
        self._check_injected_faults(is_ap)
        chip = self._chip
        if chip.power != PowerState.ON:
            raise exceptions.TransferError(f"no ACK from target on {self._board_id}: the target is not powered")
        chip.now += chip.timing.transfer_s(1)
        self._bytes["dp_bytes_read" if is_read else "dp_bytes_written"] += 4
        try:
            return fn(*args)
        except DapFault as err:
            raise exceptions.TransferFaultError(f"SWD FAULT: {err}") from None
        except PowerLost:
            self.save_counters()
            raise exceptions.TransferError(
                f"no ACK from target on {self._board_id}: the target lost power") from None
        finally:
            if chip.power != PowerState.ON:
                self.save_counters()

    def _check_injected_faults(self, is_ap: bool) -> None:
        for name, done in (("pause_after_halfwords", self._chip.halfwords_this_session),
                           ("pause_after_pages_erased", self._chip.counters.get("pages_erased", 0))):
            limit = self._faults.get(name)
            if limit is not None and done >= limit:
                self._board.clear_fault(name)
                self._faults.pop(name, None)
                self.save_counters()
                self._board.pause()
        if self._failing is not None:
            if is_ap:
                raise self._failing
            return
        for name, exc in (("disconnect_after", exceptions.ProbeDisconnected(
                              f"probe {self._board_id} disconnected (injected fault: USB unplugged)")),
                          ("hang_after", exceptions.TransferTimeoutError(
                              f"SWD WAIT from target on {self._board_id} (injected fault: target stopped answering)")),
                          ("fault_after", exceptions.TransferFaultError(
                              f"SWD FAULT from target on {self._board_id} (injected fault)"))):
            limit = self._faults.get(name)
            if limit is not None and self._transfers > limit:
                self._board.clear_fault(name)
                self._faults.pop(name, None)
                self.save_counters()
                if name != "disconnect_after":
                    self._failing = exc  # sticks for the rest of this session
                    if not is_ap:
                        return
                raise exc

    def read_dp(self, addr: int, now: bool = True):
        value = self._transfer(self._dp.read_dp, addr, is_read=True, is_ap=False)
        return value if now else (lambda: value)

    def write_dp(self, addr: int, data: int) -> None:
        self._transfer(self._dp.write_dp, addr, data, is_read=False, is_ap=False)

    def read_ap(self, addr: int, now: bool = True):
        value = self._transfer(self._dp.read_ap, addr, is_read=True)
        return value if now else (lambda: value)

    def write_ap(self, addr: int, data) -> None:
        self._transfer(self._dp.write_ap, addr, data, is_read=False)

    def read_ap_multiple(self, addr: int, count: int = 1, now: bool = True):
        values = [self._transfer(self._dp.read_ap, addr, is_read=True) for _ in range(count)]
        return values if now else (lambda: values)

    def write_ap_multiple(self, addr: int, values) -> None:
        for value in values:
            self._transfer(self._dp.write_ap, addr, value, is_read=False)

    def get_memory_interface_for_ap(self, ap_address):
        return None
