"""The plugin author's CLI: --version, the public API, one integration at a time (--only, offline replay with no
secret), where the config directory is found, `inlet plugins`, and `inlet new customer` (fresh and --from)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from typer.testing import CliRunner

import inlet
from inlet.core.cli import app
from inlet.core.config import find_config_dir
from inlet.core.errors import ConfigError
from inlet.core.registry import plugins

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = ROOT / "examples" / "customers"
SECRET_ENVS = ("SPITAL_WIEN_SMART_KEY", "INLET_CONFIG", "INLET_KAFKA_BOOTSTRAP")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Invoke the CLI in-process with no customer secret, no INLET_CONFIG and state under tmp_path."""
    for name in SECRET_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INLET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    saved = structlog.get_config()  # commands configure logging onto the runner's stream, closed afterwards

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), catch_exceptions=False)

    yield invoke
    structlog.configure(**saved)


def test_version_is_the_installed_distributions(cli: Any) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"inlet {version('inlet')}"


def test_the_public_api_resolves_every_name_from_its_home_module() -> None:
    names = [n for n in inlet.__all__ if n != "__version__"]
    assert len(names) > 40 and sorted(names) == sorted(inlet._WHERE)
    for name in names:
        value = getattr(inlet, name)
        home = sys.modules[inlet._WHERE[name]]
        assert getattr(home, name) is value, name
    with pytest.raises(AttributeError, match="no attribute 'core_cli'"):
        _ = inlet.core_cli


def test_replay_of_one_integration_needs_no_other_customers_secret(cli: Any) -> None:
    # The reproduction: Spital Wien's key is not set, and Stadtwerke Nord's replay must not care.
    result = cli(
        "replay",
        "stadtwerke-nord/meters",
        "--config",
        str(CUSTOMERS),
        "--fixtures",
        str(ROOT / "fixtures" / "stadtwerke-nord" / "meters"),
    )
    assert result.exit_code == 0, result.output
    assert "equal the goldens" in result.output


def test_offline_replay_needs_no_secret_even_for_its_own_signing_key(cli: Any) -> None:
    result = cli(
        "replay",
        "spital-wien/hourly",
        "--config",
        str(CUSTOMERS),
        "--fixtures",
        str(ROOT / "fixtures" / "spital-wien" / "hourly"),
    )
    assert result.exit_code == 0, result.output
    assert "equal the goldens" in result.output


def test_check_without_the_secret_still_fails_naming_it(cli: Any) -> None:
    result = cli("check", "--config", str(CUSTOMERS))
    assert result.exit_code == 2
    assert "SPITAL_WIEN_SMART_KEY is not set" in result.output


def _config_with_a_broken_neighbour(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "examples" / "config", config)
    example = config / "integrations" / "example-clinic.observations.yaml"
    example.write_text(example.read_text().replace("../../fixtures", str(ROOT / "fixtures")))
    (config / "integrations" / "broken.yaml").write_text("customer: other\nintegration: feed\nplugin: nope.nothing\n")
    return config


def test_only_loads_the_chosen_integration_and_ignores_a_broken_neighbour(cli: Any, tmp_path: Path) -> None:
    config = _config_with_a_broken_neighbour(tmp_path)
    everything = cli("check", "--config", str(config))
    assert everything.exit_code == 2 and "unknown plugin 'nope.nothing'" in everything.output
    only = cli("check", "--config", str(config), "--only", "example-clinic/observations")
    assert only.exit_code == 0, only.output
    assert "1 integration(s)" in only.output
    run = cli("run", "--config", str(config), "--only", "example-clinic/observations", "--once")
    assert run.exit_code == 0, run.output
    assert "example-clinic/observations" in run.output and "other/feed" not in run.output


def test_only_with_an_unknown_key_suggests_the_closest(cli: Any, tmp_path: Path) -> None:
    config = _config_with_a_broken_neighbour(tmp_path)
    result = cli("check", "--config", str(config), "--only", "example-clinic/observation")
    assert result.exit_code == 2
    assert "no integration example-clinic/observation here; did you mean example-clinic/observations?" in " ".join(
        result.output.split()
    )


