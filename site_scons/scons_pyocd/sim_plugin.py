"""pyOCD's entry point for the simulated probe type, kept light.

pyOCD loads every ``pyocd.probe`` entry point whenever it is imported, so the entry
point must neither import the simulator (and Unicorn, 56 MB) on a real-hardware run,
nor break pyOCD where the simulator is not installed (``pip install scons-pyocd``
without the ``[sim]`` extra). :class:`SimProbePlugin` loads only when Unicorn is
installed, and what it registers, :class:`SimProbeFinder`, imports the simulator only
when a simulated board is asked for (an id starting with ``sim-``, or ``sim:<id>``), or
when one exists and pyOCD lists all probes with ``SCONS_PYOCD_SIM_LIST=1``. A real
probe's id never imports it.
"""

import importlib.util
from typing import List, Optional

PREFIX = "sim-"


def simulator_installed() -> bool:
    """Whether the simulator can run here (Unicorn is installed); imports nothing."""
    return importlib.util.find_spec("unicorn") is not None


#: The environment switch that shows simulated boards in pyOCD's enumeration (set to 1, yes,
#: true or on); :mod:`scons_pyocd.sim.probe` imports it and :func:`listing_enabled` from here.
LIST_ENV = "SCONS_PYOCD_SIM_LIST"


def listing_enabled() -> bool:
    """Whether ``SCONS_PYOCD_SIM_LIST`` asks for simulated boards when pyOCD lists probes."""
    import os
    return os.environ.get(LIST_ENV, "").strip().lower() in ("1", "yes", "true", "on")


def is_simulated(probe_id: str) -> bool:
    """Whether ``probe_id`` names a simulated board: ``sim-...`` or ``sim:<id>``."""
    return probe_id.startswith(PREFIX) or probe_id.lower().startswith("sim:")


def _classes() -> dict:
    """The plugin classes, made on first use: pyOCD is imported then, not when this module
    is (pyOCD imports this module while it imports itself, through the entry point)."""
    from pyocd.core.plugin import Plugin
    from pyocd.probe.debug_probe import DebugProbe

    class SimProbeFinder(DebugProbe):
        """pyOCD's probe class for the ``sim`` type until a simulated board is needed: it
        answers pyOCD's class-level questions and hands over to the simulator's own probe
        class (:class:`scons_pyocd.sim.probe.SimProbe`) only for simulated boards."""

        @classmethod
        def _simulator(cls):
            from .sim import register
            from .sim.probe import SimProbe
            register()
            return SimProbe

        @classmethod
        def get_all_connected_probes(cls, unique_id: Optional[str] = None, is_explicit: bool = False) -> List:
            if not (is_explicit or listing_enabled()):     # hidden unless asked for (sim.probe)
                return []
            from .sim.board import list_boards     # the boards' state files only, no Unicorn
            boards = [b for b in list_boards() if unique_id is None or unique_id.lower() in b.lower()]
            return cls._simulator().get_all_connected_probes(unique_id, is_explicit) if boards else []

        @classmethod
        def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False):
            if unique_id and (unique_id.startswith(PREFIX) or is_explicit):
                return cls._simulator().get_probe_with_id(unique_id, is_explicit)
            return None

    class SimProbePlugin(Plugin):
        """The ``pyocd.probe`` entry point ``sim``."""

        def should_load(self) -> bool:
            # pyOCD has no entry point for targets: this is where its command line (pyocd flash
            # -t stm32f100rb) learns the package's targets, with or without the simulator.
            from . import targets
            targets.register()
            return simulator_installed()

        def load(self):
            return SimProbeFinder

        @property
        def name(self) -> str:
            return "sim"

        @property
        def description(self) -> str:
            return "Simulated STM32VLDiscovery (scons-pyocd)"

    return {"SimProbeFinder": SimProbeFinder, "SimProbePlugin": SimProbePlugin}


_made: dict = {}


def __getattr__(name: str):
    """``SimProbePlugin`` (the entry point) and ``SimProbeFinder``, made when first asked for."""
    if name in ("SimProbePlugin", "SimProbeFinder"):
        if not _made:
            _made.update(_classes())
        return _made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
