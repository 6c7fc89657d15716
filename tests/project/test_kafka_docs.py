"""The Kafka documentation says what the code does: the error table of ``docs/kafka.md`` is ``ERROR_ACTIONS`` (same
classes, same actions, same order), its topic defaults are ``core.topics.DEFAULTS``, and every Kafka, topics, relay
and MQTT TLS setting is in the configuration reference with its default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from inlet.core.config import FleetSettings, KafkaSettings, RelaySettings, TopicsSettings
from inlet.core.mqtt import MqttSettings
from inlet.core.sinks.kafka import ERROR_ACTIONS
from inlet.core.topics import DEFAULTS

DOCS = Path(__file__).resolve().parents[2] / "docs"
KAFKA_PAGE = (DOCS / "kafka.md").read_text(encoding="utf-8")
CONFIGURATION = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")


def _rows(text: str, first: str) -> list[list[str]]:
    """The cells of the table rows whose first cell matches ``first`` (a regex), backticks removed."""
    out = []
    for line in text.splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first, cells[0]):
            out.append(cells)
    return out


def test_the_documented_error_table_is_error_actions() -> None:
    documented = [(cells[0], cells[1]) for cells in _rows(KAFKA_PAGE, r"\w+") if cells[1] in ("retry", "dlq", "fatal")]
    assert documented == [(cls.__name__, action) for cls, action in ERROR_ACTIONS.items()], (
        "docs/kafka.md, 'The error table': make its rows ERROR_ACTIONS of core/sinks/kafka.py, in order"
    )


def test_the_documented_topic_defaults_are_the_built_in_ones() -> None:
    documented = {cells[0]: cells[1:4] for cells in _rows(KAFKA_PAGE, r"contract|dlq|drift|positions")}
    assert set(documented) == set(DEFAULTS)
    for kind, settings in DEFAULTS.items():
        partitions, retention, cleanup = documented[kind]
        assert int(partitions) == settings.partitions, kind
        if settings.retention_ms is None:  # compacted: no time retention set
            assert retention == "none", kind
        else:
            assert int(retention.split()[0]) == settings.retention_ms, kind
        assert cleanup == settings.cleanup_policy, kind


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field.default for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("prefix", "model"),
    [("kafka", KafkaSettings), ("relay", RelaySettings), ("topics", TopicsSettings), ("fleet", FleetSettings)],
)
def test_every_setting_is_in_the_configuration_reference(prefix: str, model: type[BaseModel]) -> None:
    documented = {cells[0]: cells[1] for cells in _rows(CONFIGURATION, rf"{prefix}\.\w+")}
    assert {f"{prefix}.{name}" for name in model.model_fields} - set(documented) == set()
    for name, default in _defaults(model).items():
        cell = documented[f"{prefix}.{name}"]
        if isinstance(default, bool | int | float | str) and not cell.startswith(("none", "system")):
            assert yaml.safe_load(cell) == default, f"{prefix}.{name}: documented {cell!r}, default {default!r}"


def test_the_relay_settings_on_the_kafka_page_have_their_defaults() -> None:
    documented = {cells[0]: cells[1] for cells in _rows(KAFKA_PAGE, r"relay\.\w+")}
    assert set(documented) == {f"relay.{name}" for name in RelaySettings.model_fields}
    for name, default in _defaults(RelaySettings).items():
        assert yaml.safe_load(documented[f"relay.{name}"]) == default, name


def test_the_mqtt_tls_settings_are_documented() -> None:
    tls = {name for name in MqttSettings.model_fields if name.startswith("tls_")}
    in_reference = {cells[0] for cells in _rows(CONFIGURATION, r"settings\.mqtt\.tls_\w+")}
    assert {f"settings.mqtt.{name}" for name in tls} <= in_reference
    on_the_page = {name for cells in _rows(KAFKA_PAGE, r"tls_\w+(, tls_\w+)*") for name in cells[0].split(", ")}
    assert tls <= on_the_page
