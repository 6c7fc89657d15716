"""Loading a config directory: ``inlet.yaml`` (the supervisor) and ``integrations/*.yaml`` (one each).

Layout::

    <config dir>/
      inlet.yaml                      optional: sink, state dir, topic template, metrics port
      integrations/<anything>.yaml    one integration each: customer, integration, plugin, settings

YAML is safe-loaded and size-bounded. Every problem is reported as a :class:`ConfigError` naming the
file, the key path and what was expected; :func:`check_config` collects all of them at once so
``inlet check`` can list everything wrong in one go, while :func:`load_config` raises on the first.
Environment variables override the file for deployment: ``INLET_KAFKA_BOOTSTRAP`` switches the sink
to Kafka, ``INLET_STATE_DIR`` moves state. Every relative path in a config file resolves against the config
directory (``state_dir`` here, replay and shape paths through :meth:`IntegrationContext.path`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from inlet.contracts.base import Contract
from inlet.core.auth import OAuth2ClientCredentialsSettings
from inlet.core.connector import Connector, IntegrationContext, PluginSettings
from inlet.core.errors import ConfigError
from inlet.core.registry import find_plugin
from inlet.core.secrets import Secret

__all__ = [
    "DriftSettings",
    "IntegrationConfig",
    "KafkaSettings",
    "LoadedIntegration",
    "MonitorFields",
    "MonitorSettings",
    "RelaySettings",
    "RenamedKeys",
    "SupervisorConfig",
    "TopicSettings",
    "TopicsSettings",
    "check_config",
    "find_config_dir",
    "load_config",
    "load_supervisor",
    "renames",
]

MAX_CONFIG_BYTES = 1024 * 1024
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class RenamedKeys(BaseModel):
    """Mixin of a settings model some of whose keys were renamed: the old keys are still read.

    The rule the renames follow: durations that are inlet's own end in ``_seconds``; keys that mirror a Kafka
    config keep Kafka's ``_ms`` (users copy them from its documentation). ``renamed_keys`` (built with
    :func:`renames`) maps an old key to its new one and the seconds one unit of the old key is (``1`` for a rename
    alone, ``60`` for minutes, ``Fraction(1, 1000)`` for milliseconds). An old key's value is converted to the new
    key with a ``DeprecationWarning`` naming both and the value to write; giving both is an error.
    """

    renamed_keys: ClassVar[Mapping[str, tuple[str, int | Fraction]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _read_renamed_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(old in data for old in cls.renamed_keys):
            return data
        data = dict(data)
        for old, (new, unit) in cls.renamed_keys.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"{old} and {new} are both given: {old} is the old name of {new}; keep {new} only")
            value = data.pop(old)
            data[new] = _in_seconds(value, unit)
            shown = {key: "null" if v is None else v for key, v in ((old, value), (new, data[new]))}
            warnings.warn(
                f"{old} is deprecated, renamed {new}: write {new}: {shown[new]} instead of {old}: {shown[old]} "
                f"({cls.__name__})",
                DeprecationWarning,
                stacklevel=3,  # this validator, pydantic's model_validate or __init__, then whoever called it
            )
        return data


def renames(**old_keys: str | tuple[str, int | Fraction]) -> Mapping[str, tuple[str, int | Fraction]]:
    """``renamed_keys`` of a :class:`RenamedKeys` model: ``old="new"`` for a rename, ``old=("new", 60)`` for a
    rename from another unit (here minutes) to seconds."""
    return MappingProxyType({old: (new, 1) if isinstance(new, str) else new for old, new in old_keys.items()})


def _in_seconds(value: Any, unit: int | Fraction) -> Any:
    """``value`` units in seconds: exact (``5`` ms is ``0.005``), an int when whole; anything else unchanged."""
    if unit == 1 or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return value  # a rename only, None, infinity, or a wrong type the new key's validation reports
    seconds = Fraction(value) * unit
    return int(seconds) if seconds.denominator == 1 else float(seconds)


class KafkaSettings(PluginSettings):
    """Producer settings. Defaults are tuned for throughput with acks=all (see bench/).

    Security (``core.kafka_client`` turns it into every client's connection options): ``security_protocol``
    says what the listener speaks; SASL listeners need a ``sasl_mechanism`` and its credentials (``username`` +
    ``password`` for PLAIN and SCRAM, ``oauth`` client credentials for OAUTHBEARER); TLS listeners verify the
    broker against ``ssl_cafile`` (else the system's CAs) and its host name, and present a client certificate
    (``ssl_certfile`` + ``ssl_keyfile``) for mutual TLS. Every combination is checked when the config is loaded
    (``inlet check``); relative file paths are relative to the config directory.
    """

    bootstrap: str
    linger_ms: int = Field(default=5, ge=0)
    max_batch_size: int = Field(default=256 * 1024, ge=16 * 1024)
    max_in_flight_events: int = Field(default=20_000, ge=100)
    request_timeout_ms: int = Field(default=15_000, ge=1000)
    client_id: str = "inlet"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """What the bootstrap listener speaks: TLS (``SSL``), SASL authentication, both (``SASL_SSL``), or neither."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    """Required with SASL_*; PLAIN and SCRAM use ``username``/``password``, OAUTHBEARER uses ``oauth``."""
    username: str | None = None
    password: Secret | None = None
    """``{env: NAME}`` or ``{file: PATH}``, never the value itself."""
    oauth: OAuth2ClientCredentialsSettings | None = None
    """OAUTHBEARER: the token endpoint and client credentials (``core.auth``'s ``oauth2_client_credentials``)."""
    ssl_cafile: str | None = None
    """PEM file of the CA(s) that signed the brokers' certificates; unset: the system's trusted CAs."""
    ssl_certfile: str | None = None
    """Mutual TLS: this client's PEM certificate (chain); needs ``ssl_keyfile``."""
    ssl_keyfile: str | None = None
    """Mutual TLS: the PEM private key of ``ssl_certfile``."""
    ssl_key_password: Secret | None = None
    """Only for an encrypted ``ssl_keyfile``."""
    ssl_check_hostname: bool = True
    """``false`` accepts a broker certificate issued for another host name (still signed by a trusted CA): a
    warning at every start. The chain itself is always verified."""

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _existing_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Relative to the config directory (validation context ``config_root``); must exist when loaded."""
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        root = Path(context.get("config_root") or Path.cwd())
        path = (root / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise ValueError(
                f"file {path} does not exist; give the PEM file's path (relative paths are relative "
                "to the config directory)"
            )
        return str(path)

    @model_validator(mode="after")
    def _security_combination(self) -> KafkaSettings:
        sasl, tls = self.security_protocol.startswith("SASL_"), self.security_protocol.endswith("SSL")
        fix = "set kafka.security_protocol to SASL_SSL (or SASL_PLAINTEXT)"
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism: PLAIN, SCRAM-SHA-256, "
                "SCRAM-SHA-512 or OAUTHBEARER"
            )
        if not sasl:
            used = [name for name in ("sasl_mechanism", "username", "password", "oauth") if getattr(self, name)]
            if used:
                raise ValueError(
                    f"{', '.join(used)} set but security_protocol is {self.security_protocol}, which "
                    f"does not authenticate with SASL: {fix}, or remove them"
                )
        if self.sasl_mechanism == "OAUTHBEARER":
            if self.oauth is None:
                raise ValueError(
                    "sasl_mechanism OAUTHBEARER needs oauth: {token_url, client_id, client_secret: "
                    "{env: NAME}} (OAuth2 client credentials)"
                )
            if self.username or self.password:
                raise ValueError("sasl_mechanism OAUTHBEARER takes its token from oauth: remove username/password")
        elif sasl:
            if not self.username or self.password is None:
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism} needs username and password "
                    "(password: {env: NAME} or {file: PATH})"
                )
            if self.oauth is not None:
                raise ValueError(f"oauth is only for sasl_mechanism OAUTHBEARER, not {self.sasl_mechanism}")
        files = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
            if getattr(self, name) is not None
        ]
        if not tls and (files or not self.ssl_check_hostname):
            used = files + ([] if self.ssl_check_hostname else ["ssl_check_hostname"])
            raise ValueError(
                f"{', '.join(used)} set but security_protocol is {self.security_protocol}, which has no "
                "TLS: set it to SSL or SASL_SSL, or remove them"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile (the client certificate) and ssl_keyfile (its key)")
        if self.ssl_key_password is not None and self.ssl_keyfile is None:
            raise ValueError("ssl_key_password is set without ssl_keyfile")
        if tls:
            from inlet.core.kafka_client import ssl_context  # the one builder; imported late (it imports us)

            ssl_context(self)  # unreadable PEM, a key that does not match the certificate, a wrong key password
        return self


class RelaySettings(RenamedKeys, PluginSettings):
    """``relay:``: shipping the embedded outbox to Kafka (``inlet relay``, or inside ``inlet run``)."""

    renamed_keys = renames(
        poll_interval="poll_interval_seconds",
        retention_hours=("retention_seconds", 3600),
        prune_interval="prune_interval_seconds",
        progress_interval="progress_interval_seconds",
    )

    enabled: bool = False
    """Run the relay inside ``inlet run``: integrations write the outbox and the relay ships it to ``kafka`` in
    outbox order (``sink: auto`` then means the outbox). Needs ``kafka``; refused with ``sink: kafka``."""
    page_size: int = Field(default=1000, ge=1, le=100_000)
    """Outbox rows read per query."""
    max_in_flight_events: int = Field(default=20_000, ge=1)
    """At most this many rows read and not yet acknowledged by Kafka (memory bound)."""
    max_in_flight_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    """At most about this many bytes (keys, values, headers) read and not yet acknowledged."""
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    """Seconds between looks for new rows once everything is shipped."""
    retention_seconds: float | None = Field(default=7 * 86400.0, ge=0)
    """Shipped rows are deleted from the outbox this many seconds after Kafka acknowledged them (default 7
    days); None: kept forever. Unshipped rows are never deleted."""
    prune_interval_seconds: float = Field(default=60.0, gt=0)
    """Seconds between prunes while following."""
    progress_interval_seconds: float = Field(default=10.0, gt=0)
    """Seconds between progress lines (shipped, remaining)."""


class TopicSettings(PluginSettings):
    """How topics of one kind, contract or name are created (``topics:``); a field left out is inherited."""

    partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)
    retention_ms: int | None = Field(default=None, ge=-1)
    """``retention.ms``; -1 keeps events forever."""
    cleanup_policy: Literal["delete", "compact", "compact,delete"] | None = None
    configs: dict[str, str] = Field(default_factory=dict)
    """Any other topic config by its Kafka name (``min.insync.replicas``, ``max.message.bytes``, ...)."""

    @field_validator("configs")
    @classmethod
    def _not_typed_twice(cls, value: dict[str, str]) -> dict[str, str]:
        typed = {"retention.ms": "retention_ms", "cleanup.policy": "cleanup_policy"}
        twice = [f"{key} (use {typed[key]})" for key in value if key in typed]
        if twice:
            raise ValueError(f"set {', '.join(twice)} as its own key, not in configs")
        return value


class TopicsSettings(PluginSettings):
    """``topics:``: the topics inlet writes to Kafka, as ``inlet topics plan/apply`` and the start-up check see them.

    Layers, most specific first: ``overrides`` (a topic name, then a contract name), the kind (``contracts``,
    ``dlq``, ``drift``), ``replication_factor``, the built-in defaults of ``core.topics`` (contract topics 6
    partitions, 7 days, ``delete``; DLQ and drift topics 1 partition, 30 days; replication 3 — fewer only on a
    cluster with fewer brokers — and ``min.insync.replicas`` one less than the replication, at least 1).
    """

    create: bool | Literal["auto"] = "auto"
    """At start-up with Kafka, topics that are missing are created (``true``) or the run is refused, naming them
    and ``inlet topics apply`` (``false``). ``auto``: created when the cluster would create them itself on first
    write (``auto.create.topics.enable``, a development broker), refused when it would not (a provisioned one)."""
    replication_factor: int | None = Field(default=None, ge=1)
    """Every topic's, unless its kind or an override says otherwise."""
    contracts: TopicSettings = Field(default_factory=TopicSettings)
    """The contract topics (one per contract major)."""
    dlq: TopicSettings = Field(default_factory=TopicSettings)
    drift: TopicSettings = Field(default_factory=TopicSettings)
    overrides: dict[str, TopicSettings] = Field(default_factory=dict)
    """Per contract name (every major's topic) or exact topic name."""


class FleetSettings(RenamedKeys, PluginSettings):
    """``fleet:``: several supervisors share the integrations through a Kafka consumer group (``core.fleet``).

    With it, positions live in the compacted ``positions_topic`` instead of ``checkpoints.sqlite``, so whichever
    replica takes an integration over reads on from where the last owner committed."""

    group: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    """The Kafka consumer group id the replicas share; replicas with the same group split the integrations."""
    replica: str | None = None
    """This replica's name in ``inlet status`` and in the positions it writes; None: ``INLET_REPLICA``, else
    ``<hostname>-<pid>``."""
    positions_topic: str = "inlet.positions"
    """The compacted topic holding every integration's position, keyed ``customer/integration``."""
    session_timeout_seconds: float = Field(default=10.0, ge=1, le=300)
    """How long a silent replica keeps its integrations before the group hands them to the others."""
    heartbeat_interval_seconds: float = Field(default=3.0, gt=0, le=100)
    rebalance_timeout_seconds: float = Field(default=60.0, ge=1, le=3600)
    """How long a rebalance waits for a replica to drain and commit what it releases."""
    transactional_id_prefix: str = "inlet"
    """``<prefix>.<customer>.<integration>`` is the transactional id of an exactly-once integration."""

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> FleetSettings:
        if self.heartbeat_interval_seconds * 3 > self.session_timeout_seconds:
            raise ValueError(
                "fleet.heartbeat_interval_seconds must be at most a third of session_timeout_seconds "
                f"(got {self.heartbeat_interval_seconds} and {self.session_timeout_seconds})"
            )
        return self


class ApiSettings(PluginSettings):
    """``api:``: the operations API and console on the metrics port (``core.api``)."""

    token_file: str | None = None
    """A file holding the bearer token that enables the actions (pause, resume, restart), relative to the config
    directory; ``INLET_API_TOKEN`` takes precedence. With neither, the API is read-only."""


class SupervisorConfig(RenamedKeys, PluginSettings):
    """``inlet.yaml``: where events go and where state lives."""

    renamed_keys = renames(
        restart_backoff_initial="restart_backoff_initial_seconds", restart_backoff_max="restart_backoff_max_seconds"
    )

    sink: Literal["auto", "outbox", "kafka"] = "auto"
    kafka: KafkaSettings | None = None
    relay: RelaySettings = Field(default_factory=RelaySettings)
    state_dir: str = "var"
    """Checkpoints and the outbox; relative to the config directory (``INLET_STATE_DIR``: to the working one)."""
    topic_template: str = "{name}.v{major}"
    dlq_topic_template: str = "inlet.dlq.{customer}.{integration}"
    drift_topic_template: str = "inlet.drift.{customer}.{integration}"
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port for /metrics, /healthz, /readyz; None: not served."""
    metrics_host: str = "127.0.0.1"
    """Interface for that port; a container sets 0.0.0.0."""
    restart_backoff_initial_seconds: float = Field(default=1.0, gt=0)
    """Seconds before the first restart of a failed integration; doubling (jittered) after each failure."""
    restart_backoff_max_seconds: float = Field(default=60.0, gt=0)
    """The restart backoff's ceiling."""
    api: ApiSettings = Field(default_factory=ApiSettings)
    fleet: FleetSettings | None = None
    """Several supervisors sharing the integrations (positions in Kafka); None: this one runs them all."""

    @model_validator(mode="after")
    def _fleet_needs_kafka(self) -> SupervisorConfig:
        if self.fleet is not None and (self.kafka is None or self.resolved_sink() != "kafka"):
            raise ValueError(
                "fleet needs Kafka as the sink (kafka.bootstrap, no relay): the replicas share positions and "
                "events through it"
            )
        return self

    @model_validator(mode="after")
    def _relay_needs_kafka_and_the_outbox(self) -> SupervisorConfig:
        if self.relay.enabled and self.kafka is None:
            raise ValueError(
                "relay.enabled needs kafka.bootstrap (or INLET_KAFKA_BOOTSTRAP): the relay ships "
                "the outbox to that Kafka"
            )
        if self.relay.enabled and self.sink == "kafka":
            raise ValueError(
                "relay.enabled needs the outbox sink (sink: auto or outbox): with sink: kafka, new "
                "events would reach Kafka before the outbox's older events of the same key"
            )
        return self

    def resolved_sink(self) -> Literal["outbox", "kafka"]:
        """``auto`` means Kafka when a bootstrap is configured, the embedded outbox otherwise; with the relay
        enabled it means the outbox (the relay is then the way to Kafka)."""
        if self.sink == "auto":
            return "kafka" if self.kafka is not None and not self.relay.enabled else "outbox"
        return self.sink


class DriftSettings(PluginSettings):
    """Upstream drift checks: the recorded shape of the payloads this integration depends on."""

    shape: str
    """``shape.json`` (``core.drift``), relative to the config directory; usually next to the fixtures."""
    policy: Literal["map", "dlq"] = "map"
    """What happens to a drifted record after the alert: mapped anyway, or sent to the DLQ."""
    strict: bool = False
    """Also alert on fields never seen before."""


class MonitorFields(PluginSettings):
    """Which fields of one contract the monitors watch, replacing the contract's own ``monitoring`` defaults (each
    list given replaces that list; a list left out keeps the default). Paths as in ``contracts.base.Monitoring``."""

    numeric: list[str] | None = None
    series: list[str] | None = None
    categories: list[str] | None = None
    nulls: list[str] | None = None


class MonitorSettings(PluginSettings):
    """Data-quality monitors (``core.monitors``, docs/monitors.md): volume, freshness, numeric and categorical
    drift and null rates of this integration's events, judged per window against a learnt baseline."""

    enabled: bool = True
    window_seconds: float = Field(default=3600.0, ge=1, le=86400)
    """The window events are counted and judged in; windows are aligned to the Unix epoch (to UTC hours)."""
    learn_seconds: float = Field(default=7 * 86400.0, ge=0)
    """How long a new integration learns before any monitor alerts (a week: every hour of the week seen once)."""
    max_series: int = Field(default=5000, ge=1, le=100_000)
    """Numeric series kept per integration (a meter hub of 1,000 meters has ~4,000); a new series beyond the cap
    evicts the tenth of them not seen for the longest time. Each is ~75 bytes of stored state."""
    volume: bool = True
    volume_low_ratio: float = Field(default=0.3, gt=0, lt=1)
    """Alert when a window holds fewer than this share of the events its hours of the week normally bring."""
    volume_high_ratio: float = Field(default=4.0, gt=1)
    """Alert when a window holds more than this many times the events its hours of the week normally bring."""
    volume_min_expected: float = Field(default=20.0, ge=1)
    """Judge volume only in windows expected to hold at least this many events (a quiet night is no outage)."""
    volume_sigmas: float = Field(default=3.0, gt=0)
    """...and only a count this many standard deviations of the feed's learnt burstiness away from the expected."""
    freshness: bool = True
    silence_expected_events: float = Field(default=10.0, ge=1)
    """Alert on silence once the baseline expected at least this many events since the last one came, counted in
    the feed's bursts (a hospital sending ten observations at a time: a hundred), and half a window has passed."""
    max_silence_seconds: float | None = Field(default=None, gt=0)
    """Also alert after this long without any event, whatever the baseline expects (a feed that must never pause)."""
    lag_factor: float = Field(default=4.0, gt=1)
    lag_min_seconds: float = Field(default=900.0, ge=0)
    """Alert when a window's median lag (arrival - event time) exceeds the baseline by this factor and margin."""
    numeric: bool = True
    numeric_min_count: int = Field(default=5, ge=1)
    """Judge a series only in windows with at least this many values."""
    level_ratio: float = Field(default=10.0, gt=1)
    """A level shift: the window's median moved by this factor or more (a unit x1000) and its middle half left the
    baseline's 5th-95th percentile band..."""
    shift_scale: float = Field(default=2.0, gt=0)
    """...or it moved by this many times the baseline's magnitude (a sign flip, a move across zero)."""
    categorical: bool = True
    nulls: bool = True
    share_change: float = Field(default=0.15, gt=0, lt=1)
    """Categories and nulls: alert when a value's share of a window moved by at least this much (0.15 = 15
    points)..."""
    share_sigmas: float = Field(default=5.0, gt=0)
    """...and by this many standard errors of the baseline share at the window's count (not chance)."""
    share_min_count: int = Field(default=30, ge=1)
    """Judge a field's shares only in windows where it was seen at least this many times."""
    fields: dict[str, MonitorFields] = Field(default_factory=dict)
    """Per contract name (``energy.meter_reading``): the fields to watch instead of the contract's defaults."""


class IntegrationConfig(RenamedKeys, PluginSettings):
    """One ``integrations/*.yaml``: which plugin serves which customer, with its settings."""

    renamed_keys = renames(poll_interval="poll_interval_seconds")

    customer: str = Field(pattern=_SLUG)
    integration: str = Field(pattern=_SLUG)
    plugin: str
    enabled: bool = True
    zone: str | None = None
    poll_interval_seconds: float = Field(default=30.0, gt=0)
    """Seconds between reads once a pull source has caught up."""
    max_in_flight: int = Field(default=4, ge=1, le=64)
    settings: dict[str, Any] = Field(default_factory=dict)
    drift: DriftSettings | None = None
    monitors: MonitorSettings = Field(default_factory=MonitorSettings)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    """This integration's log level, overriding ``INLET_LOG_LEVEL`` for its lines; None: the process's level."""
    weight: float = Field(default=1.0, gt=0, le=1000)
    """Its share of a replica's capacity when a fleet splits the integrations (a meter hub weighs more than a
    nightly export)."""
    slots: int = Field(default=1, ge=1, le=64)
    """Parallel instances of a push source sharing its load (MQTT: one ``$share`` subscription, one persistent
    session per slot); each slot is placed on a replica of its own where the fleet has enough of them."""
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """``exactly_once``: each batch's events, DLQ records and position in one Kafka transaction (needs ``fleet``)."""

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin)") from None
        return value

    @property
    def key(self) -> str:
        """``customer/integration``: how the CLI and logs name it."""
        return f"{self.customer}/{self.integration}"


@dataclass(frozen=True)
class LoadedIntegration:
    """A validated integration: its config, plugin class and validated plugin settings."""

    config: IntegrationConfig
    plugin: type[Connector[Any]]
    settings: PluginSettings
    file: Path
    context: IntegrationContext
    produces: tuple[type[Contract], ...] = ()
    """The contracts this integration emits with its settings (what its connector says)."""
    warnings: tuple[str, ...] = ()
    """Configuration that runs but loses data or surprises (``inlet check`` prints them)."""

    def build(self, *, once: bool = False, slot: int | None = None) -> Connector[Any]:
        """A fresh connector instance (the supervisor makes a new one on every restart); ``once``: for a run
        that ends when the source has nothing more (``inlet run --once``); ``slot``: which of ``slots`` it is."""
        ctx = self.context
        if once or slot is not None:
            ctx = replace(ctx, run_once=once or ctx.run_once, slot=slot)
        return self.plugin(ctx, self.settings)


def _read_yaml(path: Path) -> Any:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", file=str(path))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", file=str(path)) from None


def _validation_errors(exc: ValidationError, path: Path, prefix: str = "") -> list[ConfigError]:
    out = []
    for err in exc.errors():
        key = prefix + ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r:.80})"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(ConfigError(f"{msg}{shown}", file=str(path), key=key or None))
    return out


