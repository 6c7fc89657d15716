"""The Kafka topics a configuration writes, what the cluster has of them, and creating the missing ones.

``inlet topics plan`` / ``inlet topics apply`` (:mod:`inlet.core.cli_topics`) and the supervisor's start-up check
work with this module; every client it opens is an aiokafka admin client built by ``core.kafka_client``.

**Which topics** (:func:`required_topics`): for every enabled integration, the topic of each contract it produces
(``LoadedIntegration.produces``) and of each major those events are dual-published to (``converters_from``), the
``inlet.data_alert`` topic when its data-quality monitors are on (``core.monitors``), its DLQ topic, and its drift
topic when it has drift checks (only then does it write alerts); with ``fleet:``, the positions topic
(``fleet.positions_topic``, :mod:`inlet.core.positions`) every replica reads. Names come from the templates of
``inlet.yaml`` through the pipeline's own :class:`~inlet.core.envelope.Enveloper`, so they are the
topics the run will write, not a second guess.

**How each is created**: the built-in defaults below, overridden in ``inlet.yaml`` ``topics:`` by
``replication_factor``, then per kind (``contracts``, ``dlq``, ``drift``; the positions topic has no kind layer),
then per contract name (every major's topic) and per topic name (:class:`~inlet.core.config.TopicsSettings`).

=========  ==========  =========  =======  ==================================================================
kind       partitions  retention  cleanup  why
=========  ==========  =========  =======  ==================================================================
contract   6           7 days     delete   Partitions are how consumers scale and the unit of per-key order;
                                           adding some later moves keys (their order breaks across the change),
                                           so the headroom is chosen up front: 6 spreads evenly over 1, 2, 3 or
                                           6 consumers. 7 days is Kafka's own default: a consumer can be away
                                           over a long weekend. inlet is not the system of record (the source
                                           is, and a checkpoint can re-read it), and events are facts in time,
                                           not a changelog to compact.
dlq        1           30 days    delete   Few records, read by people in arrival order, after an incident
                                           rather than within hours; a DLQ record is the only copy inlet keeps
                                           of a payload it could not deliver, so it is kept longer.
drift      1           30 days    delete   Upstream drift alerts: rare, read by people, like the DLQ.
positions  1           -          compact  The latest position per ``customer/integration`` (a fleet's): compacted,
                                           so a key keeps its last value however old it is (time retention would
                                           delete the position of a quiet integration). One partition: every
                                           replica reads every position anyway (no group splits them), there is
                                           one small record per committed batch, and one partition keeps the
                                           topic's end offsets a single request to catch up to.
=========  ==========  =========  =======  ==================================================================

Replication: 3, with ``min.insync.replicas`` 2 (one less than the replication, at least 1, unless set in
``configs``): with ``acks=all`` an event is acknowledged once two brokers hold it, and one broker can be down
without stopping writes or losing an acknowledged event. On a cluster with fewer than 3 brokers (a development
one) the default is the number of brokers; a ``replication_factor`` that is set is used as it is (the broker
refuses an impossible one, and apply says so).

**Differences** (:func:`plan_topics`): an existing topic's partitions, replication and each configured setting
(``describe_configs``) against the configuration. They are reported, never altered: more partitions move keys,
a shorter retention deletes events — decisions for a person (``kafka-topics`` / ``kafka-configs``).

**The start-up check** (:func:`check_topics`, with a Kafka sink): missing topics are created when
``topics.create`` says so (``true``, or ``auto`` on a cluster that creates topics on first write anyway — there
the alternative is the broker's defaults, 1 partition, replication ``default.replication.factor``). Otherwise the
run is refused with one error naming every missing topic and ``inlet topics apply``, instead of failing on the
first event. Differences are logged as warnings. ``inlet relay`` runs the same check (:func:`ensure_topics`) for
the topics its outbox rows target and their integrations' DLQ topics (:func:`topic_specs`: the kind from the
rows' ``ce_type``, the settings from the same ``topics:`` layers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from inlet.contracts.base import Contract, converters_from
from inlet.contracts.inlet_data_alert import DataAlertV1
from inlet.core.config import KafkaSettings, LoadedIntegration, SupervisorConfig, TopicSettings, TopicsSettings
from inlet.core.envelope import Enveloper
from inlet.core.errors import SinkUnavailable, TopicsMissing
from inlet.core.kafka_client import connection_options, describe, start_client

__all__ = [
    "DEFAULTS",
    "DEFAULT_REPLICATION",
    "Kind",
    "TopicPlan",
    "TopicSpec",
    "TopicState",
    "TopicsMissing",
    "check_topics",
    "create_missing",
    "ensure_topics",
    "plan_topics",
    "required_topics",
    "topic_specs",
]

log = structlog.get_logger("inlet.topics")

Kind = Literal["contract", "dlq", "drift", "positions"]

_DAY_MS = 24 * 3600 * 1000
DEFAULTS: Mapping[Kind, TopicSettings] = {
    "contract": TopicSettings(partitions=6, retention_ms=7 * _DAY_MS, cleanup_policy="delete"),
    "dlq": TopicSettings(partitions=1, retention_ms=30 * _DAY_MS, cleanup_policy="delete"),
    "drift": TopicSettings(partitions=1, retention_ms=30 * _DAY_MS, cleanup_policy="delete"),
    "positions": TopicSettings(partitions=1, cleanup_policy="compact"),
}
"""The built-in settings per kind of topic (module docstring: why)."""

DEFAULT_REPLICATION = 3
"""Replication when none is configured; capped to the number of brokers of a smaller cluster."""

CREATE_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the configuration wants it."""

    name: str
    kind: Kind
    partitions: int
    replication_factor: int | None
    """None: :data:`DEFAULT_REPLICATION`, or the number of brokers of a smaller cluster."""
    configs: Mapping[str, str]
    writers: tuple[str, ...] = ()
    """The integrations (``customer/integration``) writing it."""
    contracts: tuple[str, ...] = ()
    """``name version`` of the contracts whose events it holds (contract topics)."""

    def replication_on(self, brokers: int) -> int:
        """The replication factor on a cluster of ``brokers`` brokers."""
        return self.replication_factor or max(1, min(DEFAULT_REPLICATION, brokers))

    def configs_on(self, brokers: int) -> dict[str, str]:
        """The topic configs on that cluster: ``min.insync.replicas`` derived from the replication unless set."""
        configs = dict(self.configs)
        configs.setdefault("min.insync.replicas", str(max(1, self.replication_on(brokers) - 1)))
        return configs


