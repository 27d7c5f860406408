"""Scenario 4 (issue 6): the whole 78,128-byte image onto a chip that does not hold it
(``--image-bytes`` for another size; the limit follows).

Starting states, set behind every tool's back (no board record):

- erased: a factory-fresh chip;
- another image: a different image of the same size (the rest of the flash erased);
- a 128 KiB image: every page holds other data, so nothing outside the image is blank
  (not with ``--quick``).

Contenders, each in its own process at the same SWD frequency: ``scons flash`` (the
tool's defaults: ``PYOCD_ERASE=auto``, verify by CRC, reset and run), ``scons flash
--verify=none`` (to show what the verify costs), ``pyocd flash`` (pyOCD's command-line
defaults) and the founding method through pyOCD (mass erase + every page, no smart-flash
analysis).

The chip's limit (``../shared/REFERENCE.md``): ceil(n / 2) half-words x 52.5 us + one
20 ms mass erase = 2.071 s for 78,128 bytes; the seed's OpenOCD run took 2.361 s.

Goal: ``scons flash`` of the full image onto an erased chip within 5 % of the limit.
"""

import tempfile
from pathlib import Path

from . import _contenders as c
from ._common import flash_image, private_state, synthetic_image, verdict, write_results

BOARD = "sim-bench"
HALFWORD_S, ERASE_S = 52.5e-6, 20e-3
SEED_OPENOCD_S = 2.361


def chip_limit(nbytes: int) -> float:
    return (nbytes + 1) // 2 * HALFWORD_S + ERASE_S


def main(quick: bool = False) -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="full-", dir=root))
    data = flash_image()
    path = scratch / "fw.bin"
    path.write_bytes(data)
    limit = chip_limit(len(data))
    rounds = 1 if quick else 2
    starts = {"erased": None, "another image": synthetic_image(len(data), seed=7),
              "a 128 KiB image": synthetic_image(128 * 1024, seed=8)}
    if quick:
        del starts["a 128 KiB image"]
    trees = {}

    def scons(*args):
        def run():
            key = args
            if key not in trees:   # a fresh tree: no board record for this image
                trees[key] = c.Tree(scratch / f"tree-{len(trees)}", data, [BOARD])
            tree = trees[key]
            return tree.scons("flash", "--force-flash", *args)
        return run

    contenders = {
        "scons flash": scons(),
        "scons flash --verify=none": scons("--verify=none"),
        "pyocd flash": lambda: c.pyocd_cli(BOARD, path),
        "founding (mass erase + all)": lambda: c.founding(BOARD, path),
    }
    rows = []
    for start, other in starts.items():
        for name, run_it in contenders.items():
            walls = []
            for _ in range(rounds):
                c.set_board(BOARD, other)
                run = run_it()
                if not c.holds(BOARD, data):
                    raise RuntimeError(f"{name} from {start}: the board does not hold the image:\n"
                                       f"{run.stdout}{run.stderr}")
                walls.append(run.wall)
            d = run.device
            rows.append({"start": start, "contender": name, "bytes": len(data),
                         "device_s": round(d["device_time_s"], 4), "ratio_to_limit": round(d["device_time_s"] / limit, 4),
                         "ratio_to_seed": round(d["device_time_s"] / SEED_OPENOCD_S, 4),
                         "pages_erased": d["pages_erased"], "mass_erases": d["mass_erases"],
                         "halfwords_programmed": d["halfwords_programmed"], "dp_bytes_read": d["dp_bytes_read"],
                         "wall_s": round(c.median(walls), 3), "wall_runs_s": [round(w, 3) for w in walls],
                         "summary": run.stdout.strip().splitlines()[-1] if name.startswith("scons") else ""})
    print(f"{len(data):,}-byte image, simulated STM32VLDiscovery, SWD {c.FREQUENCY / 1e6:g} MHz; chip limit "
          f"{limit:.3f} s, seed OpenOCD {SEED_OPENOCD_S} s; wall: median of {rounds}")
    print(f"{'chip held':16} {'contender':28} {'erased':>6} {'device s':>9} {'/limit':>7} {'/seed':>6} {'wall s':>7}")
    for r in rows:
        erased = c.erased_label(r, "p")
        print(f"{r['start']:16} {r['contender']:28} {erased:>6} {r['device_s']:9.3f} {r['ratio_to_limit']:7.3f} "
              f"{r['ratio_to_seed']:6.3f} {r['wall_s']:7.2f}")
    ours = next(r for r in rows if r["start"] == "erased" and r["contender"] == "scons flash")
    goals = {"full image onto an erased chip (scons flash) within 5 % of the chip's limit": ours["ratio_to_limit"] <= 1.05}
    for goal, met in goals.items():
        print(f"goal: {goal}: {verdict(met)}")
    results = {"frequency_hz": c.FREQUENCY, "chip_limit_s": round(limit, 4), "seed_s": SEED_OPENOCD_S,
               "rows": rows, "goals": goals}
    write_results("full", results)
    return results


if __name__ == "__main__":
    main()
