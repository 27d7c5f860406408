"""Scenario 6 (issue 6): N boards flashed by one ``scons -jN flash``.

One tree, one image (78,128 bytes), N simulated boards (``env.FlashAliases`` per board,
an alias ``flash`` for all), every board factory-fresh; ``scons -jN flash`` in its own
process. Reported: the wall time of the whole run, per board, the speed-up over N
separate one-board runs (N x the one-board wall time), and each board's device time
(what that board's flash takes on the chip and the wire: with real probes the boards
work in parallel, so the run's device-bound floor is the largest of them).

The simulator runs each board's flash algorithm in Unicorn in the scons process's
threads; with more boards than CPUs the wall time measures this machine's CPUs, not
the tool. No goal: the figures are for reading.
"""

import os
import tempfile
from pathlib import Path

from . import _contenders as c
from ._common import flash_image, private_state, write_results


def main(quick: bool = False) -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="boards-", dir=root))
    data = flash_image()
    counts = (1, 2) if quick else (1, 2, 4, 8)
    rows = []
    for n in counts:
        boards = [f"sim-n{n}-{i}" for i in range(n)]
        for board in boards:
            c.set_board(board)
        tree = c.Tree(scratch / f"n{n}", data, boards)
        run = tree.scons(f"-j{n}", "flash")
        for board in boards:
            if not c.holds(board, data):
                raise RuntimeError(f"{board} does not hold the image after scons -j{n} flash:\n{run.stdout}{run.stderr}")
        device = [run.deltas[b]["device_time_s"] for b in boards]
        rows.append({"boards": n, "wall_s": round(run.wall, 3), "wall_per_board_s": round(run.wall / n, 3),
                     "device_s_per_board": [round(d, 4) for d in device],
                     "device_max_s": round(max(device), 4), "device_sum_s": round(sum(device), 4)})
    one = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_serial"] = round(r["boards"] * one / r["wall_s"], 2)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"scons -jN flash of a {len(data):,}-byte image onto N fresh simulated boards, SWD "
          f"{c.FREQUENCY / 1e6:g} MHz, {cpus} CPUs; one run each")
    print(f"{'boards':>6} {'wall s':>7} {'per board':>9} {'vs serial':>9} {'device s/board (max)':>21}")
    for r in rows:
        print(f"{r['boards']:6d} {r['wall_s']:7.2f} {r['wall_per_board_s']:9.2f} {r['speedup_vs_serial']:8.2f}x "
              f"{r['device_max_s']:21.3f}")
    results = {"frequency_hz": c.FREQUENCY, "bytes": len(data), "cpus": cpus, "rows": rows, "goals": {}}
    write_results("boards", results)
    return results


if __name__ == "__main__":
    main()
