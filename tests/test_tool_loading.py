"""How the tool is loaded: site_tools (toolpath or a copied site_scons), pip-style
``scons_pyocd.tool.generate``; the ``pyocd`` name clash; what a firmware tree can and
cannot make ``scons flash`` execute; ``scons -h``.
"""

from pathlib import Path

import pytest

from scons_project import PAGE, Project, aliases_project, random_image
from scons_pyocd import options

SIZE = 4 * PAGE


@pytest.fixture
def project(tmp_path):
    return aliases_project(tmp_path / "a", "sim-load", SIZE, body=None)


@pytest.mark.parametrize("before", [False, True], ids=["pyocd-imported-after", "pyocd-imported-before"])
def test_import_pyocd_in_the_sconstruct_gets_the_real_pyocd(project, before):
    body = ("import pyocd as early\n" if before else "") + (
        "env.Tool('pyocd_tool')\n"
        "env2 = Environment(tools=['pyocd_tool'], toolpath=env['toolpath'])\n"
        "import pyocd, pyocd.core.helpers\n"
        "print('pyocd', pyocd.__version__, hasattr(pyocd.core.helpers, 'ConnectHelper'))\n"
        + ("print('same module', early is pyocd)\n" if before else "")
        + "env.FlashAliases('{image}')\n")
    project.sconstruct(body)
    result = project.run("flash")
    assert "pyocd 0.46" in result.stdout and "True" in result.stdout
    if before:
        assert "same module True" in result.stdout
    assert project.board.read_flash(length=SIZE) == project.data


def test_pip_style_generate_without_site_tools(project):
    (project.dir / "SConstruct").write_text(
        "import scons_pyocd.tool\n"
        "env = Environment(tools=[scons_pyocd.tool.generate], PYOCD_TARGET='stm32f100rb',\n"
        "                  PYOCD_PROBE='sim-load')\n"
        "env.FlashAliases('fw.hex')\n")
    project.run("flash")
    assert project.board.read_flash(length=SIZE) == project.data


def test_a_copied_site_scons_is_enough(tmp_path):
    p = Project(tmp_path / "copy", "sim-copy", copy_site_scons=True)
    data = random_image(SIZE, seed=2)
    p.image(data)
    p.sconstruct("import scons_pyocd\nprint('package', scons_pyocd.__file__)\nenv.FlashAliases('{image}')\n")
    result = p.run("flash")
    assert f"package {p.dir / 'site_scons' / 'scons_pyocd' / '__init__.py'}" in result.stdout
    assert p.board.read_flash(length=SIZE) == data
    assert not p.imports_pyocd("flash")


def test_pyocd_user_script_and_config_in_the_tree_are_ignored_unless_opted_in(project):
    marker = project.dir / "user-script-ran"
    (project.dir / "pyocd_user.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (project.dir / "pyocd.yaml").write_text("frequency: not-a-number\nconnect_mode: nonsense\n")
    project.sconstruct("env.FlashAliases('{image}')\n")
    project.run("flash")
    assert not marker.exists()
    project.sconstruct("env.FlashAliases('{image}')\n", PYOCD_OPTIONS={"user_script": "pyocd_user.py"})
    project.run("flash")
    assert marker.read_text() == "ran"


def test_scons_help_lists_every_variable_and_flag(project):
    project.sconstruct("env.FlashAliases('{image}')\n")
    text = project.run("-h").stdout
    for option in options.OPTIONS:
        assert option.name in text
        if option.flag:
            assert option.flag in text


def test_the_packages_toolpath_without_site_scons(project):
    """An installed package: one line (toolpath=[scons_pyocd.TOOLPATH]); its pyocd_tool module
    is the repository's site_tools one (tests/test_install.py does it from a real install)."""
    import scons_pyocd
    from scons_project import SITE_TOOLS
    assert (Path(scons_pyocd.TOOLPATH) / "pyocd_tool.py").read_text().split('"""')[-1] == \
        (SITE_TOOLS / "pyocd_tool.py").read_text().split('"""')[-1]
    (project.dir / "SConstruct").write_text(
        "import scons_pyocd\n"
        "env = Environment(tools=['default', 'pyocd_tool'], toolpath=[scons_pyocd.TOOLPATH],\n"
        "                  PYOCD_TARGET='stm32f100rb', PYOCD_PROBE='sim-load')\n"
        "env.FlashAliases('fw.hex')\n")
    project.run("flash")
    assert project.board.read_flash(length=SIZE) == project.data


@pytest.mark.parametrize("where", ["site_tools", "package"])
def test_the_old_tool_name_says_what_to_write(project, where):
    """``pyocd`` shadowed the pyOCD package; the name now gives an error saying what to write,
    from a copied site_scons as from the installed package's TOOLPATH."""
    import scons_pyocd
    from scons_project import SITE_TOOLS
    toolpath = str(SITE_TOOLS) if where == "site_tools" else scons_pyocd.TOOLPATH
    (project.dir / "SConstruct").write_text(f"env = Environment(tools=['pyocd'], toolpath=[{toolpath!r}])\n")
    result = project.run("flash", check=False)
    assert "the scons-pyocd tool is now named 'pyocd_tool'" in result.stderr
    assert "Traceback" not in result.stderr and project.board.counters()["connects"] == 0
