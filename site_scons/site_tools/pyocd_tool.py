"""SCons tool ``pyocd_tool``: ``env.Tool('pyocd_tool')`` (or ``tools=['default', 'pyocd_tool']``)
adds the Flash, Erase and Verify builders, FlashAliases, ExternalBuild and the image
conversion builders (see docs/user-guide.md). Loading it imports nothing heavy.

The name is not ``pyocd``: SCons loads a tool module as ``sys.modules[<tool name>]``,
which would shadow the real pyOCD package for the rest of the build (SCons renames its
own clashing tools the same way, e.g. ``gettext_tool``).
"""

from scons_pyocd.builders import exists, generate  # noqa: F401
