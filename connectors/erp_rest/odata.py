"""ERP REST over OData: Business Central API v2.0 (OData v4) and SAP S/4HANA-style services (OData v2), read by
a modification-time delta and mapped to ``erp.invoice`` / ``erp.party`` / ``erp.payment``.

Requests. OData v4: ``GET companies(<company_id>)/<entity>?$filter=lastModifiedDateTime ge <bound>&$orderby=
lastModifiedDateTime asc&$expand=<lines>``, page size asked for with ``Prefer: odata.maxpagesize`` (``$top``
would cap the whole result, not a page), following ``@odata.nextLink``. OData v2: ``GET <entity>?$filter=
LastChangeDateTime ge datetime'<bound>'&$orderby=...&$expand=to_Item&$format=json``, following ``d.__next``
(``$skiptoken``). v2 answers are ``d.results`` or a single object at ``d`` (read as a one-record page); a
leading UTF-8 byte order mark is accepted (``core.pagination``); ``__metadata`` and ``__deferred`` links are
dropped by ``decode``. Every page is parsed by ``core.exact_json.loads``: no amount goes through a float.
OData v2 presets (:data:`ENTITIES`): SAP ``A_BusinessPartner`` (modified = ``LastChangeDate`` + ``LastChangeTime``,
filtered by day) and Exact Online ``SalesInvoices`` / ``Accounts`` (under ``api/v1/<division>/``).

**Delta without gaps or repeats.** Position: ``{"modified_since": <UTC instant>, "seen": ["<id>@<modified>",
...]}``. The next pass asks for ``modified ge modified_since - overlap_seconds``:

* the bound is inclusive, so rows sharing the watermark's instant (also across a page boundary, when a pass
  stopped after a page) are read again;
* the overlap window re-reads rows that became visible late: written while a pass was paging with a
  modification time before what that pass had already reached (a transaction committing after its
  timestamp, a server clock behind ours);
* what was delivered in the window is in ``seen`` — id *and* modification time — so a re-read row is filtered
  ("already delivered") while a row modified again (new time, new key) is delivered: every modification once.
  Keys older than the window are dropped, so ``seen`` holds at most the rows modified in the last
  ``overlap_seconds``.

A page that is not usable JSON (an HTML error page with status 200, truncated JSON, another shape) becomes one
DLQ record (stage decode, its URL and first bytes) and ends the pass **without moving the position**: the
next poll reads it again. A next link seen before in the pass is a :class:`~core.pagination.PaginationLoopError`.

**Deletions by delta link** (OData v4, ``delta: track_changes``). A filter on modification time never returns a
row that is gone, so where the service tracks changes the connector reads them instead: a pass without a delta
link sends ``Prefer: odata.track-changes`` with the watermark read above (filter, order, ``seen``) and keeps the
``@odata.deltaLink`` of its last page in the position (``delta_link``); the next pass GETs that link (and its
next links), whose answer holds the entities changed since and a *deleted entity* for each one removed, mapped
to ``erp.deletion`` (``contracts.erp_deletion`` has the rules). Delta answers are not ordered, so the watermark
(kept for the fallback) and the link move with the last page only; the batches before carry the pass's starting
ones, and a pass cut short reads the same link again. A service that answers without a delta link is read by
watermark (one warning: removals are not seen); a delta link it refuses (:data:`DELTA_LINK_REFUSED`: expired,
unknown) is logged and the pass reads again from the watermark with a new ``Prefer: odata.track-changes`` —
the changes of the gap arrive, its removals cannot be read, and the warning says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal, Self
from urllib.parse import unquote, urljoin, urlsplit

from pydantic import Field, model_validator
from typing_extensions import override

from inlet.connectors.erp_rest.mapping import EMPTY_GUID, MAPPERS, sap_bp_modified
from inlet.contracts.base import Contract, published
from inlet.contracts.erp_deletion import ErpDeletionV1
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import PaymentV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, IntegrationContext, PluginSettings
from inlet.core.errors import DecodeError, MappingError
from inlet.core.http import HttpClient, HttpSettings, UpstreamRefused
from inlet.core.pagination import NextLinkPaginator, Page, PageDecodeError, paginate
from inlet.core.scaffold import Scaffold
from inlet.core.time import ClockCap, normalise
from inlet.core.types import Position

__all__ = [
    "DELETED_AS",
    "DELTA_LINK_REFUSED",
    "ENTITIES",
    "Entity",
    "ErpODataConnector",
    "ErpODataSettings",
    "Removal",
    "UndecodablePage",
    "delta_key",
    "delta_position",
    "describe_watermark",
    "page_record",
]


@dataclass(frozen=True)
class Entity:
    """How one entity set is read: dialect, key and modification fields, what to expand, what it maps to."""

    dialect: Literal["odata4", "odata2"]
    id_field: str
    modified_field: str
    contract: type[Contract]
    expand: str | None = None
    path: str | None = None
    """Path between ``service_path`` and the entity set (``{division}`` is the setting): Exact Online's
    ``api/v1/{division}/salesinvoice``."""
    modified_of: Callable[[dict[str, Any]], datetime] | None = None
    """The modification instant of a record when no single field holds it (SAP ``A_BusinessPartner``: a date and a
    time); the delta filter then names ``day_fields`` at day granularity."""
    day_fields: tuple[str, ...] = ()
    """Date fields the delta filter compares (``or``-joined) with the day of the bound: the pass reads that whole
    day again, and ``seen`` is kept down to its start, so what was delivered that day is filtered."""
    order_field: str | None = None
    """``$orderby`` when it is not the modification field. The watermark then moves with a pass's last page only."""


