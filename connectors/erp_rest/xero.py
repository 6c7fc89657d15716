"""ERP REST, Xero dialect: Accounting API ``Invoices``, ``CreditNotes``, ``Payments`` and ``Contacts`` read by
``If-Modified-Since`` and mapped to ``erp.invoice`` (credit notes negative: ``mapping.CREDIT_NOTE_RULE``),
``erp.payment`` and ``erp.party``; one integration per endpoint (``settings.endpoint``).

Requests: ``GET <endpoint>?page=N&order=UpdatedDateUTC ASC`` (``Contacts`` also ``includeArchived=true``:
without it Xero leaves archived contacts out) with the headers ``xero-tenant-id`` (the organisation) and
``If-Modified-Since: <UTC, yyyy-mm-ddThh:mm:ss>``; Xero answers 100 records a page (invoices and credit notes
with their ``LineItems``) and the pass ends at the first empty page. Every page goes through
``core.exact_json.loads`` (amounts are JSON numbers: ``844.30`` stays ``"844.30"``); dates are
``/Date(ms+0000)/`` (``UpdatedDateUTC`` with milliseconds; ``Date`` / ``DueDate`` the UTC calendar date they
encode). The limit headers ``X-MinLimit-Remaining``, ``X-AppMinLimit-Remaining`` and ``X-DayLimit-Remaining``
feed the upstream's shared limiter in ``core.http`` (as does a 429's ``Retry-After``): nothing here counts.

**Delta without gaps or repeats** — the family's rule (``connectors.erp_rest.odata``), adapted to what Xero
offers. Position: ``{"modified_since": <UTC instant>, "seen": ["<record id>@<UpdatedDateUTC>", ...]}``.

* ``If-Modified-Since`` has whole seconds and is inclusive: the bound sent is ``modified_since -
  overlap_seconds`` cut down to its second, so every row of the watermark's second is read again, and the
  ``seen`` keys (id *and* modification time, kept down to that same bound) filter the ones delivered before
  ("already delivered") while a row modified again (new time, new key) is delivered.
* Xero pages by page *number*: a row modified while a pass pages moves from an early page to the end, and the
  rows behind it move up one place — the row at the next page boundary is never served in this pass. So the
  watermark moves only when a pass reads to its empty page (every batch before carries the pass's starting
  watermark plus everything delivered as ``seen``: a pass cut short resumes without repeats), and not even
  then when the pass saw one record twice with different modification times (the sign of such a shift): the
  next pass reads the same range again and delivers only what it has not (the skipped row). Rows inserted
  behind the pass (a late commit) shift rows *down*: read twice, filtered by ``seen``; the row itself is read
  by the next pass's overlap window.

A page that is not usable JSON becomes one DLQ record (stage decode, URL and first bytes) and ends the pass
without moving the position. Voided, deleted and archived records are events with that status, never dropped;
a contact that is neither customer nor supplier (no invoice or bill yet) is filtered with that reason.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal

from pydantic import Field
from typing_extensions import override

from inlet.connectors.erp_rest.mapping import (
    _check_totals,
    _currency,
    _instant,
    _required,
    _same,
    credit,
    money,
    parse_date,
)
from inlet.connectors.erp_rest.odata import (
    UndecodablePage,
    delta_key,
    delta_position,
    describe_watermark,
    page_record,
)
from inlet.contracts.base import Contract, published
from inlet.contracts.erp_invoice import InvoiceLine, InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import InvoiceAllocation, PaymentV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import MappingError
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.pagination import PageDecodeError, PageNumberPaginator, paginate
from inlet.core.time import ClockCap, normalise
from inlet.core.types import Position

__all__ = [
    "XERO_ENDPOINTS",
    "XERO_STATUS",
    "ErpXeroConnector",
    "ErpXeroSettings",
    "XeroEndpoint",
    "if_modified_since",
    "xero_contact",
    "xero_credit_note",
    "xero_invoice",
    "xero_payment",
]

XERO_STATUS: Final = {
    "DRAFT": "draft",
    "SUBMITTED": "submitted",
    "AUTHORISED": "open",
    "PAID": "paid",
    "VOIDED": "void",
    "DELETED": "deleted",
}
"""Xero invoice and credit note status → ``erp.invoice`` status: VOIDED is void, DELETED (a draft thrown away) is
deleted."""
XERO_KIND: Final = {"ACCREC": "sales", "ACCPAY": "purchase"}
XERO_CREDIT_KIND: Final = {"ACCRECCREDIT": "sales", "ACCPAYCREDIT": "purchase"}
XERO_PAYMENT_TYPE: Final = {
    "ACCRECPAYMENT": ("received", False),
    "ACCPAYPAYMENT": ("made", False),
    "ARCREDITPAYMENT": ("received", True),
    "AROVERPAYMENTPAYMENT": ("received", True),
    "ARPREPAYMENTPAYMENT": ("received", True),
    "APCREDITPAYMENT": ("made", True),
    "APOVERPAYMENTPAYMENT": ("made", True),
    "APPREPAYMENTPAYMENT": ("made", True),
}
"""Xero ``PaymentType`` → (``erp.payment`` direction, is a refund). A refund (of a credit note, an overpayment or
a prepayment) is money going back: the direction of its ledger side with a negative amount (``CREDIT_NOTE_RULE``)."""
XERO_PAYMENT_STATUS: Final = {"AUTHORISED": "posted", "DELETED": "deleted"}
XERO_CONTACT_STATUS: Final = {"ACTIVE": False, "ARCHIVED": True, "GDPRREQUEST": True}
"""Xero ``ContactStatus`` → blocked (scope ``all``): an archived contact, or one whose erasure was asked for."""


@dataclass(frozen=True)
class XeroEndpoint:
    """How one Accounting API endpoint is read: its records' id field, what it maps to, extra query parameters."""

    id_field: str
    contract: type[Contract]
    params: Mapping[str, str] = field(default_factory=dict)


