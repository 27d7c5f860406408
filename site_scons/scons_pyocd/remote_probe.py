"""pyOCD's client for a ``pyocd server``, made safe to build on: bounded reads, one lock per session.

:class:`RemoteProbe` is pyOCD's own ``TCPClientProbe`` (same protocol, same requests)
with four changes:

- **Bounded reads.** pyOCD 0.36-0.46's client socket loops forever when the server
  goes away (``recv`` returning ``b''`` is taken as "nothing yet") and ignores its own
  timeout; a killed server left ``scons`` spinning. Here every answer is awaited at
  most ``SCONS_PYOCD_REMOTE_TIMEOUT`` seconds, and the end of the connection is the
  end: the probe is then *lost* for good (every later request fails at once, so the
  exceptions pyOCD raises on the way out are all reported as the one disconnection,
  see :func:`translated`).
- **The server's probe lock, held for the whole session.** pyOCD's server shares its
  probe among any number of clients; its ``lock`` request takes the served probe's
  lock in the server, which blocks every other client's ``lock``. pyOCD's client
  locks around each group of DAP transfers; this one takes the lock once, right
  after opening the probe, and gives it back when it closes it, so a second client
  (another ``scons flash``, from any host or state directory) waits until this session
  is over instead of interleaving its transfers with ours (which corrupted both
  flash algorithm runs). The wait is reported and bounded (``SCONS_PYOCD_REMOTE_WAIT``).
  pyOCD's per-transfer lock requests are then local: two round trips fewer for
  every group of transfers.
- **Writes without waiting.** A write (DP/AP register, AP block, memory through the
  server's memory interface) answers only "done", so it is sent without waiting for
  that answer; the answers are read, in order, before the next request that returns
  something (a read, ``flush``, ...), and the first error among them is raised there,
  as pyOCD's CMSIS-DAP driver reports the error of a queued write at the next read or
  flush. The server carries requests out in order, so nothing else changes: a full
  flash waits on a fraction of the round trips pyOCD's client waits on. (The
  socket sends at once (``TCP_NODELAY``) and acknowledges at once (``TCP_QUICKACK``,
  Linux): the server's answers would otherwise wait 40 ms for a delayed ACK.)
- **Identity.** ``unique_id`` is the *served* probe's id, checked on the session's own
  connection (a server restarted with another probe between the up-to-date check
  and the flash is refused), and the board info (its target) is the served board's.

pyOCD's server does not give back the lock of a client that disappears while it holds
or waits for it (killed, or its network lost): see docs/farm.md. So this client
never abandons a pending lock request on Ctrl-C: it waits for the grant (bounded),
gives the lock back, then stops.
"""

import atexit
import json
import socket
import time
import weakref
from typing import Any, Callable, Optional

from pyocd.core import exceptions
from pyocd.probe.tcp_client_probe import TCPClientProbe

from . import interrupt, remote
from .errors import FlashError
from .remote import Served

#: Linux's TCP_QUICKACK (None elsewhere: answers to pipelined writes may then wait for a delayed ACK).
QUICKACK = getattr(socket, "TCP_QUICKACK", None)
#: Requests whose answer carries nothing but success: sent without waiting for it.
PIPELINED = frozenset({"write_dp", "write_ap", "write_ap_multiple", "write_mem", "write_block32", "write_block8"})
#: At most this many answers left unread (the server's socket buffer must not fill up).
MAX_PENDING = 256

#: served probe id -> the RemoteProbe of this process serving it (for error messages).
_OPEN: "weakref.WeakValueDictionary[str, RemoteProbe]" = weakref.WeakValueDictionary()


class RemoteFailure(exceptions.ProbeError):
    """The connection to the server failed; ``message`` is the user's sentence without the
    'while ...' (added by :func:`translated`)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ServerLost(RemoteFailure, exceptions.ProbeDisconnected):
    """The server closed the connection, or went silent (the connection is then unusable)."""


class ServerBusy(ServerLost):
    """Another client held the server's probe lock for longer than we may wait."""


class StopRequested(exceptions.Error):
    """Ctrl-C (or SIGTERM) while waiting for the server's lock; the lock was given back."""


