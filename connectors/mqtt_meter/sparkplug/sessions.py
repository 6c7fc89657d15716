"""What a Sparkplug host keeps per edge node: alias tables, ``seq``, ``bdSeq``, online state."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from inlet.connectors.mqtt_meter.sparkplug.datatypes import typed
from inlet.connectors.mqtt_meter.sparkplug.model import DataType, Metric, Payload, SparkplugTopic, Verdict
from inlet.core.errors import DecodeError

# --- sessions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """What one message means for its edge node's session.

    ``verdict``:
    - ``ok`` / ``gap`` / ``duplicate``: the node's ``seq`` (shared by NDATA, DBIRTH, DDATA, DDEATH) followed
      its predecessor, skipped ``missing`` messages after ``expected_seq``, or repeated a recent message;
    - ``before_birth``: NDATA/DDATA/DBIRTH/DDEATH from a node with no live NBIRTH; aliases cannot be resolved
      (``unresolved_aliases``) and the host should request a rebirth (NCMD ``Node Control/Rebirth``);
    - ``birth`` / ``rebirth``: the first / a later NBIRTH: ``seq`` and alias tables start afresh;
    - ``death`` / ``stale_death``: an NDEATH whose ``bdSeq`` matches the current session (node and its devices
      go offline) / does not (an old will message arriving after a newer NBIRTH: ignored);
    - ``unsequenced``: NCMD/DCMD/STATE (they carry no ``seq``, ``tck-id-payloads-ncmd-seq``), or a
      message whose ``seq`` is missing or outside 0-255 (see ``problems``).

    ``metrics`` holds every metric with a name (given, or resolved from its alias), values typed with the
    birth certificate's datatype when the message left it out. ``problems`` lists spec violations that did
    not stop the message (a birth without ``bdSeq``, a value that does not fit its birth datatype, ...).
    """

    verdict: Verdict
    metrics: tuple[Metric, ...] = ()
    unresolved_aliases: tuple[int, ...] = ()
    expected_seq: int | None = None
    missing: int = 0
    node_online: bool = False
    device_online: bool | None = None
    bd_seq: int | None = None
    problems: tuple[str, ...] = ()


@dataclass(slots=True)
class _Scope:
    """The metric definitions of one birth certificate (an NBIRTH or a DBIRTH): alias and name → datatype."""

    by_alias: dict[int, tuple[str, DataType]] = field(default_factory=dict)
    by_name: dict[str, DataType] = field(default_factory=dict)
    online: bool = True


@dataclass(slots=True)
class _Node:
    bd_seq: int | None
    birth: tuple[int | None, int | None]  # (seq, timestamp) of the NBIRTH, to see it redelivered
    last_seq: int | None
    recent: deque[tuple[int, int | None]]
    scope: _Scope
    devices: OrderedDict[str, _Scope]
    born: bool = True


def _birth_scope(metrics: list[Metric], problems: list[str]) -> _Scope:
    scope = _Scope()
    for metric in metrics:
        if metric.name is None:
            problems.append(f"birth metric with alias {metric.alias} has no name")
            continue
        scope.by_name[metric.name] = metric.datatype
        if metric.alias is not None:
            if metric.alias in scope.by_alias:  # tck-id-payloads-alias-uniqueness
                problems.append(
                    f"alias {metric.alias} names both {scope.by_alias[metric.alias][0]!r} "
                    f"and {metric.name!r}; the later wins"
                )
            scope.by_alias[metric.alias] = (metric.name, metric.datatype)
    return scope


def _bd_seq(metrics: list[Metric]) -> int | None:
    """The ``bdSeq`` metric (``tck-id-payloads-nbirth-bdseq``, ``tck-id-payloads-ndeath-bdseq``)."""
    for metric in metrics:
        if metric.name == "bdSeq" and type(metric.value) is int:
            return metric.value
    return None


def _resolve(
    metrics: list[Metric], scope: _Scope | None, problems: list[str]
) -> tuple[tuple[Metric, ...], tuple[int, ...]]:
    """Names for alias-only metrics and datatypes for untyped ones, from the birth certificate's scope."""
    named: list[Metric] = []
    unresolved: list[int] = []
    for metric in metrics:
        if metric.name is not None and metric.datatype is not DataType.Unknown:
            named.append(metric)
            continue
        definition: tuple[str, DataType] | None = None
        if scope is not None:
            if metric.name is not None:
                known = scope.by_name.get(metric.name)
                definition = (metric.name, known) if known is not None else None
            elif metric.alias is not None:
                definition = scope.by_alias.get(metric.alias)
        if definition is None:
            if metric.name is not None:
                named.append(metric)  # a name always resolves; its value stays as on the wire
            elif metric.alias is not None:
                unresolved.append(metric.alias)
            else:
                problems.append("a metric has neither name nor alias")
            continue
        name, datatype = definition
        value = metric.value
        if metric.datatype is DataType.Unknown and value is not None and datatype is not DataType.Unknown:
            try:
                value = typed(datatype, value, None, f"metric {name!r} as in its birth certificate")
            except DecodeError as exc:
                problems.append(str(exc))
                datatype = DataType.Unknown
        elif metric.datatype is not DataType.Unknown:
            datatype = metric.datatype
        named.append(
            Metric(
                name,
                metric.alias,
                metric.timestamp_ms,
                datatype,
                metric.is_null,
                value,
                metric.properties,
                metric.is_historical,
                metric.is_transient,
            )
        )
    return tuple(named), tuple(unresolved)