ENTITIES: Final[dict[str, Entity]] = {
    "salesInvoices": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "salesInvoiceLines"),
    "purchaseInvoices": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "purchaseInvoiceLines"),
    "salesCreditMemos": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "salesCreditMemoLines"),
    "purchaseCreditMemos": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "purchaseCreditMemoLines"),
    "customers": Entity("odata4", "id", "lastModifiedDateTime", PartyV1),
    "vendors": Entity("odata4", "id", "lastModifiedDateTime", PartyV1),
    "customerPayments": Entity("odata4", "id", "lastModifiedDateTime", PaymentV1),
    "vendorPayments": Entity("odata4", "id", "lastModifiedDateTime", PaymentV1),
    "A_BillingDocument": Entity("odata2", "BillingDocument", "LastChangeDateTime", InvoiceV1, "to_Item"),
    "A_BusinessPartner": Entity(
        "odata2",
        "BusinessPartner",
        "LastChangeDate",
        PartyV1,
        modified_of=sap_bp_modified,
        day_fields=("LastChangeDate", "CreationDate"),
        order_field="BusinessPartner",
    ),
    "SalesInvoices": Entity(
        "odata2", "InvoiceID", "Modified", InvoiceV1, "SalesInvoiceLines", path="api/v1/{division}/salesinvoice"
    ),
    "Accounts": Entity("odata2", "ID", "Modified", PartyV1, path="api/v1/{division}/crm"),
}
"""Entity sets the family reads (policy as data): Business Central v2.0 (OData v4), SAP S/4HANA billing documents
and business partners (OData v2), Exact Online sales invoices and accounts (OData v2)."""

EntityName = Literal[
    "salesInvoices",
    "purchaseInvoices",
    "salesCreditMemos",
    "purchaseCreditMemos",
    "customers",
    "vendors",
    "customerPayments",
    "vendorPayments",
    "A_BillingDocument",
    "A_BusinessPartner",
    "SalesInvoices",
    "Accounts",
]


