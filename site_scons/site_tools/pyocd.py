"""SCons tool ``pyocd``: ``env.Tool('pyocd')`` adds Flash, Erase, Verify, FlashAliases and the
image conversion builders (see docs/user-guide.md). Loading it imports nothing heavy.

SCons loads a toolpath module as ``sys.modules[<tool name>]``, which for this file
is ``sys.modules['pyocd']``: the real pyOCD package would be shadowed for the rest
of the build (``import pyocd`` would return this module). :func:`_unshadow` undoes
that as the module loads, putting back a pyOCD imported before, if any.
"""

import os
import sys


def _unshadow() -> None:
    this = sys.modules.get(__name__)
    if __name__ != "pyocd" or this is None or getattr(this, "__file__", None) != __file__:
        return
    # SCons.Tool.Tool._tool_module keeps what sys.modules held before, in a local.
    previous = None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_tool_module" and "sys_modules_value" in frame.f_locals:
            previous = frame.f_locals["sys_modules_value"] or None
            break
        frame = frame.f_back
    if previous is not None and getattr(previous, "__file__", None) == __file__:
        previous = None
    if previous is not None:
        sys.modules["pyocd"] = previous
        return
    del sys.modules["pyocd"]
    if any(name.startswith("pyocd.") for name in sys.modules):
        # pyOCD was imported but SCons did not tell us its module: import it again (its
        # submodules are cached) with this folder off the path so the import finds pyOCD.
        import importlib
        here = os.path.dirname(os.path.abspath(__file__))
        saved = sys.path[:]
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        try:
            package = importlib.import_module("pyocd")
        finally:
            sys.path[:] = saved
        for name, module in list(sys.modules.items()):
            head, _, child = name.partition(".")
            if head == "pyocd" and child and "." not in child:
                setattr(package, child, module)


_unshadow()


def generate(env):
    from scons_pyocd.builders import generate as _generate
    _generate(env)


def exists(env):
    return True
