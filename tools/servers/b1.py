"""A local SAP Business One Service Layer upstream (``/b1s/v1``) over generated data, on :class:`HttpTestServer`.

Shaped after the Service Layer's ``$metadata`` (OData v3, ``../shared/data/erp/sap-business-one-service-layer``):

* ``POST /b1s/v1/Login`` with JSON ``UserName`` / ``Password`` / ``CompanyDB``: ``{"odata.metadata",
  "SessionId", "Version", "SessionTimeout"}`` (minutes, as B1 states it) and the cookies ``B1SESSION`` and
  ``ROUTEID``; wrong credentials are a 401 in B1's error format. ``POST /b1s/v1/Logout`` ends the session.
* ``GET /b1s/v1/<entity>`` (``Invoices``, ``BusinessPartners``, or whatever the server was given) with a live
  ``B1SESSION`` cookie, else 401 ``{"error": {"code": 301, "message": {"value": "Invalid session or session
  already timeout."}}}``. A session ends :attr:`B1TestServer.session_timeout_seconds` after its last use, or
  when a test calls :meth:`B1TestServer.expire_sessions`; ``login_required=False`` serves without one.
* ``$filter=UpdateDate ge '<yyyy-mm-dd>'`` (the only filter B1 offers on modification: by day), ``$orderby``
  (``UpdateDate``/``UpdateTime``/key, ``asc``; rows are always ordered that way here), ``$skip`` and
  ``Prefer: odata.maxpagesize=N`` (default 20, as B1): ``{"odata.metadata", "value": [...], "odata.nextLink":
  "<entity>?...&$skip=N"}`` — OData v3 JSON, the next link without ``@`` and relative, as the Service Layer
  writes it. The answer says ``Preference-Applied: odata.maxpagesize=N``.

``$skip`` paging shifts under modifications, as on B1: :meth:`B1TestServer.modify` gives a row a new
``UpdateDate`` / ``UpdateTime`` (the server's wall time) and other fields, and ``on_page`` (``(server, page
request number)``, before a page is answered) lets a test do so while a client pages. Bad pages: ``html_pages``
(page request numbers answered with an HTML error page, status 200, JSON content type), ``garbage_pages`` (JSON
of another shape), ``truncated_pages`` (half the JSON); the base class's faults (5xx, 429 with Retry-After,
slow, truncated, wrong content type) and request log apply too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from inlet.core import exact_json
from tools.servers.http import HttpTestServer, Request, Response

__all__ = ["B1TestServer"]

HTML_ERROR = b"<html><head><title>Error</title></head><body><h1>Service Layer is not available</h1></body></html>"
KEYS = {"BusinessPartners": "CardCode"}
"""Key of an entity set; the documents' is ``DocEntry``."""


def _b1_error(status: int, code: int, text: str) -> Response:
    return Response(status, {"error": {"code": code, "message": {"lang": "en-us", "value": text}}})