class SparkplugSessions:
    """The host-application view of every edge node of one integration, bounded and I/O-free.

    Rules implemented (Sparkplug 3.0):
    - ``seq`` (``tck-id-payloads-sequence-num-incrementing``): every message of an edge node after its
      NBIRTH, node- or device-level, carries the next ``seq`` mod 256, so 255 → 0 is *not* a gap. The NBIRTH
      sets the base. Older 3.0 text requires NBIRTH ``seq`` = 0; current text (``tck-id-payloads-nbirth-seq``)
      allows 0-255 and the UMH vectors' nodes continue from whatever the NBIRTH had, so any NBIRTH ``seq`` is
      taken as the base.
    - a missing ``seq`` (``tck-id-payloads-sequence-num-always-included``) is read as 0 in an NBIRTH and
      where 0 is due (after 255): proto3-style encoders omit zero-valued fields, and the UMH production
      capture shows exactly that (NDATA without ``seq`` between 255 and 1). Elsewhere it is ``unsequenced``.
    - duplicates vs. wrap: ``seq`` alone cannot tell a redelivered message from one 256 messages later (the
      UMH production capture's "76 duplicate seqs" are exactly that: wraps, its stream is otherwise
      consecutive). A message is a ``duplicate`` only when its ``(seq, payload timestamp)`` equals one of the
      node's last ``recent_window`` messages; the same ``seq`` with another timestamp is a ``gap`` of 255.
      Duplicates change no state; the caller filters them with a stated reason. Deduplicating on ``seq``
      alone is the bug the UMH report (ENG-3720) describes: it dropped valid data.
    - aliases (``tck-id-payloads-alias-birth-requirement``, ``-alias-data-cmd-requirement``): NBIRTH defines
      the node's aliases, each DBIRTH its device's; DATA and CMD metrics are resolved against them, and
      typed with the birth datatype when they omit theirs (``tck-id-payloads-metric-datatype-not-req``).
    - NBIRTH starts a new session: ``seq``, aliases and devices are reset and the ``bdSeq`` metric recorded.
      An NDEATH whose ``bdSeq`` differs from the session's is a stale will message and is ignored; a matching
      one marks the node and all its devices offline
      (``tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline``, ``-devices-
      offline``). DDEATH marks its device offline. After a death, data is ``before_birth`` until the next
      NBIRTH.
    - Bounded: at most ``max_nodes`` edge nodes (least recently active evicted; an evicted node's next data
      is ``before_birth`` until it rebirths) and ``max_devices`` devices per node (oldest DBIRTH evicted).
      Alias tables are bounded by the payload size cap of the transport.
    """

    def __init__(self, *, max_nodes: int = 10_000, max_devices: int = 1_000, recent_window: int = 16) -> None:
        if max_nodes < 1 or max_devices < 1 or recent_window < 1:
            raise ValueError("max_nodes, max_devices and recent_window must be at least 1")
        self.max_nodes = max_nodes
        self.max_devices = max_devices
        self.recent_window = recent_window
        self._nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()

    def __len__(self) -> int:
        """How many edge nodes are tracked (never more than ``max_nodes``)."""
        return len(self._nodes)

    def node_online(self, group_id: str, edge_node_id: str) -> bool:
        """Whether the edge node has a live NBIRTH (no matching NDEATH since)."""
        node = self._nodes.get((group_id, edge_node_id))
        return node is not None and node.born

    def device_online(self, group_id: str, edge_node_id: str, device_id: str) -> bool:
        """Whether the device has a DBIRTH in the node's live session and no DDEATH since."""
        node = self._nodes.get((group_id, edge_node_id))
        scope = node.devices.get(device_id) if node is not None and node.born else None
        return scope is not None and scope.online

    def observe(self, topic: SparkplugTopic, payload: Payload) -> Observation:
        """Update the session with one message and say what it means (see :class:`Observation`)."""
        kind = topic.message_type
        key = (topic.group_id, topic.edge_node_id)
        problems: list[str] = []
        if kind == "NBIRTH":
            return self._birth(key, payload, problems)
        if kind == "NDEATH":
            return self._death(key, payload, problems)
        node = self._nodes.get(key)
        live = node if node is not None and node.born else None
        device = topic.device_id
        if kind in ("NCMD", "DCMD", "STATE"):
            scope = _scope_of(live, device)
            metrics, unresolved = _resolve(payload.metrics, scope, problems)
            return Observation(
                "unsequenced",
                metrics,
                unresolved,
                node_online=live is not None,
                device_online=_device_state(live, device),
                problems=tuple(problems),
            )
        if live is None:
            metrics, unresolved = _resolve(payload.metrics, None, problems)
            if unresolved:
                problems.append(
                    f"aliases {list(unresolved)} cannot be resolved: no NBIRTH seen for "
                    f"{topic.group_id}/{topic.edge_node_id}"
                )
            return Observation("before_birth", metrics, unresolved, problems=tuple(problems))
        self._nodes.move_to_end(key)
        verdict, expected, missing = self._sequence(live, payload, problems)
        if verdict != "duplicate":
            if kind == "DBIRTH" and device is not None:
                live.devices[device] = _birth_scope(payload.metrics, problems)
                live.devices.move_to_end(device)
                while len(live.devices) > self.max_devices:
                    live.devices.popitem(last=False)
            elif kind == "DDEATH" and device is not None:
                live.devices[device] = _Scope(online=False)
        scope = _scope_of(live, device)
        if kind == "DDATA" and scope is None:
            problems.append(f"no DBIRTH seen for device {device!r}")
        metrics, unresolved = _resolve(payload.metrics, scope, problems)
        return Observation(
            verdict, metrics, unresolved, expected, missing, True, _device_state(live, device), problems=tuple(problems)
        )

    def _sequence(self, node: _Node, payload: Payload, problems: list[str]) -> tuple[Verdict, int | None, int]:
        seq = payload.seq
        if seq is None and node.last_seq == 255:
            # proto3 encoders leave out fields equal to 0: the UMH capture has NDATA without seq exactly
            # between 255 and 1. Only where 0 is due is an absent seq read as 0.
            problems.append("seq absent where 0 is due: read as 0 (an encoder that omits zero fields)")
            seq = 0
        if seq is None or seq > 255:
            # tck-id-payloads-sequence-num-always-included: a message without a usable seq cannot be placed.
            problems.append("no seq" if seq is None else f"seq {seq} is outside 0-255")
            return "unsequenced", None, 0
        stamp = (seq, payload.timestamp_ms)
        if stamp in node.recent:
            return "duplicate", None, 0
        node.recent.append(stamp)
        last, node.last_seq = node.last_seq, seq
        if last is None:  # the NBIRTH had no seq: this message sets the base
            return "ok", None, 0
        expected = (last + 1) % 256
        if seq == expected:
            return "ok", expected, 0
        return "gap", expected, (seq - expected) % 256

    def _birth(self, key: tuple[str, str], payload: Payload, problems: list[str]) -> Observation:
        bd_seq = _bd_seq(payload.metrics)
        if bd_seq is None:
            problems.append("NBIRTH without a bdSeq metric: NDEATHs cannot be matched to it")
        if payload.seq is None:
            problems.append("NBIRTH without seq: read as 0 (an encoder that omits zero fields)")
        node = self._nodes.get(key)
        birth = (payload.seq, payload.timestamp_ms)
        scope = _birth_scope(payload.metrics, problems)
        if (
            node is not None
            and node.born
            and node.bd_seq == bd_seq
            and node.birth == birth
            and node.scope.by_alias == scope.by_alias
            and node.scope.by_name == scope.by_name
        ):
            # The same NBIRTH again (QoS 1 redelivery): resetting seq now would turn later data into gaps.
            # A real rebirth has a new timestamp or other definitions.
            return Observation(
                "duplicate", tuple(payload.metrics), node_online=True, bd_seq=bd_seq, problems=tuple(problems)
            )
        seq = 0 if payload.seq is None else payload.seq if payload.seq <= 255 else None
        recent: deque[tuple[int, int | None]] = deque(maxlen=self.recent_window)
        if seq is not None:
            recent.append((seq, payload.timestamp_ms))
        self._nodes[key] = _Node(bd_seq, birth, seq, recent, scope, OrderedDict())
        self._nodes.move_to_end(key)
        while len(self._nodes) > self.max_nodes:
            self._nodes.popitem(last=False)
        metrics, _ = _resolve(payload.metrics, scope, problems)
        return Observation(
            "birth" if node is None else "rebirth", metrics, node_online=True, bd_seq=bd_seq, problems=tuple(problems)
        )

    def _death(self, key: tuple[str, str], payload: Payload, problems: list[str]) -> Observation:
        bd_seq = _bd_seq(payload.metrics)
        node = self._nodes.get(key)
        metrics = tuple(m for m in payload.metrics if m.name is not None)
        if node is None:
            return Observation("death", metrics, bd_seq=bd_seq, problems=tuple(problems))
        matches = node.bd_seq is None or bd_seq == node.bd_seq
        if not node.born:
            # Already offline: the will message after an explicit NDEATH repeats its bdSeq; spec "Edge Node
            # Session Termination": it MUST be ignored.
            return Observation(
                "duplicate" if matches else "stale_death", metrics, bd_seq=bd_seq, problems=tuple(problems)
            )
        if not matches:
            problems.append(f"NDEATH bdSeq {bd_seq} does not match the session's bdSeq {node.bd_seq}: ignored")
            return Observation("stale_death", metrics, node_online=True, bd_seq=bd_seq, problems=tuple(problems))
        node.born = False
        node.scope = _Scope(online=False)
        node.devices.clear()  # every device of the node is offline with it
        return Observation("death", metrics, bd_seq=bd_seq, problems=tuple(problems))


def _scope_of(node: _Node | None, device: str | None) -> _Scope | None:
    if node is None:
        return None
    return node.scope if device is None else node.devices.get(device)


def _device_state(node: _Node | None, device: str | None) -> bool | None:
    if device is None or node is None:
        return None
    scope = node.devices.get(device)
    return None if scope is None else scope.online