DELETED_AS: Final[dict[str, tuple[str, str]]] = {
    "salesInvoices": ("invoice", "sales"),
    "purchaseInvoices": ("invoice", "purchase"),
    "salesCreditMemos": ("invoice", "sales"),
    "purchaseCreditMemos": ("invoice", "purchase"),
    "customers": ("party", "customer"),
    "vendors": ("party", "vendor"),
    "customerPayments": ("payment", "received"),
    "vendorPayments": ("payment", "made"),
}
"""OData v4 entity set → the ``(entity, kind)`` of its ``erp.deletion`` events."""

DELTA_LINK_REFUSED: Final = frozenset({400, 404, 410})
"""Answers to a delta link that mean "no longer valid" (410 Gone when expired, 400 / 404 for a token the service
no longer knows): the pass reads again from the watermark instead. Any other refusal fails the pass."""


class ErpODataSettings(PluginSettings):
    """Settings of an ERP OData integration."""

    http: HttpSettings
    entity: EntityName
    """The entity set read (one integration per set): Business Central ``salesInvoices``, ``purchaseInvoices``,
    ``salesCreditMemos``, ``purchaseCreditMemos`` (negative: ``mapping.CREDIT_NOTE_RULE``), ``customers``,
    ``vendors``, ``customerPayments``, ``vendorPayments`` (OData v4), SAP ``A_BillingDocument``,
    ``A_BusinessPartner`` or Exact Online ``SalesInvoices``, ``Accounts`` (OData v2)."""
    company_id: str | None = None
    """Business Central company id: requests go to ``companies(<company_id>)/<entity>``. Required for OData v4."""
    service_path: str = ""
    """Path under the base URL before the entity (``companies(...)`` for v4 comes after it)."""
    division: int | None = None
    """Exact Online division (``api/v1/<division>/...``): required for ``SalesInvoices`` and ``Accounts``."""
    page_size: int = Field(default=100, ge=1, le=20000)
    """Records per page asked for (OData v4 ``Prefer: odata.maxpagesize``); v2 servers page as they like."""
    since: str | None = None
    """Initial watermark (any core.time format); None reads everything."""
    overlap_seconds: float = Field(default=300.0, ge=0)
    """How far before the watermark each pass reads again (late-committed rows, clock skew); re-read rows
    delivered before are filtered by id and modification time."""
    max_clock_skew_seconds: float = Field(default=3600.0, ge=0)
    """How far past this host's clock a row's modification time may lie and still move the watermark. A row dated
    later (a server clock years ahead, a migration bug) is delivered and remembered in ``seen`` but does not move
    it: one such value would otherwise move the watermark past every change still to come, and the integration
    would stop without an error."""
    local_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    """The company's local currency: what an empty currency code means (Business Central)."""
    expand_lines: bool = True
    """Read invoice lines with the header (``$expand``)."""
    delta: Literal["watermark", "track_changes"] = "watermark"
    """``track_changes`` (OData v4): ask for ``@odata.deltaLink`` and read changes *and removals* through it
    (``erp.deletion``); the watermark read stays the fallback. ``watermark``: modification-time delta only."""

    @model_validator(mode="after")
    def _company(self) -> Self:
        if ENTITIES[self.entity].dialect == "odata4" and not self.company_id:
            raise ValueError(f"entity {self.entity} is Business Central (OData v4): set company_id")
        if "{division}" in (ENTITIES[self.entity].path or "") and self.division is None:
            raise ValueError(f"entity {self.entity} is Exact Online: set division")
        if self.delta == "track_changes" and self.entity not in DELETED_AS:
            raise ValueError(f"delta: track_changes needs an OData v4 entity set; {self.entity} is not one")
        return self


@dataclass(frozen=True)
class UndecodablePage:
    """A page that could not be read: becomes one DLQ record (stage decode)."""

    url: str
    body: bytes
    reason: str


@dataclass(frozen=True)
class Removal:
    """A deleted entity of a delta answer (OData 4.0 ``$deletedEntity``, 4.01 ``@removed``): an ``erp.deletion``."""

    entry: dict[str, Any]

    @staticmethod
    def found(record: Any) -> bool:
        """Whether a delta answer's entry is a deleted entity."""
        return isinstance(record, dict) and (
            "@removed" in record
            or "@odata.removed" in record
            or str(record.get("@odata.context") or "").endswith("$deletedEntity")
        )

    def reason(self) -> Any:
        """``deleted`` or ``changed``, from ``@removed`` (4.01) or ``reason`` (4.0); absent means deleted."""
        removed = self.entry.get("@removed", self.entry.get("@odata.removed"))
        said = removed.get("reason") if isinstance(removed, dict) else None
        return said or self.entry.get("reason") or "deleted"

    def source_id(self, id_field: str) -> str | None:
        """The key property when the entry carries one, else the key inside its entity id (``@id``, 4.0 ``id``):
        ``customers(5d11...)``, a URL ending in it, ``Customers('ALFKI')``, ``customers(id=5d11...)``."""
        for field in (id_field, "@id", "@odata.id", "id"):
            value = self.entry.get(field)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return _entity_key(str(value))
        return None


def _entity_key(value: str) -> str:
    tail = unquote(value.rstrip("/").rsplit("/", 1)[-1])
    if not (tail.endswith(")") and "(" in tail):
        return value
    inner = tail[tail.index("(") + 1 : -1]
    if "=" in inner and "," not in inner:
        inner = inner.split("=", 1)[1]
    return inner.strip("'")


def delta_key(record_id: Any, modified: datetime) -> str:
    """What ``seen`` holds for a delivered row: its id and its modification instant (UTC, ISO 8601)."""
    return f"{record_id}@{modified.isoformat()}"


def _key_time(key: str) -> datetime:
    return datetime.fromisoformat(key.rsplit("@", 1)[1])


def delta_position(watermark: datetime | None, seen: set[str], floor: datetime | None) -> Position:
    """The position of a watermark dialect: the watermark, and ``seen`` without the keys older than ``floor`` (the
    start of what the next pass reads again: rows before it cannot come back, so their keys are dropped)."""
    if floor is not None:
        seen.intersection_update({k for k in seen if _key_time(k) >= floor})
    return {"modified_since": watermark.isoformat() if watermark else None, "seen": sorted(seen)}


def describe_watermark(
    position: Position | None, what: str, since: str | None, overlap_seconds: float, *, by_day: bool = False
) -> str:
    """What a watermark dialect's next pass reads from ``position`` (``inlet positions``): the rows modified since
    the watermark less the overlap (``by_day``: from the start of that day), those already delivered skipped."""
    watermark = (position or {}).get("modified_since") or since
    if watermark is None:
        return f"reads every {what} from the start: no watermark"
    bound = f"{watermark} less {overlap_seconds:g} s of overlap"
    if by_day:
        bound = f"the day of {bound}"
    return f"re-reads every {what} modified since {bound} (rows delivered are skipped)"


def page_record(raw: Any, dialect: str, what: str) -> dict[str, Any]:
    """A record of a page as read, or the DecodeError an unusable page or a non-object record is (stage decode,
    with the URL and the first bytes): the decode step every ERP dialect starts with."""
    if isinstance(raw, UndecodablePage):
        raise DecodeError(
            f"page {raw.url} is not a usable {dialect} page: {raw.reason}; first bytes: {raw.body[:120]!r}"
        )
    if not isinstance(raw, dict):
        raise DecodeError(f"{what}: a record that is not a JSON object: {str(raw)[:200]}")
    return raw


def _v2_loads(body: bytes) -> Any:
    """OData v2 JSON, with a single-object ``d`` read as a page of one record."""
    doc = exact_json.loads(body)
    if isinstance(doc, dict) and isinstance(doc.get("d"), dict) and "results" not in doc["d"]:
        return {"d": {"results": [doc["d"]]}}
    return doc


