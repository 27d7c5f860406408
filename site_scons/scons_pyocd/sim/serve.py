"""``scons-pyocd-sim serve NAME...``: a board farm on one machine, one ``pyocd server`` per board.

Each simulated board gets its own ``pyocd server`` process (pyOCD's own server, as
a lab host would run for a real probe) listening on 127.0.0.1, on a port the kernel
picks (port 0) unless one is given. ``scons flash --probe=remote:127.0.0.1:PORT`` then
flashes the board through the server, as it would a board on another host; several
boards flash in parallel (``scons -jN flash``), each in its own process.

The server runs pyOCD's command line with this package's simulated probe type
registered in-process (so it works from a copied ``site_scons`` too), its output in
``server.log`` in the board's directory. Loopback only: pyOCD's server has no
authentication (docs/farm.md).

:func:`start` is the API (tests, the farm benchmark); the command prints one line per
board (``NAME remote:127.0.0.1:PORT pid PID``) and, unless ``--detach``, keeps the
servers until Ctrl-C or SIGTERM; detached servers are stopped with ``kill PID``.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import FlashError
from .board import BoardState

#: What pyOCD's server logs once it listens (pyOCD 0.36-0.46).
_LISTENING = re.compile(r"Serving debug probe .* on port (\d+)")
#: Runs ``pyocd <argv>`` with the simulated probe type registered in this process.
LAUNCHER = ("import sys; from scons_pyocd import sim; sim.register(); "
            "from pyocd.__main__ import PyOCDTool; sys.exit(PyOCDTool().run(sys.argv[1:]))")


class Server:
    """A running ``pyocd server`` serving one simulated board on ``host:port``."""

    def __init__(self, board: str, host: str, port: int, process: subprocess.Popen, log: Path):
        self.board = board
        self.host = host
        self.port = port
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def probe(self) -> str:
        """The PYOCD_PROBE value that reaches it."""
        return f"remote:{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.board} {self.probe} pid {self.pid}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): a server that dies mid-flash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parent.parent.parent)      # site_scons, for the launcher
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def start(board: str, port: int = 0, timeout: float = 60.0, detach: bool = False) -> Server:
    """Start a ``pyocd server`` for the simulated board ``board`` (which must exist: NoSuchBoard
    otherwise) on 127.0.0.1:``port`` (port 0: any free port; the one chosen is ``.port``). Waits
    at most ``timeout`` seconds for it to listen; a FlashError with its log otherwise."""
    state = BoardState(board)
    log = state.path / "server.log"
    argv = [sys.executable, "-c", LAUNCHER, "server", "--no-config", "-u", board, "-p", str(port)]
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=detach)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = _LISTENING.search(text)
        if found:
            return Server(board, "127.0.0.1", int(found.group(1)), process, log)
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            raise FlashError(f"pyocd server for simulated board {board} did not start "
                             f"({'it exited' if process.returncode not in (None, -9) else 'no answer'}); "
                             f"its log ({log}):\n{text.strip()[-2000:]}")
        time.sleep(0.05)


def start_all(boards: Sequence[str], detach: bool = False) -> List[Server]:
    """One server per board (each on a port of its own); all stopped if one fails."""
    servers: List[Server] = []
    try:
        for board in boards:
            servers.append(start(board, detach=detach))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def main(boards: Sequence[str], detach: bool = False, out=None) -> int:
    """The ``serve`` command: start, print, then hold the servers until a signal (unless detached)."""
    out = out or sys.stdout
    servers = start_all(boards, detach=detach)
    for server in servers:
        print(server, flush=True, file=out)
    if detach:
        print("detached: stop each server with 'kill PID'", flush=True, file=out)
        return 0
    print("serving; Ctrl-C stops the servers", flush=True, file=out)
    stopping: List[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        while not stopping and all(s.process.poll() is None for s in servers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for server in servers:
            server.stop()
    gone = [s for s in servers if s.process.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL)
            and not stopping]
    for server in gone:
        print(f"{server.board}: its server exited; see {server.log}", file=sys.stderr)
    return 1 if gone else 0


def serve_forever(boards: Sequence[str], detach: bool = False) -> Optional[int]:
    try:
        return main(boards, detach)
    except FlashError as exc:
        print(f"scons-pyocd-sim: {exc}", file=sys.stderr)
        return 2