def test_the_config_directory_is_found_from_the_working_directory_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "deep" / "er").mkdir(parents=True)
    (project / "inlet.yaml").write_text("sink: outbox\n")
    assert find_config_dir(None, cwd=project / "deep" / "er") == project
    assert find_config_dir(tmp_path / "given", cwd=project) == tmp_path / "given"
    with pytest.raises(ConfigError) as info:
        find_config_dir(None, cwd=tmp_path)
    message = str(info.value)
    assert "--config" in message and "INLET_CONFIG" in message and str(tmp_path) in message


def test_commands_without_config_use_inlet_config_or_the_working_directory(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config_with_a_broken_neighbour(tmp_path)
    (config / "integrations" / "broken.yaml").unlink()
    monkeypatch.chdir(config / "integrations")
    assert cli("check").exit_code == 0
    monkeypatch.chdir(tmp_path)
    nowhere = cli("check")
    assert nowhere.exit_code == 2 and "no config directory" in nowhere.output
    monkeypatch.setenv("INLET_CONFIG", str(config))
    assert cli("check").exit_code == 0


def test_plugins_lists_family_distribution_and_contracts(cli: Any) -> None:
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in map(orjson.loads, result.stdout.splitlines())}
    assert rows["example_clinic.observations"]["family"] == "fhir"
    assert rows["netz_ost.substations"]["family"] == "mqtt_meter"
    assert rows["spital_wien.bulk"]["family"] == "fhir_bulk"
    assert rows["example_clinic.observations"]["distribution"] == "inlet"
    [contract] = rows["example_clinic.observations"]["contracts"]
    assert contract.startswith("clinical.observation ")
    assert set(rows) == set(plugins())


def test_plugins_show_documents_every_setting_from_the_model(cli: Any) -> None:
    table = cli("plugins", "show", "stadtwerke_nord.meters")
    assert table.exit_code == 0
    text = " ".join(table.stdout.split())
    assert "mqtt.max_payload_bytes" in text and "Larger payloads are still delivered" in text
    assert "mqtt.keepalive_seconds" in text and ">= 5" in text
    schema = cli("plugins", "show", "example_clinic.observations", "--schema")
    doc = orjson.loads(schema.stdout)
    assert set(doc["properties"]) >= {"http", "page_size", "resource_type", "since"}
    unknown = cli("plugins", "show", "example_clinic.observation")
    assert unknown.exit_code == 2 and "did you mean example_clinic.observations" in unknown.output


_PROBE = """
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("scaffolded", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["scaffolded"] = module
spec.loader.exec_module(module)
from inlet.core.config import check_config
only = sys.argv[3:] or None
_, loaded, errors = check_config(Path(sys.argv[2]), only=only)
refusals = {}
for item in loaded:
    connector = item.build()
    for hook in ("filter", "map"):
        if hook in type(connector).__dict__:
            try:
                getattr(connector, hook)({"resourceType": "Observation"})
            except Exception as exc:
                refusals[hook] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"loaded": [[i.config.key, i.plugin.__name__] for i in loaded],
                  "errors": [str(e) for e in errors], "refusals": refusals}))
"""


def _probe(module: Path, config: Path, *only: str) -> dict[str, Any]:
    """Import a generated plugin module in a fresh interpreter (its class must not leak into this process's
    registry), check the config with it, and call its hook stubs."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(module), str(config), *only],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in SECRET_ENVS},
    )
    assert result.returncode == 0, result.stderr
    return dict(orjson.loads(result.stdout.splitlines()[-1]))


def _ruff(path: Path) -> subprocess.CompletedProcess[str]:
    """The project's ruff rules on a generated module, read as in-tree code (where `inlet` is first-party)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--config",
            "lint.isort.known-first-party = ['inlet']",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "inlet.yaml").write_text("sink: outbox\n")
    return tmp_path


def _new(cli: Any, project: Path, *args: str) -> Any:
    return cli(
        "new",
        "customer",
        *args,
        "--config",
        str(project / "config"),
        "--plugins-dir",
        str(project / "plugins"),
        "--fixtures",
        str(project / "fixtures"),
    )


