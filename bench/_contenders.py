"""The contenders of the ``scons flash`` scenarios, each run in its own process.

- :class:`Tree`: a temporary source tree whose SConstruct builds ``fw.bin`` from
  ``src.bin`` (a copy, standing for the firmware build) and, in its ``tool`` form
  (``Environment(tools=['pyocd_tool'])``), adds ``env.FlashAliases('fw.bin')`` for one or more
  simulated boards. The ``plain`` forms are the same tree without the tool: with the same
  tool list minus it (``tools=[]``), or with ``Environment()``'s default tools.
- :func:`pyocd_cli`: ``pyocd flash``/``pyocd load`` of the same file, through the same
  simulated probe, at the same SWD frequency.
- :func:`founding`: the founding scenario's method replayed through pyOCD's command
  line: mass erase, then write the whole image (``pyocd flash -e chip``; after a mass
  erase every page is programmed).

Every contender runs at :data:`FREQUENCY` (4 MHz, as an ST-Link/V2 would), with the
state directories of :func:`._common.private_state` (set in ``os.environ`` before
these run; every child process inherits them). Device time and the other figures are
the simulated board's counter deltas over the run.
"""

import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ._common import SITE_SCONS

FREQUENCY = 4_000_000
FLASH_BASE = 0x08000000
BIN = Path(sys.executable).parent
TOOLS = SITE_SCONS / "site_tools"

#: Written by a process started through :data:`PEAK_LAUNCHER` at exit: its peak resident set.
PEAK_LAUNCHER = textwrap.dedent("""\
    import atexit, runpy, sys
    out = sys.argv[1]
    def peak():
        try:
            with open('/proc/self/status') as f:
                kib = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))
        except OSError:
            import resource
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open(out, 'w') as f:
            f.write(str(kib))
    atexit.register(peak)
    module = sys.argv[2]
    sys.argv = [module] + sys.argv[3:]
    runpy.run_module(module, run_name='__main__', alter_sys=True)
    """)


def board_state(board: str):
    """The benchmark's own simulated board, created the first time it is used."""
    from scons_pyocd.sim.board import BoardState
    return BoardState.create(board, exist_ok=True)


def counters(board: str) -> Dict[str, float]:
    return board_state(board).counters()


def delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after}


def set_board(board: str, data: Optional[bytes] = None) -> None:
    """Factory state (erased, healthy), then ``data`` at the start of flash, written behind
    every tool's back: the chip holds it, no record says so."""
    state = board_state(board)
    state.restore_factory()
    if data is not None:
        state.write_flash(FLASH_BASE, data)


def holds(board: str, data: bytes) -> bool:
    return board_state(board).read_flash(FLASH_BASE, len(data)) == data


class Run:
    """One process: wall time, exit status, output, counter deltas of the boards it used."""

    def __init__(self, argv: Sequence[str], cwd: Path, boards: Sequence[str] = ()):
        self.argv = list(argv)
        before = {b: counters(b) for b in boards}
        start = time.perf_counter()
        proc = subprocess.run(self.argv, cwd=cwd, capture_output=True, text=True, timeout=600)
        self.wall = time.perf_counter() - start
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.deltas = {b: delta(before[b], counters(b)) for b in boards}
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)} failed ({proc.returncode}) in {cwd}:\n"
                               f"{proc.stdout}\n{proc.stderr}")

    @property
    def device(self) -> Dict[str, float]:
        """The counter deltas of the (only or first) board."""
        return next(iter(self.deltas.values()))


class Tree:
    """A temporary tree: ``src.bin`` -> ``fw.bin`` (a copy); with ``boards``, the tool
    flashes ``fw.bin`` onto each (``scons flash`` flashes all of them)."""

    def __init__(self, directory: Path, data: bytes, boards: Sequence[str] = (), erase: str = "auto",
                 tools: Optional[Sequence[str]] = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.boards = list(boards)
        self.write(data)
        if boards:
            args = (f"tools=['pyocd_tool'], toolpath=[{str(TOOLS)!r}], PYOCD_TARGET='stm32f100rb', "
                    f"PYOCD_FREQUENCY={str(FREQUENCY)!r}, PYOCD_ERASE={erase!r}")
        else:       # plain: SCons's default tools, or the list given
            args = "" if tools is None else f"tools={list(tools)!r}"
        lines = [f"env = Environment({args})",
                 "image = env.Command('fw.bin', 'src.bin', Copy('$TARGET', '$SOURCE'))"]
        if len(self.boards) == 1:
            lines.append(f"env.FlashAliases(image, PYOCD_PROBE={self.boards[0]!r})")
        elif self.boards:
            for board in self.boards:
                lines.append(f"env.FlashAliases(image, flash='flash-{board}', erase='erase-{board}', "
                             f"verify='verify-{board}', PYOCD_PROBE={board!r})")
            lines.append("env.Alias('flash', [" + ", ".join(f"'flash-{b}'" for b in self.boards) + "])")
        (self.dir / "SConstruct").write_text("\n".join(lines) + "\n")

    def write(self, data: bytes) -> None:
        (self.dir / "src.bin").write_bytes(data)

    def scons(self, *args: str) -> Run:
        return Run([str(BIN / "scons"), "-Q", *args], self.dir, self.boards)

    def scons_peak(self, out: Path, *args: str) -> Run:
        """``scons`` in a fresh process that writes its peak resident set (KiB) to ``out``."""
        return Run([sys.executable, "-c", PEAK_LAUNCHER, str(out), "SCons", "-Q", *args], self.dir, self.boards)


def pyocd_argv(board: str, path: Path, command: str = "flash", *extra: str) -> List[str]:
    return [str(BIN / "pyocd"), command, "-W", "-u", board, "-t", "stm32f100rb", "-f", str(FREQUENCY),
            "--base-address", hex(FLASH_BASE), *extra, str(path)]


def pyocd_cli(board: str, path: Path, command: str = "flash", *extra: str) -> Run:
    """pyOCD's command line with its defaults (sector erase, smart flash)."""
    return Run(pyocd_argv(board, path, command, *extra), path.parent, [board])


def founding(board: str, path: Path) -> Run:
    """Mass erase + the whole image, as the founding scenario's OpenOCD session did."""
    return pyocd_cli(board, path, "flash", "-e", "chip", "-O", "smart_flash=false")


def erased_label(row: Dict, unit: str = "") -> str:
    """The table's 'erased' column: 'mass' for a mass erase, else the pages erased."""
    return "mass" if row["mass_erases"] else f"{row['pages_erased']:.0f}{unit}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"