def _settings_for(
    topics: TopicsSettings, kind: Kind, name: str, contract: str | None
) -> tuple[int, int | None, dict[str, str]]:
    """Partitions, replication and configs of one topic: the most specific layer that sets a field wins."""
    kind_settings = {"contract": topics.contracts, "dlq": topics.dlq, "drift": topics.drift}.get(kind)
    layers = [
        topics.overrides.get(name),
        topics.overrides.get(contract) if contract else None,
        kind_settings,
        TopicSettings(replication_factor=topics.replication_factor),
        DEFAULTS[kind],
    ]
    chosen = [layer for layer in layers if layer is not None]

    def pick(attribute: str) -> Any:
        return next((getattr(layer, attribute) for layer in chosen if getattr(layer, attribute) is not None), None)

    configs: dict[str, str] = {}
    for layer in reversed(chosen):
        configs.update(layer.configs)
    retention, cleanup = pick("retention_ms"), pick("cleanup_policy")
    if retention is not None:
        configs["retention.ms"] = str(retention)
    if cleanup is not None:
        configs["cleanup.policy"] = cleanup
    return int(pick("partitions")), pick("replication_factor"), dict(sorted(configs.items()))


def required_topics(cfg: SupervisorConfig, integrations: Sequence[LoadedIntegration]) -> list[TopicSpec]:
    """Every topic the enabled ``integrations`` write under ``cfg``: contract topics, then DLQ, then drift, then
    (with ``fleet:``) the positions topic."""
    found: dict[str, tuple[Kind, str | None, set[str], set[str]]] = {}

    def add(name: str, kind: Kind, writer: str, model: type[Contract] | None = None) -> None:
        entry = found.setdefault(name, (kind, model.contract_name if model else None, set(), set()))
        entry[2].add(writer)
        if model is not None:
            entry[3].add(f"{model.contract_name} {model.contract_version}")

    for item in integrations:
        c = item.config
        if not c.enabled:
            continue
        env = Enveloper.of(cfg, c.customer, c.integration)
        for model in item.produces:
            for written in (model, *converters_from(model)):
                add(env.topic_for(written), "contract", c.key, written)
        if c.monitors.enabled:  # data-quality alerts (core.monitors): a contract of their own
            add(env.topic_for(DataAlertV1), "contract", c.key, DataAlertV1)
        add(env.dlq_topic, "dlq", c.key)
        if c.drift is not None:
            add(env.drift_topic, "drift", c.key)
        if cfg.fleet is not None:
            add(cfg.fleet.positions_topic, "positions", c.key)
    return _specs(cfg.topics, found)


