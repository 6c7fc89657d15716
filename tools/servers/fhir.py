"""A real, local FHIR R4 search server for connector tests and benchmarks.

Why a hand-written server rather than mocks or a HAPI container: the FHIR connector's hard parts are on the wire
(paging over a server-side snapshot, ``_lastUpdated`` watermarks with equal timestamps, 429/5xx with
``Retry-After``, bodies that are malformed or cut short mid-transfer). Those need real HTTP on a real socket,
deterministic data and faults a test can switch on at an exact request, in well under a second per test. A
HAPI container is none of fast, deterministic or fault-injectable.

What it implements (the subset of the FHIR REST API the connector uses, with HAPI's conventions):

* ``GET {base}/{Type}``: search. ``_lastUpdated`` with prefixes ``eq`` (default) ``ge gt le lt``, repeatable
  (AND); values of any precision from a year to fractional seconds, compared as aware datetimes with FHIR's
  range semantics (``ge2024-03-01T09:00:00+01:00`` matches every instant from 08:00:00.000Z on, ``gt`` of the
  same value only from 08:00:01Z, the end of the value's precision). A time without offset is taken as UTC.
  ``_sort`` = ``_lastUpdated`` / ``-_lastUpdated`` / ``_id`` / ``-_id`` (comma-separated; ties always broken by
  id); without ``_sort`` resources come in insertion order. ``_count`` (default 50, clamped to 1000; 0 gives
  only ``total``). ``_total=none`` omits ``total``; ``_format`` and ``_pretty`` are ignored. Any other
  parameter is rejected with 400: a silently ignored filter would make a test pass on wrong data.
* Paging HAPI-style: the first page freezes the matching list in a snapshot; its ``next`` link is
  ``{base}?_getpages=<snapshot>&_getpagesoffset=N&_count=N&_bundletype=searchset``, so resources added or
  updated while a client pages do not shift pages. Unknown or expired snapshots answer 410 Gone, as HAPI does.
* ``GET {base}/{Type}/{id}`` (read), ``GET {base}/metadata`` (a minimal CapabilityStatement); anything else is
  404 (unknown path or type) or 405 (other methods), always with an OperationOutcome body.
* History and deletion: every ``add`` of a resource with an id records a version (``POST`` the first time,
  ``PUT`` after), and ``DELETE {base}/{Type}/{id}`` or :meth:`FhirTestServer.delete` removes the resource from
  search and read and records a ``DELETE`` version (no resource; ``response.lastModified`` and ``etag``).
  ``GET {base}/{Type}/_history`` lists the versions of that type, newest first as FHIR orders them, in a
  ``history`` Bundle; ``_since`` (an instant, inclusive) and ``_count`` apply, paging works like search's
  (``_bundletype=history``). ``history=False`` builds a server without the interaction: ``_history`` is 404,
  as on servers that do not keep versions.
* Responses are ``application/fhir+json`` searchset Bundles with ``link`` (self, next, previous), ``entry``
  (``fullUrl``, ``resource``, ``search.mode=match``) and ``total`` (configurable to be omitted or wrong:
  clients must not trust it).

Resources are served exactly as given (serialised once, when added), so "bad records" are simply resources a
test passes in: no ``code``, an unknown ``valueFoo``, no ``id``, a garbage ``meta.lastUpdated``. A resource whose
``meta.lastUpdated`` is missing or unparseable is indexed at the instant of the resource added just before it
(the epoch if it is the first); one without a string ``resourceType`` is served by the Observation endpoint.
Adding a resource with the id of one already stored replaces it, like an update.

Faults (:class:`Faults`, settable at construction, at runtime via ``server.faults = Faults(...)`` and from the
command line) apply to data requests (search, page, read), never to ``metadata``: an error status (5xx/429 with
``Retry-After``) for the first K requests, for given request numbers or for a seeded random fraction; a page
whose body is malformed JSON; a page cut short (``Content-Length`` larger than the bytes sent, then the
connection closes); a delay on every page or on given pages; a missing or wrong ``total``.

Sources: :func:`synthea_observations` reads every Observation from the Synthea sample bundles where they lie
(third-party data is never copied into the project); ``connectors.fhir.synth`` generates any amount of
deterministic synthetic data.

Subprocess mode, for benchmarks and end-to-end tests (prints exactly one line, then serves until SIGTERM)::

    python -m tools.servers.fhir --source generated --count 5000 --seed 1 [--port 0] [fault flags]
    URL http://127.0.0.1:PORT/fhir
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson

from tools.servers.base import LocalHandler, LocalHTTPServer, LocalServer

__all__ = [
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "SYNTHEA_SUBDIR",
    "Faults",
    "FhirTestServer",
    "RequestRecord",
    "json_number",
    "main",
    "synthea_observations",
]

FhirResource = dict[str, Any]
DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_SNAPSHOTS = 256
"""Snapshots kept for paging; older ones expire (410 Gone), like HAPI's search cache."""

