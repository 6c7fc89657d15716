"""Record the ERP customer plugins' fixtures (Brandt Möbel, Kōwhai Kitchens, Alpenholz) from the local ERP test servers.

Serves *generated* data (``connectors.erp_rest.synth``, seeded — never the third-party samples) shaped the way
the customer's Business Central writes it, quirk included (webshop drafts numbered ``WS-…``), plus a record the
DLQ must catch (an unknown status), and records the integration with ``core.fixtures.record`` into
``fixtures/brandt-moebel/invoices/`` (exchanges, shape, golden events). Kōwhai Kitchens the same way from the
Xero test server (``tools.servers.xero``): generated NZD invoices and bills, some bills numbered only by their
``Reference`` (the quirk), one with neither (the DLQ must show it), into ``fixtures/kowhai-kitchens/invoices/``.
Alpenholz from the SAP Business One Service Layer test server (``tools.servers.b1``): generated CHF and EUR
A/R invoices stamped in Zurich wall time across the spring DST change, some cancelled, some in the training
series (the quirk), one with a status B1 never sends (the DLQ must show it), into ``fixtures/alpenholz/invoices/``,
through the session login the integration is configured with: the recording sets ``ALPENHOLZ_B1_PASSWORD`` to a
throwaway password the test server accepts, and records the login as every credential exchange is recorded
(``core.recording``: no request body or digest of it, the session id and cookies masked), so replay needs none.

    .venv/bin/python -m tools.record_erp              # all three
    .venv/bin/python -m tools.record_erp alpenholz    # one of: brandt, kowhai, alpenholz
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from inlet.connectors.customers.alpenholz import TRAINING_SERIES
from inlet.connectors.erp_rest.synth import (
    b1_business_partners,
    b1_invoices,
    bc_customers,
    bc_sales_invoices,
    xero_invoices,
)
from inlet.core import exact_json
from inlet.core.auth import SessionLoginSettings
from inlet.core.config import load_config
from inlet.core.fixtures import record
from tools.record_hospitals import CONFIG, ROOT
from tools.recording import origin
from tools.servers.b1 import B1TestServer
from tools.servers.odata import OdataTestServer
from tools.servers.xero import XeroTestServer

__all__ = [
    "B1_PASSWORD_ENV",
    "alpenholz_invoices",
    "brandt_invoices",
    "kowhai_invoices",
    "record_b1",
    "record_erp",
    "record_xero",
]

CUSTOMER = "brandt-moebel"
COMPANY = "c0ffee00-0000-4000-8000-000000000001"
B1_PASSWORD_ENV = "ALPENHOLZ_B1_PASSWORD"


def brandt_invoices() -> list[dict[str, Any]]:
    """Generated sales invoices: drafts from the webshop renamed ``WS-…``, one with a status BC never sends."""
    invoices = bc_sales_invoices(45, bc_customers(12, seed=51), seed=52)
    for inv in invoices[::5]:
        inv["status"], inv["number"] = "Draft", "WS-" + inv["number"]
    invoices[7]["status"] = "Gebucht"  # a localised status from a customisation: the DLQ must show it
    return invoices


def kowhai_invoices() -> list[dict[str, Any]]:
    """Generated Xero invoices and bills: bills keyed by the supplier's number in ``Reference`` only, one bill
    with neither number nor reference."""
    invoices = xero_invoices(40, seed=61)
    bills = [i for i in invoices if i["Type"] == "ACCPAY"]
    for n, bill in enumerate(bills[:-1]):
        if n % 2 == 0:
            bill["InvoiceNumber"], bill["Reference"] = "", f"SUP-{88100 + n}"
    bills[-1]["InvoiceNumber"], bills[-1]["Reference"] = "", ""
    return invoices


def alpenholz_invoices() -> list[dict[str, Any]]:
    """Generated B1 A/R invoices: every seventh in the training series, one with a localised status."""
    invoices = b1_invoices(45, b1_business_partners(14, seed=71), seed=72)
    for inv in invoices[2::7]:
        inv["Series"] = TRAINING_SERIES
    invoices[10]["DocumentStatus"] = "bost_Abgeschlossen"  # a status B1 never sends: the DLQ must show it
    return invoices


def _record(key: str, serve: Callable[[Any], Any], rows: int, target: Path = ROOT / "fixtures") -> Any:
    """Record integration ``key`` of ``examples/customers`` from the test server ``serve(settings)`` returns into
    ``target/key``, the recording's origin rewritten to the configured one and its amounts kept exact (Decimals).
    A session login is sent to the test server's ``login_url``. Returns the (stopped) server, its request log."""
    _, [item] = load_config(CONFIG, only=[key])  # only this one: no other customer's secret needed
    fixtures = target / key
    settings: Any = item.settings
    with serve(settings) as server:
        here, there = origin(server.url).encode(), origin(settings.http.base_url).encode()

        def redact(doc: dict[str, Any]) -> dict[str, Any]:
            return exact_json.loads(exact_json.dumps(doc).replace(here, there))  # type: ignore[no-any-return]

        auth = settings.http.auth
        if isinstance(auth, SessionLoginSettings):
            auth = auth.model_copy(update={"login_url": server.login_url})
        http = settings.http.model_copy(update={"base_url": server.url, "replay": None, "auth": auth})
        live = replace(item, settings=settings.model_copy(update={"http": http}))
        count = record(live, fixtures, redact=redact, replay_as=item)
    shown = fixtures.relative_to(ROOT) if fixtures.is_relative_to(ROOT) else fixtures
    print(f"recorded {shown}: {count} golden events from {rows} invoices")
    return server


