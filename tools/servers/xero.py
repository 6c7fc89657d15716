"""A local Xero Accounting API upstream (``Invoices``, ``CreditNotes``, ``Payments``, ``Contacts``) over generated
data, on :class:`HttpTestServer`.

``GET /<endpoint>?page=N[&order=UpdatedDateUTC ASC]`` with ``If-Modified-Since`` (``yyyy-mm-ddThh:mm:ss`` UTC,
or an HTTP-date): the records whose ``UpdatedDateUTC`` is at or after that *second* (Xero's comparison:
whole seconds, inclusive), ordered by modification time and id, ``page_size`` (100, as Xero) a page, numbered
from 1; past the end an empty list under the endpoint's name. ``Contacts`` leaves ``ARCHIVED`` contacts out
unless ``includeArchived=true``, as Xero does. The envelope is Xero's: ``Id``, ``Status: OK``,
``ProviderName``, ``DateTimeUTC``. A request without the ``xero-tenant-id`` the server was made for is a 403.

Every answer carries Xero's limit headers: ``X-DayLimit-Remaining``, ``X-MinLimit-Remaining`` and
``X-AppMinLimit-Remaining`` counted down from :attr:`XeroTestServer.minute_limit` / ``day_limit`` (a plain
count of the requests served; Xero's windows are rolling, which no test here depends on). The base class's
faults (5xx, 429 with ``Retry-After``, slow, truncated, HTML) and request log apply.

Paging is by page number, as Xero's is: :meth:`XeroTestServer.modify` changes a record (a new
``UpdatedDateUTC``), and ``on_page`` (``(server, request number)``, before a page is answered) lets a test do
so while a client pages — the row moves to the end and the rows behind it shift up one place, as on Xero.
``html_pages`` are request numbers answered with an HTML page and status 200.
"""

from __future__ import annotations

import email.utils
import functools
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from inlet.core import exact_json
from inlet.core.time import normalise
from tools.servers.http import HttpTestServer, Request, Response

__all__ = ["XeroTestServer"]

HTML_ERROR = b"<html><body><h1>Xero is down for maintenance</h1></body></html>"
ID_FIELDS = {"Invoices": "InvoiceID", "CreditNotes": "CreditNoteID", "Payments": "PaymentID", "Contacts": "ContactID"}
"""The endpoints served, with their records' id field."""


class XeroTestServer(HttpTestServer):
    """Serves ``invoices``, ``credit_notes``, ``payments`` and ``contacts`` for the organisation ``tenant_id``."""

    def __init__(
        self,
        invoices: Sequence[dict[str, Any]] = (),
        *,
        credit_notes: Sequence[dict[str, Any]] = (),
        payments: Sequence[dict[str, Any]] = (),
        contacts: Sequence[dict[str, Any]] = (),
        tenant_id: str = "7e0f4c1a-0000-4000-8000-00000000a0c1",
        page_size: int = 100,
        minute_limit: int = 100_000,
        day_limit: int = 10**9,
        base_path: str = "",
    ) -> None:
        super().__init__(0, page_size=page_size, base_path=base_path)
        self.tenant_id = tenant_id
        self.rows: dict[str, list[dict[str, Any]]] = {
            "Invoices": [dict(r) for r in invoices],
            "CreditNotes": [dict(r) for r in credit_notes],
            "Payments": [dict(r) for r in payments],
            "Contacts": [dict(r) for r in contacts],
        }
        self.invoices = self.rows["Invoices"]
        self.minute_limit = minute_limit
        self.day_limit = day_limit
        self.on_page: Callable[[XeroTestServer, int], None] | None = None
        self.html_pages: set[int] = set()
        self.pages_served = 0
        self._rows_lock = threading.RLock()  # re-entrant: an on_page hook may modify() rows mid-request
        for name in ID_FIELDS:
            self.route(f"/{name}", functools.partial(self._records, name))

    def modify(self, record_id: str, updated: str, **changes: Any) -> None:
        """Change a record of any endpoint (found by its id): its ``UpdatedDateUTC`` (``/Date(ms+0000)/``) and any
        other fields."""
        with self._rows_lock:
            row = next(r for name, rows in self.rows.items() for r in rows if r[ID_FIELDS[name]] == record_id)
            row.update(changes)
            row["UpdatedDateUTC"] = updated

    def _records(self, name: str, request: Request) -> Response:
        with self._rows_lock:
            self.pages_served += 1
            number = self.pages_served
            if self.on_page is not None:
                self.on_page(self, number)
            left = max(0, self.minute_limit - number)
            limits = {
                "X-MinLimit-Remaining": str(left),
                "X-AppMinLimit-Remaining": str(max(0, 10**9 - number)),
                "X-DayLimit-Remaining": str(max(0, self.day_limit - number)),
            }
            if request.headers.get("xero-tenant-id") != self.tenant_id:
                return Response(
                    403,
                    {"Type": None, "Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"},
                    headers=limits,
                )
            if number in self.html_pages:
                return Response(body=HTML_ERROR, content_type="application/json", headers=limits)
            id_field = ID_FIELDS[name]
            rows = sorted(self.rows[name], key=lambda r: (_instant(r["UpdatedDateUTC"]), r[id_field]))
            if name == "Contacts" and (request.arg("includeArchived") or "").lower() != "true":
                rows = [r for r in rows if r.get("ContactStatus") != "ARCHIVED"]
            since = request.headers.get("if-modified-since")
            if since:
                bound = _since(since)
                rows = [r for r in rows if _instant(r["UpdatedDateUTC"]).replace(microsecond=0) >= bound]
            page = int(request.arg("page") or "1")
            if page < 1:
                return Response(400, {"Message": "page must be 1 or more"}, headers=limits)
            out = rows[(page - 1) * self.page_size : page * self.page_size]
            # The answer's time is the newest change it knows (not the wall clock), so recordings are reproducible.
            newest = max(
                (_instant(r["UpdatedDateUTC"]) for r in self.rows[name]), default=datetime(2000, 1, 1, tzinfo=UTC)
            )
            now = int(newest.timestamp() * 1000)
            body = {
                "Id": str(uuid.UUID(int=number)),
                "Status": "OK",
                "ProviderName": "inlet tests",
                "DateTimeUTC": f"/Date({now})/",
                name: out,
            }
            return Response(body=exact_json.dumps(body), content_type="application/json; charset=utf-8", headers=limits)


def _instant(value: str) -> datetime:
    return normalise(value, "UTC").utc


def _since(header: str) -> datetime:
    """``If-Modified-Since`` as Xero takes it: ``yyyy-mm-ddThh:mm:ss`` (UTC) or an HTTP-date; whole seconds."""
    try:
        moment = datetime.fromisoformat(header)
    except ValueError:
        moment = email.utils.parsedate_to_datetime(header)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)