SYNTHEA_SUBDIR = Path("fhir") / "smart-generated-sample-data-R4-SYNTHEA"
SYNTHEA_LOAD_START = datetime(2024, 1, 1, tzinfo=UTC)
"""``meta.lastUpdated`` given to the earliest Synthea write; later writes follow every SYNTHEA_WRITE_STEP."""
SYNTHEA_WRITE_STEP = timedelta(milliseconds=250)

FHIR_JSON = "application/fhir+json; charset=utf-8"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ALWAYS_SERVED_TYPES = ("Observation", "Patient", "Encounter")
_IGNORED_PARAMS = frozenset({"_format", "_pretty", "_total", "_bundletype"})
_DATE_RE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)

TotalMode = Literal["accurate", "omit", "wrong"]
FaultKind = Literal["status", "malformed", "truncated"]


# --- faults --------------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """What to break, and when. Counters live on the object: assign a new ``Faults`` to start counting afresh.

    Request numbers count data requests (search, page, read) from 1 since this object was installed. Page
    numbers are 1-based positions within a search (page 1 is the search request itself, page 2 the first
    ``next`` link, ...). A listed page misbehaves ``page_fault_times`` times (counted per page number across all
    searches; ``None`` means every time) and is served correctly afterwards, so retries can succeed.
    """

    status: int = 503
    """Status sent by the error faults (500, 502, 503, 504, 429...)."""
    retry_after: str | None = "1"
    """``Retry-After`` header sent with the error status (seconds or an HTTP date); None sends none."""
    fail_first: int = 0
    """The first K data requests get ``status``."""
    fail_requests: frozenset[int] = frozenset()
    """These data request numbers get ``status``."""
    fail_rate: float = 0.0
    """Fraction of data requests that get ``status``, drawn from ``random.Random(seed)`` once per request."""
    seed: int = 0
    malformed_pages: frozenset[int] = frozenset()
    """Pages answered 200 with a body that is not JSON (Content-Length is right)."""
    truncated_pages: frozenset[int] = frozenset()
    """Pages whose body is cut in half: Content-Length announces all of it, then the connection closes."""
    page_fault_times: int | None = 1
    page_delay: float = 0.0
    """Seconds to wait before answering every page."""
    slow_pages: Mapping[int, float] = field(default_factory=dict)
    """Extra seconds before answering the given pages (e.g. longer than the client's read timeout)."""
    total: TotalMode = "accurate"
    """``Bundle.total``: right, omitted, or wrong (half the real number)."""

    _requests: int = field(default=0, init=False, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _page_faults_done: Counter[tuple[str, int]] = field(default_factory=Counter, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.fail_requests = frozenset(self.fail_requests)
        self.malformed_pages = frozenset(self.malformed_pages)
        self.truncated_pages = frozenset(self.truncated_pages)

    def decide(self, page: int | None) -> tuple[FaultKind | None, float]:
        """The fault for the next data request (None for none) and the delay before answering it."""
        with self._lock:
            self._requests += 1
            number = self._requests
            # Draw on every request, so the failing request numbers depend on the seed alone.
            drawn = self._rng.random() < self.fail_rate if self.fail_rate > 0 else False
            if drawn or number <= self.fail_first or number in self.fail_requests:
                return "status", 0.0
            if page is None:
                return None, 0.0
            delay = self.page_delay + self.slow_pages.get(page, 0.0)
            candidates: tuple[tuple[FaultKind, frozenset[int]], ...] = (
                ("malformed", self.malformed_pages),
                ("truncated", self.truncated_pages),
            )
            for kind, pages in candidates:
                if page in pages:
                    done = self._page_faults_done[(kind, page)]
                    if self.page_fault_times is None or done < self.page_fault_times:
                        self._page_faults_done[(kind, page)] = done + 1
                        return kind, delay
            return None, delay


# --- the store -----------------------------------------------------------------------------------------------


class _Stored(NamedTuple):
    instant: datetime
    """Index time for _lastUpdated filtering and sorting (see the module docstring for bad values)."""
    id: str
    """The resource id, "" when it has none."""
    seq: int
    """Insertion order (the order without _sort)."""
    resource_type: str
    body: bytes
    """The resource as JSON, serialised once when added."""


@dataclass(frozen=True)
class _Snapshot:
    id: str
    resource_type: str
    entries: list[_Stored]


class _Version(NamedTuple):
    """One entry of a type's history: a create, update or delete of one resource."""

    instant: datetime
    seq: int
    resource_type: str
    id: str
    method: Literal["POST", "PUT", "DELETE"]
    version: str
    last_modified: str
    """``response.lastModified`` as written (precision kept: a deletion at whole seconds says so)."""
    body: bytes | None
    """The resource as stored; None for a deletion."""


@dataclass(frozen=True)
class _HistorySnapshot:
    id: str
    resource_type: str
    entries: list[_Version]


class _Response(NamedTuple):
    status: int
    body: bytes
    kind: str
    headers: Mapping[str, str] = {}
    fault: FaultKind | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: what was asked and what it got."""

    method: str
    target: str
    """Path and query exactly as requested, e.g. ``/fhir/Observation?_count=10``."""
    status: int
    kind: str
    """``search``, ``page``, ``read``, ``metadata``, ``not_found``, ``bad_request``, ``gone``, ``error``..."""
    fault: FaultKind | None


class _BadRequest(Exception):
    """A client error: answered 400 with an OperationOutcome."""


class FhirTestServer(LocalServer):
    """The FHIR R4 test server. ``start()`` binds ``host:port`` (port 0: the OS picks) and serves in a thread.

    ``resources`` may mix resource types; each type is searchable at ``{base}/{Type}``. Use as a context manager
    or call ``stop()``. ``base_url`` is ``http://127.0.0.1:PORT/fhir``.
    """

    def __init__(
        self,
        resources: Iterable[FhirResource] = (),
        *,
        page_delay: float = 0.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "/fhir",
        history: bool = True,
    ) -> None:
        super().__init__(_Handler, host=host, port=port, thread_name="fhir-test-server", poll_interval=0.05)
        self.history = history
        """Whether ``{Type}/_history`` is served (False: 404, a server that keeps no versions)."""
        self._store: dict[str, dict[str, _Stored]] = {}
        self._versions: dict[str, list[_Version]] = {}
        self._last_version: dict[tuple[str, str], str] = {}
        self._sorted: dict[str, list[_Stored]] = {}
        self._seq = 0
        self._snapshot_seq = 0
        self._last_instant = _EPOCH
        self._snapshots: OrderedDict[str, _Snapshot | _HistorySnapshot] = OrderedDict()
        self._log: list[RequestRecord] = []
        self._faults = faults if faults is not None else Faults()
        if page_delay:
            self._faults = replace(self._faults, page_delay=page_delay)
        self.base_path = "/" + base_path.strip("/")
        self.add(resources)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL."""
        self._serve()
        return self.base_url

    @property
    def base_url(self) -> str:
        return self.origin + self.base_path

    # -- data ---------------------------------------------------------------------------------------------

    def add(self, resources: Iterable[FhirResource]) -> None:
        """Store resources (replacing any with the same type and id); searches started earlier don't see them."""
        prepared = [(resource, _dumps(resource)) for resource in resources]
        with self._lock:
            for resource, body in prepared:
                resource_type = resource.get("resourceType")
                if not isinstance(resource_type, str) or not _TYPE_RE.fullmatch(resource_type):
                    resource_type = "Observation"
                resource_id = resource.get("id")
                resource_id = resource_id if isinstance(resource_id, str) else ""
                meta = resource.get("meta")
                instant = _parse_instant(meta.get("lastUpdated")) if isinstance(meta, dict) else None
                if instant is None:
                    instant = self._last_instant
                self._last_instant = instant
                self._seq += 1
                key = resource_id or f"\0{self._seq}"
                store = self._store.setdefault(resource_type, {})
                if resource_id:  # a resource without id has no URL, so no history either
                    version = meta.get("versionId") if isinstance(meta, dict) else None
                    text = meta.get("lastUpdated") if isinstance(meta, dict) else None
                    self._record_version(
                        resource_type,
                        resource_id,
                        "PUT" if key in store else "POST",
                        instant,
                        text if isinstance(text, str) else None,
                        version,
                        body,
                    )
                store[key] = _Stored(instant, resource_id, self._seq, resource_type, body)
                self._sorted.pop(resource_type, None)

    def delete(self, resource_type: str, resource_id: str, at: datetime | str | None = None) -> str:
        """Delete a resource as ``DELETE {base}/{Type}/{id}`` would: gone from search and read, and a ``DELETE``
        version in the history. ``at`` is its ``lastModified`` (an aware datetime or ISO text, kept as written);
        default 1 ms after the newest instant the server holds. Returns the ``lastModified`` written;
        KeyError for a resource not stored."""
        with self._lock:
            return self._delete(resource_type, resource_id, at)

    def _delete(self, resource_type: str, resource_id: str, at: datetime | str | None) -> str:
        if resource_id not in self._store.get(resource_type, {}):
            raise KeyError(f"{resource_type}/{resource_id} is not stored")
        if at is None:
            at = self._last_instant + timedelta(milliseconds=1)
        text = at if isinstance(at, str) else at.isoformat(timespec="milliseconds")
        instant = _parse_instant(text)
        if instant is None:
            raise ValueError(f"deletion time {at!r} is not an ISO instant")
        del self._store[resource_type][resource_id]
        self._sorted.pop(resource_type, None)
        self._last_instant = max(self._last_instant, instant)
        self._seq += 1
        self._record_version(resource_type, resource_id, "DELETE", instant, text, None, None)
        return text

    def _record_version(
        self,
        resource_type: str,
        resource_id: str,
        method: Literal["POST", "PUT", "DELETE"],
        instant: datetime,
        text: str | None,
        version: Any,
        body: bytes | None,
    ) -> None:
        """Append a history entry (lock held). Without a ``versionId`` the next number after the last one."""
        if not isinstance(version, str):
            last = self._last_version.get((resource_type, resource_id), "0")
            version = str(int(last) + 1) if last.isdigit() else f"{last}.1"
        self._last_version[(resource_type, resource_id)] = version
        last_modified = text or instant.isoformat(timespec="milliseconds")
        entry = _Version(instant, self._seq, resource_type, resource_id, method, version, last_modified, body)
        self._versions.setdefault(resource_type, []).append(entry)

    def resource_count(self, resource_type: str = "Observation") -> int:
        with self._lock:
            return len(self._store.get(resource_type, {}))

    def expire_snapshots(self) -> None:
        """Forget every paging snapshot: the next ``next`` link a client follows gets 410 Gone."""
        with self._lock:
            self._snapshots.clear()

    # -- faults and observation ---------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    @property
    def requested_urls(self) -> list[str]:
        """Path and query of every request so far, oldest first."""
        return [record.target for record in self.requests]

    @property
    def counts(self) -> Counter[str]:
        """Requests by kind (``search``, ``page``...) plus ``fault:<kind>`` for each injected fault."""
        counter: Counter[str] = Counter()
        for record in self.requests:
            counter[record.kind] += 1
            if record.fault:
                counter[f"fault:{record.fault}"] += 1
        return counter

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # -- request handling (called from handler threads) ---------------------------------------------------

    def _respond(self, method: str, target: str) -> _Response:
        if method not in ("GET", "DELETE"):
            return _outcome(405, "not-supported", f"{method} is not supported by this test server", "bad_method")
        split = urlsplit(target)
        path = split.path.rstrip("/")
        query = parse_qs(split.query, keep_blank_values=True)
        base = self.base_path
        if path != base and not path.startswith(base + "/"):
            return _outcome(404, "not-found", f"unknown path {split.path}", "not_found")
        parts = [part for part in path[len(base) :].split("/") if part]
        if method == "DELETE":
            return self._delete_request(parts)
        try:
            if not parts:
                if "_getpages" in query:
                    return self._page(query, target)
                return _outcome(400, "not-supported", "whole-system search is not supported", "bad_request")
            if parts == ["metadata"]:
                return _Response(200, self._capability_statement(), "metadata")
            if len(parts) > 2 or not self._serves(parts[0]):
                return _outcome(404, "not-found", f"unknown resource type or path {split.path}", "not_found")
            if len(parts) == 2 and parts[1] == "_history" and self.history:
                return self._history(parts[0], query, target)
            if len(parts) == 2:
                return self._read(parts[0], parts[1])
            return self._search(parts[0], query, target)
        except _BadRequest as exc:
            return _outcome(400, "invalid", str(exc), "bad_request")

    def _serves(self, resource_type: str) -> bool:
        with self._lock:
            return resource_type in _ALWAYS_SERVED_TYPES or resource_type in self._store

    def _read(self, resource_type: str, resource_id: str) -> _Response:
        fault, delay = self._faults.decide(None)
        if fault == "status":
            return self._fault_status()
        with self._lock:
            stored = self._store.get(resource_type, {}).get(resource_id) if resource_id else None
        if stored is None:
            return _outcome(404, "not-found", f"{resource_type}/{resource_id} is not known", "not_found")
        return _Response(200, stored.body, "read", delay=delay)

    def _search(self, resource_type: str, query: dict[str, list[str]], target: str) -> _Response:
        predicates: list[tuple[str, datetime, datetime]] = []
        sort_keys: list[str] = []
        for name, values in query.items():
            if name == "_lastUpdated":
                predicates += [_parse_date_param(value) for value in values]
            elif name == "_sort":
                sort_keys += [key.strip() for value in values for key in value.split(",") if key.strip()]
            elif name != "_count" and name not in _IGNORED_PARAMS:
                raise _BadRequest(f"unknown or unsupported search parameter {name!r} for {resource_type}")
        count = _parse_count(query)
        omit_total = query.get("_total", [""])[-1] == "none"
        for key in sort_keys:
            if key.lstrip("-") not in ("_lastUpdated", "_id"):
                raise _BadRequest(f"unsupported _sort key {key!r} (use _lastUpdated, -_lastUpdated, _id, -_id)")

        fault, delay = self._faults.decide(1)
        if fault == "status":
            return self._fault_status()
        with self._lock:
            entries = self._sorted.get(resource_type)
            if entries is None:
                stored = self._store.get(resource_type, {}).values()
                entries = sorted(stored, key=lambda s: (s.instant, s.id, s.seq))
                self._sorted[resource_type] = entries
            matches = [s for s in entries if all(_matches(s.instant, p) for p in predicates)]
            if not sort_keys:
                matches.sort(key=lambda s: s.seq)
            for key in reversed(sort_keys):
                if key.lstrip("-") == "_id":
                    matches.sort(key=lambda s: s.id, reverse=key.startswith("-"))
                else:
                    matches.sort(key=lambda s: s.instant, reverse=key.startswith("-"))
            # Deterministic ids and timestamps: recordings made from this server diff only where data changed.
            self._snapshot_seq += 1
            snapshot = _Snapshot(f"snapshot{self._snapshot_seq:06d}", resource_type, matches)
            self._snapshots[snapshot.id] = snapshot
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return self._bundle_page(snapshot, 0, count, target, omit_total, "search", fault, delay)

    def _page(self, query: dict[str, list[str]], target: str) -> _Response:
        snapshot_id = query["_getpages"][-1]
        try:
            offset = int(query.get("_getpagesoffset", ["0"])[-1])
        except ValueError:
            raise _BadRequest("_getpagesoffset must be an integer") from None
        if offset < 0:
            raise _BadRequest("_getpagesoffset must be >= 0")
        count = _parse_count(query)
        omit_total = query.get("_total", [""])[-1] == "none"
        fault, delay = self._faults.decide(offset // count + 1 if count else 1)
        if fault == "status":
            return self._fault_status()
        with self._lock:
            snapshot = self._snapshots.get(snapshot_id)
        if snapshot is None:
            return _outcome(410, "not-found", f"search {snapshot_id} has expired or never existed", "gone")
        if isinstance(snapshot, _HistorySnapshot):
            return self._history_page(snapshot, offset, count, target, "history_page", fault, delay)
        return self._bundle_page(snapshot, offset, count, target, omit_total, "page", fault, delay)

    def _bundle_page(
        self,
        snapshot: _Snapshot,
        offset: int,
        count: int,
        target: str,
        omit_total: bool,
        kind: str,
        fault: FaultKind | None,
        delay: float,
    ) -> _Response:
        entries = snapshot.entries[offset : offset + count]
        links = [{"relation": "self", "url": self.origin + target}]
        if count and offset + count < len(snapshot.entries):
            links.append({"relation": "next", "url": self._page_url(snapshot.id, offset + count, count)})
        if count and offset > 0:
            links.append({"relation": "previous", "url": self._page_url(snapshot.id, max(0, offset - count), count)})
        head: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": f"{snapshot.id}-{offset}",
            "meta": {"lastUpdated": self._last_instant.isoformat(timespec="milliseconds")},
            "type": "searchset",
        }
        mode = self._faults.total
        if not omit_total and mode != "omit":
            head["total"] = len(snapshot.entries) if mode == "accurate" else len(snapshot.entries) // 2
        head["link"] = links
        body = orjson.dumps(head)
        if entries:
            prefix = self.base_url + "/"
            parts = []
            for stored in entries:
                # fullUrl is omitted for a (bad) resource without id: there is no URL to give it.
                start = b'{"fullUrl":' + orjson.dumps(f"{prefix}{stored.resource_type}/{stored.id}") + b","
                parts.append(
                    (start if stored.id else b"{") + b'"resource":' + stored.body + b',"search":{"mode":"match"}}'
                )
            body = body[:-1] + b',"entry":[' + b",".join(parts) + b"]}"
        if fault == "malformed":
            body = body[: len(body) // 2] + b"\n<html><body>502 Bad Gateway</body></html>"
        return _Response(200, body, kind, fault=fault, delay=delay)

    def _page_url(self, snapshot_id: str, offset: int, count: int, bundle_type: str = "searchset") -> str:
        return (
            f"{self.base_url}?_getpages={snapshot_id}&_getpagesoffset={offset}&_count={count}&_bundletype={bundle_type}"
        )

    # -- history and deletion -----------------------------------------------------------------------------

    def _delete_request(self, parts: list[str]) -> _Response:
        if len(parts) != 2 or parts[1] == "_history":
            return _outcome(405, "not-supported", "DELETE is supported on {Type}/{id} only", "bad_method")
        try:
            self.delete(parts[0], parts[1])
        except KeyError:
            return _outcome(404, "not-found", f"{parts[0]}/{parts[1]} is not known", "not_found")
        body = orjson.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "information",
                        "code": "informational",
                        "diagnostics": f"deleted {parts[0]}/{parts[1]}",
                    }
                ],
            }
        )
        return _Response(200, body, "delete")

    def _history(self, resource_type: str, query: dict[str, list[str]], target: str) -> _Response:
        since: datetime | None = None
        for name, values in query.items():
            if name == "_since":
                try:
                    prefix, since, _ = _parse_date_param(values[-1])
                except _BadRequest as exc:
                    raise _BadRequest(f"_since: {exc}") from None
                if values[-1][:2] == prefix:
                    raise _BadRequest(f"_since takes an instant without a prefix, got {values[-1]!r}")
            elif name != "_count" and name not in _IGNORED_PARAMS:
                raise _BadRequest(f"unknown or unsupported history parameter {name!r} for {resource_type}")
        count = _parse_count(query)
        fault, delay = self._faults.decide(1)
        if fault == "status":
            return self._fault_status()
        with self._lock:
            versions = [v for v in self._versions.get(resource_type, ()) if since is None or v.instant >= since]
            versions.sort(key=lambda v: (v.instant, v.seq), reverse=True)  # FHIR: oldest versions last
            self._snapshot_seq += 1
            snapshot = _HistorySnapshot(f"snapshot{self._snapshot_seq:06d}", resource_type, versions)
            self._snapshots[snapshot.id] = snapshot
            while len(self._snapshots) > MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return self._history_page(snapshot, 0, count, target, "history", fault, delay)

    def _history_page(
        self,
        snapshot: _HistorySnapshot,
        offset: int,
        count: int,
        target: str,
        kind: str,
        fault: FaultKind | None,
        delay: float,
    ) -> _Response:
        links = [{"relation": "self", "url": self.origin + target}]
        if count and offset + count < len(snapshot.entries):
            links.append({"relation": "next", "url": self._page_url(snapshot.id, offset + count, count, "history")})
        entries = []
        for v in snapshot.entries[offset : offset + count]:
            entry: dict[str, Any] = {"fullUrl": f"{self.base_url}/{v.resource_type}/{v.id}"}
            if v.body is not None:
                entry["resource"] = orjson.Fragment(v.body)
            status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[v.method]
            entry["request"] = {"method": v.method, "url": f"{v.resource_type}/{v.id}"}
            entry["response"] = {"status": status, "etag": f'W/"{v.version}"', "lastModified": v.last_modified}
            entries.append(entry)
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": f"{snapshot.id}-{offset}",
            "meta": {"lastUpdated": self._last_instant.isoformat(timespec="milliseconds")},
            "type": "history",
            "total": len(snapshot.entries),
            "link": links,
        }
        if entries:
            bundle["entry"] = entries
        body = orjson.dumps(bundle)
        if fault == "malformed":
            body = body[: len(body) // 2] + b"\n<html><body>502 Bad Gateway</body></html>"
        return _Response(200, body, kind, fault=fault, delay=delay)

    def _fault_status(self) -> _Response:
        faults = self._faults
        code = "throttled" if faults.status == 429 else "transient"
        response = _outcome(faults.status, code, f"injected fault: HTTP {faults.status}", "fault")
        headers = {"Retry-After": faults.retry_after} if faults.retry_after is not None else {}
        return response._replace(headers=headers, fault="status")

    def _capability_statement(self) -> bytes:
        with self._lock:
            types = sorted(set(_ALWAYS_SERVED_TYPES) | set(self._store))
        return orjson.dumps(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2024-01-01",
                "kind": "instance",
                "software": {"name": "inlet FHIR test server"},
                "implementation": {"description": "tools.servers.fhir", "url": self.base_url},
                "fhirVersion": "4.0.1",
                "format": ["application/fhir+json", "json"],
                "rest": [
                    {
                        "mode": "server",
                        "resource": [
                            {
                                "type": resource_type,
                                "interaction": [{"code": "read"}, {"code": "search-type"}]
                                + ([{"code": "history-type"}, {"code": "delete"}] if self.history else []),
                                "searchParam": [
                                    {
                                        "name": "_lastUpdated",
                                        "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                                        "type": "date",
                                    }
                                ],
                            }
                            for resource_type in types
                        ],
                    }
                ],
            }
        )


