"""A temporary SCons project that flashes the simulated board, for the tool's tests.

Each :class:`Project` is a folder with an SConstruct written by the test; ``run``
starts the real ``scons`` (this Python's) in it. The tool comes from this
checkout's ``site_scons/site_tools`` (``toolpath``), or from a copy of
``site_scons`` inside the project (``copy_site_scons=True``).
"""

import contextlib
import os
import pty
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Optional

from scons_pyocd import images, progress
from scons_pyocd.records import BoardRecord
from scons_pyocd.sim.board import BoardState, FLASH_BASE

ROOT = Path(__file__).resolve().parent.parent
SITE_SCONS = ROOT / "site_scons"
SITE_TOOLS = SITE_SCONS / "site_tools"
PAGE = 1024

#: The bound (s) on any wait in the tests that is there only to catch a hang: never a
#: timing assertion. Generous on purpose: a 2-core machine shared by several test runs
#: is many times slower than an idle one, and no test may fail because of that.
HANG = 900

#: Short pyOCD timeouts, so a target that stops answering fails in seconds.
FAST_FAIL = {"flash.timeout.program": 2.0, "flash.timeout.erase_sector": 2.0,
             "flash.timeout.analyzer": 2.0, "flash.timeout.init": 2.0}

PREAMBLE = """\
import os, sys
if os.environ.get('CHECK_PYOCD_IMPORT'):
    import atexit
    atexit.register(lambda: open(os.environ['CHECK_PYOCD_IMPORT'], 'w').write(
        str(any(m == 'pyocd' or m.startswith('pyocd.') for m in sys.modules))))
"""


#: A progress line of a log (not a terminal): ``flash fw.hex: programming 40% (8 of 20), 2.1 s``.
PROGRESS_LINE = re.compile(r"^(?:flash|verify|erase)\b[^\n]*?: (?:%s)\b[^\n]*\n"
                           % "|".join(re.escape(p) for p in progress.PHASES), re.M)


def without_progress(text: str) -> str:
    """``text`` (a captured stderr) without the progress lines: what remains are the messages."""
    return PROGRESS_LINE.sub("", text)


def scons_command():
    beside = Path(sys.executable).with_name("scons")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "SCons"]


