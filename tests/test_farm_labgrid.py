"""``labgrid:PLACE``: a labgrid coordinator and exporter on 127.0.0.1 export a ``pyocd server``
(one simulated board) as a NetworkService; users acquire the place with labgrid's own
client, then ``scons flash --probe=labgrid:PLACE``.

The coordinator listens on port 0 (it prints the port), the probe server too; every
process is started here and killed by its PID, every wait is bounded. Needs labgrid
(``pip install 'scons-pyocd[labgrid]'``, which scripts/setup installs).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("labgrid")

from scons_project import PAGE, Project, random_image  # noqa: E402
from scons_pyocd.records import BoardRecord  # noqa: E402
from scons_pyocd.sim import serve  # noqa: E402
from scons_pyocd.sim.board import FLASH_BASE, BoardState  # noqa: E402

PLACE = "lab-a"
BOARD = "sim-lab"


def start_logged(argv, log: Path, pattern: str, env, cwd, seconds: float = 60):
    """Start ``argv`` with its output in ``log``; wait (bounded) for a line matching ``pattern``."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=cwd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return process, found
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait(10)
    raise AssertionError(f"{argv[2:4]} did not start: {log.read_text(errors='replace')[-2000:]}")


class Lab:
    """A coordinator, one exporter exporting a probe server, one place matching it."""

    def __init__(self, root: Path):
        self.root = root
        self.processes = []
        self.env = dict(os.environ)

    def client(self, user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "labgrid.remote.client", "-p", PLACE, *args],
                                env=dict(self.env, LG_USERNAME=user), capture_output=True, text=True,
                                timeout=60, cwd=self.root)
        if check and result.returncode != 0:
            raise AssertionError(f"labgrid-client {' '.join(args)} as {user}: {result.stdout}{result.stderr}")
        return result

    def acquire(self, user: str) -> None:
        deadline = time.monotonic() + 60      # the exporter's resource may not be registered yet
        while True:
            result = self.client(user, "acquire", check=False)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def lab(tmp_path):
    BoardState.create(BOARD, exist_ok=True)
    root = tmp_path / "lab"
    root.mkdir()
    lab = Lab(root)
    server = serve.start(BOARD, timeout=60)
    try:
        coordinator, found = start_logged([sys.executable, "-m", "labgrid.remote.coordinator", "-l", "127.0.0.1:0"],
                                          root / "coordinator.log", r"listening on 127\.0\.0\.1:(\d+)", lab.env, root)
        lab.processes.append(coordinator)
        lab.env["LG_COORDINATOR"] = f"127.0.0.1:{found.group(1)}"
        (root / "exporter.yaml").write_text(
            f"board:\n  pyocd:\n    cls: NetworkService\n    address: 127.0.0.1\n    port: {server.port}\n"
            "    username: pyocd\n")
        exporter, _ = start_logged([sys.executable, "-m", "labgrid.remote.exporter", "-n", "exp1", "--hostname",
                                    "127.0.0.1", str(root / "exporter.yaml")], root / "exporter.log",
                                   r"Exporter ready", lab.env, root)
        lab.processes.append(exporter)
        lab.client("alice", "create")
        lab.client("alice", "add-match", "exp1/board/*")
        lab.server = server
        yield lab
    finally:
        lab.stop()
        server.kill()


def project(directory: Path, seed: int, env: dict) -> Project:
    p = Project(directory, BOARD)
    p.data = random_image(4 * PAGE, seed=seed)
    p.image(p.data)
    p.sconstruct("env.FlashAliases('{image}')\n", probe=f"labgrid:{PLACE}")
    p.env = env
    return p


def test_acquire_flash_release_and_another_user_refused(tmp_path, lab):
    alice = dict(LG_COORDINATOR=lab.env["LG_COORDINATOR"], LG_USERNAME="alice")
    bob = dict(alice, LG_USERNAME="bob", SCONS_PYOCD_STATE_DIR=str(tmp_path / "bob-state"))
    mine = project(tmp_path / "alice", seed=1, env=alice)
    theirs = project(tmp_path / "bob", seed=2, env=bob)

    refused = mine.run("flash", check=False, env=alice)         # not acquired yet
    assert f"labgrid place {PLACE} is not yours to use now: place {PLACE} is not acquired" in refused.stdout + refused.stderr

    lab.acquire("alice")
    result = mine.run("flash", env=alice)
    assert (f"flash stm32f100rb via {BOARD} at remote:127.0.0.1:{lab.server.port} (labgrid place "
            f"{PLACE}): fw.hex ") in result.stdout
    assert BoardState(BOARD).read_flash(FLASH_BASE, len(mine.data)) == mine.data
    entry = BoardRecord(BOARD).entries[0]
    assert entry["valid"] and entry["options"]["labgrid place"].startswith("acquired by ")
    marker = tmp_path / "pyocd-imported"
    noop = mine.run("flash", env=dict(alice, CHECK_PYOCD_IMPORT=str(marker)))
    assert noop.stdout.startswith("flash is up to date (") and f"board {BOARD}" in noop.stdout
    assert marker.read_text() == "False"          # labgrid and the server asked; pyOCD not imported

    # Another user (another host's state directory): labgrid's own reason, nothing written.
    result = theirs.run("flash", check=False, env=bob)
    out = result.stdout + result.stderr
    assert f"place {PLACE} is not acquired by your user, acquired by alice" in out, out
    assert "Traceback" not in out
    assert BoardState(BOARD).read_flash(FLASH_BASE, len(mine.data)) == mine.data

    lab.client("alice", "release")
    result = mine.run("flash", check=False, env=alice)
    assert f"place {PLACE} is not acquired" in result.stdout + result.stderr

    # Acquired again: whoever had the place meanwhile may have flashed it, so the record is not
    # trusted; the chip is compared (nothing differs, nothing is written).
    lab.acquire("alice")
    before = BoardState(BOARD).counters()
    result = mine.run("flash", env=alice)
    assert "up to date" not in result.stdout and "0 of 4 pages changed" in result.stdout, result.stdout
    after = BoardState(BOARD).counters()
    assert after["pages_erased"] == before["pages_erased"] and after["mass_erases"] == before["mass_erases"]
    assert mine.run("flash", env=alice).stdout.startswith("flash is up to date (")

    lab.client("alice", "release")
    lab.acquire("bob")
    result = theirs.run("flash", env=bob)
    assert BoardState(BOARD).read_flash(FLASH_BASE, len(theirs.data)) == theirs.data
    lab.client("bob", "release")