class _Handler(LocalHandler):
    server: LocalHTTPServer[FhirTestServer]
    timeout = 60  # idle keep-alive connections are dropped after this

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        try:
            response = app._respond(method, self.path)
        except Exception as exc:
            app._record_error(repr(exc))
            response = _outcome(500, "exception", f"test server bug: {exc!r}", "error")
        if response.delay > 0 and app._stopping.wait(response.delay):
            self.close_connection = True
            return
        app._record(RequestRecord(method, self.path, response.status, response.kind, response.fault))
        body = response.body
        self.send_response(response.status)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.fault == "truncated":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


# --- helpers -------------------------------------------------------------------------------------------------


def _outcome(status: int, code: str, text: str, kind: str) -> _Response:
    body = orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        }
    )
    return _Response(status, body, kind)


def json_number(value: Any) -> Any:
    """orjson ``default``: a Decimal is written as the JSON number it is (``Decimal("5.10")`` → ``5.10``), the way
    a server that keeps a FHIR decimal's precision sends it."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _dumps(resource: Any) -> bytes:
    """JSON of a resource as given (Decimals as numbers); falls back to the stdlib for what orjson refuses (huge
    ints, odd keys)."""
    try:
        return orjson.dumps(resource, default=json_number)
    except TypeError:
        return json.dumps(resource, default=str).encode()


def _parse_instant(value: Any) -> datetime | None:
    """An ISO instant as an aware datetime (UTC if it has no offset); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_count(query: dict[str, list[str]]) -> int:
    raw = query.get("_count", [str(DEFAULT_COUNT)])[-1]
    try:
        count = int(raw)
    except ValueError:
        raise _BadRequest(f"_count must be an integer, got {raw!r}") from None
    if count < 0:
        raise _BadRequest("_count must be >= 0")
    return min(count, MAX_COUNT)


