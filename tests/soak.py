"""The soak: many cycles of small random image changes flashed with the real ``scons`` onto
one simulated board, with faults injected now and then; every cycle is checked.

``run_soak(workdir, cycles, seed)`` is plain Python (no pytest), for ``tests/test_soak.py``
(short in a developer's run, long under ``CI=true`` or ``SOAK_LONG=1``) and for a
benchmark. It needs ``SCONS_PYOCD_STATE_DIR`` / ``SCONS_PYOCD_SIM_DIR`` pointing at private
directories (the tests' conftest does that) and ``PYTHONPATH`` reaching ``site_scons``.

Checked after each cycle:

- a successful ``scons flash`` leaves the chip holding exactly the image, the data outside
  it untouched, and a valid record of that image;
- "flash is up to date" only when the chip already holds the image and the last flash of
  it succeeded (a *false up to date* is any other);
- a failed one (fault) leaves no valid record of an image the chip does not hold;
- every ``verify_every`` cycles, ``scons verify`` passes.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from scons_project import FAST_FAIL, PAGE, Project, random_image
from scons_pyocd.images import Image
from scons_pyocd.sim.board import FLASH_BASE

FOREIGN = FLASH_BASE + 120 * PAGE
FAULTS = ("disconnect_after", "hang_after", "fault_after", "power_loss_after_halfwords")


@dataclass
class SoakResult:
    cycles: int = 0
    flashes: int = 0                 # successful scons flash runs that programmed or compared
    up_to_date: int = 0              # runs that said "flash is up to date"
    faults_injected: int = 0
    faults_fired: int = 0
    failures: int = 0                # runs that failed (a fault fired)
    verifies: int = 0
    mismatches: int = 0              # chip != image after a successful flash (must stay 0)
    false_up_to_date: int = 0        # "up to date" while the chip lacked the image (must stay 0)
    false_records: int = 0           # a valid record of an image the chip lacks (must stay 0)
    problems: List[str] = field(default_factory=list)
    by_fault: Dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.false_up_to_date or self.false_records or self.problems)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """A small random change: a few bytes, a page rewritten, the image grown or shrunk, or nothing."""
    out = bytearray(data)
    kind = rng.choice(["bytes", "bytes", "page", "grow", "shrink", "same"])
    if kind == "bytes":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == "page":
        page = rng.randrange(len(out) // PAGE + 1) * PAGE
        out[page:page + PAGE] = random_image(min(PAGE, max(0, len(out) - page)) or 1, rng.randrange(1 << 30))
    elif kind == "grow" and len(out) < 40 * PAGE:
        out += random_image(rng.randint(1, 3 * PAGE), rng.randrange(1 << 30))
    elif kind == "shrink" and len(out) > 2 * PAGE:
        del out[len(out) - rng.randint(1, PAGE):]
    return bytes(out)


def run_soak(workdir: Path, cycles: int, seed: int = 2024, fault_rate: float = 0.15,
             verify_every: int = 10, board: str = "sim-soak") -> SoakResult:
    rng = random.Random(seed)
    p = Project(Path(workdir), board)
    p.sconstruct("env.FlashAliases('{image}')\n", PYOCD_OPTIONS=FAST_FAIL)
    p.board.write_flash(FOREIGN, b"soak: not ours")
    foreign = p.board.read_flash(FLASH_BASE + 80 * PAGE)       # everything above any image
    data = random_image(12 * PAGE + 37, seed)
    flashed_ok = flashed_data = None     # the image last flashed successfully, while its record is valid
    result = SoakResult()
    for cycle in range(cycles):
        result.cycles += 1
        data = _mutate(rng, data) if cycle else data
        p.image(data)
        image_sha = Image([(FLASH_BASE, data)]).sha256()
        fault = None
        if cycle and rng.random() < fault_rate:
            fault = rng.choice(FAULTS)
            # A small change costs about 500-1,000 debug-port transfers (one algorithm call
            # compares every page, one or two erase and program): points within that.
            point = rng.randint(1, 400 if fault == "power_loss_after_halfwords" else 800)
            p.board.set_fault(fault, point)
            result.faults_injected += 1
        run = p.run("flash", check=None)
        fired = fault is not None and fault not in p.board.faults()
        p.board.clear_faults()
        chip = p.board.read_flash(FLASH_BASE, len(data))
        entry = p.record_entry()
        where = f"cycle {cycle} (seed {seed})"
        if "Traceback" in run.stderr:
            result.problems.append(f"{where}: traceback\n{run.stderr}")
        if run.returncode == 0:
            if run.stdout.startswith("flash is up to date"):
                result.up_to_date += 1
                if flashed_ok != image_sha or chip != data:
                    result.false_up_to_date += 1
                    result.problems.append(f"{where}: 'up to date' but the chip does not hold the image")
            else:
                result.flashes += 1
            if chip != data:
                result.mismatches += 1
                result.problems.append(f"{where}: flash succeeded but the chip differs from the image")
            if not (entry and entry["valid"] and entry["image_sha256"] == image_sha):
                result.problems.append(f"{where}: flash succeeded without a valid record")
            flashed_ok, flashed_data = image_sha, data
        else:
            result.failures += 1
            if not fired:
                result.problems.append(f"{where}: flash failed without a fault:\n{run.stderr}")
            if "The board is not recorded as flashed" not in run.stderr:
                result.problems.append(f"{where}: the error does not say the board is not recorded:\n{run.stderr}")
            if entry and entry["valid"]:
                # Only right when the failure came before any write: the chip still holds
                # the image of the last successful flash, which the entry names.
                held = flashed_data is not None and entry["image_sha256"] == flashed_ok and \
                    p.board.read_flash(FLASH_BASE, len(flashed_data)) == flashed_data
                if not held:
                    result.false_records += 1
                    result.problems.append(f"{where}: a valid record of an image the chip lacks")
            else:
                flashed_ok = flashed_data = None
        if fired:
            result.faults_fired += 1
            result.by_fault[fault] = result.by_fault.get(fault, 0) + 1
        if p.board.read_flash(FLASH_BASE + 80 * PAGE) != foreign:
            result.problems.append(f"{where}: data outside the image changed")
            foreign = p.board.read_flash(FLASH_BASE + 80 * PAGE)
        if run.returncode == 0 and (cycle + 1) % verify_every == 0:
            verify = p.run("verify", check=None)
            result.verifies += 1
            if verify.returncode != 0:
                result.mismatches += 1
                result.problems.append(f"{where}: scons verify failed:\n{verify.stderr}")
    # The end: the last image must go on (or already be there) and verify.
    final = p.run("flash", check=None)
    if final.returncode != 0 or p.board.read_flash(FLASH_BASE, len(data)) != data:
        result.mismatches += 1
        result.problems.append(f"final flash: {final.stderr}")
    if p.run("verify", check=None).returncode != 0:
        result.mismatches += 1
        result.problems.append("final verify failed")
    result.verifies += 1
    return result
