"""The ERP REST family over OData (connectors.erp_rest) against the local OData test server: Business Central
v4 and SAP-style v2 shapes, exact money, and delta sync without gaps or repeats."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings, _v2_loads
from inlet.connectors.erp_rest.synth import (
    bc_customers,
    bc_payments,
    bc_sales_invoices,
    bc_time,
    sap_billing_documents,
)
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from inlet.core.time import normalise
from tools.servers.odata import OdataTestServer

COMPANY = "c0ffee00-0000-4000-8000-000000000001"
Doc = dict[str, Any]


class _Feed:
    """One integration polled through the real pipeline, checkpoint store and a memory sink."""

    def __init__(self, store: CheckpointStore, connector: ErpODataConnector) -> None:
        self.connector = connector
        self.store = store
        self.stats = Stats("acme", "erp")
        self.dlq: list[Any] = []

    async def poll(self) -> list[Doc]:
        sink = MemorySink()
        pipeline = Pipeline(self.connector, Enveloper("acme", "erp"), sink, self.store, self.stats)
        await pipeline.run(await self.store.load("acme", "erp"), asyncio.Event())
        self.dlq += [e for e in sink.events if e.topic.startswith("inlet.")]
        return [orjson.loads(e.value) for e in sink.events if not e.topic.startswith("inlet.")]


def _bc(server: OdataTestServer, entity: str = "salesInvoices", page_size: int = 4, **extra: Any) -> ErpODataConnector:
    settings = ErpODataSettings(
        http=HttpSettings(base_url=server.url, backoff_initial_seconds=0.01, backoff_max_seconds=0.05),
        entity=entity,
        company_id=COMPANY,
        page_size=page_size,
        local_currency="EUR",
        **extra,
    )
    return ErpODataConnector(IntegrationContext("acme", "erp", zone="Europe/Berlin"), settings)


def _bc_server(invoices: list[Doc], **kw: Any) -> OdataTestServer:
    return OdataTestServer(
        {"salesInvoices": invoices},
        dialect="odata4",
        company=COMPANY,
        expand={"salesInvoices": "salesInvoiceLines"},
        **kw,
    )


def _invoices(n: int = 30) -> list[Doc]:
    return bc_sales_invoices(n, bc_customers(8))


async def test_business_central_invoices_map_with_exact_money_dates_and_lines(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = _invoices()
    with _bc_server(invoices) as server:
        feed = _Feed(checkpoint_store, _bc(server))
        async with feed.connector:
            events = await feed.poll()
        assert "$expand=salesInvoiceLines" in server.requests[0].target.replace("%24", "$")
        assert server.requests[0].headers["prefer"] == "odata.maxpagesize=4"
    assert sorted(e["invoice_number"] for e in events) == sorted(i["number"] for i in invoices)
    by_number = {e["invoice_number"]: e for e in events}
    for inv in invoices:
        event = by_number[inv["number"]]
        assert event["gross_amount"] == str(inv["totalAmountIncludingTax"])  # exact, scale kept (844.30)
        assert event["currency"] == (inv["currencyCode"] or "EUR")  # empty code: the company's currency
        assert event["due_date"] == (None if inv["dueDate"] == "0001-01-01" else inv["dueDate"])
        item_lines = [line for line in inv["salesInvoiceLines"] if line["lineType"] != "Comment"]
        assert [line["line_amount"] for line in event["lines"]] == [str(x["amountExcludingTax"]) for x in item_lines]
        expected = normalise(inv["lastModifiedDateTime"], "UTC")
        assert normalise(event["last_modified"], "UTC").utc == expected.utc
    assert any(
        str(i["totalAmountIncludingTax"]).endswith("0") and "." in str(i["totalAmountIncludingTax"]) for i in invoices
    ), "the data must hold amounts a float would shorten"
    assert feed.stats.totals.balanced()


async def test_parties_and_payments(tmp_path: Path, checkpoint_stores: Callable[[Path], CheckpointStore]) -> None:
    customers = bc_customers(12)
    payments = bc_payments(9, _invoices(9))
    server = OdataTestServer({"customers": customers, "customerPayments": payments}, dialect="odata4", company=COMPANY)
    with server:
        parties = _Feed(checkpoint_stores(tmp_path / "p.sqlite"), _bc(server, "customers"))
        async with parties.connector:
            got = await parties.poll()
        pays = _Feed(checkpoint_stores(tmp_path / "m.sqlite"), _bc(server, "customerPayments"))
        async with pays.connector:
            paid = await pays.poll()
    assert sorted(p["number"] for p in got) == sorted(c["number"] for c in customers)
    blocked = {p["number"]: p["block_scope"] for p in got if p["blocked"]}
    assert blocked == {c["number"]: c["blocked"].lower() for c in customers if c["blocked"].strip()}
    assert len(paid) == len(payments)
    assert all(p["currency"] == "EUR" and p["paid_at_precision"] == "day" for p in paid)
    # A posting date is the start of that day in the ERP's zone (Europe/Berlin: 23:00 UTC the day before).
    assert paid[0]["paid_at"].endswith("T23:00:00Z") or paid[0]["paid_at"].endswith("T22:00:00Z")


async def test_sap_odata_v2_with_a_byte_order_mark(checkpoint_store: CheckpointStore) -> None:
    docs = sap_billing_documents(17)
    server = OdataTestServer(
        {"A_BillingDocument": docs}, dialect="odata2", page_size=5, bom=True, expand={"A_BillingDocument": "to_Item"}
    )
    with server:
        settings = ErpODataSettings(http=HttpSettings(base_url=server.url), entity="A_BillingDocument")
        feed = _Feed(
            checkpoint_store, ErpODataConnector(IntegrationContext("acme", "erp", zone="Europe/Berlin"), settings)
        )
        async with feed.connector:
            events = await feed.poll()
            assert await feed.poll() == []
    assert feed.dlq == []
    assert sorted(e["invoice_number"] for e in events) == sorted(d["BillingDocument"] for d in docs)
    first = next(e for e in events if e["invoice_number"] == docs[0]["BillingDocument"])
    assert first["issue_date"] == "2024-02-01"
    assert first["net_amount"] == docs[0]["TotalNetAmount"]
    assert first["lines"][0]["quantity"] == docs[0]["to_Item"]["results"][0]["BillingQuantity"]
    assert {e["status"] for e in events} == {"open", "void"}


def test_a_single_object_d_is_a_page_of_one() -> None:
    body = b'{"d": {"__metadata": {"uri": "x"}, "BillingDocument": "90000001"}}'
    assert _v2_loads(body) == {"d": {"results": [{"__metadata": {"uri": "x"}, "BillingDocument": "90000001"}]}}


async def test_equal_timestamps_across_a_page_boundary_after_a_stop_are_delivered_once(
    checkpoint_store: CheckpointStore,
) -> None:
    """A pass stopped after its first page resumes from that page's watermark: the rows sharing it on the next
    page are read (inclusive bound) and the ones already delivered are not repeated (seen keys)."""
    invoices = _invoices(12)
    moment = invoices[0]["lastModifiedDateTime"]
    for inv in invoices[:7]:  # one instant across pages 1 and 2 (page size 4)
        inv["lastModifiedDateTime"] = moment
    with _bc_server(invoices) as server:
        connector = _bc(server, overlap_seconds=0)
        async with connector:
            first = [b async for b in _first_batch(connector)]
        position = first[0].position
        assert len(first[0].records) == 4 and position["modified_since"] is not None
        feed = _Feed(checkpoint_store, _bc(server, overlap_seconds=0))
        await feed.store.save("acme", "erp", position)
        async with feed.connector:
            rest = await feed.poll()
    delivered = [r["number"] for r in first[0].records] + [e["invoice_number"] for e in rest]
    assert Counter(delivered) == Counter(i["number"] for i in invoices), "each once: none lost, none repeated"


async def _first_batch(connector: ErpODataConnector) -> Any:
    async for batch in connector.read(None):
        yield batch
        return


@pytest.mark.parametrize("overlap", [0, 900])
async def test_rows_modified_during_paging_arrive_once(checkpoint_store: CheckpointStore, overlap: int) -> None:
    """While a pass pages, one row is modified with a time before what the pass has reached (its transaction
    committed late) and another with a new time. Without the overlap window the late one is lost for good."""
    invoices = _invoices(20)
    late, moved = invoices[1], invoices[2]
    times = [normalise(i["lastModifiedDateTime"], "UTC").utc for i in invoices]

    def during(server: OdataTestServer, page: int) -> None:
        if page == 5:  # the pass has read up to invoices[15]: the late row lands behind it, the moved one ahead
            server.modify("salesInvoices", late["id"], bc_time(times[15] - timedelta(milliseconds=1), 3), status="Paid")
            server.modify("salesInvoices", moved["id"], bc_time(times[-1] + timedelta(seconds=1), 2), status="Paid")

    with _bc_server(invoices) as server:
        server.on_page = during
        feed = _Feed(checkpoint_store, _bc(server, overlap_seconds=overlap))
        async with feed.connector:
            events = await feed.poll()
            server.on_page = None
            events += await feed.poll()
            events += await feed.poll()
    versions = Counter((e["invoice_number"], e["last_modified"]) for e in events)
    assert all(n == 1 for n in versions.values()), f"repeated: {versions}"
    assert len({number for number, _ in versions}) == len(invoices)
    modified = {number: at for number, at in versions if number in (late["number"], moved["number"])}
    assert sorted(n for n, _ in versions).count(moved["number"]) == 2  # before and after its modification
    late_versions = [at for n, at in versions if n == late["number"]]
    if overlap:
        assert len(late_versions) == 2, "the late-committed modification arrives too"
        assert feed.stats.totals.filtered
    else:
        assert len(late_versions) == 1, "without an overlap window it is lost"
    assert modified


async def test_three_runs_with_changes_between_deliver_every_change_once(checkpoint_store: CheckpointStore) -> None:
    invoices = _invoices(15)
    with _bc_server(invoices) as server:
        feed = _Feed(checkpoint_store, _bc(server))
        async with feed.connector:
            run1 = await feed.poll()
            server.modify("salesInvoices", invoices[3]["id"], "2024-03-05T10:00:00.1Z", status="Paid")
            server.modify("salesInvoices", invoices[4]["id"], "2024-03-05T10:00:00.1Z", status="Paid")
            run2 = await feed.poll()
            server.modify("salesInvoices", invoices[3]["id"], "2024-03-05T10:00:00.1234567Z", status="Canceled")
            run3 = await feed.poll()
    assert len(run1) == 15
    assert sorted((e["invoice_number"], e["status"]) for e in run2) == sorted(
        [(invoices[3]["number"], "paid"), (invoices[4]["number"], "paid")]
    )
    assert [(e["invoice_number"], e["status"]) for e in run3] == [(invoices[3]["number"], "void")]


async def test_an_html_page_with_200_is_a_dlq_record_and_the_next_poll_reads_it_again(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = _invoices(12)
    with _bc_server(invoices) as server:
        server.html_pages = {2}
        feed = _Feed(checkpoint_store, _bc(server))
        async with feed.connector:
            first = await feed.poll()
            assert len(first) == 4 and len(feed.dlq) == 1
            headers = {k: bytes(v) for k, v in feed.dlq[0].headers}
            assert headers["dlq_stage"] == b"decode"
            assert b"not a usable OData page" in headers["dlq_error_message"]
            assert b"<html>" in headers["dlq_error_message"] and b"skiptoken" in headers["dlq_error_message"]
            second = await feed.poll()
    assert sorted(e["invoice_number"] for e in first + second) == sorted(i["number"] for i in invoices)