def _parse_date_param(value: str) -> tuple[str, datetime, datetime]:
    """``(prefix, low, high)``: the prefix and the half-open range ``[low, high)`` the value's precision covers."""
    prefix = value[:2] if value[:2] in ("eq", "ne", "ge", "gt", "le", "lt", "sa", "eb", "ap") else "eq"
    text = value[2:] if value[:2] == prefix else value
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise _BadRequest(f"_lastUpdated prefix {prefix!r} is not supported (use eq, ge, gt, le, lt)")
    match = _DATE_RE.fullmatch(text)
    if match is None:
        hint = " (a '+' in the offset must be percent-encoded as %2B)" if " " in text else ""
        raise _BadRequest(f"_lastUpdated value {text!r} is not a FHIR date/dateTime/instant{hint}")
    parts = match.groupdict()
    tz = UTC if parts["tz"] in (None, "Z") else datetime.fromisoformat("2000-01-01T00:00:00" + parts["tz"]).tzinfo
    fraction = parts["fraction"] or ""
    try:
        low = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int((fraction + "000000")[:6]),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise _BadRequest(f"_lastUpdated value {text!r}: {exc}") from None
    if parts["month"] is None:
        high = low.replace(year=low.year + 1)
    elif parts["day"] is None:
        high = low.replace(year=low.year + 1, month=1) if low.month == 12 else low.replace(month=low.month + 1)
    elif parts["hour"] is None:
        high = low + timedelta(days=1)
    elif parts["second"] is None:
        high = low + timedelta(minutes=1)
    elif not fraction:
        high = low + timedelta(seconds=1)
    else:
        high = low + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    return prefix, low, high


