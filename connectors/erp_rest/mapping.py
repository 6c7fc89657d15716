"""ERP records (OData v4 Business Central, OData v2 SAP S/4HANA) to ``erp.invoice`` / ``erp.party`` / ``erp.payment``.

Pure functions. Money never goes through float: a JSON number arrives from :func:`core.exact_json.loads` as an
int, an exact Decimal or a float whose ``repr`` is what the JSON wrote, and :func:`money` turns each into the
decimal string the JSON wrote (OData v2 sends decimals as strings already: they are checked, not converted).
Totals that do not add up (lines vs. net, net + tax vs. gross) are **flagged** with a warning naming the
document, never "fixed". Business Central's blank date ``0001-01-01`` is no date (None); empty GUIDs were
turned into null by the connector's ``decode`` before mapping.

**Credit notes are negative** (:data:`CREDIT_NOTE_RULE`, the one sign rule of ``erp.invoice``): the ERPs write a
credit note's amounts positive (Xero ``CreditNotes``, Business Central ``salesCreditMemos`` /
``purchaseCreditMemos``, SAP credit memos); the event is an ``erp.invoice`` of the same kind with the signs of
its amounts changed by :func:`credit` — nothing else about the numbers changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import structlog

from inlet.contracts.erp_invoice import InvoiceLine, InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import InvoiceAllocation, PaymentV1
from inlet.core.errors import LeftOut, MappingError
from inlet.core.exact_json import number_text
from inlet.core.time import Instant, normalise

__all__ = [
    "BC_STATUS",
    "CREDIT_NOTE_RULE",
    "EMPTY_GUID",
    "EXACT_STATUS",
    "MAPPERS",
    "SAP_BP_CATEGORY",
    "Mapper",
    "credit",
    "money",
    "parse_date",
    "sap_bp_modified",
]

log = structlog.get_logger("inlet.erp_rest")

EMPTY_GUID: Final = "00000000-0000-0000-0000-000000000000"
BC_BLANK_DATE: Final = "0001-01-01"
BC_STATUS: Final = {
    "Draft": "draft",
    "In Review": "submitted",
    "Open": "open",
    "Paid": "paid",
    "Canceled": "void",
    "Corrective": "void",
}
BC_BLOCK: Final = {"Ship": "ship", "Invoice": "invoice", "Payment": "payment", "All": "all"}

Mapper = Callable[[dict[str, Any], str, str | None, str | None], Any]
"""``(record, where, zone, local currency) -> contract instance``."""


def money(value: Any, where: str) -> str:
    """A JSON number or decimal string as the plain decimal string it was written as; MappingError otherwise."""
    if isinstance(value, bool) or value is None:
        raise MappingError(f"{where}: expected an amount, got {value!r}")
    if isinstance(value, int | float | Decimal):
        try:
            return number_text(value)
        except ValueError as exc:
            raise MappingError(f"{where}: {exc}") from None
    if isinstance(value, str):
        try:
            Decimal(value.strip())
        except InvalidOperation:
            raise MappingError(f"{where}: {value!r} is not a decimal amount") from None
        return value.strip()
    raise MappingError(f"{where}: expected an amount, got {type(value).__name__}")


CREDIT_NOTE_RULE: Final = (
    "a credit note is an erp.invoice of its kind (sales / purchase) with every amount's sign changed: net, tax, "
    "gross, amount due, and each line's quantity, line amount and tax amount; unit prices and tax rates keep the "
    "ERP's values, so quantity x unit price is still the line amount"
)
"""``erp.invoice`` 1.0 has no document type (its schema is closed: a new field is a new major), so the sign says
it: a credit note nets against the invoices of its party by plain addition. The ERP's digits and scale are kept
(``34.50`` → ``"-34.50"``); zero stays ``"0"``; an amount the ERP writes negative on a credit note becomes
positive — the sign is changed, never forced. Refunds of credit notes (Xero's credit, overpayment and
prepayment payments) follow: an ``erp.payment`` of the ledger side the money came from, with a negative amount."""


def credit(amount: str) -> str:
    """The decimal string ``amount`` with its sign changed, digits and scale as written (``"34.50"`` →
    ``"-34.50"``, ``"-2"`` → ``"2"``, ``"0.00"`` stays ``"0.00"``): text, so never through a float."""
    if amount.startswith("-"):
        return amount[1:]
    return amount if Decimal(amount) == 0 else f"-{amount}"


def _same(amount: str) -> str:
    """The sign of an invoice: as the ERP writes it."""
    return amount


def parse_date(value: Any, where: str) -> date | None:
    """A calendar date: ``YYYY-MM-DD`` (BC's blank ``0001-01-01`` is None) or ``/Date(ms)/`` read as its UTC date."""
    if value is None or value in ("", BC_BLANK_DATE):
        return None
    if isinstance(value, str) and value.startswith(("/Date(", "\\/Date(")):
        return normalise(value, "UTC").utc.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]) if len(value) == 10 else datetime.fromisoformat(value).date()
        except ValueError:
            pass
    raise MappingError(f"{where}: {value!r} is not a date")


