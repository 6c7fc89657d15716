"""Settings names say their unit: a duration is ``<name>_seconds``, unless it mirrors a Kafka config (``_ms``).

Every pydantic model of ``inlet.core`` and ``inlet.connectors`` is walked, so a new settings field is checked
without being listed here. Old keys (``RenamedKeys``) still load, converted, with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

import inlet.connectors
import inlet.core
from inlet.connectors.fhir.search import FhirSearchSettings
from inlet.core.config import IntegrationConfig, RelaySettings, RenamedKeys, SupervisorConfig, load_config
from inlet.core.errors import ConfigError
from inlet.core.http import HttpSettings
from inlet.core.mllp import MllpSettings
from inlet.core.mqtt import MqttSettings
from inlet.core.ratelimit import RateLimitSettings

DURATION_WORD = re.compile(
    r"interval|timeout|backoff|linger|pause|delay|ttl|retention|idle|wait|age|period|lifetime|grace|keepalive"
    r"|deadline|overlap|poll|expiry|refresh|cooldown"
)
"""A field is a duration when one of the words of its name (split at ``_``) is one of these."""


def _is_duration(field: str) -> bool:
    return any(DURATION_WORD.fullmatch(word) for word in field.split("_"))


KAFKA_MS = {
    ("KafkaSettings", "linger_ms"),  # linger.ms
    ("KafkaSettings", "request_timeout_ms"),  # request.timeout.ms
    ("TopicSettings", "retention_ms"),  # retention.ms
}
"""Keys that mirror a Kafka client or topic config keep Kafka's name and unit: users copy them from its docs."""


def _models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for package in (inlet.core, inlet.connectors):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


MODELS = _models()


def test_the_walk_finds_the_settings_models() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"SupervisorConfig", "IntegrationConfig", "HttpSettings", "MqttSettings", "MllpSettings"} <= names
    assert {"RateLimitSettings", "RelaySettings", "FhirBulkSettings", "ErpODataSettings"} <= names


def test_every_duration_field_ends_in_seconds_or_mirrors_kafka() -> None:
    wrong = [
        f"{model.__module__}.{model.__name__}.{field}"
        for model in MODELS
        for field in model.model_fields
        if _is_duration(field) and not field.endswith("_seconds") and (model.__name__, field) not in KAFKA_MS
    ]
    assert wrong == [], "durations are <name>_seconds (a Kafka-mirrored key keeps _ms: list it in KAFKA_MS)"


def test_the_kafka_allowlist_names_real_duration_fields() -> None:
    fields = {(model.__name__, field) for model in MODELS for field in model.model_fields}
    assert fields >= KAFKA_MS
    assert all(_is_duration(field) for _, field in KAFKA_MS)


def test_every_renamed_key_names_a_field_and_no_field() -> None:
    renaming = [model for model in MODELS if issubclass(model, RenamedKeys) and model.renamed_keys]
    assert {SupervisorConfig, IntegrationConfig, RelaySettings, HttpSettings, RateLimitSettings} <= set(renaming)
    for model in renaming:
        for old, (new, _unit) in model.renamed_keys.items():
            assert new in model.model_fields and old not in model.model_fields, (model, old)


@pytest.mark.parametrize(
    ("model", "old", "value", "new", "expected"),
    [
        (RelaySettings, "retention_hours", 24, "retention_seconds", 86400),
        (RelaySettings, "retention_hours", None, "retention_seconds", None),
        (RelaySettings, "poll_interval", 0.25, "poll_interval_seconds", 0.25),
        (SupervisorConfig, "restart_backoff_max", 30, "restart_backoff_max_seconds", 30),
        (IntegrationConfig, "poll_interval", 60, "poll_interval_seconds", 60),
        (RateLimitSettings, "max_pause_minutes", 2.5, "max_pause_seconds", 150),
        (MllpSettings, "batch_linger_ms", 5, "batch_linger_seconds", 0.005),
        (MqttSettings, "batch_linger_ms", 20, "batch_linger_seconds", 0.02),
        (MqttSettings, "keepalive", 60, "keepalive_seconds", 60),
        (HttpSettings, "backoff_initial", 0.1, "backoff_initial_seconds", 0.1),
    ],
)
def test_an_old_key_still_loads_converted_with_a_deprecation_warning(
    model: type[BaseModel], old: str, value: object, new: str, expected: object
) -> None:
    required_keys: dict[type[BaseModel], dict[str, object]] = {
        IntegrationConfig: {"customer": "acme", "integration": "obs", "plugin": "fhir.observation_search"},
        MqttSettings: {"topics": ["meters/#"]},
        HttpSettings: {"base_url": "https://ehr.acme.invalid/fhir"},
    }
    required = required_keys.get(model, {})
    shown = "null" if expected is None else expected
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.* write {new}: {shown} instead of {old}"):
        loaded = model.model_validate({**required, old: value})
    assert getattr(loaded, new) == expected
    with pytest.raises(ValidationError, match=rf"{old} and {new} are both given"):
        model.model_validate({**required, old: value, new: expected})


def test_old_keys_in_a_config_directory_load_nested_and_name_the_file_when_doubled(tmp_path: Path) -> None:
    (tmp_path / "integrations").mkdir()
    (tmp_path / "inlet.yaml").write_text(yaml.safe_dump({"relay": {"retention_hours": 1}}))
    integration = {
        "customer": "acme",
        "integration": "obs",
        "plugin": "fhir.observation_search",
        "zone": "UTC",
        "poll_interval": 5,
        "settings": {"http": {"base_url": "https://ehr.acme.invalid/fhir", "rate_limit": {"max_pause_minutes": 1}}},
    }
    (tmp_path / "integrations" / "acme.yaml").write_text(yaml.safe_dump(integration))
    with pytest.warns(DeprecationWarning) as caught:
        sup, (item,) = load_config(tmp_path)
    assert {str(w.message).split(" ", 1)[0] for w in caught} == {
        "retention_hours",
        "poll_interval",
        "max_pause_minutes",
    }
    assert sup.relay.retention_seconds == 3600 and item.config.poll_interval_seconds == 5
    assert isinstance(item.settings, FhirSearchSettings) and item.settings.http.rate_limit.max_pause_seconds == 60

    integration["poll_interval_seconds"] = 5
    (tmp_path / "integrations" / "acme.yaml").write_text(yaml.safe_dump(integration))
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="poll_interval and poll_interval_seconds"):
        load_config(tmp_path)