def _matches(instant: datetime, predicate: tuple[str, datetime, datetime]) -> bool:
    prefix, low, high = predicate
    if prefix == "ge":
        return instant >= low
    if prefix == "gt":
        return instant >= high
    if prefix == "le":
        return instant < high
    if prefix == "lt":
        return instant < low
    return low <= instant < high


# --- sources -------------------------------------------------------------------------------------------------


def synthea_observations(sample_dir: Path) -> list[FhirResource]:
    """Every Observation in the Synthea sample transaction bundles, as a FHIR server would store them.

    ``sample_dir`` is the shared sample-data root (``tools.servers.sample_data_dir()``) or the Synthea folder
    itself. Files are read where they lie. Each Observation gets what a server adds on write: ``meta.versionId``
    "1" and ``meta.lastUpdated``, increasing with ``issued`` (then file and entry order); Observations issued
    at the same instant (one encounter) share one ``lastUpdated``, as one transaction would, and consecutive
    writes are SYNTHEA_WRITE_STEP apart from SYNTHEA_LOAD_START. ``urn:uuid:`` references to resources in the
    same bundle become ``Type/id``, as the server resolves them when it processes the transaction.
    """
    folder = sample_dir / SYNTHEA_SUBDIR if (sample_dir / SYNTHEA_SUBDIR).is_dir() else sample_dir
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no Synthea bundles (*.json) in {folder}")
    found: list[tuple[datetime, int, int, FhirResource]] = []
    for file_index, path in enumerate(files):
        bundle = orjson.loads(path.read_bytes())
        entries = [entry for entry in bundle.get("entry", []) if isinstance(entry.get("resource"), dict)]
        local_refs = {
            entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
            for entry in entries
            if "fullUrl" in entry and "id" in entry["resource"]
        }
        for entry_index, entry in enumerate(entries):
            resource = entry["resource"]
            if resource.get("resourceType") != "Observation":
                continue
            _resolve_references(resource, local_refs)
            written = _parse_instant(resource.get("issued")) or _parse_instant(resource.get("effectiveDateTime"))
            found.append((written or _EPOCH, file_index, entry_index, resource))
    found.sort(key=lambda item: item[:3])
    observations: list[FhirResource] = []
    write = -1
    previous: datetime | None = None
    for written, _file_index, _entry_index, resource in found:
        if written != previous:
            write += 1
            previous = written
        last_updated = SYNTHEA_LOAD_START + write * SYNTHEA_WRITE_STEP
        old_meta = resource.get("meta")
        if not isinstance(old_meta, dict):
            old_meta = {}
        resource["meta"] = {
            "versionId": "1",
            "lastUpdated": last_updated.isoformat(timespec="milliseconds"),
            **{k: v for k, v in old_meta.items() if k not in ("versionId", "lastUpdated")},
        }
        observations.append(resource)
    return observations


