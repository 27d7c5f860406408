"""The tool for a pip-installed scons-pyocd, without a ``site_scons`` folder::

    import scons_pyocd.tool
    env = Environment(tools=['default', scons_pyocd.tool.generate])

(``env.Tool(scons_pyocd.tool.generate)`` works too.) Same as ``env.Tool('pyocd_tool')``
with ``site_scons/site_tools/pyocd.py`` in the tree.
"""

from .builders import exists, generate

__all__ = ["generate", "exists"]
