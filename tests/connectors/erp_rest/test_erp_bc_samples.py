"""Mapping coverage on the Business Central API v2.0 samples: every invoice, credit memo, customer, vendor and
payment Microsoft's API reference shows becomes an event, a DLQ record whose reason names the field (and its
value), or a filtered record with a reason. Anything else is unaccounted and fails the test.

The samples (``erp/dynamics365-business-central-api-v2/responses``, read in place through ``sample_data``, never
copied) are the response examples of the reference pages (MicrosoftDocs/dynamics365smb-devitpro-pb,
``dev-itpro/api-reference/v2.0/api/``, CC-BY-4.0): one record per file, lines in files of their own. Lines
are attached to the header whose ``id`` their ``documentId`` names and served by ``$expand``, as Business Central
does; a line naming no header in the samples is reported, not forced onto one. Every entity set is served by the
local OData test server (``tools/servers/odata.py``, real HTTP over loopback) in the Business Central shape and
read by ``erp_rest.odata`` through the real pipeline into a memory sink, twice: the second pass reads the rows
again through the overlap window, and each must be filtered as already delivered.

The expectations are computed independently of the mapper: money against the sample's own number tokens
(``json.loads`` with ``parse_float=Decimal``: ``950.0`` stays ``"950.0"``; credit memos negated by the family's
sign rule), dates as written, ``lastModifiedDateTime`` by ``datetime.fromisoformat`` and a posting date as the
start of that day in the connection's zone by ``zoneinfo``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import structlog

from inlet.connectors.erp_rest.odata import ENTITIES, ErpODataConnector, ErpODataSettings
from inlet.core import exact_json
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from tools.servers.odata import OdataTestServer

SAMPLES = "erp/dynamics365-business-central-api-v2/responses"
COMPANY = "c0ffee00-0000-4000-8000-000000000001"
ZONE = "America/Chicago"  # the samples are CRONUS USA: Chicago and Atlanta addresses, USD
LOCAL = "USD"
Doc = dict[str, Any]

SETS: dict[str, tuple[str, str | None]] = {
    "salesInvoices": ("salesinvoice", "salesinvoiceline"),
    "purchaseInvoices": ("purchaseinvoice", "purchaseinvoiceline"),
    "salesCreditMemos": ("salescreditmemo", "salescreditmemoline"),
    "purchaseCreditMemos": ("purchasecreditmemo", "purchasecreditmemoline"),
    "customers": ("customer", None),
    "vendors": ("vendor", None),
    "customerPayments": ("customerpayment", None),
    "vendorPayments": ("vendorpayment", None),
}
"""Entity set → sample file stems (``dynamics_<stem>_get.json``) of its records and of its lines."""

EXPECTED_DLQ = {"vendorPayments": 1}
"""The reference page's vendor payment example is an empty object ``{}``: nothing to map, so a DLQ record.
Every other sample is a real record; one of them in the DLQ is a mapping regression."""


@dataclass
class Tally:
    """What became of one entity set's sample records."""

    records: list[Doc]
    raw: list[Doc]  # the same records with every number as a Decimal of its JSON token
    lines_key: str | None = None
    lines_attached: int = 0
    lines_orphaned: int = 0
    events: list[Doc] = field(default_factory=list)
    dlq: list[tuple[str, str, bytes]] = field(default_factory=list)  # stage, message, payload
    filtered: Counter[str] = field(default_factory=Counter)
    rereads_filtered: Counter[str] = field(default_factory=Counter)
    stats: Stats | None = None
    rereads: Stats | None = None


def _records(doc: Any) -> list[Doc]:
    """A sample file's records: a collection's ``value``, else the one entity it is."""
    if isinstance(doc, dict) and isinstance(doc.get("value"), list):
        return list(doc["value"])
    return [doc]


def _load(root: Path, stem: str) -> tuple[list[Doc], list[Doc]]:
    """(records as the connector parses pages, the same with each number as the Decimal of its token)."""
    data = (root / f"dynamics_{stem}_get.json").read_bytes()
    return _records(exact_json.loads(data)), _records(json.loads(data, parse_float=Decimal, parse_int=Decimal))


