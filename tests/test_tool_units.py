"""The tool's pure parts: the options table and its parsers, the docs generated from it,
board records and probe locks, erase ranges, the verify helpers."""

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scons_pyocd import options, records
from scons_pyocd.errors import FlashError
from scons_pyocd.images import Image
from scons_pyocd.session import FlashResult, _first_difference, _subtract

ROOT = Path(__file__).resolve().parent.parent


# -- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,value,expected", [
    ("PYOCD_FREQUENCY", "", None),
    ("PYOCD_FREQUENCY", 4000000, 4_000_000),
    ("PYOCD_FREQUENCY", "4M", 4_000_000),
    ("PYOCD_FREQUENCY", "4MHz", 4_000_000),
    ("PYOCD_FREQUENCY", "400kHz", 400_000),
    ("PYOCD_FREQUENCY", "1.8MHz", 1_800_000),
    ("PYOCD_BASE_ADDRESS", "", None),
    ("PYOCD_BASE_ADDRESS", "0x08000000", 0x08000000),
    ("PYOCD_BASE_ADDRESS", 0x08000000, 0x08000000),
    ("PYOCD_ERASE", "Chip", "chip"),
    ("PYOCD_CONNECT", "under-reset", "under-reset"),
    ("PYOCD_RESET", "none", "none"),
    ("PYOCD_VERIFY", True, "crc"),
    ("PYOCD_VERIFY", False, "none"),
    ("PYOCD_VERIFY", "no", "none"),
    ("PYOCD_VERIFY", "read", "read"),
    ("PYOCD_FORCE", "yes", True),
    ("PYOCD_FORCE", 0, False),
    ("PYOCD_FILL", "0x00", 0),
    ("PYOCD_OPTIONS", None, {}),
    ("PYOCD_PROBE", "  sim-a ", "sim-a"),
])
def test_option_values_are_checked_and_made_canonical(name, value, expected):
    assert options.BY_NAME[name].convert(value) == expected


@pytest.mark.parametrize("name,value,message", [
    ("PYOCD_FREQUENCY", "fast", "PYOCD_FREQUENCY='fast' is not a frequency"),
    ("PYOCD_FREQUENCY", 10, "out of range"),
    ("PYOCD_BASE_ADDRESS", "0x1_0000_0000", "not a 32-bit address"),
    ("PYOCD_BASE_ADDRESS", "flash", "not a number"),
    ("PYOCD_ERASE", "all", "PYOCD_ERASE='all' is not one of auto, sector, chip"),
    ("PYOCD_CONNECT", "pre-reset", "is not one of halt, under-reset, attach"),
    ("PYOCD_VERIFY", "maybe", "is not one of crc, read, none"),
    ("PYOCD_FORCE", "perhaps", "is not a yes/no value"),
    ("PYOCD_FILL", 256, "not a byte value"),
    ("PYOCD_OPTIONS", ["frequency"], "must be a dict"),
    ("PYOCD_TARGET", 42, "must be a string"),
])
def test_bad_option_values_raise_a_flash_error_naming_the_variable(name, value, message):
    with pytest.raises(FlashError, match=message.replace("(", r"\(")):
        options.BY_NAME[name].convert(value)


def test_resolve_prefers_command_line_then_environment_then_default():
    env = {"PYOCD_PROBE": "sim-env", "PYOCD_ERASE": "chip"}
    cli = {"pyocd_probe": "sim-cli"}
    values = options.resolve(env.get, cli.get)
    assert values["PYOCD_PROBE"] == "sim-cli"
    assert values["PYOCD_ERASE"] == "chip"
    assert values["PYOCD_RESET"] == "run"
    assert set(values) == set(options.BY_NAME)


def test_the_table_is_consistent():
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    flags = [o.flag for o in options.OPTIONS if o.flag]
    assert len(flags) == len(set(flags))
    for option in options.OPTIONS:
        assert option.convert(option.default) is not None or option.default == ""
        assert option.help.endswith(".") or option.help.endswith(")")
    assert {"PYOCD_TARGET", "PYOCD_PROBE", "PYOCD_ERASE", "PYOCD_OPTIONS"} <= set(options.FLASH_VARLIST)
    assert "PYOCD_FORCE" not in options.FLASH_VARLIST and "FLASHCOMSTR" not in options.FLASH_VARLIST


def test_the_user_guide_reference_is_the_generated_table():
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    begin, end = guide.index(options.DOCS_BEGIN), guide.index(options.DOCS_END) + len(options.DOCS_END)
    assert guide[begin:end] == options.markdown(), \
        "docs/user-guide.md is stale: paste the output of python -m scons_pyocd.options"


# -- records ----------------------------------------------------------------------------

def test_token_is_stable_after_a_claim_and_changes_on_any_invalidation():
    owner, other = "/a/fw.hex.sim-a.flashed", "/b/fw.hex.sim-a.flashed"
    first = records.token("sim-a", owner)
    record = records.BoardRecord("sim-a")
    record.invalidate([(0, 1024)], "flash of fw.hex started")
    record.claim(owner, first, [(0, 1024)], image_sha256="ab" * 32)
    assert records.token("sim-a", owner) == first               # our own flash: up to date
    records.BoardRecord("sim-a").invalidate([(4096, 5120)], "elsewhere")
    assert records.token("sim-a", owner) == first               # did not touch our sectors
    record = records.BoardRecord("sim-a")
    record.invalidate([(0, 2048)], f"flash of fw.hex from /b")
    record.claim(other, records.token("sim-a", other), [(0, 2048)])
    changed = records.token("sim-a", owner)
    assert changed != first and "flash of fw.hex from /b" in changed
    records.BoardRecord("sim-a").invalidate(None, "mass erase")    # unique per event
    assert records.token("sim-a", owner) != changed


