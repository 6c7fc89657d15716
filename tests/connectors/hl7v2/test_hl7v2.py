"""HL7 v2 over MLLP: parser, mapping, identity, and the listener with a real sender process (ACK after the sink)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
from inlet.connectors.hl7v2.mapping import map_message, reference_range
from inlet.connectors.hl7v2.parser import ParseError, parse, split_batch
from inlet.contracts.clinical_observation_v3 import INTERPRETATION_V3, ObservationV3, ReferenceRange, to_v2
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import KafkaSettings
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.errors import DecodeError
from inlet.core.metrics import Stats
from inlet.core.mllp import MllpListener, MllpMessage, MllpSettings, frame
from inlet.core.pipeline import Pipeline, process_batch
from inlet.core.sinks.kafka import KafkaSink
from inlet.core.sinks.memory import MemorySink
from tests.helpers import GatedSink

ROOT = Path(__file__).resolve().parents[3]

ADT = (
    "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|INLET|ACME|20240331013000||ADT^A01^ADT_A01|MSG{n}|P|2.5.1\r"
    "EVN|A01|20240331013000\r"
    "PID|1||PAT{n}^^^GHH^MR~99{n}^^^SSN^SS||DOE^JANE||19800229|F|||1 MAIN ST^^BERLIN^^10115^DEU^H\r"
    "PV1|1|I|W1^1^1|||||||MED|||||||||VIS{n}|||||||||||||||||||||||||20240331013000\r"
)
ORU = (
    "MSH|^~\\&|LAB|GOOD HEALTH HOSPITAL|INLET|ACME|20240301101500+0100||ORU^R01|LAB{n}|P|2.5.1\r"
    "PID|1||PAT{n}^^^GHH^MR\r"
    "OBR|1|PL1|FI{n}|24331-1^Lipid panel^LN|||20240301100000\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||5.10|mmol/L^mmol/L^UCUM|3.0-5.0|H|||F\r"
    "OBX|2|SN|2085-9^HDL^LN||<^0.9|mmol/L^^UCUM|||||C\r"
    "OBX|3|ST|8251-1^Note^LN||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X41C3A9\\||||||P\r"
    "OBX|4|CWE|882-1^ABO^LN||A^Blood group A^L||||||X\r"
)


def ctx(zone: str = "Europe/Berlin", **kw: Any) -> IntegrationContext:
    return IntegrationContext("acme", "hl7", zone=zone, **kw)


def raw(text: str | bytes, serial: int = 1) -> MllpMessage:
    data = text.encode() if isinstance(text, str) else text
    return MllpMessage(data, serial, "test", datetime(2024, 3, 1, tzinfo=UTC))


# -- parser ---------------------------------------------------------------------------------------------------


def test_parser_delimiters_escapes_repetitions_and_separators() -> None:
    for sep in ("\r", "\n", "\r\n"):
        msg = parse(("\ufeff" + ORU.format(n=1).replace("\r", sep)).encode())
        assert msg.get("MSH", 9, 2) == "R01" and msg.get("MSH", 1) == "|" and msg.get("MSH", 2) == "^~\\&"
        obx = msg.all("OBX")[2]
        assert msg.value(obx, 5) == "a|b^c&d~e\\f\ngAé"
    msg = parse(ADT.format(n=1).encode())
    pid = msg.first("PID")
    assert pid is not None and [msg.components(r)[0] for r in msg.repetitions(pid, 3)] == ["PAT1", "991"]
    odd = parse(b"MSH^~\\|&^APP^FAC^^^2024^^ADT~A01^C1^P^2.3\rPID^1^^ID1\r")
    assert odd.get("MSH", 9, 1) == "ADT" and odd.get("PID", 3) == "ID1"
    three = parse(b"MSH|~\\&|APP|FAC|||2024||ADT^A01|C2|P|2.3\r")
    assert three.get("MSH", 10) == "C2"


def test_charset_from_msh18_and_the_default() -> None:
    latin = ("MSH|^~\\&|A|F|||2024||ADT^A01|C|P|2.5|||||DEU|8859/1\rPID|1||1||Müller").encode("latin-1")
    assert parse(latin).get("PID", 5) == "Müller"
    no_charset = ADT.format(n=1).replace("DOE", "Gröner").encode("latin-1")
    with pytest.raises(ParseError):
        parse(no_charset)
    assert parse(no_charset, "latin-1").get("PID", 5) == "Gröner"


def test_batches_are_split() -> None:
    batch = ("FHS|^~\\&|X\rBHS|^~\\&|X\r" + ADT.format(n=1) + ORU.format(n=2) + "BTS|2\rFTS|1\r").encode()
    parts = list(split_batch(batch))
    assert [parse(p).get("MSH", 10) for p in parts] == ["MSG1", "LAB2"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.text(alphabet="MSH|^~\\&\r\nPIDOBX0123AF.", max_size=300).map(str.encode))
def test_parser_and_mapping_raise_only_record_errors(data: bytes) -> None:
    connector = Hl7v2Connector(ctx(), Hl7v2Settings())
    connector._outcome = {}
    with contextlib.suppress(DecodeError, ValueError):  # RecordError subclasses and pydantic's ValidationError
        connector.map(connector.decode(raw(data)))
    assert connector._outcome[1][0] in ("AA", "AE", "AR")


# -- mapping and identity -------------------------------------------------------------------------------------


def _events(text: str, zone: str = "Europe/Berlin") -> list[Any]:
    connector = Hl7v2Connector(ctx(zone), Hl7v2Settings())
    connector._outcome = {}
    return list(connector.map(connector.decode(raw(text))))


def test_adt_a01_maps_patient_and_encounter_in_the_facility_zone() -> None:
    patient, encounter = _events(ADT.format(n=7))
    assert patient.patient_id == "PAT7" and patient.gender == "female"
    assert str(patient.birth_date) == "1980-02-29" and patient.postal_prefix == "101"
    assert patient.address_country == "DEU" and [i.system for i in patient.identifiers] == ["GHH", "SSN"]
    assert encounter.encounter_id == "VIS7" and encounter.status == "in-progress"
    assert encounter.encounter_class.code == "IMP"
    # 2024-03-31 01:30 Berlin is before the spring-forward gap: CET, UTC+1
    assert encounter.period_start == datetime(2024, 3, 31, 0, 30, tzinfo=UTC)
    assert encounter.period_start_precision == "second"
    a03 = ADT.format(n=7).replace("ADT^A01", "ADT^A03").replace("20240331013000\r", "20240331013000|202404021200\r")
    assert _events(a03)[1].status == "finished" and _events(a03)[1].period_end_precision == "minute"
    assert [e.status for e in _events(ADT.format(n=7).replace("ADT^A01", "ADT^A11"))] == ["cancelled"]


def test_oru_maps_types_units_status_and_exact_decimals() -> None:
    obs = _events(ORU.format(n=3))
    assert [o.status for o in obs] == ["final", "corrected", "preliminary", "cancelled"]
    nm = obs[0].value
    assert nm.value == "5.10" and nm.code == "mmol/L" and nm.system == "http://unitsofmeasure.org"
    assert obs[1].value.comparator == "<" and obs[1].value.value == "0.9"
    assert obs[2].value.value.startswith("a|b^c")
    assert obs[3].value.coding[0].code == "A"
    assert obs[0].code[0].system == "http://loinc.org"
    assert obs[0].effective_start == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)  # naive OBR-7 in Berlin
    assert obs[0].observation_id == "FI3/1/2093-3"


UCUM_MMOL = {"unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}


@pytest.mark.parametrize(
    ("obx7", "low", "high"),
    [
        ("3.5-5.0", "3.5", "5.0"),
        (" 3.5 - 5.0 ", "3.5", "5.0"),
        ("-2--1", "-2", "-1"),
        ("80 to 95", "80", "95"),
        ("<5", None, "5"),
        ("<= 0.9", None, "0.9"),
        ("> 10", "10", None),
        (">=2.079", "2.079", None),
        # text only, never guessed
        ("Negative", None, None),
        ("3,5-5,0", None, None),  # a decimal comma: 3.5-5.0 or 3-5 and 5-0?
        ("70_105", None, None),
        ("5.0-3.5", None, None),  # low above high: which one is the typo?
        ("<>5", None, None),
        ("1e3-2e3", None, None),
        ("3.5-", None, None),
        ("1" + "0" * 1200 + "-2" + "0" * 1200, None, None),  # longer than a contract decimal carries
    ],
)
def test_obx7_gets_bounds_only_from_numeric_forms_and_always_keeps_the_text(
    obx7: str, low: str | None, high: str | None
) -> None:
    got = reference_range(obx7, UCUM_MMOL)
    assert got is not None and got["text"] == obx7.strip()
    assert (got.get("low") or {}).get("value") == low and (got.get("high") or {}).get("value") == high
    assert all(got[side] == {"value": got[side]["value"], **UCUM_MMOL} for side in ("low", "high") if side in got)
    ReferenceRange.model_validate(got)  # the contract's shape
    assert reference_range("  ", UCUM_MMOL) is None


def test_obx8_flags_repeat_and_keep_unknown_codes_in_table_0078() -> None:
    obx = "OBX|{i}|NM|2093-3^Cholesterol^LN||5.10|mmol/L^mmol/L^UCUM|3.0-5.0|{flags}|||F\r"
    flags = ["H~A", "L^Below low normal^HL70078", "XX", "A^A^HL7nnnn~B^B", "^flag text only", "", "\\T\\"]
    text = ORU.format(n=9).split("OBX|")[0] + "".join(obx.format(i=i, flags=f) for i, f in enumerate(flags, 1))
    obs = [o.interpretation for o in _events(text) if o.contract_version == "3.0"]
    v3, v2 = INTERPRETATION_V3, "http://terminology.hl7.org/CodeSystem/v2-0078"
    assert [[(c.system, c.code, c.display) for i in f for c in i.coding] for f in obs] == [
        [(v3, "H", "High"), (v3, "A", "Abnormal")],
        [(v3, "L", "Low")],
        [(v2, "XX", None)],
        [("HL7nnnn", "A", "A"), (v3, "B", "Better")],
        [],
        [],
        [(v2, "&", None)],
    ]
    assert obs[1][0].text == "Below low normal" and obs[4][0].text == "flag text only" and not obs[4][0].coding


def test_oru_reference_range_and_flags_reach_v3_only() -> None:
    events = _events(ORU.format(n=3))
    v3 = [e for e in events if e.contract_version == "3.0"]
    assert len(v3) == 4 and isinstance(v3[0], ObservationV3)
    [rr] = v3[0].reference_range
    assert (rr.low and rr.low.value, rr.high and rr.high.value, rr.text) == ("3.0", "5.0", "3.0-5.0")
    assert rr.low is not None and rr.low.system == "http://unitsofmeasure.org" and rr.low.code == "mmol/L"
    assert [c.code for i in v3[0].interpretation for c in i.coding] == ["H"]
    assert v3[1].reference_range == [] and v3[1].interpretation == []
    assert to_v2(v3[0]).model_dump() == {
        k: v for k, v in v3[0].model_dump().items() if k not in ("reference_range", "interpretation")
    }


def test_a_real_cbc_result_maps_its_reference_ranges_and_flags(sample_data: Path) -> None:
    path = sample_data / "hl7v2" / "microsoft-fhir-converter" / "SampleData" / "LRI_2.0-NG_CBC_Typ_Message.hl7"
    events = map_message(parse(path.read_bytes()), "America/Los_Angeles")
    obs = {o.code[0].code: o for o in events if isinstance(o, ObservationV3)}
    assert len(obs) == len(events) == 28
    hemoglobin, leukocytes = obs["718-7"], obs["26464-8"]  # OBX-7 "13 to 18", OBX-8 L; "4300 to 10800", HH
    [rr] = hemoglobin.reference_range
    assert rr.text == "13 to 18" and rr.low is not None and rr.high is not None
    assert (rr.low.value, rr.high.value, rr.low.code, rr.high.unit) == ("13", "18", "g/mL", "grams per milliliter")
    assert [(c.system, c.code, c.display) for i in hemoglobin.interpretation for c in i.coding] == [
        (INTERPRETATION_V3, "L", "Low")
    ]
    assert [c.code for i in leukocytes.interpretation for c in i.coding] == ["HH"]
    assert leukocytes.reference_range[0].high is not None and leukocytes.reference_range[0].high.value == "10800"
    anisocytosis = obs["38892-6"]  # CWE, no OBX-7, flag A
    assert anisocytosis.reference_range == [] and [c.code for i in anisocytosis.interpretation for c in i.coding] == [
        "A"
    ]
    assert all(o.interpretation for o in obs.values()), "every OBX of this message has a flag"
    assert all(o.reference_range for o in obs.values() if o.value and o.value.type == "quantity")


def test_a_resent_message_gets_the_same_event_ids() -> None:
    env = Enveloper("acme", "hl7")
    ids = []
    for serial in (1, 2):
        connector = Hl7v2Connector(ctx(), Hl7v2Settings())
        connector._outcome = {}
        record = connector.decode(raw(ORU.format(n=5), serial))
        key, version = connector.identity(record)
        ids.append([env.envelope(m, key, version, i).id for i, m in enumerate(connector.map(record))])
    assert ids[0] == ids[1] and len(set(ids[0])) == 4


# -- MLLP: a real sender process, ACK only after the sink ----------------------------------------------------


async def _sender(
    port: int, messages: list[str], senders: int, ack_timeout: float = 20.0, timeout: float = 90.0
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.mllp_send",
        "--port",
        str(port),
        "--senders",
        str(senders),
        "--ack-timeout",
        str(ack_timeout),
        "--timeout",
        str(timeout),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _pipeline(
    sink: Any, store: CheckpointStore, *, env: Enveloper | None = None, stats: Stats | None = None, **settings: Any
) -> tuple[Hl7v2Connector, asyncio.Task[Any], asyncio.Event]:
    connector = Hl7v2Connector(ctx(), Hl7v2Settings.model_validate({"mllp": {"port": 0, **settings}}))
    await connector.start()
    stop = asyncio.Event()
    pipeline = Pipeline(connector, env or Enveloper("acme", "hl7"), sink, store, stats or Stats("acme", "hl7"))
    return connector, asyncio.create_task(pipeline.run(None, stop)), stop


GOOD = [ADT.format(n=i) if i % 2 else ORU.format(n=i) for i in range(200)]
BAD = [
    "MSH|^~\\&|X|FAC|||2024||SIU^S12|BAD1|P|2.5\r",
    "MSH|^~\\&|X|FAC|||2024||ADT^A01|BAD2|P|2.5\rPID|1\r",
    "garbage without header",
]


async def _send_through(sink: Any, store: CheckpointStore, **kw: Any) -> list[dict[str, Any]]:
    """GOOD + BAD from 20 concurrent senders (a separate process) through a pipeline into ``sink``; the sender's
    result lines, after the ACKs were checked (every good message AA, the bad ones AR / AE)."""
    connector, task, stop = await _pipeline(sink, store, **kw)
    port = connector.source.port  # type: ignore[attr-defined]
    proc = await _sender(port, GOOD + BAD, senders=20)
    out, _ = await proc.communicate(b"\n\n".join(m.replace("\r", "\n").encode() for m in GOOD + BAD))
    stop.set()
    await task
    await connector.stop()
    results = [json.loads(line) for line in out.decode().splitlines()]
    acks = {r["control_id"]: r["ack"] for r in results}
    assert len(results) == len(GOOD) + len(BAD)
    assert all(acks[f"MSG{i}" if i % 2 else f"LAB{i}"] == "AA" for i in range(200))
    assert acks["BAD1"] == "AR" and acks["BAD2"] == "AE" and list(acks.values()).count("AR") == 2
    return results


async def test_twenty_concurrent_senders_every_message_acked_after_the_sink(
    checkpoint_store: CheckpointStore,
) -> None:
    sink = MemorySink()
    await _send_through(sink, checkpoint_store)
    stored = collections.Counter(e.topic for e in sink.events)
    assert stored["clinical.patient.v1"] == 100 and stored["clinical.observation.v3"] == 400
    assert stored["clinical.observation.v2"] == 400 and stored["clinical.observation.v1"] == 400
    assert stored["inlet.dlq.acme.hl7"] == 3


def _events_by_control_id(env: Enveloper) -> dict[str, dict[str, str]]:
    """Each message's events, id → topic (its DLQ record for a bad one), computed offline by the family's hooks."""
    connector = Hl7v2Connector(ctx(), Hl7v2Settings())
    connector._outcome = {}
    out: dict[str, dict[str, str]] = {}
    for serial, text in enumerate(GOOD + BAD, 1):
        events, _ = process_batch(connector, env, Batch([raw(text.replace("\r", "\n"), serial)], {}))
        control = text.split("|")[9] if text.startswith("MSH") else ""
        out[control] = {e.id: e.topic for e in events}
    return out


async def _read_committed(bootstrap: str, topics: list[str], want: set[str], timeout: float = 120.0) -> list[Any]:
    """Every record of ``topics`` as a read_committed consumer sees it, until the ids in ``want`` were all read."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not want <= seen and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                records += batch
                seen.update(dict(r.headers)["ce_id"].decode() for r in batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka
async def test_twenty_concurrent_senders_into_kafka_every_acked_message_is_in_kafka(
    checkpoint_store: CheckpointStore, kafka_bootstrap: str, kafka_sinks: Callable[[KafkaSettings], KafkaSink]
) -> None:
    """The same 20 senders (a separate process) into a real KafkaSink: whatever was acknowledged is readable."""
    prefix = f"hl7c20-{uuid.uuid4().hex[:8]}."
    env = Enveloper("acme", "hl7", topic_template=prefix + "{name}.v{major}", dlq_topic_template=prefix + "dlq")
    stats = Stats("acme", "hl7")
    sink = kafka_sinks(KafkaSettings(bootstrap=kafka_bootstrap, request_timeout_ms=10_000))
    results = await _send_through(sink, checkpoint_store, env=env, stats=stats)
    expected = _events_by_control_id(env)
    every = {ce_id for events in expected.values() for ce_id in events}
    topics = sorted({topic for events in expected.values() for topic in events.values()})
    records = await _read_committed(kafka_bootstrap, topics, every)
    ids = collections.Counter(dict(r.headers)["ce_id"].decode() for r in records)
    missing = [r["control_id"] for r in results if not set(expected[r["control_id"]]) <= set(ids)]
    assert not missing, f"acknowledged, but their events are not in Kafka: {missing[:5]}"
    assert set(ids) == every, "an event id that the messages do not produce"
    totals = stats.totals
    assert totals.records_in == len(GOOD) + len(BAD) == totals.records_mapped + totals.dlq.total()
    dlq = [r for r in records if r.topic == prefix + "dlq"]
    assert len(dlq) == totals.dlq.total() == len(BAD)
    assert len(records) - len(dlq) == totals.events_out == 100 * 2 + 100 * 4 * 3  # ADT 2; ORU 4 OBX, 3 majors each


async def test_no_ack_while_the_sink_holds_nothing_and_none_for_a_failed_sink(
    checkpoint_store: CheckpointStore,
) -> None:
    sink = GatedSink()
    connector, task, _ = await _pipeline(sink, checkpoint_store)
    port = connector.source.port  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(ADT.format(n=1).encode()))
    await writer.drain()
    for _ in range(100):
        if sink.batches:
            break
        await asyncio.sleep(0.05)
    assert sink.batches, "the message reached the sink"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 0.5)  # held: no ACK before the sink has it
    sink.acks[0].set_result([])
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 10)
    assert b"MSA|AA|MSG1" in ack
    writer.write(frame(ADT.format(n=2).encode()))
    await writer.drain()
    while len(sink.acks) < 2:
        await asyncio.sleep(0.05)
    sink.acks[1].set_exception(ConnectionError("sink down"))  # an outage: the pipeline fails, no ACK
    with pytest.raises(ConnectionError):
        await task
    await connector.stop()  # what the supervisor does before restarting: the sender sees the drop
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_framing_garbage_oversize_and_idle_never_break_the_listener() -> None:
    listener = MllpListener(
        MllpSettings(port=0, max_message_bytes=64, idle_timeout_seconds=0.5, batch_linger_seconds=0)
    )
    await listener.start()
    got: list[MllpMessage] = []

    async def drain() -> None:
        async for batch in listener.batches():
            for m in batch:
                got.append(m)
                listener.reply(m.serial, b"MSA|AA")

    consumer = asyncio.create_task(drain())
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"noise" + frame(b"A" * 100) + b"\x1c\r\x0b" + frame(b"MSH|ok"))
    await writer.drain()
    replies = [await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 5) for _ in range(2)]
    assert all(b"MSA|AA" in r for r in replies)
    assert got[0].oversized == 100 and len(got[0].payload) == 64 and got[1].payload == b"MSH|ok"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: closed
    writer.close()
    consumer.cancel()
    await listener.stop()


