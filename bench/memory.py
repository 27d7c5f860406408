"""Scenario 7 (issue 6), the ``scons flash`` half: peak memory of a full 128 KiB flash.

Each run is a fresh process started through a small launcher that runs ``scons`` (or
``pyocd``) in-process and, at exit, writes its peak resident set (``VmHWM`` from
/proc/self/status; ``ru_maxrss`` where there is no /proc). Not ``ru_maxrss`` of the
child as seen from here: on Linux a child inherits its parent's peak across fork and
exec (see ``conversions.py``).

Runs: plain ``scons`` of the same tree without the tool (the baseline), ``scons flash``
of a 128 KiB image (every page) onto a fresh simulated board, the no-op ``scons flash``
that follows, and ``pyocd flash`` of the same image onto a fresh board. No goal: the
figures are for reading (the conversion half of scenario 7 is in ``conversions``).
"""

import tempfile
from pathlib import Path

from . import _contenders as c
from ._common import private_state, synthetic_image, write_results

BOARD = "sim-bench"
SIZE = 128 * 1024


def peak(run_it, out: Path) -> float:
    run_it(out)
    return int(out.read_text()) / 1024


def main() -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="memory-", dir=root))
    data = synthetic_image(SIZE, seed=9)
    tool = c.Tree(scratch / "tool", data, [BOARD])
    plain = c.Tree(scratch / "plain", data)
    rows = []

    def row(name, mib, run):
        rows.append({"run": name, "peak_mib": round(mib, 1), "wall_s": round(run.wall, 3),
                     "halfwords_programmed": run.device.get("halfwords_programmed", 0) if run.deltas else 0})

    plain.scons()      # build fw.bin, so the measured run is the build's no-op
    run = c.Run([c.sys.executable, "-c", c.PEAK_LAUNCHER, str(scratch / "p0"), "SCons", "-Q"], plain.dir)
    row("plain scons (no-op, no tool)", int((scratch / "p0").read_text()) / 1024, run)
    c.set_board(BOARD)
    run = tool.scons_peak(scratch / "p1", "flash")
    if not c.holds(BOARD, data):
        raise RuntimeError(f"scons flash did not write the image:\n{run.stdout}{run.stderr}")
    row("scons flash, 128 KiB, every page", int((scratch / "p1").read_text()) / 1024, run)
    run = tool.scons_peak(scratch / "p2", "flash")
    row("scons flash, no-op", int((scratch / "p2").read_text()) / 1024, run)
    c.set_board(BOARD)
    image = tool.dir / "fw.bin"
    run = c.Run([c.sys.executable, "-c", c.PEAK_LAUNCHER, str(scratch / "p3"), "pyocd"]
                + c.pyocd_argv(BOARD, image)[1:], scratch, [BOARD])
    if not c.holds(BOARD, data):
        raise RuntimeError(f"pyocd flash did not write the image:\n{run.stdout}{run.stderr}")
    row("pyocd flash, 128 KiB, every page", int((scratch / "p3").read_text()) / 1024, run)
    print("Peak resident set (VmHWM) of one fresh process per run, simulated board in-process")
    print(f"{'run':36} {'peak MiB':>9} {'wall s':>7} {'half-words':>10}")
    for r in rows:
        print(f"{r['run']:36} {r['peak_mib']:9.1f} {r['wall_s']:7.2f} {r['halfwords_programmed']:10.0f}")
    results = {"bytes": SIZE, "rows": rows, "goals": {}}
    write_results("memory", results)
    return results


if __name__ == "__main__":
    main()
