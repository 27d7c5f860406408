"""The board farm (issue 13): ``scons -jN flash`` onto N boards, in-process or each behind its own
``pyocd server``.

One tree, one image (78,128 bytes), N simulated boards, every board factory-fresh
before each run; ``scons -jN flash`` in its own process, N = 1, 2, 4:

- **in-process**: ``PYOCD_PROBE=sim-...``: the simulated boards run inside the SCons
  process (its threads share one interpreter lock);
- **remote**: each board served by its own ``pyocd server`` (``scons-pyocd-sim serve``'s
  way) on 127.0.0.1, ``PYOCD_PROBE=remote:127.0.0.1:PORT`` through a loopback relay
  (``bench/relay.py``) that counts the requests and round trips of each flash.

Reported per run: the wall time; the CPU seconds of the SCons process (user + system,
from ``wait4``), per board; each board's device time (the simulated chip and wire);
requests and round trips per flash. The relay's round-trip count is exact only with a
latency (see its docstring), so the remote N=1 flash is run again with a fixed
:data:`LATENCY` added to every round trip: its round trips, and the wall time it adds
(about round trips x latency: the cost model for a LAN or a VPN). For reference,
``pyocd flash`` (pyOCD's own remote client) of the same file through the same kind of
server, with the same latency.

Goals: round trips per full flash <= 1,500; SCons-process CPU per remote board <= 0.5 s.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from . import _contenders as c
from ._common import flash_image, private_state, verdict, write_results
from .relay import Relay

LATENCY = 0.002
GOAL_ROUND_TRIPS = 1500
GOAL_CPU_PER_BOARD_S = 0.5


def _tree(directory: Path, data: bytes, probes: Sequence[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "src.bin").write_bytes(data)
    lines = [f"env = Environment(tools=['pyocd_tool'], toolpath=[{str(c.TOOLS)!r}], PYOCD_TARGET='stm32f100rb', "
             f"PYOCD_FREQUENCY={str(c.FREQUENCY)!r})",
             "image = env.Command('fw.bin', 'src.bin', Copy('$TARGET', '$SOURCE'))"]
    for i, probe in enumerate(probes):
        lines.append(f"env.FlashAliases(image, flash='flash-{i}', erase='erase-{i}', verify='verify-{i}', "
                     f"PYOCD_PROBE={probe!r})")
    lines.append("env.Alias('flash', [" + ", ".join(f"'flash-{i}'" for i in range(len(probes))) + "])")
    (directory / "SConstruct").write_text("\n".join(lines) + "\n")
    return directory


def _run(argv: List[str], cwd: Path, boards: Sequence[str]) -> Dict:
    """Run ``argv``; wall time, the process's own CPU time (wait4), counter deltas."""
    before = {b: c.counters(b) for b in boards}
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=900)
    wall = time.perf_counter() - start
    # communicate() reaped it; its CPU came back in RUSAGE_CHILDREN (the servers are not children
    # that ended, so only the SCons process counts).
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{out.decode()}\n{err.decode()}")
    return {"wall": wall, "out": out.decode(), "deltas": {b: c.delta(before[b], c.counters(b)) for b in boards}}


def _cpu_of(run_fn):
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def _serve(boards: Sequence[str]):
    from scons_pyocd.sim import serve
    return serve.start_all(boards)


def _flash(n: int, mode: str, data: bytes, scratch: Path, latency: float = 0.0) -> Dict:
    boards = [f"sim-farm-{mode[0]}{n}-{i}" for i in range(n)]
    for board in boards:
        c.set_board(board)
    servers, relays = [], []
    try:
        if mode == "remote":
            servers = _serve(boards)
            relays = [Relay(("127.0.0.1", s.port), delay=latency) for s in servers]
            probes = [f"remote:127.0.0.1:{r.start()}" for r in relays]
        else:
            probes = boards
        tree = _tree(scratch / f"{mode}-{n}-{len(list(scratch.iterdir()))}", data, probes)
        run = _cpu_of(lambda: _run([str(c.BIN / "scons"), "-Q", f"-j{n}", "flash"], tree, boards))
    finally:
        for r in relays:
            r.stop()
        for s in servers:
            s.stop()
    for board in boards:
        if not c.holds(board, data):
            raise RuntimeError(f"{board} does not hold the image after scons -j{n} flash ({mode}):\n{run['out']}")
    device = [run["deltas"][b]["device_time_s"] for b in boards]
    row = {"mode": mode, "boards": n, "latency_s": latency, "wall_s": round(run["wall"], 3),
           "scons_cpu_s": round(run["cpu"], 3), "scons_cpu_s_per_board": round(run["cpu"] / n, 3),
           "device_s_per_board": [round(d, 4) for d in device], "device_max_s": round(max(device), 4)}
    if relays:
        sessions = [r.busiest() for r in relays]
        row["requests_per_flash"] = round(sum(s.requests for s in sessions) / n)
        row["round_trips_per_flash"] = round(sum(s.round_trips for s in sessions) / n)
    return row


