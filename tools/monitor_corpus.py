"""Replay corpora for the data-quality monitors: weeks of clean, time-stamped contract events, and faults to inject.

A monitor learns what an integration's events usually look like (how many per hour, how late, which values, which
codes, how often a field is missing) and must notice when that changes. Testing it needs weeks of events with a
real daily rhythm, DST days included, and the same weeks with one thing broken from a known instant. This module
makes both from the project's own generators, run through the real connectors' ``decode`` / ``filter`` / ``map``,
so every event is what the integration would publish (no third-party data, nothing recorded).

A :data:`Stream` is a list of ``(arrival, models)`` sorted by arrival (unix seconds): what reached the pipeline
together. Every model's ``occurred_at()`` is at or before its arrival. The sites are in Europe/Berlin; rhythms
follow local time, so a stream across 2026-03-29 or 2026-10-25 has a 23- or 25-hour day.

- :func:`meter_stream` — Stadtwerke Nord's hub (``municipal_traffic``, seven Tasmota / Shelly meters), a tick
  every five minutes, day and night: ``energy.meter_reading``.
- :func:`observation_stream` — Klinikum Mitte's EHR (``connectors.fhir.synth`` with the hospital's local lab
  codes, plus wound assessments), busy by day, quiet at night and on Sundays, polled every five minutes:
  ``clinical.observation`` v2.
- :func:`invoice_stream` — Brandt Möbel's Business Central (``bc_sales_invoices``) in office hours on weekdays,
  polled every five minutes: ``erp.invoice``.

The injectors take a stream and an instant and return a new stream, equal to the old one before that instant:
:func:`unit_x1000`, :func:`category_swap`, :func:`volume_drop`, :func:`stall`, :func:`delay`,
:func:`field_null`, :func:`currency_switch`. Changed models are rebuilt through their contract's validation, so a
faulty stream still holds only valid events: the faults are in the data, not in the schema.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo

import orjson

from inlet.connectors.customers.brandt_moebel import WEBSHOP_PREFIX, BrandtMoebelInvoices
from inlet.connectors.customers.klinikum_mitte import LAB_SYSTEM, LAB_TO_LOINC, KlinikumMitteObservations
from inlet.connectors.customers.stadtwerke_nord import StadtwerkeNordMeters, StadtwerkeNordSettings
from inlet.connectors.erp_rest.odata import ErpODataSettings
from inlet.connectors.erp_rest.synth import bc_customers, bc_sales_invoices, bc_time
from inlet.connectors.fhir.search import pinned_settings
from inlet.connectors.fhir.synth import FhirResource, generate_dataset
from inlet.connectors.mqtt_meter.synth import Message, municipal_traffic
from inlet.contracts.base import Contract
from inlet.contracts.energy_meter_reading import MeterReadingV1
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.core.connector import Connector, IntegrationContext
from inlet.core.errors import RecordError
from inlet.core.mqtt import MqttMessage
from tools.no_broker import no_broker

__all__ = [
    "BERLIN",
    "HUB_LATENCY",
    "METER_STEP",
    "POLL",
    "WOUND_CATEGORY",
    "WOUND_SYSTEM",
    "Arrival",
    "Stream",
    "When",
    "category_swap",
    "currency_switch",
    "delay",
    "field_null",
    "invoice_stream",
    "meter_stream",
    "observation_stream",
    "stall",
    "unit_x1000",
    "volume_drop",
]

Arrival = tuple[float, list[Contract]]
"""(arrival unix time, the models that reached the pipeline together)."""
Stream = list[Arrival]
"""Arrivals sorted by time."""
When = datetime | float
"""An instant: an aware datetime or unix seconds."""

BERLIN: Final = ZoneInfo("Europe/Berlin")
METER_STEP: Final = 300.0
"""Seconds between two ticks of the hub's meters (Tasmota TelePeriod 300)."""
HUB_LATENCY: Final = 1.0
"""Seconds from a meter's tick to the hub handing its messages on: device times are this much before arrival."""
POLL: Final = 300.0
"""Seconds between two polls of the FHIR and ERP integrations (``poll_interval_seconds`` in their YAML)."""
WOUND_SYSTEM: Final = "urn:klinikum-mitte:wound"
"""The hospital's local code system of wound documentation (no LOINC mapping: it passes as it is)."""
WOUND_CATEGORY: Final = "wound-care"