def _samples(root: Path) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for entity, (stem, line_stem) in SETS.items():
        records, raw = _load(root, stem)
        tally = Tally(records, raw)
        if line_stem is not None:
            lines, raw_lines = _load(root, line_stem)
            tally.lines_key = ENTITIES[entity].expand
            assert tally.lines_key, f"{entity}: lines in the samples, but the preset expands none"
            for record, raw_record in zip(records, raw, strict=True):
                mine = [i for i, line in enumerate(lines) if line.get("documentId") == record.get("id")]
                record[tally.lines_key] = [lines[i] for i in mine]
                raw_record[tally.lines_key] = [raw_lines[i] for i in mine]
                tally.lines_attached += len(mine)
            tally.lines_orphaned = len(lines) - tally.lines_attached
        tallies[entity] = tally
    return tallies


async def _pass(store: CheckpointStore, connector: ErpODataConnector, entity: str) -> tuple[list[Any], Stats]:
    """One poll through the real pipeline, checkpoint store and a memory sink: (sink events, its counts)."""
    stats = Stats("acme", entity)
    sink = MemorySink()
    pipeline = Pipeline(connector, Enveloper("acme", entity), sink, store, stats)
    await pipeline.run(await store.load("acme", entity), asyncio.Event())
    return list(sink.events), stats


async def _run(server: OdataTestServer, store: CheckpointStore, entity: str, tally: Tally) -> None:
    settings = ErpODataSettings(
        http=HttpSettings(base_url=server.url, backoff_initial_seconds=0.01, backoff_max_seconds=0.05),
        entity=entity,  # a key of SETS, checked against ENTITIES first
        company_id=COMPANY,
        local_currency=LOCAL,
    )
    connector = ErpODataConnector(IntegrationContext("acme", entity, zone=ZONE), settings)
    async with connector:
        first, tally.stats = await _pass(store, connector, entity)
        again, tally.rereads = await _pass(store, connector, entity)
    for event in first:
        if event.topic.startswith("inlet."):
            headers = dict(event.headers)
            tally.dlq.append((headers["dlq_stage"].decode(), headers["dlq_error_message"].decode(), event.value))
        else:
            tally.events.append(orjson.loads(event.value))
    tally.filtered = Counter(tally.stats.totals.filtered)
    tally.rereads_filtered = Counter(tally.rereads.totals.filtered)
    assert not [e for e in again if not e.topic.startswith("inlet.dlq")], f"{entity}: a re-read row delivered again"


def _table(tallies: dict[str, Tally]) -> str:
    out = [
        f"{'entity set':<21}{'sample':>7}{'lines':>7}{'events':>8}{'dlq':>5}{'filtered':>9}"
        f"{'unacc.':>8}   pass 2: {'read':>4}{'filtered':>9}{'dlq':>5}"
    ]
    for entity, t in tallies.items():
        assert t.stats is not None and t.rereads is not None
        lines = f"{t.lines_attached}" if t.lines_key else "-"
        out.append(
            f"{entity:<21}{len(t.records):>7}{lines:>7}{len(t.events):>8}{len(t.dlq):>5}{t.filtered.total():>9}"
            f"{_unaccounted(t):>8}           {t.rereads.totals.records_in:>4}{t.rereads_filtered.total():>9}"
            f"{t.rereads.totals.dlq.total():>5}"
        )
        if t.lines_orphaned:
            out.append(f"    {t.lines_orphaned} sample line(s) name no {entity} header by documentId: not served")
        out += [f"    dlq ({stage}): {message}" for stage, message, _ in t.dlq]
        out += [f"    filtered {n} x {reason}" for reason, n in t.filtered.items()]
        out += [f"    pass 2 filtered {n} x {reason}" for reason, n in t.rereads_filtered.items()]
    return "\n".join(out)


def _unaccounted(t: Tally) -> int:
    return len(t.records) - len(t.events) - len(t.dlq) - t.filtered.total()


def _vocabulary(tallies: dict[str, Tally]) -> set[str]:
    """Every Business Central field name in the samples, lines included."""
    words: set[str] = set()
    for t in tallies.values():
        for record in t.records:
            words |= set(record)
            for line in record.get(t.lines_key or "", None) or ():
                words |= set(line)
    return words


def _unactionable(entity: str, message: str, record: Any, vocabulary: set[str]) -> str | None:
    """Why a DLQ reason would not let a person act, or None: it must say which record (``<entity>/<id>``) and
    name a Business Central field with its value — or say the field is missing, when the record has none."""
    if not message.startswith(f"{entity}/"):
        return "does not name the record"
    named = [f for f in vocabulary if re.search(rf"\b{re.escape(f)}\b", message)]
    if not named:
        return "names no field"
    for name in named:
        value = record.get(name) if isinstance(record, dict) else None
        if value in (None, "", []):
            if re.search(r"missing|None|\bno ", message):
                return None
        elif str(value) in message or repr(value) in message:
            return None
    return f"names {named} but neither its value nor that it is missing"


