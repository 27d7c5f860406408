"""Where the tool keeps per-user state: board records, probe locks, simulated boards.

Everything lives under one per-user directory with private permissions (0700),
never at a predictable shared path in /tmp.

- ``SCONS_PYOCD_STATE_DIR`` overrides the root (default ``$XDG_STATE_HOME/scons-pyocd``,
  i.e. ``~/.local/state/scons-pyocd``).
- ``SCONS_PYOCD_SIM_DIR`` overrides where simulated boards live (default ``<root>/sim``).

The state decides whether a board is flashed, so it is guarded: a state directory
that another user owns, or a symbolic link inside it, is refused; one of ours that
others may write is made private again (with a warning naming it); every problem
is a :class:`~scons_pyocd.errors.FlashError` naming the path and what to do.
"""

import os
import stat
import sys
from pathlib import Path

from .errors import FlashError

_FIX = ("Set SCONS_PYOCD_STATE_DIR to a private directory of yours (it is created if missing), "
        "or fix this one.")


def warn(message: str) -> None:
    """A warning on stderr: the state is usable, but something was wrong with it."""
    sys.stderr.write(f"scons-pyocd: warning: {message}\n")
    sys.stderr.flush()


def _problem(path: Path, what: str) -> FlashError:
    return FlashError(f"state directory {path}: {what}. {_FIX}")


def private_dir(path: Path, follow: bool = False) -> Path:
    """``path`` as a directory of this user's that nobody else may write, created 0700 if
    missing. A symbolic link is refused unless ``follow`` (the root given by the user);
    a directory owned by someone else is refused; group/other write permission on one of
    ours is removed, with a warning. Raises FlashError saying what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise _problem(path, "exists and is not a directory") from None
    except OSError as exc:
        raise _problem(path, f"cannot be created ({exc.strerror or exc})") from None
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        raise _problem(path, f"cannot be examined ({exc.strerror or exc})") from None
    if stat.S_ISLNK(info.st_mode):
        raise _problem(path, "is a symbolic link; the tool does not follow links inside its state")
    if not stat.S_ISDIR(info.st_mode):
        raise _problem(path, "is not a directory")
    if info.st_uid != os.getuid():
        raise _problem(path, f"belongs to user id {info.st_uid}, not to you (uid {os.getuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        try:
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
        except OSError as exc:
            raise _problem(path, f"may be written by other users and cannot be made private "
                                 f"({exc.strerror or exc})") from None
        warn(f"state directory {path} could be written by other users; made it private "
             f"(mode {stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH):o}).")
    return path


def _state_root_path() -> Path:
    """Where the state directory is: $SCONS_PYOCD_STATE_DIR, else $XDG_STATE_HOME/scons-pyocd
    (~/.local/state/scons-pyocd); nothing checked or created."""
    env = os.environ.get("SCONS_PYOCD_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "scons-pyocd"


def state_root() -> Path:
    """The per-user state directory (see the module docstring), checked and created 0700."""
    return private_dir(_state_root_path(), follow=True)


def state_dir(name: str) -> Path:
    """A sub-directory of the state root (``records``, ``locks``), never a link."""
    return private_dir(state_root() / name)


def sim_root() -> Path:
    """The directory holding one sub-directory per simulated board (created 0700 if missing,
    the state directory above it too)."""
    env = os.environ.get("SCONS_PYOCD_SIM_DIR")
    if env:
        return private_dir(Path(env).expanduser(), follow=True)
    return private_dir(state_root() / "sim")


def sim_root_path() -> Path:
    """Where :func:`sim_root` is, without creating or checking anything (to look for boards)."""
    env = os.environ.get("SCONS_PYOCD_SIM_DIR")
    return Path(env).expanduser() if env else _state_root_path() / "sim"