def units(data: bytes, pages=None, page: int = PAGE) -> int:
    """Half-words of ``data`` (from a page start) a flash programs onto erased pages: those that
    are not 0xFFFF (programming one changes nothing, so the flash algorithm skips it); only in
    ``pages`` (page numbers) when given."""
    data = bytes(data) + b"\xff" * (-len(data) % page)
    chosen = range(len(data) // page) if pages is None else pages
    return sum(data[i:i + 2] != b"\xff\xff" for p in chosen for i in range(p * page, (p + 1) * page, 2))


def random_image(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(size))


ALIASES = "env.FlashAliases('{image}')\n"     # an SConstruct body: flash/erase/verify of the image


def holds(project: "Project", data: bytes, address: int = FLASH_BASE) -> bool:
    """Whether ``project``'s simulated board holds ``data`` at ``address`` (read from its flash)."""
    return project.board.read_flash(address, len(data)) == data


def aliases_project(directory: Path, board: str, size: int, body: Optional[str] = ALIASES) -> "Project":
    """A project with a random ``size``-byte image (``.data``) in fw.hex at the flash start and,
    unless ``body`` is None, an SConstruct of ``body`` (default :data:`ALIASES`)."""
    p = Project(directory, board)
    p.data = random_image(size)
    p.image(p.data)
    if body is not None:
        p.sconstruct(body)
    return p


@contextlib.contextmanager
def killed_after(process: subprocess.Popen, seconds: float = None):
    """Bound a blocking wait on ``process`` (a ``readline()`` of its output): when the body takes
    longer than ``seconds`` (default HANG), the process (its group, when it leads one) is killed,
    so that the read ends; on the way out of a failed body it is killed as well."""
    def kill():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()
    timer = threading.Timer(HANG if seconds is None else seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException:
        if process.poll() is None:
            kill()
        raise
    finally:
        timer.cancel()


def run_on_a_terminal(project: "Project", *args: str, columns: Optional[int] = 100, timeout: float = None):
    """scons with stderr on a pseudo-terminal of ``columns`` columns (None: never sized, 0 x 0);
    returns (stdout, what the terminal showed). Every wait is bounded by ``timeout`` (HANG)."""
    import fcntl
    import termios
    timeout = HANG if timeout is None else timeout
    master, slave = pty.openpty()
    environ = dict(os.environ)
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        environ["COLUMNS"] = str(columns)
    proc = subprocess.Popen(scons_command() + ["-Q", *args], cwd=project.dir, env=environ,
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:          # EIO: the terminal's other side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"scons {' '.join(args)} did not finish in {timeout} s")
        stdout = proc.communicate(timeout=timeout)[0]
    finally:
        os.close(master)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return stdout.decode(), b"".join(chunks).decode(errors="replace")


def write_image(path: Path, data: bytes, base: int = FLASH_BASE) -> None:
    if path.suffix == ".bin":
        path.write_bytes(data)
    else:
        images.write_hex(images.Image([(base, data)]), path)


class Project:
    """A project folder flashing simulated board ``board``, which it creates unless it exists
    (``create_board=False``: it does not, and ``board`` stays None until it does)."""

    def __init__(self, directory: Path, board: str, copy_site_scons: bool = False, create_board: bool = True):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.board_id = board
        self.board = BoardState.create(board, exist_ok=True) if create_board else None
        self.copy_site_scons = copy_site_scons
        if copy_site_scons:
            shutil.copytree(SITE_SCONS, self.dir / "site_scons", ignore=shutil.ignore_patterns("__pycache__"))

    def sconstruct(self, body: str, image: str = "fw.hex", probe: Optional[str] = None,
                   target: str = "stm32f100rb", **variables) -> None:
        """Write an SConstruct: an Environment with the tool, then ``body``."""
        settings = {"PYOCD_TARGET": target, "PYOCD_PROBE": self.board_id if probe is None else probe,
                    "PYOCD_FREQUENCY": "4MHz"}
        settings.update(variables)
        tool = "tools=['pyocd_tool']" if self.copy_site_scons else f"tools=['pyocd_tool'], toolpath=[{str(SITE_TOOLS)!r}]"
        args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
        text = PREAMBLE + f"env = Environment({tool}, {args})\n" + textwrap.dedent(body).format(image=image)
        (self.dir / "SConstruct").write_text(text)

    def image(self, data: bytes, name: str = "fw.hex", base: int = FLASH_BASE) -> Path:
        path = self.dir / name
        write_image(path, data, base)
        return path

    def run(self, *args: str, check: Optional[bool] = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        environ = dict(os.environ)
        if self.copy_site_scons:
            environ.pop("PYTHONPATH", None)
        environ.update(env or {})
        result = subprocess.run(scons_command() + ["-Q", *args], cwd=self.dir, env=environ,
                                capture_output=True, text=True, timeout=HANG)
        if check is True and result.returncode != 0:
            raise AssertionError(f"scons {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        if check is False and result.returncode == 0:
            raise AssertionError(f"scons {' '.join(args)} succeeded but should have failed:\n{result.stdout}")
        return result

    def imports_pyocd(self, *args: str) -> bool:
        """Run scons and tell whether pyOCD was imported by the end of it."""
        marker = self.dir / ".pyocd-imported"
        marker.unlink(missing_ok=True)
        self.run(*args, env={"CHECK_PYOCD_IMPORT": str(marker)})
        return marker.read_text() == "True"

    def record_file(self, image: str = "fw.hex", board: Optional[str] = None) -> Path:
        return self.dir / f"{image}.{board or self.board_id}.flashed"

    def record_entry(self, image: str = "fw.hex", board: Optional[str] = None) -> Optional[dict]:
        """The board record's entry for this project's flash of ``image``."""
        return BoardRecord(board or self.board_id).entry(str(self.record_file(image, board)))

    def counters_after(self, *args: str, check: Optional[bool] = True):
        """Run scons; return (result, counter deltas)."""
        before = self.board.counters()
        result = self.run(*args, check=check)
        after = self.board.counters()
        return result, {k: after[k] - before[k] for k in after}
