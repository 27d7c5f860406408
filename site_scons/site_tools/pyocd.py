"""The tool's old name: an error saying to write ``pyocd_tool`` (see
:mod:`scons_pyocd.site_tools.pyocd`, the same module for an installed package)."""

from scons_pyocd.site_tools.pyocd import exists, generate  # noqa: F401
