"""ERP REST over OData: Business Central API v2.0 (OData v4) and SAP S/4HANA-style services (OData v2), read by
a modification-time delta and mapped to ``erp.invoice`` / ``erp.party`` / ``erp.payment``.

Requests. OData v4: ``GET companies(<company_id>)/<entity>?$filter=lastModifiedDateTime ge <bound>&$orderby=
lastModifiedDateTime asc&$expand=<lines>``, page size asked for with ``Prefer: odata.maxpagesize`` (``$top``
would cap the whole result, not a page), following ``@odata.nextLink``. OData v2: ``GET <entity>?$filter=
LastChangeDateTime ge datetime'<bound>'&$orderby=...&$expand=to_Item&$format=json``, following ``d.__next``
(``$skiptoken``). v2 answers are ``d.results`` or a single object at ``d`` (read as a one-record page); a
leading UTF-8 byte order mark is accepted (``core.pagination``); ``__metadata`` and ``__deferred`` links are
dropped by ``decode``. Every page is parsed by ``core.exact_json.loads``: no amount goes through a float.

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
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import Field, model_validator
from typing_extensions import override

from inlet.connectors.erp_rest.mapping import EMPTY_GUID, MAPPERS
from inlet.contracts.base import Contract, published
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import PaymentV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, IntegrationContext, PluginSettings
from inlet.core.errors import DecodeError, MappingError
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.pagination import NextLinkPaginator, PageDecodeError, paginate
from inlet.core.scaffold import Scaffold
from inlet.core.time import normalise
from inlet.core.types import Position

__all__ = ["ENTITIES", "Entity", "ErpODataConnector", "ErpODataSettings", "UndecodablePage", "delta_key"]


@dataclass(frozen=True)
class Entity:
    """How one entity set is read: dialect, key and modification fields, what to expand, what it maps to."""

    dialect: Literal["odata4", "odata2"]
    id_field: str
    modified_field: str
    contract: type[Contract]
    expand: str | None = None


ENTITIES: Final[dict[str, Entity]] = {
    "salesInvoices": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "salesInvoiceLines"),
    "purchaseInvoices": Entity("odata4", "id", "lastModifiedDateTime", InvoiceV1, "purchaseInvoiceLines"),
    "customers": Entity("odata4", "id", "lastModifiedDateTime", PartyV1),
    "vendors": Entity("odata4", "id", "lastModifiedDateTime", PartyV1),
    "customerPayments": Entity("odata4", "id", "lastModifiedDateTime", PaymentV1),
    "vendorPayments": Entity("odata4", "id", "lastModifiedDateTime", PaymentV1),
    "A_BillingDocument": Entity("odata2", "BillingDocument", "LastChangeDateTime", InvoiceV1, "to_Item"),
}
"""Entity sets the family reads (policy as data): Business Central v2.0 (OData v4) and SAP billing (OData v2)."""

EntityName = Literal[
    "salesInvoices",
    "purchaseInvoices",
    "customers",
    "vendors",
    "customerPayments",
    "vendorPayments",
    "A_BillingDocument",
]


class ErpODataSettings(PluginSettings):
    """Settings of an ERP OData integration."""

    http: HttpSettings
    entity: EntityName
    """The entity set read (one integration per set): Business Central ``salesInvoices``, ``purchaseInvoices``,
    ``customers``, ``vendors``, ``customerPayments``, ``vendorPayments`` (OData v4), or SAP ``A_BillingDocument``
    (OData v2)."""
    company_id: str | None = None
    """Business Central company id: requests go to ``companies(<company_id>)/<entity>``. Required for OData v4."""
    service_path: str = ""
    """Path under the base URL before the entity (``companies(...)`` for v4 comes after it)."""
    page_size: int = Field(default=100, ge=1, le=20000)
    """Records per page asked for (OData v4 ``Prefer: odata.maxpagesize``); v2 servers page as they like."""
    since: str | None = None
    """Initial watermark (any core.time format); None reads everything."""
    overlap_seconds: float = Field(default=300.0, ge=0)
    """How far before the watermark each pass reads again (late-committed rows, clock skew); re-read rows
    delivered before are filtered by id and modification time."""
    local_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    """The company's local currency: what an empty currency code means (Business Central)."""
    expand_lines: bool = True
    """Read invoice lines with the header (``$expand``)."""

    @model_validator(mode="after")
    def _company(self) -> Self:
        if ENTITIES[self.entity].dialect == "odata4" and not self.company_id:
            raise ValueError(f"entity {self.entity} is Business Central (OData v4): set company_id")
        return self


