"""Scenario 1 (issue 6), with the goal of issue 14: the image did not change.

On one simulated board holding the 78,128-byte image (flashed by ``scons flash``):

- ``scons flash`` of the unchanged tree (``Environment(tools=['pyocd_tool'])``; the tool's no-op: it
  reads the board record, neither imports pyOCD nor opens the probe);
- plain ``scons`` of the same tree without the tool, twice: with the same tool list minus the
  tool (``tools=[]``), and with ``Environment()``'s default tools (the build's own no-op);
- ``pyocd flash`` and ``pyocd load`` of the same image through the same probe at the
  same SWD frequency: they must connect and compare (smart flash: an on-chip CRC of each
  page, then a read-back of the pages whose CRC matches, since ``--trust-crc`` is off by
  default).

Each in its own process; wall times are medians, the runs of the contenders alternate.

Goals: the no-op's overhead at most 30 ms or 10 % over each plain ``scons`` (issue 14), both
measured in the same run; the no-op at least 5x faster (wall time) than ``pyocd flash`` of the
unchanged image.
"""

import tempfile
from pathlib import Path

from . import _contenders as c
from ._common import flash_image, private_state, verdict, write_results

BOARD = "sim-bench"


def main(quick: bool = False) -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="noop-", dir=root))
    data = flash_image()
    tool = c.Tree(scratch / "tool", data, [BOARD])
    plain = c.Tree(scratch / "plain", data)
    bare = c.Tree(scratch / "bare", data, tools=[])
    tool.scons("flash")
    plain.scons()
    bare.scons()
    assert c.holds(BOARD, data)
    image = tool.dir / "fw.bin"

    rounds = 3 if quick else 9
    pyocd_rounds = 1 if quick else 3
    walls = {"plain scons": [], "plain scons, tools=[]": [], "scons flash": [], "pyocd flash": [],
             "pyocd load": []}
    device = {}
    for i in range(rounds):
        walls["plain scons"].append(plain.scons().wall)
        walls["plain scons, tools=[]"].append(bare.scons().wall)
        run = tool.scons("flash")
        if "flash is up to date" not in run.stdout or run.device["connects"]:
            raise RuntimeError(f"scons flash was not a no-op:\n{run.stdout}{run.stderr}")
        walls["scons flash"].append(run.wall)
        device["scons flash"] = run.device
        if i < pyocd_rounds:
            for command in ("flash", "load"):
                run = c.pyocd_cli(BOARD, image, command)
                if run.device["halfwords_programmed"] or run.device["pages_erased"]:
                    raise RuntimeError(f"pyocd {command} wrote the unchanged image:\n{run.stdout}{run.stderr}")
                walls[f"pyocd {command}"].append(run.wall)
                device[f"pyocd {command}"] = run.device
    assert c.holds(BOARD, data)

    med = {name: c.median(values) for name, values in walls.items()}
    base = med["plain scons"]
    overhead = med["scons flash"] - base
    bare_overhead = med["scons flash"] - med["plain scons, tools=[]"]
    rows = []
    print(f"Unchanged {len(data):,}-byte image on a simulated STM32VLDiscovery, SWD {c.FREQUENCY / 1e6:g} MHz; "
          f"median wall time of {rounds} runs ({pyocd_rounds} for pyOCD), each in its own process")
    print(f"{'contender':22} {'wall ms':>8} {'vs plain':>9} {'device ms':>10} {'connects':>8} {'read B':>7}")
    for name, wall in med.items():
        d = device.get(name, {"device_time_s": 0.0, "connects": 0, "dp_bytes_read": 0})
        rows.append({"contender": name, "wall_s": round(wall, 4), "runs": len(walls[name]),
                     "wall_runs_s": [round(w, 4) for w in walls[name]],
                     "device_s": round(d["device_time_s"], 4), "connects": d["connects"],
                     "dp_bytes_read": d["dp_bytes_read"]})
        print(f"{name:22} {wall * 1000:8.0f} {wall / base:8.2f}x {d['device_time_s'] * 1000:10.1f} "
              f"{d['connects']:8.0f} {d['dp_bytes_read']:7.0f}")
    speedup = med["pyocd flash"] / med["scons flash"]
    print(f"scons flash no-op: {overhead * 1000:+.0f} ms ({overhead / base:+.0%}) over plain scons with the "
          f"default tools, {bare_overhead * 1000:+.0f} ms ({bare_overhead / med['plain scons, tools=[]']:+.0%}) "
          f"over tools=[]; {speedup:.1f}x faster than pyocd flash, "
          f"{med['pyocd load'] / med['scons flash']:.1f}x than pyocd load")
    goals = {
        "no-op scons flash <= +30 ms or +10 % over plain scons with the same tool list minus the tool":
            bare_overhead <= 0.030 or bare_overhead <= 0.10 * med["plain scons, tools=[]"],
        "no-op scons flash <= +30 ms or +10 % over plain scons with Environment()'s default tools":
            overhead <= 0.030 or overhead <= 0.10 * base,
        "no-op scons flash >= 5x faster than pyocd flash of the unchanged image": speedup >= 5.0,
    }
    for goal, met in goals.items():
        print(f"goal: {goal}: {verdict(met)}")
    results = {"frequency_hz": c.FREQUENCY, "bytes": len(data), "rows": rows,
               "overhead_s": round(overhead, 4), "overhead_same_tools_s": round(bare_overhead, 4), "speedup_vs_pyocd_flash": round(speedup, 2), "goals": goals}
    write_results("noop", results)
    return results


if __name__ == "__main__":
    main()