def test_new_fhir_customer_is_lint_clean_valid_and_its_stubs_refuse(cli: Any, project: Path) -> None:
    result = _new(cli, project, "acme-hospital", "--family", "fhir")
    assert result.exit_code == 0, result.output
    module_path = project / "plugins" / "acme_hospital.py"
    yaml_path = project / "config" / "integrations" / "acme-hospital.observations.yaml"
    assert (project / "fixtures" / "acme-hospital" / "observations" / "README.md").is_file()
    lint = _ruff(module_path)
    assert lint.returncode == 0, lint.stdout
    probe = _probe(module_path, project / "config")
    assert probe["errors"] == [] and probe["loaded"] == [["acme-hospital/observations", "AcmeHospitalObservations"]]
    assert probe["refusals"]["map"].startswith(
        "ConfigError: acme_hospital.observations: hook map() is not configured yet"
    )
    assert "hook filter() is not configured yet" in probe["refusals"]["filter"]
    # Every option of the family's settings model is in the YAML, documented (generated, so it cannot drift).
    text = yaml_path.read_text()
    from inlet.connectors.fhir.search import FhirSearchSettings
    from inlet.core.http import HttpSettings
    from inlet.core.ratelimit import RateLimitSettings

    for model in (FhirSearchSettings, HttpSettings, RateLimitSettings):
        for name in model.model_fields:
            assert f"# {name} (" in text, name
    assert "Per request: connect, read and write each." in text


def test_new_meter_customer_fails_check_until_its_routes_are_written(cli: Any, project: Path) -> None:
    result = _new(cli, project, "werk-sued", "--family", "mqtt_meter")
    assert result.exit_code == 0, result.output
    module_path = project / "plugins" / "werk_sued.py"
    lint = _ruff(module_path)
    assert lint.returncode == 0, lint.stdout
    probe = _probe(module_path, project / "config")
    assert len(probe["errors"]) == 1
    assert "werk_sued.meters: the topic routes are not configured yet" in probe["errors"][0]


def test_new_customer_from_an_existing_one_renames_it(cli: Any, project: Path) -> None:
    shutil.copytree(CUSTOMERS / "integrations", project / "config" / "integrations")
    shutil.copytree(ROOT / "connectors" / "customers", project / "plugins")
    result = _new(cli, project, "stadtwerke-west", "--from", "stadtwerke-nord")
    assert result.exit_code == 0, result.output
    module_path = project / "plugins" / "stadtwerke_west.py"
    source = module_path.read_text()
    assert "class StadtwerkeWestMeters" in source and '"stadtwerke_west.meters"' in source
    assert "Stadtwerke Nord" not in source and "stadtwerke_nord" not in source
    yaml_text = (project / "config" / "integrations" / "stadtwerke-west.meters.yaml").read_text()
    assert "customer: stadtwerke-west" in yaml_text and "plugin: stadtwerke_west.meters" in yaml_text
    assert (project / "fixtures" / "stadtwerke-west" / "meters" / "README.md").is_file()
    probe = _probe(module_path, project / "config", "stadtwerke-west/meters")
    assert probe["errors"] == [] and probe["loaded"] == [["stadtwerke-west/meters", "StadtwerkeWestMeters"]]


def test_new_refuses_to_overwrite_and_names_unknown_families(cli: Any, project: Path) -> None:
    assert _new(cli, project, "acme-hospital", "--family", "fhir").exit_code == 0
    again = _new(cli, project, "acme-hospital", "--family", "fhir")
    assert again.exit_code == 2 and "not overwriting what exists" in again.output
    unknown = _new(cli, project, "acme-two", "--family", "hl7")
    assert unknown.exit_code == 2 and "unknown family 'hl7'" in unknown.output and "mqtt_meter" in unknown.output
    both = _new(cli, project, "acme-three")
    assert both.exit_code == 2 and "exactly one of --family" in both.output
    families = cli("new", "families")
    assert all(f in families.stdout for f in ("fhir", "fhir_bulk", "mqtt_meter"))


def test_python_dash_m_inlet_runs_the_cli() -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENVS}
    result = subprocess.run(
        [sys.executable, "-m", "inlet", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stdout.startswith("inlet ")


def test_the_plugin_authors_page_lists_exactly_the_public_api() -> None:
    table = (ROOT / "docs" / "plugin-authors.md").read_text().split("| group | names |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", table))
    assert documented == set(inlet.__all__) - {"__version__"}
