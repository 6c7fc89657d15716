"""FHIR R4 incremental search: ``GET [base]/<Type>?_lastUpdated=ge<watermark>&_sort=_lastUpdated``.

One connector for every resource type the family maps (``settings.resource_type``: Observation, Patient,
Encounter, Condition, MedicationRequest); each resource goes through :func:`connectors.fhir.resources.map_resource`
and the family's stated filter rule. ``fhir.search`` is the general plugin; ``fhir.observation_search`` is the
same connector bound to Observations (its settings accept no other type), kept because configurations and
plugins (the example clinic) name it. A plugin for one type pins it the same way: ``pinned_settings(type)``.

Position: ``{"last_updated": <UTC instant>, "ids_at_watermark": [...]}``. The bound is inclusive, so a
resource updated in the same instant as the watermark is never missed; the ids already delivered at
that instant are filtered as duplicates (with that stated reason) instead of being emitted twice.
An entry is the resource id, or ``<id>/_history/<versionId>`` when the version is not ``"1"``: a server whose
``lastUpdated`` is coarse (whole seconds) can write version 2 in the same instant as version 1, and a
dedup by id alone would then drop the update. Version-1 entries stay plain ids, so positions written before
keep their meaning (a version-2 resource delivered under a plain id is delivered once more: same event id).
Watermarks are compared as instants, never as strings: servers mix offsets (``+01:00`` vs ``Z``).
Paging follows ``Bundle.link[relation=next]`` through ``core.pagination`` (a next link seen before is
an error, not a loop; a link to another origin is refused); ``Bundle.total`` is not trusted. An
OperationOutcome entry (``search.mode = outcome``) is logged as the server's warning. A page that is
not a JSON Bundle becomes one DLQ record (stage decode) and ends the pass without moving the position,
so the next poll reads it again. A resource of another type than the one searched is a MappingError.

Deletions (``history_deletes: true``, for servers that keep versions): a search never returns a deleted
resource, so after the search pages of a pass the connector reads ``GET [base]/<Type>/_history?_since=<s>``
(paged by ``Bundle.link[next]`` like the search) and maps each entry with ``request.method = DELETE`` to
``clinical.deletion`` (identity ``(<Type>/<id>, "deleted@" + version or time)``). The other entries are versions
the search delivers anyway: they are not made records at all (so they are not in the books: records in =
events + DLQ + filtered holds over the deletions alone) and are only counted in the pass's log line. ``s`` is
the position's own ``deleted_since`` watermark, with ``deleted_at_watermark`` deduplicating deletions in
that instant (``_since`` is inclusive) the way ``ids_at_watermark`` does for the search. A history Bundle lists
newest first, so the watermark moves only with the last history page; every batch before carries the old
one (a crash re-reads the history from it: same event ids). A position without ``deleted_since`` (written
before, or with the flag off) starts the history at the pass's starting ``last_updated``; ``deleted_since:
null`` means from the beginning. With the flag off the position keeps its two keys, unchanged. A server that
refuses ``_history`` (a 4xx such as 404/400/405, or a 200 OperationOutcome) gets one warning per pass and the
pass ends as if the flag were off; a page that is not a Bundle is one DLQ record, as for the search.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, ClassVar, Literal, get_args

import orjson
from pydantic import Field, create_model

from connectors.fhir.outcome import OperationOutcomeError
from connectors.fhir.resources import filter_reason, map_resource
from connectors.fhir.strict import validate_strict
from contracts.base import Contract
from contracts.clinical_condition import ConditionV1
from contracts.clinical_deletion import DeletionV1
from contracts.clinical_encounter import EncounterV1
from contracts.clinical_medication_request import MedicationRequestV1
from contracts.clinical_observation import ObservationV1
from contracts.clinical_patient import PatientV1
from core.connector import Batch, Connector, IntegrationContext, PluginSettings
from core.errors import ConfigError, DecodeError, MappingError
from core.http import HttpClient, HttpSettings, UpstreamRefused
from core.pagination import NextLinkPaginator, PageDecodeError, paginate
from core.time import Instant, normalise
from core.types import Position

__all__ = ["FhirObservationSearchConnector", "FhirSearchConnector", "FhirSearchSettings", "HistoryDeletion",
           "ResourceType", "UndecodablePage", "pinned_settings", "watermark_key"]

ResourceType = Literal["Observation", "Patient", "Encounter", "Condition", "MedicationRequest"]
"""The resource types the family maps to a contract (``connectors.fhir.resources.MAPPERS``)."""


class FhirSearchSettings(PluginSettings):
    """Settings of a FHIR search integration."""

    http: HttpSettings
    resource_type: ResourceType = "Observation"
    """The type searched (``GET [base]/<resource_type>``); one integration per type."""
    page_size: int = Field(default=100, ge=1, le=1000)
    since: str | None = None
    """Initial watermark (any core.time format); None reads everything."""
    params: dict[str, str] = Field(default_factory=dict)
    """Extra search parameters every request carries (e.g. ``category: laboratory``)."""
    strict: bool = False
    """Validate every resource against the full FHIR R4 model first (``connectors.fhir.strict``: ~40x slower)."""
    history_deletes: bool = False
    """After each pass read ``<resource_type>/_history`` for deletions (``clinical.deletion``); needs a server
    that keeps versions (a server without is warned about and skipped)."""


@cache
def pinned_settings(resource_type: ResourceType) -> type[FhirSearchSettings]:
    """Settings that accept only ``resource_type`` (the default): for a plugin bound to one type, so a YAML
    asking it for another type fails ``inlet check`` instead of mapping the wrong resources."""
    only: Any = Literal[resource_type]  # a Literal built at run time: the one type this model accepts
    return create_model(f"{resource_type}SearchSettings", __base__=FhirSearchSettings, __module__=__name__,
                        resource_type=(only, resource_type))


def watermark_key(res: Any) -> str:
    """What ``ids_at_watermark`` holds for a resource: its id, qualified by ``versionId`` unless that is 1."""
    rid = str(res.get("id"))
    meta = res.get("meta")
    version = meta.get("versionId") if type(meta) is dict else None
    return rid if version is None or version == "1" else f"{rid}/_history/{version}"


@dataclass(frozen=True, slots=True)
class HistoryDeletion:
    """A ``request.method = DELETE`` entry of a history Bundle, with the Bundle's ``meta.lastUpdated`` (the
    fallback time of an entry without ``response.lastModified``)."""

    entry: dict[str, Any]
    listed_at: str | None

    def target(self) -> tuple[str, str, str | None]:
        """``(type, id, version)`` from ``request.url`` (else ``fullUrl``); ("", "", None) when neither says.

        The version is the etag's (``W/"3"``), else the ``_history/3`` of the URL."""
        url = (self.entry.get("request") or {}).get("url") or self.entry.get("fullUrl") or ""
        parts = [p for p in str(url).split("?", 1)[0].split("/") if p]
        version = None
        if len(parts) >= 4 and parts[-2] == "_history":
            version, parts = parts[-1], parts[:-2]
        etag = (self.entry.get("response") or {}).get("etag")
        tagged = etag.removeprefix("W/").strip('"') if isinstance(etag, str) else ""
        version = tagged or version
        return (parts[-2], parts[-1], version) if len(parts) >= 2 else ("", "", version)

    def time(self) -> Any:
        """``response.lastModified``, else the listing's time."""
        return (self.entry.get("response") or {}).get("lastModified") or self.listed_at

    def key(self) -> str:
        """What ``deleted_at_watermark`` holds: ``<Type>/<id>``, qualified by the version when there is one."""
        rtype, rid, version = self.target()
        return f"{rtype}/{rid}" if version is None else f"{rtype}/{rid}/_history/{version}"


