"""The ERP REST family's Xero dialect (connectors.erp_rest.xero) against the local Xero test server: exact money,
``/Date()/`` dates, every status, limit headers into core.http's limiter, and the delta rule —
``If-Modified-Since`` is whole seconds and inclusive, and page-number paging shifts under modifications."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from inlet.connectors.customers.kowhai_kitchens import KowhaiKitchensInvoices
from inlet.connectors.erp_rest.synth import xero_date, xero_invoices
from inlet.connectors.erp_rest.xero import ErpXeroConnector, ErpXeroSettings, if_modified_since
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from inlet.core.time import normalise
from tools.servers.xero import XeroTestServer

TENANT = "7e0f4c1a-0000-4000-8000-00000000a0c1"
Doc = dict[str, Any]


class _Feed:
    """One integration polled through the real pipeline, checkpoint store and a memory sink."""

    def __init__(self, store: CheckpointStore, connector: ErpXeroConnector) -> None:
        self.connector = connector
        self.store = store
        self.stats = Stats("acme", "xero")
        self.dlq: list[Any] = []

    async def poll(self) -> list[Doc]:
        sink = MemorySink()
        pipeline = Pipeline(self.connector, Enveloper("acme", "xero"), sink, self.store, self.stats)
        await pipeline.run(await self.store.load("acme", "xero"), asyncio.Event())
        self.dlq += [e for e in sink.events if e.topic.startswith("inlet.")]
        return [orjson.loads(e.value) for e in sink.events if not e.topic.startswith("inlet.")]


def _xero(server: XeroTestServer, cls: type[ErpXeroConnector] = ErpXeroConnector, **extra: Any) -> ErpXeroConnector:
    settings = ErpXeroSettings(
        http=HttpSettings(base_url=server.url, backoff_initial_seconds=0.01, backoff_max_seconds=0.05),
        tenant_id=TENANT,
        **extra,
    )
    return cls(IntegrationContext("acme", "xero", zone="Pacific/Auckland"), settings)


def _ms(value: str) -> datetime:
    return normalise(value, "UTC").utc


async def test_invoices_map_with_exact_money_dates_statuses_and_limit_headers(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = xero_invoices(45)
    with XeroTestServer(invoices, page_size=10, minute_limit=600) as server:
        feed = _Feed(checkpoint_store, _xero(server))
        async with feed.connector:
            events = await feed.poll()
            rate = feed.connector.http.limiter.current_rate()
        first = server.requests[0]
        assert first.headers["xero-tenant-id"] == TENANT and "if-modified-since" not in first.headers
        assert [r.query["page"] for r in server.requests] == [["1"], ["2"], ["3"], ["4"], ["5"], ["6"]]
    assert rate is not None and rate <= 594 / 60 + 1e-9  # X-MinLimit-Remaining 594: spread over the minute
    assert feed.dlq == [] and feed.stats.totals.balanced()
    by_id = {e["invoice_id"]: e for e in events}
    assert len(by_id) == len(invoices) == len(events)
    for inv in invoices:
        event = by_id[inv["InvoiceID"]]
        assert event["gross_amount"] == str(inv["Total"]) and event["net_amount"] == str(inv["SubTotal"])
        assert event["kind"] == {"ACCREC": "sales", "ACCPAY": "purchase"}[inv["Type"]]
        assert event["issue_date"] == inv["DateString"][:10]  # /Date(ms+0000)/ is the UTC calendar date
        assert event["currency"] == "NZD" and event["prices_include_tax"] == (inv["LineAmountTypes"] == "Inclusive")
        assert _ms(event["last_modified"]) == _ms(inv["UpdatedDateUTC"])
        assert event["last_modified_precision"] == "millisecond"
        assert event["party_number"] == inv["Contact"].get("ContactNumber", inv["Contact"]["ContactID"])
        lines = sum(float(line["line_amount"]) for line in event["lines"])  # net lines add up to SubTotal
        assert abs(lines - float(inv["SubTotal"])) < 0.005
    assert Counter(e["status"] for e in events) == Counter(
        {
            "DRAFT": "draft",
            "SUBMITTED": "submitted",
            "AUTHORISED": "open",
            "PAID": "paid",
            "VOIDED": "void",
            "DELETED": "deleted",
        }[i["Status"]]
        for i in invoices
    )
    assert {"void", "deleted"} <= {e["status"] for e in events}
    assert any(str(i["Total"]).endswith("0") and "." in str(i["Total"]) for i in invoices), (
        "the data must hold amounts a float would shorten"
    )


def test_the_bound_is_the_second_of_watermark_minus_overlap() -> None:
    wm = datetime(2024, 3, 1, 8, 0, 5, 456000, tzinfo=UTC)
    assert if_modified_since(wm, 0) == datetime(2024, 3, 1, 8, 0, 5, tzinfo=UTC)
    assert if_modified_since(wm, 300) == datetime(2024, 3, 1, 7, 55, 5, tzinfo=UTC)


async def test_rows_in_the_watermark_second_arrive_once_across_runs(checkpoint_store: CheckpointStore) -> None:
    """Run 1 ends at a row modified at hh:mm:ss.400; then rows are modified at .100 and .900 of that same second
    (a .100 row committed late, a .900 one new). If-Modified-Since cannot say .400: the second is read again,
    the row already delivered is filtered, both others arrive — each once."""
    invoices = xero_invoices(12)
    base = _ms(invoices[-1]["UpdatedDateUTC"]).replace(microsecond=400_000)
    invoices[-1]["UpdatedDateUTC"] = xero_date(base)
    with XeroTestServer(invoices, page_size=5) as server:
        feed = _Feed(checkpoint_store, _xero(server, overlap_seconds=0))
        async with feed.connector:
            run1 = await feed.poll()
            server.modify(invoices[2]["InvoiceID"], xero_date(base - timedelta(milliseconds=300)), Status="PAID")
            server.modify(invoices[3]["InvoiceID"], xero_date(base + timedelta(milliseconds=500)), Status="PAID")
            run2 = await feed.poll()
            run3 = await feed.poll()
        assert server.requests[-1].headers["if-modified-since"] == base.strftime("%Y-%m-%dT%H:%M:%S")
    assert len(run1) == 12
    assert sorted(e["invoice_number"] for e in run2) == sorted(
        [invoices[2]["InvoiceNumber"], invoices[3]["InvoiceNumber"]]
    )
    assert run3 == []
    assert feed.stats.totals.filtered, "the watermark's row read again and left out, with a reason"


async def test_a_pass_cut_after_a_page_resumes_without_gaps_or_repeats(checkpoint_store: CheckpointStore) -> None:
    """Seven rows share one millisecond across the boundary of pages 1 and 2; the pass stops after page 1."""
    invoices = xero_invoices(12)
    for inv in invoices[:7]:
        inv["UpdatedDateUTC"] = invoices[0]["UpdatedDateUTC"]
    with XeroTestServer(invoices, page_size=4) as server:
        connector = _xero(server, overlap_seconds=0)
        async with connector:
            batches = connector.read(None)
            first = await anext(batches)
            await batches.aclose()  # type: ignore[attr-defined]
        feed = _Feed(checkpoint_store, _xero(server, overlap_seconds=0))
        await feed.store.save("acme", "xero", first.position)
        async with feed.connector:
            rest = await feed.poll()
    delivered = [r["InvoiceNumber"] for r in first.records] + [e["invoice_number"] for e in rest]
    assert Counter(delivered) == Counter(i["InvoiceNumber"] for i in invoices), "each once: none lost, none repeated"


@pytest.mark.parametrize("overlap", [0, 600])
async def test_a_row_modified_while_paging_shifts_pages_and_nothing_is_lost(
    checkpoint_store: CheckpointStore, overlap: int
) -> None:
    """Page-number paging: an invoice of page 1 is modified while page 3 is asked for; it moves to the end and
    every row behind it moves up one place, so the first row of page 3 was on page 2 when page 2 was served:
    this pass never sees it. The watermark stays where the pass began; the next pass delivers only that row."""
    invoices = xero_invoices(20)
    last = _ms(invoices[-1]["UpdatedDateUTC"])
    moved = invoices[1]

    def during(server: XeroTestServer, request: int) -> None:
        if request == 3:
            server.modify(moved["InvoiceID"], xero_date(last + timedelta(seconds=1)), Status="PAID")

    with XeroTestServer(invoices, page_size=5) as server:
        server.on_page = during
        feed = _Feed(checkpoint_store, _xero(server, overlap_seconds=overlap))
        async with feed.connector:
            run1 = await feed.poll()
            server.on_page = None
            run2 = await feed.poll()
            run3 = await feed.poll()
    assert len(run1) == 20, "the skipped row is missing from this pass, the moved one twice"
    assert len(run2) == 1, f"the next pass brings only the row the shift skipped: {run2}"
    assert run3 == []
    versions = Counter((e["invoice_number"], e["last_modified"]) for e in run1 + run2)
    assert all(n == 1 for n in versions.values())
    assert {n for n, _ in versions} == {i["InvoiceNumber"] for i in invoices}
    assert [n for n, _ in versions].count(moved["InvoiceNumber"]) == 2  # before and after its modification


async def test_three_runs_with_changes_between_deliver_every_change_once(checkpoint_store: CheckpointStore) -> None:
    invoices = xero_invoices(15)
    later = _ms(invoices[-1]["UpdatedDateUTC"]) + timedelta(minutes=5)
    with XeroTestServer(invoices, page_size=4) as server:
        feed = _Feed(checkpoint_store, _xero(server))
        async with feed.connector:
            run1 = await feed.poll()
            server.modify(invoices[3]["InvoiceID"], xero_date(later), Status="PAID")
            server.modify(invoices[4]["InvoiceID"], xero_date(later), Status="VOIDED")
            run2 = await feed.poll()
            server.modify(invoices[3]["InvoiceID"], xero_date(later + timedelta(milliseconds=1)), Status="DELETED")
            run3 = await feed.poll()
    assert len(run1) == 15
    assert sorted((e["invoice_number"], e["status"]) for e in run2) == sorted(
        [(invoices[3]["InvoiceNumber"], "paid"), (invoices[4]["InvoiceNumber"], "void")]
    )
    assert [(e["invoice_number"], e["status"]) for e in run3] == [(invoices[3]["InvoiceNumber"], "deleted")]


async def test_an_html_page_with_200_is_a_dlq_record_and_the_next_poll_reads_it_again(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = xero_invoices(12)
    with XeroTestServer(invoices, page_size=4) as server:
        server.html_pages = {2}
        feed = _Feed(checkpoint_store, _xero(server))
        async with feed.connector:
            first = await feed.poll()
            assert len(first) == 4 and len(feed.dlq) == 1
            headers = {k: bytes(v) for k, v in feed.dlq[0].headers}
            assert headers["dlq_stage"] == b"decode" and b"not a usable Xero page" in headers["dlq_error_message"]
            assert b"<html>" in headers["dlq_error_message"] and b"page=2" in headers["dlq_error_message"]
            second = await feed.poll()
    assert sorted(e["invoice_number"] for e in first + second) == sorted(i["InvoiceNumber"] for i in invoices)


async def test_a_429_with_retry_after_is_waited_out(checkpoint_store: CheckpointStore) -> None:
    from tools.servers.http import Faults

    invoices = xero_invoices(6)
    with XeroTestServer(invoices, page_size=4) as server:
        server.faults = Faults(status=429, fail_requests=frozenset({2}), retry_after=1)
        feed = _Feed(checkpoint_store, _xero(server))
        async with feed.connector:
            events = await feed.poll()
        assert [r.status for r in server.requests][:3] == [200, 429, 200]
    assert len(events) == 6


async def test_kowhai_kitchens_bills_numbered_by_reference(checkpoint_store: CheckpointStore) -> None:
    invoices = xero_invoices(10)
    bill = next(i for i in invoices if i["Type"] == "ACCPAY")
    bill["InvoiceNumber"], bill["Reference"] = "", " SUP-88121 "
    with XeroTestServer(invoices) as server:
        feed = _Feed(checkpoint_store, _xero(server, KowhaiKitchensInvoices))
        async with feed.connector:
            events = await feed.poll()
    assert next(e for e in events if e["invoice_id"] == bill["InvoiceID"])["invoice_number"] == "SUP-88121"
    assert len(events) == 10


async def test_a_row_dated_past_the_clock_does_not_move_the_watermark(checkpoint_store: CheckpointStore) -> None:
    """A row modified years ahead (a server clock, a migration bug) is delivered once; the watermark stays at the
    newest real change, so the next poll still asks from there and gets what changed since."""
    invoices = xero_invoices(6)
    newest_real = _ms(invoices[-2]["UpdatedDateUTC"])
    invoices[-1]["UpdatedDateUTC"] = xero_date(datetime(2999, 1, 1, tzinfo=UTC))
    with XeroTestServer(invoices, page_size=4) as server:
        feed = _Feed(checkpoint_store, _xero(server, overlap_seconds=0))
        async with feed.connector:
            run1 = await feed.poll()
            position = await checkpoint_store.load("acme", "xero")
            later = newest_real + timedelta(minutes=5)
            server.modify(invoices[0]["InvoiceID"], xero_date(later), Status="PAID")
            run2 = await feed.poll()
        assert server.requests[-1].headers["if-modified-since"] == newest_real.strftime("%Y-%m-%dT%H:%M:%S")
    assert len(run1) == 6
    assert position is not None and _ms(position["modified_since"]) == newest_real
    assert [e["invoice_number"] for e in run2] == [invoices[0]["InvoiceNumber"]]  # the 2999 row: filtered
