"""The connector interface: what a family or customer plugin implements, and what the core owns.

A connector has four hooks, each with one job:

- ``read(position)`` — **I/O only**: talk to the upstream (through ``core.http`` / ``core.mqtt``) and
  yield :class:`Batch` es of raw records, each with the position to commit once the batch is in the sink.
  A pull source returns when it has caught up; the supervisor polls it again after ``poll_interval_seconds``.
- ``decode(raw)`` — bytes or loose JSON to a record; raises ``DecodeError``. Default: the raw record unchanged.
- ``identity(record)`` — the record's source identity, ``(source key, source version)``: its events' ids are
  derived from it (with the contract's :meth:`~inlet.contracts.base.Contract.event_id_name`).
- ``map(record)`` — **pure**: record to contract instances, or raises ``MappingError``. Returning no
  events is not allowed to hide data: a record that should produce nothing is refused by ``filter``
  with a stated reason instead.

``acknowledge(position)`` is called after the sink has every event of a batch and its checkpoint is
written (MQTT sends its PUBACKs there). The base class owns the lifecycle (``start``/``stop``, idempotent,
``async with``); rate limits, retries, validation, envelopes and logging context live in the core, so
a plugin cannot forget them.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import orjson
import structlog
from pydantic import BaseModel, ConfigDict

from inlet.contracts.base import Contract, published
from inlet.core.envelope import payload_bytes
from inlet.core.errors import ConfigError
from inlet.core.types import Position, RawRecord

__all__ = ["Batch", "Connector", "IntegrationContext", "NoSettings", "PluginSettings"]


class PluginSettings(BaseModel):
    """Base of every settings model, a plugin's and the core's own (``inlet.yaml``, HTTP, MQTT, auth): unknown keys
    are errors, values are immutable.

    A field's docstring (the string literal under it) is its description, so ``inlet plugins show`` and the
    YAML that ``inlet new`` writes document every option from the model itself. The one place this config is
    declared (a test keeps it so); event contracts have their own base, ``contracts.base``, which imports nothing
    of the core.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class NoSettings(PluginSettings):
    """For plugins that need no settings."""


SettingsT = TypeVar("SettingsT", bound=PluginSettings)


@dataclass(frozen=True, slots=True)
class Batch:
    """Raw records read together, and the source position to commit once all of them are handled."""

    records: Sequence[RawRecord]
    position: Position


@dataclass(frozen=True)
class IntegrationContext:
    """What a connector knows about where it runs: who it is for and where its files are."""

    customer: str
    integration: str
    zone: str | None = None
    config_root: Path = field(default_factory=Path.cwd)
    slot: int | None = None
    """Which of the integration's ``slots`` this instance is (0-based); None when it has one slot."""
    run_once: bool = False
    """``inlet run --once``: a push source ends its read when it has gone quiet (a pull source ends anyway)."""
    state_dir: Path | None = None
    """The supervisor's state directory (checkpoints, outbox): where a connector may keep state of its own
    (:meth:`state_path`); None when nothing is to be kept (replay, unit tests)."""
    log: Any = field(default=None)
    http_transport: Any = field(default=None)
    """An httpx transport to use instead of the network (recording, tests); None in production."""
    message_source: Any = field(default=None)
    """A factory ``(MqttSettings, client_id) -> MessageSource`` used instead of the broker (recording,
    replay); None in production."""
    mllp_source: Any = field(default=None)
    """A factory ``(MllpSettings) -> MllpSource`` used instead of a listening socket (recording, replay); None
    in production."""

    def logger(self) -> Any:
        """A structlog logger bound to customer and integration."""
        return self.log or structlog.get_logger().bind(customer=self.customer, integration=self.integration)

    def state_path(self, kind: str) -> Path | None:
        """``<state_dir>/<kind>/<customer>.<integration>.json``, its folder created; None without a state dir."""
        if self.state_dir is None:
            return None
        folder = self.state_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.customer}.{self.integration}.json"

    def path(self, value: str | Path) -> Path:
        """A path from config: relative ones are relative to the config directory."""
        p = Path(value)
        return p if p.is_absolute() else (self.config_root / p).resolve()


