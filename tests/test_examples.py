"""The examples, with the real ``scons`` on the simulated board (``sim-vldiscovery``, the
examples' default probe).

- ``examples/nuttx``: NuttX's own ``make`` (``NUTTX_DIR``) run through ``env.ExternalBuild``,
  with a fake NuttX tree whose Makefile copies ``payload.bin`` to ``nuttx.bin`` (so a test can
  make it rebuild nothing, rebuild identical bytes, or change bytes) and with the real NuttX
  images of ../shared/firmware; and prebuilt images (``NUTTX_IMAGE``).
- ``examples/existing-tree``: a firmware project that gained ``scons flash``; built with
  arm-none-eabi-gcc in a temporary copy.

Each example runs from a temporary copy, so the checkout stays clean.
"""

import difflib
import os
import re
import shutil
from pathlib import Path

import pytest

from scons_project import PAGE, Project, holds, random_image, units
from scons_pyocd import images
from scons_pyocd.sim.board import FLASH_BASE

ROOT = Path(__file__).resolve().parent.parent
NUTTX_EXAMPLE = ROOT / "examples" / "nuttx"
EXISTING_TREE = ROOT / "examples" / "existing-tree"
BOARD = "sim-vldiscovery"
NUTTX_BUILDS = ("stm32vldiscovery-nsh-v1", "stm32vldiscovery-nsh-v2")

CONFIG = """\
CONFIG_ARCH="arm"
CONFIG_ARCH_CHIP="stm32f1"
CONFIG_ARCH_CHIP_STM32F100RB=y
CONFIG_ARCH_BOARD="stm32vldiscovery"
CONFIG_RAW_BINARY=y
"""

#: A stand-in for NuttX's make: nuttx.bin is rebuilt from payload.bin when that is newer,
#: and every run of make is logged.
MAKEFILE = """\
all: nuttx.bin
\t@echo make $(MAKEFLAGS) >> runs.log
nuttx.bin: payload.bin
\tcp payload.bin nuttx.bin
.PHONY: all
"""


class FakeNuttx:
    """A folder that looks like a configured NuttX tree to the example."""

    def __init__(self, directory: Path, payload: bytes, makefile: str = MAKEFILE, config: str = CONFIG):
        self.dir = directory
        directory.mkdir(parents=True)
        (directory / ".config").write_text(config)
        (directory / "Makefile").write_text(makefile)
        self.payload(payload)

    def payload(self, data: bytes) -> None:
        """Write payload.bin, newer than nuttx.bin (made older) so that make copies it."""
        (self.dir / "payload.bin").write_bytes(data)
        if self.bin.exists():
            older = self.bin.stat().st_mtime - 10
            os.utime(self.bin, (older, older))

    def runs(self) -> int:
        log = self.dir / "runs.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    @property
    def bin(self) -> Path:
        return self.dir / "nuttx.bin"


def nuttx_example(tmp_path: Path, in_checkout: bool = False) -> Project:
    """A copy of examples/nuttx: alone (the tool comes from the installed package), or in
    a checkout-like tree whose ../../site_scons is this checkout's (the tool found there)."""
    if in_checkout:
        root = tmp_path / "checkout"
        (root / "examples").mkdir(parents=True)
        (root / "site_scons").symlink_to(ROOT / "site_scons")
        where = root / "examples" / "nuttx"
    else:
        where = tmp_path / "nuttx-example"
    shutil.copytree(NUTTX_EXAMPLE, where)
    return Project(where, BOARD)


@pytest.fixture
def example(tmp_path):
    return nuttx_example(tmp_path)


@pytest.fixture
def tree(tmp_path):
    return FakeNuttx(tmp_path / "nuttx", random_image(12 * PAGE))


