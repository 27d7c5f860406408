"""Smoke test of the benchmark entry point: ``python -m bench ... --quick`` runs, prints
its tables and a verdict for every goal, and writes its JSON (not into the checkout)."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def run_bench(tmp_path, *args):
    env = dict(os.environ, TMPDIR=str(tmp_path))   # the scenarios' scratch and board dirs
    return subprocess.run([sys.executable, "-m", "bench", *args, "--results-dir", str(tmp_path / "results")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


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
