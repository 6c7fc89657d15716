"""Generated ERP data shaped after Business Central API v2.0 and SAP S/4HANA billing documents (seeded).

What the test servers serve and what recorded fixtures are made from — never the third-party samples in
``../shared/data`` (those are read in place by tests). The shapes follow those samples: BC ``salesInvoices``
with ``salesInvoiceLines`` (JSON numbers, ``lastModifiedDateTime`` with 0 to 7 fractional digits, date-only
``invoiceDate`` / ``dueDate``, ``0001-01-01`` as BC's blank date, empty GUIDs, an empty ``currencyCode`` for
the local currency), ``customers`` and ``customerPayments``; SAP ``A_BillingDocument`` with ``to_Item``
(decimals as strings, ``/Date(ms)/`` and ``/Date(ms+0000)/``, ``__metadata`` and ``__deferred``); Xero
``Invoices`` (JSON numbers, ``/Date(ms+0000)/`` with milliseconds in ``UpdatedDateUTC``, naive ``DateString``,
``Exclusive`` / ``Inclusive`` amounts, every status including ``VOIDED`` and ``DELETED``), ``CreditNotes``
(positive amounts, as Xero writes them), ``Payments`` (of invoices, refunds of credit notes, ``DELETED``) and
``Contacts`` (``ACTIVE`` / ``ARCHIVED``; customers, suppliers, both, neither); SAP Business One
Service Layer ``Invoices`` and ``BusinessPartners`` (fields and types as its ``$metadata`` declares them:
``UpdateDate`` + ``UpdateTime`` in the server's wall time, ``tYES`` / ``tNO``, ``bost_*`` statuses).
SAP ``A_BusinessPartner`` (``LastChangeDate`` + ``Edm.Time`` ``LastChangeTime``, empty for partners never
changed) and Exact Online ``crm/Accounts`` and ``salesinvoice/SalesInvoices`` (JSON numbers, ``/Date(ms)/``).
Timestamps come in runs: several rows share one modification instant, so page boundaries fall inside them.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "EMPTY_GUID",
    "EXACT_DIVISION",
    "b1_business_partners",
    "b1_invoices",
    "b1_wall",
    "bc_customers",
    "bc_payments",
    "bc_sales_invoices",
    "bc_time",
    "exact_accounts",
    "exact_sales_invoices",
    "sap_billing_documents",
    "sap_business_partners",
    "xero_contacts",
    "xero_credit_notes",
    "xero_date",
    "xero_invoices",
    "xero_payments",
]

EMPTY_GUID: Final = "00000000-0000-0000-0000-000000000000"
START: Final = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
ITEMS: Final = [
    ("1896-S", "ATHENS Desk", "PCS", "1000.8"),
    ("1928-S", "AMSTERDAM Lamp", "PCS", "54.9"),
    ("1920-S", "ANTWERP Conference Table", "PCS", "420.4"),
    ("70000", "Side Panel", "PCS", "12.5"),
    ("2000-S", "SYDNEY Swivel Chair", "PCS", "99.95"),
    ("766BC-A", "Contoso Conference System", "PCS", "1120.1"),
]
TAX: Final = [("STANDARD", Decimal(19)), ("REDUCED", Decimal(7))]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def bc_time(moment: datetime, digits: int) -> str:
    """``lastModifiedDateTime`` as BC writes it: UTC with ``digits`` (0-7) fractional digits, trailing zeros cut."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{moment.microsecond:06d}0"[:digits].rstrip("0")
    return f"{text}.{frac}Z" if frac else f"{text}Z"


def _times(rng: random.Random, count: int, start: datetime = START) -> list[datetime]:
    """Ascending modification instants in runs of 1-4 equal values."""
    out: list[datetime] = []
    moment = start
    while len(out) < count:
        moment += timedelta(seconds=rng.randint(1, 90), microseconds=rng.randint(0, 999_999))
        out += [moment] * min(rng.randint(1, 4), count - len(out))
    return out


def _number(value: Decimal) -> Any:
    """A BC JSON number: an int when whole, else the exact Decimal (written as the JSON number it is)."""
    return int(value) if value == value.to_integral_value() else value


