"""Dual publishing across contract majors: events on both topics of the real Kafka broker, until retired."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import ClassVar

import orjson
import pytest

from inlet.contracts.base import Contract, converter, unregister_converter
from inlet.contracts.clinical_observation import ObservationV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings
from inlet.core.connector import Batch
from inlet.core.envelope import Enveloper
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.sinks.kafka import KafkaSink
from tests.helpers import ListConnector, consume

pytestmark = pytest.mark.kafka


class ObservationV9(Contract):
    """A breaking successor for the test: codes flattened to ``system|code`` strings. Major 9, not 2: the real
    ``clinical.observation`` 2.0 exists (exact decimals, dual-published as 1.0 by its own converter)."""

    contract_name: ClassVar[str] = "clinical.observation"
    contract_version: ClassVar[str] = "9.0"

    observation_id: str
    patient_id: str | None
    status: str
    codes: list[str]

    def entity_key(self) -> str:
        return self.patient_id or self.observation_id


def upcast(old: ObservationV1) -> ObservationV9:
    return ObservationV9(
        observation_id=old.observation_id,
        patient_id=old.patient_id,
        status=old.status,
        codes=[f"{c.system}|{c.code}" for c in old.code],
    )


async def test_v1_and_v2_are_published_side_by_side_until_the_old_major_is_retired(
    kafka_bootstrap: str, kafka_sinks: Callable[[KafkaSettings], KafkaSink], checkpoint_store: CheckpointStore
) -> None:
    prefix = f"dual-{uuid.uuid4().hex[:8]}."
    env = Enveloper("acme", "obs", topic_template=prefix + "{name}.v{major}")
    records = [{"id": f"o{i}", "patient": f"p{i % 3}"} for i in range(20)]
    native_v1_ids = [e.id for e in process_batch(ListConnector([]), env, Batch(records, {}))[0]]
    converter(ObservationV1, ObservationV9)(upcast)
    sink = kafka_sinks(KafkaSettings(bootstrap=kafka_bootstrap))
    store = checkpoint_store
    try:
        connector = ListConnector([records])
        await Pipeline(connector, env, sink, store, Stats("acme", "obs")).run(None, asyncio.Event())
    finally:
        unregister_converter(ObservationV1, ObservationV9)
    # Retired: a later record is published as v1 only.
    late = ListConnector([records, [{"id": "late", "patient": "p1"}]])
    await Pipeline(late, env, sink, store, Stats("acme", "obs")).run({"batch": 0}, asyncio.Event())
    await sink.stop()  # flushed before reading back; the fixtures close the sink and the store again if a step failed

    v1 = await consume(kafka_bootstrap, [f"{prefix}clinical.observation.v1"], expect=21)
    v9 = await consume(kafka_bootstrap, [f"{prefix}clinical.observation.v9"], idle=2.0)
    assert [orjson.loads(r.value)["observation_id"] for r in v1] == [f"o{i}" for i in range(20)] + ["late"]
    assert [orjson.loads(r.value)["observation_id"] for r in v9] == [f"o{i}" for i in range(20)]
    v1_ids = [dict(r.headers)["ce_id"].decode() for r in v1][:20]
    v9_ids = [dict(r.headers)["ce_id"].decode() for r in v9]
    assert v1_ids == native_v1_ids, "a v1 event keeps its id while v9 is published next to it"
    assert not set(v1_ids) & set(v9_ids), "the v9 event of a record is a different event"
    second = v9[1]
    assert dict(second.headers)["ce_dataschema"] == b"urn:inlet:contract:clinical.observation:9.0"
    assert orjson.loads(second.value)["codes"] == ["http://loinc.org|8302-2"]
    assert second.key == b"p1"


def test_a_converter_must_link_two_majors_of_one_contract() -> None:
    with pytest.raises(ValueError, match="links two majors"):
        converter(ObservationV1, ObservationV1)