def record_xero() -> None:
    """Record Kōwhai Kitchens' invoices integration (a Xero test server)."""
    invoices = kowhai_invoices()
    _record(
        "kowhai-kitchens/invoices",
        lambda s: XeroTestServer(
            invoices, tenant_id=s.tenant_id, page_size=15, base_path=httpx.URL(s.http.base_url).path
        ),
        len(invoices),
    )


def record_erp() -> None:
    """Record Brandt Möbel's invoices integration (an OData v4 test server)."""
    invoices = brandt_invoices()
    _record(
        f"{CUSTOMER}/invoices",
        lambda s: OdataTestServer(
            {"salesInvoices": invoices},
            dialect="odata4",
            company=COMPANY,
            expand={"salesInvoices": "salesInvoiceLines"},
            base_path=httpx.URL(s.http.base_url).path,
        ),
        len(invoices),
    )


def record_b1(target: Path = ROOT / "fixtures", password: str | None = None) -> B1TestServer:
    """Record Alpenholz's invoices integration (a SAP Business One Service Layer test server) into
    ``target/alpenholz/invoices`` through the session login its YAML configures: ``ALPENHOLZ_B1_PASSWORD`` is a
    throwaway ``password`` for the recording (default: a random one; whatever the environment held is restored
    after), which the test server requires with the configured user and company. Returns the server (its log)."""
    invoices = alpenholz_invoices()
    before = os.environ.get(B1_PASSWORD_ENV)
    os.environ[B1_PASSWORD_ENV] = password or "b1-test-" + secrets.token_urlsafe(12)  # test-only, never a real one
    try:
        server: B1TestServer = _record(
            "alpenholz/invoices",
            lambda s: B1TestServer(
                {"Invoices": invoices},
                company=s.http.auth.company,
                username=s.http.auth.username,
                password=s.http.auth.password.get_secret_value(),
                base_path=httpx.URL(s.http.base_url).path,
            ),
            len(invoices),
            target,
        )
    finally:
        if before is None:
            os.environ.pop(B1_PASSWORD_ENV, None)
        else:
            os.environ[B1_PASSWORD_ENV] = before
    return server


def record_all() -> None:
    record_erp()
    record_xero()
    record_b1()


if __name__ == "__main__":
    import sys

    runs: dict[str, Callable[[], object]] = {"brandt": record_erp, "kowhai": record_xero, "alpenholz": record_b1}
    runs.get(sys.argv[1] if len(sys.argv) > 1 else "", record_all)()
