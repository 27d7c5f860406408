"""scons-pyocd: flash Cortex-M firmware from SCons through pyOCD, only when the image changed.

Importing this package is cheap: it never imports pyOCD. The pyOCD layer
(:mod:`scons_pyocd.session`), the simulated board (:mod:`scons_pyocd.sim`) and the
target definitions (:mod:`scons_pyocd.targets`) import pyOCD when they are used.
"""

__version__ = "0.1.0"