class BoundedSocket:
    """The file-like socket ``TCPClientProbe`` expects, with every wait bounded."""

    def __init__(self, served: Served, timeout: float):
        self.served = served
        self.timeout = timeout
        self._socket: Optional[socket.socket] = None
        self._buffer = bytearray()

    def connect(self) -> None:
        address = self.served.address
        try:
            self._socket = socket.create_connection((address.host, address.port), timeout=self.timeout)
            # Small requests sent back to back must not wait for each other's ACK (Nagle).
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RemoteFailure(str(remote.unreachable(address, exc, self.timeout,
                                                           self.served.probe or str(address)))) from None

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def set_timeout(self, timeout: float) -> None:
        """Ignored: pyOCD sets 0.1 s and then retries forever; the bound here is ours."""

    def set_blocking(self, blocking: bool) -> None:
        """Ignored (see :meth:`set_timeout`)."""

    def _gone(self, why: str) -> ServerLost:
        self.close()
        return ServerLost(f"{self.served.server} {why}")

    def write(self, data: bytes) -> None:
        if self._socket is None:
            raise self._gone("is not connected")
        try:
            self._socket.settimeout(self.timeout)
            self._socket.sendall(data)
        except socket.timeout:
            raise self._gone(f"did not take a request within {self.timeout:g} s") from None
        except OSError as exc:
            raise self._gone(f"disconnected ({exc.strerror or exc})") from None

    def readline(self, wait: Optional[float] = None) -> Optional[bytes]:
        """The next answer line. Waits at most ``wait`` seconds when given (None then on
        time-out: the caller keeps waiting), else the answer timeout (lost then)."""
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line
            if self._socket is None:
                raise self._gone("is not connected")
            left = deadline - time.monotonic()
            if left <= 0:
                if wait is not None:
                    return None
                raise self._gone(f"did not answer within {self.timeout:g} s (SCONS_PYOCD_REMOTE_TIMEOUT)")
            try:
                self._socket.settimeout(left)
                if QUICKACK is not None:
                    # Acknowledge at once: the server (Nagle's algorithm on) holds its next answer
                    # until this one is acknowledged, and a delayed ACK would cost 40 ms.
                    self._socket.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                data = self._socket.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                raise self._gone(f"disconnected ({exc.strerror or exc})") from None
            if not data:
                raise self._gone("closed the connection (the server stopped, or its host went away)")
            self._buffer += data


