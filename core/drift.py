"""Upstream drift: the recorded shape of an integration's source payloads, and what departs from it at runtime.

:func:`learn` records a :class:`Shape` from payloads (committed as ``fixtures/<customer>/<integration>/shape.json``);
:func:`detect` compares one live payload with it and returns the :class:`DriftChange` list; :func:`alert` logs
and counts the changes. All but :func:`alert` is pure: the pipeline applies the integration's
:data:`DriftPolicy` and publishes the drift event (:meth:`DriftChange.to_dict`).

Paths are dotted member names from the root, ``[]`` standing for any item of an array (``code.coding[].system``);
the root is ``$``. In a name, ``.``, ``[``, ``]``, ``\\`` and ``$`` are escaped with a backslash and the empty
name is ``\\0``.

The rules, with their reasons (docs/architecture.md, "How a shape is learnt and compared"):

- types are JSON types; an ``integer`` passes where ``number`` was seen, not the reverse; a ``Decimal`` is a
  ``number``, any other non-JSON value the type ``<type name>``;
- a member path is *required* when present in every object its parent was seen as, and that parent was seen at
  least :data:`MIN_REQUIRED_SUPPORT` times; array items and the root never are;
- a string path is an enforced enumeration when its last name word is not in :data:`NON_ENUM_WORDS`, it held a
  string at least :data:`ENUM_MIN_OCCURRENCES` times with at most :data:`ENUM_MAX_DISTINCT` distinct values, and
  at most half as many distinct values as occurrences; ``enum_paths`` / ``not_enum_paths`` override that;
- change kinds: ``field_missing``, ``type_changed``, ``enum_value``, ``new_field`` (``strict`` only), each
  ``(path, kind)`` at most once per payload;
- :func:`alert` logs one line per ``(customer, integration, path, kind)`` every :data:`ALERT_LOG_INTERVAL_SECONDS`
  (the next one carries ``suppressed=<n>``); ``inlet_drift_alerts_total`` counts every change.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal, Protocol

import orjson
from prometheus_client import Counter

__all__ = [
    "ALERT_LOG_INTERVAL_SECONDS",
    "DRIFT_ALERTS",
    "ENUM_MAX_DISTINCT",
    "ENUM_MIN_OCCURRENCES",
    "MIN_REQUIRED_SUPPORT",
    "NON_ENUM_WORDS",
    "AlertThrottle",
    "ChangeKind",
    "DriftChange",
    "DriftPolicy",
    "PathStats",
    "Shape",
    "alert",
    "detect",
    "learn",
]

DriftPolicy = Literal["map", "dlq"]
"""What a plugin wants done with a drifting record, besides the alert (which always happens).

