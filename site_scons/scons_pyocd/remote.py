"""Probes on other hosts: ``remote:HOST:PORT`` (a ``pyocd server``) and ``labgrid:PLACE``.

pyOCD's probe server (``pyocd server --uid <probe> --port N --allow-remote``) shares
one probe over TCP: one JSON request per line, one JSON answer per line. This
module speaks just enough of that protocol to ask a server *what it serves* without
opening the probe or touching the target (``hello``, then ``readprop`` of the
probe's unique id, description and board info), with a bounded timeout and without
importing pyOCD. That is what a no-op ``scons flash`` costs for a remote probe: one
TCP connection and one round trip (the requests are sent together), so a board
swapped behind a port is noticed before anything says "up to date".

Identity. A remote board's record and lock are keyed by the **served probe's
unique id** (what ``readprop unique_id`` answers), never by the address: ``localhost``
and ``127.0.0.1``, or a server restarted on another port, reach the same record;
another probe behind the same port reaches another record. The chip's own unique id
is checked on every connection as for a local probe (:mod:`.records`).

``labgrid:PLACE`` is resolved through labgrid's coordinator (:mod:`.labgrid_place`)
to the ``NetworkService`` the place exports, after checking that this user acquired
the place; the records then also remember the place's acquisition, so a no-op is
trusted only within the acquisition that flashed (see docs/farm.md).

The pyOCD side (the client probe with bounded reads and the server's probe lock) is
:mod:`.remote_probe`. Timeouts come from the environment:

- ``SCONS_PYOCD_REMOTE_TIMEOUT`` (s, default 10): connecting, and every answer.
- ``SCONS_PYOCD_REMOTE_WAIT`` (s, default 600): how long to wait while another client
  holds the server's probe.
"""

import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .errors import FlashError

REMOTE = "remote:"
LABGRID = "labgrid:"
#: pyOCD's default probe server port (``TCPClientProbe.DEFAULT_PORT``).
DEFAULT_PORT = 5555
#: The remote probe protocol version pyOCD 0.36-0.46 speak.
PROTOCOL_VERSION = 1

DEFAULT_TIMEOUT = 10.0
DEFAULT_WAIT = 600.0


def is_remote(probe: str) -> bool:
    """Whether ``probe`` (a PYOCD_PROBE value) names a probe behind a server or a labgrid place."""
    return probe.startswith((REMOTE, LABGRID))


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise FlashError(f"{name}={text!r} is not a number of seconds above 0 (e.g. {default:g}). "
                         f"Fix or unset it.")
    return value


def answer_timeout() -> float:
    """Seconds to wait for a connection or an answer (``SCONS_PYOCD_REMOTE_TIMEOUT``)."""
    return _seconds("SCONS_PYOCD_REMOTE_TIMEOUT", DEFAULT_TIMEOUT)


def lock_wait() -> float:
    """Seconds to wait for the server's probe lock (``SCONS_PYOCD_REMOTE_WAIT``)."""
    return _seconds("SCONS_PYOCD_REMOTE_WAIT", DEFAULT_WAIT)


# -- addresses ---------------------------------------------------------------------------

class Address(NamedTuple):
    """A probe server's address, normalised: host lowercased, without brackets or a
    trailing dot; IPv6 addresses compressed; the port an int."""
    host: str
    port: int

    def __str__(self) -> str:
        return f"{REMOTE}{self.netloc}"

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def normalise_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def parse(probe: str) -> Address:
    """The address of ``remote:HOST[:PORT]`` (IPv6 as ``remote:[::1]:PORT``). A FlashError
    names PYOCD_PROBE and the form expected otherwise."""
    rest = probe[len(REMOTE):] if probe.startswith(REMOTE) else probe
    host, port_text, valid = rest, None, True
    if rest.startswith("["):                       # [IPv6]:PORT or [IPv6]
        end = rest.find("]")
        host, after = (rest[1:end], rest[end + 1:]) if end > 0 else ("", "")
        valid = ":" in host and (after == "" or after.startswith(":"))
        port_text = after[1:] if after else None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    elif ":" in rest:
        valid = False                              # a bare IPv6 address: ambiguous, ask for brackets
    host = normalise_host(host)
    port = DEFAULT_PORT
    if port_text is not None:
        port = int(port_text) if port_text.isdigit() else -1
    if not valid or not host or not 0 < port < 65536 or any(c.isspace() or c in "/@[]" for c in host):
        raise FlashError(f"PYOCD_PROBE={probe!r} is not a probe server address: give remote:HOST:PORT "
                         "(e.g. remote:lab-host:5555, remote:127.0.0.1:5555, remote:[::1]:5555), the "
                         "address a `pyocd server` listens on.")
    return Address(host, port)