# -- coverage of the sample corpus ----------------------------------------------------------------------------


def test_every_sample_message_becomes_events_or_a_dlq_record_with_ae_or_ar(sample_data: Path) -> None:
    root = sample_data / "hl7v2"
    connector = Hl7v2Connector(ctx("America/New_York"), Hl7v2Settings())
    connector._outcome = {}
    env = Enveloper("acme", "hl7")
    table: collections.Counter[tuple[str, str]] = collections.Counter()
    unaccounted = []
    serial = 0
    for path in sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix not in (".tsv", ".md") and "LICENSE" not in p.name
    ):
        data = path.read_bytes()
        for message in list(split_batch(data)) or [data]:
            serial += 1
            events, counts = process_batch(connector, env, Batch([raw(message, serial)], {}))
            code = connector._outcome.pop(serial)[0]
            folder = path.relative_to(root).parts[0]
            if counts.records_mapped == 1 and code == "AA":
                table[(folder, "events")] += 1
            elif sum(counts.dlq.values()) == 1 and code in ("AE", "AR") and events[-1].topic.startswith("inlet.dlq"):
                table[(folder, f"dlq+{code}")] += 1
            else:
                unaccounted.append((path, code, counts))
    print("\nfolder                        outcome      messages")
    for (folder, outcome), n in sorted(table.items()):
        print(f"{folder:30}{outcome:13}{n}")
    assert not unaccounted, unaccounted[:5]
    assert sum(n for (_, o), n in table.items() if o == "events") >= 70
