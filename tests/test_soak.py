"""The soak (see ``tests/soak.py``): random small image changes flashed cycle after cycle with
faults injected now and then; zero mismatches, zero false "up to date", zero false records.

The default suite runs a short soak (``SOAK_CYCLES``, default 25 cycles). The long one
(200 cycles) is marked ``slow`` and runs when asked: ``pytest -m slow tests/test_soak.py``
or ``SOAK_LONG=1``.
"""

import os

import pytest

from soak import run_soak

SHORT = int(os.environ.get("SOAK_CYCLES", "25"))
LONG = 200


def check(result):
    assert result.ok, "\n".join(result.problems)
    assert (result.mismatches, result.false_up_to_date, result.false_records) == (0, 0, 0)
    # Every failure had a fault (result.ok). A fault that fires in the last transfers of a
    # session (pyOCD's disconnect, after the flash completed and was recorded) fails nothing.
    assert result.faults_fired > 0 and 0 < result.failures <= result.faults_fired
    assert result.flashes > 0 and result.up_to_date > 0     # both paths were exercised


def test_soak_short(tmp_path):
    result = run_soak(tmp_path / "soak", cycles=SHORT, seed=1, fault_rate=0.25)
    check(result)


@pytest.mark.slow
def test_soak_long(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("SOAK_LONG"):
        pytest.skip(f"the {LONG}-cycle soak runs with -m slow (or SOAK_LONG=1)")
    result = run_soak(tmp_path / "soak", cycles=LONG, seed=2, fault_rate=0.15)
    print(result)
    check(result)