_HOUR: Final = 3600.0
_UCUM: Final = "http://unitsofmeasure.org"
_LOINC_TO_LAB: Final = {loinc: local for local, (loinc, _display) in LAB_TO_LOINC.items()}
_TIME: Final = re.compile(rb'"Time":"([^"]*)"')

# Relative load by local hour and weekday (Monday first). A ward documents round the clock with morning rounds and
# lab runs; the office bills between eight and six with a lunch dip.
_WARD_HOURS: Final = (
    *(0.15,) * 6,
    *(0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 0.8, 0.95, 0.95, 0.95, 0.95, 0.7, 0.5, 0.5, 0.5),
    *(0.25,) * 3,
)
_WARD_DAYS: Final = (1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.4)
_OFFICE_HOURS: Final = (*(0.0,) * 8, 0.6, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.8, 0.5, *(0.0,) * 6)
_OFFICE_DAYS: Final = (1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
_ENCOUNTERS_PER_PEAK_HOUR: Final = 6.0  # about 9.5 observations each: ~57 per busy hour, ~4,700 a week
_INVOICES_PER_PEAK_HOUR: Final = 10.0  # less the webshop drafts the plugin filters (one in five): ~67 a weekday
# Seconds from an encounter to its results being written, by category: vitals are charted at the bedside, lab
# results come back from the analyser, wound documentation is written after the dressing change.
_LAGS: Final = {"laboratory": (900, 3600), WOUND_CATEGORY: (300, 1800)}
_DEFAULT_LAG: Final = (30, 600)
_WOUND_SHARE: Final = 0.12


# -- shared ------------------------------------------------------------------------------------------------------
def _window(start: datetime, weeks: float) -> tuple[datetime, datetime]:
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware (the sites are in Europe/Berlin), got naive {start}")
    if weeks <= 0:
        raise ValueError(f"weeks must be positive, got {weeks}")
    begin = start.astimezone(UTC)
    return begin, begin + timedelta(weeks=weeks)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth): the means here are below 20, where the product of uniforms is exact enough."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _rhythm(
    rng: random.Random, begin: datetime, end: datetime, peak: float, hours: tuple[float, ...], days: tuple[float, ...]
) -> list[datetime]:
    """Event instants with a local daily and weekly rhythm: per UTC hour a Poisson count at the rate of the Berlin
    hour it falls in, spread uniformly. Stepping in UTC gives DST days their 23 or 25 hours by themselves."""
    out: list[datetime] = []
    slot = begin
    while slot < end:
        local = slot.astimezone(BERLIN)
        span = min(_HOUR, (end - slot).total_seconds())
        mean = peak * hours[local.hour] * days[local.weekday()] * span / _HOUR
        out += sorted(slot + timedelta(seconds=rng.uniform(0, span)) for _ in range(_poisson(rng, mean)))
        slot += timedelta(hours=1)
    return out


def _polled(at: datetime) -> float:
    """The first poll at or after ``at`` (polls on whole multiples of :data:`POLL` seconds)."""
    return math.ceil(at.timestamp() / POLL) * POLL


def _grouped(timed: list[tuple[float, Contract]]) -> Stream:
    arrivals: dict[float, list[Contract]] = {}
    for at, model in timed:
        arrivals.setdefault(at, []).append(model)
    return sorted(arrivals.items(), key=lambda a: a[0])


def _mapped(connector: Connector[Any], raw: Any) -> list[Contract]:
    """What the pipeline would publish of one raw record: nothing for a filtered record or a DLQ one (a record
    error), the mapped events otherwise."""
    try:
        record = connector.decode(raw)
        if connector.filter(record) is not None:
            return []
        return list(connector.map(record))
    except RecordError:
        return []


