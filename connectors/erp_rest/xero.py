"""ERP REST, Xero dialect: Accounting API ``Invoices`` read by ``If-Modified-Since`` and mapped to ``erp.invoice``.

Requests: ``GET Invoices?page=N&order=UpdatedDateUTC ASC`` with the headers ``xero-tenant-id`` (the
organisation) and ``If-Modified-Since: <UTC, yyyy-mm-ddThh:mm:ss>``; Xero answers 100 invoices a page (with
their ``LineItems``) and the pass ends at the first empty page. Every page goes through
``core.exact_json.loads`` (amounts are JSON numbers: ``844.30`` stays ``"844.30"``); dates are
``/Date(ms+0000)/`` (``UpdatedDateUTC`` with milliseconds; ``Date`` / ``DueDate`` the UTC calendar date they
encode). The limit headers ``X-MinLimit-Remaining``, ``X-AppMinLimit-Remaining`` and ``X-DayLimit-Remaining``
feed the upstream's shared limiter in ``core.http`` (as does a 429's ``Retry-After``): nothing here counts.

**Delta without gaps or repeats** — the family's rule (``connectors.erp_rest.odata``), adapted to what Xero
offers. Position: ``{"modified_since": <UTC instant>, "seen": ["<InvoiceID>@<UpdatedDateUTC>", ...]}``.

* ``If-Modified-Since`` has whole seconds and is inclusive: the bound sent is ``modified_since -
  overlap_seconds`` cut down to its second, so every row of the watermark's second is read again, and the
  ``seen`` keys (id *and* modification time, kept down to that same bound) filter the ones delivered before
  ("already delivered") while a row modified again (new time, new key) is delivered.
* Xero pages by page *number*: a row modified while a pass pages moves from an early page to the end, and the
  rows behind it move up one place — the row at the next page boundary is never served in this pass. So the
  watermark moves only when a pass reads to its empty page (every batch before carries the pass's starting
  watermark plus everything delivered as ``seen``: a pass cut short resumes without repeats), and not even
  then when the pass saw one invoice twice with different modification times (the sign of such a shift): the
  next pass reads the same range again and delivers only what it has not (the skipped row). Rows inserted
  behind the pass (a late commit) shift rows *down*: read twice, filtered by ``seen``; the row itself is read
  by the next pass's overlap window.

A page that is not usable JSON becomes one DLQ record (stage decode, URL and first bytes) and ends the pass
without moving the position.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final

from pydantic import Field

from inlet.connectors.erp_rest.mapping import _check_totals, _currency, _instant, _required, money, parse_date
from inlet.connectors.erp_rest.odata import UndecodablePage, delta_key
from inlet.contracts.base import Contract
from inlet.contracts.erp_invoice import InvoiceLine, InvoiceV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import DecodeError, MappingError
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.pagination import PageDecodeError, PageNumberPaginator, paginate
from inlet.core.time import normalise
from inlet.core.types import Position

__all__ = ["XERO_STATUS", "ErpXeroConnector", "ErpXeroSettings", "if_modified_since", "xero_invoice"]

XERO_STATUS: Final = {
    "DRAFT": "draft",
    "SUBMITTED": "submitted",
    "AUTHORISED": "open",
    "PAID": "paid",
    "VOIDED": "void",
    "DELETED": "deleted",
}
"""Xero invoice status → ``erp.invoice`` status: VOIDED is void, DELETED (a draft thrown away) is deleted."""
XERO_KIND: Final = {"ACCREC": "sales", "ACCPAY": "purchase"}


class ErpXeroSettings(PluginSettings):
    """Settings of a Xero invoices integration."""

    http: HttpSettings
    tenant_id: str = Field(min_length=1)
    """The organisation (``xero-tenant-id`` header; from Xero's ``/connections``)."""
    since: str | None = None
    """Initial watermark (any core.time format); None reads everything."""
    overlap_seconds: float = Field(default=300.0, ge=0)
    """How far before the watermark each pass reads again (late-committed rows, clock skew); re-read rows
    delivered before are filtered by id and modification time."""


def if_modified_since(watermark: datetime, overlap_seconds: float) -> datetime:
    """The bound a pass asks for: ``watermark - overlap`` cut down to its whole second (the header's unit)."""
    return (watermark - timedelta(seconds=overlap_seconds)).replace(microsecond=0)


def _modified(record: dict[str, Any]) -> datetime:
    return normalise(record.get("UpdatedDateUTC"), "UTC").utc


class ErpXeroConnector(Connector[ErpXeroSettings]):
    """Xero sales invoices and bills (``Invoices``) by ``If-Modified-Since`` delta without gaps or repeats."""

    name: ClassVar[str] = "erp_rest.xero"
    settings_model: ClassVar[type[PluginSettings]] = ErpXeroSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (InvoiceV1,)
    description: ClassVar[str] = "ERP over the Xero Accounting API: invoices by If-Modified-Since delta"
    # No scaffold of its own: `inlet new` scaffolds the erp_rest family from erp_rest.odata (one per family).

    http: HttpClient
    _seen: frozenset[str] = frozenset()

    async def open(self) -> None:
        http = self.settings.http
        headers = {"xero-tenant-id": self.settings.tenant_id, "Accept": "application/json", **http.headers}
        self.http = HttpClient(http.model_copy(update={"headers": headers}), self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        s = self.settings
        raw_wm = (position or {}).get("modified_since")
        if raw_wm is None and s.since is not None:
            raw_wm = normalise(s.since, self.ctx.zone).utc.isoformat()
        start = datetime.fromisoformat(raw_wm) if raw_wm else None
        seen = set((position or {}).get("seen", ()))
        headers = {}
        if start is not None:
            headers["If-Modified-Since"] = if_modified_since(start, s.overlap_seconds).strftime("%Y-%m-%dT%H:%M:%S")
        pages = paginate(
            self.http,
            PageNumberPaginator("page", records_path="Invoices"),
            "Invoices",
            {"order": "UpdatedDateUTC ASC"},
            loads=exact_json.loads,
            headers=headers,
        )
        newest, versions, shifted = start, dict[str, str](), False
        while True:
            self._seen = frozenset(seen)  # what was delivered before this page: filter() leaves those out
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
            except PageDecodeError as exc:
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], self._position(start, seen))
                return
            for record in page.records:
                if not isinstance(record, dict):
                    continue  # decode() sends it to the DLQ
                try:
                    modified = _modified(record)
                except MappingError:
                    continue  # map() reports it; the watermark does not move for it
                key = delta_key(record.get("InvoiceID"), modified)
                earlier = versions.setdefault(str(record.get("InvoiceID")), key)
                shifted = shifted or earlier != key  # modified while this pass paged: pages have shifted
                seen.add(key)
                if newest is None or modified > newest:
                    newest = modified
            if page.records:
                yield Batch(page.records, self._position(start, seen))
            else:  # the empty page: the pass is complete; the watermark moves unless pages shifted under it
                yield Batch([], self._position(start if shifted else newest, seen))

    def _position(self, watermark: datetime | None, seen: set[str]) -> Position:
        if watermark is not None:
            floor = if_modified_since(watermark, self.settings.overlap_seconds)
            seen.intersection_update({k for k in seen if datetime.fromisoformat(k.rsplit("@", 1)[1]) >= floor})
        return {"modified_since": watermark.isoformat() if watermark else None, "seen": sorted(seen)}

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        if isinstance(raw, UndecodablePage):
            raise DecodeError(
                f"page {raw.url} is not a usable Xero page: {raw.reason}; first bytes: {raw.body[:120]!r}"
            )
        if not isinstance(raw, dict):
            raise DecodeError(f"Invoices: a record that is not a JSON object: {str(raw)[:200]}")
        return raw

    def filter(self, record: Any) -> str | None:
        if self._seen:
            try:
                modified = _modified(record)
            except MappingError:
                return None
            if delta_key(record.get("InvoiceID"), modified) in self._seen:
                return "already delivered (same id and modification time, read again by the delta bound)"
        return None

    def identity(self, record: Any) -> tuple[str, str]:
        return f"Invoices/{record.get('InvoiceID')}", str(record.get("UpdatedDateUTC") or "")

    def map(self, record: Any) -> Sequence[Contract]:
        return [xero_invoice(record, f"Invoices/{record.get('InvoiceID')}")]