class B1TestServer(HttpTestServer):
    """Serves ``entities`` (entity set → rows) under ``/b1s/v1`` for ``company`` / ``username`` / ``password``."""

    def __init__(
        self,
        entities: Mapping[str, Sequence[dict[str, Any]]],
        *,
        company: str = "SBO_ALPENHOLZ",
        username: str = "inlet",
        password: str = "b1-test-password",
        page_size: int = 20,
        session_timeout_seconds: float = 1800.0,
        login_required: bool = True,
        base_path: str = "/b1s/v1",
    ) -> None:
        super().__init__(0, page_size=page_size, base_path=base_path)
        self.company, self.username, self.password = company, username, password
        self.session_timeout_seconds = session_timeout_seconds
        self.login_required = login_required
        self.data: dict[str, list[dict[str, Any]]] = {name: [dict(r) for r in rows] for name, rows in entities.items()}
        self.html_pages: set[int] = set()
        self.garbage_pages: set[int] = set()
        self.truncated_pages: set[int] = set()
        self.on_page: Callable[[B1TestServer, int], None] | None = None
        self.pages_served = 0
        self.logins = 0
        self._sessions: dict[str, float] = {}  # session id → monotonic time it expires
        self._data_lock = threading.RLock()  # re-entrant: an on_page hook may modify() rows mid-request
        self.route("/Login", self._login)
        self.route("/Logout", self._logout)
        for name in self.data:
            self.route(f"/{name}", self._entity_handler(name))

    @property
    def login_url(self) -> str:
        return f"{self.url}/Login"

    def key(self, entity: str) -> str:
        return KEYS.get(entity, "DocEntry")

    def expire_sessions(self) -> None:
        """End every session now (as the server's idle timeout would)."""
        with self._data_lock:
            self._sessions.clear()

    def modify(self, entity: str, key: Any, update_date: str, update_time: str | int, **changes: Any) -> None:
        """Change a row: its ``UpdateDate`` / ``UpdateTime`` (server wall time) and any other fields."""
        with self._data_lock:
            row = next(r for r in self.data[entity] if r[self.key(entity)] == key)
            row.update(changes, UpdateDate=update_date, UpdateTime=update_time)

    # -- serving ------------------------------------------------------------------------------------------

    def _login(self, request: Request) -> Response:
        if request.method != "POST":
            return _b1_error(405, -1, "Login is POST")
        try:
            body = exact_json.loads(request.body)
        except ValueError:
            return _b1_error(400, -1000, "Invalid JSON")
        if not isinstance(body, dict) or (body.get("UserName"), body.get("Password"), body.get("CompanyDB")) != (
            self.username,
            self.password,
            self.company,
        ):
            return _b1_error(401, 100000027, "Login failed")
        session = str(uuid.uuid4())
        with self._data_lock:
            self.logins += 1
            self._sessions[session] = time.monotonic() + self.session_timeout_seconds
        answer = Response(
            body={
                "odata.metadata": f"{self.url}/$metadata#B1Sessions/@Element",
                "SessionId": session,
                "Version": "1000190",
                "SessionTimeout": max(1, round(self.session_timeout_seconds / 60)),
            }
        )
        # Two Set-Cookie headers; the response's header dict is keyed by name, and HTTP names are case-insensitive.
        answer.headers["Set-Cookie"] = f"B1SESSION={session}; path=/b1s; HttpOnly"
        answer.headers["set-cookie"] = "ROUTEID=.node1; path=/b1s"
        return answer

    def _logout(self, request: Request) -> Response:
        with self._data_lock:
            self._sessions.pop(_cookies(request.headers.get("cookie", "")).get("B1SESSION", ""), None)
        return Response(204, b"")

    def _session_ok(self, request: Request) -> bool:
        if not self.login_required:
            return True
        session = _cookies(request.headers.get("cookie", "")).get("B1SESSION")
        now = time.monotonic()
        with self._data_lock:
            if session is None or self._sessions.get(session, 0.0) <= now:
                self._sessions.pop(session or "", None)
                return False
            self._sessions[session] = now + self.session_timeout_seconds  # an idle timeout: use extends it
        return True

    def _entity_handler(self, entity: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            return self._serve_page(entity, request)

        return handle

    def _serve_page(self, entity: str, request: Request) -> Response:
        if not self._session_ok(request):
            return _b1_error(401, 301, "Invalid session or session already timeout.")
        with self._data_lock:
            self.pages_served += 1
            number = self.pages_served
            if self.on_page is not None:
                self.on_page(self, number)
            if number in self.html_pages:
                return Response(body=HTML_ERROR, content_type="application/json")
            if number in self.garbage_pages:
                return Response(body={"odata.metadata": "$metadata#Invoices", "results": {"count": 0}})
            key = self.key(entity)
            rows = sorted(self.data[entity], key=lambda r: (*_stamp(r), r[key]))
            day = _day_bound(request.arg("$filter"))
            if day is not None:
                rows = [r for r in rows if _stamp(r)[0] >= day]
            skip = int(request.arg("$skip") or "0")
            size = self.page_size
            prefer = request.headers.get("prefer", "")
            if "odata.maxpagesize=" in prefer:
                size = int(prefer.split("odata.maxpagesize=")[1].split(",")[0])
            page = rows[skip : skip + size]
            body: dict[str, Any] = {"odata.metadata": f"{self.url}/$metadata#{entity}", "value": page}
            if len(rows) > skip + size:
                query = {k: v[-1] for k, v in request.query.items() if k != "$skip"}
                query["$skip"] = str(skip + size)
                body["odata.nextLink"] = f"{entity}?{urlencode(query, quote_via=quote)}"
            raw = exact_json.dumps(body)
            if number in self.truncated_pages:
                raw = raw[: len(raw) // 2]
            return Response(
                body=raw,
                content_type="application/json;odata=minimalmetadata;charset=utf-8",
                headers={"Preference-Applied": f"odata.maxpagesize={size}"},
            )


def _stamp(row: Mapping[str, Any]) -> tuple[str, str]:
    """``(yyyy-mm-dd, hh:mm:ss)`` of a row's ``UpdateDate`` / ``UpdateTime`` (a string or B1's integer hhmmss)."""
    clock = row.get("UpdateTime")
    if isinstance(clock, int):
        clock = f"{clock // 10000:02d}:{clock // 100 % 100:02d}:{clock % 100:02d}"
    return str(row["UpdateDate"])[:10], str(clock or "00:00:00")


def _day_bound(expr: str | None) -> str | None:
    """The day of ``UpdateDate ge '<yyyy-mm-dd>'``; anything else is not what this server understands."""
    if not expr:
        return None
    prefix = "UpdateDate ge '"
    if not (expr.startswith(prefix) and expr.endswith("'")):
        raise ValueError(f"unsupported $filter {expr!r}")
    return expr[len(prefix) : -1][:10]


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";") if part.strip())
    return {name: value for name, _, value in pairs}