XERO_ENDPOINTS: Final[dict[str, XeroEndpoint]] = {
    "Invoices": XeroEndpoint("InvoiceID", InvoiceV1),
    "CreditNotes": XeroEndpoint("CreditNoteID", InvoiceV1),
    "Payments": XeroEndpoint("PaymentID", PaymentV1),
    "Contacts": XeroEndpoint("ContactID", PartyV1, {"includeArchived": "true"}),
}
"""Endpoints the dialect reads (policy as data); each pages by ``page`` and honours ``If-Modified-Since``."""
XeroEndpointName = Literal["Invoices", "CreditNotes", "Payments", "Contacts"]


class ErpXeroSettings(PluginSettings):
    """Settings of a Xero integration (one endpoint)."""

    http: HttpSettings
    tenant_id: str = Field(min_length=1)
    """The organisation (``xero-tenant-id`` header; from Xero's ``/connections``)."""
    endpoint: XeroEndpointName = "Invoices"
    """What is read: ``Invoices`` (sales invoices and bills), ``CreditNotes`` (negative ``erp.invoice``),
    ``Payments`` (``erp.payment``) or ``Contacts`` (``erp.party``, one event per role)."""
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


def if_modified_since(watermark: datetime, overlap_seconds: float) -> datetime:
    """The bound a pass asks for: ``watermark - overlap`` cut down to its whole second (the header's unit)."""
    return (watermark - timedelta(seconds=overlap_seconds)).replace(microsecond=0)


def _modified(record: dict[str, Any]) -> datetime:
    return normalise(record.get("UpdatedDateUTC"), "UTC").utc


