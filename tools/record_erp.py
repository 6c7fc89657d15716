"""Record the ERP customer plugins' fixtures (Brandt Möbel) from the local OData test server.

Serves *generated* data (``connectors.erp_rest.synth``, seeded — never the third-party samples) shaped the way
the customer's Business Central writes it, quirk included (webshop drafts numbered ``WS-…``), plus a record the
DLQ must catch (an unknown status), and records the integration with ``core.fixtures.record`` into
``fixtures/brandt-moebel/invoices/`` (exchanges, shape, golden events).

    .venv/bin/python -m tools.record_erp
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from inlet.connectors.erp_rest.synth import bc_customers, bc_sales_invoices
from inlet.core import exact_json
from inlet.core.config import load_config
from inlet.core.fixtures import record
from tests.servers.odata import OdataTestServer
from tools.record_hospitals import CONFIG, ROOT
from tools.recording import origin

__all__ = ["brandt_invoices", "record_erp"]

CUSTOMER = "brandt-moebel"
COMPANY = "c0ffee00-0000-4000-8000-000000000001"


def brandt_invoices() -> list[dict[str, Any]]:
    """Generated sales invoices: drafts from the webshop renamed ``WS-…``, one with a status BC never sends."""
    invoices = bc_sales_invoices(45, bc_customers(12, seed=51), seed=52)
    for inv in invoices[::5]:
        inv["status"], inv["number"] = "Draft", "WS-" + inv["number"]
    invoices[7]["status"] = "Gebucht"  # a localised status from a customisation: the DLQ must show it
    return invoices


def record_erp() -> None:
    """Record Brandt Möbel's invoices integration of ``examples/customers``."""
    _, [item] = load_config(CONFIG, only=[f"{CUSTOMER}/invoices"])  # only this one: no other customer's secret
    fixtures = ROOT / "fixtures" / CUSTOMER / "invoices"
    invoices = brandt_invoices()
    settings: Any = item.settings
    server = OdataTestServer({"salesInvoices": invoices}, dialect="odata4", company=COMPANY,
                             expand={"salesInvoices": "salesInvoiceLines"},
                             base_path=httpx.URL(settings.http.base_url).path)
    with server:
        here, there = origin(server.url).encode(), origin(settings.http.base_url).encode()

        def redact(doc: dict[str, Any]) -> dict[str, Any]:  # exact: the amounts are Decimals
            return exact_json.loads(exact_json.dumps(doc).replace(here, there))  # type: ignore[no-any-return]

        http = settings.http.model_copy(update={"base_url": server.url, "replay": None})
        live = replace(item, settings=settings.model_copy(update={"http": http}))
        count = record(live, fixtures, redact=redact, replay_as=item)
    print(f"recorded {fixtures.relative_to(ROOT)}: {count} golden events from {len(invoices)} invoices")


if __name__ == "__main__":
    record_erp()
