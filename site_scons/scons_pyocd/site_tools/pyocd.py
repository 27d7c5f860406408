"""The tool's old name. ``env.Tool('pyocd')`` would shadow the real pyOCD package (SCons
loads a tool as ``sys.modules['pyocd']``), so the tool is now ``pyocd_tool``."""

import SCons.Errors


def generate(env):
    raise SCons.Errors.UserError(
        "the scons-pyocd tool is now named 'pyocd_tool': write env.Tool('pyocd_tool') or "
        "tools=['default', 'pyocd_tool'] (the name 'pyocd' shadowed the pyOCD package).")


def exists(env):
    return False
