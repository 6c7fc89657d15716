"""The Xero dialect beyond ``Invoices`` (connectors.erp_rest.xero, ``settings.endpoint``) against the local Xero
test server: ``CreditNotes`` as negative ``erp.invoice`` events, ``Payments`` as ``erp.payment`` (refunds negative,
dates as days in the organisation's zone), ``Contacts`` as ``erp.party`` (one event per role, archived ones asked
for and blocked) — each with the family's If-Modified-Since delta, page-number paging and limit headers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from inlet.connectors.customers.kowhai_kitchens import KowhaiKitchensInvoices
from inlet.connectors.erp_rest.mapping import credit
from inlet.connectors.erp_rest.synth import (
    xero_contacts,
    xero_credit_notes,
    xero_date,
    xero_invoices,
    xero_payments,
)
from inlet.connectors.erp_rest.xero import XERO_ENDPOINTS, ErpXeroConnector, ErpXeroSettings
from inlet.contracts.erp_invoice import InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import PaymentV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.http import HttpSettings
from tests.connectors.erp_rest.test_erp_xero import TENANT, _Feed, _ms, _xero
from tools.servers.xero import XeroTestServer

ZONE = ZoneInfo("Pacific/Auckland")
STATUS = {
    "DRAFT": "draft",
    "SUBMITTED": "submitted",
    "AUTHORISED": "open",
    "PAID": "paid",
    "VOIDED": "void",
    "DELETED": "deleted",
}


async def test_credit_notes_are_negative_invoices_with_the_erps_digits(checkpoint_store: CheckpointStore) -> None:
    notes = xero_credit_notes(30)
    with XeroTestServer(credit_notes=notes, page_size=7) as server:
        feed = _Feed(checkpoint_store, _xero(server, endpoint="CreditNotes"))
        async with feed.connector:
            events = await feed.poll()
        assert {r.path for r in server.requests} == {"/CreditNotes"}
        assert [r.query["page"] for r in server.requests] == [[str(n)] for n in range(1, 7)]  # to the empty page
        assert server.requests[0].query["order"] == ["UpdatedDateUTC ASC"]
        assert server.requests[0].headers["xero-tenant-id"] == TENANT
    assert feed.dlq == [] and feed.stats.totals.balanced()
    by_id = {e["invoice_id"]: e for e in events}
    assert len(by_id) == len(events) == len(notes)
    for note in notes:
        event = by_id[note["CreditNoteID"]]
        assert event["invoice_number"] == note["CreditNoteNumber"]
        assert event["kind"] == {"ACCRECCREDIT": "sales", "ACCPAYCREDIT": "purchase"}[note["Type"]]
        assert event["status"] == STATUS[note["Status"]]
        # The sign changes, nothing else: the same digits and scale the ERP wrote, negative.
        for field, source in [("net_amount", "SubTotal"), ("tax_amount", "TotalTax"), ("gross_amount", "Total")]:
            assert event[field] == credit(str(note[source])), field
            assert Decimal(event[field]) == -Decimal(str(note[source]))
        assert event["amount_due"] == credit(str(note["RemainingCredit"]))
        assert Decimal(event["net_amount"]) + Decimal(event["tax_amount"]) == Decimal(event["gross_amount"])
        for line, item in zip(event["lines"], note["LineItems"], strict=True):
            assert Decimal(line["quantity"]) == -Decimal(str(item["Quantity"])) < 0
            assert line["unit_price"] == str(item["UnitAmount"])  # the price stays as written
            assert Decimal(line["tax_amount"]) == -Decimal(str(item["TaxAmount"]))
        assert sum(Decimal(line["line_amount"]) for line in event["lines"]) == Decimal(event["net_amount"])
    assert {"void", "deleted"} <= {e["status"] for e in events}, "voided and deleted credit notes are events"
    assert {e["kind"] for e in events} == {"sales", "purchase"}


async def test_an_invoice_and_its_credit_note_net_to_zero(
    checkpoint_stores: Callable[[Path], CheckpointStore], tmp_path: Path
) -> None:
    """The rule's purpose: a consumer adds a party's documents up, with no document type to look at."""
    invoices, notes = xero_invoices(6, seed=11), xero_credit_notes(6, seed=11)  # the same documents, credited
    totals: dict[str, Decimal] = {}
    with XeroTestServer(invoices, credit_notes=notes) as server:
        for endpoint in ("Invoices", "CreditNotes"):
            feed = _Feed(checkpoint_stores(tmp_path / f"{endpoint}.sqlite"), _xero(server, endpoint=endpoint))
            async with feed.connector:
                for e in await feed.poll():
                    totals[e["party_number"]] = totals.get(e["party_number"], Decimal(0)) + Decimal(e["gross_amount"])
    assert totals and all(v == 0 for v in totals.values()), totals


async def test_payments_carry_their_document_day_and_sign(checkpoint_store: CheckpointStore) -> None:
    invoices, notes = xero_invoices(20), xero_credit_notes(8)
    payments = xero_payments(40, invoices, notes)
    with XeroTestServer(payments=payments, page_size=9, minute_limit=600) as server:
        feed = _Feed(checkpoint_store, _xero(server, endpoint="Payments"))
        async with feed.connector:
            events = await feed.poll()
            rate = feed.connector.http.limiter.current_rate()
        assert {r.path for r in server.requests} == {"/Payments"}
    assert rate is not None and rate <= 595 / 60 + 1e-9
    assert feed.dlq == [] and len(events) == len(payments)
    by_id = {e["payment_id"]: e for e in events}
    for payment in payments:
        event = by_id[payment["PaymentID"]]
        refund = payment["PaymentType"] in ("ARCREDITPAYMENT", "APCREDITPAYMENT")
        doc = payment.get("Invoice") or payment["CreditNote"]
        assert event["direction"] == (
            "received" if payment["PaymentType"] in ("ACCRECPAYMENT", "ARCREDITPAYMENT") else "made"
        )
        assert event["amount"] == (credit(str(payment["Amount"])) if refund else str(payment["Amount"]))
        assert (Decimal(event["amount"]) < 0) == refund
        number = doc.get("InvoiceNumber") or doc.get("CreditNoteNumber")
        assert event["invoices"] == [{"invoice_number": number, "amount": event["amount"]}]
        assert event["status"] == {"AUTHORISED": "posted", "DELETED": "deleted"}[payment["Status"]]
        assert event["currency"] == "NZD"
        contact = doc["Contact"]
        assert event["party_number"] == contact.get("ContactNumber", contact["ContactID"])
        # Date is a calendar day: the start of that day in Auckland, precision day.
        day = _ms(payment["Date"]).date()
        assert datetime.fromisoformat(event["paid_at"]) == datetime(day.year, day.month, day.day, tzinfo=ZONE)
        assert event["paid_at_precision"] == "day"
    assert {"posted", "deleted"} == {e["status"] for e in events}
    assert {"received", "made"} == {e["direction"] for e in events}
    assert any(Decimal(e["amount"]) < 0 for e in events), "refunds of credit notes in the data"


async def test_contacts_one_event_per_role_archived_asked_for_and_blocked(checkpoint_store: CheckpointStore) -> None:
    contacts = xero_contacts(28)
    with XeroTestServer(contacts=contacts, page_size=6) as server:
        feed = _Feed(checkpoint_store, _xero(server, endpoint="Contacts"))
        async with feed.connector:
            events = await feed.poll()
        assert all(r.query["includeArchived"] == ["true"] for r in server.requests)
    assert feed.dlq == []
    neither = [c for c in contacts if not (c["IsCustomer"] or c["IsSupplier"])]
    assert neither and feed.stats.totals.filtered.total() == len(neither)
    assert [r for r in feed.stats.totals.filtered if "neither customer nor supplier" in r]
    expected = Counter(
        (c["ContactID"], kind)
        for c in contacts
        for kind, flag in (("customer", "IsCustomer"), ("vendor", "IsSupplier"))
        if c[flag]
    )
    assert Counter((e["party_id"], e["kind"]) for e in events) == expected
    by_id = {c["ContactID"]: c for c in contacts}
    for event in events:
        contact = by_id[event["party_id"]]
        archived = contact["ContactStatus"] == "ARCHIVED"
        assert event["blocked"] is archived and event["block_scope"] == ("all" if archived else None)
        assert event["number"] == (contact["ContactNumber"] or contact["ContactID"])
        street = contact["Addresses"][1]["Country"]
        assert event["country"] == (street if len(street) == 2 else None), "a country name is not guessed at"
        assert event["currency"] == contact.get("DefaultCurrency")
        assert event["tax_id"] == (contact["TaxNumber"] or None)
    assert any(e["blocked"] for e in events), "archived contacts are events, never dropped"


def test_archived_contacts_only_with_include_archived() -> None:
    """What makes includeArchived necessary: the test server, as Xero, leaves archived contacts out without it."""
    contacts = xero_contacts(10)
    with XeroTestServer(contacts=contacts) as server:
        headers = {"xero-tenant-id": TENANT}
        without = httpx.get(f"{server.url}/Contacts", headers=headers).json()["Contacts"]
        with_ = httpx.get(f"{server.url}/Contacts?includeArchived=true", headers=headers).json()["Contacts"]
    assert len(with_) == 10 and len(without) == len([c for c in contacts if c["ContactStatus"] != "ARCHIVED"]) < 10


async def test_payments_delta_over_runs_delivers_every_change_once(checkpoint_store: CheckpointStore) -> None:
    """Run 1 reads everything; a payment is deleted (Xero's only change to a payment) and one is added in the
    watermark's second; run 2 brings those two; a second deletion a millisecond later comes with run 3; run 4
    brings nothing. If-Modified-Since is sent from run 2 on."""
    invoices = xero_invoices(10)
    payments = xero_payments(14, invoices, [])
    last = _ms(payments[-1]["UpdatedDateUTC"])
    late = dict(xero_payments(1, invoices, [], seed=99)[0], UpdatedDateUTC=xero_date(last))
    with XeroTestServer(payments=payments, page_size=4) as server:
        feed = _Feed(checkpoint_store, _xero(server, endpoint="Payments", overlap_seconds=0))
        async with feed.connector:
            run1 = await feed.poll()
            assert "if-modified-since" not in server.requests[0].headers
            later = last + timedelta(minutes=2)
            server.modify(payments[2]["PaymentID"], xero_date(later), Status="DELETED")
            server.rows["Payments"].append(late)
            run2 = await feed.poll()
            assert server.requests[-1].headers["if-modified-since"] == last.strftime("%Y-%m-%dT%H:%M:%S")
            server.modify(payments[5]["PaymentID"], xero_date(later + timedelta(milliseconds=1)), Status="DELETED")
            run3 = await feed.poll()
            run4 = await feed.poll()
    assert len(run1) == 14
    assert sorted((e["payment_id"], e["status"]) for e in run2) == sorted(
        [(payments[2]["PaymentID"], "deleted"), (late["PaymentID"], "posted")]
    )
    assert [(e["payment_id"], e["status"]) for e in run3] == [(payments[5]["PaymentID"], "deleted")]
    assert run4 == []
    assert feed.stats.totals.filtered, "rows of the watermark's second read again and left out, with a reason"


async def test_contacts_archived_between_runs_arrive_blocked(checkpoint_store: CheckpointStore) -> None:
    contacts = [c for c in xero_contacts(12) if c["ContactStatus"] == "ACTIVE" and (c["IsCustomer"] or c["IsSupplier"])]
    later = _ms(contacts[-1]["UpdatedDateUTC"]) + timedelta(minutes=1)
    with XeroTestServer(contacts=contacts, page_size=3) as server:
        feed = _Feed(checkpoint_store, _xero(server, endpoint="Contacts"))
        async with feed.connector:
            run1 = await feed.poll()
            server.modify(contacts[0]["ContactID"], xero_date(later), ContactStatus="ARCHIVED")
            run2 = await feed.poll()
            run3 = await feed.poll()
    assert not any(e["blocked"] for e in run1)
    assert run2 and {(e["party_id"], e["blocked"]) for e in run2} == {(contacts[0]["ContactID"], True)}
    assert run3 == []


@pytest.mark.parametrize(
    ("endpoint", "contract"),
    [("Invoices", InvoiceV1), ("CreditNotes", InvoiceV1), ("Payments", PaymentV1), ("Contacts", PartyV1)],
)
def test_each_endpoint_produces_its_contract_and_only_payments_need_a_zone(endpoint: str, contract: type) -> None:
    settings = ErpXeroSettings(http=HttpSettings(base_url="http://xero.invalid"), tenant_id=TENANT, endpoint=endpoint)
    connector = ErpXeroConnector(IntegrationContext("acme", "xero", zone=None), settings)
    assert connector.produces() == (contract,)
    assert XERO_ENDPOINTS[endpoint].contract is contract
    assert bool(connector.config_warnings()) == (endpoint == "Payments")


async def test_kowhai_kitchens_supplier_credit_notes_numbered_by_reference(checkpoint_store: CheckpointStore) -> None:
    notes = xero_credit_notes(10)
    note = next(n for n in notes if n["Type"] == "ACCPAYCREDIT")
    note["CreditNoteNumber"], note["Reference"] = "", "SUP-CR-4471"
    with XeroTestServer(credit_notes=notes) as server:
        feed = _Feed(checkpoint_store, _xero(server, KowhaiKitchensInvoices, endpoint="CreditNotes"))
        async with feed.connector:
            events = await feed.poll()
    assert next(e for e in events if e["invoice_id"] == note["CreditNoteID"])["invoice_number"] == "SUP-CR-4471"
    assert len(events) == 10
