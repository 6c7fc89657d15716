"""The OData v2 entity presets — SAP S/4HANA ``A_BusinessPartner`` and Exact Online ``SalesInvoices`` /
``Accounts`` — against the local OData test server (``d.results``, ``__next`` paging, ``/Date(ms)/``, a byte order
mark) and, for the exact requests, through an ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from inlet.connectors.erp_rest.mapping import sap_bp_modified
from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings
from inlet.connectors.erp_rest.synth import (
    EXACT_DIVISION,
    exact_accounts,
    exact_sales_invoices,
    sap_business_partners,
)
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from tools.servers.odata import OdataTestServer

Doc = dict[str, Any]
EXACT = f"/api/v1/{EXACT_DIVISION}"


def _connector(
    base_url: str, entity: str, transport: httpx.MockTransport | None = None, **kw: Any
) -> ErpODataConnector:
    ctx = IntegrationContext("acme", "erp", zone="Europe/Amsterdam", http_transport=transport)
    http = HttpSettings(base_url=base_url, backoff_initial_seconds=0.01, backoff_max_seconds=0.05, max_attempts=2)
    return ErpODataConnector(ctx, ErpODataSettings(http=http, entity=entity, **kw))


async def _poll(store: CheckpointStore, connector: ErpODataConnector) -> tuple[list[Doc], Stats]:
    sink, stats = MemorySink(), Stats("acme", "erp")
    async with connector:
        await Pipeline(connector, Enveloper("acme", "erp"), sink, store, stats).run(
            await store.load("acme", "erp"), asyncio.Event()
        )
    assert not [e for e in sink.events if e.topic.startswith("inlet.")], "no DLQ records"
    return [orjson.loads(e.value) for e in sink.events], stats


def _bp_server(partners: list[Doc]) -> OdataTestServer:
    return OdataTestServer(
        {"A_BusinessPartner": partners},
        dialect="odata2",
        page_size=4,
        bom=True,
        keys={"A_BusinessPartner": ("BusinessPartner", "LastChangeDate")},
        modified_of={"A_BusinessPartner": sap_bp_modified},
    )


async def test_sap_business_partners_one_party_per_role_by_day_delta(checkpoint_store: CheckpointStore) -> None:
    partners = sap_business_partners(20)
    with _bp_server(partners) as server:
        run1, stats = await _poll(checkpoint_store, _connector(server.url, "A_BusinessPartner", overlap_seconds=0))
        run2, _ = await _poll(checkpoint_store, _connector(server.url, "A_BusinessPartner", overlap_seconds=0))
        changed = partners[5]
        server.modify(
            "A_BusinessPartner", changed["BusinessPartner"], "/Date(1709337600000)/", LastChangeTime="PT18H30M05S"
        )  # 2024-03-02 18:30:05 UTC
        run3, _ = await _poll(checkpoint_store, _connector(server.url, "A_BusinessPartner", overlap_seconds=0))
        filters = [r.query.get("$filter", [""])[0] for r in server.requests]
    expected = sorted(
        [("customer", p["Customer"]) for p in partners if p["Customer"]]
        + [("vendor", p["Supplier"]) for p in partners if p["Supplier"]]
    )
    assert sorted((e["kind"], e["number"]) for e in run1) == expected
    assert any(p["Customer"] and p["Supplier"] for p in partners), "the data must hold a partner with both roles"
    neither = sum(1 for p in partners if not (p["Customer"] or p["Supplier"]))
    assert neither and sum(stats.totals.filtered.values()) == neither
    person = next(e for e in run1 if e["party_id"] == partners[1]["BusinessPartner"])
    assert person["party_type"] == "person" and person["last_modified_precision"] == "second"
    never_changed = next(e for e in run1 if e["party_id"] == partners[0]["BusinessPartner"])
    assert never_changed["last_modified"] == sap_bp_modified(partners[0]).isoformat().replace("+00:00", "Z")
    assert run2 == [], "the day read again is filtered by seen"
    assert {(e["party_id"], e["last_modified"]) for e in run3} == {(changed["BusinessPartner"], "2024-03-02T18:30:05Z")}
    assert filters[0] == "" and all(
        f.startswith("LastChangeDate ge datetime'2024-03-") and " or CreationDate ge datetime'" in f
        for f in filters[len(filters) // 3 :]
    )


def _exact_server(entities: dict[str, list[Doc]]) -> OdataTestServer:
    return OdataTestServer(
        entities,
        dialect="odata2",
        page_size=5,
        paths={"SalesInvoices": f"{EXACT}/salesinvoice/SalesInvoices", "Accounts": f"{EXACT}/crm/Accounts"},
        keys={"SalesInvoices": ("InvoiceID", "Modified"), "Accounts": ("ID", "Modified")},
        expand={"SalesInvoices": "SalesInvoiceLines"},
    )


async def test_exact_online_invoices_and_accounts(
    checkpoint_store: CheckpointStore, checkpoint_stores: Callable[[Path], CheckpointStore], tmp_path: Path
) -> None:
    accounts = exact_accounts(14)
    invoices = exact_sales_invoices(12, accounts)
    with _exact_server({"SalesInvoices": invoices, "Accounts": accounts}) as server:
        events, _ = await _poll(
            checkpoint_store, _connector(server.url, "SalesInvoices", division=EXACT_DIVISION, overlap_seconds=60)
        )
        again, _ = await _poll(
            checkpoint_store, _connector(server.url, "SalesInvoices", division=EXACT_DIVISION, overlap_seconds=60)
        )
        parties, stats = await _poll(
            checkpoint_stores(tmp_path / "accounts.sqlite"), _connector(server.url, "Accounts", division=EXACT_DIVISION)
        )
        assert server.requests[0].path == f"{EXACT}/salesinvoice/SalesInvoices"
        assert len([r for r in server.requests if r.path.endswith("SalesInvoices")]) >= 3, "paged by __next"
    assert again == []
    by_id = {e["invoice_id"]: e for e in events}
    assert sorted(by_id) == sorted(i["InvoiceID"] for i in invoices)
    for inv in invoices:
        event = by_id[inv["InvoiceID"]]
        assert event["gross_amount"] == str(inv["AmountFC"]) and event["net_amount"] == str(inv["AmountFCExclVat"])
        assert event["party_number"] == inv["InvoiceTo"] and event["invoice_number"] == str(inv["InvoiceNumber"])
        lines = inv["SalesInvoiceLines"]["results"]
        assert [x["line_amount"] for x in event["lines"]] == [str(x["AmountFC"]) for x in lines]
        assert [x["tax_rate"] for x in event["lines"]] == [
            str(Decimal(str(x["VATPercentage"])) * 100).rstrip("0").rstrip(".") for x in lines
        ]
        assert event["status"] == {10: "draft", 20: "submitted", 50: "open"}[inv["Status"]]
        assert event["last_modified_precision"] == "millisecond"
    assert by_id[invoices[0]["InvoiceID"]]["issue_date"].startswith("2024-02-")
    roles = sorted(
        [("customer", a["ID"]) for a in accounts if a["Status"] == "C"]
        + [("vendor", a["ID"]) for a in accounts if a["IsSupplier"]]
    )
    assert sorted((p["kind"], p["number"]) for p in parties) == roles
    assert sum(stats.totals.filtered.values()) == sum(1 for a in accounts if a["Status"] != "C" and not a["IsSupplier"])


async def test_request_shapes_of_the_v2_presets(checkpoint_store: CheckpointStore) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = b"\xef\xbb\xbf" + orjson.dumps({"d": {"results": []}})
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    transport = httpx.MockTransport(handler)
    position = {"modified_since": "2024-03-02T00:03:00+00:00", "seen": []}
    for entity, extra in (("A_BusinessPartner", {}), ("SalesInvoices", {"division": 42})):
        base = f"https://erp-{uuid.uuid4().hex[:8]}.test"
        connector = _connector(base, entity, transport, **extra)
        await checkpoint_store.save("acme", "erp", position)
        await _poll(checkpoint_store, connector)
    bp, exact = (dict(r.url.params) for r in requests)
    assert requests[0].url.path == "/A_BusinessPartner"
    assert bp == {
        "$orderby": "BusinessPartner asc",  # stable under offset paging while partners change
        "$filter": "LastChangeDate ge datetime'2024-03-01T00:00:00' or CreationDate ge datetime'2024-03-01T00:00:00'",
        "$format": "json",
    }  # the watermark less the 300 s overlap is 2024-03-01 23:58 UTC: its day is read again
    assert requests[1].url.path == "/api/v1/42/salesinvoice/SalesInvoices"
    assert exact == {
        "$orderby": "Modified asc",
        "$filter": "Modified ge datetime'2024-03-01T23:58:00.000'",
        "$expand": "SalesInvoiceLines",
        "$format": "json",
    }


def test_exact_needs_a_division() -> None:
    with pytest.raises(ValueError, match="set division"):
        ErpODataSettings(http=HttpSettings(base_url="https://start.exactonline.nl"), entity="Accounts")
