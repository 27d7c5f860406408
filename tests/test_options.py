"""Options as a newcomer meets them, through the real scons: ``scons -h`` (each option once,
effective defaults, the targets the tool added), a project's own ``AddOption`` of the same
name (before or after the tool), unknown ``PYOCD_*`` variables, ``--frequency`` units,
errors located at the SConstruct line, ``--debug=explain`` naming what changed."""

import re
import textwrap

import pytest

from scons_project import PAGE, Project, SITE_TOOLS, aliases_project
from scons_pyocd import options

SIZE = 4 * PAGE
TOOL = f"tools=['default', 'pyocd_tool'], toolpath=[{str(SITE_TOOLS)!r}]"


@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-a", SIZE, body=None)


def write(project, text: str) -> None:
    (project.dir / "SConstruct").write_text(textwrap.dedent(text))


# -- scons -h ---------------------------------------------------------------------------------

def option_lines(text: str):
    """The option header lines of the tool's block: '  --probe=ID, --pyocd-probe=ID  (PYOCD_PROBE)'."""
    return re.findall(r"^  (--\S.*?)  \((\w+)\)$", text, re.M)


def test_help_lists_each_option_once_with_effective_defaults_and_the_targets(project):
    project.sconstruct("env.FlashAliases('{image}', erase='erase-app')\n", PYOCD_ERASE="chip")
    text = project.run("-h").stdout
    assert "Local Options:" not in text             # the tool's options are not listed twice
    headers = option_lines(text)
    flagged = [o for o in options.OPTIONS if o.flag]
    assert sorted(name for _, name in headers) == sorted(o.name for o in flagged)
    for option in flagged:
        assert len(re.findall(rf"(?<![\w-]){re.escape(option.flag)}\b", text)) == 1, option.flag
    for option in options.OPTIONS:
        assert text.count(f"({option.name})") + text.count(f"  {option.name}\n") == 1, option.name
    assert "(empty)" not in text
    defaults = dict(re.findall(r"\((\w+)\)\n(?:      .*\n)*?      default: ([^;\n]*)", text))
    assert defaults["PYOCD_PROBE"] == "sim-a"                      # what this SConstruct set
    assert defaults["PYOCD_FREQUENCY"] == "4 MHz"
    assert defaults["PYOCD_ERASE"] == "chip"
    assert defaults["PYOCD_RESET"] == "run"                        # the tool's own default
    assert defaults["PYOCD_BASE_ADDRESS"] == "the start of the target's flash"
    targets = dict(re.findall(r"^  (\S+) +(.+)$", text.split("Targets:\n")[1].split("\n\n")[0], re.M))
    assert targets["flash"] == "flash fw.hex onto stm32f100rb via sim-a unless the board holds it"
    assert targets["erase"] == "mass erase stm32f100rb via sim-a"
    assert targets["erase-app"] == "erase the pages of fw.hex on stm32f100rb via sim-a"
    assert targets["verify"] == "compare fw.hex with the chip on stm32f100rb via sim-a"
    assert "probes" in targets


def test_help_keeps_the_projects_own_help_and_options(project):
    write(project, f"""\
        Help('My project: scons app\\n')
        AddOption('--board-rev', dest='rev', help='the board revision')
        env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb')
        env.FlashAliases('fw.hex')
        Help('More of my help\\n')
        """)
    text = project.run("-h").stdout
    assert text.index("My project: scons app") < text.index("Flashing with scons-pyocd") \
        < text.index("More of my help")
    write(project, f"""\
        env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb')
        AddOption('--board-rev', dest='rev', help='the board revision')
        env.FlashAliases('fw.hex')
        """)
    text = project.run("-h").stdout
    assert re.search(r"Local Options:\n +--board-rev=REV +the board revision\n", text), text
    assert "--probe=ID" not in text.split("Flashing with scons-pyocd")[0]


# -- a project's own option of the same name --------------------------------------------------

BEFORE = f"""\
    AddOption('--target', dest='build_target', default='app', help='what this project builds')
    AddOption('--probe', dest='probe_name', help='my probe nickname')
    env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb')
    env.FlashAliases('fw.hex')
    print('project', GetOption('build_target'), GetOption('probe_name'))
    """
AFTER = f"""\
    env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb')
    AddOption('--target', dest='build_target', default='app', help='what this project builds')
    AddOption('--probe', dest='probe_name', help='my probe nickname')
    env.FlashAliases('fw.hex')
    print('project', GetOption('build_target'), GetOption('probe_name'))
    """