def xero_invoice(r: dict[str, Any], where: str) -> InvoiceV1:
    """A Xero ``Invoice`` as ``erp.invoice`` (the mapping rules of ``contracts.erp_invoice``)."""
    kind = XERO_KIND.get(str(r.get("Type")))
    if kind is None:
        raise MappingError(f"{where}: unknown Type {r.get('Type')!r} (known: {', '.join(XERO_KIND)})")
    status = XERO_STATUS.get(str(r.get("Status")))
    if status is None:
        raise MappingError(f"{where}: unknown Status {r.get('Status')!r} (known: {', '.join(XERO_STATUS)})")
    inclusive = r.get("LineAmountTypes") == "Inclusive"
    lines: list[InvoiceLine] = []
    for i, item in enumerate(r.get("LineItems") or []):
        lw = f"{where}.LineItems[{i}]"
        if item.get("LineAmount") is None:
            continue  # a description-only line carries no amount: not an invoice line
        amount = money(item.get("LineAmount"), f"{lw}.LineAmount")
        tax = money(item["TaxAmount"], f"{lw}.TaxAmount") if item.get("TaxAmount") is not None else None
        net = str(Decimal(amount) - Decimal(tax)) if inclusive and tax is not None else amount
        lines.append(
            InvoiceLine(
                line_number=len(lines) + 1,
                source_line_id=item.get("LineItemID"),
                item_number=item.get("ItemCode") or None,
                description=item.get("Description") or None,
                quantity=money(item.get("Quantity"), f"{lw}.Quantity"),
                unit_price=money(item.get("UnitAmount"), f"{lw}.UnitAmount"),
                line_amount=net,
                tax_amount=tax,
                tax_code=item.get("TaxType") or None,
            )
        )
    contact = r.get("Contact") or {}
    party = contact.get("ContactNumber") or contact.get("ContactID")
    if not party:
        raise MappingError(f"{where}: Contact has neither ContactNumber nor ContactID")
    issue = parse_date(_required(r, "Date", where), f"{where}.Date")
    assert issue is not None
    net_total = money(r.get("SubTotal"), f"{where}.SubTotal")
    tax_total = money(r.get("TotalTax"), f"{where}.TotalTax")
    gross = money(r.get("Total"), f"{where}.Total")
    number = str(_required(r, "InvoiceNumber", where))
    _check_totals(f"{kind} invoice {number}", lines, net_total, tax_total, gross)
    modified = _instant(r.get("UpdatedDateUTC"), f"{where}.UpdatedDateUTC", "UTC")
    return InvoiceV1(
        kind=kind,
        invoice_id=str(_required(r, "InvoiceID", where)),
        invoice_number=number,
        party_number=str(party),
        status=status,
        issue_date=issue,
        due_date=parse_date(r.get("DueDate"), f"{where}.DueDate"),
        currency=_currency(r.get("CurrencyCode"), None, f"{where}.CurrencyCode"),
        prices_include_tax=inclusive,
        net_amount=net_total,
        tax_amount=tax_total,
        gross_amount=gross,
        amount_due=money(r["AmountDue"], f"{where}.AmountDue") if r.get("AmountDue") is not None else None,
        lines=lines,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )
