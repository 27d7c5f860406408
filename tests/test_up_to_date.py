""""Up to date" is true: issue 11's failing cases, through the real scons on the simulated
board, asserting on what the chip holds and on the probe's connect counter.

The rule under test: whether a flash is needed is decided when the flash node runs in
this build (after whatever ran before it on the board), from the board record and the
image only, and again under the probe lock; nothing that stands for a write to
hardware is cached; nothing touches a probe unless asked for.
"""

import binascii
import os
import random
import shutil
import stat

import pytest

from scons_project import ALIASES, PAGE, Project, aliases_project, holds, random_image
from scons_pyocd import records
from scons_pyocd.images import Image
from scons_pyocd.sim.board import FLASH_BASE

SIZE = 6 * PAGE


@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-a", SIZE)


# -- 1. CacheDir ---------------------------------------------------------------------------

def test_a_cache_never_stands_for_a_flash(project):
    project.sconstruct("CacheDir('cache')\n" + ALIASES)
    a, b = project.data, random_image(SIZE, seed=2)
    project.run("flash")
    project.image(b)
    project.run("flash")
    assert holds(project, b)
    project.image(a)                                     # as a `git checkout` would
    result, delta = project.counters_after("flash")
    assert "Retrieved" not in result.stdout
    assert delta["connects"] == 1 and holds(project, a)
    assert not list((project.dir / "cache").rglob("*.flashed"))
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0 and holds(project, a)


# -- 2. erase and flash in one build --------------------------------------------------------

@pytest.mark.parametrize("jobs", ["-j1", "-j4"])
def test_erase_then_flash_in_one_build_erases_then_flashes(project, jobs):
    project.run("flash")
    result, delta = project.counters_after(jobs, "erase", "flash")
    assert delta["mass_erases"] >= 1 and delta["halfwords_programmed"] == SIZE // 2
    assert holds(project, project.data)
    assert result.stdout.index("erase stm32f100rb") < result.stdout.index("flash stm32f100rb via")
    assert project.record_entry()["valid"]


@pytest.mark.parametrize("jobs", ["-j1", "-j4"])
def test_flash_then_erase_in_one_build_leaves_a_blank_chip_and_no_claim(project, jobs):
    result, delta = project.counters_after(jobs, "flash", "erase")
    assert project.board.read_flash() == b"\xff" * 128 * 1024
    assert not project.record_entry()["valid"]
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 1 and holds(project, project.data)


def test_verify_after_flash_in_one_build_sees_the_new_image(project):
    project.run("flash")
    project.data = random_image(SIZE, seed=5)
    project.image(project.data)
    result = project.run("flash", "verify")
    assert "matches" in result.stdout and holds(project, project.data)
    project.run("erase")
    result = project.run("verify", "flash", check=False)
    assert result.returncode != 0 and "verify failed" in result.stderr


# -- 3. records lost -----------------------------------------------------------------------

def test_a_lost_state_directory_makes_the_next_flash_connect(project, tmp_path, isolated_state):
    project.run("flash")
    other = Project(tmp_path / "b", "sim-a")
    other.image(random_image(SIZE, seed=3))
    other.sconstruct(ALIASES)
    other.run("flash")
    for name in ("records", "locks"):        # a fresh home directory, the build tree restored
        shutil.rmtree(isolated_state / name)
    result, delta = project.counters_after("flash")
    assert delta["connects"] == 1 and holds(project, project.data)
    assert "flash is up to date" not in result.stdout


# -- 4. what --flash-check learns invalidates stale claims ----------------------------------

def test_what_a_flash_check_learns_invalidates_another_trees_claim(project, tmp_path):
    v1 = project.data
    project.run("flash")
    v3 = random_image(SIZE, seed=4)
    project.board.write_flash(FLASH_BASE, v3)              # another tool writes v3
    tree2 = Project(tmp_path / "b", "sim-a")
    tree2.image(v3)
    tree2.sconstruct(ALIASES)
    result, delta = tree2.counters_after("flash", "--flash-check")
    assert "checked on the chip" in result.stdout and delta["halfwords_programmed"] == 0
    result, delta = project.counters_after("flash")
    assert delta["connects"] == 1 and holds(project, v1)
    assert "up to date" not in result.stdout