# -- what a server serves ----------------------------------------------------------------

@dataclass
class Served:
    """What a probe server serves, asked without opening its probe.

    ``probe_id``: the served probe's unique id (records and locks are keyed by it).
    ``target``: the pyOCD target of the board the probe belongs to ('' if the probe does
    not say). ``place``: the labgrid place it was reached through, if any, and
    ``claims``: what the board record must also match for a no-op to be trusted (the
    place's acquisition). ``probe``: the PYOCD_PROBE value it was looked up by (for messages).
    """
    address: Address
    probe_id: str
    description: str = ""
    target: str = ""
    board_name: str = ""
    place: Optional[str] = None
    claims: Dict[str, str] = field(default_factory=dict)
    probe: str = ""

    @property
    def where(self) -> str:
        """'remote:HOST:PORT' (and the labgrid place)."""
        return f"{self.address} (labgrid place {self.place})" if self.place else str(self.address)

    @property
    def via(self) -> str:
        """How output lines name it: 'ID at remote:HOST:PORT' (and the labgrid place)."""
        return f"{self.probe_id} at {self.where}"

    @property
    def label(self) -> str:
        """How messages name it: 'probe ID at remote:HOST:PORT' (and the place)."""
        return f"probe {self.via}"

    @property
    def server(self) -> str:
        return f"the pyocd server at {self.address.netloc}" + (
            f" (labgrid place {self.place})" if self.place else "")


#: served probe id -> the Served last looked up in this process (for messages).
_SEEN: Dict[str, Served] = {}


def seen(probe_id: str) -> Optional[Served]:
    """The remote board with this served id, if this process looked one up."""
    return _SEEN.get(probe_id)


def label(probe_id: str) -> str:
    """'probe ID', or 'probe ID at remote:HOST:PORT' for a remote board of this process."""
    served = _SEEN.get(probe_id)
    return served.label if served is not None else f"probe {probe_id}"


def request_line(rid: int, name: str, arguments: Sequence[Any] = ()) -> bytes:
    """The protocol's request line for request ``name`` with id ``rid`` (``arguments`` only when
    there are some), as pyOCD's TCP client writes it."""
    message: Dict[str, Any] = {"id": rid, "request": name}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message).encode() + b"\n"


def requests(*lines: Tuple[str, List[Any]]) -> bytes:
    """The protocol's request lines for ``(name, arguments)`` pairs, ids from 0."""
    return b"".join(request_line(number, name, arguments) for number, (name, arguments) in enumerate(lines))


def unreachable(address: Address, exc: OSError, timeout: float, probe: str) -> FlashError:
    """The error for a server that cannot be reached at all (nothing was written)."""
    host = address.host
    start = (f"`pyocd server --uid <probe id> --port {address.port}"
             + ("" if host in ("127.0.0.1", "::1", "localhost") else " --allow-remote") + "`")
    if isinstance(exc, socket.gaierror):
        return FlashError(f"cannot resolve the host name {host!r} of PYOCD_PROBE={probe!r} ({exc.strerror or exc}). "
                          "Check the host name (or give its IP address).")
    if isinstance(exc, ConnectionRefusedError):
        return FlashError(f"cannot reach a pyocd server at {address.netloc}: connection refused (nothing "
                          f"listens on port {address.port} of {host}). Start one there ({start}), or "
                          f"check the host and port in PYOCD_PROBE={probe!r}. Nothing was written.")
    if isinstance(exc, socket.timeout):
        return FlashError(f"no answer from {address.netloc} within {timeout:g} s while connecting to its "
                          f"pyocd server. Check that the host is up and that a firewall lets port "
                          f"{address.port} through (or raise SCONS_PYOCD_REMOTE_TIMEOUT on a slow link). "
                          "Nothing was written.")
    return FlashError(f"cannot reach a pyocd server at {address.netloc}: {exc.strerror or exc}. Check the "
                      f"network and PYOCD_PROBE={probe!r}; on {host}, {start} serves a probe. Nothing was "
                      "written.")


