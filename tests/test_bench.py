"""Smoke test of the benchmark entry point: ``python -m bench ... --quick`` runs, prints
its tables and a verdict for every goal, and writes its JSON (not into the checkout).

Nothing here depends on how fast the machine is: the figures checked are counts (pages,
half-words, connects) and the presence of every goal's verdict, never a time. The subprocess
bound only catches a hang; on a busy 2-core machine the quick runs take a few minutes."""

import json
import os
import subprocess
import sys

from conftest import ROOT


#: Seconds: a bound that only a hang reaches (the slowest run here takes about 5 minutes when
#: the machine is busy).
HANG = 3600


def run_bench(tmp_path, *args, timeout=HANG):
    env = dict(os.environ, TMPDIR=str(tmp_path))   # the scenarios' scratch and board dirs
    return subprocess.run([sys.executable, "-m", "bench", *args, "--results-dir", str(tmp_path / "results")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_conversions_and_sim_flash_quick(tmp_path):
    out = run_bench(tmp_path, "conversions", "sim_flash", "--quick")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for line in ("goal: conversions >= intelhex's speed (every case): ",
                 "goal: device time within 10 % of the chip limit (78,128 B, mass erase): ",
                 "goal: simulation wall time <= 10 s for 128 KiB: "):
        assert line in text
    assert "=== goals" in text and " of 3 goals met" in text
    assert "[====" not in text + out.stderr, "pyOCD's progress bars should be off"
    for case in ("bin->hex", "hex->bin", "elf->hex"):
        rows = [line for line in text.splitlines() if line.startswith(case + " ")]
        assert len(rows) == 3, case   # 128 KiB and 2 MiB timings, 2 MiB memory
    report = json.loads((tmp_path / "results" / "all.json").read_text())
    assert report["quick"] is True
    assert set(report["scenarios"]) == {"conversions", "sim_flash"}
    assert all("results" in s for s in report["scenarios"].values())
    assert len(report["goals"]) == 3
    rows = report["scenarios"]["conversions"]["results"]["rows"]
    assert {(r["case"], r["bytes"]) for r in rows} == {
        (case, size) for case in ("bin->hex", "hex->bin", "elf->hex") for size in (131072, 2097152)}
    assert (tmp_path / "results" / "conversions.json").exists()
    assert (tmp_path / "results" / "sim_flash.json").exists()


def test_unknown_scenario_is_refused(tmp_path):
    out = run_bench(tmp_path, "no_such_scenario")
    assert out.returncode == 2
    assert "unknown scenario no_such_scenario" in out.stderr
    assert not (tmp_path / "results").exists()


SCONS_FLASH_SCENARIOS = ("noop", "changes", "full", "boards", "memory")


def test_scons_flash_scenarios_quick_on_a_small_image(tmp_path):
    """Every scons flash scenario, --quick, on a 4 KiB image: each runs, prints its table and
    goals, and its figures show the tool doing what it claims (no-op connects nothing; a
    one-byte change erases and programs one page; every board ends up flashed)."""
    out = run_bench(tmp_path, *SCONS_FLASH_SCENARIOS, "--quick", "--image-bytes", "4096")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for line in ("goal: no-op scons flash <= +30 ms or +10 % over plain scons with the same tool list minus the tool: ",
                 "goal: no-op scons flash <= +30 ms or +10 % over plain scons with Environment()'s default tools: ",
                 "goal: no-op scons flash >= 5x faster than pyocd flash of the unchanged image: ",
                 "goal: one byte changed: <= 1.2x (connect + one page erase + program): ",
                 "goal: one byte changed: >= 30x less device time than the founding method: ",
                 "goal: code shift (v1->v3): <= 1.05x the cheaper of mass erase + write and the page floor: ",
                 "goal: full image onto an erased chip: <= 1.03x the chip's limit: ",
                 "goal: full image onto a chip holding another image: <= 1.03x the chip's limit: "):
        assert line in text
    assert " of 8 goals met" in text
    report = json.loads((tmp_path / "results" / "all.json").read_text())
    assert report["image_bytes"] == 4096
    assert set(report["scenarios"]) == set(SCONS_FLASH_SCENARIOS)
    assert all("results" in s for s in report["scenarios"].values()), report
    results = {name: s["results"] for name, s in report["scenarios"].items()}

    noop = {r["contender"]: r for r in results["noop"]["rows"]}
    assert set(noop) == {"plain scons", "plain scons, tools=[]", "scons flash", "pyocd flash", "pyocd load"}
    assert noop["scons flash"]["connects"] == 0 and noop["scons flash"]["device_s"] == 0
    assert noop["pyocd flash"]["connects"] == 1 and noop["pyocd flash"]["device_s"] > 0

    one = {r["contender"]: r for r in results["changes"]["rows"] if r["case"] == "one byte, 4,096 B"}
    assert (one["scons flash"]["pages_erased"], one["scons flash"]["mass_erases"]) == (1, 0)
    assert 0 < one["scons flash"]["halfwords_programmed"] <= 512
    founding = one["founding (mass erase + all)"]
    # Our algorithm skips 0xFFFF half-words on erased pages, for pyOCD's own use too.
    assert founding["mass_erases"] == 1 and 4 * 512 - 16 <= founding["halfwords_programmed"] <= 4 * 512
    assert any(r["case"].startswith("code shift") for r in results["changes"]["rows"])
    steps = results["changes"]["breakdown_one_byte"]["measured"]
    assert {"connect", "compare", "erase", "program + verify"} <= set(steps) and all(v >= 0 for v in steps.values())

    full = {(r["start"], r["contender"]): r for r in results["full"]["rows"]}
    assert set(s for s, _ in full) == {"erased", "another image"}
    assert all(2048 - 16 <= r["halfwords_programmed"] <= 2048 for r in full.values())
    assert full[("erased", "pyocd flash")]["pages_erased"] == 4
    assert (full[("erased", "scons flash")]["pages_erased"], full[("erased", "scons flash")]["mass_erases"]) == (0, 0)
    assert full[("another image", "scons flash")]["mass_erases"] == 1
    assert "program + verify" in results["full"]["breakdown_erased"]["measured"]

    boards = results["boards"]["rows"]
    assert [r["boards"] for r in boards] == [1, 2]
    assert all(len(r["device_s_per_board"]) == r["boards"] and min(r["device_s_per_board"]) > 0 for r in boards)

    memory = {r["run"]: r for r in results["memory"]["rows"]}
    assert memory["scons flash, 128 KiB, every page"]["halfwords_programmed"] == 65536
    assert memory["scons flash, 128 KiB, every page"]["peak_mib"] > memory["plain scons (no-op, no tool)"]["peak_mib"] > 0
    for name in SCONS_FLASH_SCENARIOS:
        assert (tmp_path / "results" / f"{name}.json").exists()


def test_image_bytes_outside_the_flash_is_refused(tmp_path):
    out = run_bench(tmp_path, "noop", "--image-bytes", "200000")
    assert out.returncode == 2
    assert "--image-bytes 200000: give 2 to 131072" in out.stderr


def test_farm_quick_on_a_small_image(tmp_path):
    """The farm scenario, --quick, on a 4 KiB image: in-process and remote rows for N = 1, 2,
    the relay's counts, the latency run and both goal lines."""
    out = run_bench(tmp_path, "farm", "--quick", "--image-bytes", "4096", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "goal: round trips per full 4,096-byte flash <= 1,500: " in text
    assert "goal: SCons-process CPU per remote board <= 0.5 s (every N): " in text
    results = json.loads((tmp_path / "results" / "farm.json").read_text())
    rows = {(r["mode"], r["boards"]): r for r in results["rows"]}
    assert set(rows) == {(mode, n) for mode in ("in-process", "remote") for n in (1, 2)}
    for (mode, n), row in rows.items():
        assert len(row["device_s_per_board"]) == n and min(row["device_s_per_board"]) > 0
        assert row["scons_cpu_s"] > 0
        assert ("requests_per_flash" in row) == (mode == "remote")
    slow = results["with_latency"]
    assert slow["latency_s"] == 0.002 and 0 < slow["round_trips_per_flash"] <= slow["requests_per_flash"]
    # The same flash, so the same requests; the in-process board's device time is the remote one's.
    assert slow["requests_per_flash"] == rows[("remote", 1)]["requests_per_flash"]
    assert rows[("in-process", 1)]["device_s_per_board"] == rows[("remote", 1)]["device_s_per_board"]