# -- 5. two images sharing a page -----------------------------------------------------------

def _bootloader_and_application(tmp_path):
    """A project flashing a bootloader ending at 0x080009FF and an application from
    0x08000A00 (the page at 0x08000800 holds both) onto one board: (project, boot, app)."""
    p = Project(tmp_path / "a", "sim-a")
    boot, app = random_image(0xA00, seed=1), random_image(0x1600, seed=2)
    p.image(boot, "boot.hex")
    p.image(app, "app.hex", base=FLASH_BASE + 0xA00)
    p.sconstruct("env.FlashAliases('boot.hex', flash='flash', erase='erase-boot', verify='verify-boot')\n"
                 "env.FlashAliases('app.hex', flash='flash', erase='erase-app', verify='verify-app')\n")
    return p, boot, app


def test_two_images_sharing_a_page_are_both_up_to_date(tmp_path):
    p, boot, app = _bootloader_and_application(tmp_path)
    p.run("flash")
    assert holds(p, boot) and holds(p, app, FLASH_BASE + 0xA00)
    for _ in range(2):
        result, delta = p.counters_after("flash")
        assert delta["connects"] == 0, result.stdout
        assert result.stdout.count("flash is up to date") == 2
    # The application changes in the shared page: the bootloader's bytes survive, and it
    # stays up to date.
    changed = bytearray(app)
    changed[0x10] ^= 0xFF
    p.image(bytes(changed), "app.hex", base=FLASH_BASE + 0xA00)
    result, delta = p.counters_after("flash")
    assert delta["connects"] == 1 and delta["pages_erased"] == 1
    assert holds(p, boot) and holds(p, bytes(changed), FLASH_BASE + 0xA00)
    _, delta = p.counters_after("flash")
    assert delta["connects"] == 0


# -- 6. plain scons touches no probe --------------------------------------------------------

def test_plain_scons_builds_but_never_flashes(tmp_path):
    p = Project(tmp_path / "a", "sim-a")
    p.data = random_image(SIZE)
    p.image(p.data, "src.hex")
    p.sconstruct("hex = Command('build/fw.hex', 'src.hex', Copy('$TARGET', '$SOURCE'))\n"
                 "env.FlashAliases(hex)\n")
    for args in ([], ["."], ["build"]):
        _, delta = p.counters_after(*args)
        assert delta["connects"] == 0, args
    assert (p.dir / "build" / "fw.hex").exists()
    assert p.board.read_flash(length=SIZE) == b"\xff" * SIZE
    p.sconstruct("hex = Command('build/fw.hex', 'src.hex', Copy('$TARGET', '$SOURCE'))\n"
                 "Default(env.FlashAliases(hex)[0])\n")
    _, delta = p.counters_after()
    assert delta["connects"] == 1 and holds(p, p.data)


# -- 7. erase aliases -------------------------------------------------------------------------

def test_an_images_erase_alias_erases_its_pages_and_the_board_erase_runs_once(tmp_path):
    p = Project(tmp_path / "a", "sim-a")
    boot, app = random_image(2 * PAGE, seed=1), random_image(3 * PAGE, seed=2)
    p.image(boot, "boot.hex")
    p.image(app, "app.hex", base=FLASH_BASE + 2 * PAGE)
    p.sconstruct("env.FlashAliases('boot.hex', flash='flash', erase='erase-boot', verify='verify-boot')\n"
                 "env.FlashAliases('app.hex', flash='flash', erase='erase-app', verify='verify-app')\n")
    p.run("flash")
    result, delta = p.counters_after("erase-app")
    assert (delta["mass_erases"], delta["pages_erased"]) == (0, 3)
    assert holds(p, boot) and p.board.read_flash(FLASH_BASE + 2 * PAGE, 3 * PAGE) == b"\xff" * 3 * PAGE
    result, delta = p.counters_after("flash")
    assert delta["halfwords_programmed"] == 3 * PAGE // 2 and "flash is up to date" in result.stdout
    _, delta = p.counters_after("erase")
    assert (delta["mass_erases"], delta["connects"]) == (1, 1)
    assert p.board.read_flash(length=5 * PAGE) == b"\xff" * 5 * PAGE


