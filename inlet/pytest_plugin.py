"""inlet's pytest plugin: a plugin package's contract tests, generated from its config and fixtures.

Why: every customer plugin must pass the same CI check. Its recorded upstream, replayed offline, must
still give the golden events, and every event must be valid against its contract (:mod:`inlet.testing`). A
package kept outside this repository gets those tests without writing or copying a test module, and
gets the same failure message: the unified diff and the ``inlet replay KEY --update ...`` command to run
once the change has been reviewed.

How: inlet registers this module in the ``pytest11`` entry-point group, so pytest loads it wherever inlet
is installed. It does nothing until a project configures it in ``[tool.pytest.ini_options]``::

    inlet_config = ["config"]         # config directories (inlet.yaml + integrations/), relative to rootdir
    inlet_fixtures = "fixtures"       # fixtures root: <root>/<customer>/<integration>/ (this is the default)
    testpaths = ["tests", "config"]   # pytest must walk the config directories

Each configured directory's ``inlet.yaml`` is then collected like a test file. It yields one test per
integration that has a fixture directory, and the test is named by the integration's key:
``config/inlet.yaml::northwind-clinic/observations``. A failure shows the AssertionError text of
:func:`inlet.testing.check_fixture`, with no traceback into inlet.

Why ``pytest_collect_file`` on ``inlet.yaml``, and not items added in ``pytest_collection_modifyitems`` or
a collector hung on the session: this is the mechanism pytest documents for tests that are not Python. The
tests become ordinary nodes of pytest's collection tree, so everything that works on nodes works on them:
``-k``/``-m`` selection, ``pytest config/``, node ids on the command line, ``--lf``, ``--collect-only``
and xdist. Items appended after collection lose some of those, and they would also run when the user named
a single unit-test file. Why ``inlet.yaml`` and not ``pyproject.toml``: the file lies in the directory it
stands for, the CLI finds config directories by it too, and the node id says which directory a test comes
from.

Guards against tests that silently do not run:

- a configured directory without ``inlet.yaml`` is a usage error;
- when pytest runs on ``testpaths``, a configured directory that no ``testpaths`` entry covers is also a
  usage error (pytest would never reach it);
- a directory that does not load (unknown plugin, bad settings) is a collection error listing every
  problem, and so is a missing fixtures root.

Cost: projects that do not configure the plugin, inlet's own test suite among them, pay only for importing
this module. :mod:`inlet.testing`, and with it the pipeline, httpx and the contracts, is imported when a
configured directory is collected. Because the plugin lives in the ``inlet`` distribution, pytest rewrites
the asserts of inlet's modules, as it does for every plugin's distribution. That changes assertion messages
and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from inlet.testing import FixtureCase

__all__ = ["MARKER", "InletConfigFile", "InletFixtureItem"]

MARKER = "inlet_fixture"
"""The marker on every generated test: ``pytest -m inlet_fixture`` runs only the contract tests."""


@dataclass(frozen=True)
class _Settings:
    """What the ini options resolved to (absolute paths)."""

    configs: tuple[Path, ...]
    fixtures: Path


_SETTINGS = pytest.StashKey[_Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "inlet_config",
        type="linelist",
        default=[],
        help="inlet: config directories (inlet.yaml + integrations/*.yaml), relative to rootdir; "
        "each integration with a fixture directory becomes one generated contract test",
    )
    parser.addini(
        "inlet_fixtures",
        type="string",
        default="fixtures",
        help="inlet: fixtures root (<root>/<customer>/<integration>/), relative to rootdir",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a contract test inlet generated from a fixture directory")
    names: list[str] = config.getini("inlet_config")
    if not names:
        return
    root = config.rootpath
    configs = tuple((root / name).resolve() for name in names)
    for name, path in zip(names, configs, strict=True):
        if not (path / "inlet.yaml").is_file():
            raise pytest.UsageError(
                f"inlet_config: {name} ({path}) has no inlet.yaml; the plugin collects a config "
                "directory through its inlet.yaml (an empty file will do)"
            )
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS and not config.option.pyargs:
        walked = [(config.invocation_params.dir / arg).resolve() for arg in config.args]
        for name, path in zip(names, configs, strict=True):
            if not any(path == w or w in path.parents for w in walked):
                raise pytest.UsageError(
                    f"inlet_config: {name} is not under any testpaths entry ({', '.join(config.getini('testpaths'))}), "
                    f"so its fixture tests would never run; add {name!r} to testpaths"
                )
    config.stash[_SETTINGS] = _Settings(configs, (root / config.getini("inlet_fixtures")).resolve())


def pytest_report_header(config: pytest.Config) -> str | None:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        return None
    dirs = ", ".join(_shown(p, config.rootpath) for p in settings.configs)
    return f"inlet: contract tests for {dirs} from {_shown(settings.fixtures, config.rootpath)}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> InletConfigFile | None:
    settings = parent.config.stash.get(_SETTINGS, None)
    if settings is None or file_path.name != "inlet.yaml" or file_path.parent.resolve() not in settings.configs:
        return None
    return InletConfigFile.from_parent(parent, path=file_path)


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


class InletConfigFile(pytest.File):
    """A configured directory's ``inlet.yaml``: one test per integration with recorded fixtures."""

    def collect(self) -> Iterator[InletFixtureItem]:
        from inlet.testing import fixture_cases

        fixtures = self.config.stash[_SETTINGS].fixtures
        if not fixtures.is_dir():
            raise self.CollectError(
                f"inlet_fixtures: {fixtures} is not a directory; record the integrations "
                "(`inlet record CUSTOMER/INTEGRATION --config DIR --fixtures DIR`) or point "
                "inlet_fixtures at their fixtures root"
            )
        try:
            cases = fixture_cases([self.path.parent], fixtures)
        except AssertionError as exc:  # fixture_cases reports config errors this way, all of them at once
            raise self.CollectError(f"{self.path.parent} does not load:\n{exc}") from exc
        for case in cases:
            yield InletFixtureItem.from_parent(self, name=str(case), case=case)


class InletFixtureItem(pytest.Item):
    """One integration's fixture directory, replayed offline and compared with its golden events."""

    def __init__(self, *, case: FixtureCase, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.add_marker(MARKER)

    def runtest(self) -> None:
        from inlet.testing import check_fixture

        check_fixture(self.case)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        """The message alone for what inlet reports on purpose: a golden diff or contract violation
        (AssertionError) and inlet's own errors, such as a request that was never recorded. Anything else
        is a bug and keeps its traceback, in pytest's short style unless ``--tb`` says otherwise."""
        from inlet.core.errors import InletError

        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        if isinstance(excinfo.value, InletError):
            return f"{self.case}: {type(excinfo.value).__name__}: {excinfo.value}"
        if style is None and self.config.getoption("tbstyle", "auto") == "auto":
            style = "short"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, self.name
