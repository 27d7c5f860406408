"""Benchmarks for scons-pyocd (see docs/performance.md). Run ``python -m bench``."""