``"map"``: map it anyway (the mapping may still cope, e.g. with a new enum value it passes through);
``"dlq"``: send the record to the dead-letter queue (stage ``decode``, error type ``UpstreamDrift``) so nothing
is silently mis-mapped.
"""

ChangeKind = Literal["field_missing", "type_changed", "enum_value", "new_field"]

ROOT: Final = "$"
ENUM_MAX_DISTINCT: Final = 20
ENUM_MIN_OCCURRENCES: Final = 5
MIN_REQUIRED_SUPPORT: Final = 3
ALERT_LOG_INTERVAL_SECONDS: Final = 300.0
SHAPE_FORMAT: Final = 1
_MAX_LEARN_DEPTH: Final = 64  # deeper subtrees are not recorded (and therefore not checked)
_DETAIL_VALUE_CHARS: Final = 60

NON_ENUM_WORDS: Final = frozenset(
    {
        # identifiers and references
        "id", "ids", "uuid", "guid", "key", "token", "hash", "ref", "reference", "url", "uri", "href", "link",
        "path", "email", "phone", "number", "mrn", "identifier", "serial",
        # free text
        "name", "text", "display", "description", "desc", "title", "comment", "comments", "note", "notes",
        "message", "msg", "label", "summary", "address", "line",
        # instants
        "date", "time", "datetime", "timestamp", "ts", "at", "updated", "created", "modified", "issued",
        "instant",
    }
)  # fmt: skip
"""Last words of member names whose string values are never treated as an enumeration."""

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")

_JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    Decimal: "number",  # core.exact_json: a fraction or exponent a float would not carry as written
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
}


def _json_type(value: object) -> str:
    t = _JSON_TYPES.get(type(value))
    if t is not None:
        return t
    # Subclasses (OrderedDict, IntEnum, str enums, ...) and non-JSON values.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return f"<{type(value).__name__}>"


_EMPTY_KEY: Final = "\\0"
_SPECIAL = re.compile(r"[.\[\]\\$]")


def _escape(key: str) -> str:
    """A member name as a path segment: ``.``, ``[``, ``]``, ``\\`` and ``$`` get a backslash; ``""`` is ``\\0``."""
    if not key:
        return _EMPTY_KEY
    return _SPECIAL.sub(lambda m: "\\" + m.group(), key) if _SPECIAL.search(key) else key


def _child(parent: str, key: str) -> str:
    return _escape(key) if parent == ROOT else f"{parent}.{_escape(key)}"


def _items(parent: str) -> str:
    return "[]" if parent == ROOT else f"{parent}[]"


def _split(path: str) -> tuple[str, str | None] | None:
    """``(parent path, member name)`` of a member path, ``(parent path, None)`` of an item path, ``None`` for
    the root."""
    if path == ROOT:
        return None
    last_dot = -1
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "\\":
            i += 2
            continue
        if c == ".":
            last_dot = i
        elif c == "[" and path.startswith("[]", i) and i + 2 == n:
            return (path[:i] or ROOT), None
        i += 1
    parent, segment = (ROOT, path) if last_dot < 0 else (path[:last_dot], path[last_dot + 1 :])
    return parent, "" if segment == _EMPTY_KEY else re.sub(r"\\(.)", r"\1", segment)


def _parent_of(path: str) -> str | None:
    """Parent path of an object member path; ``None`` for the root and array item paths."""
    split = _split(path)
    return split[0] if split is not None and split[1] is not None else None


def _enum_name_ok(path: str) -> bool:
    """False when the path's member name looks like an id, free text or a timestamp (see the module doc)."""
    split = _split(path)
    name = split[1] if split is not None else None
    words = _WORDS.findall(name or "")
    return not words or words[-1].lower() not in NON_ENUM_WORDS


# --- Shape -----------------------------------------------------------------------------------------------


@dataclass
class PathStats:
    """What was seen at one path: JSON type counts, whether it is required, the string values collected.

    ``values`` is ``None`` once collection stopped (too many distinct values, a name that is never an
    enumeration, or a shape file that recorded none).
    """

    types: dict[str, int] = field(default_factory=dict)
    required: bool = False
    values: set[str] | None = field(default_factory=set)

    @property
    def present(self) -> int:
        """How many times the path was present (items, for ``[]`` paths)."""
        return sum(self.types.values())