@dataclass(slots=True)
class _HistoryScan:
    """The records of history pages, and the newest instant they list (the next ``deleted_since``)."""

    newest: Instant | None
    keys: set[str]
    """Keys of the deletions at ``newest`` (``deleted_at_watermark``)."""
    deletions: int = 0
    versions: int = 0

    def take(self, entries: list[Any], listed_at: str | None) -> list[Any]:
        """The records of one page: its DELETE entries, and entries that are not objects (the DLQ says why).
        Creates and updates are only counted: the search delivers them."""
        records: list[Any] = []
        for entry in entries:
            method = (entry.get("request") or {}).get("method") if isinstance(entry, dict) else None
            record = HistoryDeletion(entry, listed_at) if method == "DELETE" else None
            if record is None and isinstance(entry, dict):
                self.versions += 1
                when = (entry.get("response") or {}).get("lastModified")
            else:
                records.append(record if record is not None else entry)
                self.deletions += record is not None
                when = record.time() if record is not None else None
            try:
                inst = normalise(when, "UTC") if when is not None else None
            except MappingError:
                continue  # map() reports a deletion's bad time; the watermark just does not move
            if inst is None:
                continue
            if self.newest is None or inst.utc > self.newest.utc:
                self.newest, self.keys = inst, set()
            if inst.utc == self.newest.utc and record is not None:
                self.keys.add(record.key())
        return records