class RemoteProbe(TCPClientProbe):
    """A probe served by a ``pyocd server`` (see the module docstring). Create with
    :meth:`attach`; pyOCD's Session opens and closes it."""

    def __init__(self, served: Served, say: Callable[[str], None] = print):
        super().__init__(f"served:{served.address.port}")     # pyOCD's parsing breaks on IPv6; unused
        self.served = served
        self.say = say
        self.lost: Optional[Exception] = None
        self._uid = served.probe_id
        self._socket = BoundedSocket(served, remote.answer_timeout())
        self._server_locked = False
        self._server_open = False
        self._pending: list = []     # (request id, request) of writes whose answers are unread

    @classmethod
    def attach(cls, served: Served, say: Callable[[str], None] = print) -> "RemoteProbe":
        """Connect to the server and check it still serves ``served.probe_id`` (a FlashError
        otherwise: the board changed since it was looked up). The probe is not opened."""
        probe = cls(served, say)
        try:
            probe._socket.connect()
            probe._is_open = True
            probe._perform_request("hello", cls.PROTOCOL_VERSION)
            now = probe._perform_request("readprop", "unique_id")
        except exceptions.Error as exc:
            probe._socket.close()
            raise translated(exc, served.probe_id, "connecting") or FlashError(
                f"{served.server} refused this client ({exc}). Check that it is a `pyocd server` of pyOCD "
                "0.36 to 0.46.") from None
        if now != served.probe_id:
            probe._socket.close()
            raise FlashError(f"{served.server} now serves probe {now}, not {served.probe_id} as it did a "
                             "moment ago: the server was restarted with another probe. Nothing was written; "
                             "run the command again.")
        _OPEN[served.probe_id] = probe
        atexit.register(probe._release)
        return probe

    # -- identity -------------------------------------------------------------------------
    @property
    def unique_id(self) -> str:
        return self.served.probe_id

    @property
    def description(self) -> str:
        return f"{self.served.description or self.served.probe_id} at {self.served.address}"

    @property
    def associated_board_info(self):
        if not self.served.target:
            return None
        from pyocd.board.board_ids import BoardInfo
        return BoardInfo(name=self.served.board_name or self.served.probe_id, target=self.served.target)

    def create_associated_board(self):
        info = self.associated_board_info
        if info is None:
            return None
        from pyocd.board.board import Board
        return Board(self.session, board_info=info)

    # -- requests -------------------------------------------------------------------------
    def _perform_request_without_raise(self, request: str, *args: Any):
        """pyOCD's request/answer exchange (same messages), with writes sent without waiting
        (:data:`PIPELINED`); returns ``(result, exception or None)``."""
        if self.lost is not None:
            raise self.lost
        with self._lock:
            try:
                rid = self.request_id
                line = remote.request_line(rid, request, args)
                if request in PIPELINED:
                    self._socket.write(line)
                    self._pending.append((rid, request))
                    if len(self._pending) >= MAX_PENDING:
                        self._drain()
                    return None, None
                self._socket.write(line)       # then the writes' answers, then this one's:
                earlier = self._drain(raise_first=False)     # one round trip for all of them
                result, exc = self._answer(rid, request)
                if earlier is not None:
                    raise earlier
                return result, exc
            except ServerLost as exc:
                self.lost = exc
                raise

    def _answer(self, rid: int, request: str):
        """Read the answer to request ``rid``: ``(result, None)``, or ``(None, the exception its
        status stands for)``."""
        answer = self._parse(self._socket.readline(), rid)
        status = answer["status"]
        if status == 0:
            return answer.get("result"), None
        error = answer.get("error", "(no message)")
        return None, self.STATUS_CODE_CLASS_MAP.get(status, exceptions.ProbeError)(
            f"error received from server for command {request} (status code {status}): {error}")

    def _parse(self, line: bytes, rid: int) -> dict:
        """The answer ``line`` to request ``rid``, a JSON object with a status; anything else
        closes the connection and raises ServerLost (the stream is lost)."""
        try:
            answer = json.loads(line)
            answer["status"]    # KeyError without a status, TypeError when not a JSON object
            if answer.get("id") != rid:
                raise ValueError(f"answer {answer.get('id')} to request {rid}")
        except (ValueError, KeyError, TypeError) as exc:    # not the protocol
            self._socket.close()
            raise ServerLost(f"{self.served.server} sent an answer that is not pyOCD's protocol ({exc})") from None
        return answer

    def _drain(self, raise_first: bool = True) -> Optional[Exception]:
        """Read the answers of the writes sent without waiting; the first error is raised
        (or returned, with ``raise_first`` False)."""
        first = None
        while self._pending:
            rid, request = self._pending.pop(0)
            _, exc = self._answer(rid, request)
            first = first or exc
        if first is not None and raise_first:
            raise first
        return first

    # -- open / close: the server's lock for the whole session ------------------------------
    def open(self) -> None:
        if self._server_open:
            return
        if not self._is_open:
            self._socket.connect()
            self._is_open = True
            self._perform_request("hello", self.PROTOCOL_VERSION)
        self._perform_request("open")
        self._server_open = True
        self._lock_server()

    def _lock_server(self) -> None:
        """Send ``lock`` and wait for the grant: bounded by SCONS_PYOCD_REMOTE_WAIT, reported
        when it takes a while, never abandoned on Ctrl-C (see the module docstring)."""
        if self.lost is not None:
            raise self.lost
        wait = remote.lock_wait()
        start = time.monotonic()
        told = stopping = False
        with self._lock:
            rid = self.request_id
            self._socket.write(remote.request_line(rid, "lock"))
            while True:
                try:
                    line = self._socket.readline(wait=0.5)
                except ServerLost as exc:
                    self.lost = exc
                    raise
                if line is not None:
                    break
                waited = time.monotonic() - start
                if not told:
                    self.say(f"waiting for {self.served.label}: another client of {self.served.server} "
                             f"is using the probe (waiting up to {wait:g} s)")
                    told = True
                if not stopping and interrupt.requested():
                    stopping = True
                    self.say(f"stopping: waiting for {self.served.server} to grant the lock asked for, "
                             "so as to give it back (the server would keep it otherwise)")
                if waited > wait:
                    self.lost = ServerBusy(
                        f"{self.served.server} kept its probe {self.served.probe_id} locked for {wait:g} s: "
                        "another client is using it (another scons flash, a debugger), or a client died "
                        "while holding it, and pyOCD's server keeps such a lock until it is restarted; "
                        "wait and run again, or restart the `pyocd server` (SCONS_PYOCD_REMOTE_WAIT sets "
                        "how long to wait)")
                    self._socket.close()
                    raise self.lost
        try:
            answer = self._parse(line, rid)
        except ServerLost as exc:
            self.lost = exc
            raise
        if answer["status"] != 0:
            raise RemoteFailure(f"{self.served.server} refused to lock its probe {self.served.probe_id}: "
                                f"{answer.get('error', 'no reason given')}")
        self._server_locked = True
        if stopping or interrupt.requested():
            self.close()
            raise StopRequested("interrupted (Ctrl-C) while waiting for the probe server; the lock asked "
                                "for was given back")

    def close(self) -> None:
        try:
            if self.lost is None and self._is_open:
                try:
                    with self._lock:
                        self._drain()
                except exceptions.Error:
                    if self.lost is not None:
                        return
                if self._server_locked:
                    self._server_locked = False
                    self._perform_request("unlock")
                if self._server_open:
                    self._server_open = False
                    self._perform_request("close")
        finally:
            self._socket.close()
            self._is_open = False

    def _release(self) -> None:
        """At exit: give the server's lock back if a session forgot to close the probe."""
        try:
            self.close()
        except Exception:
            pass

    def lock(self) -> None:
        """Local only: the server's lock is held for the whole session (see :meth:`open`)."""
        with self._lock_count_lock:
            self._lock_count += 1

    def unlock(self) -> None:
        with self._lock_count_lock:
            if self._lock_count > 0:
                self._lock_count -= 1