# -- 9. the state directory ------------------------------------------------------------------

def test_a_planted_symlink_is_not_followed(project, isolated_state, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    locks = isolated_state / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    (locks / "sim-a.lock").symlink_to(victim)
    result = project.run("flash", check=False)
    assert victim.read_text() == "precious\n"
    assert "is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert project.board.counters()["connects"] == 0


def test_a_state_directory_others_can_write_is_made_private_with_a_warning(project, isolated_state):
    os.chmod(isolated_state, 0o777)
    result = project.run("flash")
    assert stat.S_IMODE(os.stat(isolated_state).st_mode) & 0o022 == 0
    assert f"state directory {isolated_state} could be written by other users" in result.stderr
    assert holds(project, project.data)


def test_a_record_with_wrong_field_types_is_no_record(project):
    project.run("flash")
    path = records.BoardRecord("sim-a").path
    data = path.read_text().replace('"valid": true', '"valid": "yes"')
    path.write_text(data)
    result, delta = project.counters_after("flash")
    assert "malformed entry ignored" in result.stderr and "Traceback" not in result.stderr
    assert delta["connects"] == 1 and holds(project, project.data)
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 0


def test_a_misplaced_state_directory_is_a_clear_error(project, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    before = project.board.counters()
    result = project.run("flash", check=False, env={"SCONS_PYOCD_STATE_DIR": str(blocker)})
    assert f"state directory {blocker}: exists and is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert project.board.counters() == before and not holds(project, project.data)    # nothing touched


# -- randomized: whatever happens, a claim is true --------------------------------------------

def _chip_holds(board, image_data, base=FLASH_BASE):
    return board.read_flash(base, len(image_data)) == image_data


def _claims_are_true(board, entry) -> bool:
    """Every page of a valid entry holds what the entry says (its CRC)."""
    return all(binascii.crc32(board.read_flash(int(key, 16), page["end"] - int(key, 16))) == page["crc"]
               for key, page in entry["pages"].items())


#: Where the random test's trees put their images: two on the same pages, one from the
#: middle of a page that the others also use.
BASES = (FLASH_BASE, FLASH_BASE, FLASH_BASE + 3 * PAGE + 0x200)


@pytest.mark.parametrize("seed", [2, 3, 4, 5])
def test_random_sequences_never_leave_a_false_claim(tmp_path, isolated_state, seed):
    """Flash, erase, verify and --flash-check from three trees in random orders, with image
    changes, lost records and CacheDir on or off: after every step, every valid claim is
    true of the chip, and a run that said "up to date" or "flashed" left its image there."""
    rng = random.Random(seed)
    trees = [Project(tmp_path / f"t{i}", "sim-r") for i in range(len(BASES))]
    images = {}
    for i, tree in enumerate(trees):
        images[i] = random_image(SIZE, seed=seed * 10 + i)
        tree.image(images[i], base=BASES[i])
        tree.sconstruct(("CacheDir('cache')\n" if rng.random() < 0.5 else "") + ALIASES)
    board = trees[0].board
    said_up_to_date = 0
    for step in range(16):
        i = rng.randrange(len(trees))
        tree = trees[i]
        action = rng.choice(["flash", "flash", "flash", "erase flash", "flash erase", "flash verify",
                             "change", "forget", "check"])
        where = (seed, step, i, action)
        if action == "change":
            data = bytearray(images[i])
            data[rng.randrange(SIZE)] ^= 0xFF
            images[i] = bytes(data)
            tree.image(images[i], base=BASES[i])
            continue
        if action == "forget":
            shutil.rmtree(isolated_state / "records", ignore_errors=True)
            continue
        args = action.split() if action != "check" else ["flash", "--flash-check"]
        said = tree.run(*args, check=True).stdout
        said_up_to_date += "flash is up to date" in said
        if ("flash is up to date" in said or "flash stm32f100rb via " in said) and args[-1] != "erase":
            assert _chip_holds(board, images[i], BASES[i]), (where, said)
        for j, other in enumerate(trees):
            entry = other.record_entry(board="sim-r")
            if entry and entry["valid"]:
                assert _claims_are_true(board, entry), (where, j, said)
                if entry["image_sha256"] == Image([(BASES[j], images[j])]).sha256():
                    assert _chip_holds(board, images[j], BASES[j]), (where, j, said)
    assert said_up_to_date, "the sequence never reached an up-to-date run: pick other seeds"


def test_erasing_an_image_keeps_the_bytes_of_its_neighbour_in_a_shared_page(tmp_path):
    p, boot, app = _bootloader_and_application(tmp_path)
    p.run("flash")
    result, delta = p.counters_after("erase-app")
    assert delta["mass_erases"] == 0 and delta["pages_erased"] == 6
    assert holds(p, boot)                                   # its tail in the shared page survived
    assert p.board.read_flash(FLASH_BASE + 0xA00, 0x1600) == b"\xff" * 0x1600
    assert "app.hex (6 pages; other data in them kept)" in result.stdout
    result, delta = p.counters_after("flash")
    assert result.stdout.count("flash is up to date") == 1       # the bootloader's
    # Only the page shared with the bootloader needs an erase: the app's other 5 are blank.
    assert delta["connects"] == 1 and delta["pages_erased"] == 1
    assert holds(p, boot) and holds(p, app, FLASH_BASE + 0xA00)


def test_dry_run_of_a_rebuilt_image_says_it_would_flash(tmp_path):
    p = Project(tmp_path / "a", "sim-a")
    p.image(random_image(SIZE), "src.hex")
    p.sconstruct("hex = Command('build/fw.hex', 'src.hex', Copy('$TARGET', '$SOURCE'))\n"
                 "env.FlashAliases(hex)\n")
    p.run("flash")
    p.image(random_image(SIZE, seed=9), "src.hex")
    result, delta = p.counters_after("-n", "flash")
    assert "would flash build/fw.hex onto stm32f100rb via sim-a (it is rebuilt first)" in result.stdout
    assert delta["connects"] == 0


def test_dry_run_with_pyocd_debug_shows_the_plan_without_the_probe(project):
    result, delta = project.counters_after("-n", "flash", "--pyocd-debug")
    assert "would flash fw.hex onto stm32f100rb via sim-a (board record says: no record of board sim-a)" in result.stdout
    assert "flash plan for " in result.stdout and "6 page(s) touched (0x08000000-0x080017FF)" in result.stdout
    assert delta["connects"] == 0


def test_a_failed_flash_leaves_its_reason_in_the_record(project):
    project.run("flash")
    changed = bytearray(project.data)
    changed[2 * PAGE] ^= 0xFF
    project.image(bytes(changed))
    project.board.set_write_protection([2])
    result = project.run("flash", check=False)
    assert "write-protected" in result.stderr
    why = project.record_entry()["invalidated"]["reason"]
    assert why.startswith(f"flash of {project.dir / 'fw.hex'} failed: the chip refused"), why
    assert "would flash fw.hex" in project.run("-n", "flash").stdout
    project.board.set_write_protection([])
    _, delta = project.counters_after("flash")
    assert delta["connects"] == 1 and holds(project, bytes(changed))
