"""Mapping coverage on Xero's own response examples (``erp/xero-openapi/extracted-response-examples``, read in
place, never copied): every invoice, credit note, payment and contact in them goes through the Xero connector's
hooks for its endpoint (decode, filter, map, the event's own serialisation) and becomes events, a DLQ record
with a reason (MappingError, DecodeError or the contract's ValidationError) or is filtered with a stated reason.
Anything else is unaccounted and fails the test; a table of what became of each is printed.

The files are the examples of Xero's OpenAPI spec for GET, PUT and POST (the records have one shape for all
three), plus the contacts a ``ContactGroups`` answer lists (references, not full contacts: the DLQ says so).
They are parsed as the connector parses pages (``core.exact_json``), so ``34.5`` reaches the mapping as written.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inlet.connectors.erp_rest.xero import XERO_ENDPOINTS, ErpXeroConnector, ErpXeroSettings
from inlet.contracts.base import Contract
from inlet.core import exact_json
from inlet.core.connector import IntegrationContext
from inlet.core.errors import DecodeError, MappingError
from inlet.core.http import HttpSettings

ZONE = "Pacific/Auckland"


@dataclass
class Tally:
    """What became of the records of one endpoint from one file."""

    records: int = 0
    events: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    unaccounted: list[str] = field(default_factory=list)


def _connector(endpoint: str) -> ErpXeroConnector:
    settings = ErpXeroSettings(
        http=HttpSettings(base_url="https://api.xero.invalid/api.xro/2.0"), tenant_id="t", endpoint=endpoint
    )
    return ErpXeroConnector(IntegrationContext("acme", "xero", zone=ZONE), settings)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{exc.title} {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return re.sub(r"^\w+/[^:]*: ", "", str(exc))[:100]


def _outcome(connector: ErpXeroConnector, raw: Any, tally: Tally) -> list[Contract]:
    tally.records += 1
    try:
        record = connector.decode(raw)
        if reason := connector.filter(record):
            tally.filtered[reason] += 1
            return []
        events = list(connector.map(record))
        for ev in events:
            type(ev).model_validate_json(ev.model_dump_json())  # the event survives its own serialisation
    except (MappingError, DecodeError, ValidationError) as exc:
        tally.dlq[_reason(exc)] += 1
        return []
    except Exception as exc:  # the point: anything else is unaccounted, reported below
        tally.unaccounted.append(f"{type(exc).__name__}: {exc}")
        return []
    if not events:
        tally.unaccounted.append("map() returned no events")
    tally.events += len(events)
    return events


def _table(tallies: dict[tuple[str, str], Tally]) -> str:
    lines = [f"{'endpoint':<12}{'file':<58}{'records':>8}{'events':>7}{'dlq':>5}{'filt.':>6}{'unacc.':>7}"]
    for (endpoint, name), t in sorted(tallies.items()):
        short = name.removeprefix("xero_accounting_").removesuffix("_example.json")
        lines.append(
            f"{endpoint:<12}{short:<58}{t.records:>8}{t.events:>7}{t.dlq.total():>5}{t.filtered.total():>6}"
            f"{len(t.unaccounted):>7}"
        )
    for kind in ("dlq", "filtered"):
        reasons = sum((getattr(t, kind) for t in tallies.values()), Counter[str]())
        lines += [f"    {kind} {n:>3} x {reason}" for reason, n in reasons.most_common()]
    return "\n".join(lines)


def test_every_xero_sample_becomes_events_a_dlq_record_or_is_filtered(
    sample_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = sample_data / "erp/xero-openapi/extracted-response-examples"
    tallies: dict[tuple[str, str], Tally] = {}
    events: dict[str, list[Any]] = {name: [] for name in XERO_ENDPOINTS}
    for path in sorted(folder.glob("xero_accounting_*.json")):
        doc = exact_json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            continue
        for endpoint in XERO_ENDPOINTS:
            records = doc.get(endpoint)
            if not isinstance(records, list) or not records:
                continue
            connector, tally = _connector(endpoint), tallies.setdefault((endpoint, path.name), Tally())
            for raw in records:
                events[endpoint] += _outcome(connector, raw, tally)
    with capsys.disabled():
        print(f"\nXero sample coverage (zone {ZONE}):\n{_table(tallies)}")

    unaccounted = [f"{e} {f}: {u}" for (e, f), t in tallies.items() for u in t.unaccounted]
    assert not unaccounted, "records neither mapped, nor DLQ, nor filtered:\n" + "\n".join(unaccounted)
    for endpoint in XERO_ENDPOINTS:
        assert events[endpoint], f"no {endpoint} sample mapped: is the data there?"

    # What the samples hold, mapped by the rules: credit notes negative with the ERP's digits ...
    cn = next(e for e in events["CreditNotes"] if e.invoice_number == "CN-0005")
    assert (cn.kind, cn.net_amount, cn.tax_amount, cn.gross_amount, cn.amount_due) == (
        "sales",
        "-30.0",
        "-4.5",
        "-34.5",
        "-32.5",
    )
    assert all(Decimal(e.gross_amount) < 0 for e in events["CreditNotes"])
    # ... a credit note's refund negative, a deleted payment an event with that status ...
    payments = {e.payment_id: e for e in events["Payments"]}
    refund = payments["6b037c9b-2e5d-4905-84d3-eabfb3438242"]  # ARCREDITPAYMENT of CN-0005, "Too much"
    assert (refund.direction, refund.amount, refund.invoices[0].invoice_number) == ("received", "-2.0", "CN-0005")
    assert payments["c94c996b-1ab3-4ff3-ad19-1cdc77f30817"].status == "deleted"
    assert payments["99ea7f6b-c513-4066-bc27-b7c65dcd76c2"].paid_at_precision == "day"
    # ... and a contact that is customer and supplier two parties.
    acme = [e for e in events["Contacts"] if e.number == "SB2"]
    assert {e.kind for e in acme} == {"customer", "vendor"} and all(e.currency == "USD" for e in acme)
    # A purchase credit note without a number (Xero does not require one) is a DLQ record saying so.
    assert any("CreditNoteNumber is missing" in r for t in tallies.values() for r in t.dlq)
