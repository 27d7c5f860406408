"""Progress and the result lines: the views (unit tests with a fake clock), then through the
real scons: lines for every phase in a log (not a terminal), a bar on a terminal (a pty),
one result line per operation naming board, image, range, pages, bytes and times, the
page map."""

import io
import re
from types import SimpleNamespace

import pytest

from scons_project import FLASH_BASE, PAGE, aliases_project, random_image, run_on_a_terminal
from scons_pyocd import progress, report
from scons_pyocd.session import Interrupted

SIZE = 20 * PAGE


# -- the views ----------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def lines_of(stream: io.StringIO):
    return stream.getvalue().splitlines()


def test_lines_at_the_start_then_every_ten_percent():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress(progress.LineView("flash fw.hex", out, clock))
    p.phase("programming", 40)
    for _ in range(40):
        clock.now += 0.01
        p.advance()
    p.done()
    lines = lines_of(out)
    assert lines[0] == "flash fw.hex: programming (40 steps) ..."
    assert [re.sub(r", [\d.]+ s$", "", line) for line in lines[1:]] == [
        f"flash fw.hex: programming {pct}% ({pct * 40 // 100} of 40)" for pct in range(10, 101, 10)]


def test_lines_every_five_seconds_when_a_phase_is_slow_or_has_no_total():
    out, clock = io.StringIO(), Clock()
    p = progress.Progress(progress.LineView("erase", out, clock))
    p.phase("erasing")                       # no total: a mass erase
    for _ in range(12):
        clock.now += 1.0
        p.advance()
    assert lines_of(out) == ["erase: erasing ...", "erase: erasing still going, 5.0 s",
                             "erase: erasing still going, 10.0 s"]
    out, clock = io.StringIO(), Clock()
    p = progress.Progress(progress.LineView("flash x", out, clock))
    p.phase("comparing", 1000)
    for _ in range(30):                      # 3 % in 15 s
        clock.now += 0.5
        p.advance()
    assert lines_of(out)[1:] == ["flash x: comparing 1% (10 of 1000), 5.0 s",
                                 "flash x: comparing 2% (20 of 1000), 10.0 s",
                                 "flash x: comparing 3% (30 of 1000), 15.0 s"]


def test_pyocd_fraction_callbacks_and_regions_make_one_phase():
    out = io.StringIO()
    p = progress.Progress(progress.LineView("flash x", out, Clock()))
    callback = p.phase("programming")
    for fraction in (0.0, 0.5, 1.0):
        callback(fraction)
    assert p.phase("programming") is p       # pyOCD restarts it for the next flash region
    callback(1.0)
    p.phase("verifying")
    assert lines_of(out) == ["flash x: programming ...", "flash x: programming 50%, 0.0 s",
                             "flash x: programming 100%, 0.0 s", "flash x: verifying ..."]


def test_ctrl_c_stops_between_two_steps():
    stop = [False]
    p = progress.Progress(progress.View(), should_stop=lambda: stop[0])
    p.phase("programming", 10)
    p.advance()
    stop[0] = True
    with pytest.raises(Interrupted, match=r"interrupted \(Ctrl-C\) while programming: the operation stopped"):
        p.advance()
    with pytest.raises(Interrupted):
        p.phase("verifying", 3)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_the_view_follows_the_stream_and_the_bar_is_erased_at_the_end():
    assert isinstance(progress.view_for("auto", "x", io.StringIO()), progress.LineView)
    assert isinstance(progress.view_for("auto", "x", FakeTerminal()), progress.BarView)
    assert type(progress.view_for("none", "x", FakeTerminal())) is progress.View
    assert isinstance(progress.view_for("lines", "x", FakeTerminal()), progress.LineView)
    terminal = FakeTerminal()
    p = progress.Progress(progress.view_for("auto", "flash fw.hex", terminal))
    p.phase("programming", 20)
    p.advance(20)
    p.done()
    text = terminal.getvalue()
    assert re.search(r"^\rflash fw\.hex: programming +\d+%\|.*\| \d+/20 \[", text), text
    assert text.rstrip(" ").endswith("\r")     # tqdm(leave=False) clears its line


# -- the lines of a result -----------------------------------------------------------------------

def result(**fields):
    base = dict(target="stm32f100rb", probe="sim-a", pages_total=20, pages_programmed=3, bytes_programmed=3 * PAGE,
                sectors_erased=3, chip_erase=False, seconds=0.25, verify="crc", plan=None,
                page_crcs={FLASH_BASE + i * PAGE: 0 for i in range(20)},
                written={FLASH_BASE + i * PAGE: b"" for i in (1, 2, 7)})
    base.update(fields)
    return SimpleNamespace(**base)


def test_the_flash_line_and_the_page_map():
    r = result()
    assert report.flash_line(r, "fw.hex", [(FLASH_BASE, FLASH_BASE + SIZE - 10)], 1.44) == (
        "flash stm32f100rb via sim-a: fw.hex 0x08000000-0x08004FF5: 3 of 20 pages changed (3 erased, "
        "3 programmed), 3 KiB in 1.4 s (erase and program 0.2 s), verified (crc)")
    assert report.page_map(r, "fw.hex").splitlines()[1:] == ["  0x08000000  .PP....P............"]
    plan = SimpleNamespace(page_sizes={FLASH_BASE + i * PAGE: PAGE for i in range(4)}, mass_erase=(),
                           erase=(FLASH_BASE, FLASH_BASE + 3 * PAGE), unchanged=(FLASH_BASE + 2 * PAGE,),
                           seconds=0.04, program=(SimpleNamespace(address=FLASH_BASE + PAGE, erase=False),
                                                  SimpleNamespace(address=FLASH_BASE + 3 * PAGE, erase=True)))
    r = result(plan=plan, pages_total=4, pages_programmed=2, bytes_programmed=2 * PAGE, sectors_erased=2)
    assert report.flash_line(r, "a.hex", [(FLASH_BASE, FLASH_BASE + 100), (FLASH_BASE + PAGE, FLASH_BASE + 4 * PAGE)],
                             0.5) == ("flash stm32f100rb via sim-a: a.hex 0x08000000-0x08000063, 0x08000400-0x08000FFF: "
                                      "3 of 4 pages changed (2 erased, 2 programmed), 2 KiB in 0.5 s "
                                      "(device est. 0.0 s), verified (crc)")
    assert report.page_map(r, "a.hex").splitlines()[1] == "  0x08000000  ep.P"
    wide = result(page_crcs={FLASH_BASE + i * PAGE: 0 for i in range(70)}, written={}, chip_erase=True)
    assert [line[:14] for line in report.page_map(wide, "w").splitlines()[1:]] == ["  0x08000000  ",
                                                                                  "  0x08010000  "]


