"""SCons tool ``pyocd_tool`` of an installed scons-pyocd, for a tree without ``site_scons/``::

    import scons_pyocd
    env = Environment(tools=['default', 'pyocd_tool'], toolpath=[scons_pyocd.TOOLPATH])

The same module as ``site_scons/site_tools/pyocd_tool.py`` of the repository (a test keeps
them equal); see that file for why it is not named ``pyocd``.
"""

from scons_pyocd.builders import exists, generate  # noqa: F401