# -- meters ------------------------------------------------------------------------------------------------------
def _ticks(traffic: list[Message]) -> list[list[Message]]:
    """The generator's messages by tick: a tick starts at each new Tasmota ``Time``; the Shelly Gen1 values (no
    time of their own) and a resent or truncated frame belong to the tick they follow.

    The payloads are copied to their size: orjson (3.12 on) keeps at least 4 KB allocated behind every ``dumps``
    result, ten times these payloads, so three weeks of the generator's messages hold 400 MB until copied (and the
    process keeps that memory from the OS afterwards)."""
    ticks: list[list[Message]] = []
    current = None
    for topic, payload in traffic:
        found = _TIME.search(payload) if topic.startswith("tele/") else None
        if found is not None and found[1] != current:
            current = found[1]
            ticks.append([])
        ticks[-1].append((topic, bytes(memoryview(payload))))
    return ticks


def _sun(at: datetime) -> float:
    """Sine of the sun's elevation over the sites (52.5° N, 13.4° E), 0 below the horizon. From UTC: PV follows
    the sun, not the clock, so its curve moves by an hour of local time on a DST day."""
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + at.timetuple().tm_yday) / 365)
    hour_angle = math.radians(15 * (at.hour + at.minute / 60 + 13.4 / 15 - 12))
    lat = math.radians(52.5)
    elevation = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(hour_angle)
    return max(0.0, elevation)


