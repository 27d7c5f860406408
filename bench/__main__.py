"""Run the benchmarks: ``python -m bench [--quick] [NAME ...]`` (see docs/performance.md).

Each scenario is a module of this package listed in :data:`SCENARIOS`, with
``main(quick=False) -> dict``: it measures, prints its table and its goal lines,
writes ``bench/results/<name>.json`` and returns its figures, goals included as
``{"goals": {"what": met, ...}}``. A ``main()`` without ``quick`` runs the same
either way. This runs the scenarios in turn, writes everything to
``bench/results/all.json`` and ends with every goal, met or NOT MET.

Exit status: 0 when every scenario ran (goals missed or not; ``--strict`` makes a
missed goal fail too), 1 when a scenario failed, 2 for bad arguments.
"""

import argparse
import importlib
import inspect
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from . import _common
from ._common import verdict

#: (module, what it measures), in the order they run.
SCENARIOS = [
    ("sim_flash", "full flashes through pyOCD's API on the simulated board: device time against "
                  "the chip's limit, wall time"),
    ("conversions", "bin->hex, hex->bin, ELF->hex against intelhex, 128 KiB and 2 MiB; peak memory "
                    "for 2 MiB (issue 6, scenarios 5 and 7)"),
    ("noop", "scons flash of an unchanged image vs plain scons (tools=[] and Environment()) and "
             "pyocd flash/load (issue 6, scenario 1; issue 14's goal)"),
    ("changes", "one-byte change, two pages, 17 of 39 pages, code shift: scons flash vs pyocd flash and "
                "the founding mass erase + full write, against the k-page floor; the one-byte flash step by "
                "step (issue 6, scenarios 2 and 3; issue 14's goals)"),
    ("full", "the whole image onto an erased chip, one holding another image, one full of data; a 128 KiB "
             "whole-flash image: against the chip's limit and the seed's OpenOCD run; the flash step by step "
             "(issue 6, scenario 4; issue 14's goals)"),
    ("boards", "N boards (1, 2, 4, 8) flashed by one scons -jN flash: wall time, device time per board "
               "(issue 6, scenario 6)"),
    ("memory", "peak memory of scons flash of a full 128 KiB image, against plain scons and pyocd flash "
               "(issue 6, scenario 7)"),
    ("farm", "scons -jN flash onto N = 1, 2, 4 boards in the SCons process vs each behind its own pyocd "
             "server: wall time, SCons CPU and device time per board, round trips per flash (issue 13)"),
]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    found = {"python": platform.python_version()}
    for package in ("pyocd", "scons", "intelhex", "pyelftools", "unicorn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def run(names, quick: bool) -> dict:
    """Run the named scenarios; return what all.json holds."""
    report = {"quick": quick, "image_bytes": _common.IMAGE_BYTES, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"platform": platform.platform(), "cpus": _cpu_count()},
              "versions": _versions(), "scenarios": {}, "goals": []}
    descriptions = dict(SCENARIOS)
    for name in names:
        print(f"\n=== {name}: {descriptions[name]}", flush=True)
        start = time.perf_counter()
        try:
            main = importlib.import_module(f"{__package__}.{name}").main
            kwargs = {"quick": quick} if "quick" in inspect.signature(main).parameters else {}
            results = main(**kwargs)
        except Exception as exc:  # one broken scenario must not hide the others' figures
            traceback.print_exc()
            report["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                         "seconds": round(time.perf_counter() - start, 2)}
            continue
        seconds = time.perf_counter() - start
        print(f"({name}: {seconds:.1f} s)", flush=True)
        report["scenarios"][name] = {"seconds": round(seconds, 2), "results": results}
        for goal, met in (results.get("goals") or {}).items():
            report["goals"].append({"scenario": name, "goal": goal, "met": bool(met)})
    return report


def _cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def summary(report: dict) -> None:
    print("\n=== goals")
    width = max((len(g["scenario"]) for g in report["goals"]), default=0)
    for g in report["goals"]:
        print(f"{g['scenario']:{width}}  {verdict(g['met']):7}  {g['goal']}")
    met = sum(g["met"] for g in report["goals"])
    failed = [name for name, s in report["scenarios"].items() if "error" in s]
    print(f"{met} of {len(report['goals'])} goals met"
          + (f"; scenarios that failed: {', '.join(failed)}" if failed else ""))


def main(argv=None) -> int:
    names = [name for name, _ in SCENARIOS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"scenarios to run (default: all): {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    parser.add_argument("--results-dir", type=Path, default=_common.RESULTS,
                        help=f"where the JSON files go (default: {_common.RESULTS})")
    parser.add_argument("--image-bytes", type=int, default=_common.IMAGE_BYTES, metavar="N",
                        help="size of the image the scons flash scenarios use (default: %(default)s, the "
                             "founding scenario's nuttx.bin; at most 131072)")
    args = parser.parse_args(argv)
    if args.list:
        for name, what in SCENARIOS:
            print(f"{name:12} {what}")
        return 0
    unknown = [name for name in args.names if name not in names]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(names)}")
    if not 2 <= args.image_bytes <= 128 * 1024:
        parser.error(f"--image-bytes {args.image_bytes}: give 2 to 131072 (the simulated chip's flash)")
    _common.RESULTS = args.results_dir
    _common.IMAGE_BYTES = args.image_bytes
    selected = [name for name in names if name in args.names] if args.names else names
    start = time.perf_counter()
    report = run(selected, args.quick)
    report["seconds"] = round(time.perf_counter() - start, 2)
    path = _common.write_results("all", report)
    summary(report)
    print(f"total {report['seconds']:.1f} s; figures in {path}")
    failed = any("error" in s for s in report["scenarios"].values())
    missed = not all(g["met"] for g in report["goals"])
    return 1 if failed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
