"""Whether SCons got Ctrl-C (or SIGTERM) during this build: the one place the tool reads
SCons internals.

SCons's signal handler only stops the build once the running actions finish; a
flash should stop between two pages instead. SCons offers no public way to ask,
so :func:`requested` reads the flag of SCons's job runner, which its SIGINT
handler keeps as a default argument. ``tests/test_tool_units.py`` checks this
still works against the installed SCons (it fails when SCons changes this).
"""

import signal


def requested() -> bool:
    """True once SCons's handler saw SIGINT/SIGTERM in this build; False when unknown."""
    handler = signal.getsignal(signal.SIGINT)
    runner = (getattr(handler, "__defaults__", None) or (None,))[0]
    flag = getattr(getattr(runner, "job", None), "interrupted", None)
    try:
        return bool(flag()) if callable(flag) else False
    except Exception:
        return False