@pytest.mark.parametrize("sconstruct", [BEFORE, AFTER], ids=["declared-before-the-tool", "declared-after-the-tool"])
def test_the_projects_option_wins_and_the_tools_stays_reachable(project, sconstruct, tmp_path):
    write(project, sconstruct)
    Project(tmp_path / "b", "sim-b")                    # a second board, to steer to
    result = project.run("flash", "--target=bootloader", "--probe", "lab-1", "--pyocd-probe=sim-b")
    assert "project bootloader lab-1" in result.stdout     # the project's options got their values
    assert "flash stm32f100rb via sim-b:" in result.stdout  # the tool's, under --pyocd-probe
    assert Project(tmp_path / "b", "sim-b").board.read_flash(length=SIZE) == project.data
    assert project.board.counters()["connects"] == 0
    result = project.run("flash", "--pyocd-target=STM32F100RB", "--pyocd-probe=sim-a")
    assert "project app None" in result.stdout
    assert "flash STM32F100RB via sim-a:" in result.stdout

    text = project.run("-h").stdout
    local = text.split("Flashing with scons-pyocd")[0]
    assert "--target=BUILD_TARGET" in local and "what this project builds" in local
    assert "--probe=PROBE_NAME" in local and "my probe nickname" in local
    tool = text.split("Flashing with scons-pyocd")[1]
    assert "  --pyocd-target=NAME  (PYOCD_TARGET)" in tool
    assert "--target is this project's own option; the tool's is --pyocd-target" in " ".join(tool.split())
    assert "  --pyocd-probe=ID  (PYOCD_PROBE)" in tool
    assert "  --frequency=HZ, --pyocd-frequency=HZ  (PYOCD_FREQUENCY)" in tool
    assert "--target=NAME" not in tool and "--probe=ID" not in tool


def test_without_a_clash_both_spellings_reach_the_tool(project):
    project.sconstruct("env.FlashAliases('{image}')\nprint('probe option', GetOption('pyocd_probe'))\n")
    result = project.run("flash", "--probe=sim-a")
    assert "probe option sim-a" in result.stdout and "via sim-a" in result.stdout
    result = project.run("flash", "--pyocd-force-flash", "--pyocd-probe", "sim-a", "--progress=none")
    assert "flash stm32f100rb via sim-a:" in result.stdout and result.stderr == ""


# -- warnings and errors, at the SConstruct's line ---------------------------------------------

def test_an_unknown_variable_is_a_warning_naming_the_closest(project):
    write(project, f"""\
        env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb',
                          PYOCD_PRBOE='sim-b', PYOCD_XYZZY=1)

        env.FlashAliases('fw.hex')
        """)
    result = project.run("flash")
    sconstruct = project.dir / "SConstruct"
    assert (f"scons: warning: PYOCD_PRBOE is not a variable of scons-pyocd and is ignored; did you mean "
            f"PYOCD_PROBE?\nFile \"{sconstruct}\", line 4, in <module>") in result.stderr
    assert ("scons: warning: PYOCD_XYZZY is not a variable of scons-pyocd and is ignored; scons -h lists "
            "the tool's variables.") in result.stderr
    assert result.stderr.count("PYOCD_PRBOE") == 1          # once, though several calls read it
    project.sconstruct("env.Flash('{image}', PYOCD_FORCE_FLSH=True)\n")
    assert "PYOCD_FORCE_FLSH is not a variable of scons-pyocd and is ignored; did you mean PYOCD_FORCE?" \
        in project.run(".").stderr


@pytest.mark.parametrize("given,hz", [("4MHz", 4_000_000), ("4000kHz", 4_000_000), ("4000000", 4_000_000),
                                      ("480kHz", 480_000)])
def test_frequency_units(project, given, hz):
    project.sconstruct("env.FlashAliases('{image}')\n")
    project.run("flash", f"--frequency={given}")
    assert project.record_entry()["options"]["PYOCD_FREQUENCY"] == hz