def test_records_are_private_atomic_and_survive_garbage(isolated_state):
    record = records.BoardRecord("sim:weird/id")
    record.claim("/x", "t", [(0, 1)])
    assert record.path.name.startswith("sim_weird_id-")
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.path.parent.stat().st_mode) == 0o700
    assert not [p for p in record.path.parent.iterdir() if p.name.endswith(".tmp")]
    record.path.write_text("{not json")
    assert records.BoardRecord("sim:weird/id").entry("/x") is None


def test_entries_are_trimmed_oldest_invalid_first():
    record = records.BoardRecord("sim-trim")
    for i in range(records.MAX_ENTRIES + 5):
        record.claim(f"/owner{i}", "t", [(i * 1024, i * 1024 + 1024)])
    record.invalidate([(0, 1024)], "overwritten")
    record.claim("/late", "t", [(999 * 1024, 1000 * 1024)])
    owners = [e["owner"] for e in records.BoardRecord("sim-trim").entries]
    assert len(owners) == records.MAX_ENTRIES and "/late" in owners and "/owner0" not in owners


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_board_keys_are_file_names_and_distinct(a, b):
    key = records.board_key(a)
    assert "/" not in key and "\0" not in key and not key.startswith(".") and len(key) <= 73
    if a != b:
        assert records.board_key(b) != key


def test_the_probe_lock_says_who_holds_it():
    script = textwrap.dedent("""
        import sys, time
        from scons_pyocd import records
        with records.probe_lock("sim-lock"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ))
    assert holder.stdout.readline().strip() == "locked"
    waited = []
    import threading
    done = threading.Event()

    def take():
        with records.probe_lock("sim-lock", on_wait=waited.append):
            done.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert not done.wait(0.5)
    assert waited == [f"waiting for probe sim-lock held by pid {holder.pid}"]
    holder.communicate("\n", timeout=10)
    assert done.wait(10)
    thread.join()


def test_a_killed_holder_releases_the_lock():
    holder = subprocess.Popen([sys.executable, "-c", "from scons_pyocd import records\n"
                               "with records.probe_lock('sim-dead'):\n print('locked', flush=True)\n"
                               " import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ))
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    with records.probe_lock("sim-dead", on_wait=pytest.fail):
        pass


def test_resolved_probe_ids_are_remembered():
    assert records.resolved_probe("") == ""
    records.remember_resolved_probe("", "sim-only")
    records.remember_resolved_probe("0669FF", "0669FF495150")
    assert records.resolved_probe("") == "sim-only"
    assert records.resolved_probe("0669FF") == "0669FF495150"
    assert records.resolved_probe("sim-x") == "sim-x"


# -- erase ranges and verify helpers -------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    (None, None),
    ("0x08000000+0x800", [(0x08000000, 0x08000800)]),
    ("0x08000400-0x08000800", [(0x08000400, 0x08000800)]),
    ((0x08000000, 0x08000400), [(0x08000000, 0x08000400)]),
    (["0x08000000+1024", (0x08001000, 0x08001400)], [(0x08000000, 0x08000400), (0x08001000, 0x08001400)]),
])
def test_erase_ranges(spec, expected):
    from scons_pyocd.builders import parse_ranges
    assert parse_ranges(spec) == expected


@pytest.mark.parametrize("spec", ["0x08000000", "start+0x10", (1,), ("0x0", 4), "0x800-0x400"])
def test_bad_erase_ranges_are_user_errors(spec):
    import SCons.Errors
    from scons_pyocd.builders import parse_ranges
    with pytest.raises(SCons.Errors.UserError, match="erase range"):
        parse_ranges(spec)


def test_subtract_and_first_difference():
    assert _subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert _subtract([(0, 100)], [(0, 100)]) == []
    assert _subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 5), (25, 30)]
    image = Image([(100, b"abcd"), (110, b"xy")])
    chip = bytearray(image.data_at(100, 12))
    chip[5] = 0x00                                  # a gap of the image: not compared
    assert _first_difference(image, 100, bytes(chip), image.data_at(100, 12)) is None
    chip[11] = ord("Y")
    mismatch = _first_difference(image, 100, bytes(chip), image.data_at(100, 12))
    assert (mismatch.address, mismatch.expected, mismatch.found, mismatch.count) == (111, ord("y"), ord("Y"), 1)


def test_summary_line():
    result = FlashResult(target="stm32f100rb", probe="sim-vldiscovery", pages_total=77, pages_programmed=3,
                         bytes_programmed=3072, sectors_erased=3, chip_erase=False, seconds=0.21,
                         verify="crc", ranges=[])
    assert result.summary() == "flash stm32f100rb via sim-vldiscovery: 3 of 77 pages changed, 3 KiB in 0.2 s, verified (crc)"
