"""Simulator benchmark: device time and wall time of full flashes through pyOCD.

Scenarios, each on a fresh simulated board, through pyOCD's public API:
- 78,128 bytes (the founding scenario's image) with a mass erase, as OpenOCD did;
- the same with pyOCD's default sector erase;
- the full 128 KiB with a mass erase.

Goals (issue 2): device time within 10 % of the chip's limit (REFERENCE.md: 39,064
half-words x 52.5 us + one 20 ms mass erase = 2.07 s for 78,128 bytes); the wall
time of the simulation at most 10 s for 128 KiB on a 2-core machine.
"""

import time

from ._common import chip_limit, nuttx_sized_image, private_state, synthetic_image, verdict, write_results

SEED_OPENOCD_S = 2.361  # the founding scenario's measured OpenOCD run


def _quiet(fraction: float) -> None:
    """Progress callback that prints nothing (pyOCD's default draws a bar per flash)."""


def flash_once(board_id: str, data: bytes, chip_erase: str, frequency: int):
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.loader import FlashLoader
    from scons_pyocd.sim.board import BoardState

    board = BoardState.create(board_id, exist_ok=True)   # the benchmark's own board
    board.restore_factory()
    start = time.perf_counter()
    with ConnectHelper.session_with_chosen_probe(unique_id=board_id, target_override="stm32f100rb",
                                                 options={"frequency": frequency}) as session:
        loader = FlashLoader(session, progress=_quiet, chip_erase=chip_erase, smart_flash=True)
        loader.add_data(0x08000000, list(data))
        loader.commit()
    wall = time.perf_counter() - start
    assert board.read_flash(0x08000000, len(data)) == data, "flash content mismatch"
    counters = board.counters()
    return wall, counters


def main(frequency: int = 4_000_000) -> dict:
    private_state()
    from scons_pyocd import sim
    sim.register()
    image_78k = nuttx_sized_image()
    image_128k = synthetic_image(128 * 1024, seed=5)
    rows = []
    for label, data, erase in (("78,128 B, mass erase", image_78k, "chip"),
                               ("78,128 B, sector erase", image_78k, "sector"),
                               ("128 KiB, mass erase", image_128k, "chip")):
        wall, c = flash_once("sim-bench", data, erase, frequency)
        limit = chip_limit(len(data))
        rows.append({
            "scenario": label, "bytes": len(data), "wall_s": round(wall, 3),
            "device_s": round(c["device_time_s"], 4), "chip_limit_s": round(limit, 4),
            "ratio_to_limit": round(c["device_time_s"] / limit, 4),
            "pages_erased": c["pages_erased"], "mass_erases": c["mass_erases"],
            "halfwords_programmed": c["halfwords_programmed"],
        })
    print(f"Simulated STM32VLDiscovery, pyOCD {__import__('pyocd').__version__}, SWD {frequency / 1e6:g} MHz")
    print(f"{'scenario':26} {'wall s':>8} {'device s':>9} {'limit s':>8} {'ratio':>6} {'erased':>7} {'half-words':>10}")
    for r in rows:
        erased = f"{r['pages_erased']}p" if not r["mass_erases"] else "mass"
        print(f"{r['scenario']:26} {r['wall_s']:8.2f} {r['device_s']:9.3f} {r['chip_limit_s']:8.3f} "
              f"{r['ratio_to_limit']:6.3f} {erased:>7} {r['halfwords_programmed']:10d}")
    r78, r128 = rows[0], rows[2]
    goals = {
        "device time within 10 % of the chip limit (78,128 B, mass erase)": r78["ratio_to_limit"] <= 1.10,
        "simulation wall time <= 10 s for 128 KiB": r128["wall_s"] <= 10.0,
    }
    print(f"seed OpenOCD run: {SEED_OPENOCD_S} s -> simulated pyOCD device time is "
          f"{r78['device_s'] / SEED_OPENOCD_S:.2f} x of it")
    for goal, met in goals.items():
        print(f"goal: {goal}: {verdict(met)}")
    results = {"frequency_hz": frequency, "rows": rows, "goals": goals}
    write_results("sim_flash", results)
    return results


if __name__ == "__main__":
    main()