def test_a_bare_frequency_below_100khz_is_refused_suggesting_the_unit(project):
    project.sconstruct("env.FlashAliases('{image}')\n")
    result = project.run("flash", "--frequency=4000", check=False)
    assert ("scons: *** --frequency='4000' has no unit and would be 4000 Hz, far below any SWD clock one "
            "means (OpenOCD's 'adapter speed 4000' is in kHz): write '4000kHz' or '4MHz'") in result.stderr
    assert project.board.counters()["connects"] == 0
    project.sconstruct("env.FlashAliases('{image}')\n", PYOCD_FREQUENCY=4000)
    result = project.run("flash", check=False)
    assert "PYOCD_FREQUENCY=4000 has no unit" in result.stderr


@pytest.mark.parametrize("erase,body,line", [
    ("everything", "env.FlashAliases('fw.hex')\n", 3),
    ("everything", "x = 1\nenv.Flash('fw.hex')\n", 4),
    ("chip", "env.Erase(PYOCD_ERASE_RANGES='0x08000000..0x08000800')\n", 3),
    ("chip", "env.FlashAliases(['fw.hex', 'fw.hex'])\n", 3),
    ("chip", "env.HexFromBin('fw.bin', PYOCD_FILL=300)\n", 3),
], ids=["FlashAliases", "Flash", "Erase", "two-images", "HexFromBin"])
def test_errors_name_the_sconstruct_line(project, erase, body, line):
    write(project, f"env = Environment({TOOL}, PYOCD_PROBE='sim-a', PYOCD_TARGET='stm32f100rb',\n"
                   f"                  PYOCD_ERASE={erase!r})\n" + body)
    result = project.run("flash", check=False)
    assert result.returncode == 2
    assert re.search(rf"^scons: \*\*\* .+\nFile \"{re.escape(str(project.dir / 'SConstruct'))}\", "
                     rf"line {line}, in <module>$", result.stderr, re.M), result.stderr
    assert "builders.py" not in result.stderr and "Traceback" not in result.stderr


# -- --debug=explain and scons -n name what changed -------------------------------------------

@pytest.mark.parametrize("args,variables,reason", [
    (["--frequency=1MHz"], {}, "PYOCD_FREQUENCY changed: 4 MHz -> 1 MHz"),
    (["--erase-mode=sector"], {}, "PYOCD_ERASE changed: auto -> sector"),
    (["--connect=under-reset"], {}, "PYOCD_CONNECT changed: halt -> under-reset"),
    (["--reset=halt"], {}, "PYOCD_RESET changed: run -> halt"),
    (["--verify=read"], {}, "PYOCD_VERIFY changed: crc -> read"),
    (["--base-address=0x08000000"], {}, "PYOCD_BASE_ADDRESS changed: (empty) -> 0x08000000"),
    (["--target=STM32F100RB"], {}, "PYOCD_TARGET changed: stm32f100rb -> STM32F100RB"),
    ([], {"PYOCD_OPTIONS": {"flash.timeout.program": 5.0}},
     "PYOCD_OPTIONS changed: (empty) -> {'flash.timeout.program': 5.0}"),
    (["--probe=sim-b"], {}, "no record of board sim-b"),
    (["--frequency=2MHz", "--reset=halt"], {},
     "PYOCD_FREQUENCY changed: 4 MHz -> 2 MHz; PYOCD_RESET changed: run -> halt"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_explain_and_dry_run_name_the_option_that_changed(project, tmp_path, args, variables, reason):
    Project(tmp_path / "b", "sim-b")
    project.sconstruct("env.FlashAliases('{image}')\n")
    project.run("flash")
    assert set(options.FLASH_VARLIST) == {"PYOCD_TARGET", "PYOCD_PROBE", "PYOCD_FREQUENCY", "PYOCD_BASE_ADDRESS",
                                          "PYOCD_ERASE", "PYOCD_CONNECT", "PYOCD_RESET", "PYOCD_VERIFY",
                                          "PYOCD_OPTIONS"}       # every one is in this table
    project.sconstruct("env.FlashAliases('{image}')\n", **variables)
    dry = project.run("-n", "flash", *args)
    assert reason in dry.stdout, dry.stdout
    result = project.run("--debug=explain", "--progress=none", "flash", *args)
    board = "sim-b" if "--probe=sim-b" in args else "sim-a"
    assert f"scons: flashing `fw.hex.{board}.flashed' because {reason}\n" in result.stdout, result.stdout
    again = project.run("--debug=explain", "flash", *args)
    assert (f"scons: not flashing `fw.hex.{board}.flashed': the board record says the board holds this "
            "image, flashed with these options") in again.stdout
    assert again.stdout.strip().splitlines()[-1].startswith("flash is up to date (image fw.hex ")
