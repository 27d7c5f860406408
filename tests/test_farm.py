"""Boards behind pyOCD's probe server (``remote:HOST:PORT``): the real ``scons``, the real
``pyocd server`` (one per simulated board, ``scons-pyocd-sim serve``'s way), on loopback.

Every server listens on 127.0.0.1, port 0, started by a fixture and killed by its PID;
every subprocess and every wait is bounded (only to catch hangs: nothing here is timed).
The loopback relay of the farm benchmark (``bench/relay.py``) stands between scons and
a server where a test must see the requests, swap the board behind a port, or kill the
server mid-flash. labgrid places are in test_farm_labgrid.py.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from scons_project import ALIASES, PAGE, Project, killed_after, random_image, scons_command
from scons_pyocd import remote
from scons_pyocd.errors import FlashError
from scons_pyocd.records import BoardRecord
from scons_pyocd.sim import serve
from scons_pyocd.sim.board import FLASH_BASE, BoardState

sys.path.insert(0, str(ROOT))
from bench.relay import Relay  # noqa: E402  (the benchmark's relay, a sibling package)

ERASED = b"\xff"


@pytest.fixture
def servers():
    """``start(board)``: a ``pyocd server`` for the simulated board, killed by PID at the end."""
    started = []

    def start(board: str) -> serve.Server:
        BoardState.create(board, exist_ok=True)
        server = serve.start(board, timeout=60)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def relays():
    made = []

    def relay(server: serve.Server, **kwargs) -> Relay:
        r = Relay(("127.0.0.1", server.port), **kwargs)
        r.start()
        made.append(r)
        return r

    yield relay
    for r in made:
        r.stop()


def remote_project(directory: Path, board: str, probe: str, pages: int = 8, seed: int = 1, **variables):
    p = Project(directory, board)
    p.data = random_image(pages * PAGE, seed=seed)
    p.image(p.data)
    p.sconstruct(ALIASES, probe=probe, **variables)
    return p


def holds(board: str, data: bytes) -> bool:
    return BoardState(board).read_flash(FLASH_BASE, len(data)) == data


class RawClient:
    """A client of the probe server speaking its protocol by hand: holds the server's probe
    lock as another host's ``scons flash`` would."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rwb")
        self.id = 0

    def ask(self, name, *args):
        message = {"id": self.id, "request": name}
        if args:
            message["arguments"] = list(args)
        self.id += 1
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        answer = json.loads(self.file.readline())
        assert answer["status"] == 0, answer
        return answer.get("result")

    def hold(self):
        self.ask("hello", 1)
        self.ask("open")
        self.ask("lock")
        return self

    def release(self):
        self.ask("unlock")
        self.ask("close")
        self.sock.close()


def read_until(process: subprocess.Popen, text: str, seconds: float = 120) -> str:
    """Lines of ``process``'s stdout up to the one containing ``text`` (bounded)."""
    seen = []
    with killed_after(process, seconds):            # a silent process cannot block readline()
        while True:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return "".join(seen)
    raise AssertionError(f"{text!r} not printed; got:\n{''.join(seen)}")