class _Retimer:
    """Moves the generator's one morning to any tick: device times, and what must follow the clock with them.

    ``municipal_traffic`` counts ``Today`` up for ever and exports PV power at night; here ``Today`` is the energy
    since local midnight (``Yesterday`` the day before), and the PV meter exports in daylight (the sun over the
    site, the generator's power as cloud cover) and imports the house's load otherwise, its two counters advancing
    by what went each way. The other counters stay the generator's, so they never go down except where it replaces
    a meter (hh-0102 at the seventh tick: flagged ``counter_reset`` by the connector).
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.days: dict[str, tuple[date, float, float, float]] = {}  # device -> (day, total, today, yesterday)
        self.pv: list[float] = []  # the PV meter's import and export counters

    def message(self, topic: str, payload: bytes, at: datetime) -> bytes:
        if topic.endswith("/events/rpc"):
            frame = orjson.loads(payload)
            ts = frame["params"]["ts"]
            frame["params"]["ts"] = round(at.timestamp() + ts % 1, 2)  # keeps the device's sub-second offset
            return orjson.dumps(frame)
        if not topic.startswith("tele/"):
            return payload  # Shelly Gen1: no time in the payload, the hub's receive time is used
        local = at.astimezone(BERLIN).replace(tzinfo=None).isoformat(timespec="seconds")
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:  # the generator's truncated frame stays truncated (a DLQ record)
            return _TIME.sub(b'"Time":"' + local.encode() + b'"', payload)
        body["Time"] = local
        device = topic.split("/")[1]
        if isinstance(energy := body.get("ENERGY"), dict) and "Today" in energy:
            self._today(device, energy, at)
        if isinstance(sml := body.get("SML"), dict):
            self._pv(sml, at)
        return orjson.dumps(body)

    def _today(self, device: str, energy: dict[str, Any], at: datetime) -> None:
        total, day = float(energy["Total"]), at.astimezone(BERLIN).date()
        last_day, last_total, today, yesterday = self.days.get(device, (day, total, 0.0, 0.0))
        if day != last_day:
            today, yesterday = 0.0, today
        today += total - last_total if total >= last_total else total  # a new meter counts from about zero
        self.days[device] = (day, total, today, yesterday)
        energy["Today"], energy["Yesterday"] = round(today, 3), round(yesterday, 3)

    def _pv(self, sml: dict[str, Any], at: datetime) -> None:
        # The generator's random power (400-2600 W) becomes the cloud cover; 4.5 kWp on the roof, 200-600 W of house.
        clouds = 0.3 + 0.7 * (abs(sml["Power_curr"]) - 400) / 2200
        net = 4500 * _sun(at) * clouds - self.rng.uniform(200, 600)
        if not self.pv:
            self.pv = [float(sml["Total_in"]), float(sml["Total_out"])]
        self.pv[net > 0] += abs(net) * METER_STEP / 3_600_000  # W over one tick, in kWh
        sml["Power_curr"] = -round(net)  # SML's sign: negative is export
        sml["Total_in"], sml["Total_out"] = round(self.pv[0], 4), round(self.pv[1], 4)


def _run(work: Callable[[], Any]) -> Any:
    """``asyncio.run(work())``, in a thread when the caller is already inside an event loop (an async test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()


def meter_stream(start: datetime, weeks: float = 3, seed: int = 7, *, devices: Collection[str] | None = None) -> Stream:
    """Stadtwerke Nord's meters from ``start`` for ``weeks``: one arrival per five-minute tick, day and night.

    Seven devices: hh-0101 (Tasmota), hh-0102 (Tasmota, three phases), pv-0201 (Tasmota SML, PV), shellyem3-8CAAB500,
    -01 and -02 (Shelly 3EM Gen1, one phase each, receive time) and shellypro3em-a0b1c2 (Shelly Pro 3EM Gen2): 40
    readings a tick, 480 an hour (``devices`` keeps only those: a smaller, faster stream). Decoded by the customer's
    plugin with its hygiene, so the generator's resent frame is dropped as a duplicate and its truncated frame (a
    DLQ record) yields nothing. Three weeks are 242,000 readings: 6-8 s of CPU and 330 MB (the generator's messages
    take 400 MB more while they are made: see :func:`_ticks`).
    """
    begin, end = _window(start, weeks)
    steps = math.ceil((end - begin).total_seconds() / METER_STEP)
    ticks = _ticks(municipal_traffic(steps, seed=seed))
    if devices is not None:
        ticks = [[(t, p) for t, p in tick if t.split("/")[1] in devices] for tick in ticks]
    retimer = _Retimer(seed)

    async def decode() -> Stream:
        ctx = IntegrationContext("stadtwerke-nord", "meters", zone="Europe/Berlin", message_source=no_broker)
        settings = StadtwerkeNordSettings.model_validate({"mqtt": {"topics": ["#"]}})
        out: Stream = []
        async with StadtwerkeNordMeters(ctx, settings) as connector:
            for k, tick in enumerate(ticks):
                at = begin + timedelta(seconds=k * METER_STEP)
                received = at + timedelta(seconds=HUB_LATENCY)
                models: list[Contract] = []
                for topic, payload in tick:
                    # QoS 0 as Tasmota publishes telemetry: nothing is kept per message for a PUBACK.
                    raw = MqttMessage(topic, retimer.message(topic, payload, at), 0, False, 0, received)
                    models += _mapped(connector, raw)
                if models:
                    out.append((received.timestamp(), models))
        return out

    stream: Stream = _run(decode)
    return stream


# -- clinical observations ---------------------------------------------------------------------------------------
def _encounters(count: int, seed: int) -> list[list[FhirResource]]:
    """``count`` encounters' observations from the FHIR generator, in its order. It is asked for observations, not
    encounters, so ask for more until enough complete encounters came out (its last one may be cut short)."""
    wanted = count * 10 + 10
    while True:
        groups: dict[str, list[FhirResource]] = {}
        for obs in generate_dataset(wanted, seed=seed).observations:
            groups.setdefault(obs["encounter"]["reference"], []).append(obs)
        complete = list(groups.values())[:-1]
        if len(complete) >= count:
            return complete[:count]
        wanted = wanted * 3 // 2


def _local_lab_codes(obs: FhirResource) -> None:
    """The hospital's lab writes its own codes, as ``tools.record_hospitals`` serves them; the plugin maps them."""
    coding = obs["code"]["coding"][0]
    if coding["code"] in _LOINC_TO_LAB:
        obs["code"] = {
            "coding": [{"system": LAB_SYSTEM, "code": _LOINC_TO_LAB[coding["code"]]}],
            "text": coding["display"],
        }


def _wound(rng: random.Random, like: FhirResource) -> FhirResource:
    """A wound assessment (area of the wound, hospital-local code and category) for the encounter of ``like``."""
    return {
        "resourceType": "Observation",
        "id": f"wound-{rng.getrandbits(64):016x}",
        "meta": {"versionId": "1"},
        "status": "final",
        "category": [{"coding": [{"system": WOUND_SYSTEM, "code": WOUND_CATEGORY, "display": "Wundversorgung"}]}],
        "code": {"coding": [{"system": WOUND_SYSTEM, "code": "WFL", "display": "Wundfläche"}], "text": "Wundfläche"},
        "subject": like["subject"],
        "encounter": like["encounter"],
        "valueQuantity": {"value": round(rng.uniform(0.5, 40.0), 1), "unit": "cm2", "system": _UCUM, "code": "cm2"},
    }


def _category(obs: FhirResource) -> str:
    code: str = obs["category"][0]["coding"][0]["code"]
    return code


def observation_stream(start: datetime, weeks: float = 3, seed: int = 33) -> Stream:
    """Klinikum Mitte's observations from ``start`` for ``weeks``, as its FHIR search integration maps them.

    Encounters follow the ward's rhythm (peak ~6 an hour from 08:00 to 12:00, ~1 an hour at night, Saturdays 60 %,
    Sundays 40 %); each brings the generator's observations of its kind (vital-signs, laboratory, survey,
    social-history) and one in eight a wound assessment (``wound-care``, cm², local code). An encounter's results
    are written after it (vitals 0.5-10 min, wound care 5-30 min, lab 15-60 min: ``effective_start`` is the
    encounter, ``issued`` and ``source_last_updated`` the write) and arrive at the next five-minute poll.
    """
    begin, end = _window(start, weeks)
    rng = random.Random(seed)
    times = _rhythm(rng, begin, end, _ENCOUNTERS_PER_PEAK_HOUR, _WARD_HOURS, _WARD_DAYS)
    ctx = IntegrationContext("klinikum-mitte", "observations", zone="Europe/Berlin")
    settings = pinned_settings("Observation").model_validate({"http": {"base_url": "https://fhir.invalid/fhir"}})
    connector = KlinikumMitteObservations(ctx, settings)
    timed: list[tuple[float, Contract]] = []
    for at, observations in zip(times, _encounters(len(times), seed), strict=True):
        writes: dict[str, list[FhirResource]] = {}  # the generator's write batches, each written at once
        for obs in observations:
            writes.setdefault(obs["meta"]["lastUpdated"], []).append(obs)
        if rng.random() < _WOUND_SHARE:
            writes["wound"] = [_wound(rng, observations[0])]
        effective = at.replace(microsecond=0).astimezone(BERLIN).isoformat()
        for batch in writes.values():
            low, high = _LAGS.get(_category(batch[0]), _DEFAULT_LAG)
            written = at + timedelta(seconds=rng.uniform(low, high))
            stamp = written.astimezone(BERLIN).isoformat(timespec="milliseconds")
            for obs in batch:
                _local_lab_codes(obs)
                obs["effectiveDateTime"], obs["issued"] = effective, stamp
                obs["meta"] = {**obs["meta"], "lastUpdated": stamp}
                timed += [(_polled(written), model) for model in _mapped(connector, obs)]
    return _grouped(timed)


# -- ERP invoices ------------------------------------------------------------------------------------------------
def invoice_stream(start: datetime, weeks: float = 3, seed: int = 52) -> Stream:
    """Brandt Möbel's sales invoices from ``start`` for ``weeks``, as its Business Central integration maps them.

    Modified in office hours on weekdays (08:00-18:00 Berlin, lunch dip, none at weekends), read at the next
    five-minute poll. The generator's mix: statuses open / paid / draft / void, a quarter in USD (the rest EUR, the
    company's local currency), one in nine without a due date. Every fifth is a webshop draft (``WS-…``), which the
    plugin filters, as ``tools.record_erp`` serves them.
    """
    begin, end = _window(start, weeks)
    rng = random.Random(seed)
    times = _rhythm(rng, begin, end, _INVOICES_PER_PEAK_HOUR, _OFFICE_HOURS, _OFFICE_DAYS)
    ctx = IntegrationContext("brandt-moebel", "invoices", zone="Europe/Berlin")
    settings = ErpODataSettings.model_validate(
        {
            "entity": "salesInvoices",
            "company_id": "c0ffee00-0000-4000-8000-000000000001",
            "local_currency": "EUR",
            "http": {"base_url": "https://erp.invalid/api/v2.0"},
        }
    )
    connector = BrandtMoebelInvoices(ctx, settings)
    invoices = bc_sales_invoices(len(times), bc_customers(12, seed=seed + 1), seed=seed)
    timed: list[tuple[float, Contract]] = []
    for i, (at, inv) in enumerate(zip(times, invoices, strict=True)):
        if i % 5 == 0:
            inv["status"], inv["number"] = "Draft", WEBSHOP_PREFIX + inv["number"]
        issued = at.astimezone(BERLIN).date()
        inv["invoiceDate"] = inv["postingDate"] = issued.isoformat()
        if inv["dueDate"] != "0001-01-01":  # BC's blank date stays blank
            inv["dueDate"] = (issued + timedelta(days=14)).isoformat()
        inv["lastModifiedDateTime"] = bc_time(at, rng.randint(0, 7))
        timed += [(_polled(at), model) for model in _mapped(connector, inv)]
    return _grouped(timed)


# -- faults ------------------------------------------------------------------------------------------------------
M = TypeVar("M", bound=Contract)


def _instant(when: When) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"a fault's start must be timezone-aware, got naive {when}")
        return when.timestamp()
    return float(when)


