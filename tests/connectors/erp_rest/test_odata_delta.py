"""Deletions by OData v4 delta links (``delta: track_changes``) against the local OData test server: changes and
removals between runs, both deleted-entity spellings, an expired or refused delta link, a restart, and a service
that tracks no changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from inlet.connectors.erp_rest.odata import ErpODataConnector, ErpODataSettings, Removal
from inlet.connectors.erp_rest.synth import bc_customers, bc_sales_invoices
from inlet.contracts.erp_deletion import ErpDeletionV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from tools.servers.odata import OdataTestServer

COMPANY = "c0ffee00-0000-4000-8000-000000000001"
Doc = dict[str, Any]


def _server(entity: str, rows: list[Doc], **kw: Any) -> OdataTestServer:
    return OdataTestServer(
        {entity: rows},
        dialect="odata4",
        company=COMPANY,
        expand={"salesInvoices": "salesInvoiceLines"},
        track_changes=kw.pop("track_changes", True),
        **kw,
    )


def _connector(server: OdataTestServer, entity: str = "salesInvoices", **extra: Any) -> ErpODataConnector:
    settings = ErpODataSettings(
        http=HttpSettings(base_url=server.url, backoff_initial_seconds=0.01, backoff_max_seconds=0.05),
        entity=entity,
        company_id=COMPANY,
        page_size=4,
        local_currency="EUR",
        delta="track_changes",
        **extra,
    )
    return ErpODataConnector(IntegrationContext("acme", "erp", zone="Europe/Berlin"), settings)


async def _poll(store: CheckpointStore, connector: ErpODataConnector) -> list[tuple[str, Doc]]:
    """One pass through the real pipeline into a memory sink: (topic, payload) of every event, DLQ included."""
    sink = MemorySink()
    async with connector:
        await Pipeline(connector, Enveloper("acme", "erp"), sink, store, Stats("acme", "erp")).run(
            await store.load("acme", "erp"), asyncio.Event()
        )
    return [(e.topic, orjson.loads(e.value)) for e in sink.events]


def _targets(server: OdataTestServer) -> list[str]:
    return [r.target.replace("%24", "$") for r in server.requests]


@pytest.mark.parametrize("style", ["4.0", "4.01"])
async def test_created_modified_and_deleted_between_runs_arrive_with_a_deletion_event(
    checkpoint_store: CheckpointStore, style: str
) -> None:
    invoices = bc_sales_invoices(10, bc_customers(4))
    extra = bc_sales_invoices(11, bc_customers(4), seed=9)[10]
    with _server("salesInvoices", invoices, removed_style=style) as server:
        run1 = await _poll(checkpoint_store, _connector(server))
        first = server.requests[0]
        assert first.headers["prefer"] == "odata.track-changes, odata.maxpagesize=4"
        position = await checkpoint_store.load("acme", "erp")
        assert position is not None and "deltatoken=" in position["delta_link"]

        server.add("salesInvoices", extra)
        server.modify("salesInvoices", invoices[2]["id"], "2024-03-05T10:00:00.5Z", status="Paid")
        server.delete("salesInvoices", invoices[5]["id"])
        sent = len(server.requests)
        run2 = await _poll(checkpoint_store, _connector(server))
        assert all("$deltatoken=" in t for t in _targets(server)[sent:]), "the second pass reads the delta link"
        run3 = await _poll(checkpoint_store, _connector(server))

    assert sorted(p["invoice_number"] for _, p in run1) == sorted(i["number"] for i in invoices)
    invoices2 = [p for t, p in run2 if t == "erp.invoice.v1"]
    assert sorted((p["invoice_number"], p["status"]) for p in invoices2) == sorted(
        [(extra["number"], extra["status"].lower().replace("canceled", "void")), (invoices[2]["number"], "paid")]
    )
    deletions = [p for t, p in run2 if t == "erp.deletion.v1"]
    assert deletions == [
        {
            "entity": "invoice",
            "kind": "sales",
            "source_id": invoices[5]["id"],
            "reason": "deleted",
            "deleted_at": None,
            "deleted_at_precision": None,
        }
    ]
    assert run3 == [], "nothing changed since: an empty delta answer"


async def test_parties_deleted_and_position_survives_a_restart(
    tmp_path: Path, checkpoint_stores: Callable[[Path], CheckpointStore]
) -> None:
    """The delta link is in the checkpoint: a new process (new store object, new connector) reads it."""
    customers = bc_customers(6)
    path = tmp_path / "cp.sqlite"
    with _server("customers", customers) as server:
        await _poll(checkpoint_stores(path), _connector(server, "customers"))
        server.delete("customers", customers[0]["id"])
        server.delete("customers", customers[3]["id"])
        restarted = checkpoint_stores(path)
        sent = len(server.requests)
        events = await _poll(restarted, _connector(server, "customers"))
        assert "$deltatoken=" in _targets(server)[sent]
    assert sorted(p["source_id"] for _, p in events) == sorted([customers[0]["id"], customers[3]["id"]])
    assert {(t, p["entity"], p["kind"]) for t, p in events} == {("erp.deletion.v1", "party", "customer")}


@pytest.mark.parametrize("status", [410, 400])
async def test_a_refused_delta_link_falls_back_to_the_watermark_and_says_so(
    checkpoint_store: CheckpointStore, status: int
) -> None:
    invoices = bc_sales_invoices(9, bc_customers(4))
    with _server("salesInvoices", invoices) as server:
        await _poll(checkpoint_store, _connector(server))
        server.modify("salesInvoices", invoices[1]["id"], "2024-03-06T09:00:00Z", status="Paid")
        server.delete("salesInvoices", invoices[4]["id"])
        server.expire_delta_links()
        server.expired_status = status
        sent = len(server.requests)
        with structlog.testing.capture_logs() as logs:
            events = await _poll(checkpoint_store, _connector(server))
        targets = _targets(server)[sent:]
        assert "$deltatoken=" in targets[0] and "$filter=lastModifiedDateTime+ge+" in targets[1]
        assert server.requests[sent + 1].headers["prefer"].startswith("odata.track-changes")
        position = await checkpoint_store.load("acme", "erp")
        assert position is not None and position["delta_link"] is not None, "a new link replaces the dead one"
        server.delete("salesInvoices", invoices[6]["id"])
        later = await _poll(checkpoint_store, _connector(server))
    refused = [e for e in logs if e["event"].startswith("the service refused the delta link")]
    assert len(refused) == 1 and refused[0]["status"] == status and refused[0]["log_level"] == "warning"
    assert "removals since the link was issued cannot be" in refused[0]["event"]
    assert [(t, p["invoice_number"], p["status"]) for t, p in events] == [
        ("erp.invoice.v1", invoices[1]["number"], "paid")
    ], "the change of the gap arrives once; rows read again are filtered"
    assert [(t, p["source_id"]) for t, p in later] == [("erp.deletion.v1", invoices[6]["id"])]


async def test_a_service_without_delta_links_is_read_by_watermark(checkpoint_store: CheckpointStore) -> None:
    invoices = bc_sales_invoices(6, bc_customers(4))
    with _server("salesInvoices", invoices, track_changes=False) as server, structlog.testing.capture_logs() as logs:
        run1 = await _poll(checkpoint_store, _connector(server))
        server.modify("salesInvoices", invoices[0]["id"], "2024-03-07T09:00:00Z", status="Paid")
        run2 = await _poll(checkpoint_store, _connector(server))
        position = await checkpoint_store.load("acme", "erp")
    assert len(run1) == 6 and [p["invoice_number"] for _, p in run2] == [invoices[0]["number"]]
    assert position is not None and position["delta_link"] is None
    assert any("without @odata.deltaLink" in e["event"] for e in logs)


def test_a_deleted_entity_names_its_key_in_every_spelling() -> None:
    guid = "5d115c9c-44e3-ea11-bb43-000d3a2feca1"
    assert (
        Removal({"@odata.context": "x#customers/$deletedEntity", "id": guid, "reason": "deleted"}).source_id("id")
        == guid
    )
    assert Removal({"@removed": {}, "@id": f"customers({guid})"}).source_id("id") == guid
    assert Removal({"@removed": {}, "@id": f"https://h/api/companies(1)/customers({guid})"}).source_id("x") == guid
    assert Removal({"@odata.removed": {"reason": "changed"}, "@id": "Customers('ALFKI')"}).source_id("x") == "ALFKI"
    assert Removal({"@removed": {"reason": "changed"}}).reason() == "changed"
    assert Removal({"@removed": {}, "@id": "customers(id=7)"}).source_id("x") == "7"
    assert Removal({"@removed": {}}).source_id("id") is None
    assert Removal.found({"@removed": {"reason": "deleted"}, "id": "1"})
    assert not Removal.found({"id": "1", "reason": "deleted"})


def test_a_deletion_kind_must_fit_its_entity() -> None:
    with pytest.raises(ValueError, match="a deleted invoice is sales or purchase"):
        ErpDeletionV1(entity="invoice", kind="customer", source_id="1")
    deletion = ErpDeletionV1(entity="payment", kind="made", source_id="p-1")
    assert deletion.entity_key() == "Payment/p-1" and deletion.occurred_at() is None


def test_track_changes_is_for_odata_v4_entity_sets() -> None:
    with pytest.raises(ValueError, match="needs an OData v4 entity set"):
        ErpODataSettings(http=HttpSettings(base_url="http://x"), entity="A_BillingDocument", delta="track_changes")
