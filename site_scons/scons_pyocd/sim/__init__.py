"""The simulated STM32VLDiscovery: a pyOCD debug probe wired to an emulated STM32F100RB.

See ``docs/simulator.md``. :mod:`.board` (the persistent state) imports neither
pyOCD nor Unicorn; :func:`register` and :mod:`.probe` do.

A simulated board exists only once created::

    from scons_pyocd.sim import create_board, ensure_board
    create_board("sim-mine")          # a new board (BoardExists if the id is taken)
    ensure_board("sim-vldiscovery")   # created only if missing (a project's own default board)

Simulated boards are not listed by pyOCD's probe enumeration (``pyocd list``, a
flash without ``-u``) unless the environment has ``SCONS_PYOCD_SIM_LIST=1``; an
explicit id (``sim-mine`` or ``sim:sim-mine``) always finds its board.
"""

from .board import BoardExists, BoardState, NoSuchBoard, create_board, ensure_board, list_boards  # noqa: F401

_registered = False


def register() -> None:
    """Make the ``sim`` probe type and the ``stm32f100rb`` target known to pyOCD in this process.

    Needed when the package is used from a copied ``site_scons/`` (no entry point
    installed); harmless when the entry point already loaded it. Idempotent.
    """
    global _registered
    if _registered:
        return
    from pyocd.probe.aggregator import PROBE_CLASSES
    from .. import targets
    from .probe import SimProbe
    PROBE_CLASSES.setdefault("sim", SimProbe)
    targets.register()
    _registered = True