def _not_adding_up(tallies: dict[str, Tally]) -> list[str]:
    """The invoices whose lines do not add up to their net total, or net + tax to gross (sample numbers)."""
    out = []
    for entity, t in tallies.items():
        if not t.lines_key:
            continue
        doc = f"{'sales' if entity.startswith('sales') else 'purchase'} "
        doc += "credit memo" if "CreditMemo" in entity else "invoice"
        for r in t.raw:
            lines = r[t.lines_key]
            net, tax, gross = r["totalAmountExcludingTax"], r["totalTaxAmount"], r["totalAmountIncludingTax"]
            out += [f"{doc} {r['number']}"] * (net + tax != gross)
            out += [f"{doc} {r['number']}"] * bool(lines and sum(x["amountExcludingTax"] for x in lines) != net)
    return out


def _text(value: Decimal, negate: bool = False) -> str:
    """The amount as the sample's JSON wrote it; a credit memo's with its sign changed (zero stays zero)."""
    return str(-value if negate and value != 0 else value)


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None and moment.utcoffset() == UTC.utcoffset(None), text
    return moment


def _check_invoice(entity: str, event: Doc, r: Doc, lines_key: str) -> None:
    credit_memo = "CreditMemo" in entity
    sales = entity.startswith("sales")
    assert event["kind"] == ("sales" if sales else "purchase")
    assert event["invoice_id"] == r["id"]
    assert event["invoice_number"] == r["number"]
    assert event["party_number"] == r["customerNumber" if sales else "vendorNumber"]
    assert event["status"] == {"Draft": "draft", "Open": "open", "Paid": "paid"}[r["status"]]
    assert event["issue_date"] == r["creditMemoDate" if credit_memo else "invoiceDate"]
    assert event["due_date"] == r["dueDate"]
    assert event["currency"] == (r["currencyCode"] or LOCAL)
    assert event["prices_include_tax"] is r["pricesIncludeTax"]
    for ours, theirs in [
        ("net_amount", "totalAmountExcludingTax"),
        ("tax_amount", "totalTaxAmount"),
        ("gross_amount", "totalAmountIncludingTax"),
        ("amount_due", "remainingAmount"),
    ]:
        if theirs not in r:
            assert event[ours] is None, (entity, ours)
            continue
        assert event[ours] == _text(r[theirs], credit_memo), (entity, ours, event[ours], r[theirs])
        assert Decimal(event[ours]) == (-r[theirs] if credit_memo else r[theirs])
    price = "unitPrice" if sales else "unitCost"  # purchase lines state a unit cost
    assert len(event["lines"]) == len(r[lines_key])
    for got, line in zip(event["lines"], sorted(r[lines_key], key=lambda x: x["sequence"]), strict=True):
        assert got["source_line_id"] == line["id"]
        assert got["item_number"] == line["lineObjectNumber"]
        assert got["description"] == line["description"]
        assert got["quantity"] == _text(line["quantity"], credit_memo)
        assert got["unit_price"] == _text(line[price])
        assert got["line_amount"] == _text(line["amountExcludingTax"], credit_memo)
        assert got["tax_amount"] == _text(line["totalTaxAmount"], credit_memo)
        assert got["tax_rate"] == _text(line["taxPercent"])  # 6.00006 as written
        assert got["tax_code"] == line["taxCode"]


def _check_party(entity: str, event: Doc, r: Doc) -> None:
    assert event["kind"] == ("customer" if entity == "customers" else "vendor")
    assert (event["party_id"], event["number"], event["name"]) == (r["id"], r["number"], r["displayName"])
    assert event["country"] == r["country"]
    assert event["currency"] == (r["currencyCode"] or LOCAL)
    assert event["blocked"] is False and event["block_scope"] is None  # " " is Business Central's not blocked
    if entity == "customers":
        assert event["party_type"] == r["type"].lower()