def _instant(value: Any, where: str, zone: str | None) -> Instant | None:
    if value in (None, ""):
        return None
    try:
        return normalise(value, zone)
    except MappingError as exc:
        raise MappingError(f"{where}: {exc}") from None


def _currency(code: Any, local: str | None, where: str) -> str:
    if isinstance(code, str) and code.strip():
        return code.strip().upper()
    if local is None:
        raise MappingError(
            f"{where}: no currency code (empty means the company's local currency); set settings.local_currency"
        )
    return local


def _required(record: dict[str, Any], key: str, where: str) -> Any:
    value = record.get(key)
    if value is None or value == "":
        raise MappingError(f"{where}: {key} is missing")
    return value


def _check_totals(doc: str, lines: list[InvoiceLine], net: str, tax: str, gross: str) -> None:
    """Flag (log) totals that do not add up; the document is passed on as the ERP states it."""
    if Decimal(net) + Decimal(tax) != Decimal(gross):
        log.warning(
            "invoice totals do not add up: net + tax != gross (passed on as stated)",
            document=doc,
            net=net,
            tax=tax,
            gross=gross,
        )
    if lines and sum(Decimal(line.line_amount) for line in lines) != Decimal(net):
        log.warning(
            "invoice lines do not add up to the net total (passed on as stated)",
            document=doc,
            net=net,
            lines=str(sum(Decimal(line.line_amount) for line in lines)),
        )


# --- OData v4: Business Central API v2.0 -----------------------------------------------------------------------


