"""The OData connector through an ``httpx.MockTransport`` (``IntegrationContext.http_transport``): the exact
requests it sends (delta filter, paging headers), OData v4 ``@odata.nextLink`` and v2 ``d.results`` / ``__next``
paging, and a body with a UTF-8 byte order mark, without a server.

The real-server behaviour (the OData test server's data, faults and late rows) is in ``test_erp_rest.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings
from inlet.connectors.erp_rest.synth import bc_customers, sap_billing_documents
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink

COMPANY = "c0ffee00-0000-4000-8000-000000000001"
Doc = dict[str, Any]
Handler = Callable[[httpx.Request], httpx.Response]


def _connector(handler: Handler, entity: str, **settings: Any) -> tuple[ErpODataConnector, str]:
    """A connector whose HTTP goes to ``handler``, on a host of its own (the rate limiter is per upstream)."""
    base = f"https://erp-{uuid.uuid4().hex[:8]}.test/api/v2.0"
    ctx = IntegrationContext("acme", "erp", zone="Europe/Berlin", http_transport=httpx.MockTransport(handler))
    http = HttpSettings(base_url=base, backoff_initial_seconds=0.01, backoff_max_seconds=0.05, max_attempts=2)
    return ErpODataConnector(ctx, ErpODataSettings(http=http, entity=entity, **settings)), base


def _json(doc: Doc, *, bom: bool = False) -> httpx.Response:
    body = (b"\xef\xbb\xbf" if bom else b"") + orjson.dumps(doc)
    return httpx.Response(200, content=body, headers={"Content-Type": "application/json; charset=utf-8"})


def _customers() -> list[Doc]:
    """Three Business Central customers with readable ids, modified at 10:00, 10:01 and 10:01 UTC."""
    docs = bc_customers(3, seed=1)
    for i, (doc, modified) in enumerate(
        zip(docs, ["2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z", "2024-05-01T10:01:00Z"], strict=True)
    ):
        doc["id"] = f"00000000-0000-4000-8000-00000000000{i}"
        doc["lastModifiedDateTime"] = modified
    return docs


async def _run(
    connector: ErpODataConnector, store: CheckpointStore, position: dict[str, Any] | None
) -> tuple[list[Doc], dict[str, Any] | None]:
    """One pass through the real pipeline into a memory sink: the contract payloads and the final position."""
    sink = MemorySink()
    async with connector:
        final = await Pipeline(connector, Enveloper("acme", "erp"), sink, store, Stats("acme", "erp")).run(
            position, asyncio.Event()
        )
    return [orjson.loads(e.value) for e in sink.events if not e.topic.startswith("inlet.")], final


async def test_v4_sends_the_delta_filter_and_page_size_and_follows_next_links(
    checkpoint_store: CheckpointStore,
) -> None:
    docs = _customers()
    requests: list[httpx.Request] = []
    next_link: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return _json({"@odata.context": "x", "value": docs[:2], "@odata.nextLink": next_link[0]})
        return _json({"@odata.context": "x", "value": docs[2:]})

    connector, base = _connector(
        handler, "customers", company_id=COMPANY, page_size=2, overlap_seconds=60, local_currency="EUR"
    )
    next_link.append(f"{base}/companies({COMPANY})/customers?$skiptoken=abc")
    # Delivered before: the 10:00 row. The overlap window reads it again; ``seen`` filters it.
    position = {"modified_since": "2024-05-01T10:00:00+00:00", "seen": [f"{docs[0]['id']}@2024-05-01T10:00:00+00:00"]}

    payloads, final = await _run(connector, checkpoint_store, position)

    first = requests[0]
    assert first.url.path == f"/api/v2.0/companies({COMPANY})/customers"
    assert dict(first.url.params) == {
        "$orderby": "lastModifiedDateTime asc",
        "$filter": "lastModifiedDateTime ge 2024-05-01T09:59:00.000000Z",  # the watermark less overlap_seconds
    }
    assert first.headers["Prefer"] == "odata.maxpagesize=2"
    assert len(requests) == 2 and str(requests[1].url) == next_link[0]
    assert requests[1].headers["Prefer"] == "odata.maxpagesize=2"
    assert [p["party_id"] for p in payloads] == [docs[1]["id"], docs[2]["id"]]  # the re-read 10:00 row filtered
    assert final == {
        "modified_since": "2024-05-01T10:01:00+00:00",
        "seen": sorted(
            [
                f"{docs[0]['id']}@2024-05-01T10:00:00+00:00",
                f"{docs[1]['id']}@2024-05-01T10:01:00+00:00",
                f"{docs[2]['id']}@2024-05-01T10:01:00+00:00",
            ]
        ),
    }


async def test_v4_first_pass_without_a_watermark_sends_no_filter(checkpoint_store: CheckpointStore) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return _json({"value": []})

    connector, _ = _connector(handler, "salesInvoices", company_id=COMPANY)
    payloads, final = await _run(connector, checkpoint_store, None)
    assert dict(requests[0].url.params) == {"$orderby": "lastModifiedDateTime asc", "$expand": "salesInvoiceLines"}
    assert payloads == [] and final == {"modified_since": None, "seen": []}


async def test_v2_reads_d_results_follows_next_and_accepts_a_byte_order_mark(
    checkpoint_store: CheckpointStore,
) -> None:
    docs = sap_billing_documents(3, seed=4)
    requests: list[httpx.Request] = []
    next_url: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return _json({"d": {"results": docs[:2], "__next": next_url[0]}}, bom=True)
        return _json({"d": {"results": docs[2:]}}, bom=True)

    connector, base = _connector(
        handler, "A_BillingDocument", service_path="sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV"
    )
    next_url.append(f"{base}/sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV/A_BillingDocument?$skiptoken=2")
    position = {"modified_since": "2024-03-01T08:00:00+00:00", "seen": []}

    payloads, final = await _run(connector, checkpoint_store, position)

    first = requests[0]
    assert first.url.path == "/api/v2.0/sap/opu/odata/sap/API_BILLING_DOCUMENT_SRV/A_BillingDocument"
    assert dict(first.url.params) == {
        "$orderby": "LastChangeDateTime asc",
        "$filter": "LastChangeDateTime ge datetime'2024-03-01T07:55:00.000'",  # UTC, default overlap of 300 s
        "$expand": "to_Item",
        "$format": "json",
    }
    assert "Prefer" not in first.headers  # v2 servers page as they like
    assert len(requests) == 2 and str(requests[1].url) == next_url[0]
    assert [p["invoice_id"] for p in payloads] == ["90000000", "90000001", "90000002"]
    assert final is not None and len(final["seen"]) == 3


async def test_a_row_dated_past_the_clock_is_delivered_once_and_does_not_move_the_watermark(
    checkpoint_store: CheckpointStore,
) -> None:
    """One modification time years ahead (a server clock, a migration bug) must not carry the watermark past every
    change still to come: the row is delivered and kept in ``seen`` (so the next pass filters it), and the next
    pass asks from the real watermark and gets the new row."""
    docs = _customers()[:2]
    docs[1]["lastModifiedDateTime"] = "2999-01-01T00:00:00Z"
    newer = _customers()[2]
    newer["lastModifiedDateTime"] = "2024-05-01T10:05:00Z"
    filters: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        filters.append(request.url.params.get("$filter"))
        return _json({"value": [docs[0], newer, docs[1]] if len(filters) > 1 else docs})

    settings = {"company_id": COMPANY, "overlap_seconds": 60, "local_currency": "EUR"}
    connector, _ = _connector(handler, "customers", **settings)
    payloads, first = await _run(connector, checkpoint_store, None)
    assert [p["party_id"] for p in payloads] == [docs[0]["id"], docs[1]["id"]]
    assert first is not None and first["modified_since"] == "2024-05-01T10:00:00+00:00"
    assert f"{docs[1]['id']}@2999-01-01T00:00:00+00:00" in first["seen"]

    connector, _ = _connector(handler, "customers", **settings)
    payloads, second = await _run(connector, checkpoint_store, first)
    assert filters[1] == "lastModifiedDateTime ge 2024-05-01T09:59:00.000000Z"  # not 2999: the pass did not stop
    assert [p["party_id"] for p in payloads] == [newer["id"]]  # the other two: delivered before
    assert second is not None and second["modified_since"] == "2024-05-01T10:05:00+00:00"
    assert f"{docs[1]['id']}@2999-01-01T00:00:00+00:00" in second["seen"]  # until the watermark passes it