def _clean(value: Any) -> Any:
    """Without ``__metadata`` / ``__deferred`` (v2 noise), empty GUIDs as null, ``{"results": [...]}`` kept."""
    if isinstance(value, dict):
        return {
            k: _clean(v)
            for k, v in value.items()
            if k != "__metadata" and not (isinstance(v, dict) and "__deferred" in v)
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return None if value == EMPTY_GUID else value


class ErpODataConnector(Connector[ErpODataSettings]):
    """Invoices, parties or payments of one OData entity set, by modification-time delta without gaps."""

    name: ClassVar[str] = "erp_rest.odata"
    settings_model: ClassVar[type[PluginSettings]] = ErpODataSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (InvoiceV1, PartyV1, PaymentV1, ErpDeletionV1)
    description: ClassVar[str] = "ERP over OData v4 (Business Central) or v2 (SAP): delta on modification time"
    zone_needed: ClassVar[str] = "posting dates (payments) are read as the start of that day in the ERP's zone"
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="erp_rest",
        integration="invoices",
        hooks=("filter",),
        zone="Europe/Berlin",
        settings={
            "entity": "salesInvoices",
            "company_id": "00000000-0000-0000-0000-000000000001",
            "local_currency": "EUR",
            "http": {"base_url": "https://erp.{customer}.invalid/api/v2.0"},
        },
        record="inlet record {key} --config {config}   # with settings.http.base_url pointing at a test server",
    )

    http: HttpClient
    _seen: frozenset[str] = frozenset()
    _prefer: str = ""
    _told_no_link = False

    def __init__(self, ctx: IntegrationContext, settings: ErpODataSettings) -> None:
        super().__init__(ctx, settings)
        self.entity = ENTITIES[settings.entity]

    @override
    def produces(self) -> tuple[type[Contract], ...]:
        return published((self.entity.contract, ErpDeletionV1) if self.tracking else (self.entity.contract,))

    @property
    def tracking(self) -> bool:
        """Whether changes and removals are read through delta links (``delta: track_changes``)."""
        return self.settings.delta == "track_changes"

    async def open(self) -> None:
        http = self.settings.http
        if self.entity.dialect == "odata4":
            headers = {"Prefer": f"odata.maxpagesize={self.settings.page_size}", **http.headers}
            http = http.model_copy(update={"headers": headers})
            self._prefer = headers["Prefer"]
        self.http = HttpClient(http, self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    def _path(self) -> str:
        s = self.settings
        base = s.service_path.strip("/")
        parts = [base] if base else []
        if self.entity.path:
            parts.append(self.entity.path.format(division=s.division))
        if self.entity.dialect == "odata4":
            parts.append(f"companies({s.company_id})")
        parts.append(s.entity)
        return "/".join(parts)

    def _params(self, bound: datetime | None) -> dict[str, str]:
        field = self.entity.modified_field
        params = {"$orderby": f"{self.entity.order_field or field} asc"}
        if bound is not None:
            if self.entity.day_fields:  # day granularity: the bound is already the day's start (_bound)
                day = bound.strftime("%Y-%m-%dT00:00:00")
                params["$filter"] = " or ".join(f"{f} ge datetime'{day}'" for f in self.entity.day_fields)
            elif self.entity.dialect == "odata4":
                params["$filter"] = f"{field} ge {bound.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z"
            else:  # v2 datetime literals carry no offset: UTC
                params["$filter"] = f"{field} ge datetime'{bound.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}'"
        if self.entity.expand and self.settings.expand_lines:
            params["$expand"] = self.entity.expand
        if self.entity.dialect == "odata2":
            params["$format"] = "json"
        return params

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        s = self.settings
        raw_wm = (position or {}).get("modified_since")
        if raw_wm is None and s.since is not None:
            raw_wm = normalise(s.since, self.ctx.zone).utc.isoformat()
        watermark = datetime.fromisoformat(raw_wm) if raw_wm else None
        seen = set((position or {}).get("seen", ()))
        self._seen = frozenset(seen)
        link = (position or {}).get("delta_link") if self.tracking else None
        if link:
            pages = paginate(self.http, NextLinkPaginator("odata4"), link, None, loads=exact_json.loads)
            try:
                async for batch in self._pages(pages, watermark, seen, link, ordered=False):
                    yield batch
                return
            except UpstreamRefused as exc:
                if exc.status not in DELTA_LINK_REFUSED:
                    raise
                self.log.warning(
                    "the service refused the delta link; reading again from the watermark (changes since are "
                    "read, removals since the link was issued cannot be)",
                    entity=s.entity,
                    status=exc.status,
                    modified_since=watermark.isoformat() if watermark else None,
                    error=str(exc)[:300],
                )
        bound = self._bound(watermark)
        loads = exact_json.loads if self.entity.dialect == "odata4" else _v2_loads
        headers = {"Prefer": f"odata.track-changes, {self._prefer}"} if self.tracking else None
        pages = paginate(
            self.http,
            NextLinkPaginator(self.entity.dialect),
            self._path(),
            self._params(bound),
            loads=loads,
            headers=headers,
        )
        ordered = self.entity.order_field is None
        async for batch in self._pages(pages, watermark, seen, None, ordered=ordered):
            yield batch

    async def _pages(
        self, pages: AsyncIterator[Page], watermark: datetime | None, seen: set[str], link: str | None, *, ordered: bool
    ) -> AsyncIterator[Batch]:
        """A batch per page. ``ordered`` (a read by ascending modification time): every batch moves the watermark;
        otherwise (a delta answer) only the last one, the others carry ``watermark`` and ``link`` as they were."""
        start = watermark
        cap = ClockCap.from_now(self.settings.max_clock_skew_seconds)
        while True:
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
            except PageDecodeError as exc:
                undecodable = UndecodablePage(exc.url, exc.body, exc.reason)
                yield Batch([undecodable], self._position(watermark if ordered else start, seen, link))
                return
            records: list[Any] = []
            for record in page.records:
                if self.tracking and Removal.found(record):
                    records.append(Removal(record))
                    continue
                records.append(record)
                if not isinstance(record, dict):
                    continue  # decode() sends it to the DLQ
                try:
                    modified = self._modified(record)
                except MappingError:
                    continue  # map() reports it; the watermark does not move for it
                seen.add(delta_key(record.get(self.entity.id_field), modified))
                if not cap.past(modified) and (watermark is None or modified > watermark):
                    watermark = modified
            cap.warn(self.log, entity=self.settings.entity)
            last = not isinstance(page.body, dict) or not _next_link(page.body)
            if last and self.tracking:
                link = self._delta_link(page)
            yield Batch(records, self._position(watermark if ordered or last else start, seen, link))

    def _modified(self, record: dict[str, Any]) -> datetime:
        """The record's modification instant (UTC); MappingError when it has none that reads."""
        if self.entity.modified_of is not None:
            return self.entity.modified_of(record)
        return normalise(record.get(self.entity.modified_field), "UTC").utc

    def _bound(self, watermark: datetime | None) -> datetime | None:
        """Where a pass starts reading (and ``seen`` is kept down to): the watermark less ``overlap_seconds``, for
        an entity filtered by day the start of that day."""
        if watermark is None:
            return None
        bound = watermark - timedelta(seconds=self.settings.overlap_seconds)
        return bound.replace(hour=0, minute=0, second=0, microsecond=0) if self.entity.day_fields else bound

    def _delta_link(self, page: Page) -> str | None:
        """The ``@odata.deltaLink`` of a pass's last page, resolved; None (with one warning) when there is none."""
        raw = page.body.get("@odata.deltaLink") or page.body.get("odata.deltaLink")
        if isinstance(raw, str) and raw:
            link = urljoin(page.url, raw)
            if _origin(link) == _origin(page.url):
                return link
            self.log.warning("a delta link to another origin is not followed", link=link[:300], page=page.url)
        elif not self._told_no_link:
            self.log.warning(
                "the service answered without @odata.deltaLink: reading by watermark, removals are not seen",
                entity=self.settings.entity,
            )
        self._told_no_link = True
        return None

    @override
    def describe_position(self, position: Position | None) -> str:
        s = self.settings
        if self.tracking and (position or {}).get("delta_link"):
            return f"follows the service's delta link: every {s.entity} changed or removed since the last pass"
        return describe_watermark(position, s.entity, s.since, s.overlap_seconds)

    def _position(self, watermark: datetime | None, seen: set[str], link: str | None = None) -> Position:
        position = delta_position(watermark, seen, self._bound(watermark))
        if self.tracking:  # only then: positions (and fixtures) of watermark integrations keep their shape
            position["delta_link"] = link
        return position

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        if isinstance(raw, Removal):
            return raw
        return _clean(page_record(raw, "OData", self.settings.entity))

    def filter(self, record: Any) -> str | None:
        if self._seen and not isinstance(record, Removal):
            try:
                modified = self._modified(record)
            except MappingError:
                return None
            if delta_key(record.get(self.entity.id_field), modified) in self._seen:
                return "already delivered (same id and modification time, read again by the overlap window)"
        return None

    def identity(self, record: Any) -> tuple[str, str]:
        if isinstance(record, Removal):
            when = record.entry.get(self.entity.modified_field)
            return f"{self.settings.entity}/{record.source_id(self.entity.id_field)}", f"deleted@{when or ''}"
        return (
            f"{self.settings.entity}/{record.get(self.entity.id_field)}",
            self._modified(record).isoformat()
            if self.entity.modified_of
            else str(record.get(self.entity.modified_field) or ""),
        )

    def map(self, record: Any) -> Sequence[Contract]:
        if isinstance(record, Removal):
            return [self._deletion(record)]
        where = f"{self.settings.entity}/{record.get(self.entity.id_field)}"
        mapped = MAPPERS[self.settings.entity](record, where, self.ctx.zone, self.settings.local_currency)
        return mapped if isinstance(mapped, list) else [mapped]

    @override
    def config_warnings(self) -> list[str]:
        if self.entity.contract is PaymentV1:
            return super().config_warnings()
        return []

    def _deletion(self, removal: Removal) -> ErpDeletionV1:
        """A deleted entity as ``erp.deletion`` (rules: ``contracts.erp_deletion``); MappingError naming the entry."""
        where = f"{self.settings.entity}: deleted entity {str(removal.entry)[:200]}"
        source_id = removal.source_id(self.entity.id_field)
        if not source_id:
            raise MappingError(f"{where}: names no key (neither {self.entity.id_field}, @id nor id)")
        reason = removal.reason()
        if reason not in ("deleted", "changed"):
            raise MappingError(f"{where}: unknown reason {reason!r} (known: deleted, changed)")
        when = removal.entry.get(self.entity.modified_field)
        try:
            deleted = normalise(when, "UTC") if when else None
        except MappingError as exc:
            raise MappingError(f"{where}: {exc}") from None
        entity, kind = DELETED_AS[self.settings.entity]
        return ErpDeletionV1(
            entity=entity,
            kind=kind,
            source_id=source_id,
            reason=reason,
            deleted_at=deleted.utc if deleted else None,
            deleted_at_precision=deleted.precision if deleted else None,
        )


def _next_link(body: dict[str, Any]) -> Any:
    """The next link of a v4 or v2 page; None on the last page of a pass."""
    d = body.get("d")
    return (
        body.get("@odata.nextLink") or body.get("odata.nextLink") or (d.get("__next") if isinstance(d, dict) else None)
    )


def _origin(url: str) -> tuple[str, str]:
    split = urlsplit(url)
    return split.scheme.lower(), split.netloc.lower()