@dataclass(frozen=True, slots=True)
class UndecodablePage:
    """A page body that is not a JSON Bundle: the raw bytes, kept for the DLQ."""

    url: str
    body: bytes
    reason: str


class FhirSearchConnector(Connector[FhirSearchSettings]):
    """Resources of ``settings.resource_type`` by incremental ``_lastUpdated`` search, mapped to their contract."""

    name: ClassVar[str] = "fhir.search"
    settings_model: ClassVar[type[PluginSettings]] = FhirSearchSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (ObservationV1, PatientV1, EncounterV1, ConditionV1,
                                                       MedicationRequestV1, DeletionV1)
    description: ClassVar[str] = "FHIR R4 search (any mapped resource type) with a _lastUpdated watermark"
    phi: ClassVar[bool] = True

    http: HttpClient
    _seen: frozenset[str] = frozenset()
    _watermark: str | None = None
    _deleted_seen: frozenset[str] = frozenset()
    _deleted_since: datetime | None = None

    def __init__(self, ctx: IntegrationContext, settings: FhirSearchSettings) -> None:
        super().__init__(ctx, settings)
        allowed = get_args(self.settings_model.model_fields["resource_type"].annotation)
        if settings.resource_type not in allowed:  # settings built in code rather than validated from YAML
            raise ConfigError(f"{self.name} searches {' or '.join(allowed)}, not {settings.resource_type!r}",
                              key="settings.resource_type")
        self.resource_type: str = settings.resource_type

    async def open(self) -> None:
        self.http = HttpClient(self.settings.http, self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        s = self.settings
        watermark: str | None = (position or {}).get("last_updated")
        if watermark is None and s.since is not None:
            watermark = normalise(s.since, self.ctx.zone).isoformat()
        ids = set((position or {}).get("ids_at_watermark", ()))
        self._watermark, self._seen = watermark, frozenset(ids)
        deleted = self._deletions_from(position, watermark)
        wm_instant = normalise(watermark, "UTC").utc if watermark else None
        params: dict[str, Any] | None = {**s.params, "_sort": "_lastUpdated", "_count": str(s.page_size)}
        if watermark is not None:
            params["_lastUpdated"] = f"ge{watermark}"  # type: ignore[index]
        paginator = NextLinkPaginator("fhir")  # Bundle.link[next], loop detection, other origins refused
        pages = paginate(self.http, paginator, self.resource_type, params)
        while True:
            try:
                page = await anext(pages)
                if not isinstance(page.body, dict) or page.body.get("resourceType") != "Bundle":
                    raise PageDecodeError(page.url, orjson.dumps(page.body), "not a FHIR Bundle")
            except StopAsyncIteration:
                break
            except UpstreamRefused as exc:  # a 4xx: typed with the server's issue codes when it says why
                typed = OperationOutcomeError.from_refusal(f"search {self.resource_type}", exc)
                if typed is exc:
                    raise
                raise typed from exc
            except PageDecodeError as exc:
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], self._position(watermark, ids, *deleted))
                return
            records: list[dict[str, Any]] = []
            advanced: Instant | None = None  # the newest instant of this page, formatted once at its end
            for entry in page.records:
                res = entry.get("resource") if isinstance(entry, dict) else None
                mode = (entry.get("search") or {}).get("mode") if isinstance(entry, dict) else None
                if isinstance(res, dict) and (mode == "outcome" or res.get("resourceType") == "OperationOutcome"):
                    self.log.warning("server sent an OperationOutcome with the search",
                                     issues=[i.get("diagnostics") for i in res.get("issue") or ()])
                    continue
                records.append(res if res is not None else entry)
                lu = (res or {}).get("meta", {}).get("lastUpdated") if isinstance(res, dict) else None
                if lu is None:
                    continue
                try:
                    parsed = normalise(lu, "UTC")
                except MappingError:
                    continue  # map() reports it for this record; the watermark just does not move
                inst = parsed.utc
                if wm_instant is None or inst > wm_instant:
                    wm_instant, advanced, ids = inst, parsed, {watermark_key(res)}
                elif inst == wm_instant:
                    ids.add(watermark_key(res))
            if advanced is not None:
                watermark = advanced.isoformat()
            yield Batch(records, self._position(watermark, ids, *deleted))
        if s.history_deletes:
            async for batch in self._read_deletions({"last_updated": watermark, "ids_at_watermark": sorted(ids)},
                                                    *deleted):
                yield batch

    def _position(self, watermark: str | None, ids: set[str], deleted_since: str | None,
                  deleted_seen: set[str]) -> Position:
        now: dict[str, Any] = {"last_updated": watermark, "ids_at_watermark": sorted(ids)}
        if self.settings.history_deletes:  # only then: with the flag off positions (and fixtures) keep their shape
            now |= {"deleted_since": deleted_since, "deleted_at_watermark": sorted(deleted_seen)}
        return now

    def _deletions_from(self, position: Position | None, watermark: str | None) -> tuple[str | None, set[str]]:
        """The deletion watermark and its keys; an old position (or a first pass) starts at the search's."""
        deleted_since: str | None = (position or {}).get("deleted_since", watermark)
        deleted_seen = set((position or {}).get("deleted_at_watermark", ()))
        self._deleted_since = normalise(deleted_since, "UTC").utc if deleted_since else None
        self._deleted_seen = frozenset(deleted_seen)
        return deleted_since, deleted_seen

    async def _read_deletions(self, search_position: Position, since: str | None,
                              seen: set[str]) -> AsyncIterator[Batch]:
        """The DELETE entries of ``<Type>/_history?_since=<since>``; the last batch moves the deletion watermark.

        A page's batch is held until the next page has arrived: history lists newest first, so only after
        the last page is the newest instant known, and that batch alone carries it.
        """
        def position(deleted_since: str | None, keys: set[str]) -> Position:
            return {**search_position, "deleted_since": deleted_since, "deleted_at_watermark": sorted(keys)}

        params: dict[str, Any] = {"_count": str(self.settings.page_size)}
        if since is not None:
            params["_since"] = since
        scan = _HistoryScan(normalise(since, "UTC") if since else None, set(seen))
        held: list[Any] | None = None
        pages = paginate(self.http, NextLinkPaginator("fhir"), f"{self.resource_type}/_history", params)
        while True:
            try:
                page = await anext(pages)
                body = page.body
                if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
                    raise UpstreamRefused("answered an OperationOutcome: " + "; ".join(
                        str(i.get("diagnostics") or i.get("code")) for i in body.get("issue") or ()
                        if isinstance(i, dict)))
                if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                    raise PageDecodeError(page.url, orjson.dumps(body), "not a FHIR Bundle")
            except StopAsyncIteration:
                break
            except UpstreamRefused as exc:
                self.log.warning("the server refuses the history of deletions; none read this pass",
                                 resource_type=self.resource_type, error=str(exc)[:300])
                if held is not None:
                    yield Batch(held, position(since, seen))
                return
            except PageDecodeError as exc:
                if held is not None:
                    yield Batch(held, position(since, seen))
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], position(since, seen))
                return
            if held is not None:
                yield Batch(held, position(since, seen))
            held = scan.take(page.records, (body.get("meta") or {}).get("lastUpdated"))
        self.log.info("history read", resource_type=self.resource_type, since=since, deletions=scan.deletions,
                      versions_skipped=scan.versions)
        yield Batch(held or [], position(scan.newest.isoformat() if scan.newest else since, scan.keys))

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        if isinstance(raw, HistoryDeletion):
            return raw
        if isinstance(raw, UndecodablePage):
            raise DecodeError(f"page {raw.url} is not a JSON FHIR Bundle: {raw.reason}")
        if not isinstance(raw, dict):
            raise DecodeError(f"Bundle entry without a resource object: {str(raw)[:200]}")
        if self.settings.strict:
            validate_strict(raw)
        return raw

    def filter(self, record: Any) -> str | None:
        if isinstance(record, HistoryDeletion):
            if self._deleted_seen and self._deleted_since is not None and record.key() in self._deleted_seen:
                with contextlib.suppress(MappingError):  # a bad time is map()'s to report
                    if normalise(record.time(), "UTC").utc == self._deleted_since:
                        return "already delivered at the deletion watermark"
            return None
        if self._seen and self._watermark is not None and watermark_key(record) in self._seen:
            lu = (record.get("meta") or {}).get("lastUpdated")
            if lu is not None and normalise(lu, "UTC").isoformat() == self._watermark:
                return "already delivered at the watermark"
        return filter_reason(record)

    def identity(self, record: Any) -> tuple[str, str]:
        if isinstance(record, HistoryDeletion):
            rtype, rid, version = record.target()
            return f"{rtype}/{rid}", f"deleted@{version or record.time()}"
        meta = record.get("meta") or {}
        return (f"{record.get('resourceType')}/{record.get('id')}",
                str(meta.get("versionId") or meta.get("lastUpdated") or ""))

    def map(self, record: Any) -> Sequence[Contract]:
        if isinstance(record, HistoryDeletion):
            return [self._map_deletion(record)]
        rtype = record.get("resourceType")
        if rtype != self.resource_type and isinstance(rtype, str):
            raise MappingError(f"{rtype}/{record.get('id')}: the search for {self.resource_type} returned a "
                               f"{rtype} (an _include or a server bug); this integration maps {self.resource_type}")
        return [map_resource(record, self.ctx.zone)]

    def _map_deletion(self, record: HistoryDeletion) -> DeletionV1:
        rtype, rid, version = record.target()
        where = f"history DELETE entry {str(record.entry)[:200]}"
        if not rid:
            raise MappingError(f"{where}: neither request.url nor fullUrl names <Type>/<id>")
        if rtype != self.resource_type:
            raise MappingError(f"{where}: the history of {self.resource_type} listed {rtype}/{rid}")
        when = record.time()
        if when is None:
            raise MappingError(f"{where}: no response.lastModified and no Bundle meta.lastUpdated")
        deleted = normalise(when, "UTC")
        return DeletionV1(resource_type=rtype, resource_id=rid, deleted_at=deleted.utc,
                          deleted_at_precision=deleted.precision, source_version=version)


class FhirObservationSearchConnector(FhirSearchConnector):
    """Observations by incremental ``_lastUpdated`` search, mapped to ``clinical.observation`` v1."""

    name: ClassVar[str] = "fhir.observation_search"
    settings_model: ClassVar[type[PluginSettings]] = pinned_settings("Observation")
    contracts: ClassVar[tuple[type[Contract], ...]] = (ObservationV1,)
    description: ClassVar[str] = "FHIR R4 Observation search with a _lastUpdated watermark"