def _resolve_references(node: Any, local_refs: Mapping[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in local_refs:
                node[key] = local_refs[value]
            else:
                _resolve_references(value, local_refs)
    elif isinstance(node, list):
        for item in node:
            _resolve_references(item, local_refs)


# --- subprocess mode -----------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.servers.fhir",
        description="Serve FHIR R4 test data; prints 'URL <base url>' once, then serves until SIGTERM.",
    )
    parser.add_argument("--source", choices=("generated", "synthea"), default="generated")
    parser.add_argument("--count", type=int, default=5000, help="Observations to generate (generated only)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (generated only)")
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=None,
        help="aware ISO instant of the first lastUpdated (generated only)",
    )
    parser.add_argument(
        "--sample-dir", type=Path, default=None, help="sample data root (default: tools.servers.sample_data_dir())"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: the OS picks a free port")
    parser.add_argument("--page-delay", type=float, default=0.0, help="seconds before every page")
    parser.add_argument(
        "--slow-page",
        action="append",
        default=[],
        metavar="PAGE=SECONDS",
        help="extra delay for one page number (repeatable)",
    )
    parser.add_argument("--fail-first", type=int, default=0, help="first K data requests get --fail-status")
    parser.add_argument(
        "--fail-request",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="data request number N gets --fail-status (repeatable)",
    )
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of data requests that fail")
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--retry-after", default="1", help="Retry-After value; '' sends none")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of --fail-rate")
    parser.add_argument("--malformed-page", type=int, action="append", default=[], metavar="PAGE")
    parser.add_argument("--truncated-page", type=int, action="append", default=[], metavar="PAGE")
    parser.add_argument(
        "--page-fault-times", type=int, default=1, help="times each malformed/truncated page misbehaves; 0: every time"
    )
    parser.add_argument("--total", choices=("accurate", "omit", "wrong"), default="accurate")
    return parser.parse_args(argv)


