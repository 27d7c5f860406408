"""The tool's pure parts: the options table and its parsers, the docs generated from it,
board records and probe locks, erase ranges, the verify helpers."""

import binascii
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scons_project import HANG
from scons_pyocd import options, records
from scons_pyocd.errors import FlashError
from scons_pyocd.images import Image
from scons_pyocd.ranges import subtract as _subtract
from scons_pyocd.session import FlashResult, _first_difference

ROOT = Path(__file__).resolve().parent.parent


# -- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,value,expected", [
    ("PYOCD_FREQUENCY", "", None),
    ("PYOCD_FREQUENCY", 4000000, 4_000_000),
    ("PYOCD_FREQUENCY", "4M", 4_000_000),
    ("PYOCD_FREQUENCY", "4MHz", 4_000_000),
    ("PYOCD_FREQUENCY", "400kHz", 400_000),
    ("PYOCD_FREQUENCY", "1.8MHz", 1_800_000),
    ("PYOCD_FREQUENCY", "4000kHz", 4_000_000),
    ("PYOCD_FREQUENCY", "4000 KHz", 4_000_000),
    ("PYOCD_FREQUENCY", "4000000", 4_000_000),
    ("PYOCD_FREQUENCY", "100000", 100_000),
    ("PYOCD_FREQUENCY", "50kHz", 50_000),
    ("PYOCD_FREQUENCY", "5000Hz", 5_000),
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
    ("PYOCD_FREQUENCY", "10Hz", "out of range"),
    ("PYOCD_FREQUENCY", "200MHz", "out of range"),
    ("PYOCD_FREQUENCY", 4000, "PYOCD_FREQUENCY=4000 has no unit and would be 4000 Hz"),
    ("PYOCD_FREQUENCY", "4000", "write '4000kHz' or '4MHz'"),
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

PAGE = 1024
OPTS = {"PYOCD_TARGET": "stm32f100rb", "PYOCD_FREQUENCY": 4000000}


def _claim(record, owner, image, crcs=None, **facts):
    """Claim ``image`` for ``owner`` with the page CRCs of a chip holding only that image
    (or ``crcs``), as a verified flash would."""
    pages = {p: binascii.crc32(image.data_at(p, PAGE)) for p in image.pages(PAGE)}
    pages.update(crcs or {})
    record.claim(owner, records.page_claims(image, pages, lambda a: PAGE),
                 file_sha256="f" * 64, image_sha256=image.sha256(), target="stm32f100rb",
                 options=dict(OPTS), **facts)
    return pages


def _up_to_date(owner, options=OPTS, digest="x"):
    record = records.BoardRecord("sim-a")
    return record.up_to_date(owner, "/nonexistent", options, lambda: digest)


def test_up_to_date_needs_a_valid_entry_with_the_same_image_and_options():
    image = Image([(0x08000000, b"\x11" * 2 * PAGE)])
    assert _up_to_date("/a").startswith("no record of board sim-a")
    record = records.BoardRecord("sim-a")
    _claim(record, "/a", image)
    assert _up_to_date("/a", digest=image.sha256()) is None
    assert _up_to_date("/a", digest="other").startswith("the image changed")
    assert _up_to_date("/a", dict(OPTS, PYOCD_FREQUENCY=1000000), image.sha256()) == \
        "PYOCD_FREQUENCY changed: 4 MHz -> 1 MHz"
    assert _up_to_date("/b", digest=image.sha256()).startswith("nothing recorded for this image")


def test_a_write_invalidates_the_entries_of_its_pages_only_and_a_failure_keeps_them_invalid():
    boot = Image([(0x08000000, b"\x01" * PAGE)])
    app = Image([(0x08000800, b"\x02" * PAGE)])
    record = records.BoardRecord("sim-a")
    _claim(record, "/boot", boot)
    _claim(record, "/app", app)
    records.BoardRecord("sim-a").invalidate([(0x08000800, 0x08000C00)], "flash of app started")
    assert _up_to_date("/boot", digest=boot.sha256()) is None
    assert _up_to_date("/app", digest=app.sha256()) == \
        f"record invalidated: flash of app started ({records.BoardRecord('sim-a').entry('/app')['invalidated']['time']})"
    records.BoardRecord("sim-a").invalidate(None, "mass erase")
    assert _up_to_date("/boot", digest=boot.sha256()).startswith("record invalidated: mass erase")


def test_a_neighbour_in_a_shared_page_stays_valid_when_its_bytes_survive_a_write():
    # boot ends at 0x080009FF, app starts at 0x08000A00: page 0x08000800 holds both.
    boot = Image([(0x08000000, b"\xB0" * 0xA00)])
    app = Image([(0x08000A00, b"\xA0" * 0x600)])
    record = records.BoardRecord("sim-a")
    shared = bytes(boot.data_at(0x08000800, 0x200)) + b"\xff" * 0x200
    _claim(record, "/boot", boot, {0x08000800: binascii.crc32(shared)})
    event = record.invalidate([(0x08000800, 0x08000C00)], "flash of app started")
    assert not record.entry("/boot")["valid"]
    after = bytes(boot.data_at(0x08000800, 0x200)) + app.data_at(0x08000A00, 0x200)
    crcs = {0x08000800: binascii.crc32(after), 0x08000C00: binascii.crc32(app.data_at(0x08000C00, PAGE))}
    record.learn(crcs, {0x08000800: after}, "flash of app", event=event,
                 touched=[(0x08000800, 0x08000C00)], skip_owner="/app")
    _claim(record, "/app", app, crcs)
    fresh = records.BoardRecord("sim-a")
    assert fresh.entry("/boot")["valid"] and fresh.entry("/app")["valid"]
    assert fresh.entry("/boot")["pages"]["0x08000800"]["crc"] == binascii.crc32(after)


