"""scons-pyocd: flash Cortex-M firmware from SCons through pyOCD, only when the image changed.

Importing this package is cheap: it never imports pyOCD. The pyOCD layer
(:mod:`scons_pyocd.session`), the simulated board (:mod:`scons_pyocd.sim`) and the
target definitions (:mod:`scons_pyocd.targets`) import pyOCD when they are used.

An installed package gives SCons its tool through :data:`TOOLPATH`::

    import scons_pyocd
    env = Environment(tools=['default', 'pyocd_tool'], toolpath=[scons_pyocd.TOOLPATH])
"""

import os

__version__ = "0.1.0"

#: The folder holding the SCons tool module ``pyocd_tool.py``, for ``toolpath=[...]``.
TOOLPATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site_tools")