def _read_answers(sock: socket.socket, count: int, deadline: float, address: Address) -> List[dict]:
    buffer = b""
    answers: List[dict] = []
    while len(answers) < count:
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "status" not in answer:
            raise FlashError(f"{address.netloc} does not answer like a pyocd server (it sent "
                             f"{line[:60]!r}). Check the port in PYOCD_PROBE: it must be a `pyocd server`'s.")
        answers.append(answer)
    return answers


def query(address: Address, probe: str = "", timeout: Optional[float] = None) -> Served:
    """Ask the server at ``address`` what it serves, without opening its probe: one TCP
    connection, the requests sent at once, every wait bounded by ``timeout`` (default
    :func:`answer_timeout`). Raises FlashError (unreachable, silent, not a pyOCD server)."""
    timeout = answer_timeout() if timeout is None else timeout
    probe = probe or str(address)
    deadline = time.monotonic() + timeout
    wanted = ["unique_id", "description", "associated_board_info"]
    try:
        sock = socket.create_connection((address.host, address.port), timeout=timeout)
    except OSError as exc:
        raise unreachable(address, exc, timeout, probe) from None
    try:
        with sock:
            sock.sendall(requests(("hello", [PROTOCOL_VERSION]), *[("readprop", [name]) for name in wanted]))
            answers = _read_answers(sock, 1 + len(wanted), deadline, address)
    except socket.timeout:
        raise FlashError(f"no answer from the pyocd server at {address.netloc} within {timeout:g} s. The "
                         "server or its host may be stuck, or the network down: check them (restart "
                         "`pyocd server`), or raise SCONS_PYOCD_REMOTE_TIMEOUT on a slow link. Nothing "
                         "was written.") from None
    except OSError:
        raise FlashError(f"the pyocd server at {address.netloc} closed the connection before saying what "
                         "it serves. Check that it is a `pyocd server` and that it is still running; "
                         "nothing was written.") from None
    hello, unique_id, description, board_info = answers
    if hello.get("status") != 0:
        raise FlashError(f"the pyocd server at {address.netloc} refused this client: {hello.get('error')}. It "
                         f"needs pyOCD's remote probe protocol version {PROTOCOL_VERSION} (pyOCD 0.36 to 0.46 "
                         "on both sides).")
    probe_id = unique_id.get("result")
    if unique_id.get("status") != 0 or not isinstance(probe_id, str) or not probe_id:
        raise FlashError(f"the pyocd server at {address.netloc} did not say which probe it serves "
                         f"({unique_id.get('error', 'no unique id')}). Restart it with "
                         "`pyocd server --uid <probe id>`.")
    info = board_info.get("result") if board_info.get("status") == 0 else None
    target = info[1] if isinstance(info, list) and len(info) > 1 and isinstance(info[1], str) else ""
    name = info[0] if isinstance(info, list) and info and isinstance(info[0], str) else ""
    text = description.get("result") if description.get("status") == 0 else ""
    return Served(address=address, probe_id=probe_id, description=text if isinstance(text, str) else "",
                  target=target or "", board_name=name, probe=probe)


def lookup(probe: str) -> Served:
    """What the configured ``remote:`` or ``labgrid:`` probe is now: asks the server (and for a
    place, labgrid's coordinator first). Raises FlashError."""
    if probe.startswith(LABGRID):
        from . import labgrid_place
        place = labgrid_place.resolve(probe[len(LABGRID):], probe)
        served = query(place.address, probe)
        served.place = place.name
        served.claims = {"labgrid place": place.acquisition}
    else:
        served = query(parse(probe), probe)
    _SEEN[served.probe_id] = served
    return served
