"""ERP REST, SAP Business One Service Layer dialect: ``Invoices`` and ``BusinessPartners`` read by ``UpdateDate``
and ``UpdateTime`` and mapped to ``erp.invoice`` / ``erp.party``.

Session. The Service Layer wants a session: ``auth: {kind: session, login_url: .../b1s/v1/Login, ...}``
(``core.auth``) posts ``UserName`` / ``Password`` / ``CompanyDB``, sends the ``B1SESSION`` and ``ROUTEID``
cookies on every request, logs in again before the idle timeout (``session_timeout_seconds``) and once after a
401 ("Invalid session or session already timeout"). Nothing here knows about it.

Requests: ``GET <entity>?$filter=UpdateDate ge '<yyyy-mm-dd>'&$orderby=UpdateDate asc,UpdateTime asc,<key>
asc`` with ``Prefer: odata.maxpagesize=<page_size>``; the server answers ``{"odata.metadata", "value": [...],
"odata.nextLink": "<entity>?...&$skip=N"}`` (OData v3 JSON: the next link without ``@``, relative, skip-based),
followed until there is none (``core.pagination``'s ``odata4`` preset finds either spelling). Every page goes
through ``core.exact_json.loads``: ``DocTotal`` is an ``Edm.Double`` in the ``$metadata`` and arrives as a JSON
number, which stays the decimal text the server wrote.

**Modification time.** B1 stamps a row with two fields in the *server's naive local time*: ``UpdateDate``
(``Edm.DateTime``, always midnight: ``"2026-03-01"`` or ``"2026-03-01T00:00:00"``) and ``UpdateTime``
(``Edm.Time``: ``"14:05:09"``; some versions write the database's integer ``140509`` or the OData v3
``"PT14H05M09S"``). They are combined into one wall time and normalised by ``core.time`` in the integration's
``zone`` (the server's zone, which a customer plugin pins with ``source_zone``). A wall time repeated at the
autumn change is read as its first occurrence, one in the spring gap (which a server clock never writes) moved
forward by the gap. B1 stamps whole seconds: two changes of one row within one second look like one.

**Delta without gaps or repeats.** The Service Layer filters ``UpdateDate`` only by day (``UpdateTime`` is a
separate field), and pages by ``$skip`` over rows ordered by modification. Position: ``{"modified_since": <UTC
instant>, "seen": ["<key>@<instant>", ...]}``.

* The bound is the **whole day**: ``UpdateDate ge '<day of (modified_since - overlap_seconds), server's
  zone>'``, inclusive. Every row of that day is read again; ``seen`` (key *and* modification instant, kept
  down to the start of that day) filters what was delivered ("already delivered"), while a row modified again
  has a new key and is delivered: every modification once. ``seen`` therefore holds at most the rows modified
  since the start of the bound's day.
* ``$skip`` paging shifts under modifications: a row modified while a pass pages moves to the end, and the rows
  behind its old place move up one, so the row at the next page boundary is never served in that pass. As in
  the Xero dialect, the watermark moves only when a pass reaches its last page (every batch before carries the
  pass's starting watermark plus every key delivered, so a pass cut short resumes without repeats), and not
  even then if the pass saw one row with two modification times (the sign of a shift): the next pass reads the
  same days again and delivers only the row it missed.

A page that is not usable JSON (HTML with 200, truncated JSON, another shape) becomes one DLQ record (stage
decode, URL and first bytes) and ends the pass without moving the position: the OData dialect's machinery.

**Mapping** (``contracts.erp_invoice`` / ``contracts.erp_party`` state the fields):

* ``Invoices`` (A/R invoices, ``Document``): ``invoice_id`` = ``DocEntry``, ``invoice_number`` = ``DocNum``,
  ``party_number`` = ``CardCode``, ``issue_date`` / ``due_date`` = ``DocDate`` / ``DocDueDate`` (calendar
  dates). Amounts: B1 keeps a document's totals in the company's *local* currency (``DocTotal``, ``VatSum``,
  a line's ``LineTotal`` and ``NetTaxAmount``) and, for a document in another currency, also in that one
  (``DocTotalFc``, ``VatSumFc``, ``RowTotalFC``, ``NetTaxAmountFC``): the event carries the document's
  currency (``DocCurrency``) and its amounts; ``settings.local_currency`` says which is which. B1 states no net
  total: ``net_amount`` is ``DocTotal - VatSum``, exact. Status: ``Cancelled: tYES`` (or ``CancelStatus:
  csYes``) is **void**, whatever ``DocumentStatus`` says; else ``bost_Open`` → open, ``bost_Close`` /
  ``bost_Paid`` → paid (closed: settled). A cancellation document (``CancelStatus: csCancellation``: it
  reverses a credit note) is filtered with that reason; an unknown status is a DLQ record. ``tYES`` / ``tNO``
  are booleans, anything else in those fields a DLQ record.
* ``BusinessPartners``: ``kind`` customer for ``cCustomer``, vendor for ``cSupplier`` (a lead, ``cLid``, is
  filtered: no business partner yet); ``party_id`` / ``number`` = ``CardCode``; ``name`` = ``CardName``;
  ``party_type`` company for ``cCompany`` / ``cGovernment``, person for ``cPrivate`` / ``cEmployee``;
  ``tax_id`` = ``FederalTaxID``, else ``VatIDNum``; ``country`` = ``Country``; ``currency`` = ``Currency``
  (``##``, all currencies, is none); ``blocked`` (scope all) when ``Frozen`` is ``tYES``.

Not read: ``CreditNotes`` (B1 numbers them in series of their own whose ``DocNum`` overlaps the invoices'
— both start at 1 — while ``erp.invoice`` keys an event by kind and number: a number rule comes first) and
``IncomingPayments`` (the ``Payment`` entity has no ``UpdateDate`` / ``UpdateTime`` to read it by).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Final, Literal

from pydantic import Field
from typing_extensions import override

from inlet.connectors.erp_rest.mapping import _check_totals, _currency, _required, money, parse_date
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
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, IntegrationContext, PluginSettings
from inlet.core.errors import ConfigError, MappingError
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.pagination import NextLinkPaginator, PageDecodeError, paginate
from inlet.core.time import ClockCap, Instant, normalise
from inlet.core.time import zone as tz
from inlet.core.types import Position

__all__ = [
    "B1_DOCUMENT_STATUS",
    "B1_ENTITIES",
    "B1Entity",
    "ErpB1Connector",
    "ErpB1Settings",
    "b1_business_partner",
    "b1_invoice",
    "b1_modified",
    "bound_day",
    "yes_no",
]

B1_DOCUMENT_STATUS: Final = {"bost_Open": "open", "bost_Close": "paid", "bost_Paid": "paid"}
"""``DocumentStatus`` (``BoStatus``) of a document that is not cancelled → ``erp.invoice`` status."""
B1_CARD_TYPE: Final = {"cCustomer": "customer", "cSupplier": "vendor"}
B1_COMPANY_TYPE: Final = {"cCompany": "company", "cGovernment": "company", "cPrivate": "person", "cEmployee": "person"}
ALL_CURRENCIES: Final = "##"
_ISO_DURATION = re.compile(r"PT(?:(\d{1,2})H)?(?:(\d{1,2})M)?(?:(\d{1,2})(?:\.\d+)?S)?")


def yes_no(value: Any, where: str) -> bool:
    """``BoYesNoEnum``: ``tYES`` is True, ``tNO`` False; anything else is a MappingError."""
    if value == "tYES":
        return True
    if value == "tNO":
        return False
    raise MappingError(f"{where}: expected tYES or tNO, got {value!r}")


def _clock(value: Any, where: str) -> str | None:
    """``UpdateTime`` as ``hh:mm:ss``: ``"14:05:09"``, ``"14:05"``, ``"PT14H05M09S"`` or the integer ``140509``."""
    if value is None or value == "":
        return None
    hms: tuple[int, int, int] | None = None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 235959:
        hms = (value // 10000, value // 100 % 100, value % 100)
    elif isinstance(value, str):
        text = value.strip()
        parts = text.split(":")
        if 2 <= len(parts) <= 3 and all(p.isdigit() and len(p) <= 2 for p in parts[:2]):
            seconds = parts[2].split(".")[0] if len(parts) == 3 else "0"
            if seconds.isdigit():
                hms = (int(parts[0]), int(parts[1]), int(seconds))
        elif (m := _ISO_DURATION.fullmatch(text)) and text != "PT":
            hms = (int(m[1] or 0), int(m[2] or 0), int(m[3] or 0))
    if hms is None or hms[0] > 23 or hms[1] > 59 or hms[2] > 59:
        raise MappingError(f"{where}: {value!r} is not a time of day (hh:mm:ss, PTnHnMnS or hhmmss)")
    return f"{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}"


def b1_modified(record: dict[str, Any], zone: str | None, where: str = "") -> Instant:
    """``UpdateDate`` + ``UpdateTime`` (the server's wall time) as an instant, through ``core.time`` in ``zone``.

    Without ``UpdateTime`` the start of ``UpdateDate`` (precision day). MappingError when ``UpdateDate`` is
    missing or either field is not what B1 writes."""
    day = parse_date(_required(record, "UpdateDate", where), f"{where}.UpdateDate")
    assert day is not None
    clock = _clock(record.get("UpdateTime"), f"{where}.UpdateTime")
    text = day.isoformat() if clock is None else f"{day.isoformat()}T{clock}"
    try:
        return normalise(text, zone, ambiguous="earliest", nonexistent="shift_forward")
    except MappingError as exc:
        raise MappingError(f"{where}: UpdateDate/UpdateTime {text}: {exc}") from None


def bound_day(watermark: datetime, overlap_seconds: float, zone: str) -> date:
    """The day a pass asks for (``UpdateDate ge``): the server's calendar day of ``watermark - overlap``."""
    return (watermark - timedelta(seconds=overlap_seconds)).astimezone(tz(zone)).date()


def _day_start(day: date, zone: str) -> datetime:
    return normalise(day.isoformat(), zone).utc


# --- mapping ---------------------------------------------------------------------------------------------------


def _amount(r: dict[str, Any], local_key: str, foreign_key: str, foreign: bool, where: str) -> str:
    key = foreign_key if foreign else local_key
    return money(r.get(key), f"{where}.{key}")


def b1_invoice(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
    """An A/R invoice (``Document`` with ``DocumentLines``) as ``erp.invoice``, in the document's currency."""
    currency = _currency(r.get("DocCurrency"), local, f"{where}.DocCurrency")
    foreign = local is not None and currency != local
    cancelled = yes_no(r.get("Cancelled", "tNO"), f"{where}.Cancelled") or r.get("CancelStatus") == "csYes"
    status = "void" if cancelled else B1_DOCUMENT_STATUS.get(str(r.get("DocumentStatus")))
    if status is None:
        raise MappingError(
            f"{where}: unknown DocumentStatus {r.get('DocumentStatus')!r} (known: {', '.join(B1_DOCUMENT_STATUS)})"
        )
    lines: list[InvoiceLine] = []
    for i, line in enumerate(r.get("DocumentLines") or []):
        lw = f"{where}.DocumentLines[{i}]"
        tax_key = "NetTaxAmountFC" if foreign else "NetTaxAmount"
        lines.append(
            InvoiceLine(
                line_number=len(lines) + 1,
                source_line_id=str(line["LineNum"]) if line.get("LineNum") is not None else None,
                item_number=line.get("ItemCode") or None,
                description=line.get("ItemDescription") or None,
                quantity=money(line.get("Quantity"), f"{lw}.Quantity"),
                unit_of_measure=line.get("UoMCode") or line.get("MeasureUnit") or None,
                unit_price=money(line.get("Price"), f"{lw}.Price"),
                line_amount=_amount(line, "LineTotal", "RowTotalFC", foreign, lw),
                tax_amount=money(line[tax_key], f"{lw}.{tax_key}") if line.get(tax_key) is not None else None,
                tax_rate=money(line["TaxPercentagePerRow"], f"{lw}.TaxPercentagePerRow")
                if line.get("TaxPercentagePerRow") is not None
                else None,
                tax_code=line.get("VatGroup") or line.get("TaxCode") or None,
            )
        )
    issue = parse_date(_required(r, "DocDate", where), f"{where}.DocDate")
    assert issue is not None
    gross = _amount(r, "DocTotal", "DocTotalFc", foreign, where)
    tax = _amount(r, "VatSum", "VatSumFc", foreign, where)
    net = str(Decimal(gross) - Decimal(tax))
    number = str(_required(r, "DocNum", where))
    _check_totals(f"invoice {number}", lines, net, tax, gross)
    modified = b1_modified(r, zone, where)
    return InvoiceV1(
        kind="sales",
        invoice_id=str(_required(r, "DocEntry", where)),
        invoice_number=number,
        party_number=str(_required(r, "CardCode", where)),
        status=status,
        issue_date=issue,
        due_date=parse_date(r.get("DocDueDate"), f"{where}.DocDueDate"),
        currency=currency,
        net_amount=net,
        tax_amount=tax,
        gross_amount=gross,
        lines=lines,
        last_modified=modified.utc,
        last_modified_precision=modified.precision,
    )


def b1_business_partner(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> PartyV1:
    """A customer or supplier (``BusinessPartner``) as ``erp.party``."""
    kind = B1_CARD_TYPE.get(str(r.get("CardType")))
    if kind is None:
        raise MappingError(f"{where}: CardType {r.get('CardType')!r} is no customer or supplier")
    company = r.get("CompanyPrivate")
    if company is not None and company not in B1_COMPANY_TYPE:
        raise MappingError(f"{where}: unknown CompanyPrivate {company!r} (known: {', '.join(B1_COMPANY_TYPE)})")
    blocked = yes_no(r.get("Frozen", "tNO"), f"{where}.Frozen")
    code = r.get("Currency")
    modified = b1_modified(r, zone, where)
    return PartyV1(
        kind=kind,
        party_id=str(_required(r, "CardCode", where)),
        number=str(_required(r, "CardCode", where)),
        name=str(r.get("CardName") or ""),
        party_type=B1_COMPANY_TYPE.get(company) if company else None,
        tax_id=r.get("FederalTaxID") or r.get("VatIDNum") or None,
        country=(r.get("Country") or "").strip().upper() or None,
        currency=None if code in (None, "", ALL_CURRENCIES) else _currency(code, local, f"{where}.Currency"),
        blocked=blocked,
        block_scope="all" if blocked else None,
        last_modified=modified.utc,
        last_modified_precision=modified.precision,
    )


# --- the connector -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class B1Entity:
    """How one Service Layer entity set is read: its key, what it maps to and with what."""

    key: str
    contract: type[Contract]
    mapper: Callable[[dict[str, Any], str, str | None, str | None], Contract]


B1_ENTITIES: Final[dict[str, B1Entity]] = {
    "Invoices": B1Entity("DocEntry", InvoiceV1, b1_invoice),
    "BusinessPartners": B1Entity("CardCode", PartyV1, b1_business_partner),
}
"""Entity sets the dialect reads (policy as data)."""


class ErpB1Settings(PluginSettings):
    """Settings of a SAP Business One Service Layer integration."""

    http: HttpSettings
    """``base_url`` ends in ``/b1s/v1``; ``auth`` is ``kind: session`` with ``login_url`` ``<base_url>/Login``."""
    entity: Literal["Invoices", "BusinessPartners"]
    """The entity set read (one integration per set): A/R ``Invoices`` or ``BusinessPartners``."""
    local_currency: str = Field(pattern=r"^[A-Z]{3}$")
    """The company's local currency: B1 states every document's totals in it, and a document in another
    currency also in that one (``DocTotalFc``), which is what the event then carries."""
    page_size: int = Field(default=100, ge=1, le=5000)
    """Records per page asked for (``Prefer: odata.maxpagesize``; the Service Layer's default is 20)."""
    since: str | None = None
    """Initial watermark (any core.time format, wall time in the integration's zone); None reads everything."""
    overlap_seconds: float = Field(default=300.0, ge=0)
    """How far before the watermark a pass reads again: the bound is the whole server day of ``watermark -
    overlap``; re-read rows delivered before are filtered by key and modification time."""
    max_clock_skew_seconds: float = Field(default=3600.0, ge=0)
    """How far past this host's clock a row's modification time may lie and still move the watermark. A row dated
    later (a server clock years ahead, a migration bug) is delivered and remembered in ``seen`` but does not move
    it: one such value would otherwise move the watermark past every change still to come, and the integration
    would stop without an error."""


class ErpB1Connector(Connector[ErpB1Settings]):
    """SAP Business One invoices or business partners by ``UpdateDate``/``UpdateTime`` delta without gaps."""

    name: ClassVar[str] = "erp_rest.b1"
    settings_model: ClassVar[type[PluginSettings]] = ErpB1Settings
    contracts: ClassVar[tuple[type[Contract], ...]] = (InvoiceV1, PartyV1)
    description: ClassVar[str] = "ERP over the SAP Business One Service Layer: delta on UpdateDate/UpdateTime"
    # No scaffold of its own: `inlet new` scaffolds the erp_rest family from erp_rest.odata (one per family).

    http: HttpClient
    _seen: frozenset[str] = frozenset()

    def __init__(self, ctx: IntegrationContext, settings: ErpB1Settings) -> None:
        super().__init__(ctx, settings)
        if ctx.zone is None:
            raise ConfigError(
                f"{self.name}: UpdateDate/UpdateTime are the server's wall time: set zone to the server's zone",
                key="zone",
            )
        self.zone: str = ctx.zone
        self.entity = B1_ENTITIES[settings.entity]

    @override
    def produces(self) -> tuple[type[Contract], ...]:
        return published((self.entity.contract,))

    async def open(self) -> None:
        http = self.settings.http
        headers = {"Prefer": f"odata.maxpagesize={self.settings.page_size}", **http.headers}
        self.http = HttpClient(http.model_copy(update={"headers": headers}), self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    def _modified(self, record: dict[str, Any]) -> datetime:
        return b1_modified(record, self.zone).utc

    def _key(self, record: dict[str, Any], modified: datetime) -> str:
        return delta_key(record.get(self.entity.key), modified)

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        s = self.settings
        raw_wm = (position or {}).get("modified_since")
        if raw_wm is None and s.since is not None:
            raw_wm = normalise(s.since, self.zone).utc.isoformat()
        start = datetime.fromisoformat(raw_wm) if raw_wm else None
        seen = set((position or {}).get("seen", ()))
        params = {"$orderby": f"UpdateDate asc,UpdateTime asc,{self.entity.key} asc"}
        if start is not None:
            params["$filter"] = f"UpdateDate ge '{bound_day(start, s.overlap_seconds, self.zone).isoformat()}'"
        pages = paginate(self.http, NextLinkPaginator("odata4"), s.entity, params, loads=exact_json.loads)
        newest, versions, shifted = start, dict[str, str](), False
        cap = ClockCap.from_now(s.max_clock_skew_seconds)
        while True:
            self._seen = frozenset(seen)  # what was delivered before this page: filter() leaves those out
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                # The last page was read: the pass is complete; the watermark moves unless pages shifted under it.
                yield Batch([], self._position(start if shifted else newest, seen))
                return
            except PageDecodeError as exc:
                yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], self._position(start, seen))
                return
            for record in page.records:
                if not isinstance(record, dict):
                    continue  # decode() sends it to the DLQ
                try:
                    modified = self._modified(record)
                except MappingError:
                    continue  # map() reports it; the watermark does not move for it
                key = self._key(record, modified)
                earlier = versions.setdefault(str(record.get(self.entity.key)), key)
                shifted = shifted or earlier != key  # modified while this pass paged: $skip pages have shifted
                seen.add(key)
                if not cap.past(modified) and (newest is None or modified > newest):
                    newest = modified
            cap.warn(self.log, entity=s.entity)
            yield Batch(page.records, self._position(start, seen))

    @override
    def describe_position(self, position: Position | None) -> str:
        s = self.settings
        return describe_watermark(position, s.entity, s.since, s.overlap_seconds, by_day=True)

    def _position(self, watermark: datetime | None, seen: set[str]) -> Position:
        floor = None
        if watermark is not None:
            floor = _day_start(bound_day(watermark, self.settings.overlap_seconds, self.zone), self.zone)
        return delta_position(watermark, seen, floor)

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        return page_record(raw, "Service Layer", self.settings.entity)

    def filter(self, record: Any) -> str | None:
        if record.get("CancelStatus") == "csCancellation":
            return "cancellation document: it reverses a credit note (the cancelled document arrives as void)"
        if record.get("CardType") == "cLid":
            return "lead (CardType cLid): not a customer or supplier yet"
        if self._seen:
            try:
                modified = self._modified(record)
            except MappingError:
                return None
            if self._key(record, modified) in self._seen:
                return "already delivered (same key, UpdateDate and UpdateTime; read again by the day bound)"
        return None

    def identity(self, record: Any) -> tuple[str, str]:
        try:
            version = b1_modified(record, self.zone).isoformat()
        except MappingError:
            version = ""
        return f"{self.settings.entity}/{record.get(self.entity.key)}", version

    def map(self, record: Any) -> Sequence[Contract]:
        where = f"{self.settings.entity}/{record.get(self.entity.key)}"
        return [self.entity.mapper(record, where, self.zone, self.settings.local_currency)]