class ErpXeroConnector(Connector[ErpXeroSettings]):
    """One Xero endpoint (invoices, credit notes, payments or contacts) by ``If-Modified-Since`` delta without
    gaps or repeats."""

    name: ClassVar[str] = "erp_rest.xero"
    settings_model: ClassVar[type[PluginSettings]] = ErpXeroSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (InvoiceV1, PartyV1, PaymentV1)
    description: ClassVar[str] = (
        "ERP over the Xero Accounting API: invoices, credit notes, payments or contacts by If-Modified-Since delta"
    )
    zone_needed: ClassVar[str] = "payment dates (Payments) are read as the start of that day in the organisation's zone"
    # No scaffold of its own: `inlet new` scaffolds the erp_rest family from erp_rest.odata (one per family).

    http: HttpClient
    _seen: frozenset[str] = frozenset()

    @property
    def endpoint(self) -> XeroEndpoint:
        return XERO_ENDPOINTS[self.settings.endpoint]

    @override
    def produces(self) -> tuple[type[Contract], ...]:
        return published((self.endpoint.contract,))

    @override
    def config_warnings(self) -> list[str]:
        return super().config_warnings() if self.settings.endpoint == "Payments" else []

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
        name, id_field = s.endpoint, self.endpoint.id_field
        pages = paginate(
            self.http,
            PageNumberPaginator("page", records_path=name),
            name,
            {"order": "UpdatedDateUTC ASC", **self.endpoint.params},
            loads=exact_json.loads,
            headers=headers,
        )
        newest, versions, shifted = start, dict[str, str](), False
        cap = ClockCap.from_now(s.max_clock_skew_seconds)
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
                key = delta_key(record.get(id_field), modified)
                earlier = versions.setdefault(str(record.get(id_field)), key)
                shifted = shifted or earlier != key  # modified while this pass paged: pages have shifted
                seen.add(key)
                if not cap.past(modified) and (newest is None or modified > newest):
                    newest = modified
            cap.warn(self.log, endpoint=name)
            if page.records:
                yield Batch(page.records, self._position(start, seen))
            else:  # the empty page: the pass is complete; the watermark moves unless pages shifted under it
                yield Batch([], self._position(start if shifted else newest, seen))

    @override
    def describe_position(self, position: Position | None) -> str:
        s = self.settings
        return describe_watermark(position, s.endpoint, s.since, s.overlap_seconds)

    def _position(self, watermark: datetime | None, seen: set[str]) -> Position:
        floor = None if watermark is None else if_modified_since(watermark, self.settings.overlap_seconds)
        return delta_position(watermark, seen, floor)

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        return page_record(raw, "Xero", self.settings.endpoint)

    def filter(self, record: Any) -> str | None:
        if self._seen:
            try:
                modified = _modified(record)
            except MappingError:
                return None
            if delta_key(record.get(self.endpoint.id_field), modified) in self._seen:
                return "already delivered (same id and modification time, read again by the delta bound)"
        if self.settings.endpoint == "Contacts" and record.get("IsCustomer") is record.get("IsSupplier") is False:
            return "a contact that is neither customer nor supplier (no invoice or bill raised against it yet)"
        return None

    def identity(self, record: Any) -> tuple[str, str]:
        return self._where(record), str(record.get("UpdatedDateUTC") or "")

    def _where(self, record: Any) -> str:
        return f"{self.settings.endpoint}/{record.get(self.endpoint.id_field)}"

    def map(self, record: Any) -> Sequence[Contract]:
        where = self._where(record)
        match self.settings.endpoint:
            case "Invoices":
                return [xero_invoice(record, where)]
            case "CreditNotes":
                return [xero_credit_note(record, where)]
            case "Payments":
                return [xero_payment(record, where, self.ctx.zone)]
            case "Contacts":
                return xero_contact(record, where)


def xero_invoice(r: dict[str, Any], where: str) -> InvoiceV1:
    """A Xero ``Invoice`` as ``erp.invoice`` (the mapping rules of ``contracts.erp_invoice``)."""
    return _document(r, where, XERO_KIND, "InvoiceID", "InvoiceNumber", "AmountDue", _same)


def xero_credit_note(r: dict[str, Any], where: str) -> InvoiceV1:
    """A Xero ``CreditNote`` (ACCRECCREDIT, ACCPAYCREDIT) as a negative ``erp.invoice`` of its kind
    (``mapping.CREDIT_NOTE_RULE``); ``amount_due`` is the credit not yet used (``RemainingCredit``), negated."""
    return _document(r, where, XERO_CREDIT_KIND, "CreditNoteID", "CreditNoteNumber", "RemainingCredit", credit)


def _document(
    r: dict[str, Any],
    where: str,
    kinds: dict[str, str],
    id_key: str,
    number_key: str,
    due_key: str,
    sign: Callable[[str], str],
) -> InvoiceV1:
    kind = kinds.get(str(r.get("Type")))
    if kind is None:
        raise MappingError(f"{where}: unknown Type {r.get('Type')!r} (known: {', '.join(kinds)})")
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
                quantity=sign(money(item.get("Quantity"), f"{lw}.Quantity")),
                unit_price=money(item.get("UnitAmount"), f"{lw}.UnitAmount"),
                line_amount=sign(net),
                tax_amount=sign(tax) if tax is not None else None,
                tax_code=item.get("TaxType") or None,
            )
        )
    contact = r.get("Contact") or {}
    party = contact.get("ContactNumber") or contact.get("ContactID")
    if not party:
        raise MappingError(f"{where}: Contact has neither ContactNumber nor ContactID")
    issue = parse_date(_required(r, "Date", where), f"{where}.Date")
    assert issue is not None
    net_total = sign(money(r.get("SubTotal"), f"{where}.SubTotal"))
    tax_total = sign(money(r.get("TotalTax"), f"{where}.TotalTax"))
    gross = sign(money(r.get("Total"), f"{where}.Total"))
    number = str(_required(r, number_key, where))
    _check_totals(
        f"{kind} {'credit note' if sign is credit else 'invoice'} {number}", lines, net_total, tax_total, gross
    )
    modified = _instant(r.get("UpdatedDateUTC"), f"{where}.UpdatedDateUTC", "UTC")
    return InvoiceV1(
        kind=kind,
        invoice_id=str(_required(r, id_key, where)),
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
        amount_due=sign(money(r[due_key], f"{where}.{due_key}")) if r.get(due_key) is not None else None,
        lines=lines,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )


def _party_number(contact: Any) -> str | None:
    """What ``erp.invoice`` and ``erp.payment`` name a party by: ``ContactNumber``, else ``ContactID``."""
    if not isinstance(contact, dict):
        return None
    return str(contact.get("ContactNumber") or contact.get("ContactID") or "") or None


def xero_payment(r: dict[str, Any], where: str, zone: str | None) -> PaymentV1:
    """A Xero ``Payment`` as ``erp.payment``: the document it pays (``Invoice``, ``CreditNote``, ``Prepayment``
    or ``Overpayment``) gives the currency, the party and the one allocation (by number, when it has one);
    ``Date`` is a calendar date, read as the start of that day in the organisation's ``zone``; a refund is
    negative (:data:`XERO_PAYMENT_TYPE`); ``IsReconciled`` (bank reconciliation) is not carried."""
    kind = XERO_PAYMENT_TYPE.get(str(r.get("PaymentType")))
    if kind is None:
        raise MappingError(
            f"{where}: unknown PaymentType {r.get('PaymentType')!r} (known: {', '.join(XERO_PAYMENT_TYPE)})"
        )
    direction, refund = kind
    status = XERO_PAYMENT_STATUS.get(str(r.get("Status")))
    if status is None:
        raise MappingError(f"{where}: unknown Status {r.get('Status')!r} (known: {', '.join(XERO_PAYMENT_STATUS)})")
    doc: dict[str, Any] = next(
        (d for key in ("Invoice", "CreditNote", "Prepayment", "Overpayment") if isinstance(d := r.get(key), dict)),
        {},
    )
    amount = money(r.get("Amount"), f"{where}.Amount")
    if refund:
        amount = credit(amount)
    day = parse_date(_required(r, "Date", where), f"{where}.Date")
    assert day is not None
    paid = _instant(day.isoformat(), f"{where}.Date", zone)
    assert paid is not None
    number = doc.get("InvoiceNumber") or doc.get("CreditNoteNumber")
    modified = _instant(r.get("UpdatedDateUTC"), f"{where}.UpdatedDateUTC", "UTC")
    return PaymentV1(
        direction=direction,
        payment_id=str(_required(r, "PaymentID", where)),
        payment_number=None,
        party_number=_party_number(doc.get("Contact")),
        status=status,
        amount=amount,
        currency=_currency(
            doc.get("CurrencyCode") or r.get("CurrencyCode"), None, f"{where}: the paid document's CurrencyCode"
        ),
        paid_at=paid.utc,
        paid_at_precision=paid.precision,
        invoices=[InvoiceAllocation(invoice_number=str(number), amount=amount)] if number else [],
        method=None,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )


def _country(addresses: Any) -> str | None:
    """An ISO 3166-1 alpha-2 code from the ``POBOX`` address, else the ``STREET`` one; Xero's ``Country`` is free
    text, so a country *name* is not guessed at (None)."""
    by_type = {a.get("AddressType"): a for a in addresses or () if isinstance(a, dict)}
    for kind in ("POBOX", "STREET"):
        value = str((by_type.get(kind) or {}).get("Country") or "").strip()
        if value:
            return value.upper() if re.fullmatch(r"[A-Za-z]{2}", value) else None
    return None


def xero_contact(r: dict[str, Any], where: str) -> list[PartyV1]:
    """A Xero ``Contact`` as ``erp.party``: one event per role (customer when ``IsCustomer``, vendor when
    ``IsSupplier``); ``ARCHIVED`` and ``GDPRREQUEST`` are blocked (scope ``all``); the rest of the mapping rules
    of ``contracts.erp_party``. A contact with neither role is left out by the connector's filter."""
    status = str(_required(r, "ContactStatus", where))
    if status not in XERO_CONTACT_STATUS:
        raise MappingError(f"{where}: unknown ContactStatus {status!r} (known: {', '.join(XERO_CONTACT_STATUS)})")
    blocked = XERO_CONTACT_STATUS[status]
    party_id = str(_required(r, "ContactID", where))
    modified = _instant(r.get("UpdatedDateUTC"), f"{where}.UpdatedDateUTC", "UTC")
    currency = r.get("DefaultCurrency")
    kinds = [kind for kind, flag in (("customer", "IsCustomer"), ("vendor", "IsSupplier")) if r.get(flag)]
    if not kinds:
        raise MappingError(f"{where}: neither IsCustomer nor IsSupplier")
    return [
        PartyV1(
            kind=kind,
            party_id=party_id,
            number=str(r.get("ContactNumber") or party_id),
            name=str(r.get("Name") or ""),
            tax_id=r.get("TaxNumber") or None,
            country=_country(r.get("Addresses")),
            currency=_currency(currency, None, f"{where}.DefaultCurrency") if currency else None,
            blocked=blocked,
            block_scope="all" if blocked else None,
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )
        for kind in kinds
    ]