def attach(served: Served, say: Callable[[str], None] = print) -> RemoteProbe:
    return RemoteProbe.attach(served, say)


def _in_context(message: str, context: str) -> str:
    """``message`` with ``context`` ('while flashing (probe ...)') closing its first sentence:
    'cannot reach X: refused, while connecting (probe Y). Start one there ...'."""
    head, _, rest = message.partition(". ")
    return f"{head.rstrip('.')}, {context}." + (f" {rest}" if rest else "")


def translated(exc: BaseException, probe_id: str, doing: str) -> Optional[FlashError]:
    """The user's message for ``exc`` raised while ``doing`` on the remote board ``probe_id``, when
    the connection to its server is the problem; None when it is the target's (the local
    messages apply). Any exception after the connection was lost is that loss."""
    served = remote.seen(probe_id)
    probe = _OPEN.get(probe_id)
    if served is None and probe is None:
        return None
    served = served or probe.served
    lost = probe.lost if probe is not None else None
    nothing = ("The board is not recorded as flashed; the next scons flash programs it again (run it once "
               "the server is back).")
    if isinstance(exc, StopRequested):
        from .session import Interrupted
        return Interrupted(f"{exc} ({served.label}). The board is not recorded as flashed.")
    if lost is None and isinstance(exc, ServerLost):
        lost = exc
    if lost is not None:
        text = lost.message if isinstance(lost, RemoteFailure) else str(lost)
        if isinstance(lost, ServerBusy):
            return FlashError(f"{_in_context(text, f'while {doing} ({served.label})')} {nothing}")
        return FlashError(f"{_in_context(text, f'while {doing} ({served.label}): disconnected from the probe server')}"
                          f" Check that `pyocd server` still runs on {served.address.host} (restart it) and that "
                          f"the network between the hosts works. {nothing}")
    if isinstance(exc, RemoteFailure):
        return FlashError(f"{_in_context(exc.message, f'while {doing} ({served.label})')} {nothing}")
    if isinstance(exc, exceptions.ProbeDisconnected):
        return FlashError(f"the probe behind {served.server} disconnected from the server's host while {doing} "
                          f"({exc}). On {served.address.host}: check the probe's USB cable and power, then "
                          f"restart the `pyocd server`. {nothing}")
    if isinstance(exc, exceptions.ProbeError):
        return FlashError(f"{served.server} could not use its probe {probe_id} while {doing} ({exc}). On "
                          f"{served.address.host}: check that no other program there (a debugger, another "
                          "server) uses the probe and that it is plugged in, then restart the `pyocd "
                          f"server`. {nothing}")
    if isinstance(exc, OSError):
        return FlashError(f"network error talking to {served.server} while {doing}: {exc}. Check the network "
                          f"and the server. {nothing}")
    return None