class Connector(abc.ABC, Generic[SettingsT]):
    """Base of every connector family and customer plugin.

    Subclasses set ``name`` (what ``plugin:`` in YAML refers to), ``settings_model`` and
    ``contracts`` (the contract models it emits), and override the hooks above.
    """

    name: ClassVar[str] = ""
    settings_model: ClassVar[type[PluginSettings]] = NoSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = ()
    description: ClassVar[str] = ""
    phi: ClassVar[bool] = False
    """True for healthcare feeds: recorded fixtures pseudonymise PHI (core.redact)."""
    source_zone: ClassVar[str | None] = None
    """The zone this customer's source writes times without an offset in, when that is fixed (a hospital's EHR):
    any other configured ``zone`` would shift every such time, so the base class refuses it (``inlet check`` too)."""
    zone_needed: ClassVar[str] = ""
    """Non-empty when records of this family need the integration's ``zone``: what goes to the DLQ without it."""
    redelivers: ClassVar[bool] = False
    """True for a push source whose sender redelivers what was not acknowledged (an MQTT broker, an MLLP sender):
    with ``delivery: exactly_once`` the pipeline then keeps the :meth:`redelivery_key` of the last committed batch
    in its position, so a message redelivered after a crash between commit and acknowledgement is recognised."""
    shares_source: ClassVar[bool] = False
    """True when several instances (``slots``, each with ``ctx.slot``) can split one source between them (MQTT
    shared subscriptions); a pull source with one position per integration cannot."""

    def __init__(self, ctx: IntegrationContext, settings: SettingsT) -> None:
        if self.source_zone is not None and ctx.zone != self.source_zone:
            raise ConfigError(
                f"{self.description or self.name}: the source writes times without an offset as "
                f"{self.source_zone} wall time: zone must be {self.source_zone}, got {ctx.zone!r}",
                key="zone",
            )
        self.ctx = ctx
        self.settings = settings
        self.log = ctx.logger()
        self._started = False

    def produces(self) -> tuple[type[Contract], ...]:
        """The contracts *this* integration emits with its settings (``contracts`` is what the class can map
        to), each followed by the majors it is dual-published as during a migration (``contracts.base.converter``)."""
        return published(self.contracts)

    def config_warnings(self) -> list[str]:
        """What ``inlet check`` should warn about in this integration's configuration (not errors: it runs)."""
        if self.zone_needed and self.ctx.zone is None:
            return [f"no zone: {self.zone_needed}"]
        return []

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open connections; calling it twice does nothing the second time."""
        if not self._started:
            await self.open()
            self._started = True

    async def stop(self) -> None:
        """Close connections; safe to call when not started."""
        if self._started:
            self._started = False
            await self.close()

    async def __aenter__(self) -> Connector[SettingsT]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def open(self) -> None:
        """Hook: open clients. Default: nothing."""

    async def close(self) -> None:
        """Hook: close clients. Default: nothing."""

    # -- the hooks -------------------------------------------------------------------------------
    @abc.abstractmethod
    def read(self, position: Position | None) -> AsyncIterator[Batch]:
        """Yield batches from ``position`` (None: from the configured start)."""

    def decode(self, raw: RawRecord) -> Any:
        """Raw record to a decoded record; raise ``DecodeError`` for what cannot be parsed."""
        return raw

    def filter(self, record: Any) -> str | None:
        """A reason to leave this record out on purpose (counted as filtered), or None to keep it."""
        return None

    @abc.abstractmethod
    def identity(self, record: Any) -> tuple[str, str]:
        """The source identity of a decoded record, ``(source key, source version)``, for deterministic event ids."""

    @abc.abstractmethod
    def map(self, record: Any) -> Sequence[Contract]:
        """Pure: a decoded record to contract instances; raise ``MappingError`` when it cannot."""

    def raw_from_dlq(self, payload: bytes) -> RawRecord:
        """The raw record a DLQ record's payload was made from, for ``inlet dlq replay`` (the inverse of
        ``core.envelope.payload_bytes``). Default: a JSON object or array parsed as the HTTP families read it
        (``core.exact_json``: numbers as written), anything else the bytes themselves. A family whose raw records
        carry more than their payload (an MQTT topic) raises ``NotReplayable`` here."""
        from inlet.core import exact_json

        if payload[:1] in (b"{", b"["):
            try:
                return exact_json.loads(payload)
            except ValueError:
                pass
        return payload

    async def acknowledge(self, position: Position) -> None:
        """Called once the sink holds every event up to ``position`` and the checkpoint is written."""

    def redelivery_key(self, raw: RawRecord) -> bytes:
        """What makes a redelivered raw record recognisable (``redelivers``): by default its bytes."""
        return payload_bytes(raw)

    def describe_position(self, position: Position | None) -> str:
        """What the next run reads from ``position``, in a line for people: ``inlet positions set`` / ``reset``
        print it before an operator moves a position. Default: generic; a family that knows what its position
        means says so (a watermark re-reads everything updated since it, a push source ignores it)."""
        if not position:
            return "reads from the start: no position"
        shown = orjson.dumps(position, option=orjson.OPT_SORT_KEYS).decode()
        return f"reads on after {shown if len(shown) <= 300 else shown[:299] + '…'}"