def topic_specs(topics: TopicsSettings, wanted: Iterable[tuple[str, Kind, str | None, str | None]]) -> list[TopicSpec]:
    """Specs of topics known by name rather than from integrations (the outbox relay's: what its rows target).

    ``wanted``: (topic, kind, contract name or None, writer ``customer/integration`` or None), repeats merged;
    settings come from ``topics`` exactly as :func:`required_topics` gives them.
    """
    found: dict[str, tuple[Kind, str | None, set[str], set[str]]] = {}
    for name, kind, contract, writer in wanted:
        entry = found.setdefault(name, (kind, contract, set(), set()))
        if writer:
            entry[2].add(writer)
    return _specs(topics, found)


def _specs(topics: TopicsSettings, found: Mapping[str, tuple[Kind, str | None, set[str], set[str]]]) -> list[TopicSpec]:
    order = {"contract": 0, "dlq": 1, "drift": 2, "positions": 3}
    specs = []
    for name, (kind, contract, writers, contracts) in sorted(found.items(), key=lambda kv: (order[kv[1][0]], kv[0])):
        partitions, replication, configs = _settings_for(topics, kind, name, contract)
        specs.append(
            TopicSpec(name, kind, partitions, replication, configs, tuple(sorted(writers)), tuple(sorted(contracts)))
        )
    return specs


@dataclass
class TopicState:
    """One wanted topic on the cluster: missing, or as it is and how it differs."""

    spec: TopicSpec
    replication_factor: int
    """The replication factor wanted on this cluster."""
    configs: dict[str, str]
    """The configs wanted on this cluster."""
    exists: bool = False
    actual_partitions: int | None = None
    actual_replication: int | None = None
    actual_configs: dict[str, str] | None = None
    """The wanted keys' values on the cluster; None when they could not be read (not allowed)."""
    differences: list[str] = field(default_factory=list)
    note: str | None = None

    @property
    def status(self) -> Literal["missing", "differs", "ok"]:
        if not self.exists:
            return "missing"
        return "differs" if self.differences else "ok"


@dataclass
class TopicPlan:
    """What the cluster has of the wanted topics."""

    where: str
    brokers: int
    auto_create: bool | None
    """The cluster's ``auto.create.topics.enable``; None when it could not be read."""
    states: list[TopicState]
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[TopicState]:
        return [s for s in self.states if not s.exists]

    @property
    def differing(self) -> list[TopicState]:
        return [s for s in self.states if s.exists and s.differences]