def _check_payment(entity: str, event: Doc, r: Doc) -> None:
    assert event["direction"] == ("received" if entity == "customerPayments" else "made")
    assert event["payment_id"] == r["id"]
    assert event["payment_number"] == r["documentNumber"]
    assert event["party_number"] == r["customerNumber" if entity == "customerPayments" else "vendorNumber"]
    assert event["amount"] == _text(r["amount"])
    assert Decimal(event["amount"]) == r["amount"]
    assert event["currency"] == LOCAL  # the sample states no currency: the company's local one
    # A posting date is the start of that day in the connection's zone (Chicago: 06:00 UTC in winter).
    start = datetime.combine(date.fromisoformat(r["postingDate"]), time(), ZoneInfo(ZONE))
    assert _utc(event["paid_at"]) == start
    assert event["paid_at_precision"] == "day"
    assert [a["invoice_number"] for a in event["invoices"]] == [r["appliesToInvoiceNumber"]]


async def test_every_business_central_sample_maps_or_goes_to_the_dlq_with_a_reason(
    sample_data: Path, checkpoint_store: CheckpointStore, capsys: pytest.CaptureFixture[str]
) -> None:
    v4 = {name for name, e in ENTITIES.items() if e.dialect == "odata4"}
    assert v4 == set(SETS), f"OData v4 presets without a sample here (add their files to SETS): {v4 - set(SETS)}"
    tallies = _samples(sample_data / SAMPLES)
    server = OdataTestServer(
        {entity: t.records for entity, t in tallies.items()},
        dialect="odata4",
        company=COMPANY,
        expand={entity: t.lines_key for entity, t in tallies.items() if t.lines_key},
    )

    with server, structlog.testing.capture_logs() as logs:
        for entity, tally in tallies.items():
            await _run(server, checkpoint_store, entity, tally)
    flagged = sorted((log["document"], log["event"]) for log in logs if "do not add up" in log["event"])
    with capsys.disabled():
        print(f"\nBusiness Central samples (zone {ZONE}, local currency {LOCAL}):\n{_table(tallies)}")
        print("\n".join(f"flagged, passed on as stated: {doc}: {what}" for doc, what in flagged))
    # Totals that do not add up are flagged, never corrected: computed here from the samples' own numbers.
    assert [doc for doc, _ in flagged] == sorted(_not_adding_up(tallies))

    vocabulary = _vocabulary(tallies)
    for entity, t in tallies.items():
        assert t.stats is not None and t.rereads is not None
        assert t.stats.totals.records_in == len(t.records), f"{entity}: not every sample record was served and read"
        assert t.stats.totals.balanced() and _unaccounted(t) == 0, f"{entity}: unaccounted records\n{_table(tallies)}"
        assert len(t.dlq) == EXPECTED_DLQ.get(entity, 0), f"{entity}: {[(s, m) for s, m, _ in t.dlq]}"
        for stage, message, payload in t.dlq:
            problem = _unactionable(entity, message, orjson.loads(payload), vocabulary)
            assert problem is None, f"{entity}: DLQ reason ({stage}) {problem}: {message}"
        assert not t.filtered, f"{entity}: first pass filtered {t.filtered}"
        # The second pass reads every dated row again (overlap window) and filters each as delivered. A row
        # without a modification time moves no watermark: while the set has none, the pass reads it (and sends
        # it to the DLQ) again; once it has one, ``lastModifiedDateTime ge ...`` leaves such a row out.
        dated = sum(1 for r in t.records if r.get("lastModifiedDateTime"))
        assert t.rereads_filtered.total() == dated
        assert all(reason.startswith("already delivered") for reason in t.rereads_filtered)
        again = t.rereads.totals.dlq.total()
        assert again == (0 if dated else len(t.records))
        assert t.rereads.totals.records_in == dated + again and t.rereads.totals.balanced()

        by_id = {r.get("id"): r for r in t.raw}
        assert len(t.events) == len(t.records) - len(t.dlq)
        for event in t.events:
            key = {"erp.invoice": "invoice_id", "erp.party": "party_id", "erp.payment": "payment_id"}
            contract = ENTITIES[entity].contract.contract_name
            r = by_id[event[key[contract]]]
            assert _utc(event["last_modified"]) == datetime.fromisoformat(r["lastModifiedDateTime"])
            if contract == "erp.invoice":
                _check_invoice(entity, event, r, t.lines_key or "")
            elif contract == "erp.party":
                _check_party(entity, event, r)
            else:
                _check_payment(entity, event, r)
    assert sum(t.lines_attached for t in tallies.values()) >= 2, "the invoice lines were not attached"
