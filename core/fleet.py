"""Several supervisors, one fleet: the integrations are shared through a Kafka consumer group.

Kafka Connect's distributed mode is the model: workers join one consumer group, the group coordinator (a Kafka
broker) elects a leader among them and the leader's *assignor* decides who runs what; the assignment travels to
every member inside the group protocol's own bytes. No coordination service of our own, no shared filesystem,
no leader we elect: a replica that stops heartbeating for ``session_timeout_seconds`` is dropped by the broker,
the survivors rebalance and take its integrations over from their positions in the compacted positions topic.

Why the assignment rides in the protocol's ``user_data`` and not on partitions (one partition per integration):
a partition index is not a name. Two replicas whose configurations differ for a moment (a rolling deploy adding
an integration) would map partition 7 to different integrations and run one twice; names cannot be confused,
and each member says which integrations it can run, so a replica is only given what it has configured.

The members subscribe to the positions topic (it exists whenever a fleet does) but are assigned no partition of it:
the group is used for membership and assignment only, nothing is consumed through it. ``getmany`` is still
called in a loop because aiokafka leaves the group when its consumer looks idle for ``max.poll.interval``.

Rebalances are *eager*: before a replica rejoins, :meth:`Membership` calls ``on_revoked`` and waits while every
integration it runs drains its in-flight batches and commits their positions (the broker waits for it, up to
``rebalance_timeout_seconds``); only then can the new assignment hand them to someone else. So one owner at a
time, unless a replica is frozen past its session timeout (a GC pause, SIGSTOP): it may then write once more
before it learns, which at-least-once tolerates (its late events have the same ids, its late position is one
whose events are in Kafka) and exactly-once fences (a transactional id per integration).

The assignor (:func:`plan`) is weighted and sticky: every unit (an integration, or one slot of a multi-slot
push source) has a weight; a member keeps what it ran while its load stays within a fair share, the rest goes
heaviest first to the least loaded member that can run it, slots of one integration to different members when
there are enough of them. Integrations of one customer on one rate-limited upstream stay together on one replica
(:func:`affinity_of`), so a per-process rate limit is never spent once per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.subscription_state import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from prometheus_client import Counter, Gauge

from inlet.core.kafka_client import connection_options, start_client
from inlet.core.ratelimit import upstream_key

if TYPE_CHECKING:
    from inlet.core.config import FleetSettings, LoadedIntegration, SupervisorConfig

__all__ = ["ASSIGNOR", "Membership", "Unit", "owners", "plan", "replica_name", "units_of"]

log = structlog.get_logger("inlet.fleet")

UNITS = Gauge("inlet_fleet_units", "Units (integrations, slots) this replica runs", ("group", "replica"))
REBALANCES = Counter("inlet_fleet_rebalances", "Assignments this replica received from its group", ("group", "replica"))

ASSIGNOR = "inlet-weighted"
"""The group protocol's name: every member must offer it (a plain consumer joining the group is refused)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """What one replica runs: an integration, or one slot of an integration with ``slots`` > 1."""

    key: str
    """``customer/integration``, or ``customer/integration#slot``: the name in status, positions and metrics."""
    integration: str
    """``customer/integration`` (slots of one integration share it)."""
    slot: int | None
    weight: float
    affinity: str | None = None
    """Units with the same affinity run on one replica (they share an upstream's rate limit)."""

    @property
    def customer(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        """The integration's name, with ``#slot`` for a slot: what its position and metrics are kept under."""
        return self.key.split("/", 1)[1]


def units_of(integrations: Iterable[LoadedIntegration]) -> list[Unit]:
    """The units of the enabled integrations: one per integration, one per slot where ``slots`` > 1."""
    out: list[Unit] = []
    for item in integrations:
        cfg = item.config
        if not cfg.enabled:
            continue
        if cfg.slots == 1:
            out.append(Unit(cfg.key, cfg.key, None, cfg.weight, affinity_of(item)))
        else:
            out.extend(Unit(f"{cfg.key}#{s}", cfg.key, s, cfg.weight) for s in range(cfg.slots))
    return out


def affinity_of(item: LoadedIntegration) -> str | None:
    """``<customer> <scheme://host:port>`` for an HTTP integration with a configured request rate, else None.

    A rate limit holds per process (``core.ratelimit``): two replicas running integrations of one customer on one
    upstream would each spend the whole budget. So those integrations are one bundle, placed on one replica. The
    customer stands for the credential (each customer's integrations use its own), which keeps the bundle name
    equal on every replica without hashing a secret."""
    http = getattr(item.settings, "http", None)
    limit = getattr(http, "rate_limit", None)
    base_url = getattr(http, "base_url", None)
    if not isinstance(base_url, str) or getattr(limit, "requests_per_second", None) is None:
        return None
    try:
        return f"{item.config.customer} {upstream_key(base_url, None)}"
    except ValueError:
        return None


def replica_name(fleet: FleetSettings | None) -> str:
    """This replica's name: ``fleet.replica``, else ``INLET_REPLICA``, else ``<hostname>-<pid>``."""
    if fleet is not None and fleet.replica:
        return fleet.replica
    return os.environ.get("INLET_REPLICA") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Member:
    """What a member told the group when it joined."""

    replica: str
    units: Mapping[str, float]
    """The units it can run (its configuration), with their weights."""
    owned: Sequence[str] = ()
    """What it ran before this rebalance (stickiness)."""
    affinity: Mapping[str, str] = field(default_factory=dict)
    """Unit → its bundle: units of one bundle run on one replica (:func:`affinity_of`)."""


def plan(members: Mapping[str, Member]) -> dict[str, list[str]]:
    """Member id → the unit keys it runs. Deterministic for the same input (members sorted by id).

    Units are placed in bundles (units sharing an upstream rate limit: :func:`affinity_of`; every other unit is a
    bundle of its own). Every unit some member can run is given to exactly one member, whole bundles to a member
    that can run all of it. A member keeps bundles it owned (heaviest first) while its load stays within the fair
    share (total weight / members); the rest are placed heaviest first on the member with the least load after
    placing it, preferring one without a sibling slot of the same integration."""
    ids = sorted(members)
    weights: dict[str, float] = {}
    bundle_of: dict[str, str] = {}
    for mid in ids:
        for key, w in members[mid].units.items():
            weights.setdefault(key, w)
            bundle_of.setdefault(key, members[mid].affinity.get(key) or key)
    bundles: dict[str, list[str]] = {}
    for key in sorted(weights):
        bundles.setdefault(bundle_of[key], []).append(key)
    for name, keys in list(bundles.items()):  # no member knows all of it (a rolling deploy): placed unit by unit
        if len(keys) > 1 and not any(all(k in members[m].units for k in keys) for m in ids):
            del bundles[name]
            for key in keys:
                bundle_of[key] = key
                bundles[key] = [key]
    out: dict[str, list[str]] = {mid: [] for mid in ids}
    if not ids:
        return out
    load = dict.fromkeys(ids, 0.0)
    share = sum(weights.values()) / len(ids)
    placed: set[str] = set()

    def weight(name: str) -> float:
        return sum(weights[k] for k in bundles[name])

    def able(mid: str, name: str) -> bool:
        return all(k in members[mid].units for k in bundles[name])

    def give(mid: str, name: str) -> None:
        out[mid].extend(bundles[name])
        load[mid] += weight(name)
        placed.add(name)

    for mid in ids:  # stickiness: what it ran, within its fair share
        mine = {bundle_of[k] for k in members[mid].owned if k in bundle_of}
        for name in sorted(mine, key=lambda b: (-weight(b), b)):
            if name not in placed and able(mid, name) and load[mid] + weight(name) <= share + 1e-9:
                give(mid, name)

    def sibling(mid: str, name: str) -> bool:
        slotted = {k.split("#", 1)[0] for k in bundles[name] if "#" in k}
        return any(k.split("#", 1)[0] in slotted for k in out[mid] if "#" in k)

    for name in sorted((b for b in bundles if b not in placed), key=lambda b: (-weight(b), b)):
        fit = [m for m in ids if able(m, name)]
        best = min(fit, key=lambda m: (sibling(m, name), load[m] + weight(name), m))
        give(best, name)
    for mid in ids:
        out[mid].sort()
    return out


def _encode(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


class WeightedAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka's hook into the group protocol: says what this member can run, computes the plan when it leads,
    and receives its share. No partitions are assigned: the assignment is the unit list in ``user_data``."""

    name = ASSIGNOR
    version = 0

    def __init__(self, replica: str, units: Sequence[Unit]) -> None:
        self.replica = replica
        self.units = {u.key: u.weight for u in units}
        self.affinity = {u.key: u.affinity for u in units if u.affinity}
        self.owned: list[str] = []
        self.assigned: list[str] = []

    def metadata(self, topics: Iterable[str]) -> Any:
        doc = {"replica": self.replica, "units": self.units, "owned": self.owned, "affinity": self.affinity}
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), _encode(doc))

    def assign(self, cluster: Any, members: Mapping[str, Any]) -> dict[str, Any]:
        told: dict[str, Member] = {}
        for mid, meta in members.items():
            try:
                doc = orjson.loads(meta.user_data or b"{}")
                told[mid] = Member(
                    str(doc["replica"]), dict(doc["units"]), list(doc.get("owned", ())), dict(doc.get("affinity", {}))
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.error("a group member sent metadata inlet cannot read; it gets nothing", member=mid)
                told[mid] = Member(mid, {})
        shares = plan(told)
        log.info(
            "fleet assignment computed",
            replicas={told[m].replica: len(keys) for m, keys in shares.items()},
            units=sum(len(k) for k in shares.values()),
        )
        return {
            mid: ConsumerProtocolMemberAssignment(
                self.version, [], _encode({"replica": told[mid].replica, "units": keys})
            )
            for mid, keys in shares.items()
        }

    def on_assignment(self, assignment: Any) -> None:
        try:
            self.assigned = list(orjson.loads(assignment.user_data or b"{}").get("units", []))
        except (orjson.JSONDecodeError, AttributeError):
            self.assigned = []
        self.owned = list(self.assigned)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.membership.revoke()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.membership.assign()


class Membership:
    """This replica's seat in the fleet's consumer group, until ``stop`` is set.

    ``on_assigned(keys)`` starts the units given to this replica (it must not block long: start tasks);
    ``on_revoked()`` must return only once every unit it runs has drained and committed — the group waits."""

    def __init__(
        self,
        cfg: SupervisorConfig,
        units: Sequence[Unit],
        *,
        on_assigned: Callable[[list[str]], Awaitable[None]],
        on_revoked: Callable[[], Awaitable[None]],
    ) -> None:
        assert cfg.fleet is not None and cfg.kafka is not None
        self.cfg = cfg
        self.fleet = cfg.fleet
        self.replica = replica_name(cfg.fleet)
        self.assignor = WeightedAssignor(self.replica, units)
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self.running: list[str] = []
        self.generation: int | None = None
        self.rebalances = 0

    async def revoke(self) -> None:
        if self.running:
            log.info("fleet rebalance: draining and committing before releasing", units=len(self.running))
        await self._on_revoked()
        self.running = []
        UNITS.labels(self.fleet.group, self.replica).set(0)

    async def assign(self) -> None:
        self.rebalances += 1
        self.running = list(self.assignor.assigned)
        REBALANCES.labels(self.fleet.group, self.replica).inc()
        UNITS.labels(self.fleet.group, self.replica).set(len(self.running))
        log.info("fleet assignment received", replica=self.replica, units=self.running)
        await self._on_assigned(self.running)

    async def run(self, stop: asyncio.Event) -> None:
        """Join, run what is assigned, rejoin on every rebalance; on ``stop`` release everything and leave (the
        others take over at once instead of after the session timeout)."""
        fleet, kafka = self.fleet, self.cfg.kafka
        assert kafka is not None
        options = connection_options(kafka) | {"client_id": f"{kafka.client_id}-{self.replica}"}
        consumer = AIOKafkaConsumer(
            group_id=fleet.group,
            enable_auto_commit=False,
            partition_assignment_strategy=(self.assignor,),
            session_timeout_ms=int(fleet.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(fleet.heartbeat_interval_seconds * 1000),
            rebalance_timeout_ms=int(fleet.rebalance_timeout_seconds * 1000),
            max_poll_interval_ms=int(fleet.rebalance_timeout_seconds * 1000),
            **options,
        )
        consumer.subscribe([fleet.positions_topic], listener=_Listener(self))
        await start_client(consumer, kafka)
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(consumer.getmany(timeout_ms=1000))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await getter  # raises what the group coordination raised (fatal ones end the run)
        finally:
            await self.revoke()
            with contextlib.suppress(Exception):
                await consumer.stop()  # leaves the group: the survivors rebalance now


async def owners(cfg: SupervisorConfig) -> dict[str, str]:
    """Unit key → the replica running it now, as the group coordinator knows it (``inlet status``,
    ``inlet positions``). Empty when no replica is in the group."""
    assert cfg.fleet is not None and cfg.kafka is not None
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocol

    admin = AIOKafkaAdminClient(**connection_options(cfg.kafka))
    await start_client(admin, cfg.kafka, close="close")
    try:
        responses = await admin.describe_consumer_groups([cfg.fleet.group])
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
        return {}  # no coordinator for the group yet (a fresh cluster): no replica has joined
    finally:
        await admin.close()
    out: dict[str, str] = {}
    for response in responses:
        for group in response.groups:
            if group[4] != ASSIGNOR:  # not (yet) a stable group of inlet replicas
                continue
            for member in group[5]:
                raw = member[-1]
                if not raw:
                    continue
                doc = orjson.loads(ConsumerProtocol.ASSIGNMENT.decode(raw).user_data or b"{}")
                for key in doc.get("units", []):
                    out[str(key)] = str(doc.get("replica", member[0]))
    return out