def _rebuilt(model: M, **update: Any) -> M:
    """``model`` with ``update``, validated by its contract (``model_copy(update=...)`` would not validate)."""
    return type(model).model_validate({**model.model_dump(), **update})


def _from(stream: Stream, start: When, change: Callable[[list[Contract]], list[Contract]]) -> Stream:
    """The stream with ``change`` applied to every arrival at or after ``start``; arrivals left empty are dropped."""
    at = _instant(start)
    out: Stream = []
    for t, models in stream:
        changed = change(models) if t >= at else list(models)
        if changed:
            out.append((t, changed))
    return out


def unit_x1000(
    stream: Stream, start: When, devices: Collection[str], metrics: Collection[str] | None = ("energy",)
) -> Stream:
    """Readings of ``devices`` report 1000 times their value from ``start``, unit unchanged: by default only the
    ``energy`` metrics (counters and ``Today``: a firmware that starts writing Wh into a kWh field); ``metrics``
    None changes every metric of those devices."""

    def scaled(m: Contract) -> Contract:
        if isinstance(m, MeterReadingV1) and m.device_id in devices and (metrics is None or m.metric in metrics):
            return _rebuilt(m, quantity=m.quantity * 1000)
        return m

    return _from(stream, start, lambda models: [scaled(m) for m in models])


