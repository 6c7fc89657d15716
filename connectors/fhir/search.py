"""FHIR R4 incremental search: ``GET [base]/<Type>?_lastUpdated=ge<watermark>&_sort=_lastUpdated``.

One connector for every resource type the family maps (``settings.resource_type``: Observation, Patient,
Encounter, Condition, MedicationRequest); each resource goes through :func:`connectors.fhir.resources.map_resource`
and the family's stated filter rule. ``fhir.search`` is the general plugin; ``fhir.observation_search`` is the
same connector bound to Observations (configurations and plugins name it). A plugin for one type pins it the
same way: ``pinned_settings(type)``.

Position: ``{"last_updated": <UTC instant>, "ids_at_watermark": [...]}``. The bound is inclusive; the resources
already delivered at the watermark instant are filtered as duplicates (a stated reason). An entry is the
resource id, or ``<id>/_history/<versionId>`` when the version is not ``"1"`` (why: docs/families/fhir.md,
"Search"). Watermarks are compared as instants, never as strings.

Pages are parsed by ``core.exact_json.loads`` (a number a float would not give back as written reaches the
mapper as a Decimal) and followed through ``Bundle.link[relation=next]`` with ``core.pagination``;
``Bundle.total`` is not trusted. An OperationOutcome entry is logged as the server's warning. A page that is not
a JSON Bundle becomes one DLQ record (stage decode) and ends the pass without moving the position. A resource of
another type than the one searched is a MappingError. Observations map to ``clinical.observation`` v2.0 and are
published as v1.0 too.

Deletions (``history_deletes: true``): after the search pages of a pass, :mod:`connectors.fhir.history` reads
``<Type>/_history`` for DELETE entries (``clinical.deletion``); its module docstring has the rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

from pydantic import Field, create_model
from typing_extensions import override

from inlet.connectors.fhir.history import HistoryDeletion, UndecodablePage, map_deletion, read_deletions
from inlet.connectors.fhir.outcome import OperationOutcomeError
from inlet.connectors.fhir.resources import CONTRACTS, ZONE_NEEDED, filter_reason, map_resource
from inlet.connectors.fhir.strict import validate_strict
from inlet.contracts.base import Contract, published
from inlet.contracts.clinical_condition import ConditionV1
from inlet.contracts.clinical_deletion import DeletionV1
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_medication_request import MedicationRequestV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, IntegrationContext, PluginSettings
from inlet.core.errors import ConfigError, DecodeError, MappingError
from inlet.core.exact_json import member
from inlet.core.http import HttpClient, HttpSettings, UpstreamRefused
from inlet.core.pagination import NextLinkPaginator, Page, PageDecodeError, paginate
from inlet.core.scaffold import Scaffold
from inlet.core.time import ClockCap, Instant, normalise
from inlet.core.types import Position

__all__ = [
    "FhirObservationSearchConnector",
    "FhirSearchConnector",
    "FhirSearchSettings",
    "ResourceType",
    "pinned_settings",
    "watermark_key",
]

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
    max_clock_skew_seconds: float = Field(default=3600, ge=0)
    """How far past this host's clock a ``meta.lastUpdated`` may lie and still move the watermark. A resource
    dated later (a server clock years ahead, a migration bug) is delivered but does not move it: one such value
    would otherwise move the watermark past every change still to come, and the search would silently stop."""


@cache
def pinned_settings(resource_type: ResourceType) -> type[FhirSearchSettings]:
    """Settings that accept only ``resource_type`` (the default): for a plugin bound to one type, so a YAML
    asking it for another type fails ``inlet check`` instead of mapping the wrong resources."""
    only: Any = Literal[resource_type]  # a Literal built at run time: the one type this model accepts
    return create_model(
        f"{resource_type}SearchSettings",
        __base__=FhirSearchSettings,
        __module__=__name__,
        resource_type=(only, resource_type),
    )


def watermark_key(res: Any) -> str:
    """What ``ids_at_watermark`` holds for a resource: its id, qualified by ``versionId`` unless that is 1."""
    rid = str(res.get("id"))
    meta = res.get("meta")
    version = meta.get("versionId") if type(meta) is dict else None
    return rid if version is None or version == "1" else f"{rid}/_history/{version}"


@dataclass(slots=True)
class _Scan:
    """A search pass's watermark as it moves: the newest ``meta.lastUpdated`` (text and instant), the keys
    delivered at it, the resources dated past ``cap`` by key, with their ``lastUpdated``."""

    watermark: str | None
    instant: datetime | None
    ids: set[str]
    ahead: dict[str, str]
    cap: ClockCap


class FhirSearchConnector(Connector[FhirSearchSettings]):
    """Resources of ``settings.resource_type`` by incremental ``_lastUpdated`` search, mapped to their contract."""

    name: ClassVar[str] = "fhir.search"
    settings_model: ClassVar[type[PluginSettings]] = FhirSearchSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (
        ObservationV2,
        PatientV1,
        EncounterV1,
        ConditionV1,
        MedicationRequestV1,
        DeletionV1,
    )
    description: ClassVar[str] = "FHIR R4 search (any mapped resource type) with a _lastUpdated watermark"
    phi: ClassVar[bool] = True
    zone_needed: ClassVar[str] = ZONE_NEEDED
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="fhir",
        integration="observations",
        hooks=("filter", "map"),
        zone="Europe/Berlin",
        settings={"resource_type": "Observation", "http": {"base_url": "https://fhir.{customer}.invalid/fhir"}},
        record="inlet record {key} --config {config}   # with settings.http.base_url pointing at a test server",
    )

    http: HttpClient
    _seen: frozenset[str] = frozenset()
    _watermark: str | None = None
    _deleted_seen: frozenset[str] = frozenset()
    _deleted_since: datetime | None = None
    _ahead: Mapping[str, str] = MappingProxyType({})
    """The resources dated past this host's clock delivered before (``ahead_of_clock``): key → lastUpdated."""

    def __init__(self, ctx: IntegrationContext, settings: FhirSearchSettings) -> None:
        super().__init__(ctx, settings)
        allowed = get_args(self.settings_model.model_fields["resource_type"].annotation)
        if settings.resource_type not in allowed:  # settings built in code rather than validated from YAML
            raise ConfigError(
                f"{self.name} searches {' or '.join(allowed)}, not {settings.resource_type!r}",
                key="settings.resource_type",
            )
        self.resource_type: str = settings.resource_type

    @override
    def produces(self) -> tuple[type[Contract], ...]:
        """The searched type's contract (and what it is dual-published as), plus deletions when read."""
        mapped = CONTRACTS[self.resource_type]
        return published((mapped, DeletionV1) if self.settings.history_deletes else (mapped,))

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
        ahead: dict[str, str] = dict((position or {}).get("ahead_of_clock", {}))
        self._ahead = MappingProxyType(dict(ahead))
        deleted = self._deletions_from(position, watermark)
        scan = _Scan(
            watermark,
            normalise(watermark, "UTC").utc if watermark else None,
            ids,
            ahead,
            ClockCap.from_now(s.max_clock_skew_seconds),
        )
        params: dict[str, Any] | None = {**s.params, "_sort": "_lastUpdated", "_count": str(s.page_size)}
        if watermark is not None:
            params["_lastUpdated"] = f"ge{watermark}"  # type: ignore[index]
        paginator = NextLinkPaginator("fhir")  # Bundle.link[next], loop detection, other origins refused
        pages = paginate(self.http, paginator, self.resource_type, params, loads=exact_json.loads)
        while True:
            try:
                page = await self._next_page(pages)
            except StopAsyncIteration:
                break
            except PageDecodeError as exc:
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], self._position(scan, *deleted))
                return
            yield Batch(self._take(page.records, scan), self._position(scan, *deleted))
        if s.history_deletes:
            search_position = {k: v for k, v in self._position(scan, *deleted).items() if not k.startswith("deleted")}
            async for batch in read_deletions(
                self.http, self.log, self.resource_type, s.page_size, search_position, *deleted, cap=scan.cap
            ):
                yield batch

    def _take(self, entries: list[Any], scan: _Scan) -> list[Any]:
        """The records of one search page, moving ``scan``'s watermark (the newest ``meta.lastUpdated``, with the
        keys delivered at it) and remembering the resources dated past this host's clock."""
        records: list[Any] = []
        advanced: Instant | None = None  # the newest instant of this page, formatted once at its end
        for entry in entries:
            # Only looked at here: an entry or resource of the wrong shape goes on as it is, for map() to word.
            # (member()'s checks written out: this loop runs once per resource read.)
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict):
                records.append(entry if res is None else res)
                continue
            if self._outcome(entry, res):
                continue
            records.append(res)
            meta = res.get("meta")
            lu = meta.get("lastUpdated") if isinstance(meta, dict) else None
            if lu is None:
                continue
            try:
                parsed = normalise(lu, "UTC")
            except MappingError:
                continue  # map() reports it for this record; the watermark just does not move
            inst = parsed.utc
            if scan.cap.past(inst):  # delivered, remembered by version; the watermark stays
                scan.ahead[watermark_key(res)] = parsed.isoformat()
            elif scan.instant is None or inst > scan.instant:
                scan.instant, advanced, scan.ids = inst, parsed, {watermark_key(res)}
            elif inst == scan.instant:
                scan.ids.add(watermark_key(res))
        if advanced is not None:
            scan.watermark = advanced.isoformat()
        scan.cap.warn(self.log, resource_type=self.resource_type)
        return records

    def _outcome(self, entry: dict[str, Any], res: dict[str, Any]) -> bool:
        """Whether a search entry is an OperationOutcome the server sent with the results (warned about here: it is
        no record)."""
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        if mode != "outcome" and res.get("resourceType") != "OperationOutcome":
            return False
        issues = res.get("issue")
        self.log.warning(
            "server sent an OperationOutcome with the search",
            issues=[member(i, "diagnostics") for i in issues] if isinstance(issues, list) else issues,
        )
        return True

    async def _next_page(self, pages: AsyncIterator[Page]) -> Page:
        """The next search Bundle (StopAsyncIteration at the end); PageDecodeError for anything else; a refusal
        (4xx) typed as OperationOutcomeError with the server's issue codes when its body says why."""
        try:
            page = await anext(pages)
        except UpstreamRefused as exc:
            typed = OperationOutcomeError.from_refusal(f"search {self.resource_type}", exc)
            if typed is exc:
                raise
            raise typed from exc
        if not isinstance(page.body, dict) or page.body.get("resourceType") != "Bundle":
            raise PageDecodeError(page.url, exact_json.dumps(page.body), "not a FHIR Bundle")
        return page

    @override
    def describe_position(self, position: Position | None) -> str:
        since = (position or {}).get("last_updated") or self.settings.since
        what = f"every {self.resource_type}"
        if since is None:
            return f"reads {what} from the start: no watermark"
        skipped = len((position or {}).get("ids_at_watermark", ()))
        ahead = len((position or {}).get("ahead_of_clock", ()))
        return (
            f"re-reads {what} updated since {since}"
            + (f" (the {skipped} delivered at that instant are skipped)" if skipped else "")
            + (f"; {ahead} dated past the clock were delivered and are skipped" if ahead else "")
        )

    def _position(self, scan: _Scan, deleted_since: str | None, deleted_seen: set[str]) -> Position:
        now: dict[str, Any] = {"last_updated": scan.watermark, "ids_at_watermark": sorted(scan.ids)}
        if scan.instant is not None:  # what the watermark has passed will not be searched again
            scan.ahead = {k: v for k, v in scan.ahead.items() if normalise(v, "UTC").utc >= scan.instant}
        if scan.ahead:  # only then: positions (and recorded fixtures) of every other feed keep their shape
            now["ahead_of_clock"] = dict(sorted(scan.ahead.items()))
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
            lu = member(record, "meta", "lastUpdated")
            if lu is not None and normalise(lu, "UTC").isoformat() == self._watermark:
                return "already delivered at the watermark"
        if self._ahead and (dated := self._ahead.get(watermark_key(record))) is not None:
            lu = member(record, "meta", "lastUpdated")
            if lu is not None and normalise(lu, "UTC").isoformat() == dated:
                return "already delivered (dated past this host's clock)"
        return filter_reason(record)

    def identity(self, record: Any) -> tuple[str, str]:
        if isinstance(record, HistoryDeletion):
            rtype, rid, version = record.target()
            return f"{rtype}/{rid}", f"deleted@{version or record.time()}"
        return (
            f"{record.get('resourceType')}/{record.get('id')}",
            str(member(record, "meta", "versionId") or member(record, "meta", "lastUpdated") or ""),
        )

    def map(self, record: Any) -> Sequence[Contract]:
        if isinstance(record, HistoryDeletion):
            return [map_deletion(record, self.resource_type)]
        rtype = record.get("resourceType")
        if rtype != self.resource_type and isinstance(rtype, str):
            raise MappingError(
                f"{rtype}/{record.get('id')}: the search for {self.resource_type} returned a "
                f"{rtype} (an _include or a server bug); this integration maps {self.resource_type}"
            )
        return [map_resource(record, self.ctx.zone)]


class FhirObservationSearchConnector(FhirSearchConnector):
    """Observations by incremental ``_lastUpdated`` search, mapped to ``clinical.observation`` v2 (and published
    as v1 too while the contract's converter dual-publishes)."""

    name: ClassVar[str] = "fhir.observation_search"
    settings_model: ClassVar[type[PluginSettings]] = pinned_settings("Observation")
    contracts: ClassVar[tuple[type[Contract], ...]] = (ObservationV2,)
    description: ClassVar[str] = "FHIR R4 Observation search with a _lastUpdated watermark"