def popen_scons(project: Project, *args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen(scons_command() + ["-Q", *args], cwd=project.dir, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


# -- flash, no-op, change, verify -------------------------------------------------------------

def test_flash_noop_change_and_verify_through_a_probe_server(tmp_path, servers, relays):
    server = servers("sim-r1")
    relay = relays(server, count_names=True)
    p = remote_project(tmp_path / "p", "sim-r1", f"remote:127.0.0.1:{relay.port}")

    result, delta = p.counters_after("flash")
    assert holds("sim-r1", p.data)
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(f"flash stm32f100rb via sim-r1 at remote:127.0.0.1:{relay.port}: fw.hex "), line
    assert delta["halfwords_programmed"] == 8 * PAGE // 2
    record = BoardRecord("sim-r1")        # keyed by what the server serves, not by its address
    assert [e["valid"] for e in record.entries] == [True]
    assert record.chip["unique_id"] == BoardState("sim-r1").identity()["unique_id"]
    assert relay.busiest().names.get("lock") == 1       # the server's lock, once for the whole session

    # No-op: the server is asked what it serves (one round trip), the probe is not opened.
    slow = relays(server, count_names=True, delay=0.05)     # with a latency, round trips count exactly
    before = BoardState("sim-r1").counters()
    assert not p.imports_pyocd("flash", f"--probe=remote:127.0.0.1:{slow.port}")
    assert BoardState("sim-r1").counters() == before
    assert [c.names for c in slow.connections] == [{"hello": 1, "readprop": 3}]
    assert [c.round_trips for c in slow.connections] == [1]
    # scons -n asks the server once as well (what it serves), and says up to date.
    dry = p.run("-n", "flash", f"--probe=remote:127.0.0.1:{slow.port}")
    assert dry.stdout.startswith("flash is up to date (image "), dry.stdout
    assert [c.names for c in slow.connections] == [{"hello": 1, "readprop": 3}] * 2
    assert BoardState("sim-r1").counters() == before
    result = p.run("flash")
    assert result.stdout.startswith("flash is up to date (image ") and "board sim-r1" in result.stdout
    assert f"at remote:127.0.0.1:{relay.port})" in result.stdout

    # Another spelling of the same server, and the server directly: the same board, still up to date.
    for probe in (f"remote:localhost:{relay.port}", f"remote:127.0.0.1:{server.port}"):
        result = p.run("flash", f"--probe={probe}")
        assert result.stdout.startswith("flash is up to date ("), (probe, result.stdout)

    # A change reprograms only the page that differs, then verify passes.
    changed = bytearray(p.data)
    changed[3 * PAGE + 7] ^= 0xFF
    p.data = bytes(changed)
    p.image(p.data)
    result, delta = p.counters_after("flash")
    assert "1 of 8 pages changed" in result.stdout, result.stdout
    assert delta["pages_erased"] == 1 and holds("sim-r1", p.data)
    result = p.run("verify")
    assert "matches (crc)" in result.stdout and f"via sim-r1 at remote:127.0.0.1:{relay.port}" in result.stdout

    # An erase through the server invalidates the record: the next flash programs again.
    assert re.fullmatch(rf"erase stm32f100rb via sim-r1 at remote:127\.0\.0\.1:{relay.port}: mass erase in \d+\.\d s",
                        p.run("erase").stdout.strip())
    assert BoardState("sim-r1").read_flash(FLASH_BASE, 8 * PAGE) == ERASED * 8 * PAGE
    result = p.run("flash")
    assert "up to date" not in result.stdout and holds("sim-r1", p.data)


def test_the_target_comes_from_the_served_board_when_pyocd_target_is_empty(tmp_path, servers):
    server = servers("sim-r2")
    p = remote_project(tmp_path / "p", "sim-r2", server.probe, pages=2, target="")
    result = p.run("flash")
    assert "flash stm32f100rb via sim-r2" in result.stdout, result.stdout
    assert holds("sim-r2", p.data)
    assert BoardRecord("sim-r2").entries[0]["target"] == "stm32f100rb"
    assert p.run("flash").stdout.startswith("flash is up to date (")


# -- identity: another board behind the same port ------------------------------------------------

def test_a_board_swapped_behind_the_port_is_flashed_not_reported_up_to_date(tmp_path, servers, relays):
    first, second = servers("sim-s1"), servers("sim-s2")
    relay = relays(first)
    p = remote_project(tmp_path / "p", "sim-s1", f"remote:127.0.0.1:{relay.port}")
    p.run("flash")
    assert holds("sim-s1", p.data)

    relay.backend = ("127.0.0.1", second.port)      # another board (erased) behind the same port
    result = p.run("flash")
    assert "up to date" not in result.stdout, result.stdout
    assert " via sim-s2 at " in result.stdout
    assert holds("sim-s2", p.data)

    relay.backend = ("127.0.0.1", first.port)       # the first one back: its record still holds
    assert p.run("flash").stdout.startswith("flash is up to date (")


# -- a server that dies or hangs ---------------------------------------------------------------

def test_a_server_killed_mid_flash_is_a_disconnection_error_and_the_next_flash_reprograms(tmp_path, servers,
                                                                                         relays):
    server = servers("sim-k")
    old, data = random_image(32 * PAGE, seed=4), random_image(32 * PAGE, seed=5)
    killed = []

    def kill_once_programming(n):
        # Kill the server once the chip holds the new image's first page (programming has begun).
        if not killed and n % 20 == 0 and BoardState("sim-k").read_flash(FLASH_BASE, PAGE) == data[:PAGE]:
            killed.append(n)
            os.kill(server.pid, signal.SIGKILL)

    relay = relays(server, on_request=kill_once_programming)
    p = Project(tmp_path / "p", "sim-k")
    p.image(old)
    p.sconstruct(ALIASES, probe=f"remote:127.0.0.1:{relay.port}")
    p.run("flash")
    assert holds("sim-k", old) and BoardRecord("sim-k").entries[0]["valid"]
    p.image(data)
    result = p.run("flash", check=False)
    assert killed, "the server was not killed mid-flash"
    out = result.stdout + result.stderr
    assert "disconnected from the probe server" in out and "closed the connection" in out, out
    assert f"the pyocd server at 127.0.0.1:{relay.port}" in out
    assert "Traceback" not in out and "AssertionError" not in out and "USB" not in out
    assert not holds("sim-k", data) and not holds("sim-k", old)
    entry = BoardRecord("sim-k").entries[0]
    reason = entry["invalidated"]["reason"]
    assert not entry["valid"] and "failed" in reason and "disconnected from the probe server" in reason, entry

    # The server back (another port): not up to date; the flash completes.
    again = servers("sim-k")
    result = p.run("flash", f"--probe={again.probe}")
    assert "up to date" not in result.stdout and holds("sim-k", data)
    assert BoardRecord("sim-k").entries[0]["valid"]


def test_a_server_that_stops_answering_is_an_error_after_the_timeout(tmp_path, servers):
    server = servers("sim-h")
    p = remote_project(tmp_path / "p", "sim-h", server.probe, pages=1)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        result = p.run("flash", check=False, env={"SCONS_PYOCD_REMOTE_TIMEOUT": "1"})
    finally:
        os.kill(server.pid, signal.SIGCONT)
    out = result.stdout + result.stderr
    assert f"no answer from the pyocd server at 127.0.0.1:{server.port} within 1 s" in out, out
    assert "Traceback" not in out
    assert BoardState("sim-h").counters()["connects"] == 0 and not holds("sim-h", p.data)
    assert BoardRecord("sim-h").entries == []                      # nothing claimed


def test_no_server_is_a_clear_error_without_usb_advice(tmp_path):
    with socket.socket() as placeholder:         # a loopback port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    p = remote_project(tmp_path / "p", "sim-none", f"remote:127.0.0.1:{port}", pages=1)
    result = p.run("flash", check=False)
    out = result.stdout + result.stderr
    assert f"cannot reach a pyocd server at 127.0.0.1:{port}: connection refused" in out, out
    assert "USB" not in out and "udev" not in out and "Traceback" not in out
    dry = p.run("-n", "flash")
    assert "cannot tell whether it is up to date: cannot reach a pyocd server" in dry.stdout, dry.stdout


# -- exclusion across state directories (two hosts) --------------------------------------------

def test_a_second_client_waits_for_the_server_lock_and_never_interleaves(tmp_path, servers, relays):
    server = servers("sim-x")
    holder = RawClient(server.port).hold()       # another host's flash, holding the server's lock
    p = remote_project(tmp_path / "p", "sim-x", server.probe, pages=4)
    other_state = tmp_path / "other-host-state"
    waiter = popen_scons(p, "flash", env={"SCONS_PYOCD_STATE_DIR": str(other_state)})
    try:
        shown = read_until(waiter, "waiting for probe sim-x at ")
        assert "another client of the pyocd server at" in shown
        assert BoardState("sim-x").read_flash(FLASH_BASE, 4 * PAGE) == ERASED * 4 * PAGE   # nothing written
        assert waiter.poll() is None
        holder.release()
        out, err = waiter.communicate(timeout=120)
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
    assert waiter.returncode == 0, out + err
    assert holds("sim-x", p.data)


def test_ctrl_c_while_waiting_gives_the_server_lock_back(tmp_path, servers, relays):
    server = servers("sim-c")
    relay = relays(server, count_names=True)
    holder = RawClient(server.port).hold()
    p = remote_project(tmp_path / "p", "sim-c", f"remote:127.0.0.1:{relay.port}", pages=2)
    waiter = popen_scons(p, "flash")
    try:
        read_until(waiter, "waiting for probe sim-c at ")
        os.killpg(waiter.pid, signal.SIGINT)
        read_until(waiter, "stopping: waiting for the pyocd server at")
        assert waiter.poll() is None          # it waits for the grant, so as to give the lock back
        holder.release()
        out, err = waiter.communicate(timeout=120)
    finally:
        if waiter.poll() is None:
            os.killpg(waiter.pid, signal.SIGKILL)
    assert waiter.returncode != 0 and "interrupted" in (out + err).lower()
    assert BoardState("sim-c").read_flash(FLASH_BASE, 2 * PAGE) == ERASED * 2 * PAGE
    # The lock asked for was granted, then given back (pyOCD's server keeps a departed client's).
    session = relay.busiest().names
    assert (session.get("lock"), session.get("unlock")) == (1, 1), session
    RawClient(server.port).hold().release()    # the server's lock is free again (a bounded wait)


def test_two_flashes_from_two_state_directories_never_corrupt_each_other(tmp_path, servers):
    server = servers("sim-y")
    a = remote_project(tmp_path / "a", "sim-y", server.probe, pages=24, seed=7)
    b = remote_project(tmp_path / "b", "sim-y", server.probe, pages=24, seed=8)
    runs = [popen_scons(project, "flash", env={"SCONS_PYOCD_STATE_DIR": str(tmp_path / f"state-{name}")})
            for name, project in (("a", a), ("b", b))]
    outputs = []
    for run in runs:
        try:
            outputs.append(run.communicate(timeout=300))
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    # pyOCD's server shares one open probe among its clients (0.4x: the second waits for the
    # server's lock), or opens it once per client (0.36: the second is refused). Either way
    # one flash completes and the other waits or says why; nothing is corrupted.
    done = [project for project, run in zip((a, b), runs) if run.returncode == 0]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0 or "is in use by another process" in err, out + err
    assert done, outputs
    chip = BoardState("sim-y").read_flash(FLASH_BASE, 24 * PAGE)
    assert chip in (a.data, b.data)          # one image whole, never a mix or a failed algorithm run
    if len(done) == 1:
        assert chip == done[0].data


# -- parallel boards ---------------------------------------------------------------------------

def test_boards_behind_their_own_servers_flash_independently(tmp_path, servers):
    one, two = servers("sim-p1"), servers("sim-p2")
    p = Project(tmp_path / "p", "sim-p1")
    BoardState.create("sim-p2", exist_ok=True)
    p.data = random_image(4 * PAGE, seed=3)
    p.image(p.data)
    p.sconstruct(f"env.FlashAliases('fw.hex', flash='flash-1', erase='erase-1', verify='verify-1', "
                 f"PYOCD_PROBE={one.probe!r})\n"
                 f"env.FlashAliases('fw.hex', flash='flash-2', erase='erase-2', verify='verify-2', "
                 f"PYOCD_PROBE={two.probe!r})\n"
                 "env.Alias('flash', ['flash-1', 'flash-2'])\n")
    holder = RawClient(one.port).hold()       # board 1 is busy: board 2 must not wait for it
    run = popen_scons(p, "-j2", "flash")
    try:
        shown = read_until(run, " via sim-p2 at ")
        assert holds("sim-p2", p.data) and not holds("sim-p1", p.data)
        assert f"flash stm32f100rb via sim-p2 at {two.probe}: fw.hex " in shown
        holder.release()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, out + err
    assert f"flash stm32f100rb via sim-p1 at {one.probe}: fw.hex " in shown + out
    assert holds("sim-p1", p.data)


# -- scons-pyocd-sim serve ----------------------------------------------------------------------

def test_sim_serve_starts_one_server_per_board_and_stops_them(tmp_path):
    for board in ("sim-f1", "sim-f2"):
        BoardState.create(board)
    command = [sys.executable, "-m", "scons_pyocd.sim", "serve", "sim-f1", "sim-f2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        with killed_after(process):
            lines = [process.stdout.readline().split() for _ in range(2)]
        served = {}
        for board, probe, word, pid in lines:
            assert word == "pid"
            served[board] = remote.query(remote.parse(probe), timeout=30)
            assert probe.startswith("remote:127.0.0.1:")
        assert {b: s.probe_id for b, s in served.items()} == {"sim-f1": "sim-f1", "sim-f2": "sim-f2"}
        assert served["sim-f1"].target == "stm32f100rb"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        for board, probe, _, pid in lines:
            with pytest.raises(FlashError, match="connection refused"):
                remote.query(remote.parse(probe), timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    result = subprocess.run([sys.executable, "-m", "scons_pyocd.sim", "serve", "sim-nope"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "no simulated board 'sim-nope'" in result.stderr


def test_labgrid_place_without_labgrid_says_what_to_install(tmp_path):
    fake = tmp_path / "no-labgrid" / "labgrid"      # an import of labgrid fails, as when not installed
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named labgrid')\n")
    p = remote_project(tmp_path / "p", "sim-l", "labgrid:lab-a", pages=1)
    result = p.run("flash", check=False, env={"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ["PYTHONPATH"]])})
    out = result.stdout + result.stderr
    assert "PYOCD_PROBE='labgrid:...' needs labgrid" in out and "pip install 'scons-pyocd[labgrid]'" in out, out
    assert "Traceback" not in out