def category_swap(
    stream: Stream, start: When, *, from_cat: str, to_cat: str, share: float = 1.0, seed: int = 0
) -> Stream:
    """From ``start``, ``share`` of the observations in category ``from_cat`` are filed under ``to_cat`` instead (a
    mis-mapped code list); the rest of each observation is unchanged."""
    rng = random.Random(seed)

    def swapped(m: Contract) -> Contract:
        categories = getattr(m, "category", None)
        if isinstance(categories, list) and from_cat in categories and rng.random() < share:
            return _rebuilt(m, category=[to_cat if c == from_cat else c for c in categories])
        return m

    return _from(stream, start, lambda models: [swapped(m) for m in models])


def volume_drop(
    stream: Stream, start: When, keep: float = 0.1, *, per: Literal["models", "arrivals"] = "models", seed: int = 0
) -> Stream:
    """From ``start`` only ``keep`` of the volume arrives: of each arrival's models (a filter or a partial upstream
    losing records), or of the arrivals (``per="arrivals"``: most polls or ticks lost whole)."""
    rng = random.Random(seed)

    def change(models: list[Contract]) -> list[Contract]:
        if per == "arrivals":
            return list(models) if rng.random() < keep else []
        return [m for m in models if rng.random() < keep]

    return _from(stream, start, change)


