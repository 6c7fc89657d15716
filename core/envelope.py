"""CloudEvents 1.0 envelopes in Kafka binary content mode, and DLQ records.

An :class:`Event` is what every sink takes: topic, key, value bytes and headers, already built.
The value is the contract payload as JSON; the CloudEvents attributes are ``ce_*`` headers.
Everything that does not change per record (source, customer/integration headers, the UUIDv5
namespace, topic names per contract) is computed once per integration in :class:`Enveloper`:
the hot path then costs one uuid5, one isoformat and one JSON serialisation per event — in C when the
compiled helpers are built (core/_speedups.c: the id, headers and event in one call, and the JSON of plain
contract models), the same bytes as the Python code here, which stays the reference and the fallback.
"""

from __future__ import annotations

import hashlib
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from inlet.contracts.base import Contract
from inlet.core.types import Headers, Position

if TYPE_CHECKING:
    from inlet.core.config import SupervisorConfig

__all__ = ["DlqRecord", "Enveloper", "Event", "EventIds", "event_id", "integration_namespace", "json_value"]

try:  # envelope(): the id, headers and Event; dump(): a plain contract model's JSON (core/_speedups.c)
    from inlet.core._speedups import dump as _dump
    from inlet.core._speedups import envelope as _envelope
except ImportError:  # pragma: no cover - a build without the extension: the Python code below does it all
    _dump = _envelope = None  # type: ignore[assignment]
_compiled_envelope: Callable[..., Event] | None = _envelope
_compiled_dump: Callable[[Any, dict[type, Any]], bytes | None] | None = _dump

_SPECS: dict[type, tuple[tuple[str, bytes, frozenset[type] | None], ...] | None] = {}
"""Per model class met: its fields for the compiled dump (name, ``b'"name":'``, the model classes the field
declares), or None when pydantic must write it (see :func:`_learn`)."""

_NS_ROOT = uuid.UUID("5d1b9f4e-3c1a-5e0c-9a52-1e7f0d6c9b21")  # inlet's own namespace, fixed forever