def changed_pages(old: bytes, new: bytes) -> list:
    n = max(len(old), len(new))
    old, new = old.ljust(n, b"\xff"), new.ljust(n, b"\xff")
    return [p for p in range(-(-n // PAGE)) if old[p * PAGE:(p + 1) * PAGE] != new[p * PAGE:(p + 1) * PAGE]]


# -- examples/nuttx with NuttX's make ---------------------------------------------------

def test_make_runs_every_time_and_only_changed_bytes_are_flashed(example, tree):
    arg = f"NUTTX_DIR={tree.dir}"
    result, delta = example.counters_after("flash", arg)
    assert tree.runs() == 1 and "cp payload.bin nuttx.bin" in result.stdout
    assert delta["halfwords_programmed"] == 12 * PAGE // 2
    assert holds(example, tree.bin.read_bytes())

    # make rebuilds nothing: it still runs, and no probe is opened.
    result, delta = example.counters_after("flash", arg)
    assert tree.runs() == 2 and "cp payload.bin" not in result.stdout
    assert delta["connects"] == 0
    assert result.stdout.strip().splitlines()[-1].startswith("flash is up to date (image ")

    # make rebuilds nuttx.bin to the same bytes: still nothing to flash.
    tree.payload(tree.bin.read_bytes())
    result, delta = example.counters_after("flash", arg)
    assert tree.runs() == 3 and "cp payload.bin nuttx.bin" in result.stdout
    assert delta["connects"] == 0
    assert "flash is up to date" in result.stdout

    # make rebuilds nuttx.bin with one changed page: that page alone is programmed.
    changed = bytearray(tree.bin.read_bytes())
    changed[5 * PAGE + 17] ^= 0xFF
    tree.payload(bytes(changed))
    result, delta = example.counters_after("flash", arg)
    assert tree.runs() == 4
    assert (delta["pages_erased"], delta["mass_erases"], delta["halfwords_programmed"]) == (1, 0, PAGE // 2)
    assert holds(example, bytes(changed))
    assert "1 of 12 pages changed" in result.stdout


def test_nuttx_dir_from_the_environment_and_make_gets_scons_jobs(example, tree):
    result = example.run("-j3", "flash", env={"NUTTX_DIR": str(tree.dir)})
    assert f"make -j3  (in {tree.dir})" in result.stdout
    assert tree.runs() == 1
    assert holds(example, tree.bin.read_bytes())


def test_the_tool_is_found_in_the_checkout_without_the_package_on_the_path(tmp_path, tree):
    example = nuttx_example(tmp_path, in_checkout=True)
    _, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}")
    assert delta["halfwords_programmed"] == 12 * PAGE // 2
    _, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}")
    assert delta["connects"] == 0


def test_a_failing_make_is_a_build_error_naming_the_command_and_folder(example, tmp_path):
    tree = FakeNuttx(tmp_path / "broken", random_image(PAGE),
                     makefile="all:\n\t@echo 'arm-none-eabi-gcc: error: sched.c: No such file' >&2; exit 3\n")
    result, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}", check=False)
    assert f"`make` failed with exit status 2 in {tree.dir}" in result.stderr
    assert "sched.c: No such file" in result.stderr          # make's own output is shown
    assert delta["connects"] == 0
    assert example.record_entry("nuttx.bin") is None


def test_make_that_writes_no_nuttx_bin_is_an_error(example, tmp_path):
    tree = FakeNuttx(tmp_path / "nobin", random_image(PAGE), makefile="all:\n\t@true\n")
    (tree.dir / "payload.bin").unlink()
    result, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}", check=False)
    assert f"`make` in {tree.dir} succeeded but did not write {tree.bin}" in result.stderr
    assert delta["connects"] == 0


def test_dry_run_does_not_run_make_nor_flash(example, tree):
    example.run("flash", f"NUTTX_DIR={tree.dir}")
    tree.payload(random_image(12 * PAGE, seed=9))
    before = example.board.counters()
    result = example.run("-n", "flash", f"NUTTX_DIR={tree.dir}")
    assert tree.runs() == 1
    assert f"would run make in {tree.dir}" in result.stdout
    assert "unless a real run changes" in result.stdout
    assert example.board.counters() == before


def test_scons_c_leaves_nuttx_outputs_to_nuttx(example, tree):
    example.run("flash", f"NUTTX_DIR={tree.dir}")
    example.run("-c", "flash", f"NUTTX_DIR={tree.dir}")
    assert tree.bin.exists()
    assert not (example.dir / f"nuttx.bin.{BOARD}.flashed").exists()


@pytest.mark.parametrize("config,message", [
    (None, "is not a configured NuttX tree: {tree}/.config is missing. Configure it first: "
           "cd {tree} && ./tools/configure.sh stm32vldiscovery:nsh"),
    (CONFIG.replace("CONFIG_RAW_BINARY=y\n", ""), "CONFIG_RAW_BINARY is not set, so make writes no nuttx.bin"),
    (CONFIG.replace("CONFIG_ARCH_CHIP_STM32F100RB=y", "CONFIG_ARCH_CHIP_STM32F103RB=y")
           .replace('"stm32vldiscovery"', '"nucleo-f103rb"'),
     "this tree is configured for board nucleo-f103rb (chip stm32f1), not the STM32VLDiscovery's STM32F100RB"),
], ids=["no-config", "no-raw-binary", "other-board"])
def test_a_tree_not_configured_for_the_board_is_refused_before_make(example, tmp_path, config, message):
    tree = FakeNuttx(tmp_path / "t", random_image(PAGE), config=config or "")
    if config is None:
        (tree.dir / ".config").unlink()
    result = example.run("flash", f"NUTTX_DIR={tree.dir}", check=False)
    assert message.format(tree=tree.dir) in result.stderr
    assert tree.runs() == 0