def stall(stream: Stream, start: When, duration: timedelta | None = None, *, catch_up: bool = False) -> Stream:
    """Nothing arrives from ``start`` (for ``duration``, or for ever). With ``catch_up`` what was held arrives in one
    arrival when the stall ends, as a polled source or a broker's persistent session delivers its backlog."""
    begin = _instant(start)
    end = math.inf if duration is None else begin + duration.total_seconds()
    held = [m for t, models in stream if begin <= t < end for m in models]
    out: Stream = [(t, list(models)) for t, models in stream if not begin <= t < end]
    if catch_up and held and end != math.inf:
        out.append((end, held))
        out.sort(key=lambda a: a[0])
    return out


def delay(stream: Stream, start: When, by: timedelta) -> Stream:
    """Arrivals from ``start`` come ``by`` later (a backed-up broker, a slow upstream): the events are as they were,
    only their lag grows. Nothing arrives in the first ``by`` after ``start``; the order is kept."""
    at, shift = _instant(start), by.total_seconds()
    if shift < 0:
        raise ValueError(f"delay must be positive, got {by}")
    return [(t + shift if t >= at else t, list(models)) for t, models in stream]


def field_null(stream: Stream, start: When, field: str, *, share: float = 1.0, seed: int = 0) -> Stream:
    """From ``start``, ``share`` of the models that have ``field`` carry None there (an upstream that stopped
    sending it). Only an optional field can be nulled: a required one raises ValueError naming the optional ones."""
    rng = random.Random(seed)
    if not any(field in type(m).model_fields for _, models in stream for m in models):
        raise ValueError(f"no model in the stream has a field {field!r}")

    def nulled(m: Contract) -> Contract:
        if field not in type(m).model_fields or rng.random() >= share:
            return m
        try:
            return _rebuilt(m, **{field: None})
        except ValueError:  # pydantic's ValidationError: the contract requires the field
            optional = ", ".join(n for n, f in type(m).model_fields.items() if f.default is None)
            raise ValueError(
                f"{field} is required in {m.contract_name} {m.contract_version}; optional fields: {optional}"
            ) from None

    return _from(stream, start, lambda models: [nulled(m) for m in models])


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def _converted(inv: InvoiceV1, currency: str, rate: Decimal) -> InvoiceV1:
    """``inv`` billed in ``currency``: unit prices converted to cents, lines and totals recomputed from them, so the
    invoice adds up as one the ERP wrote in that currency would (a due amount is the gross or zero, as generated)."""
    if rate == 1:
        return _rebuilt(inv, currency=currency)
    lines: list[dict[str, Any]] = []
    for line in inv.lines:
        price = _cents(Decimal(line.unit_price) * rate)
        amount = _cents(Decimal(line.quantity) * price)
        tax = _cents(amount * Decimal(line.tax_rate) / 100) if line.tax_rate is not None else None
        lines.append({**line.model_dump(), "unit_price": price, "line_amount": amount, "tax_amount": tax})
    if lines:
        net = sum((x["line_amount"] for x in lines), Decimal(0))
        tax_total = sum((x["tax_amount"] or Decimal(0) for x in lines), Decimal(0))
    else:
        net, tax_total = _cents(Decimal(inv.net_amount) * rate), _cents(Decimal(inv.tax_amount) * rate)
    gross = net + tax_total
    due = None if inv.amount_due is None else gross if inv.amount_due == inv.gross_amount else Decimal(0)
    return _rebuilt(
        inv, currency=currency, lines=lines, net_amount=net, tax_amount=tax_total, gross_amount=gross, amount_due=due
    )


def currency_switch(stream: Stream, start: When, currency: str, *, rate: Decimal | str | int = "1.08") -> Stream:
    """From ``start`` every invoice is billed in ``currency``: those in another currency are converted at ``rate``
    (units of ``currency`` per unit of theirs; ``rate=1`` changes only the code, amounts as before). The default is
    about EUR → USD in 2026, illustrative only."""
    factor = Decimal(rate)

    def switched(m: Contract) -> Contract:
        return _converted(m, currency, factor) if isinstance(m, InvoiceV1) and m.currency != currency else m

    return _from(stream, start, lambda models: [switched(m) for m in models])