def _faults_from_args(args: argparse.Namespace) -> Faults:
    slow: dict[int, float] = {}
    for spec in args.slow_page:
        page, _, seconds = spec.partition("=")
        slow[int(page)] = float(seconds)
    return Faults(
        status=args.fail_status,
        retry_after=args.retry_after or None,
        fail_first=args.fail_first,
        fail_requests=frozenset(args.fail_request),
        fail_rate=args.fail_rate,
        seed=args.fault_seed,
        malformed_pages=frozenset(args.malformed_page),
        truncated_pages=frozenset(args.truncated_page),
        page_fault_times=args.page_fault_times or None,
        page_delay=args.page_delay,
        slow_pages=slow,
        total=args.total,
    )


def _load_resources(args: argparse.Namespace) -> list[FhirResource]:
    if args.source == "synthea":
        from tools.servers import sample_data_dir

        return synthea_observations(args.sample_dir or sample_data_dir())
    from inlet.connectors.fhir.synth import DEFAULT_START, generate_dataset

    return generate_dataset(args.count, args.seed, args.start or DEFAULT_START).all_resources()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; the only stdout output is the ``URL ...`` line."""
    args = _parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = FhirTestServer(_load_resources(args), faults=_faults_from_args(args), host=args.host, port=args.port)
    server.start()
    try:
        sys.stdout.write(f"URL {server.base_url}\n")
        sys.stdout.flush()
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