def _pyocd_client(data: bytes, scratch: Path, latency: float) -> Dict:
    """``pyocd flash`` of the same file through a server and the relay: pyOCD's own client."""
    from scons_pyocd.sim import serve
    board = "sim-farm-pyocd"
    c.set_board(board)
    path = scratch / "pyocd-fw.bin"
    path.write_bytes(data)
    servers = _serve([board])
    relay = Relay(("127.0.0.1", servers[0].port), delay=latency)
    try:
        port = relay.start()
        argv = c.pyocd_argv(f"remote:127.0.0.1:{port}", path)
        start = time.perf_counter()
        # The environment's PYTHONPATH names site_scons (private_state), as for every process here.
        subprocess.run([sys.executable, "-c", serve.LAUNCHER, *argv[1:]], cwd=scratch, capture_output=True,
                       check=True, timeout=900)
        wall = time.perf_counter() - start
    finally:
        relay.stop()
        servers[0].stop()
    if not c.holds(board, data):
        raise RuntimeError("pyocd flash through the server did not write the image")
    session = relay.busiest()
    return {"latency_s": latency, "wall_s": round(wall, 3), "requests_per_flash": session.requests,
            "round_trips_per_flash": session.round_trips}


def main(quick: bool = False) -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="farm-", dir=root))
    data = flash_image()
    counts = (1, 2) if quick else (1, 2, 4)
    rows = [_flash(n, mode, data, scratch) for n in counts for mode in ("in-process", "remote")]
    zero = next(r for r in rows if r["mode"] == "remote" and r["boards"] == 1)
    slow = _flash(1, "remote", data, scratch, latency=LATENCY)
    slow["added_wall_s"] = round(slow["wall_s"] - zero["wall_s"], 3)
    slow["added_per_round_trip_ms"] = round(1000 * slow["added_wall_s"] / max(1, slow["round_trips_per_flash"]), 2)
    reference = [] if quick else [_pyocd_client(data, scratch, latency) for latency in (0.0, LATENCY)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    print(f"scons -jN flash of a {len(data):,}-byte image onto N fresh simulated boards, in the SCons process "
          f"or each behind its own pyocd server (loopback), SWD {c.FREQUENCY / 1e6:g} MHz, {cpus} CPUs; one run each")
    print(f"{'mode':10} {'boards':>6} {'wall s':>7} {'SCons CPU s/board':>17} {'device s/board':>14} "
          f"{'requests/flash':>14} {'round trips/flash':>17}")
    for r in rows:
        print(f"{r['mode']:10} {r['boards']:6d} {r['wall_s']:7.2f} {r['scons_cpu_s_per_board']:17.2f} "
              f"{r['device_max_s']:14.3f} {r.get('requests_per_flash', '-'):>14} "
              f"{'(' + str(r['round_trips_per_flash']) + ')' if 'round_trips_per_flash' in r else '-':>17}")
    print(f"(round trips without latency are an upper bound; exact with {LATENCY * 1000:g} ms below)")
    print(f"remote, 1 board, +{LATENCY * 1000:g} ms per round trip: wall {slow['wall_s']:.2f} s "
          f"(+{slow['added_wall_s']:.2f} s), {slow['requests_per_flash']} requests, "
          f"{slow['round_trips_per_flash']} round trips, {slow['added_per_round_trip_ms']:.2f} ms added per round trip")
    for ref in reference:
        print(f"pyocd flash (pyOCD's own client) through a server, +{ref['latency_s'] * 1000:g} ms: wall "
              f"{ref['wall_s']:.2f} s, {ref['requests_per_flash']} requests, {ref['round_trips_per_flash']} round trips")
    remote = [r for r in rows if r["mode"] == "remote"]
    remote_cpu = max(r["scons_cpu_s_per_board"] for r in remote)
    first, last = remote[0], remote[-1]
    marginal = ((last["scons_cpu_s"] - first["scons_cpu_s"]) / (last["boards"] - first["boards"])
                if last["boards"] > first["boards"] else None)
    goals = {f"round trips per full {len(data):,}-byte flash <= {GOAL_ROUND_TRIPS:,}":
             slow["round_trips_per_flash"] <= GOAL_ROUND_TRIPS,
             f"SCons-process CPU per remote board <= {GOAL_CPU_PER_BOARD_S} s (every N)":
             remote_cpu <= GOAL_CPU_PER_BOARD_S}
    print(f"goal: round trips per full {len(data):,}-byte flash <= {GOAL_ROUND_TRIPS:,}: "
          f"{slow['round_trips_per_flash']:,} ({verdict(slow['round_trips_per_flash'] <= GOAL_ROUND_TRIPS)})")
    print(f"goal: SCons-process CPU per remote board <= {GOAL_CPU_PER_BOARD_S} s (every N): "
          + ", ".join(f"N={r['boards']} {r['scons_cpu_s_per_board']:.2f} s" for r in remote)
          + f" ({verdict(remote_cpu <= GOAL_CPU_PER_BOARD_S)})"
          + (f"; each board added costs {marginal:.2f} s" if marginal is not None else ""))
    results = {"frequency_hz": c.FREQUENCY, "bytes": len(data), "cpus": cpus, "latency_s": LATENCY,
               "rows": rows, "marginal_scons_cpu_s_per_remote_board": marginal and round(marginal, 3),
               "with_latency": slow, "pyocd_client": reference, "goals": goals}
    write_results("farm", results)
    return results


if __name__ == "__main__":
    main()
