"""Generated contract tests: one test per fixture directory, with no code per customer.

``fixture_cases(config_dirs, fixtures_root)`` finds every configured integration that has a fixture
directory ``<fixtures_root>/<customer>/<integration>/`` holding ``http.jsonl``, ``mqtt.jsonl`` or ``mllp.jsonl``;
``check_fixture(case)`` replays it offline and asserts what CI must hold for every integration:

- the replayed events equal the golden events (the failure shows the unified diff, so a plugin author
  sees which record changed and how; ``inlet replay --update`` rewrites them after review);
- every event validates against the contract its ``ce_dataschema`` names (DLQ records and drift alerts
  excepted: they carry the original payload);
- the expected DLQ records are part of the goldens, so a new failure or a vanished one is a diff too;
- an HL7 v2 (MLLP) fixture is acknowledged as recorded: the same ACK code for every message.

Use it from a test module (``tests/test_fixtures.py``)::

    @pytest.mark.parametrize("case", fixture_cases([...]), ids=str)
    def test_fixture(case): check_fixture(case)

or, in a plugin package, with no test module at all: inlet's pytest plugin (:mod:`inlet.pytest_plugin`)
makes the same tests from ``inlet_config`` / ``inlet_fixtures`` in ``[tool.pytest.ini_options]``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from inlet import contracts
from inlet.core.config import LoadedIntegration, check_config, find_config_dir
from inlet.core.errors import ConfigError
from inlet.core.fixtures import golden_diff, replay
from inlet.core.recording import ReplayMiss

__all__ = ["FixtureCase", "check_fixture", "fixture_cases"]


@dataclass(frozen=True)
class FixtureCase:
    """One integration and its fixture directory."""

    integration: LoadedIntegration
    fixtures: Path

    def __str__(self) -> str:
        return self.integration.config.key


def fixture_cases(config_dirs: Iterable[Path], fixtures_root: Path) -> list[FixtureCase]:
    """Every configured integration with recorded fixtures (config errors fail loudly, not silently skip).

    Loaded offline: a secret the replay does not need may be absent (CI holds no customer credential).
    """
    cases = []
    for config in config_dirs:
        _, loaded, errors = check_config(config, offline=True)
        if errors:
            raise AssertionError("\n".join(map(str, errors)))
        for item in loaded:
            fixtures = fixtures_root / item.config.customer / item.config.integration
            if any((fixtures / name).exists() for name in ("http.jsonl", "mqtt.jsonl", "mllp.jsonl")):
                cases.append(FixtureCase(item, fixtures))
    return cases


def _shown(path: Path, here: Path) -> str:
    """``path`` as typed in ``here``: relative when it lies below, else absolute; quoted for a shell."""
    return shlex.quote(str(path.relative_to(here)) if path.is_relative_to(here) else str(path))


def _update_command(case: FixtureCase) -> str:
    """``inlet replay KEY --update``, run from the working directory: with ``--config`` / ``--fixtures`` only
    when the CLI would not pick the case's directories by itself (``INLET_CONFIG`` or the nearest
    ``inlet.yaml`` upwards; ``fixtures/KEY``). ``--update`` comes right after the key, so the short form
    stays a prefix of the long one."""
    here = Path.cwd().resolve()
    config = case.integration.context.config_root.resolve()
    try:
        given = os.environ.get("INLET_CONFIG")
        default_config: Path | None = find_config_dir(Path(given) if given else None, cwd=here).resolve()
    except ConfigError:
        default_config = None
    parts = ["inlet", "replay", str(case), "--update"]
    if config != default_config:
        parts += ["--config", _shown(config, here)]
    fixtures = case.fixtures.resolve()
    if fixtures != (here / "fixtures" / str(case)).resolve():
        parts += ["--fixtures", _shown(fixtures, here)]
    return " ".join(parts)


def check_fixture(case: FixtureCase) -> None:
    """Replay the fixture and assert goldens and contracts; the message says what to do."""
    try:
        actual = replay(case.integration, case.fixtures)
    except ReplayMiss as exc:
        raise AssertionError(f"{case}: {exc}") from None
    diff = golden_diff(case.fixtures, actual)
    if diff:
        raise AssertionError(
            f"{case}: replaying the recording in {case.fixtures} no longer gives the golden events. If the change "
            f"is intended, review it and run `{_update_command(case)}`.\n{diff}"
        )
    for i, doc in enumerate(actual):
        headers = doc["headers"]
        if headers.get("ce_type") in ("inlet.dlq", "inlet.drift"):
            continue
        _, _, name, version = headers["ce_dataschema"].rsplit(":", 3)
        model = contracts.get_contract(name, version)
        try:
            model.model_validate(doc["value"])
        except ValueError as exc:
            raise AssertionError(
                f"{case}: event {i} ({headers.get('ce_subject')}) breaks {name} {version}: {exc}"
            ) from exc