@contextlib.asynccontextmanager
async def _admin(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; a refusal of inlet's credentials is ``SinkRefused``, an outage ``SinkUnavailable``."""
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await start_client(admin, settings, close="close")
    try:
        yield admin
    except (KafkaError, OSError) as exc:
        raise SinkUnavailable(f"{describe(settings)}: topic administration failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _same(key: str, wanted: str, actual: str | None) -> bool:
    if key == "cleanup.policy" and actual is not None:
        return {p.strip() for p in wanted.split(",")} == {p.strip() for p in actual.split(",")}
    return wanted == actual


async def _configs(admin: AIOKafkaAdminClient, resources: Sequence[ConfigResource]) -> dict[str, dict[str, str] | None]:
    """Each resource's config values by name; None for one that could not be described (authorization)."""
    if not resources:
        return {}
    out: dict[str, dict[str, str] | None] = {}
    for response in await admin.describe_configs(list(resources)):
        for resource in response.to_object()["resources"]:
            values = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            out[resource["resource_name"]] = values if resource["error_code"] == 0 else None
    return out


async def plan_topics(settings: KafkaSettings, specs: Sequence[TopicSpec]) -> TopicPlan:
    """Compare the wanted topics with the cluster: what exists, what is missing, what differs. Changes nothing.

    Existence comes from the full topic list (a metadata request for a missing topic would create it on a broker
    with ``auto.create.topics.enable``); only existing topics are described.
    """
    async with _admin(settings) as admin:
        cluster = await admin.describe_cluster()
        brokers = [b["node_id"] for b in cluster["brokers"]]
        existing = set(await admin.list_topics())
        present = [s.name for s in specs if s.name in existing]
        described = {t["topic"]: t for t in await admin.describe_topics(present)} if present else {}
        topic_configs = await _configs(admin, [ConfigResource(ConfigResourceType.TOPIC, n) for n in present])
        auto_create = None
        if brokers:
            broker = await _configs(
                admin, [ConfigResource(ConfigResourceType.BROKER, str(brokers[0]), {"auto.create.topics.enable": None})]
            )
            value = (broker.get(str(brokers[0])) or {}).get("auto.create.topics.enable")
            auto_create = None if value is None else value == "true"
    states = []
    for spec in specs:
        state = TopicState(spec, spec.replication_on(len(brokers)), spec.configs_on(len(brokers)))
        states.append(state)
        topic = described.get(spec.name)
        if topic is None or topic["error_code"] != 0:
            continue
        state.exists = True
        partitions = topic["partitions"]
        state.actual_partitions = len(partitions)
        state.actual_replication = min((len(p["replicas"]) for p in partitions), default=0)
        if state.actual_partitions != spec.partitions:
            state.differences.append(f"partitions: {state.actual_partitions} (configured {spec.partitions})")
        if state.actual_replication != state.replication_factor:
            state.differences.append(
                f"replication factor: {state.actual_replication} (configured {state.replication_factor})"
            )
        actual = topic_configs.get(spec.name)
        if actual is None:
            state.note = "its configs could not be read (DescribeConfigs not allowed): not compared"
            continue
        state.actual_configs = {k: actual.get(k, "") for k in state.configs}
        for key, wanted in state.configs.items():
            if not _same(key, wanted, actual.get(key)):
                state.differences.append(f"{key}: {actual.get(key)} (configured {wanted})")
    plan = TopicPlan(describe(settings), len(brokers), auto_create, states)
    if brokers and len(brokers) < DEFAULT_REPLICATION and any(s.spec.replication_factor is None for s in states):
        plan.notes.append(
            f"replication: the default {DEFAULT_REPLICATION} is capped to the {len(brokers)} broker(s) of this cluster"
        )
    return plan


async def create_missing(settings: KafkaSettings, plan: TopicPlan) -> dict[str, str | None]:
    """Create the plan's missing topics with their configured settings; per topic None (created) or the broker's
    reason. Existing topics are never touched. Returns once the created topics are visible in the metadata."""
    missing = plan.missing
    if not missing:
        return {}
    results: dict[str, str | None] = {}
    async with _admin(settings) as admin:
        response = await admin.create_topics(
            [NewTopic(s.spec.name, s.spec.partitions, s.replication_factor, topic_configs=s.configs) for s in missing],
            timeout_ms=CREATE_TIMEOUT_MS,
        )
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else None
            if code in (0, kafka_errors.TopicAlreadyExistsError.errno):  # created, or by someone else meanwhile
                results[name] = None
            else:
                error = kafka_errors.for_code(code)
                results[name] = f"{error.__name__}: {message or getattr(error, 'description', '')}"
        created = {n for n, problem in results.items() if problem is None}
        for _ in range(CREATE_TIMEOUT_MS // 200):  # the controller has them; wait until the brokers say so too
            if not created - set(await admin.list_topics()):
                break
            await asyncio.sleep(0.2)
    for name, problem in results.items():
        if problem is None:
            log.info("kafka topic created", topic=name)
        else:
            log.error("kafka topic not created", topic=name, error=problem)
    return results


def _apply_hint(config_dir: Path | None) -> str:
    return f"inlet topics apply --config {config_dir}" if config_dir is not None else "inlet topics apply"


async def check_topics(
    cfg: SupervisorConfig, integrations: Sequence[LoadedIntegration], *, config_dir: Path | None = None
) -> list[str]:
    """The start-up check of a run writing to Kafka: the topics it creates (empty: all were there).

    Raises :class:`TopicsMissing` (one error naming every missing topic and the command to fix it) when topics
    are missing and ``topics.create`` does not create them, or when creating them failed; ``SinkUnavailable`` /
    ``SinkRefused`` when Kafka cannot be reached or refuses inlet. Differences are logged, not refused.
    """
    assert cfg.kafka is not None
    return await ensure_topics(cfg.kafka, cfg.topics, required_topics(cfg, integrations), config_dir=config_dir)


async def ensure_topics(
    kafka: KafkaSettings,
    topics: TopicsSettings,
    specs: Sequence[TopicSpec],
    *,
    config_dir: Path | None = None,
    fix: str | None = None,
) -> list[str]:
    """:func:`check_topics` for given ``specs`` (the relay checks the topics its outbox rows target).

    ``fix``: how to create missing topics, when ``inlet topics apply`` alone would not (the default hint).
    """
    if not specs:
        return []
    plan = await plan_topics(kafka, specs)
    for state in plan.differing:
        log.warning(
            "kafka topic differs from the configuration; not altered",
            topic=state.spec.name,
            differences="; ".join(state.differences),
        )
    missing = plan.missing
    if not missing:
        log.info("kafka topics checked", topics=len(specs))
        return []
    names = ", ".join(s.spec.name for s in missing)
    inlet_yaml = str(config_dir / "inlet.yaml") if config_dir is not None else None
    create = topics.create
    if create == "auto":
        create = plan.auto_create is True
        why = "topics.create is auto and this cluster does not create topics on first write: " + (
            "auto.create.topics.enable is false"
            if plan.auto_create is False
            else "its auto.create.topics.enable could not be read"
        )
    else:
        why = "topics.create is false"
    if not create:
        how = fix or f"with `{_apply_hint(config_dir)}` (review first with `inlet topics plan`)"
        raise TopicsMissing(
            f"{len(missing)} topic(s) this configuration writes are missing on {plan.where}: {names}. Create them "
            f"{how}, or set topics.create: true to create them at start-up ({why})",
            file=inlet_yaml,
            key="topics",
        )
    results = await create_missing(kafka, plan)
    failed = {name: problem for name, problem in results.items() if problem is not None}
    if failed:
        raise TopicsMissing(
            f"creating {len(failed)} topic(s) on {plan.where} failed: "
            + "; ".join(f"{name}: {problem}" for name, problem in failed.items())
            + f". Fix topics: in inlet.yaml (or create them by hand) and run `{_apply_hint(config_dir)}`",
            file=inlet_yaml,
            key="topics",
        )
    return sorted(results)
