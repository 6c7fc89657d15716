"""`inlet check` names the file, the key and what was expected, for every kind of broken config."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

import inlet.connectors
import inlet.core
from inlet.connectors.fhir.bulk import FhirBulkSettings
from inlet.core.cli import app
from inlet.core.config import KafkaSettings, RenamedKeys, SupervisorConfig, check_config, load_config
from inlet.core.connector import PluginSettings
from inlet.core.errors import ConfigError
from inlet.core.http import HttpSettings
from inlet.core.secrets import mask

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config"


def _integration(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "customer": "acme",
        "integration": "obs",
        "plugin": "fhir.observation_search",
        "zone": "Europe/Berlin",
        "settings": {"http": {"base_url": "https://ehr.acme.invalid/fhir"}},
    }
    doc.update(overrides)
    return doc


def _write(root: Path, name: str, doc: object | str) -> Path:
    (root / "integrations").mkdir(parents=True, exist_ok=True)
    path = root / "integrations" / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _check(root: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["check", "--config", str(root)])
    return result.exit_code, result.output


def test_the_bundled_example_is_valid() -> None:
    code, output = _check(EXAMPLE)
    assert code == 0, output
    assert "1 integration" in output


def test_bad_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "acme.yaml", "customer: acme\nsettings: [unclosed\n")
    code, output = _check(tmp_path)
    assert code == 2
    assert str(path) in output and "invalid YAML" in output and "line 3" in output


def test_unknown_plugin_names_the_key_and_suggests_the_closest(tmp_path: Path) -> None:
    path = _write(tmp_path, "acme.yaml", _integration(plugin="fhir.observation_serch"))
    code, output = _check(tmp_path)
    assert code == 2
    assert str(path) in output and "key plugin" in output
    assert "did you mean fhir.observation_search" in output


def test_missing_secret_names_the_variable_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_FHIR_TOKEN", raising=False)
    _write(
        tmp_path,
        "acme.yaml",
        _integration(
            settings={
                "http": {
                    "base_url": "https://ehr.acme.invalid/fhir",
                    "auth": {"kind": "bearer", "token": {"env": "ACME_FHIR_TOKEN"}},
                }
            }
        ),
    )
    code, output = _check(tmp_path)
    assert code == 2
    assert "key settings.http.auth.bearer.token" in output
    assert "environment variable ACME_FHIR_TOKEN is not set" in output


def test_a_literal_secret_is_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "acme.yaml",
        _integration(
            settings={
                "http": {
                    "base_url": "https://ehr.acme.invalid/fhir",
                    "auth": {"kind": "bearer", "token": "s3cr3t-literal"},
                }
            }
        ),
    )
    code, output = _check(tmp_path)
    assert code == 2
    assert "settings.http.auth.bearer.token" in output and "{env: VARIABLE} or {file: PATH}" in output


def test_secret_from_file_is_resolved_and_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("tok-1234567890\n")
    _write(
        tmp_path,
        "acme.yaml",
        _integration(
            settings={
                "http": {
                    "base_url": "https://ehr.acme.invalid/fhir",
                    "auth": {"kind": "bearer", "token": {"file": str(secret_file)}},
                }
            }
        ),
    )
    _, [item] = load_config(tmp_path)
    assert item.settings.http.auth.token.get_secret_value() == "tok-1234567890"  # type: ignore[attr-defined]
    assert "tok-1234567890" not in repr(item.settings)
    assert mask("Authorization: Bearer tok-1234567890") == "Authorization: Bearer ***"


def test_wrong_types_and_unknown_keys_say_what_was_expected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "acme.yaml",
        _integration(
            poll_interval_seconds="soon",
            zone="Mars/Olympus",
            settings={"http": {"base_url": "x"}, "page_size": 0, "pagesize": 10},
        ),
    )
    _, _, errors = check_config(tmp_path)
    text = "\n".join(map(str, errors))
    assert all(e.file == str(path) for e in errors)
    assert "key poll_interval_seconds" in text and "valid number" in text and "'soon'" in text
    assert "key zone" in text and "not an IANA time zone" in text
    keys = {e.key for e in errors}
    assert "settings.page_size" in keys or "poll_interval_seconds" in keys


def test_settings_errors_are_found_once_the_top_level_is_fixed(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "acme.yaml",
        _integration(settings={"http": {"base_url": "https://x.invalid"}, "page_size": 0, "pagesize": 1}),
    )
    _, _, errors = check_config(tmp_path)
    keys = {e.key for e in errors}
    assert keys == {"settings.page_size", "settings.pagesize"}
    messages = {e.key: str(e) for e in errors}
    assert "greater than or equal to 1" in messages["settings.page_size"]
    assert "Extra inputs are not permitted" in messages["settings.pagesize"]


def test_every_broken_file_is_reported_in_one_run(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "just a string")
    _write(tmp_path, "b.yaml", _integration(customer="Bad Name!"))
    (tmp_path / "inlet.yaml").write_text("sink: carrier-pigeon\n")
    _, _, errors = check_config(tmp_path)
    files = {Path(e.file or "").name for e in errors}
    assert files == {"a.yaml", "b.yaml", "inlet.yaml"}
    with pytest.raises(ConfigError):
        load_config(tmp_path)


def test_duplicate_integrations_and_missing_directory(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", _integration())
    _write(tmp_path, "b.yaml", _integration())
    _, loaded, errors = check_config(tmp_path)
    assert len(loaded) == 1 and "acme/obs is already defined" in str(errors[0])
    code, output = _check(tmp_path / "nope")
    assert code == 2 and "does not exist" in output


# -- source fidelity (issue: what check passes, run must not refuse; paths; what an integration produces) ----------


@pytest.mark.parametrize("url", ["127.0.0.1:8080/fhir", "ehr.acme.invalid/fhir", "ftp://ehr.acme.invalid/fhir"])
def test_check_refuses_a_base_url_the_run_would_refuse(tmp_path: Path, url: str) -> None:
    path = _write(tmp_path, "acme.yaml", _integration(settings={"http": {"base_url": url}}))
    code, output = _check(tmp_path)
    assert code == 2
    text = " ".join(output.split())
    assert f"file {path}" in text and "key settings.http.base_url" in text
    assert "must be an absolute http(s) URL" in text


def test_check_refuses_a_broker_url_without_scheme(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "meters.yaml",
        {
            "customer": "acme",
            "integration": "meters",
            "plugin": "stadtwerke_nord.meters",
            "settings": {"mqtt": {"url": "127.0.0.1:1883", "topics": ["tele/#"]}},
        },
    )
    code, output = _check(tmp_path)
    assert code == 2 and "key settings.mqtt.url" in output and "expected mqtt://host:port" in " ".join(output.split())


def test_check_refuses_what_a_plugin_constructor_refuses(tmp_path: Path) -> None:
    # Klinikum Mitte's EHR writes Berlin wall time: its connector refuses any other zone when built.
    path = _write(
        tmp_path,
        "km.yaml",
        _integration(
            plugin="klinikum_mitte.encounters",
            zone="Europe/Vienna",
            settings={"http": {"base_url": "https://ehr.km.invalid/fhir"}, "resource_type": "Encounter"},
        ),
    )
    code, output = _check(tmp_path)
    text = " ".join(output.split())
    assert code == 2 and f"file {path}" in text and "key zone" in text and "must be Europe/Berlin" in text


def test_a_missing_zone_is_a_warning_saying_what_goes_to_the_dlq(tmp_path: Path) -> None:
    doc = _integration()
    doc.pop("zone")
    _write(tmp_path, "acme.yaml", doc)
    result = runner.invoke(app, ["check", "--config", str(tmp_path)])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "warning: acme/obs" in text and "no zone" in text and "go to the DLQ (stage map)" in text
    meters = tmp_path / "meters"
    _write(
        meters,
        "m.yaml",
        {
            "customer": "acme",
            "integration": "meters",
            "plugin": "mqtt_meter",
            "settings": {"mqtt": {"topics": ["tele/#"]}, "routes": [{"topic": "tele/+/SENSOR", "decoder": "tasmota"}]},
        },
    )
    _, loaded, errors = check_config(meters)
    assert errors == [] and len(loaded[0].warnings) == 1 and "'tele/+/SENSOR'" in loaded[0].warnings[0]


def test_state_dir_is_relative_to_the_config_directory_not_the_working_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INLET_STATE_DIR", raising=False)
    config = tmp_path / "deploy" / "config"
    _write(config, "acme.yaml", _integration())
    (config / "inlet.yaml").write_text("state_dir: state\n")
    for cwd in (tmp_path, config, tmp_path / "deploy"):
        monkeypatch.chdir(cwd)
        sup, _ = load_config(Path("deploy/config") if cwd == tmp_path else config)
        assert sup.state_dir == str(config / "state")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INLET_STATE_DIR", "elsewhere")  # an environment variable: relative to where it is set
    sup, _ = load_config(config)
    assert sup.state_dir == str(tmp_path / "elsewhere")


def test_integrations_lists_what_each_integration_produces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INLET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "250")
    _write(
        tmp_path,
        "cond.yaml",
        _integration(
            integration="conditions",
            plugin="fhir.search",
            settings={"http": {"base_url": "https://ehr.acme.invalid/fhir"}, "resource_type": "Condition"},
        ),
    )
    _write(
        tmp_path,
        "enc.yaml",
        _integration(
            integration="encounters",
            plugin="fhir.search",
            settings={
                "http": {"base_url": "https://ehr.acme.invalid/fhir"},
                "resource_type": "Encounter",
                "history_deletes": True,
            },
        ),
    )
    _, loaded, errors = check_config(tmp_path)
    assert errors == []
    produced = {i.config.key: [m.contract_name for m in i.produces] for i in loaded}
    assert produced == {
        "acme/conditions": ["clinical.condition"],
        "acme/encounters": ["clinical.encounter", "clinical.deletion"],
    }
    table = runner.invoke(app, ["integrations", "--config", str(tmp_path)])
    assert table.exit_code == 0
    assert "clinical.observation" not in table.output and "clinical.condition 1.0" in table.output


def _models_defined_in(*packages: ModuleType) -> list[type[BaseModel]]:
    """Every pydantic model whose class is defined in ``packages`` (all their modules imported), nested ones too."""
    names = tuple(f"{p.__name__}." for p in packages)
    for package in packages:
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            importlib.import_module(module.name)
    found: list[type[BaseModel]] = []
    todo = BaseModel.__subclasses__()
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__.startswith(names)]


def test_every_settings_model_has_the_one_frozen_closed_base() -> None:
    # The config is declared once, on PluginSettings; a model with a copy of its own could drift from it unnoticed.
    models = _models_defined_in(inlet.core, inlet.connectors)
    assert {KafkaSettings, SupervisorConfig, HttpSettings, FhirBulkSettings} <= set(models)
    settings = [m for m in models if m is not RenamedKeys]  # a mixin: a validator, no config of its own
    assert [m.__qualname__ for m in settings if not issubclass(m, PluginSettings)] == []
    config = {m.__qualname__: (m.model_config.get("extra"), m.model_config.get("frozen")) for m in settings}
    assert {name: c for name, c in config.items() if c != ("forbid", True)} == {}  # no subclass loosens it
