"""The ERP REST family's SAP Business One dialect (connectors.erp_rest.b1) against the local Service Layer test
server: session login and re-login, ``odata.nextLink`` / ``$skip`` paging, exact money in the document's
currency, ``tYES`` / ``tNO``, cancelled documents, ``UpdateDate`` + ``UpdateTime`` as Zurich wall time (DST days
checked against zoneinfo by hand), the day-bound delta rule, bad pages, the Alpenholz recording with its session
login (no password, digest of it or session id in the fixture; offline replay without the password), and the fields
read against B1's ``$metadata`` (read in place from the shared samples)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from inlet.connectors.customers.alpenholz import TRAINING_SERIES, AlpenholzInvoices
from inlet.connectors.erp_rest.b1 import (
    B1_CARD_TYPE,
    B1_COMPANY_TYPE,
    B1_DOCUMENT_STATUS,
    ErpB1Connector,
    ErpB1Settings,
    b1_modified,
    bound_day,
    yes_no,
)
from inlet.connectors.erp_rest.synth import b1_business_partners, b1_invoices, b1_wall
from inlet.core.auth import SessionLoginSettings
from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import load_config
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.errors import AuthError, ConfigError, MappingError
from inlet.core.fixtures import golden_diff, replay
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.redact import scan_for_leaks
from inlet.core.secrets import OfflineSecret
from inlet.core.sinks.memory import MemorySink
from tools.record_erp import B1_PASSWORD_ENV, record_b1
from tools.record_hospitals import CONFIG
from tools.servers.b1 import B1TestServer

ZONE = "Europe/Zurich"
ZURICH = ZoneInfo(ZONE)
Doc = dict[str, Any]


class _Feed:
    """One integration polled through the real pipeline, checkpoint store and a memory sink."""

    def __init__(self, store: CheckpointStore, connector: ErpB1Connector) -> None:
        self.connector = connector
        self.store = store
        self.stats = Stats("acme", "b1")
        self.dlq: list[Any] = []

    async def poll(self) -> list[Doc]:
        sink = MemorySink()
        pipeline = Pipeline(self.connector, Enveloper("acme", "b1"), sink, self.store, self.stats)
        await pipeline.run(await self.store.load("acme", "b1"), asyncio.Event())
        self.dlq += [e for e in sink.events if e.topic.startswith("inlet.")]
        return [orjson.loads(e.value) for e in sink.events if not e.topic.startswith("inlet.")]


@pytest.fixture(autouse=True)
def _b1_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B1_TEST_PASSWORD", "b1-test-password")  # what B1TestServer accepts
    monkeypatch.setenv("B1_TEST_WRONG_PASSWORD", "not-the-password")


def _login(server: B1TestServer, password: str = "B1_TEST_PASSWORD", **extra: Any) -> SessionLoginSettings:
    raw = {"login_url": server.login_url, "username": "inlet", "company": server.company, **extra}
    return SessionLoginSettings.model_validate({**raw, "password": {"env": password}})


def _b1(
    server: B1TestServer,
    cls: type[ErpB1Connector] = ErpB1Connector,
    *,
    entity: str = "Invoices",
    page_size: int = 5,
    password: str = "B1_TEST_PASSWORD",
    **extra: Any,
) -> ErpB1Connector:
    settings = ErpB1Settings(
        http=HttpSettings(
            base_url=server.url,
            auth=_login(server, password),
            backoff_initial_seconds=0.01,
            backoff_max_seconds=0.05,
            max_attempts=2,
        ),
        entity=entity,
        local_currency="CHF",
        page_size=page_size,
        **extra,
    )
    return cls(IntegrationContext("acme", "b1", zone=ZONE), settings)


def _zurich(day: str, clock: str, fold: int = 0) -> datetime:
    """Zurich wall time to UTC by hand (zoneinfo; ``fold`` picks the occurrence of a repeated hour)."""
    wall = datetime.fromisoformat(f"{day[:10]}T{clock}").replace(tzinfo=ZURICH, fold=fold)
    return wall.astimezone(UTC)


def _partners() -> list[Doc]:
    return b1_business_partners(12)


def _invoices(n: int = 24, **kw: Any) -> list[Doc]:
    return b1_invoices(n, _partners(), **kw)


def _pages(server: B1TestServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/Invoices"]


# --- mapping, login, paging ----------------------------------------------------------------------------------


async def test_invoices_map_with_exact_money_in_the_document_currency_and_zurich_times(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = _invoices(24)
    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, page_size=5))
        async with feed.connector:
            events = await feed.poll()
        login, *pages = server.requests
        assert (login.method, login.path) == ("POST", "/Login") and server.logins == 1
        assert all("B1SESSION=" in p.headers["cookie"] and "ROUTEID=" in p.headers["cookie"] for p in pages)
        assert all(p.headers["prefer"] == "odata.maxpagesize=5" for p in pages)
        assert [p.query.get("$skip") for p in pages] == [None, ["5"], ["10"], ["15"], ["20"]]
        assert pages[0].query["$orderby"] == ["UpdateDate asc,UpdateTime asc,DocEntry asc"]
        assert "$filter" not in pages[0].query  # the first pass reads everything
    assert feed.dlq == [] and feed.stats.totals.balanced()
    assert len(events) == len(invoices)
    by_id = {e["invoice_id"]: e for e in events}
    for inv in invoices:
        event = by_id[str(inv["DocEntry"])]
        foreign = inv["DocCurrency"] != "CHF"
        gross, tax = (inv["DocTotalFc"], inv["VatSumFc"]) if foreign else (inv["DocTotal"], inv["VatSum"])
        assert event["currency"] == inv["DocCurrency"]
        assert event["gross_amount"] == str(gross) and event["tax_amount"] == str(tax)
        assert Decimal(event["net_amount"]) == Decimal(str(gross)) - Decimal(str(tax))
        assert event["invoice_number"] == str(inv["DocNum"]) and event["party_number"] == inv["CardCode"]
        assert event["issue_date"] == inv["DocDate"][:10] and event["due_date"] == inv["DocDueDate"][:10]
        assert event["status"] == ("void" if inv["Cancelled"] == "tYES" else B1_DOCUMENT_STATUS[inv["DocumentStatus"]])
        line_key = "RowTotalFC" if foreign else "LineTotal"
        assert [line["line_amount"] for line in event["lines"]] == [str(x[line_key]) for x in inv["DocumentLines"]]
        assert datetime.fromisoformat(event["last_modified"]) == _zurich(inv["UpdateDate"], inv["UpdateTime"])
        assert event["last_modified_precision"] == "second"
    assert {"EUR", "CHF"} == {e["currency"] for e in events}
    assert "void" in {e["status"] for e in events}, "the data must hold cancelled documents"
    assert any(str(i["DocTotal"]).endswith("0") and "." in str(i["DocTotal"]) for i in invoices) or any(
        str(x["LineTotal"]).endswith("0") for i in invoices for x in i["DocumentLines"]
    )


async def test_a_session_that_expired_is_renewed_once_and_the_pass_goes_on(checkpoint_store: CheckpointStore) -> None:
    invoices = _invoices(12)

    def expire(server: B1TestServer, page: int) -> None:
        if page == 1:
            server.expire_sessions()  # the server's idle timeout strikes after page 1 is served

    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, page_size=5))
        async with feed.connector:
            server.on_page = expire
            events = await feed.poll()
        statuses = [(r.method, r.path, r.status) for r in server.requests]
    assert server.logins == 2
    assert statuses == [
        ("POST", "/Login", 200),
        ("GET", "/Invoices", 200),
        ("GET", "/Invoices", 401),
        ("POST", "/Login", 200),
        ("GET", "/Invoices", 200),
        ("GET", "/Invoices", 200),
    ]
    assert sorted(e["invoice_id"] for e in events) == sorted(str(i["DocEntry"]) for i in invoices)


async def test_a_session_idle_past_its_timeout_is_renewed_before_the_request() -> None:
    with B1TestServer({"Invoices": _invoices(3)}, session_timeout_seconds=0.6) as server:
        auth = _login(server, session_timeout_seconds=0.6)
        settings = ErpB1Settings(
            http=HttpSettings(base_url=server.url, auth=auth), entity="Invoices", local_currency="CHF"
        )
        connector = ErpB1Connector(IntegrationContext("acme", "b1-idle", zone=ZONE), settings)
        async with connector:
            first = [b async for b in connector.read(None)]
            await asyncio.sleep(0.7)
            second = [b async for b in connector.read(None)]
        assert sum(len(b.records) for b in first) == sum(len(b.records) for b in second) == 3
        assert server.logins == 2 and all(r.status != 401 for r in server.requests)


async def test_a_refused_login_is_an_auth_error() -> None:
    with B1TestServer({"Invoices": _invoices(3)}) as server:
        connector = _b1(server, password="B1_TEST_WRONG_PASSWORD")
        async with connector:
            with pytest.raises(AuthError, match="100000027 - Login failed"):
                [b async for b in connector.read(None)]


# --- time ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update_date", "update_time", "fold"),
    [
        ("2026-03-29", "01:59:59", 0),  # the last second of CET on the spring change day
        ("2026-03-29", "03:00:00", 0),  # the first of CEST: one second later
        ("2026-03-29T00:00:00", "14:05:09", 0),  # the older UpdateDate form
        ("2026-10-25", "02:30:00", 0),  # the repeated autumn hour: the first occurrence (CEST)
        ("2026-10-25", "03:00:00", 0),
        ("2026-12-31", "23:59:59", 0),
    ],
)
def test_update_date_and_time_are_zurich_wall_time(update_date: str, update_time: str, fold: int) -> None:
    instant = b1_modified({"UpdateDate": update_date, "UpdateTime": update_time}, ZONE)
    assert instant.utc == _zurich(update_date, update_time, fold)
    assert instant.precision == "second"


def test_every_update_time_form_b1_writes_gives_the_same_instant() -> None:
    expected = _zurich("2026-03-30", "14:05:09")
    for value in ("14:05:09", 140509, "PT14H05M09S", "14:05:09.000"):
        assert b1_modified({"UpdateDate": "2026-03-30", "UpdateTime": value}, ZONE).utc == expected, value
    assert b1_modified({"UpdateDate": "2026-03-30", "UpdateTime": 50709}, ZONE).utc == _zurich("2026-03-30", "05:07:09")
    day = b1_modified({"UpdateDate": "2026-03-30", "UpdateTime": None}, ZONE)
    assert (day.utc, day.precision) == (_zurich("2026-03-30", "00:00:00"), "day")
    for bad in ("25:00:00", 246000, "noon", True):
        with pytest.raises(MappingError, match="UpdateTime"):
            b1_modified({"UpdateDate": "2026-03-30", "UpdateTime": bad}, ZONE)
    with pytest.raises(MappingError, match="UpdateDate is missing"):
        b1_modified({"UpdateTime": "10:00:00"}, ZONE)


def test_the_bound_is_the_server_day_of_watermark_minus_overlap() -> None:
    wm = _zurich("2026-03-29", "00:03:00")  # 23:03 UTC the day before
    assert bound_day(wm, 0, ZONE) == date(2026, 3, 29)
    assert bound_day(wm, 300, ZONE) == date(2026, 3, 28)  # five minutes earlier is the evening before
    assert bound_day(_zurich("2026-03-29", "03:00:00"), 300, ZONE) == date(2026, 3, 29)


def test_the_synthetic_stamps_are_what_a_zurich_clock_shows() -> None:
    assert b1_wall(datetime(2026, 3, 29, 0, 59, 59, 900_000, tzinfo=UTC)) == ("2026-03-29", "01:59:59")
    assert b1_wall(datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC)) == ("2026-03-29", "03:00:00")


# --- enums, cancellations, parties ---------------------------------------------------------------------------


def test_yes_no_is_strict() -> None:
    assert yes_no("tYES", "x") is True and yes_no("tNO", "x") is False
    for bad in ("Y", "N", True, None, "tyes"):
        with pytest.raises(MappingError, match="expected tYES or tNO"):
            yes_no(bad, "x")


async def test_cancelled_documents_arrive_void_and_cancellation_documents_are_filtered(
    checkpoint_store: CheckpointStore,
) -> None:
    invoices = _invoices(8)
    for inv in invoices:
        inv.update(Cancelled="tNO", CancelStatus="csNo", DocumentStatus="bost_Open")
    invoices[1].update(Cancelled="tYES", CancelStatus="csYes", DocumentStatus="bost_Close")
    invoices[2].update(CancelStatus="csCancellation", DocumentStatus="bost_Close")
    invoices[3].update(Cancelled="Y")  # not what B1 writes: a DLQ record naming the field
    last = invoices[-1]
    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server))
        async with feed.connector:
            run1 = await feed.poll()
            # Accounting cancels an open invoice later: the same document arrives again, now void.
            day, clock = b1_wall(_zurich(last["UpdateDate"], last["UpdateTime"]) + timedelta(minutes=10))
            server.modify("Invoices", invoices[0]["DocEntry"], day, clock, Cancelled="tYES", CancelStatus="csYes")
            run2 = await feed.poll()
    statuses = {e["invoice_id"]: e["status"] for e in run1}
    assert statuses[str(invoices[1]["DocEntry"])] == "void"
    assert str(invoices[2]["DocEntry"]) not in statuses and str(invoices[3]["DocEntry"]) not in statuses
    assert len(run1) == 6 and any("cancellation document" in reason for reason in feed.stats.totals.filtered)
    [dlq] = feed.dlq
    message = dict(dlq.headers)["dlq_error_message"]
    assert b"Cancelled: expected tYES or tNO, got 'Y'" in message
    assert [(e["invoice_id"], e["status"]) for e in run2] == [(str(invoices[0]["DocEntry"]), "void")]


async def test_business_partners_map_with_flags_and_leads_are_filtered(checkpoint_store: CheckpointStore) -> None:
    partners = b1_business_partners(23)
    with B1TestServer({"BusinessPartners": partners}) as server:
        feed = _Feed(checkpoint_store, _b1(server, entity="BusinessPartners", page_size=7))
        async with feed.connector:
            events = await feed.poll()
        assert _pages(server) == [] and {r.path for r in server.requests} == {"/Login", "/BusinessPartners"}
        assert server.requests[1].query["$orderby"] == ["UpdateDate asc,UpdateTime asc,CardCode asc"]
    leads = [p for p in partners if p["CardType"] == "cLid"]
    assert leads and feed.dlq == []
    assert feed.stats.totals.filtered == {"lead (CardType cLid): not a customer or supplier yet": len(leads)}
    by_code = {e["number"]: e for e in events}
    assert len(by_code) == len(partners) - len(leads)
    for p in partners:
        if p["CardType"] == "cLid":
            continue
        event = by_code[p["CardCode"]]
        assert event["kind"] == B1_CARD_TYPE[p["CardType"]]
        assert event["party_type"] == B1_COMPANY_TYPE[p["CompanyPrivate"]]
        assert event["blocked"] is (p["Frozen"] == "tYES")
        assert event["block_scope"] == ("all" if p["Frozen"] == "tYES" else None)
        assert event["currency"] == (None if p["Currency"] == "##" else p["Currency"])
        assert event["tax_id"] == p["FederalTaxID"] and event["country"] == p["Country"]
    assert {True, False} == {e["blocked"] for e in events} and None in {e["currency"] for e in events}


# --- delta ---------------------------------------------------------------------------------------------------


def _ids(events: list[Doc]) -> list[str]:
    return sorted(e["invoice_id"] for e in events)


def _entries(*rows: Doc) -> list[str]:
    return sorted(str(r["DocEntry"]) for r in rows)


def _later(row: Doc, minutes: float) -> tuple[str, str]:
    return b1_wall(_zurich(row["UpdateDate"], row["UpdateTime"]) + timedelta(minutes=minutes))


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 3, 29, 0, 50, tzinfo=UTC),  # one day: the day bound alone would read the row again
        datetime(2026, 3, 28, 22, 40, tzinfo=UTC),  # 23:40 in Zurich: the pass ends the next day, and only the
        # watermark held where the pass began brings the skipped row (modified the day before) back
    ],
    ids=["same-day", "across-midnight"],
)
async def test_three_runs_with_changes_between_and_during_deliver_every_change_once(
    checkpoint_store: CheckpointStore, start: datetime
) -> None:
    """Run 1 reads 20 invoices. Before run 2 four change (they move behind the 16 others: run 2's last page) and
    one gets the very stamp of the newest row delivered (same second). While run 2 asks for its last page an
    invoice of its first page changes and moves to the end: every row behind it moves up one place, so the first
    changed row slips onto the page already served — this pass never sees it. The watermark stays; run 3 brings
    only that row, run 4 nothing. Every modification arrives once."""
    invoices = _invoices(20, start=start)
    newest = invoices[-1]
    between = [invoices[i] for i in (5, 7, 9, 11)]
    during = invoices[2]

    def modify_during(server: B1TestServer, page: int) -> None:
        if page == 10:  # run 2's fifth and last page (run 1 took pages 1-5)
            server.modify("Invoices", during["DocEntry"], *_later(newest, 30), DocumentStatus="bost_Close")

    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, page_size=4))
        async with feed.connector:
            run1 = await feed.poll()
            for n, inv in enumerate(between, 1):
                server.modify("Invoices", inv["DocEntry"], *_later(newest, n), DocumentStatus="bost_Close")
            server.modify("Invoices", invoices[13]["DocEntry"], newest["UpdateDate"], newest["UpdateTime"])
            server.on_page = modify_during
            run2 = await feed.poll()
            server.on_page = None
            run3 = await feed.poll()
            run4 = await feed.poll()
        filters = [p.query.get("$filter") for p in _pages(server)]
    day = newest["UpdateDate"][:10]
    assert len(run1) == 20
    assert _ids(run2) == _entries(*between[1:], invoices[13], during)
    assert _ids(run3) == _entries(between[0]), "the next pass brings only the row the shift skipped"
    assert run4 == []
    assert filters[0] is None and all(f == [f"UpdateDate ge '{day}'"] for f in filters[5:15])  # runs 2 and 3
    versions = Counter((e["invoice_id"], e["last_modified"]) for e in run1 + run2 + run3)
    assert all(n == 1 for n in versions.values()), "every modification once"
    assert len(versions) == 20 + 6, "20 first versions and 6 modifications, none missed"
    assert feed.stats.totals.filtered, "the bound's day read again: what was delivered is left out with a reason"


async def test_a_pass_cut_after_a_page_resumes_without_gaps_or_repeats(checkpoint_store: CheckpointStore) -> None:
    """Seven rows share one UpdateDate/UpdateTime across the boundary of pages 1 and 2; the pass stops after page 1."""
    invoices = _invoices(12)
    for inv in invoices[:7]:
        inv["UpdateDate"], inv["UpdateTime"] = invoices[0]["UpdateDate"], invoices[0]["UpdateTime"]
    with B1TestServer({"Invoices": invoices}) as server:
        connector = _b1(server, page_size=4, overlap_seconds=0)
        async with connector:
            batches = connector.read(None)
            first = await anext(batches)
            await batches.aclose()  # type: ignore[attr-defined]
        feed = _Feed(checkpoint_store, _b1(server, page_size=4, overlap_seconds=0))
        await feed.store.save("acme", "b1", first.position)
        async with feed.connector:
            rest = await feed.poll()
    delivered = [str(r["DocEntry"]) for r in first.records] + [e["invoice_id"] for e in rest]
    assert Counter(delivered) == Counter(str(i["DocEntry"]) for i in invoices), "each once: none lost, none repeated"


async def test_changes_across_midnight_and_the_dst_change_are_read_by_the_day_bound(
    checkpoint_store: CheckpointStore,
) -> None:
    """Rows stamped just before midnight; then one changes at 00:02 the next day and one, committed late, is
    stamped 23:59:58 of the day before: the bound (the day of watermark minus five minutes) still reads it."""
    invoices = _invoices(6, start=datetime(2026, 3, 28, 22, 50, tzinfo=UTC))  # 23:50 in Zurich
    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, page_size=4))
        async with feed.connector:
            run1 = await feed.poll()
            server.modify("Invoices", invoices[0]["DocEntry"], "2026-03-29", "00:02:00", DocumentStatus="bost_Close")
            run2 = await feed.poll()
            server.modify("Invoices", invoices[1]["DocEntry"], "2026-03-28", "23:59:58", DocumentStatus="bost_Close")
            server.modify("Invoices", invoices[2]["DocEntry"], "2026-03-29", "03:00:01", DocumentStatus="bost_Close")
            run3 = await feed.poll()
        filters = [p.query.get("$filter") for p in _pages(server)]
    assert len(run1) == 6 and [e["invoice_id"] for e in run2] == [str(invoices[0]["DocEntry"])]
    assert sorted(e["invoice_id"] for e in run3) == sorted(str(invoices[i]["DocEntry"]) for i in (1, 2))
    assert ["UpdateDate ge '2026-03-28'"] in filters
    stamped = {e["invoice_id"]: e["last_modified"] for e in run3}
    assert datetime.fromisoformat(stamped[str(invoices[2]["DocEntry"])]) == datetime(2026, 3, 29, 1, 0, 1, tzinfo=UTC)


# --- bad pages -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("html_pages", b"not JSON"), ("truncated_pages", b"not JSON"), ("garbage_pages", b"value")],
)
async def test_a_bad_page_is_a_dlq_record_and_the_next_poll_reads_it_again(
    checkpoint_store: CheckpointStore, fault: str, reason: bytes
) -> None:
    invoices = _invoices(12)
    with B1TestServer({"Invoices": invoices}) as server:
        getattr(server, fault).add(2)
        feed = _Feed(checkpoint_store, _b1(server, page_size=5))
        async with feed.connector:
            first = await feed.poll()
            assert len(first) == 5 and len(feed.dlq) == 1
            headers = {k: bytes(v) for k, v in feed.dlq[0].headers}
            assert headers["dlq_stage"] == b"decode"
            assert b"not a usable Service Layer page" in headers["dlq_error_message"]
            assert reason in headers["dlq_error_message"] and b"skip=5" in headers["dlq_error_message"]
            second = await feed.poll()
    assert sorted(e["invoice_id"] for e in first + second) == sorted(str(i["DocEntry"]) for i in invoices)


# --- the customer --------------------------------------------------------------------------------------------


async def test_alpenholz_filters_its_training_series_and_pins_zurich(checkpoint_store: CheckpointStore) -> None:
    invoices = _invoices(10)
    for inv in invoices[::3]:
        inv["Series"] = TRAINING_SERIES
    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, AlpenholzInvoices))
        async with feed.connector:
            events = await feed.poll()
        settings = feed.connector.settings
    assert sorted(e["invoice_id"] for e in events) == sorted(
        str(i["DocEntry"]) for i in invoices if i["Series"] != TRAINING_SERIES
    )
    assert sum(feed.stats.totals.filtered.values()) == 4
    with pytest.raises(ConfigError, match="zone must be Europe/Zurich"):
        AlpenholzInvoices(IntegrationContext("acme", "b1", zone="Europe/Berlin"), settings)
    with pytest.raises(ConfigError, match="server's wall time"):
        ErpB1Connector(IntegrationContext("acme", "b1"), settings)


def test_alpenholz_is_recorded_with_its_session_login_and_replays_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "b1-test-" + secrets.token_hex(8)
    server = record_b1(tmp_path, password=password)
    fixtures = tmp_path / "alpenholz" / "invoices"
    raw = (fixtures / "http.jsonl").read_bytes()
    logins = [r for r in server.requests if r.path == "/Login"]
    sessions = {
        cookie.split("=", 1)[1]
        for r in server.requests
        for cookie in r.headers.get("cookie", "").split("; ")
        if cookie.startswith("B1SESSION=")
    }
    assert len(logins) == 2 and logins[0].status == 200 and sessions  # one session per pass, used on every page
    assert all(r.status == 200 for r in server.requests)
    planted = [
        password,
        hashlib.sha256(password.encode()).hexdigest(),
        *(hashlib.sha256(r.body).hexdigest() for r in logins),  # the login body as sent, byte for byte
        *sessions,
    ]
    assert scan_for_leaks(raw.decode(), secrets=planted, phi_values=[]) == []
    recorded = [orjson.loads(line) for line in raw.splitlines()]
    login_lines = [d for d in recorded if d["request"] == "POST /b1s/v1/Login"]
    assert len(login_lines) == 2 and all("body_sha256" not in d["match"] for d in login_lines)
    assert login_lines[0]["response"]["json"]["SessionId"] == "***"
    assert login_lines[0]["response"]["set_cookie_names"] == ["B1SESSION", "ROUTEID"]

    # Offline, as CI and `inlet replay` run it: no password anywhere, the recorded login answers a stand-in.
    monkeypatch.delenv(B1_PASSWORD_ENV, raising=False)
    _, [item] = load_config(CONFIG, only=["alpenholz/invoices"], offline=True)
    assert isinstance(item.settings.http.auth.password, OfflineSecret)  # type: ignore[attr-defined]
    assert golden_diff(fixtures, replay(item, fixtures)) == ""


# --- the $metadata -------------------------------------------------------------------------------------------

EDM = "{http://schemas.microsoft.com/ado/2009/11/edm}"


def test_the_fields_read_exist_in_the_service_layer_metadata_with_the_types_assumed(sample_data: Path) -> None:
    root = ET.parse(sample_data / "erp" / "sap-business-one-service-layer" / "metadata.xml").getroot()
    schema = next(root.iter(f"{EDM}Schema"))

    def props(tag: str, name: str) -> dict[str, str]:
        node = schema.find(f"{EDM}{tag}[@Name='{name}']")
        assert node is not None, name
        return {p.get("Name", ""): p.get("Type", "") for p in node.findall(f"{EDM}Property")}

    def members(name: str) -> set[str]:
        node = schema.find(f"{EDM}EnumType[@Name='{name}']")
        assert node is not None, name
        return {m.get("Name", "") for m in node.findall(f"{EDM}Member")}

    sets = {s.get("Name"): s.get("EntityType") for s in root.iter(f"{EDM}EntitySet")}
    assert sets["Invoices"] == "SAPB1.Document" and sets["BusinessPartners"] == "SAPB1.BusinessPartner"
    doc, line, bp, payment = (
        props("EntityType", "Document"),
        props("ComplexType", "DocumentLine"),
        props("EntityType", "BusinessPartner"),
        props("EntityType", "Payment"),
    )
    double, string, when = "Edm.Double", "Edm.String", "Edm.DateTime"
    assert {k: doc[k] for k in ("DocEntry", "DocNum", "UpdateDate", "UpdateTime", "DocDate", "DocDueDate")} == {
        "DocEntry": "Edm.Int32",
        "DocNum": "Edm.Int32",
        "UpdateDate": when,
        "UpdateTime": "Edm.Time",
        "DocDate": when,
        "DocDueDate": when,
    }
    for name in ("DocTotal", "DocTotalFc", "VatSum", "VatSumFc"):
        assert doc[name] == double, name
    assert doc["CardCode"] == doc["DocCurrency"] == string and doc["Series"] == "Edm.Int32"
    assert doc["Cancelled"] == "SAPB1.BoYesNoEnum" and doc["DocumentStatus"] == "SAPB1.BoStatus"
    assert doc["CancelStatus"] == "SAPB1.CancelStatusEnum" and doc["DocumentLines"] == "Collection(SAPB1.DocumentLine)"
    for name in (
        "Quantity",
        "Price",
        "LineTotal",
        "RowTotalFC",
        "NetTaxAmount",
        "NetTaxAmountFC",
        "TaxPercentagePerRow",
    ):
        assert line[name] == double, name
    for name in ("ItemCode", "ItemDescription", "VatGroup", "TaxCode", "UoMCode", "MeasureUnit"):
        assert line[name] == string, name
    assert line["LineNum"] == "Edm.Int32"
    assert (bp["UpdateDate"], bp["UpdateTime"], bp["CardCode"], bp["Country"]) == (when, "Edm.Time", string, string)
    assert bp["CardType"] == "SAPB1.BoCardTypes" and bp["CompanyPrivate"] == "SAPB1.BoCardCompanyTypes"
    assert bp["Frozen"] == "SAPB1.BoYesNoEnum" and bp["FederalTaxID"] == bp["VatIDNum"] == bp["Currency"] == string
    assert members("BoYesNoEnum") == {"tYES", "tNO"}
    assert set(B1_DOCUMENT_STATUS) <= members("BoStatus")
    assert {"csYes", "csNo", "csCancellation"} == members("CancelStatusEnum")
    assert {*B1_CARD_TYPE, "cLid"} == members("BoCardTypes")
    assert set(B1_COMPANY_TYPE) == members("BoCardCompanyTypes")
    assert "UpdateDate" not in payment and "UpdateTime" not in payment, "why IncomingPayments is not read"


async def test_a_row_dated_past_the_clock_does_not_move_the_watermark(checkpoint_store: CheckpointStore) -> None:
    """A document updated "in 2999" (a server clock, a migration bug) is delivered once; the watermark stays at the
    newest real change, so the next poll still asks from that day and gets what changed since."""
    invoices = _invoices(6)
    invoices[-1].update(UpdateDate="2999-01-01", UpdateTime="10:00:00")
    with B1TestServer({"Invoices": invoices}) as server:
        feed = _Feed(checkpoint_store, _b1(server, page_size=4))
        async with feed.connector:
            run1 = await feed.poll()
            position = await checkpoint_store.load("acme", "b1")
            server.modify("Invoices", invoices[0]["DocEntry"], "2026-03-29", "04:10:00", Comments="changed")
            run2 = await feed.poll()
        assert _pages(server)[-1].query["$filter"] == ["UpdateDate ge '2026-03-29'"]
    assert len(run1) == 6
    assert position is not None
    assert datetime.fromisoformat(position["modified_since"]) == _zurich("2026-03-29", "01:50:47")
    assert [e["invoice_id"] for e in run2] == [str(invoices[0]["DocEntry"])]  # the 2999 document: filtered
