"""The family's one credit note rule (``connectors.erp_rest.mapping.CREDIT_NOTE_RULE``) outside Xero: a credit
note is an ``erp.invoice`` of its kind with every amount's sign changed — Business Central ``salesCreditMemos`` /
``purchaseCreditMemos`` (on its documented examples and on generated data through the OData test server) and SAP
credit memos (``SDDocumentCategory`` ``O``). The Xero side: ``test_xero_endpoints.py``, ``test_xero_samples.py``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from inlet.connectors.erp_rest.mapping import MAPPERS, credit
from inlet.connectors.erp_rest.synth import bc_customers, bc_sales_invoices, sap_billing_documents
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.core import exact_json
from inlet.core.checkpoint import CheckpointStore
from tests.connectors.erp_rest.test_erp_rest import COMPANY, _bc, _Feed
from tools.servers.odata import OdataTestServer

Doc = dict[str, Any]


@pytest.mark.parametrize(
    ("amount", "credited"),
    [("34.50", "-34.50"), ("-2", "2"), ("0.00", "0.00"), ("0", "0"), ("1000.8", "-1000.8"), ("-0.5", "0.5")],
)
def test_credit_changes_the_sign_and_nothing_else(amount: str, credited: str) -> None:
    assert credit(amount) == credited
    assert credit(credited) == (amount if Decimal(amount) else credited)  # its own inverse, zero stays unsigned


def _sample(sample_data: Path, name: str) -> Doc:
    path = sample_data / "erp/dynamics365-business-central-api-v2/responses" / name
    return exact_json.loads(path.read_bytes())  # type: ignore[no-any-return]


def test_business_central_credit_memo_samples_are_negative(sample_data: Path) -> None:
    memo = _sample(sample_data, "dynamics_salescreditmemo_get.json")
    line = _sample(sample_data, "dynamics_salescreditmemoline_get.json")
    event = MAPPERS["salesCreditMemos"]({**memo, "salesCreditMemoLines": [line]}, "salesCreditMemos/x", None, "EUR")
    assert isinstance(event, InvoiceV1)
    assert (event.kind, event.invoice_number, event.party_number, event.status) == (
        "sales",
        "1009",
        "GL00000008",
        "draft",
    )
    assert str(event.issue_date) == memo["creditMemoDate"] == "2015-12-31"
    assert (event.net_amount, event.tax_amount, event.gross_amount) == ("-6825.6", "-682.56", "-7508.16")
    [got] = event.lines
    assert (got.quantity, got.unit_price, got.line_amount, got.tax_amount, got.tax_rate) == (
        "-1",
        "1000.8",
        "-1000.8",
        "-60.05",
        "6.0002",
    )
    purchase = _sample(sample_data, "dynamics_purchasecreditmemo_get.json")
    event = MAPPERS["purchaseCreditMemos"](purchase, "purchaseCreditMemos/x", None, "EUR")
    assert isinstance(event, InvoiceV1)
    assert (event.kind, event.invoice_number, event.party_number, event.currency) == (
        "purchase",
        "PCM-00428",
        "V-0452",
        "USD",
    )
    assert (event.net_amount, event.tax_amount, event.gross_amount) == ("-950.0", "-76.0", "-1026.0")


def _credit_memos(n: int) -> list[Doc]:
    """Generated BC sales invoices in the shape of ``salesCreditMemos`` (the API's fields for a credit memo)."""
    out = []
    for inv in bc_sales_invoices(n, bc_customers(6, seed=31), seed=32):
        memo = {k: v for k, v in inv.items() if k not in ("invoiceDate", "salesInvoiceLines", "orderId")}
        memo["creditMemoDate"], memo["number"] = inv["invoiceDate"], inv["number"].replace("S-INV", "S-CR")
        memo["salesCreditMemoLines"] = inv["salesInvoiceLines"]
        out.append(memo)
    return out


async def test_business_central_sales_credit_memos_over_odata(checkpoint_store: CheckpointStore) -> None:
    memos = _credit_memos(17)
    server = OdataTestServer(
        {"salesCreditMemos": memos},
        dialect="odata4",
        company=COMPANY,
        expand={"salesCreditMemos": "salesCreditMemoLines"},
    )
    with server:
        feed = _Feed(checkpoint_store, _bc(server, entity="salesCreditMemos", page_size=5))
        async with feed.connector:
            events = await feed.poll()
        first = server.requests[0]
        assert first.path == f"/companies({COMPANY})/salesCreditMemos"
        assert first.query["$expand"] == ["salesCreditMemoLines"]
    assert feed.dlq == [] and len(events) == len(memos)
    by_id = {e["invoice_id"]: e for e in events}
    for memo in memos:
        event = by_id[memo["id"]]
        assert event["invoice_number"].startswith("S-CR") and event["issue_date"] == memo["creditMemoDate"]
        assert event["gross_amount"] == credit(str(memo["totalAmountIncludingTax"]))
        assert event["net_amount"] == credit(str(memo["totalAmountExcludingTax"]))
        assert event["amount_due"] == credit(str(memo["remainingAmount"]))
        item_lines = [line for line in memo["salesCreditMemoLines"] if line["lineType"] != "Comment"]
        assert [line["line_amount"] for line in event["lines"]] == [
            credit(str(line["amountExcludingTax"])) for line in item_lines
        ]
        assert all(Decimal(line["quantity"]) < 0 < Decimal(line["unit_price"]) for line in event["lines"])


def test_sap_credit_memos_are_negative_invoices_are_not() -> None:
    doc = sap_billing_documents(1)[0]
    invoice = MAPPERS["A_BillingDocument"](doc, "A_BillingDocument/x", None, None)
    memo = MAPPERS["A_BillingDocument"]({**doc, "SDDocumentCategory": "O"}, "A_BillingDocument/x", None, None)
    assert invoice.gross_amount == doc["TotalGrossAmount"] and Decimal(invoice.gross_amount) > 0
    assert memo.gross_amount == credit(doc["TotalGrossAmount"])
    assert [line.line_amount for line in memo.lines] == [credit(line.line_amount) for line in invoice.lines]
    assert [line.unit_price for line in memo.lines] == [line.unit_price for line in invoice.lines]