@dataclass
class Shape:
    """The recorded shape of an integration's upstream payloads; see the module doc for the rules.

    ``samples`` is the number of payloads learnt from; ``enum_paths`` / ``not_enum_paths`` are the plugin's
    explicit enumeration overrides, kept in the shape so that :meth:`to_json` round-trips them.
    """

    paths: dict[str, PathStats] = field(default_factory=dict)
    samples: int = 0
    enum_paths: frozenset[str] = frozenset()
    not_enum_paths: frozenset[str] = frozenset()
    _compiled: _Node | None = field(default=None, init=False, repr=False, compare=False)

    def collects(self, path: str) -> bool:
        """Whether string values at ``path`` are collected at all (declared, or a name that may be an enum)."""
        return path in self.enum_paths or (path not in self.not_enum_paths and _enum_name_ok(path))

    def is_enum(self, path: str) -> bool:
        """Whether string values at ``path`` are checked against the recorded set."""
        stats = self.paths.get(path)
        if stats is None or stats.values is None or path in self.not_enum_paths:
            return False
        if path in self.enum_paths:
            return True
        strings = stats.types.get("string", 0)
        return strings >= ENUM_MIN_OCCURRENCES and 2 * len(stats.values) <= strings

    def enum(self, path: str) -> frozenset[str] | None:
        """The enforced enumeration at ``path``, or ``None``."""
        if not self.is_enum(path):
            return None
        values = self.paths[path].values
        return frozenset(values) if values is not None else None

    def required_paths(self) -> list[str]:
        """All required paths, sorted."""
        return sorted(p for p, s in self.paths.items() if s.required)

    # -- merging ------------------------------------------------------------------------------------------

    def merge(self, other: Shape) -> Shape:
        """The shape of both sample sets together (a new object; neither input changes).

        A path required on both sides stays required; a path recorded on one side only stays required only
        if the other side never saw its parent as an object. Collected values are united (and dropped once
        beyond the limit, except for declared enum paths).
        """
        enum_paths = self.enum_paths | other.enum_paths
        merged = Shape(
            samples=self.samples + other.samples,
            enum_paths=enum_paths,
            not_enum_paths=self.not_enum_paths | other.not_enum_paths,
        )
        for path in sorted(self.paths.keys() | other.paths.keys()):
            a, b = self.paths.get(path), other.paths.get(path)
            types: dict[str, int] = {}
            for side in (a, b):
                if side is not None:
                    for t, n in side.types.items():
                        types[t] = types.get(t, 0) + n
            if a is not None and b is not None:
                required = a.required and b.required
                values = None if a.values is None or b.values is None else a.values | b.values
            else:
                only, absent_side = (a, other) if a is not None else (b, self)
                assert only is not None
                parent = _parent_of(path)
                parent_stats = absent_side.paths.get(parent) if parent is not None else None
                parent_objects = parent_stats.types.get("object", 0) if parent_stats is not None else 0
                required = only.required and parent_objects == 0
                values = None if only.values is None else set(only.values)
            if values is not None and len(values) > ENUM_MAX_DISTINCT and path not in enum_paths:
                values = None
            merged.paths[path] = PathStats(types=types, required=required, values=values)
        return merged

    # -- serialisation ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data for :meth:`to_json`: sorted paths, sorted type counts, sorted values."""
        paths: dict[str, Any] = {}
        for path in sorted(self.paths):
            stats = self.paths[path]
            entry: dict[str, Any] = {"types": {t: stats.types[t] for t in sorted(stats.types)}}
            if _parent_of(path) is not None:
                entry["required"] = stats.required
            if stats.values is not None and (stats.values or self.is_enum(path)):
                entry["enum" if self.is_enum(path) else "values"] = sorted(stats.values)
            paths[path] = entry
        return {
            "format": SHAPE_FORMAT,
            "samples": self.samples,
            "enum_paths": sorted(self.enum_paths),
            "not_enum_paths": sorted(self.not_enum_paths),
            "paths": paths,
        }

    def to_json(self) -> str:
        """Stable, reviewable JSON text (2-space indent, sorted, trailing newline): equal shapes, equal text."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shape:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed document."""
        try:
            if data.get("format") != SHAPE_FORMAT:
                raise ValueError(f"unsupported shape format {data.get('format')!r} (expected {SHAPE_FORMAT})")
            shape = cls(
                samples=int(data.get("samples", 0)),
                enum_paths=frozenset(str(p) for p in data.get("enum_paths", ())),
                not_enum_paths=frozenset(str(p) for p in data.get("not_enum_paths", ())),
            )
            for path, entry in dict(data["paths"]).items():
                types = {str(t): int(n) for t, n in dict(entry["types"]).items()}
                raw_values = entry.get("enum", entry.get("values"))
                values: set[str] | None
                if raw_values is not None:
                    values = {str(v) for v in raw_values}
                else:  # nothing written: nothing collected yet, or collection stopped
                    values = set() if "string" not in types and shape.collects(str(path)) else None
                shape.paths[str(path)] = PathStats(
                    types=types, required=bool(entry.get("required", False)), values=values
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed shape document: {exc!r}") from exc
        return shape

    @classmethod
    def from_json(cls, text: str | bytes) -> Shape:
        """Parse :meth:`to_json` output; raises ``ValueError`` on malformed text."""
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a shape document must be a JSON object")
        return cls.from_dict(data)

    # -- compiled form for detect ---------------------------------------------------------------------------

    def compiled(self) -> _Node:
        """The lookup tree :func:`detect` walks (built once, cached; call :meth:`invalidate` after edits)."""
        if self._compiled is None:
            self._compiled = _compile(self)
        return self._compiled

    def invalidate(self) -> None:
        """Forget the compiled lookup tree after ``paths`` was changed in place."""
        self._compiled = None


class _Learner:
    def __init__(self, enum_paths: frozenset[str], not_enum_paths: frozenset[str]) -> None:
        self.paths: dict[str, PathStats] = {}
        self.enum_paths = enum_paths
        self.not_enum_paths = not_enum_paths

    def _stats(self, path: str) -> PathStats:
        stats = self.paths.get(path)
        if stats is None:
            collect = path in self.enum_paths or (path not in self.not_enum_paths and _enum_name_ok(path))
            stats = self.paths[path] = PathStats(values=set() if collect else None)
        return stats

    def visit(self, value: object, path: str, depth: int) -> None:
        stats = self._stats(path)
        t = _json_type(value)
        stats.types[t] = stats.types.get(t, 0) + 1
        if depth >= _MAX_LEARN_DEPTH:
            return
        if t == "string":
            values = stats.values
            if values is not None:
                values.add(str(value))
                if len(values) > ENUM_MAX_DISTINCT and path not in self.enum_paths:
                    stats.values = None
        elif t == "object":
            assert isinstance(value, Mapping)
            for key, child in value.items():
                self.visit(child, _child(path, str(key)), depth + 1)
        elif t == "array":
            assert isinstance(value, list | tuple)
            item_path = _items(path)
            for item in value:
                self.visit(item, item_path, depth + 1)

    def finish(self, samples: int) -> Shape:
        for path, stats in self.paths.items():
            parent = _parent_of(path)
            if parent is None:
                continue
            parent_objects = self.paths[parent].types.get("object", 0)
            stats.required = parent_objects >= MIN_REQUIRED_SUPPORT and stats.present == parent_objects
        return Shape(paths=self.paths, samples=samples, enum_paths=self.enum_paths, not_enum_paths=self.not_enum_paths)


def learn(
    payloads: Iterable[object],
    *,
    enum_paths: Iterable[str] = (),
    not_enum_paths: Iterable[str] = (),
) -> Shape:
    """Record the shape of ``payloads`` (parsed JSON, normally dicts); see the module doc for the rules.

    ``enum_paths`` / ``not_enum_paths`` are the plugin's explicit enumeration overrides.
    """
    learner = _Learner(frozenset(enum_paths), frozenset(not_enum_paths))
    samples = 0
    for payload in payloads:
        learner.visit(payload, ROOT, 0)
        samples += 1
    return learner.finish(samples)


# --- detection ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriftChange:
    """One departure of a payload from its recorded shape."""

    path: str
    kind: ChangeKind
    detail: str

    def to_dict(self) -> dict[str, str]:
        """Plain data for a log line or the drift event."""
        return {"path": self.path, "kind": self.kind, "detail": self.detail}


@dataclass(slots=True, eq=False)
class _Node:
    path: str
    types: frozenset[str]
    enum: frozenset[str] | None
    children: dict[str, _Node]
    required: frozenset[str]
    item: _Node | None


def _compile(shape: Shape) -> _Node:
    nodes: dict[str, _Node] = {}

    def node(path: str) -> _Node:
        existing = nodes.get(path)
        if existing is not None:
            return existing
        stats = shape.paths.get(path)
        types = frozenset(stats.types) if stats is not None else frozenset()
        if "number" in types:
            types |= {"integer"}
        made = nodes[path] = _Node(path, types, shape.enum(path), {}, frozenset(), None)
        return made

    root = node(ROOT)
    # Parents before children: a path's parent is always a prefix, hence shorter.
    for path in sorted(shape.paths, key=len):
        split = _split(path)
        if split is None:
            continue
        parent_path, key = split
        this, parent = node(path), node(parent_path)
        if key is None:
            parent.item = this
            continue
        parent.children[key] = this
        if shape.paths[path].required:
            parent.required |= {key}
    return root


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _DETAIL_VALUE_CHARS else text[: _DETAIL_VALUE_CHARS - 3] + "..."


class _Found:
    __slots__ = ("changes", "seen")

    def __init__(self) -> None:
        self.changes: list[DriftChange] = []
        self.seen: set[tuple[str, str]] = set()

    def add(self, path: str, kind: ChangeKind, detail: str | Callable[[], str]) -> None:
        """Record a change once per ``(path, kind)``; ``detail`` is only rendered for the first."""
        if (path, kind) not in self.seen:
            self.seen.add((path, kind))
            self.changes.append(DriftChange(path, kind, detail if isinstance(detail, str) else detail()))


def _walk(value: object, node: _Node, strict: bool, found: _Found) -> None:
    t = _JSON_TYPES.get(type(value)) or _json_type(value)
    if t not in node.types:
        found.add(node.path, "type_changed", lambda: f"{t} {_show(value)}, expected {'|'.join(sorted(node.types))}")
        return
    if t == "string":
        enum = node.enum
        if enum is not None and value not in enum:
            found.add(node.path, "enum_value", lambda: f"new value {_show(value)}, known: {', '.join(sorted(enum))}")
    elif t == "object":
        assert isinstance(value, Mapping)
        keys = value.keys()
        if node.required and not node.required <= keys:
            for key in sorted(node.required - keys):
                found.add(node.children[key].path, "field_missing", "required field absent")
        children = node.children
        for key, child_value in value.items():
            child = children.get(key)
            if child is not None:
                if child.types:  # skip paths only present as overrides without observations
                    _walk(child_value, child, strict, found)
            elif strict:
                path = _child(node.path, str(key))
                found.add(path, "new_field", f"unknown field ({_json_type(child_value)})")
    elif t == "array":
        assert isinstance(value, list | tuple)
        item = node.item
        if item is None:
            if strict and value:
                found.add(_items(node.path), "new_field", "array items where only empty arrays were seen")
            return
        for element in value:
            _walk(element, item, strict, found)


def detect(shape: Shape, payload: object, *, strict: bool = False) -> list[DriftChange]:
    """How ``payload`` departs from ``shape`` (empty when it does not); never raises on odd payloads.

    ``strict`` also reports paths never seen (``new_field``). Each ``(path, kind)`` appears once, in payload
    order. The first call compiles ``shape`` into a lookup tree; later calls only walk the payload.
    """
    found = _Found()
    root = shape.compiled()
    if not root.types:  # nothing recorded (no samples): nothing to compare with
        return found.changes
    try:
        _walk(payload, root, strict, found)
    except RecursionError:  # only reachable with a shape deeper than the interpreter stack
        found.add(ROOT, "type_changed", "payload too deeply nested to check")
    return found.changes


# --- alerting --------------------------------------------------------------------------------------------

DRIFT_ALERTS = Counter(
    "inlet_drift_alerts",
    "Upstream payload changes departing from an integration's recorded shape",
    ("customer", "integration", "kind"),
)


class _Logger(Protocol):
    def warning(self, event: str, /, **kw: Any) -> Any: ...


class AlertThrottle:
    """Remembers when each ``(customer, integration, path, kind)`` was last logged (thread-safe).

    ``clock`` is monotonic seconds (injectable for tests); at most ``max_keys`` keys are remembered, the
    oldest being forgotten first, so a payload full of random new field names cannot grow memory.
    """

    def __init__(
        self,
        interval_seconds: float = ALERT_LOG_INTERVAL_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[tuple[str, str, str, str], tuple[float, int]] = {}  # key -> (logged at, suppressed)
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, str, str, str]) -> int | None:
        """``None`` when ``key`` must not be logged now; else how many lines were suppressed before it."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.interval_seconds:
                self._last[key] = (last[0], last[1] + 1)
                return None
            self._last.pop(key, None)
            if len(self._last) >= self._max_keys:
                del self._last[next(iter(self._last))]
            self._last[key] = (now, 0)
            return last[1] if last is not None else 0


_THROTTLE = AlertThrottle()


def alert(
    customer: str,
    integration: str,
    changes: Sequence[DriftChange],
    logger: _Logger,
    *,
    throttle: AlertThrottle | None = None,
) -> int:
    """Count every change in ``inlet_drift_alerts_total`` and log a ``drift_detected`` warning per change.

    Lines for the same ``(path, kind)`` of the same integration are throttled (module doc); returns how many
    lines were logged.
    """
    gate = _THROTTLE if throttle is None else throttle
    logged = 0
    for change in changes:
        DRIFT_ALERTS.labels(customer, integration, change.kind).inc()
        suppressed = gate.admit((customer, integration, change.path, change.kind))
        if suppressed is None:
            continue
        logger.warning(
            "drift_detected",
            customer=customer,
            integration=integration,
            path=change.path,
            kind=change.kind,
            detail=change.detail,
            suppressed=suppressed,
        )
        logged += 1
    return logged