# -- through scons -------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-a", SIZE)


def phases(stderr: str, label: str = "flash fw.hex"):
    return [m for m in re.findall(rf"^{re.escape(label)}: ([a-z ]+?) (?:\(\d+ steps\) )?\.\.\.$", stderr, re.M)]


def in_order(found):
    """The phases seen, each once, in the order of progress.PHASES."""
    order = [progress.PHASES.index(p) for p in found]
    return order == sorted(order) and len(set(found)) == len(found)


def test_a_log_gets_a_line_for_every_phase(project):
    first = project.run("flash")                   # a blank chip: compared, then programmed
    other = random_image(SIZE, seed=9)
    project.image(other)
    second = project.run("flash")                  # every page differs, the rest of the chip is blank:
    assert "mass erase" in second.stdout           # checked blank, then one mass erase
    read = project.run("flash", "--verify=read")   # an option changed: flashed again, read back
    verify = project.run("verify")
    erase = project.run("erase")
    runs = {"first": phases(first.stderr), "second": phases(second.stderr), "read": phases(read.stderr),
            "verify": phases(verify.stderr, "verify fw.hex"), "erase": phases(erase.stderr, "erase")}
    assert all(found[0] == "connecting" and in_order(found) for found in runs.values()), runs
    assert runs["first"][:2] == ["connecting", "comparing"] and "programming" in runs["first"]
    assert "blank check" in runs["second"]
    assert "verifying" in runs["read"]
    assert runs["erase"] == ["connecting", "erasing"]
    assert set().union(*runs.values()) == set(progress.PHASES)
    assert re.search(r"^flash fw\.hex: programming 100% \(20 of 20\), [\d.]+ s$", first.stderr, re.M)
    quiet = project.run("flash", "--force-flash", "--progress=none")
    assert quiet.stderr == ""
    assert project.run("-s", "flash", "--force-flash").stderr == ""


def test_one_result_line_per_operation(project, tmp_path):
    flashed = project.run("flash", "--page-map").stdout.splitlines()
    assert re.fullmatch(r"flash stm32f100rb via sim-a: fw\.hex 0x08000000-0x08004FFF: 20 of 20 pages changed "
                        r"\(0 erased, 20 programmed\), 20 KiB in \d+\.\d s \(device est\. \d+\.\d s\), "
                        r"verified \(crc\)", flashed[0]), flashed
    assert flashed[1].startswith("page map of fw.hex (1024-byte pages:")
    assert flashed[2] == "  0x08000000  " + "p" * 20            # blank pages: programmed, not erased
    changed = bytearray(project.data)
    changed[5 * PAGE] ^= 1
    project.image(bytes(changed))
    line = project.run("flash").stdout.strip()
    assert re.fullmatch(r"flash stm32f100rb via sim-a: fw\.hex 0x08000000-0x08004FFF: 1 of 20 pages changed "
                        r"\(1 erased, 1 programmed\), 1 KiB in \d+\.\d s \(device est\. \d+\.\d s\), "
                        r"verified \(crc\)", line), line
    assert re.fullmatch(r"flash is up to date \(image fw\.hex [0-9a-f]{12} at 0x08000000-0x08004FFF, board sim-a, "
                        r"flashed [-0-9: ]+\)", project.run("flash").stdout.strip())
    assert re.fullmatch(r"verify stm32f100rb via sim-a: fw\.hex matches \(crc\): 0x08000000-0x08004FFF in \d+\.\d s",
                        project.run("verify").stdout.strip())
    # Two images on one board: the lines tell them apart.
    project.image(random_image(2 * PAGE, seed=3), "boot.hex", base=FLASH_BASE + 64 * PAGE)
    project.sconstruct("env.FlashAliases('{image}', erase='erase-app')\n"
                       "env.FlashAliases('boot.hex', erase='erase-boot', verify='verify-boot')\n")
    lines = project.run("flash", "--force-flash").stdout.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["fw.hex 0x08000000-0x08004FFF",
                                                              "boot.hex 0x08010000-0x080107FF"] or \
        [line.split(":")[1].strip() for line in lines] == ["boot.hex 0x08010000-0x080107FF",
                                                           "fw.hex 0x08000000-0x08004FFF"]


def test_a_terminal_gets_a_bar_that_goes_away(project):
    stdout, terminal = run_on_a_terminal(project, "flash")
    assert re.search(r"flash fw\.hex: programming +\d+%\|", terminal), terminal
    assert "flash fw.hex: connecting ..." in terminal
    assert not re.search(r"programming \d+%, \d", terminal)     # bars, not log lines
    assert stdout.startswith("flash stm32f100rb via sim-a: fw.hex 0x08000000-0x08004FFF: 20 of 20 pages changed")