def _env_overrides(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    bootstrap = os.environ.get("INLET_KAFKA_BOOTSTRAP")
    if bootstrap:
        data["kafka"] = {**(data.get("kafka") or {}), "bootstrap": bootstrap}
    state = os.environ.get("INLET_STATE_DIR")
    if state:
        data["state_dir"] = str(Path(state).resolve())  # an environment variable is relative to where it is set
    # A container serves the probes without editing the mounted config.
    for key, name in (("metrics_port", "INLET_METRICS_PORT"), ("metrics_host", "INLET_METRICS_HOST")):
        if value := os.environ.get(name):
            data[key] = value
    return data


def load_supervisor(root: Path, errors: list[ConfigError]) -> SupervisorConfig:
    """``inlet.yaml`` of ``root`` (defaults when absent) with env overrides; problems are appended to ``errors``."""
    path = root / "inlet.yaml"
    data: Any = {}
    if path.exists():
        try:
            data = _read_yaml(path) or {}
        except ConfigError as exc:
            errors.append(exc)
            data = {}
    if not isinstance(data, dict):
        errors.append(ConfigError(f"expected a mapping at the top, got {type(data).__name__}", file=str(path)))
        data = {}
    try:
        sup = SupervisorConfig.model_validate(_env_overrides(data), context={"config_root": root})
    except ValidationError as exc:
        errors.extend(_validation_errors(exc, path))
        sup = SupervisorConfig()
    # Like every path in a config, state_dir is relative to the config directory, never to the working
    # directory: the same config run from two places must find the same checkpoints and outbox.
    update: dict[str, Any] = {"state_dir": str((root / sup.state_dir).resolve())}
    if sup.api.token_file is not None:
        update["api"] = sup.api.model_copy(update={"token_file": str((root / sup.api.token_file).resolve())})
    return sup.model_copy(update=update)


def _read_integration(path: Path) -> IntegrationConfig:
    """The integration's own keys (customer, integration, plugin, ...): no plugin import, no secret."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, got {type(data).__name__}", file=str(path))
    try:
        return IntegrationConfig.model_validate(data)
    except ValidationError as exc:
        raise _Many(_validation_errors(exc, path)) from None


def _load_integration(
    path: Path, root: Path, cfg: IntegrationConfig, *, offline: bool, state: Path | None
) -> LoadedIntegration:
    try:
        plugin = find_plugin(cfg.plugin)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("key plugin: "), file=str(path), key="plugin") from None
    try:
        settings = plugin.settings_model.model_validate(cfg.settings, context={"offline": offline, "config_root": root})
    except ValidationError as exc:
        raise _Many(_validation_errors(exc, path, prefix="settings.")) from None
    ctx = IntegrationContext(
        customer=cfg.customer, integration=cfg.integration, zone=cfg.zone, config_root=root, state_dir=state
    )
    item = LoadedIntegration(config=cfg, plugin=plugin, settings=settings, file=path, context=ctx)
    try:  # what the connector refuses when constructed, check refuses too (constructors do no I/O)
        connector = item.build()
    except ConfigError as exc:
        raise ConfigError(exc.message, file=str(path), key=exc.key) from None
    return replace(item, produces=connector.produces(), warnings=tuple(connector.config_warnings()))


class _Many(ConfigError):
    """Several config errors from one file. A local signal: :func:`check_config` lists them one by one."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def _errors_of(exc: ConfigError) -> list[ConfigError]:
    return exc.errors if isinstance(exc, _Many) else [exc]


def _fleet_errors(sup: SupervisorConfig, loaded: list[LoadedIntegration]) -> list[ConfigError]:
    """What an integration asks of the deployment: exactly-once needs a fleet (positions in Kafka, transactions);
    slots need a plugin that can share its source between instances (a push source with shared subscriptions)."""
    out = []
    for item in loaded:
        cfg = item.config
        if cfg.delivery == "exactly_once" and sup.fleet is None:
            out.append(
                ConfigError(
                    "delivery: exactly_once writes events and positions in one Kafka transaction: it needs Kafka "
                    "positions, i.e. a fleet: section in inlet.yaml (a fleet of one replica is fine)",
                    file=str(item.file),
                    key="delivery",
                )
            )
        if cfg.slots > 1 and not item.plugin.shares_source:
            out.append(
                ConfigError(
                    f"slots: {cfg.slots} needs a plugin whose instances can share one source (MQTT shared "
                    f"subscriptions); {cfg.plugin} reads one position per integration: keep slots: 1",
                    file=str(item.file),
                    key="slots",
                )
            )
    return out


def check_config(
    root: Path, *, only: Collection[str] | None = None, offline: bool = False
) -> tuple[SupervisorConfig, list[LoadedIntegration], list[ConfigError]]:
    """Validate a whole config directory, collecting every error instead of stopping at the first.

    ``only`` (``customer/integration`` keys) loads just those integrations: the other files are read for
    their keys alone, so their plugins' settings and secrets are neither validated nor needed, and an error
    in them does not stop work on the chosen one. ``offline`` lets absent secrets be stand-ins
    (:class:`~inlet.core.secrets.OfflineSecret`) for replaying recorded fixtures.
    """
    errors: list[ConfigError] = []
    if not root.is_dir():
        return SupervisorConfig(), [], [ConfigError("config directory does not exist", file=str(root))]
    root = root.resolve()
    sup = load_supervisor(root, errors)
    loaded: list[LoadedIntegration] = []
    files = sorted((root / "integrations").glob("*.y*ml"))
    if not files:
        errors.append(ConfigError("no integration files (integrations/*.yaml)", file=str(root)))
    seen: dict[str, Path] = {}
    wanted = set(only) if only is not None else None
    for path in files:
        try:
            cfg = _read_integration(path)
        except ConfigError as exc:  # _Many too
            if wanted is None:  # with --only, a broken file of another integration is not this run's problem
                errors.extend(_errors_of(exc))
            continue
        if cfg.key in seen:
            errors.append(
                ConfigError(f"{cfg.key} is already defined in {seen[cfg.key]}", file=str(path), key="integration")
            )
            continue
        seen[cfg.key] = path
        if wanted is not None and cfg.key not in wanted:
            continue
        try:
            loaded.append(
                _load_integration(path, root, cfg, offline=offline, state=None if offline else Path(sup.state_dir))
            )
        except ConfigError as exc:  # _Many too
            errors.extend(_errors_of(exc))
    for key in sorted((wanted or set()) - set(seen)):
        close = difflib.get_close_matches(key, seen, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        errors.append(
            ConfigError(f"no integration {key} here{hint} (have: {', '.join(sorted(seen)) or 'none'})", file=str(root))
        )
    errors.extend(_fleet_errors(sup, loaded))
    if not re.fullmatch(r"[A-Za-z0-9._{}-]+", sup.topic_template):
        errors.append(
            ConfigError(
                "topic template may only hold letters, digits, . _ - and {fields}",
                file=str(root / "inlet.yaml"),
                key="topic_template",
            )
        )
    return sup, loaded, errors


def find_config_dir(given: Path | None, *, cwd: Path | None = None) -> Path:
    """The config directory a command works on: ``--config`` / ``INLET_CONFIG`` when given, else the nearest
    directory holding an ``inlet.yaml``, from the working directory up (as git and ruff find theirs).

    Raises a ConfigError that says everywhere it looked.
    """
    if given is not None:
        return given
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "inlet.yaml").is_file():
            return folder
    raise ConfigError(
        f"no config directory: none given with --config or INLET_CONFIG, and no inlet.yaml in {start} "
        "or any folder above it. Point --config at a directory holding inlet.yaml and "
        "integrations/*.yaml (e.g. --config examples/config)"
    )


def load_config(
    root: Path, *, only: Collection[str] | None = None, offline: bool = False
) -> tuple[SupervisorConfig, list[LoadedIntegration]]:
    """Like :func:`check_config` but raises the first error (all of them in the message)."""
    sup, loaded, errors = check_config(root, only=only, offline=offline)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            raise ConfigError("\n".join(str(e) for e in errors), file=None) from first
        raise first
    return sup, loaded
