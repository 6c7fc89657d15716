"""`inlet check` names the file, the key and what was expected, for every kind of broken config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inlet.core.cli import app
from inlet.core.config import check_config, load_config
from inlet.core.errors import ConfigError
from inlet.core.secrets import mask

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config"


def _integration(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "customer": "acme", "integration": "obs", "plugin": "fhir.observation_search", "zone": "Europe/Berlin",
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
    _write(tmp_path, "acme.yaml", _integration(settings={"http": {
        "base_url": "https://ehr.acme.invalid/fhir", "auth": {"kind": "bearer", "token": {"env": "ACME_FHIR_TOKEN"}}}}))
    code, output = _check(tmp_path)
    assert code == 2
    assert "key settings.http.auth.bearer.token" in output
    assert "environment variable ACME_FHIR_TOKEN is not set" in output


def test_a_literal_secret_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "acme.yaml", _integration(settings={"http": {
        "base_url": "https://ehr.acme.invalid/fhir", "auth": {"kind": "bearer", "token": "s3cr3t-literal"}}}))
    code, output = _check(tmp_path)
    assert code == 2
    assert "settings.http.auth.bearer.token" in output and "{env: VARIABLE} or {file: PATH}" in output


def test_secret_from_file_is_resolved_and_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("tok-1234567890\n")
    _write(tmp_path, "acme.yaml", _integration(settings={"http": {
        "base_url": "https://ehr.acme.invalid/fhir", "auth": {"kind": "bearer", "token": {"file": str(secret_file)}}}}))
    _, [item] = load_config(tmp_path)
    assert item.settings.http.auth.token.get_secret_value() == "tok-1234567890"  # type: ignore[attr-defined]
    assert "tok-1234567890" not in repr(item.settings)
    assert mask("Authorization: Bearer tok-1234567890") == "Authorization: Bearer ***"


def test_wrong_types_and_unknown_keys_say_what_was_expected(tmp_path: Path) -> None:
    path = _write(tmp_path, "acme.yaml", _integration(poll_interval="soon", zone="Mars/Olympus",
                                                     settings={"http": {"base_url": "x"}, "page_size": 0,
                                                               "pagesize": 10}))
    _, _, errors = check_config(tmp_path)
    text = "\n".join(map(str, errors))
    assert all(e.file == str(path) for e in errors)
    assert "key poll_interval" in text and "valid number" in text and "'soon'" in text
    assert "key zone" in text and "not an IANA time zone" in text
    keys = {e.key for e in errors}
    assert "settings.page_size" in keys or "poll_interval" in keys


def test_settings_errors_are_found_once_the_top_level_is_fixed(tmp_path: Path) -> None:
    _write(tmp_path, "acme.yaml", _integration(settings={"http": {"base_url": "x"}, "page_size": 0, "pagesize": 1}))
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