def _bc_invoice(kind: str, *, credit_memo: bool = False) -> Mapper:
    """``salesInvoices`` / ``purchaseInvoices``, or with ``credit_memo`` ``salesCreditMemos`` /
    ``purchaseCreditMemos`` (dated by ``creditMemoDate``, amounts negated by :data:`CREDIT_NOTE_RULE`)."""
    party_key = "customerNumber" if kind == "sales" else "vendorNumber"
    price_key = "unitPrice" if kind == "sales" else "unitCost"  # purchase lines state a unit cost
    doc = "CreditMemo" if credit_memo else "Invoice"
    lines_key, date_key = f"{kind}{doc}Lines", "creditMemoDate" if credit_memo else "invoiceDate"
    sign = credit if credit_memo else _same

    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
        status = BC_STATUS.get(str(r.get("status")))
        if status is None:
            raise MappingError(f"{where}: unknown status {r.get('status')!r} (known: {', '.join(BC_STATUS)})")
        lines: list[InvoiceLine] = []
        raw_lines = sorted(r.get(lines_key) or [], key=lambda x: x.get("sequence") or 0)
        for i, line in enumerate(raw_lines):
            lw = f"{where}.{lines_key}[{i}]"
            if line.get("lineType") == "Comment" or line.get("amountExcludingTax") is None:
                continue  # a comment line carries no amount: not an invoice line
            lines.append(
                InvoiceLine(
                    line_number=len(lines) + 1,
                    source_line_id=line.get("id"),
                    item_number=line.get("lineObjectNumber") or None,
                    description=line.get("description") or None,
                    quantity=sign(money(line.get("quantity"), f"{lw}.quantity")),
                    unit_of_measure=line.get("unitOfMeasureCode") or None,
                    unit_price=money(line.get(price_key), f"{lw}.{price_key}"),
                    line_amount=sign(money(line.get("amountExcludingTax"), f"{lw}.amountExcludingTax")),
                    tax_amount=sign(money(line["totalTaxAmount"], f"{lw}.totalTaxAmount"))
                    if line.get("totalTaxAmount") is not None
                    else None,
                    tax_rate=money(line["taxPercent"], f"{lw}.taxPercent")
                    if line.get("taxPercent") is not None
                    else None,
                    tax_code=line.get("taxCode") or None,
                )
            )
        issue = parse_date(_required(r, date_key, where), f"{where}.{date_key}")
        assert issue is not None
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        net = sign(money(r.get("totalAmountExcludingTax"), f"{where}.totalAmountExcludingTax"))
        tax = sign(money(r.get("totalTaxAmount"), f"{where}.totalTaxAmount"))
        gross = sign(money(r.get("totalAmountIncludingTax"), f"{where}.totalAmountIncludingTax"))
        number = str(_required(r, "number", where))
        _check_totals(f"{kind} {'credit memo' if credit_memo else 'invoice'} {number}", lines, net, tax, gross)
        return InvoiceV1(
            kind=kind,
            invoice_id=str(_required(r, "id", where)),
            invoice_number=number,
            party_number=str(_required(r, party_key, where)),
            status=status,
            issue_date=issue,
            due_date=parse_date(r.get("dueDate"), f"{where}.dueDate"),
            currency=_currency(r.get("currencyCode"), local, f"{where}.currencyCode"),
            prices_include_tax=bool(r.get("pricesIncludeTax")),
            net_amount=net,
            tax_amount=tax,
            gross_amount=gross,
            amount_due=sign(money(r["remainingAmount"], f"{where}.remainingAmount"))
            if r.get("remainingAmount") is not None
            else None,
            lines=lines,
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


def _bc_party(kind: str) -> Mapper:
    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> PartyV1:
        blocked = str(r.get("blocked") or " ").strip()
        if blocked and blocked not in BC_BLOCK:
            raise MappingError(f"{where}: unknown blocked option {blocked!r}")
        ptype = r.get("type")
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        country = (r.get("country") or "").strip().upper() or None
        return PartyV1(
            kind=kind,
            party_id=str(_required(r, "id", where)),
            number=str(_required(r, "number", where)),
            name=str(r.get("displayName") or ""),
            party_type={"Company": "company", "Person": "person"}.get(ptype) if kind == "customer" else None,  # type: ignore[arg-type]
            tax_id=r.get("taxRegistrationNumber") or None,
            country=country,
            currency=_currency(r.get("currencyCode"), local, f"{where}.currencyCode")
            if (r.get("currencyCode") or local)
            else None,
            blocked=bool(blocked),
            block_scope=BC_BLOCK.get(blocked),
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


def _bc_payment(direction: str) -> Mapper:
    party_key = "customerNumber" if direction == "received" else "vendorNumber"

    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> PaymentV1:
        paid = _instant(_required(r, "postingDate", where), f"{where}.postingDate", zone)
        assert paid is not None
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        applies = r.get("appliesToInvoiceNumber")
        return PaymentV1(
            direction=direction,
            payment_id=str(_required(r, "id", where)),
            payment_number=r.get("documentNumber") or None,
            party_number=r.get(party_key) or None,
            status="pending",
            amount=money(r.get("amount"), f"{where}.amount"),
            currency=_currency(r.get("currencyCode"), local, f"{where}.currency"),
            paid_at=paid.utc,
            paid_at_precision=paid.precision,
            invoices=[InvoiceAllocation(invoice_number=str(applies))] if applies else [],
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


# --- OData v2: SAP S/4HANA billing documents (API_BILLING_DOCUMENT_SRV shape) --------------------------------


def _sap_billing(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
    """``A_BillingDocument`` with ``to_Item`` expanded. Decimals are strings; dates ``/Date(ms)/``; a cancelled
    document is void; a credit memo (``SDDocumentCategory`` ``O``) is negated by :data:`CREDIT_NOTE_RULE`."""
    sign = credit if r.get("SDDocumentCategory") == "O" else _same
    lines: list[InvoiceLine] = []
    items = r.get("to_Item")
    for i, item in enumerate(items.get("results", []) if isinstance(items, dict) else (items or [])):
        lw = f"{where}.to_Item[{i}]"
        lines.append(
            InvoiceLine(
                line_number=i + 1,
                source_line_id=str(item.get("BillingDocumentItem") or "") or None,
                item_number=item.get("Material") or None,
                description=item.get("BillingDocumentItemText") or None,
                quantity=sign(money(item.get("BillingQuantity"), f"{lw}.BillingQuantity")),
                unit_of_measure=item.get("BillingQuantityUnit") or None,
                unit_price=money(item.get("NetPriceAmount"), f"{lw}.NetPriceAmount"),
                line_amount=sign(money(item.get("NetAmount"), f"{lw}.NetAmount")),
                tax_amount=sign(money(item["TaxAmount"], f"{lw}.TaxAmount"))
                if item.get("TaxAmount") is not None
                else None,
                tax_code=item.get("TaxCode") or None,
            )
        )
    issue = parse_date(_required(r, "BillingDocumentDate", where), f"{where}.BillingDocumentDate")
    assert issue is not None
    net = sign(money(r.get("TotalNetAmount"), f"{where}.TotalNetAmount"))
    tax = sign(money(r.get("TotalTaxAmount"), f"{where}.TotalTaxAmount"))
    gross = sign(money(r.get("TotalGrossAmount"), f"{where}.TotalGrossAmount"))
    number = str(_required(r, "BillingDocument", where))
    _check_totals(f"billing document {number}", lines, net, tax, gross)
    modified = _instant(r.get("LastChangeDateTime"), f"{where}.LastChangeDateTime", "UTC")
    return InvoiceV1(
        kind="sales",
        invoice_id=number,
        invoice_number=number,
        party_number=str(_required(r, "SoldToParty", where)),
        status="void" if r.get("BillingDocumentIsCancelled") else "open",
        issue_date=issue,
        due_date=None,
        currency=_currency(r.get("TransactionCurrency"), local, f"{where}.TransactionCurrency"),
        net_amount=net,
        tax_amount=tax,
        gross_amount=gross,
        lines=lines,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )


# --- OData v2 presets: SAP S/4HANA business partners, Exact Online ----------------------------------------------

SAP_BP_CATEGORY: Final = {"1": "person", "2": "company"}
"""``BusinessPartnerCategory``: 1 person, 2 organisation; 3 (group) has no ``party_type``."""
_EDM_TIME: Final = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


def sap_bp_modified(r: dict[str, Any]) -> datetime:
    """When an ``A_BusinessPartner`` was last changed, UTC: ``LastChangeDate`` (``/Date(ms)/``, midnight) plus
    ``LastChangeTime`` (``Edm.Time``, ``PT14H05M09S``); a partner never changed has neither, and its
    ``CreationDate`` / ``CreationTime`` stand in. MappingError when it has no date at all."""
    day, time = ("LastChangeDate", "LastChangeTime") if r.get("LastChangeDate") else ("CreationDate", "CreationTime")
    where = f"A_BusinessPartner/{r.get('BusinessPartner')}"
    if not r.get(day):
        raise MappingError(f"{where}: neither LastChangeDate nor CreationDate")
    midnight = normalise(r[day], "UTC").utc
    match = _EDM_TIME.match(str(r.get(time) or "PT0S"))
    if match is None:
        raise MappingError(f"{where}.{time}: {r.get(time)!r} is not an Edm.Time (PT14H05M09S)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return midnight + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _sap_business_partner(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> list[PartyV1]:
    """``A_BusinessPartner``: one ``erp.party`` per role — customer when ``Customer`` is set (its number, which SAP
    billing documents name as ``SoldToParty``), vendor when ``Supplier`` is; a partner with neither is left out."""
    roles = [(kind, r.get(key)) for kind, key in (("customer", "Customer"), ("vendor", "Supplier")) if r.get(key)]
    if not roles:
        raise LeftOut("a business partner with no customer or supplier role (a contact person, a prospect)")
    modified = sap_bp_modified(r)
    blocked = bool(r.get("BusinessPartnerIsBlocked"))
    name = r.get("BusinessPartnerFullName") or r.get("BusinessPartnerName") or r.get("OrganizationBPName1") or ""
    return [
        PartyV1(
            kind=kind,
            party_id=str(_required(r, "BusinessPartner", where)),
            number=str(number),
            name=str(name),
            party_type=SAP_BP_CATEGORY.get(str(r.get("BusinessPartnerCategory"))),
            blocked=blocked,
            block_scope="all" if blocked else None,
            last_modified=modified,
            last_modified_precision="second",
        )
        for kind, number in roles
    ]


EXACT_STATUS: Final = {10: "draft", 20: "submitted", 50: "open"}
"""Exact Online ``SalesInvoices.Status``: 10 draft, 20 open (entered, not yet processed: still editable), 50
processed (final, in the ledger: owed until paid)."""


def _percent(fraction: Any, where: str) -> str:
    """Exact's ``VATPercentage`` is a fraction (``0.21``); ``erp.invoice`` states percent (``"21"``), exactly."""
    value = Decimal(money(fraction, where)) * 100
    text = format(value.normalize(), "f")
    return text


def _exact_invoice(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
    """Exact Online ``salesinvoice/SalesInvoices`` with ``SalesInvoiceLines`` expanded. Amounts are JSON numbers
    in the invoice currency (``*FC``); ``InvoiceTo`` (the account's ``ID``) is the party; dates ``/Date(ms)/``."""
    status = EXACT_STATUS.get(r["Status"]) if isinstance(r.get("Status"), int) else None
    if status is None:
        raise MappingError(f"{where}: unknown Status {r.get('Status')!r} (known: 10, 20, 50)")
    raw = r.get("SalesInvoiceLines")
    items = raw.get("results", []) if isinstance(raw, dict) else (raw or [])
    lines: list[InvoiceLine] = []
    for i, item in enumerate(sorted(items, key=lambda x: x.get("LineNumber") or 0)):
        lw = f"{where}.SalesInvoiceLines[{i}]"
        price = item.get("NetPrice") if item.get("NetPrice") is not None else item.get("UnitPrice")
        lines.append(
            InvoiceLine(
                line_number=i + 1,
                source_line_id=item.get("ID") or None,
                item_number=item.get("ItemCode") or None,
                description=item.get("Description") or item.get("ItemDescription") or None,
                quantity=money(item.get("Quantity"), f"{lw}.Quantity"),
                unit_of_measure=item.get("UnitCode") or None,
                unit_price=money(price, f"{lw}.NetPrice"),
                line_amount=money(item.get("AmountFC"), f"{lw}.AmountFC"),
                tax_amount=money(item["VATAmountFC"], f"{lw}.VATAmountFC")
                if item.get("VATAmountFC") is not None
                else None,
                tax_rate=_percent(item["VATPercentage"], f"{lw}.VATPercentage")
                if item.get("VATPercentage") is not None
                else None,
                tax_code=(item.get("VATCode") or "").strip() or None,
            )
        )
    issue = parse_date(_required(r, "InvoiceDate", where), f"{where}.InvoiceDate")
    assert issue is not None
    net = money(r.get("AmountFCExclVat"), f"{where}.AmountFCExclVat")
    tax = money(r.get("VATAmountFC"), f"{where}.VATAmountFC")
    gross = money(r.get("AmountFC"), f"{where}.AmountFC")
    number = str(_required(r, "InvoiceNumber", where))
    _check_totals(f"sales invoice {number}", lines, net, tax, gross)
    modified = _instant(r.get("Modified"), f"{where}.Modified", "UTC")
    return InvoiceV1(
        kind="sales",
        invoice_id=str(_required(r, "InvoiceID", where)),
        invoice_number=number,
        party_number=str(_required(r, "InvoiceTo", where)),
        status=status,
        issue_date=issue,
        due_date=parse_date(r.get("DueDate"), f"{where}.DueDate"),
        currency=_currency(r.get("Currency"), local, f"{where}.Currency"),
        net_amount=net,
        tax_amount=tax,
        gross_amount=gross,
        lines=lines,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )


def _exact_account(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> list[PartyV1]:
    """Exact Online ``crm/Accounts``: one ``erp.party`` per role — customer when ``Status`` is ``C``, vendor when
    ``IsSupplier``; prospects and suspects (``P``, ``S``, ``A``) are left out. ``number`` is the account's ``ID``,
    because Exact's invoices name their account by it (``InvoiceTo``); the padded ``Code`` is not carried."""
    roles = [kind for kind, has in (("customer", r.get("Status") == "C"), ("vendor", r.get("IsSupplier"))) if has]
    if not roles:
        raise LeftOut("an Exact account that is neither customer (Status C) nor supplier: a prospect or suspect")
    account = str(_required(r, "ID", where))
    modified = _instant(r.get("Modified"), f"{where}.Modified", "UTC")
    blocked = bool(r.get("Blocked"))
    out = []
    for kind in roles:
        currency = r.get("SalesCurrency" if kind == "customer" else "PurchaseCurrency")
        out.append(
            PartyV1(
                kind=kind,
                party_id=account,
                number=account,
                name=str(r.get("Name") or ""),
                tax_id=(r.get("VATNumber") or "").strip() or None,
                country=(r.get("Country") or "").strip().upper() or None,
                currency=_currency(currency, None, f"{where}.Currency") if currency else None,
                blocked=blocked,
                block_scope="all" if blocked else None,
                last_modified=modified.utc if modified else None,
                last_modified_precision=modified.precision if modified else None,
            )
        )
    return out


MAPPERS: Final[dict[str, Mapper]] = {
    "salesInvoices": _bc_invoice("sales"),
    "purchaseInvoices": _bc_invoice("purchase"),
    "salesCreditMemos": _bc_invoice("sales", credit_memo=True),
    "purchaseCreditMemos": _bc_invoice("purchase", credit_memo=True),
    "customers": _bc_party("customer"),
    "vendors": _bc_party("vendor"),
    "customerPayments": _bc_payment("received"),
    "vendorPayments": _bc_payment("made"),
    "A_BillingDocument": _sap_billing,
    "A_BusinessPartner": _sap_business_partner,
    "SalesInvoices": _exact_invoice,
    "Accounts": _exact_account,
}
"""Entity set → mapper; the OData v4 ones are Business Central API v2.0, ``A_BillingDocument`` and
``A_BusinessPartner`` SAP S/4HANA (OData v2), ``SalesInvoices`` and ``Accounts`` Exact Online (OData v2). A mapper
returns one contract, or a list (a partner with two roles is two parties)."""
