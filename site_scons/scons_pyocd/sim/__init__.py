"""The simulated STM32VLDiscovery: a pyOCD debug probe wired to an emulated STM32F100RB.

See ``docs/simulator.md``. :mod:`.board` (the persistent state) imports neither
pyOCD nor Unicorn; :func:`register` and :mod:`.probe` do.
"""

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
