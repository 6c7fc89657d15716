"""The one compiled module (everything else is in pyproject.toml): the hot path's C helpers, optional by design.

``optional=True``: a machine without a C compiler still installs inlet, and each helper's Python twin runs instead
(same results, slower); CI requires the compiled one (docs/development.md, "The compiled helpers").
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("inlet.core._speedups", ["core/_speedups.c"], optional=True)])
