"""The one compiled module (everything else is in pyproject.toml): core.time's C front, optional by design.

``optional=True``: a machine without a C compiler still installs inlet, and ``core.time`` falls back to its
Python function (same results, slower); CI requires the compiled one (tests/core/test_time_fast.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("inlet.core._speedups", ["core/_speedups.c"], optional=True)])