@dataclass(frozen=True)
class UndecodablePage:
    """A page that could not be read: becomes one DLQ record (stage decode)."""

    url: str
    body: bytes
    reason: str


def delta_key(record_id: Any, modified: datetime) -> str:
    """What ``seen`` holds for a delivered row: its id and its modification instant (UTC, ISO 8601)."""
    return f"{record_id}@{modified.isoformat()}"


def _key_time(key: str) -> datetime:
    return datetime.fromisoformat(key.rsplit("@", 1)[1])


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
    contracts: ClassVar[tuple[type[Contract], ...]] = (InvoiceV1, PartyV1, PaymentV1)
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

    def __init__(self, ctx: IntegrationContext, settings: ErpODataSettings) -> None:
        super().__init__(ctx, settings)
        self.entity = ENTITIES[settings.entity]

    @override
    def produces(self) -> tuple[type[Contract], ...]:
        return published((self.entity.contract,))

    async def open(self) -> None:
        http = self.settings.http
        if self.entity.dialect == "odata4":
            headers = {"Prefer": f"odata.maxpagesize={self.settings.page_size}", **http.headers}
            http = http.model_copy(update={"headers": headers})
        self.http = HttpClient(http, self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    def _path(self) -> str:
        s = self.settings
        base = s.service_path.strip("/")
        parts = [base] if base else []
        if self.entity.dialect == "odata4":
            parts.append(f"companies({s.company_id})")
        parts.append(s.entity)
        return "/".join(parts)

    def _params(self, bound: datetime | None) -> dict[str, str]:
        field = self.entity.modified_field
        params = {"$orderby": f"{field} asc"}
        if bound is not None:
            if self.entity.dialect == "odata4":
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
        overlap = timedelta(seconds=s.overlap_seconds)
        bound = watermark - overlap if watermark is not None else None
        loads = exact_json.loads if self.entity.dialect == "odata4" else _v2_loads
        pages = paginate(
            self.http, NextLinkPaginator(self.entity.dialect), self._path(), self._params(bound), loads=loads
        )
        while True:
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
            except PageDecodeError as exc:
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], self._position(watermark, seen))
                return
            for record in page.records:
                if not isinstance(record, dict):
                    continue  # decode() sends it to the DLQ
                try:
                    modified = normalise(record.get(self.entity.modified_field), "UTC").utc
                except MappingError:
                    continue  # map() reports it; the watermark does not move for it
                seen.add(delta_key(record.get(self.entity.id_field), modified))
                if watermark is None or modified > watermark:
                    watermark = modified
            yield Batch(page.records, self._position(watermark, seen))

    def _position(self, watermark: datetime | None, seen: set[str]) -> Position:
        if watermark is not None:
            floor = watermark - timedelta(seconds=self.settings.overlap_seconds)
            seen.intersection_update({k for k in seen if _key_time(k) >= floor})
        return {"modified_since": watermark.isoformat() if watermark else None, "seen": sorted(seen)}

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        if isinstance(raw, UndecodablePage):
            raise DecodeError(
                f"page {raw.url} is not a usable OData page: {raw.reason}; first bytes: {raw.body[:120]!r}"
            )
        if not isinstance(raw, dict):
            raise DecodeError(f"{self.settings.entity}: a record that is not a JSON object: {str(raw)[:200]}")
        return _clean(raw)

    def filter(self, record: Any) -> str | None:
        if self._seen:
            try:
                modified = normalise(record.get(self.entity.modified_field), "UTC").utc
            except MappingError:
                return None
            if delta_key(record.get(self.entity.id_field), modified) in self._seen:
                return "already delivered (same id and modification time, read again by the overlap window)"
        return None

    def identity(self, record: Any) -> tuple[str, str]:
        return (
            f"{self.settings.entity}/{record.get(self.entity.id_field)}",
            str(record.get(self.entity.modified_field) or ""),
        )

    def map(self, record: Any) -> Sequence[Contract]:
        where = f"{self.settings.entity}/{record.get(self.entity.id_field)}"
        return [MAPPERS[self.settings.entity](record, where, self.ctx.zone, self.settings.local_currency)]

    @override
    def config_warnings(self) -> list[str]:
        if self.entity.contract is PaymentV1:
            return super().config_warnings()
        return []
