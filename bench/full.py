"""Scenario 4 (issue 6), with the goals of issue 14: a whole image onto a chip that does not hold
it (``--image-bytes`` for another size; the limits follow).

Cases, the chip's state set behind every tool's back (no board record):

- the 78,128-byte image onto an erased chip (factory-fresh);
- onto a chip holding another image of the same size (the rest of the flash erased);
- onto a chip holding a 128 KiB image: every page holds other data, so nothing outside the
  image is blank and no mass erase may be used (figures only; not with ``--quick``);
- a 128 KiB image (the whole flash) onto a chip holding another one (not with ``--quick``).

Contenders, each in its own process at the same SWD frequency: ``scons flash`` (the tool's
defaults: ``PYOCD_ERASE=auto``, verify by CRC, reset and run), ``scons flash --verify=none`` (to
show what the verify costs), ``pyocd flash`` (pyOCD's command-line defaults) and the founding
method through pyOCD (mass erase + every page, no smart-flash analysis).

The chip's limit (``../shared/REFERENCE.md``): ceil(n / 2) half-words x 52.5 us + one 20 ms mass
erase: 2.071 s for 78,128 bytes, 3.461 s for 128 KiB. The seed's OpenOCD run took 2.361 s.

Goals (issue 14): ``scons flash`` of the 78,128-byte image onto an erased chip and onto one
holding another image <= 1.03x the chip's limit; the 128 KiB whole-flash image <= 1.05x. The
erased-chip case also gets its per-step breakdown (:mod:`.breakdown`).
"""

import tempfile
from pathlib import Path

from . import _contenders as c
from .breakdown import breakdown, table
from ._common import HALFWORD_S, chip_limit, flash_image, private_state, synthetic_image, verdict, write_results

BOARD = "sim-bench"
SEED_OPENOCD_S = 2.361
FULL = 128 * 1024


def main(quick: bool = False) -> dict:
    root = private_state()
    scratch = Path(tempfile.mkdtemp(prefix="full-", dir=root))
    data = flash_image()
    whole = synthetic_image(FULL, seed=12)
    rounds = 1 if quick else 2
    # (label, what the chip holds, the image)
    starts = [("erased", None, data), ("another image", synthetic_image(len(data), seed=7), data)]
    if not quick:
        starts += [("a 128 KiB image", synthetic_image(FULL, seed=8), data),
                   ("128 KiB over 128 KiB", synthetic_image(FULL, seed=13), whole)]
    trees = {}

    def contenders(image_path: Path, image: bytes):
        def scons(*args):
            def run():
                key = (args, len(image))
                if key not in trees:   # a fresh tree: no board record for this image
                    trees[key] = c.Tree(scratch / f"tree-{len(trees)}", image, [BOARD])
                return trees[key].scons("flash", "--force-flash", *args)
            return run
        return {
            "scons flash": scons(),
            "scons flash --verify=none": scons("--verify=none"),
            "pyocd flash": lambda: c.pyocd_cli(BOARD, image_path),
            "founding (mass erase + all)": lambda: c.founding(BOARD, image_path),
        }

    rows = []
    for start, other, image in starts:
        path = scratch / f"fw-{len(image)}.bin"
        path.write_bytes(image)
        limit = chip_limit(len(image))
        for name, run_it in contenders(path, image).items():
            walls = []
            for _ in range(rounds):
                c.set_board(BOARD, other)
                run = run_it()
                if not c.holds(BOARD, image):
                    raise RuntimeError(f"{name} from {start}: the board does not hold the image:\n"
                                       f"{run.stdout}{run.stderr}")
                walls.append(run.wall)
            d = run.device
            rows.append({"start": start, "contender": name, "bytes": len(image), "chip_limit_s": round(limit, 5),
                         "device_s": round(d["device_time_s"], 5),
                         "ratio_to_limit": round(d["device_time_s"] / limit, 4),
                         "ratio_to_seed": round(d["device_time_s"] / SEED_OPENOCD_S, 4),
                         "pages_erased": d["pages_erased"], "mass_erases": d["mass_erases"],
                         "halfwords_programmed": d["halfwords_programmed"], "dp_bytes_read": d["dp_bytes_read"],
                         "transfers": (d["dp_bytes_read"] + d["dp_bytes_written"]) // 4,
                         "wall_s": round(c.median(walls), 3), "wall_runs_s": [round(w, 3) for w in walls],
                         "summary": run.stdout.strip().splitlines()[-1] if name.startswith("scons") else ""})
    c.set_board(BOARD)
    path = scratch / f"fw-{len(data)}.bin"
    found = breakdown(BOARD, path, c.FREQUENCY)
    if not c.holds(BOARD, data):
        raise RuntimeError("the breakdown run did not flash the image")

    print(f"Simulated STM32VLDiscovery, SWD {c.FREQUENCY / 1e6:g} MHz; chip limit {chip_limit(len(data)):.3f} s "
          f"({len(data):,} B), {chip_limit(FULL):.3f} s (128 KiB); seed OpenOCD {SEED_OPENOCD_S} s; "
          f"wall: median of {rounds}")
    print(f"{'chip held':22} {'contender':28} {'erased':>6} {'device s':>9} {'/limit':>7} {'/seed':>6} "
          f"{'wall s':>7} {'transfers':>9}")
    for r in rows:
        erased = c.erased_label(r, "p")
        print(f"{r['start']:22} {r['contender']:28} {erased:>6} {r['device_s']:9.3f} {r['ratio_to_limit']:7.3f} "
              f"{r['ratio_to_seed']:6.3f} {r['wall_s']:7.2f} {r['transfers']:9d}")
    table(f"{len(data):,} B onto an erased chip", found,
          {"chip's limit": chip_limit(len(data)), "of which programming": (len(data) + 1) // 2 * HALFWORD_S})

    def ours(start):
        return next(r for r in rows if r["start"] == start and r["contender"] == "scons flash")

    goals = {
        "full image onto an erased chip: <= 1.03x the chip's limit": ours("erased")["ratio_to_limit"] <= 1.03,
        "full image onto a chip holding another image: <= 1.03x the chip's limit":
            ours("another image")["ratio_to_limit"] <= 1.03,
    }
    if not quick:
        goals["128 KiB whole-flash image: <= 1.05x (mass erase + 65,536 half-words)"] = \
            ours("128 KiB over 128 KiB")["ratio_to_limit"] <= 1.05
    for goal, met in goals.items():
        print(f"goal: {goal}: {verdict(met)}")
    results = {"frequency_hz": c.FREQUENCY, "chip_limit_s": round(chip_limit(len(data)), 5),
               "chip_limit_128k_s": round(chip_limit(FULL), 5), "seed_s": SEED_OPENOCD_S,
               "rows": rows, "breakdown_erased": found, "goals": goals}
    write_results("full", results)
    return results


if __name__ == "__main__":
    main()