def test_without_nuttx_it_says_what_to_set_but_erase_still_works(example):
    result = example.run("flash", check=False)
    assert "no NuttX to flash: set NUTTX_DIR=<NuttX tree>" in result.stderr
    assert "NUTTX_IMAGE=<nuttx, nuttx.bin or nuttx.hex>" in result.stderr
    result = example.run("flash", "NUTTX_DIR=/no/such/nuttx", check=False)
    assert "NUTTX_DIR=/no/such/nuttx: no such directory" in result.stderr
    result = example.run("flash", "NUTTX_DIR=/a", "NUTTX_IMAGE=/b", check=False)
    assert "both NUTTX_DIR=/a and NUTTX_IMAGE=/b are set: give one" in result.stderr
    _, delta = example.counters_after("erase")
    assert delta["mass_erases"] == 1
    assert "NUTTX_DIR" in example.run("-h").stdout


def test_real_nuttx_v1_then_v2_through_make_programs_two_pages(example, tmp_path, shared_firmware):
    v1, v2 = (shared_firmware / name / "nuttx.bin" for name in NUTTX_BUILDS)
    tree = FakeNuttx(tmp_path / "nuttx", v1.read_bytes())
    _, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}")
    assert delta["halfwords_programmed"] == units(v1.read_bytes())      # 39,476 bytes: 39 pages
    assert holds(example, v1.read_bytes())

    tree.payload(v2.read_bytes())
    result, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}")
    assert (delta["pages_erased"], delta["mass_erases"], delta["halfwords_programmed"]) == \
        (2, 0, units(v2.read_bytes(), changed_pages(v1.read_bytes(), v2.read_bytes())))
    assert "2 of 39 pages changed" in result.stdout
    assert holds(example, v2.read_bytes())

    example.run("verify", f"NUTTX_DIR={tree.dir}")
    _, delta = example.counters_after("flash", f"NUTTX_DIR={tree.dir}")
    assert delta["connects"] == 0


# -- examples/nuttx with a prebuilt image -----------------------------------------------

@pytest.mark.parametrize("name", ["nuttx", "nuttx.bin", "nuttx.hex"])
def test_nuttx_image_of_each_format_flashes_v1_then_two_pages_of_v2(example, shared_firmware, name):
    v1, v2 = (shared_firmware / build / name for build in NUTTX_BUILDS)
    expected = (shared_firmware / NUTTX_BUILDS[1] / "nuttx.bin").read_bytes()
    first = (shared_firmware / NUTTX_BUILDS[0] / "nuttx.bin").read_bytes()
    _, delta = example.counters_after("flash", f"NUTTX_IMAGE={v1}")
    assert delta["halfwords_programmed"] == units(first)
    assert holds(example, first)
    result, delta = example.counters_after("flash", f"NUTTX_IMAGE={v2}")
    assert (delta["pages_erased"], delta["halfwords_programmed"]) == \
        (2, units(expected, changed_pages(first, expected)))
    assert holds(example, expected)
    result, delta = example.counters_after("flash", f"NUTTX_IMAGE={v2}")
    assert delta["connects"] == 0 and "flash is up to date" in result.stdout


def test_nuttx_image_bin_goes_to_0x08000000_and_verify_and_erase_work(example, tmp_path):
    data = random_image(3 * PAGE, seed=4)
    image = tmp_path / "nuttx.bin"
    image.write_bytes(data)
    example.run("flash", f"NUTTX_IMAGE={image}")
    assert holds(example, data)
    assert "matches" in example.run("verify", f"NUTTX_IMAGE={image}").stdout
    example.board.write_flash(FLASH_BASE + PAGE + 1, b"\x00")
    result = example.run("verify", f"NUTTX_IMAGE={image}", check=False)
    assert f"at 0x{FLASH_BASE + PAGE + 1:08X}" in result.stderr
    result, delta = example.counters_after("erase", f"NUTTX_IMAGE={image}")
    assert delta["mass_erases"] == 1
    assert example.board.read_flash(FLASH_BASE, 16) == b"\xff" * 16
    result = example.run("flash", "NUTTX_IMAGE=/no/such/nuttx.hex", check=False)
    assert "NUTTX_IMAGE=/no/such/nuttx.hex: no such file" in result.stderr


# -- examples/existing-tree -------------------------------------------------------------

def diff_in_readme() -> str:
    text = (EXISTING_TREE / "README.md").read_text()
    match = re.search(r"```diff\n(.*?)```", text, re.S)
    assert match, "examples/existing-tree/README.md has no ```diff block"
    return match.group(1)


