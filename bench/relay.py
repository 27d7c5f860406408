"""A loopback relay for pyOCD's remote probe protocol: counts round trips, adds latency.

pyOCD's probe server speaks one JSON request per line and answers each with one
line, in order. A :class:`Relay` listens on 127.0.0.1 (port 0: the kernel picks it),
forwards every connection to the server it relays (``backend``, changeable while it
runs: a board "swapped behind the port"), and counts, per connection:

- ``requests``: request lines (each is one request/answer exchange);
- ``round_trips``: requests that arrived while no earlier request was waiting for
  its answer, i.e. the client had everything back and had to wait for this one
  (requests a client sends without waiting, pipelined, count once together).

With ``delay`` every request reaches the server that much later (without holding up
the requests behind it): each round trip then costs ``delay`` more, as on a slower
network (the cost model of docs/performance.md); the count of round trips is exact
then, while without a delay a server faster than the client may make it count a
pipelined request as a round trip of its own. ``on_request(n)`` is called before the
n-th request of the relay's lifetime is forwarded (the tests kill the server
mid-flash from there).

Loopback only; every thread is a daemon and every wait is bounded, so a test that
forgets :meth:`Relay.stop` cannot hang the interpreter.
"""

import queue
import select
import socket
import threading
import time
from typing import Callable, List, Optional, Tuple

Address = Tuple[str, int]
QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class Connection:
    """Counts of one relayed connection."""

    def __init__(self) -> None:
        self.requests = 0
        self.round_trips = 0
        self.outstanding = 0
        self.names: dict = {}
        self.lock = threading.Lock()


class Relay:
    """Forward 127.0.0.1:``port`` to ``backend``; count request/answer lines. Use as a context
    manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, backend: Address, delay: float = 0.0,
                 on_request: Optional[Callable[[int], None]] = None, count_names: bool = False):
        self.backend = backend
        self.delay = delay
        self.on_request = on_request
        self.count_names = count_names
        self.connections: List[Connection] = []
        self._listener: Optional[socket.socket] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._total = 0
        self._sockets: List[socket.socket] = []

    # -- life ---------------------------------------------------------------------------
    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self.port

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets + ([self._listener] if self._listener else []):
            try:
                sock.close()
            except OSError:
                pass

    def __enter__(self) -> "Relay":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- figures ------------------------------------------------------------------------
    def busiest(self) -> Connection:
        """The connection with the most requests (a flash's session, not a no-op's query)."""
        return max(self.connections, key=lambda c: c.requests, default=Connection())

    # -- work ---------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.2)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                return
            try:
                server = socket.create_connection(self.backend, timeout=10)
            except OSError:
                client.close()     # the client sees its connection closed, as with no server
                continue
            for sock in (client, server):    # forward each line at once (no Nagle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            record = Connection()
            with self._lock:
                self.connections.append(record)
                self._sockets += [client, server]
            for args in ((client, server, record, True), (server, client, record, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _delayed(self, sink: socket.socket, lines: "queue.Queue") -> None:
        """Send each queued ``(due, line)`` at its time, in order (the requests' latency)."""
        while True:
            item = lines.get()
            if item is None:
                return
            due, line = item
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                sink.sendall(line)
            except OSError:
                return

    def _pump(self, source: socket.socket, sink: socket.socket, record: Connection, requests: bool) -> None:
        pending = b""
        delayed: "Optional[queue.Queue]" = None
        if requests and self.delay:
            delayed = queue.Queue()
            threading.Thread(target=self._delayed, args=(sink, delayed), daemon=True).start()
        try:
            source.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    if QUICKACK is not None:    # no delayed ACK: the relay must not add latency
                        source.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                    data = source.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                if not requests:
                    count = data.count(b"\n")
                    with record.lock:
                        record.outstanding = max(0, record.outstanding - count)
                    sink.sendall(data)
                    continue
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    self._request(record, line)
                    if delayed is not None:
                        delayed.put((time.monotonic() + self.delay, line + b"\n"))
                    else:
                        sink.sendall(line + b"\n")
                if pending and len(pending) > 1 << 24:
                    raise OSError("request line too long")
        except OSError:
            pass
        finally:
            if delayed is not None:
                delayed.put(None)
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _request(self, record: Connection, line: bytes) -> None:
        with record.lock:
            record.requests += 1
            if record.outstanding == 0:
                record.round_trips += 1
            record.outstanding += 1
        if self.count_names:
            start = line.find(b'"request": "')
            if start >= 0:
                name = line[start + 12:line.find(b'"', start + 12)].decode(errors="replace")
                record.names[name] = record.names.get(name, 0) + 1
        with self._lock:
            self._total += 1
            total = self._total
        if self.on_request is not None:
            self.on_request(total)