def test_a_write_that_changes_a_neighbours_bytes_leaves_it_invalid():
    boot = Image([(0x08000000, b"\xB0" * 0xA00)])
    record = records.BoardRecord("sim-a")
    _claim(record, "/boot", boot)
    event = record.invalidate([(0x08000800, 0x08000C00)], "flash of app started")
    after = b"\xA0" * PAGE            # overwrote boot's end
    record.learn({0x08000800: binascii.crc32(after)}, {0x08000800: after}, "flash of app",
                 event=event, touched=[(0x08000800, 0x08000C00)])
    assert not records.BoardRecord("sim-a").entry("/boot")["valid"]


def test_what_a_comparison_learns_invalidates_every_entry_it_contradicts():
    v1 = Image([(0x08000000, b"\x01" * 2 * PAGE)])
    record = records.BoardRecord("sim-a")
    _claim(record, "/tree1", v1)
    v3 = {0x08000000: binascii.crc32(b"\x03" * PAGE), 0x08000400: binascii.crc32(b"\x01" * PAGE)}
    record.learn(v3, {}, "compared with v3.hex")
    entry = records.BoardRecord("sim-a").entry("/tree1")
    assert not entry["valid"] and "page 0x08000000 holds other data (compared with v3.hex)" in \
        entry["invalidated"]["reason"]


def test_another_chip_behind_the_probe_invalidates_everything():
    record = records.BoardRecord("sim-a")
    assert not record.see_chip("aa" * 12, "stm32f100rb")
    _claim(record, "/a", Image([(0x08000000, b"\x01" * PAGE)]))
    assert not records.BoardRecord("sim-a").see_chip("aa" * 12, "stm32f100rb")
    assert records.BoardRecord("sim-a").entry("/a")["valid"]
    assert records.BoardRecord("sim-a").see_chip("bb" * 12, "stm32f100rb")
    entry = records.BoardRecord("sim-a").entry("/a")
    assert not entry["valid"] and "another chip" in entry["invalidated"]["reason"]


def test_records_are_private_atomic_and_survive_garbage(isolated_state, capsys):
    record = records.BoardRecord("sim:weird/id")
    _claim(record, "/x", Image([(0x08000000, b"\x01" * PAGE)]))
    assert record.path.name.startswith("sim_weird_id-")
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.path.parent.stat().st_mode) == 0o700
    assert not [p for p in record.path.parent.iterdir() if p.name.endswith(".tmp")]
    record.path.write_text("{not json")
    assert records.BoardRecord("sim:weird/id").entry("/x") is None
    assert f"board record {record.path} is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("garbage", [
    {"version": 2, "entries": "no"},
    {"version": 2, "chip": 5, "entries": []},
    {"version": 2, "chip": None, "entries": [{"owner": "/x", "valid": "yes"}]},
    {"version": 2, "chip": None, "entries": [{"owner": "/x", "valid": True, "pages": {"zz": {}}}]},
    {"version": 2, "chip": None, "entries": [{"owner": "/x", "valid": True, "file_sha256": 1,
                                              "image_sha256": "a", "target": "t", "options": {}}]},
    {"version": 99, "entries": []},
    [1, 2, 3],
])
def test_a_malformed_record_claims_nothing_and_says_so(garbage, capsys):
    path = records.BoardRecord("sim-bad").path
    path.write_text(json.dumps(garbage))
    record = records.BoardRecord("sim-bad")
    assert record.entry("/x") is None and record.up_to_date("/x", "/none", OPTS, lambda: "d")
    assert str(path) in capsys.readouterr().err
    _claim(record, "/y", Image([(0x08000000, b"\x01" * PAGE)]))     # and it can be replaced
    assert records.BoardRecord("sim-bad").entry("/y")["valid"]


def test_entries_are_trimmed_oldest_invalid_first():
    record = records.BoardRecord("sim-trim")
    for i in range(records.MAX_ENTRIES + 5):
        _claim(record, f"/owner{i}", Image([(0x08000000 + i * PAGE, b"\x01" * PAGE)]))
    record.invalidate([(0x08000000, 0x08000000 + PAGE)], "overwritten")
    _claim(record, "/late", Image([(0x08000000 + 99 * PAGE, b"\x01" * PAGE)]))
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
    holder.communicate("\n", timeout=HANG)
    assert done.wait(HANG)
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
    assert options.parse_ranges("PYOCD_ERASE_RANGES", spec) == expected


@pytest.mark.parametrize("spec", ["0x08000000", "start+0x10", (1,), ("0x0", 4), "0x800-0x400"])
def test_bad_erase_ranges_are_errors_naming_the_variable(spec):
    with pytest.raises(FlashError, match="PYOCD_ERASE_RANGES: "):
        options.parse_ranges("PYOCD_ERASE_RANGES", spec)


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


def test_ctrl_c_is_seen_through_the_installed_scons(tmp_path):
    """interrupt.requested() reads SCons internals: this fails when SCons changes them."""
    (tmp_path / "SConstruct").write_text(textwrap.dedent("""\
        import os, signal
        from scons_pyocd import interrupt
        def act(target, source, env):
            print('before', interrupt.requested())
            os.kill(os.getpid(), signal.SIGINT)
            print('after', interrupt.requested())
        AlwaysBuild(Alias('go', [], act))
        """))
    scons = Path(sys.executable).with_name("scons")
    result = subprocess.run([str(scons), "-Q", "go"], cwd=tmp_path, capture_output=True, text=True, timeout=HANG)
    assert "before False" in result.stdout and "after True" in result.stdout, result.stdout + result.stderr