def test_the_readme_diff_is_the_change_to_the_sconstruct():
    before = (EXISTING_TREE / "SConstruct.before").read_text().splitlines(True)
    after = (EXISTING_TREE / "SConstruct").read_text().splitlines(True)
    diff = "".join(difflib.unified_diff(before, after, "SConstruct.before", "SConstruct"))
    assert diff_in_readme() == diff
    added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len([line for line in added if line[1:].strip() and not line[1:].lstrip().startswith("#")]) <= 4


@pytest.fixture
def existing_tree(tmp_path, arm_toolchain):
    copy = tmp_path / "beacon"
    shutil.copytree(EXISTING_TREE, copy, ignore=shutil.ignore_patterns("build", ".sconsign.dblite"))
    return Project(copy, BOARD)


def hex_bytes(project: Project) -> bytes:
    image = images.load_image(project.dir / "build" / "beacon.hex")
    (base, data), = image.segments
    assert base == FLASH_BASE
    return bytes(data)


def test_existing_tree_flashes_then_reprograms_only_the_changed_page(existing_tree):
    project = existing_tree
    result, delta = project.counters_after("flash")
    first = hex_bytes(project)
    pages = -(-len(first) // PAGE)
    assert "arm-none-eabi-gcc" in result.stdout
    assert delta["halfwords_programmed"] == units(first)
    assert holds(project, first)

    result, delta = project.counters_after("flash")
    assert delta["connects"] == 0 and "flash is up to date" in result.stdout

    main = project.dir / "src" / "main.c"
    text = main.read_text()
    assert '#define FIRMWARE_VERSION "1.4.2"' in text
    main.write_text(text.replace('"1.4.2"', '"1.4.3"'))
    result, delta = project.counters_after("flash")
    second = hex_bytes(project)
    differing = {i // PAGE for i in range(len(second)) if i >= len(first) or first[i] != second[i]}
    assert len(differing) == 1 and pages > 1
    assert re.findall(r"-o build/(\w+)\.o -c", result.stdout) == ["main"]
    assert (delta["pages_erased"], delta["mass_erases"], delta["halfwords_programmed"]) == \
        (1, 0, units(second, differing))
    assert f"1 of {pages} pages changed" in result.stdout
    assert holds(project, second)


def test_the_sconstruct_before_builds_but_cannot_flash(existing_tree):
    project = existing_tree
    shutil.copy(project.dir / "SConstruct.before", project.dir / "SConstruct")
    project.run()
    assert (project.dir / "build" / "beacon.hex").exists()
    result = project.run("flash", check=False)
    assert "Do not know how to make File target `flash'" in result.stderr


# -- env.ExternalBuild on its own -------------------------------------------------------

GENERATOR = """\
import sys
name, text = sys.argv[1], sys.argv[2]
open(name, 'w').write(text)
open('runs.log', 'a').write(text + '\\n')
"""


@pytest.fixture
def external(tmp_path):
    project = Project(tmp_path / "p", "sim-ext")
    (project.dir / "ext").mkdir()
    (project.dir / "ext" / "gen.py").write_text(GENERATOR)
    return project


def test_external_build_arguments_reach_the_command_unchanged_without_a_shell(external):
    import sys
    external.sconstruct(f"""
        out = env.ExternalBuild('ext/out.txt', [{sys.executable!r}, 'gen.py', 'out.txt', 'a b; touch pwned $HOME'])
        Default(out)
    """)
    result = external.run()
    assert (external.dir / "ext" / "out.txt").read_text() == "a b; touch pwned $HOME"
    assert not (external.dir / "ext" / "pwned").exists() and not (external.dir / "pwned").exists()
    assert "'a b; touch pwned $HOME'  (in " in result.stdout       # shown quoted, as typed


def test_external_build_runs_several_commands_in_order_in_chdir(external):
    import sys
    py = sys.executable
    external.sconstruct(f"""
        out = env.ExternalBuild('ext/two.txt', [[{py!r}, 'gen.py', 'one.txt', 'first'],
                                                [{py!r}, 'gen.py', 'two.txt', 'second']], chdir='ext')
        Default(out)
    """)
    external.run()
    assert (external.dir / "ext" / "runs.log").read_text() == "first\nsecond\n"


@pytest.mark.parametrize("command,message", [
    ("[]", "env.ExternalBuild(): the command [] is not an argument list such as ['make', '-j4']"),
    ("[['make'], 'x']", "is not an argument list"),
    ("['no-such-build-tool-xyz']", "cannot run `no-such-build-tool-xyz` in"),
], ids=["empty", "mixed", "missing-program"])
def test_external_build_bad_commands_are_clear_errors(external, command, message):
    external.sconstruct(f"Default(env.ExternalBuild('ext/out.txt', {command}))\n")
    result = external.run(check=False)
    assert message in result.stderr
