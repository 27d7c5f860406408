"""Where the tool keeps per-user state: change records, probe locks, simulated boards.

Everything lives under one per-user directory created with private permissions
(0700), never at a predictable shared path in /tmp.

- ``SCONS_PYOCD_STATE_DIR`` overrides the root (default ``$XDG_STATE_HOME/scons-pyocd``,
  i.e. ``~/.local/state/scons-pyocd``).
- ``SCONS_PYOCD_SIM_DIR`` overrides where simulated boards live (default ``<root>/sim``).
"""

import os
from pathlib import Path


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def state_root() -> Path:
    """The per-user state directory, created 0700 if missing."""
    env = os.environ.get("SCONS_PYOCD_STATE_DIR")
    if env:
        return _private_dir(Path(env).expanduser())
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return _private_dir(Path(xdg) / "scons-pyocd")


def sim_root() -> Path:
    """The directory holding one sub-directory per simulated board (created 0700 if missing,
    the state directory above it too)."""
    env = os.environ.get("SCONS_PYOCD_SIM_DIR")
    if env:
        return _private_dir(Path(env).expanduser())
    return _private_dir(state_root() / "sim")


def sim_root_path() -> Path:
    """Where :func:`sim_root` is, without creating anything (to look for boards)."""
    env = os.environ.get("SCONS_PYOCD_SIM_DIR")
    if env:
        return Path(env).expanduser()
    env = os.environ.get("SCONS_PYOCD_STATE_DIR")
    if env:
        return Path(env).expanduser() / "sim"
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "scons-pyocd" / "sim"
