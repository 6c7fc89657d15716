"""Generated ERP data shaped after Business Central API v2.0 and SAP S/4HANA billing documents (seeded).

What the test servers serve and what recorded fixtures are made from — never the third-party samples in
``../shared/data`` (those are read in place by tests). The shapes follow those samples: BC ``salesInvoices``
with ``salesInvoiceLines`` (JSON numbers, ``lastModifiedDateTime`` with 0 to 7 fractional digits, date-only
``invoiceDate`` / ``dueDate``, ``0001-01-01`` as BC's blank date, empty GUIDs, an empty ``currencyCode`` for
the local currency), ``customers`` and ``customerPayments``; SAP ``A_BillingDocument`` with ``to_Item``
(decimals as strings, ``/Date(ms)/`` and ``/Date(ms+0000)/``, ``__metadata`` and ``__deferred``); Xero
``Invoices`` (JSON numbers, ``/Date(ms+0000)/`` with milliseconds in ``UpdatedDateUTC``, naive ``DateString``,
``Exclusive`` / ``Inclusive`` amounts, every status including ``VOIDED`` and ``DELETED``).
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
    "bc_customers",
    "bc_payments",
    "bc_sales_invoices",
    "bc_time",
    "sap_billing_documents",
    "xero_date",
    "xero_invoices",
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


def _times(rng: random.Random, count: int) -> list[datetime]:
    """Ascending modification instants in runs of 1-4 equal values."""
    out: list[datetime] = []
    moment = START
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