def bc_customers(count: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """BC ``customers``."""
    rng = random.Random(seed)
    out = []
    for i, moment in enumerate(_times(rng, count)):
        out.append(
            {
                "id": _guid(rng),
                "number": f"{10000 + i * 10}",
                "displayName": f"Kunde {i:03d} GmbH",
                "type": "Company" if i % 5 else "Person",
                "country": rng.choice(["DE", "AT", "CH", "NL"]),
                "taxRegistrationNumber": f"DE{rng.randint(100000000, 999999999)}" if i % 3 else "",
                "currencyId": EMPTY_GUID,
                "currencyCode": "" if i % 4 else "USD",
                "blocked": " " if i % 7 else rng.choice(["Ship", "Invoice", "All"]),
                "lastModifiedDateTime": bc_time(moment, rng.randint(0, 7)),
            }
        )
    return out


def bc_sales_invoices(count: int, customers: list[dict[str, Any]], *, seed: int = 2) -> list[dict[str, Any]]:
    """BC ``salesInvoices`` with ``salesInvoiceLines`` (expanded), exact amounts as JSON numbers."""
    rng = random.Random(seed)
    out = []
    for i, moment in enumerate(_times(rng, count)):
        customer = customers[i % len(customers)]
        invoice_id = _guid(rng)
        issued = date(2024, 2, 1) + timedelta(days=rng.randint(0, 28))
        lines, net_total, tax_total = [], Decimal(0), Decimal(0)
        for n in range(rng.randint(1, 4)):
            code, text, unit, price = rng.choice(ITEMS)
            qty = Decimal(rng.randint(1, 6))
            tax_code, rate = rng.choice(TAX)
            net = (qty * Decimal(price)).quantize(Decimal("0.01"))
            tax = (net * rate / 100).quantize(Decimal("0.01"))
            net_total, tax_total = net_total + net, tax_total + tax
            lines.append(
                {
                    "id": _guid(rng),
                    "documentId": invoice_id,
                    "sequence": (n + 1) * 10000,
                    "itemId": _guid(rng),
                    "accountId": EMPTY_GUID,
                    "lineType": "Item",
                    "lineObjectNumber": code,
                    "description": text,
                    "unitOfMeasureCode": unit,
                    "unitPrice": _number(Decimal(price)),
                    "quantity": _number(qty),
                    "amountExcludingTax": _number(net),
                    "taxCode": tax_code,
                    "taxPercent": _number(rate),
                    "totalTaxAmount": _number(tax),
                    "amountIncludingTax": _number(net + tax),
                }
            )
        if i % 6 == 2:
            lines.append(
                {
                    "id": _guid(rng),
                    "documentId": invoice_id,
                    "sequence": 90000,
                    "lineType": "Comment",
                    "lineObjectNumber": "",
                    "description": "Lieferung frei Haus",
                    "amountExcludingTax": None,
                }
            )
        status = rng.choice(["Open", "Open", "Paid", "Draft", "Canceled"])
        out.append(
            {
                "id": invoice_id,
                "number": f"S-INV{103000 + i}",
                "externalDocumentNumber": "",
                "invoiceDate": issued.isoformat(),
                "postingDate": issued.isoformat(),
                "dueDate": (issued + timedelta(days=14)).isoformat() if i % 9 else "0001-01-01",
                "customerId": customer["id"],
                "customerNumber": customer["number"],
                "currencyId": EMPTY_GUID,
                "currencyCode": "" if i % 4 else "USD",
                "orderId": EMPTY_GUID,
                "pricesIncludeTax": False,
                "remainingAmount": _number(Decimal(0) if status == "Paid" else net_total + tax_total),
                "totalAmountExcludingTax": _number(net_total),
                "totalTaxAmount": _number(tax_total),
                "totalAmountIncludingTax": _number(net_total + tax_total),
                "status": status,
                "lastModifiedDateTime": bc_time(moment, rng.randint(0, 7)),
                "salesInvoiceLines": lines,
            }
        )
    return out


def bc_payments(count: int, invoices: list[dict[str, Any]], *, seed: int = 3) -> list[dict[str, Any]]:
    """BC ``customerPayments`` (journal lines) applied to invoices."""
    rng = random.Random(seed)
    out = []
    for i, moment in enumerate(_times(rng, count)):
        inv = invoices[i % len(invoices)]
        out.append(
            {
                "id": _guid(rng),
                "lineNumber": (i + 1) * 10000,
                "customerId": inv["customerId"],
                "customerNumber": inv["customerNumber"],
                "postingDate": inv["invoiceDate"],
                "documentNumber": f"G{2000 + i}",
                "amount": inv["totalAmountIncludingTax"],
                "appliesToInvoiceNumber": inv["number"] if i % 5 else "",
                "description": "",
                "lastModifiedDateTime": bc_time(moment, rng.randint(0, 7)),
            }
        )
    return out


def _dotnet(moment: datetime, offset: bool) -> str:
    ms = int(moment.timestamp() * 1000)
    return f"/Date({ms}+0000)/" if offset else f"/Date({ms})/"


def sap_billing_documents(count: int, *, seed: int = 4) -> list[dict[str, Any]]:
    """SAP ``A_BillingDocument`` entries with ``to_Item`` expanded: decimal strings, ``/Date()/``, metadata."""
    rng = random.Random(seed)
    out = []
    for i, moment in enumerate(_times(rng, count)):
        number = f"{90000000 + i}"
        items, net_total, tax_total = [], Decimal(0), Decimal(0)
        for n in range(rng.randint(1, 3)):
            code, text, _unit, price = rng.choice(ITEMS)
            qty = Decimal(rng.randint(1, 5))
            net = (qty * Decimal(price)).quantize(Decimal("0.01"))
            tax = (net * Decimal("0.19")).quantize(Decimal("0.01"))
            net_total, tax_total = net_total + net, tax_total + tax
            items.append(
                {
                    "__metadata": {"type": "API_BILLING_DOCUMENT_SRV.A_BillingDocumentItemType"},
                    "BillingDocument": number,
                    "BillingDocumentItem": f"{(n + 1) * 10}",
                    "Material": code,
                    "BillingDocumentItemText": text,
                    "BillingQuantity": f"{qty}.000",
                    "BillingQuantityUnit": "PC",
                    "NetPriceAmount": price,
                    "NetAmount": f"{net}",
                    "TaxAmount": f"{tax}",
                    "TaxCode": "A1",
                    "to_BillingDocument": {"__deferred": {"uri": f"A_BillingDocument('{number}')"}},
                }
            )
        day = datetime(2024, 2, 1 + i % 28, tzinfo=UTC)
        out.append(
            {
                "__metadata": {
                    "type": "API_BILLING_DOCUMENT_SRV.A_BillingDocumentType",
                    "uri": f"A_BillingDocument('{number}')",
                },
                "BillingDocument": number,
                "SDDocumentCategory": "M",
                "BillingDocumentDate": _dotnet(day, False),
                "SoldToParty": f"{17100000 + i % 7}",
                "TransactionCurrency": "EUR",
                "TotalNetAmount": f"{net_total}",
                "TotalTaxAmount": f"{tax_total}",
                "TotalGrossAmount": f"{net_total + tax_total}",
                "BillingDocumentIsCancelled": i % 11 == 5,
                "LastChangeDateTime": _dotnet(moment, bool(i % 2)),
                "to_Item": {"results": items},
                "to_Partner": {"__deferred": {"uri": "to_Partner"}},
            }
        )
    return out


def _sap_time(moment: datetime) -> str:
    """An OData v2 ``Edm.Time`` as SAP writes it: ``PT14H05M09S``."""
    return f"PT{moment.hour:02d}H{moment.minute:02d}M{moment.second:02d}S"


def sap_business_partners(count: int, *, seed: int = 11) -> list[dict[str, Any]]:
    """SAP ``A_BusinessPartner`` (``API_BUSINESS_PARTNER`` shape): ``LastChangeDate`` (``/Date(ms)/``, midnight)
    with ``LastChangeTime`` (``Edm.Time``, whole seconds), empty for partners never changed (their
    ``CreationDate`` / ``CreationTime`` say when); customers, suppliers, both, and contact persons with neither."""
    rng = random.Random(seed)
    out = []
    for i, raw in enumerate(_times(rng, count)):
        moment = raw.replace(microsecond=0)
        number = f"{17100000 + i}"
        customer, supplier = i % 7 != 6 and i % 5 != 3, i % 5 in (3, 4)
        person = i % 6 == 1
        day = moment.replace(hour=0, minute=0, second=0)
        changed = i % 4 != 0
        created = day - timedelta(days=rng.randint(30, 400)) if changed else day
        name = f"Anna Muster {i:03d}" if person else f"Inlet Testkunde {i:03d} AG"
        out.append(
            {
                "__metadata": {
                    "id": f"A_BusinessPartner('{number}')",
                    "uri": f"A_BusinessPartner('{number}')",
                    "type": "API_BUSINESS_PARTNER.A_BusinessPartnerType",
                },
                "BusinessPartner": number,
                "Customer": number if customer else "",
                "Supplier": number if supplier else "",
                "BusinessPartnerCategory": "1" if person else "2",
                "BusinessPartnerFullName": name,
                "BusinessPartnerName": name,
                "OrganizationBPName1": "" if person else name,
                "FirstName": "Anna" if person else "",
                "LastName": f"Muster {i:03d}" if person else "",
                "BusinessPartnerGrouping": "BP02",
                "BusinessPartnerIsBlocked": i % 9 == 4,
                "CreationDate": _dotnet(created, False),
                "CreationTime": _sap_time(moment) if not changed else "PT09H00M00S",
                "LastChangeDate": _dotnet(day, False) if changed else None,
                "LastChangeTime": _sap_time(moment) if changed else "PT00H00M00S",
                "to_BusinessPartnerAddress": {"__deferred": {"uri": f"A_BusinessPartner('{number}')/to_Address"}},
            }
        )
    return out


EXACT_DIVISION: Final = 1234567
"""The Exact Online division the generated data and the test server use."""


def _exact_uri(path: str, key: str) -> str:
    return f"https://start.exactonline.nl/api/v1/{EXACT_DIVISION}/{path}(guid'{key}')"


def exact_accounts(count: int, *, seed: int = 12) -> list[dict[str, Any]]:
    """Exact Online ``crm/Accounts``: ``Status`` C (customer), P / S (prospect, suspect), ``IsSupplier``, the
    padded ``Code``, ``Modified`` as ``/Date(ms)/``."""
    rng = random.Random(seed)
    out = []
    for i, raw in enumerate(_times(rng, count)):
        moment = raw.replace(microsecond=raw.microsecond // 1000 * 1000)  # /Date(ms)/: milliseconds
        account = _guid(rng)
        status = "C" if i % 6 else rng.choice(["P", "S"])
        supplier = i % 4 == 3
        out.append(
            {
                "__metadata": {"uri": _exact_uri("crm/Accounts", account), "type": "Exact.Web.Api.Models.Account"},
                "ID": account,
                "Code": f"{i + 1:>18}",
                "Name": f"Klant {i:03d} B.V.",
                "Status": status,
                "IsSupplier": supplier,
                "Blocked": i % 11 == 7,
                "Country": rng.choice(["NL", "BE", "DE"]),
                "VATNumber": f"NL{rng.randint(100000000, 999999999)}B01" if i % 3 else "",
                "SalesCurrency": "EUR" if status == "C" else None,
                "PurchaseCurrency": "EUR" if supplier else None,
                "Created": _dotnet(moment - timedelta(days=90), False),
                "Modified": _dotnet(moment, False),
                "Division": EXACT_DIVISION,
            }
        )
    return out


def exact_sales_invoices(count: int, accounts: list[dict[str, Any]], *, seed: int = 13) -> list[dict[str, Any]]:
    """Exact Online ``salesinvoice/SalesInvoices`` with ``SalesInvoiceLines`` (expanded): amounts as JSON numbers in
    the invoice currency, ``VATPercentage`` a fraction (0.21), ``Status`` 10 / 20 / 50, dates ``/Date(ms)/``."""
    rng = random.Random(seed)
    customers = [a for a in accounts if a["Status"] == "C"]
    out = []
    for i, raw in enumerate(_times(rng, count)):
        moment = raw.replace(microsecond=raw.microsecond // 1000 * 1000)
        customer = customers[i % len(customers)]
        invoice_id = _guid(rng)
        lines, net_total, tax_total = [], Decimal(0), Decimal(0)
        for n in range(rng.randint(1, 3)):
            code, text, unit, price = rng.choice(ITEMS)
            qty = Decimal(rng.randint(1, 5))
            rate = rng.choice([Decimal("0.21"), Decimal("0.09")])
            net = (qty * Decimal(price)).quantize(Decimal("0.01"))
            tax = (net * rate).quantize(Decimal("0.01"))
            net_total, tax_total = net_total + net, tax_total + tax
            lines.append(
                {
                    "__metadata": {"type": "Exact.Web.Api.Models.SalesInvoiceLine"},
                    "ID": _guid(rng),
                    "InvoiceID": invoice_id,
                    "LineNumber": n + 1,
                    "Item": _guid(rng),
                    "ItemCode": code,
                    "ItemDescription": text,
                    "Description": text,
                    "Quantity": _number(qty),
                    "UnitCode": unit.lower(),
                    "UnitPrice": _number(Decimal(price)),
                    "NetPrice": _number(Decimal(price)),
                    "AmountFC": _number(net),
                    "AmountDC": _number(net),
                    "VATCode": "2  " if rate == Decimal("0.21") else "1  ",
                    "VATPercentage": _number(rate),
                    "VATAmountFC": _number(tax),
                    "VATAmountDC": _number(tax),
                }
            )
        issued = datetime(2024, 2, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 28))
        out.append(
            {
                "__metadata": {
                    "uri": _exact_uri("salesinvoice/SalesInvoices", invoice_id),
                    "type": "Exact.Web.Api.Models.SalesInvoice",
                },
                "InvoiceID": invoice_id,
                "InvoiceNumber": 24000000 + i,
                "InvoiceTo": customer["ID"],
                "InvoiceToName": customer["Name"],
                "OrderedBy": customer["ID"],
                "OrderedByName": customer["Name"],
                "InvoiceDate": _dotnet(issued, False),
                "DueDate": _dotnet(issued + timedelta(days=30), False),
                "Currency": "EUR",
                "AmountFCExclVat": _number(net_total),
                "VATAmountFC": _number(tax_total),
                "AmountFC": _number(net_total + tax_total),
                "AmountDC": _number(net_total + tax_total),
                "Status": rng.choice([10, 20, 50, 50]),
                "Type": 8020,
                "Description": f"Order {5000 + i}",
                "YourRef": "" if i % 2 else f"PO-{700 + i}",
                "Modified": _dotnet(moment, False),
                "Division": EXACT_DIVISION,
                "SalesInvoiceLines": {"results": lines},
            }
        )
    return out


XERO_ITEMS: Final = [
    ("FLAT-WHITE", "Flat white beans 1kg", "38.5"),
    ("KAWAKAWA-TEA", "Kawakawa tea 250g", "14.9"),
    ("PAVLOVA-MIX", "Pavlova mix", "7.25"),
    ("CATERING", "Catering, per head", "29.95"),
    ("DELIVERY", "Delivery Auckland CBD", "12"),
]
XERO_STATUSES: Final = ["AUTHORISED", "AUTHORISED", "PAID", "DRAFT", "SUBMITTED", "VOIDED", "DELETED"]


def xero_date(moment: datetime) -> str:
    """Xero's JSON date: ``/Date(<UTC ms>+0000)/``."""
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def xero_invoices(count: int, *, seed: int = 5, currency: str = "NZD") -> list[dict[str, Any]]:
    """Xero ``Invoices`` (ACCREC and ACCPAY) with ``LineItems``: GST 15 %, exact amounts as JSON numbers,
    ``UpdatedDateUTC`` in milliseconds (runs sharing one second and one millisecond), every status."""
    rng = random.Random(seed)
    out = []
    for i, raw_moment in enumerate(_times(rng, count)):
        moment = raw_moment.replace(microsecond=raw_moment.microsecond // 1000 * 1000)  # Xero keeps milliseconds
        inclusive = i % 4 == 3
        lines, net_total, tax_total = [], Decimal(0), Decimal(0)
        for _ in range(rng.randint(1, 3)):
            code, text, price = rng.choice(XERO_ITEMS)
            qty = Decimal(rng.randint(1, 8))
            amount = (qty * Decimal(price)).quantize(Decimal("0.01"))
            if inclusive:  # LineAmount includes GST: the tax is 3/23 of it
                tax = (amount * 3 / 23).quantize(Decimal("0.01"))
                net = amount - tax
            else:
                tax = (amount * Decimal("0.15")).quantize(Decimal("0.01"))
                net = amount
            net_total, tax_total = net_total + net, tax_total + tax
            lines.append(
                {
                    "LineItemID": _guid(rng),
                    "ItemCode": code,
                    "Description": text,
                    "Quantity": _number(qty),
                    "UnitAmount": _number(Decimal(price)),
                    "TaxType": "OUTPUT2",
                    "TaxAmount": _number(tax),
                    "LineAmount": _number(amount),
                    "AccountCode": "200",
                    "Tracking": [],
                }
            )
        issued = datetime(2024, 2, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 28))
        status = XERO_STATUSES[rng.randrange(len(XERO_STATUSES))]
        kind = "ACCPAY" if i % 5 == 4 else "ACCREC"
        total = net_total + tax_total
        contact: dict[str, Any] = {"ContactID": _guid(rng), "Name": f"Customer {i % 9:02d} Ltd"}
        if i % 3:
            contact["ContactNumber"] = f"C{100 + i % 9}"
        out.append(
            {
                "Type": kind,
                "InvoiceID": _guid(rng),
                "InvoiceNumber": f"INV-{1000 + i}" if kind == "ACCREC" else f"BILL-{500 + i}",
                "Reference": f"PO {7000 + i}" if i % 2 else "",
                "Contact": contact,
                "Date": xero_date(issued),
                "DateString": issued.strftime("%Y-%m-%dT00:00:00"),
                "DueDate": xero_date(issued + timedelta(days=20)),
                "DueDateString": (issued + timedelta(days=20)).strftime("%Y-%m-%dT00:00:00"),
                "Status": status,
                "LineAmountTypes": "Inclusive" if inclusive else "Exclusive",
                "LineItems": lines,
                "SubTotal": _number(net_total),
                "TotalTax": _number(tax_total),
                "Total": _number(total),
                "AmountDue": _number(Decimal(0) if status in ("PAID", "VOIDED", "DELETED") else total),
                "AmountPaid": _number(total if status == "PAID" else Decimal(0)),
                "AmountCredited": 0,
                "CurrencyCode": currency,
                "CurrencyRate": 1,
                "HasAttachments": False,
                "IsDiscounted": False,
                "UpdatedDateUTC": xero_date(moment),
            }
        )
    return out


# --- SAP Business One Service Layer ----------------------------------------------------------------------------

B1_START: Final = datetime(2026, 3, 29, 0, 50, tzinfo=UTC)
"""01:50 in Zurich on 29 March 2026: generated rows run through the spring change, when 02:00 CET becomes
03:00 CEST (a server clock in Zurich jumps from 01:59:59 to 03:00:00)."""
B1_ITEMS: Final = [
    ("EI-TISCH-180", "Esstisch Eiche massiv 180 cm", "Stk", "2490"),
    ("EI-STUHL", "Stuhl Eiche, Sitz Leder", "Stk", "389.5"),
    ("AR-BANK", "Sitzbank Arve 160 cm", "Stk", "1180.8"),
    ("MONTAGE", "Montage vor Ort, je Stunde", "h", "95"),
    ("LIEFERUNG", "Lieferung Schweiz", "Pausch", "145.15"),
]
B1_VAT: Final = [("UN81", Decimal("8.1")), ("UR26", Decimal("2.6"))]
"""Swiss VAT groups: standard 8.1 %, reduced 2.6 %."""


def b1_wall(moment: datetime, zone: str = "Europe/Zurich") -> tuple[str, str]:
    """``(UpdateDate, UpdateTime)`` as a B1 server whose clock runs in ``zone`` stamps ``moment`` (whole seconds)."""
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo(zone))
    return local.date().isoformat(), local.strftime("%H:%M:%S")


def _b1_date(day: date, i: int) -> str:
    """B1 dates: ``2026-03-01`` (Service Layer 10) or ``2026-03-01T00:00:00`` (older versions), mixed."""
    return f"{day.isoformat()}T00:00:00" if i % 7 == 3 else day.isoformat()


def b1_business_partners(count: int, *, seed: int = 7, start: datetime = B1_START) -> list[dict[str, Any]]:
    """B1 ``BusinessPartners``: customers, suppliers and a lead, ``tYES``/``tNO`` flags, ``##`` currencies."""
    rng = random.Random(seed)
    out = []
    for i, moment in enumerate(_times(rng, count, start)):
        kind = "cLid" if i % 11 == 10 else "cSupplier" if i % 4 == 3 else "cCustomer"
        prefix = {"cCustomer": "K", "cSupplier": "L", "cLid": "I"}[kind]
        day, clock = b1_wall(moment)
        out.append(
            {
                "CardCode": f"{prefix}{20000 + i * 10}",
                "CardName": f"{rng.choice(['Schreinerei', 'Hotel', 'Praxis', 'Holzbau'])} {i:03d} AG",
                "CardType": kind,
                "CompanyPrivate": "cPrivate" if i % 5 == 2 else "cCompany",
                "FederalTaxID": f"CHE-{rng.randint(100, 999)}.{rng.randint(100, 999)}.{rng.randint(100, 999)}"
                if i % 3
                else None,
                "VatIDNum": None,
                "Country": rng.choice(["CH", "CH", "CH", "DE", "AT", "LI"]),
                "Currency": rng.choice(["CHF", "CHF", "EUR", "##"]),
                "Valid": "tNO" if i % 7 == 6 else "tYES",
                "Frozen": "tYES" if i % 7 == 6 else "tNO",
                "UpdateDate": _b1_date(date.fromisoformat(day), i),
                "UpdateTime": clock,
            }
        )
    return out


def b1_invoices(
    count: int,
    partners: list[dict[str, Any]],
    *,
    seed: int = 8,
    local: str = "CHF",
    foreign: str = "EUR",
    start: datetime = B1_START,
) -> list[dict[str, Any]]:
    """B1 A/R ``Invoices`` with ``DocumentLines``: amounts as JSON numbers in the local currency and, for every
    sixth document (in ``foreign``), also in that one (``...Fc``); cancelled ones (``Cancelled: tYES``); modification
    stamps as the server's wall time in Zurich (``UpdateDate`` + ``UpdateTime``), in runs sharing one second."""
    rng = random.Random(seed)
    customers = [p for p in partners if p["CardType"] == "cCustomer"]
    out = []
    for i, moment in enumerate(_times(rng, count, start)):
        customer = customers[i % len(customers)]
        in_foreign = i % 6 == 4
        rate = Decimal("0.9412") if in_foreign else Decimal(1)
        lines, local_net, local_tax, fc_net, fc_tax = [], Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        for n in range(rng.randint(1, 4)):
            code, text, unit, price = rng.choice(B1_ITEMS)
            qty = Decimal(rng.randint(1, 6))
            group, vat = rng.choice(B1_VAT)
            doc_net = (qty * Decimal(price)).quantize(Decimal("0.01"))
            doc_tax = (doc_net * vat / 100).quantize(Decimal("0.01"))
            net = (doc_net * rate).quantize(Decimal("0.01")) if in_foreign else doc_net
            tax = (doc_tax * rate).quantize(Decimal("0.01")) if in_foreign else doc_tax
            local_net, local_tax, fc_net, fc_tax = local_net + net, local_tax + tax, fc_net + doc_net, fc_tax + doc_tax
            lines.append(
                {
                    "LineNum": n,
                    "ItemCode": code,
                    "ItemDescription": text,
                    "Quantity": _number(qty),
                    "Price": _number(Decimal(price)),
                    "UnitPrice": _number(Decimal(price)),
                    "Currency": foreign if in_foreign else local,
                    "DiscountPercent": 0,
                    "LineTotal": _number(net),
                    "RowTotalFC": _number(doc_net if in_foreign else Decimal(0)),
                    "VatGroup": group,
                    "TaxCode": None,
                    "TaxPercentagePerRow": _number(vat),
                    "NetTaxAmount": _number(tax),
                    "NetTaxAmountFC": _number(doc_tax if in_foreign else Decimal(0)),
                    "TaxTotal": _number(tax),
                    "UoMCode": unit,
                    "MeasureUnit": unit,
                    "LineStatus": "bost_Open",
                }
            )
        issued = date(2026, 3, 2) + timedelta(days=rng.randint(0, 25))
        cancelled = i % 9 == 5
        status = "bost_Close" if cancelled or rng.random() < 0.3 else "bost_Open"
        day, clock = b1_wall(moment)
        out.append(
            {
                "DocEntry": 1000 + i,
                "DocNum": 26100000 + i,
                "DocType": "dDocument_Items",
                "DocDate": _b1_date(issued, i),
                "DocDueDate": _b1_date(issued + timedelta(days=30), i),
                "CardCode": customer["CardCode"],
                "CardName": customer["CardName"],
                "NumAtCard": f"PO-{rng.randint(1000, 9999)}" if i % 2 else None,
                "DocCurrency": foreign if in_foreign else local,
                "DocRate": _number(rate),
                "DocTotal": _number(local_net + local_tax),
                "DocTotalFc": _number(fc_net + fc_tax if in_foreign else Decimal(0)),
                "VatSum": _number(local_tax),
                "VatSumFc": _number(fc_tax if in_foreign else Decimal(0)),
                "DocumentStatus": status,
                "Cancelled": "tYES" if cancelled else "tNO",
                "CancelStatus": "csYes" if cancelled else "csNo",
                "Series": 4,
                "Comments": None,
                "UpdateDate": _b1_date(date.fromisoformat(day), i),
                "UpdateTime": clock,
                "DocumentLines": lines,
            }
        )
    return out


def _xero_moment(raw: datetime) -> datetime:
    return raw.replace(microsecond=raw.microsecond // 1000 * 1000)  # Xero keeps milliseconds


def xero_credit_notes(count: int, *, seed: int = 6, currency: str = "NZD") -> list[dict[str, Any]]:
    """Xero ``CreditNotes`` (ACCRECCREDIT and ACCPAYCREDIT) with ``LineItems``: the invoices of
    :func:`xero_invoices` turned into credit notes, amounts positive as Xero writes them, ``RemainingCredit`` the
    credit not yet allocated or refunded, no due date."""
    out = []
    for i, inv in enumerate(xero_invoices(count, seed=seed, currency=currency)):
        sales = inv["Type"] == "ACCREC"
        remaining = inv.pop("AmountDue")
        for key in ("InvoiceNumber", "AmountPaid", "AmountCredited", "DueDate", "DueDateString", "IsDiscounted"):
            inv.pop(key)
        out.append(
            {
                "CreditNoteID": inv.pop("InvoiceID"),
                "CreditNoteNumber": f"CN-{2000 + i}" if sales else f"SCN-{600 + i}",
                **inv,
                "Type": "ACCRECCREDIT" if sales else "ACCPAYCREDIT",
                "RemainingCredit": remaining,
                "Allocations": [],
                "Payments": [],
            }
        )
    return out


def _paid_document(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What a Xero payment says of the document it pays: ``Invoice`` or ``CreditNote`` with number and contact."""
    common = {"Type": doc["Type"], "Contact": doc["Contact"], "CurrencyCode": doc["CurrencyCode"]}
    if "CreditNoteID" in doc:
        return "CreditNote", {
            "CreditNoteID": doc["CreditNoteID"],
            "CreditNoteNumber": doc["CreditNoteNumber"],
            **common,
        }
    return "Invoice", {"InvoiceID": doc["InvoiceID"], "InvoiceNumber": doc["InvoiceNumber"], **common}


XERO_PAYMENT_TYPES: Final = {
    "ACCREC": "ACCRECPAYMENT",
    "ACCPAY": "ACCPAYPAYMENT",
    "ACCRECCREDIT": "ARCREDITPAYMENT",
    "ACCPAYCREDIT": "APCREDITPAYMENT",
}


def xero_payments(
    count: int, invoices: list[dict[str, Any]], credit_notes: list[dict[str, Any]], *, seed: int = 7
) -> list[dict[str, Any]]:
    """Xero ``Payments`` of the given invoices and refunds of the given credit notes (every fourth payment, when
    there are credit notes): ``Amount`` the whole total or half of it, ``Date`` a day as ``/Date(ms+0000)/``,
    every seventh ``DELETED``, ``IsReconciled`` either way."""
    rng = random.Random(seed)
    out = []
    for i, raw_moment in enumerate(_times(rng, count)):
        docs = credit_notes if credit_notes and i % 4 == 3 else invoices
        doc = docs[i % len(docs)]
        total = Decimal(str(doc["Total"]))
        amount = total if i % 3 else (total / 2).quantize(Decimal("0.01"))
        key, paid = _paid_document(doc)
        day = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 30))
        out.append(
            {
                "PaymentID": _guid(rng),
                "Date": xero_date(day),
                "BankAmount": _number(amount),
                "Amount": _number(amount),
                "Reference": f"Bank transfer {i}" if i % 2 else "",
                "CurrencyRate": 1,
                "PaymentType": XERO_PAYMENT_TYPES[doc["Type"]],
                "Status": "DELETED" if i % 7 == 6 else "AUTHORISED",
                "UpdatedDateUTC": xero_date(_xero_moment(raw_moment)),
                "HasAccount": True,
                "IsReconciled": i % 2 == 0,
                "Account": {"AccountID": "5690f1e8-1d02-4893-90c2-ee1a69eff942", "Code": "090"},
                key: paid,
                "HasValidationErrors": False,
            }
        )
    return out


def xero_contacts(count: int, *, seed: int = 8) -> list[dict[str, Any]]:
    """Xero ``Contacts``: customers, suppliers, both, and (every seventh) neither; every fifth ``ARCHIVED``;
    ``ContactNumber`` on two in three; the street address's ``Country`` an ISO code, a country name or empty."""
    rng = random.Random(seed)
    out = []
    for i, raw_moment in enumerate(_times(rng, count)):
        country = ["NZ", "New Zealand", "", "AU"][i % 4]
        customer, supplier = (False, False) if i % 7 == 6 else [(True, False), (False, True), (True, True)][i % 3]
        tax = f"{rng.randint(10, 99)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}"
        out.append(
            {
                "ContactID": _guid(rng),
                "ContactNumber": f"K{300 + i}" if i % 3 else "",
                "ContactStatus": "ARCHIVED" if i % 5 == 4 else "ACTIVE",
                "Name": f"Kai Supplies {i:02d} Ltd",
                "EmailAddress": f"accounts{i}@example.invalid",
                "TaxNumber": tax if i % 2 else "",
                "Addresses": [
                    {"AddressType": "POBOX", "AddressLine1": f"PO Box {100 + i}", "City": "Auckland", "Country": ""},
                    {
                        "AddressType": "STREET",
                        "AddressLine1": f"{i + 1} Queen St",
                        "City": "Auckland",
                        "Country": country,
                    },
                ],
                "Phones": [],
                "UpdatedDateUTC": xero_date(_xero_moment(raw_moment)),
                "IsSupplier": supplier,
                "IsCustomer": customer,
                **({"DefaultCurrency": "AUD"} if country == "AU" else {}),
                "ContactGroups": [],
                "HasAttachments": False,
                "HasValidationErrors": False,
            }
        )
    return out
