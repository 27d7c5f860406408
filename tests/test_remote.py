"""Pure parts of remote probes: addresses (table-driven, properties) and the property query
against small loopback peers that answer (or do not) like a probe server would."""

import json
import socket
import threading

import pytest
from hypothesis import given, strategies as st

from scons_pyocd import remote
from scons_pyocd.errors import FlashError


@pytest.mark.parametrize("probe,host,port,shown", [
    ("remote:127.0.0.1:5555", "127.0.0.1", 5555, "remote:127.0.0.1:5555"),
    ("remote:LocalHost.:7", "localhost", 7, "remote:localhost:7"),
    ("remote:lab-host", "lab-host", 5555, "remote:lab-host:5555"),
    ("remote:[::1]:5555", "::1", 5555, "remote:[::1]:5555"),
    ("remote:[0:0::1]:80", "::1", 80, "remote:[::1]:80"),
    ("remote:[fe80::1]", "fe80::1", 5555, "remote:[fe80::1]:5555"),
    ("remote:010.1.2.3:1", "010.1.2.3", 1, "remote:010.1.2.3:1"),
])
def test_addresses_are_normalised(probe, host, port, shown):
    address = remote.parse(probe)
    assert (address.host, address.port, str(address)) == (host, port, shown)


@pytest.mark.parametrize("probe", ["remote:", "remote::5555", "remote:host:0", "remote:host:65536",
                                   "remote:host:abc", "remote:::1:5555", "remote:a b:1", "remote:[::1",
                                   "remote:host:-1"])
def test_bad_addresses_name_the_form_expected(probe):
    with pytest.raises(FlashError, match="give remote:HOST:PORT"):
        remote.parse(probe)


@given(st.sampled_from(["h", "lab-1.example", "10.0.0.7", "::1", "2001:db8::5"]), st.integers(1, 65535))
def test_a_shown_address_parses_back_to_itself(host, port):
    address = remote.Address(remote.normalise_host(host), port)
    assert remote.parse(str(address)) == address


@pytest.mark.parametrize("probe,expected", [("remote:h:1", True), ("labgrid:p", True), ("sim-a", False),
                                            ("", False), ("066DFF485550755187121336", False)])
def test_remote_probes_are_recognised(probe, expected):
    assert remote.is_remote(probe) is expected


@pytest.mark.parametrize("value", ["0", "-1", "soon", "1e9"])
def test_bad_timeouts_name_the_variable(monkeypatch, value):
    monkeypatch.setenv("SCONS_PYOCD_REMOTE_TIMEOUT", value)
    with pytest.raises(FlashError, match="SCONS_PYOCD_REMOTE_TIMEOUT="):
        remote.answer_timeout()


# -- the property query against loopback peers -------------------------------------------------

class Peer:
    """A one-connection loopback server running ``behave(connection)``."""

    def __init__(self, behave):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = remote.Address("127.0.0.1", self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._run, args=(behave,), daemon=True)
        self.thread.start()

    def _run(self, behave):
        self.listener.settimeout(30)
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            behave(connection)

    def close(self):
        self.listener.close()
        self.thread.join(30)


def answering(values):
    """Answer each request line: hello with status 0, readprop NAME with ``values[NAME]``."""
    def behave(connection):
        reader = connection.makefile("rb")
        for line in reader:
            request = json.loads(line)
            answer = {"id": request["id"], "status": 0}
            if request["request"] == "readprop":
                name = request["arguments"][0]
                if name in values:
                    answer["result"] = values[name]
                else:
                    answer = {"id": request["id"], "status": 1, "error": f"unknown property name '{name}'"}
            elif request["request"] == "hello" and values.get("_refuse"):
                answer = {"id": request["id"], "status": 1, "error": "client requested unsupported protocol"}
            connection.sendall(json.dumps(answer).encode() + b"\n")
    return behave


def test_query_reads_the_served_probe_and_board():
    peer = Peer(answering({"unique_id": "0669FF5", "description": "STLINK-V2 [0669FF5]",
                           "associated_board_info": ["Some board", "stm32f103rb", None, "ST"]}))
    try:
        served = remote.query(peer.address, timeout=10)
    finally:
        peer.close()
    assert (served.probe_id, served.target, served.board_name) == ("0669FF5", "stm32f103rb", "Some board")
    assert served.label == f"probe 0669FF5 at remote:127.0.0.1:{peer.address.port}"


def test_a_probe_without_board_info_has_no_target():
    peer = Peer(answering({"unique_id": "X1", "description": "a probe", "associated_board_info": None}))
    try:
        served = remote.query(peer.address, timeout=10)
    finally:
        peer.close()
    assert (served.probe_id, served.target) == ("X1", "")


# Only the silent peer needs a short timeout (it answers nothing until the client gives up and
# closes); the others answer at once, and get a long one so that a busy machine cannot turn
# their error into "no answer".
@pytest.mark.parametrize("behave,message,timeout", [
    (lambda c: c.recv(4096) and c.recv(4096), "no answer from the pyocd server at", 0.5),
    (lambda c: None, "closed the connection before saying what it serves", 10),
    (lambda c: c.recv(4096) and c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"), "does not answer like a pyocd server",
     10),
    (answering({"_refuse": True, "unique_id": "x"}), "refused this client: client requested unsupported protocol", 10),
    (answering({}), "did not say which probe it serves", 10),
])
def test_query_failures_are_clear(behave, message, timeout):
    peer = Peer(behave)
    try:
        with pytest.raises(FlashError, match=message):
            remote.query(peer.address, timeout=timeout)
    finally:
        peer.close()


def test_a_refused_connection_reads_as_one_message_naming_the_configured_probe(monkeypatch):
    """The server went away between the lookup and the session's connect: the message closes its
    first sentence with what was being done, and names PYOCD_PROBE as the user wrote it."""
    remote_probe = pytest.importorskip("scons_pyocd.remote_probe")
    with socket.socket() as s:          # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = remote.Served(address=remote.Address("127.0.0.1", port), probe_id="sim-gone", place="lab1",
                           probe="labgrid:lab1")
    monkeypatch.setitem(remote._SEEN, "sim-gone", served)
    with pytest.raises(remote_probe.RemoteFailure) as failure:
        remote_probe.BoundedSocket(served, timeout=5).connect()
    message = str(remote_probe.translated(failure.value, "sim-gone", "connecting"))
    assert message.startswith(f"cannot reach a pyocd server at 127.0.0.1:{port}: connection refused (nothing "
                              f"listens on port {port} of 127.0.0.1), while connecting (probe sim-gone at "
                              f"remote:127.0.0.1:{port} (labgrid place lab1)). Start one there"), message
    assert "PYOCD_PROBE='labgrid:lab1'" in message and "., " not in message
    assert message.endswith("the next scons flash programs it again (run it once the server is back).")