@dataclass(slots=True)
class Event:
    """One record for a sink: already serialised, ready to send."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    id: str


def integration_namespace(customer: str, integration: str) -> uuid.UUID:
    """The UUIDv5 namespace of one integration; event ids are names within it."""
    return uuid.uuid5(_NS_ROOT, f"{customer}/{integration}")


class EventIds:
    """Deterministic event ids for one integration: the same source record version always gets the same id.

    The id is ``uuid5(namespace, f"{source_key}\\x1f{source_version}\\x1f{contract}\\x1f{ordinal}")``;
    ``contract`` and ``ordinal`` tell apart several events mapped from one record (a panel's members, a
    dual-published major version). It is computed without ``uuid`` objects and from a SHA-1 state that has
    already hashed the namespace (copied per id): a quarter of the stdlib's cost on the hot path.
    """

    __slots__ = ("_record", "_sha1", "_source")

    def __init__(self, namespace: uuid.UUID) -> None:
        self._sha1 = hashlib.sha1(namespace.bytes, usedforsecurity=False)
        self._source: tuple[str, str] | None = None
        self._record = self._sha1

    @property
    def namespace_state(self) -> Any:
        """The SHA-1 state after the namespace (copied per id): what the compiled envelope updates."""
        return self._sha1

    def __call__(self, source_key: str, source_version: str, contract: str, ordinal: int) -> str:
        h = self._sha1.copy()
        h.update(f"{source_key}\x1f{source_version}\x1f{contract}\x1f{ordinal}".encode())
        return _uuid5_text(h.hexdigest())

    def of_record(self, source_key: str, source_version: str, contract: str, ordinal: int) -> str:
        """The same id as calling the instance; the SHA-1 state after the record's own part of the name is kept,
        so the several events of one record (called one after another) hash only their contract and ordinal."""
        source = self._source
        if source is None or source[0] != source_key or source[1] != source_version:
            record = self._sha1.copy()
            record.update(f"{source_key}\x1f{source_version}\x1f".encode())  # may raise: nothing kept then
            self._record, self._source = record, (source_key, source_version)
        h = self._record.copy()
        h.update(f"{contract}\x1f{ordinal}".encode())
        return _uuid5_text(h.hexdigest())


_VARIANT: dict[str, str] = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid5_text(x: str) -> str:
    """A SHA-1 hex digest as UUID text: version 5 in the high nibble of byte 6, the RFC 4122 variant (10xx) in
    the high bits of byte 8."""
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def event_id(namespace: uuid.UUID, source_key: str, source_version: str, contract: str, ordinal: int) -> str:
    """One deterministic event id (see :class:`EventIds`, which the hot path uses)."""
    return EventIds(namespace)(source_key, source_version, contract, ordinal)


def json_value(model: Contract) -> bytes:
    """The event's value: the contract model as JSON, byte for byte what pydantic's ``to_json`` writes.

    ``warnings=False``: the model was validated a moment ago; the type checks behind serialisation warnings cost
    ~40 % of to_json (same bytes, checked on 50k mapped observations). The compiled dump (core/_speedups.c) writes
    plain models in ~a fifth of the time and hands everything it is not certain of back to pydantic."""
    if _compiled_dump is not None:
        cls = type(model)
        if cls not in _SPECS:
            _learn(cls)
        value = _compiled_dump(model, _SPECS)
        if value is not None:
            return value
    return model.__pydantic_serializer__.to_json(model, warnings=False)


def _learn(cls: type[BaseModel]) -> None:
    """Decide, once per class, whether the compiled dump may write it, and how (and so for its nested models).

    Plain means pydantic writes every field under its own name, in declaration order, by its value alone: no
    aliases, no custom or excluded or computed fields, no ``ser_json_*`` settings anywhere in the class's core
    schema (a field whose name starts so only makes the class pydantic's), no extra fields kept."""
    _SPECS[cls] = None  # while deciding (a model that nests itself)
    if cls.model_config.get("extra") == "allow" or not _plain_schema(cls.__pydantic_core_schema__):
        return
    fields = []
    for name, info in cls.__pydantic_fields__.items():
        nested = frozenset(_models_in(info.annotation))
        for inner in nested - _SPECS.keys():
            _learn(inner)
        fields.append((name, orjson.dumps(name) + b":", nested or None))
    _SPECS[cls] = tuple(fields)


def _plain_schema(schema: object) -> bool:
    if isinstance(schema, dict):
        for key, value in schema.items():
            # serialization*: custom, aliased, excluded fields; ser_json_*: the config's other ways to write values
            if key.startswith(("serializ", "ser_")) or (key == "computed_fields" and value):
                return False
            if not _plain_schema(value):
                return False
    elif isinstance(schema, list | tuple):
        return all(_plain_schema(item) for item in schema)
    return True


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic model classes a field's annotation names (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _iso(ts: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, as CloudEvents ``time`` wants it."""
    if ts.tzinfo is UTC:  # what core.time produces: no conversion needed
        return ts.replace(tzinfo=None).isoformat() + "Z"
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


_ContractInfo = tuple[str, str, tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]
"""A contract's topic, the name its event ids use, and its ``ce_type``, ``ce_dataschema``, ``ce_contractversion``
headers."""


@dataclass(slots=True)
class DlqRecord:
    """A record that could not become an event, with why and where (stage, error, position)."""

    stage: str
    error_type: str
    message: str
    payload: bytes
    position: Position | None
    source_key: str | None = None


class Enveloper:
    """Builds events and DLQ records for one integration; holds its precomputed header templates."""

    def __init__(
        self,
        customer: str,
        integration: str,
        *,
        topic_template: str = "{name}.v{major}",
        dlq_topic_template: str = "inlet.dlq.{customer}.{integration}",
        drift_topic_template: str = "inlet.drift.{customer}.{integration}",
    ) -> None:
        self.customer = customer
        self.integration = integration
        self.namespace = integration_namespace(customer, integration)
        self._event_id = EventIds(self.namespace)
        self.source = f"/customers/{customer}/integrations/{integration}"
        self._topic_template = topic_template
        self.dlq_topic = dlq_topic_template.format(customer=customer, integration=integration)
        self.drift_topic = drift_topic_template.format(customer=customer, integration=integration)
        source_headers: Headers = [
            ("ce_specversion", b"1.0"),
            ("ce_source", self.source.encode()),
            ("ce_customer", customer.encode()),
            ("ce_integration", integration.encode()),
        ]
        # DLQ values are the original payload, which need not be JSON: they carry no content-type.
        self._dlq_common: Headers = source_headers
        self._common: Headers = [*source_headers, ("content-type", b"application/json")]
        self._when: datetime | None = None
        self._time_header: tuple[datetime | None, tuple[str, bytes]] = (None, ("ce_time", b""))
        """The Python envelope's last ``ce_time`` header and the time it was made for."""
        # Per contract class: its topic, id name and header tuples (type, dataschema, contract version), built once.
        self._per_contract: dict[type[Contract], _ContractInfo] = {}

    @classmethod
    def of(cls, cfg: SupervisorConfig, customer: str, integration: str) -> Enveloper:
        """The enveloper of one integration under the supervisor's topic templates (events, DLQ, drift): what the
        supervisor writes with, and what the status API, the DLQ tooling and the topic plan name."""
        return cls(
            customer,
            integration,
            topic_template=cfg.topic_template,
            dlq_topic_template=cfg.dlq_topic_template,
            drift_topic_template=cfg.drift_topic_template,
        )

    def _contract_info(self, cls: type[Contract]) -> _ContractInfo:
        info = self._per_contract.get(cls)
        if info is None:
            topic = self._topic_template.format(
                name=cls.contract_name, major=cls.major(), customer=self.customer, integration=self.integration
            )
            info = (
                topic,
                cls.event_id_name(),
                ("ce_type", cls.contract_name.encode()),
                ("ce_dataschema", f"urn:inlet:contract:{cls.contract_name}:{cls.contract_version}".encode()),
                ("ce_contractversion", cls.contract_version.encode()),
            )
            self._per_contract[cls] = info
        return info

    @property
    def last_time(self) -> datetime | None:
        """The event time of the last event enveloped (None before one with a time): ``core.status``'s lag."""
        return self._when

    def topic_for(self, cls: type[Contract]) -> str:
        """The topic a contract's events go to (``<name>.v<major>`` by default)."""
        return self._contract_info(cls)[0]

    def envelope(self, model: Contract, source_key: str, source_version: str, ordinal: int = 0) -> Event:
        """Wrap one contract instance as a CloudEvent (the compiled helper when built: the same event)."""
        if _compiled_envelope is None:
            return self._envelope_python(model, source_key, source_version, ordinal)
        cls = type(model)
        info = self._per_contract.get(cls) or self._contract_info(cls)
        occurred = model.occurred_at()
        when: object = occurred
        if occurred is not None and (type(occurred) is not datetime or occurred.tzinfo is not UTC):
            when = _iso(occurred).encode()  # the helper formats only what core.time makes: exact datetimes in UTC
        value = json_value(model)
        event = _compiled_envelope(
            Event,
            info,
            self._common,
            self._event_id.namespace_state,
            source_key,
            source_version,
            ordinal,
            model.subject(),
            model.entity_key(),
            value,
            when,
        )
        if occurred is not None:
            self._when = occurred
        return event

    def _envelope_python(self, model: Contract, source_key: str, source_version: str, ordinal: int = 0) -> Event:
        """:meth:`envelope` in Python: what the compiled helper (core/_speedups.c) must equal, byte for byte."""
        cls = type(model)
        info = self._per_contract.get(cls) or self._contract_info(cls)
        # The pipeline envelopes a record's events one after another: the id hashes the record's part once.
        eid = self._event_id.of_record(source_key, source_version, info[1], ordinal)
        headers = [
            *self._common,
            ("ce_id", eid.encode()),
            info[2],
            ("ce_subject", model.subject().encode()),
            info[3],
            info[4],
        ]
        when = model.occurred_at()
        if when is not None:
            made_for, header = self._time_header
            if when != made_for:  # the readings of one message (or a batch) mostly share their time
                header = ("ce_time", _iso(when).encode())
                self._time_header = (when, header)
            self._when = when
            headers.append(header)
        value = json_value(model)
        return Event(info[0], model.entity_key().encode(), value, headers, eid)

    def drift(self, changes: list[dict[str, str]], source_key: str | None, position: Position | None) -> Event:
        """An upstream drift alert as an event on the integration's drift topic: what changed, and where."""
        value = orjson.dumps(
            {
                "customer": self.customer,
                "integration": self.integration,
                "source_key": source_key,
                "position": position,
                "changes": changes,
            }
        )
        eid = self._event_id(source_key or "", orjson.dumps(changes).decode(), "inlet.drift", 0)
        headers = [*self._common, ("ce_id", eid.encode()), ("ce_type", b"inlet.drift")]
        return Event(
            topic=self.drift_topic,
            key=f"{self.customer}/{self.integration}".encode(),
            value=value,
            headers=headers,
            id=eid,
        )

    def dead_letter(self, record: DlqRecord) -> Event:
        """Wrap a DLQ record: the original payload is the value, the reason is in headers."""
        position = orjson.dumps(record.position).decode() if record.position is not None else ""
        # The id is deterministic too, so a redelivered bad record is recognisable as the same one.
        eid = self._event_id(record.source_key or position, record.stage, "dlq", 0)
        headers = [
            *self._dlq_common,
            ("ce_id", eid.encode()),
            ("ce_type", b"inlet.dlq"),
            ("dlq_stage", record.stage.encode()),
            ("dlq_error_type", record.error_type.encode()),
            ("dlq_error_message", record.message.encode()[:4096]),
            ("dlq_position", position.encode()),
        ]
        if record.source_key:
            headers.append(("dlq_source_key", record.source_key.encode()))
        return Event(
            topic=self.dlq_topic,
            key=(record.source_key or "").encode() or None,
            value=record.payload,
            headers=headers,
            id=eid,
        )


def payload_bytes(raw: Any) -> bytes:
    """The original payload of a raw record as bytes, for the DLQ value."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode()
    if hasattr(type(raw), "__bytes__"):  # a transport's record that knows its original bytes (an MQTT message)
        return bytes(raw)
    try:
        return orjson.dumps(raw, default=_exact_number)
    except TypeError:
        return repr(raw).encode()


def _exact_number(value: Any) -> Any:
    """A Decimal of ``core.exact_json`` written back as the JSON number it was read as."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
