"""A local OData ERP upstream: Business Central API v2.0 (OData v4) and SAP-style OData v2, over generated data.

Built on :class:`tools.servers.http.HttpTestServer` (its faults, rate limits and request log apply: 5xx, 429
with Retry-After, slow, truncated, wrong content type), with one route per entity set:

* v4 ``/companies(<company>)/<entity>``: ``{"@odata.context", "value": [...], "@odata.nextLink"}``; page size
  from ``Prefer: odata.maxpagesize`` (else ``page_size``); ``$filter=<field> ge <ISO instant>``;
  ``$expand`` of lines (left out of the record unless asked for); ``@odata.etag`` per record.
* v2 ``/<entity>``: ``{"d": {"results": [...], "__next": url}}`` with ``$skiptoken``; ``$filter=<field> ge
  datetime'<UTC>'``; with :attr:`OdataTestServer.bom` every v2 body starts with a UTF-8 byte order mark;
  ``/<entity>('<key>')`` answers the single-object ``{"d": {...}}``.

Paging is keyset paging, as Business Central's ``$skiptoken`` is: the token names the last (modification time,
id) served, so rows are ordered by modification time and id and a row modified during a pass moves to the end
rather than shifting the others. :meth:`OdataTestServer.modify` changes a row (a new modification time,
optionally in the past: a transaction committed late); ``on_page`` is called before every page is answered
(``(server, page number)``), to modify rows while a client pages. Bad pages: ``html_pages`` (request numbers of
the entity that get an HTML error page with status 200 and a JSON content type), ``garbage_pages`` (JSON of
another shape), ``loop`` (every next link points at the first page).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode

from inlet.core import exact_json
from inlet.core.time import normalise
from tools.servers.http import HttpTestServer, Request, Response

__all__ = ["OdataTestServer"]

BOM = b"\xef\xbb\xbf"
HTML_ERROR = b"<html><body><h1>Service error</h1><p>Please try again later.</p></body></html>"


class OdataTestServer(HttpTestServer):
    """Serves ``entities`` (entity set → records) in ``dialect``; ``id_field`` / ``modified_field`` per set."""

    def __init__(
        self,
        entities: Mapping[str, Sequence[dict[str, Any]]],
        *,
        dialect: Literal["odata4", "odata2"],
        company: str = "c0ffee00-0000-4000-8000-000000000001",
        page_size: int = 10,
        keys: Mapping[str, tuple[str, str]] | None = None,
        expand: Mapping[str, str] | None = None,
        bom: bool = False,
        base_path: str = "",
    ) -> None:
        super().__init__(0, page_size=page_size, base_path=base_path)
        self.dialect = dialect
        self.company = company
        self.bom = bom
        self.keys = dict(keys or {})
        self.expandable = dict(expand or {})
        self.data: dict[str, list[dict[str, Any]]] = {name: [dict(r) for r in rows] for name, rows in entities.items()}
        self.html_pages: set[int] = set()
        self.garbage_pages: set[int] = set()
        self.loop = False
        self.on_page: Callable[[OdataTestServer, int], None] | None = None
        self.pages_served = 0
        self._data_lock = threading.RLock()
        for name in self.data:
            self.route(self.entity_path(name), self._entity_handler(name))

    def entity_path(self, entity: str) -> str:
        return f"/companies({self.company})/{entity}" if self.dialect == "odata4" else f"/{entity}"

    def _key(self, entity: str) -> tuple[str, str]:
        return self.keys.get(entity) or (
            ("id", "lastModifiedDateTime") if self.dialect == "odata4" else ("BillingDocument", "LastChangeDateTime")
        )

    def modify(self, entity: str, record_id: str, modified: str, **changes: Any) -> None:
        """Change a row: its modification time (as the dialect writes it) and any other fields."""
        id_field, mod_field = self._key(entity)
        with self._data_lock:
            row = next(r for r in self.data[entity] if r[id_field] == record_id)
            row.update(changes)
            row[mod_field] = modified

    def add(self, entity: str, record: dict[str, Any]) -> None:
        with self._data_lock:
            self.data[entity].append(dict(record))

    # -- serving ------------------------------------------------------------------------------------------

    def _entity_handler(self, entity: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            return self._serve_page(entity, request)

        return handle

    def _serve_page(self, entity: str, request: Request) -> Response:
        with self._data_lock:
            self.pages_served += 1
            number = self.pages_served
            if self.on_page is not None:
                self.on_page(self, number)
            if number in self.html_pages:
                return Response(body=HTML_ERROR, content_type="application/json")
            if number in self.garbage_pages:
                return Response(body={"error": {"code": "BadRequest_Unknown", "message": "something else"}})
            id_field, mod_field = self._key(entity)
            rows = sorted(self.data[entity], key=lambda r: (_instant(r[mod_field]), str(r[id_field])))
            bound = _bound(request.arg("$filter"), mod_field)
            if bound is not None:
                rows = [r for r in rows if _instant(r[mod_field]) >= bound]
            token = request.arg("$skiptoken")
            if token and not self.loop:
                last_time, last_id = token.split("|", 1)
                after = (datetime.fromisoformat(last_time), last_id)
                rows = [r for r in rows if (_instant(r[mod_field]), str(r[id_field])) > after]
            size = self.page_size
            prefer = request.headers.get("prefer", "")
            if self.dialect == "odata4" and "odata.maxpagesize=" in prefer:
                size = int(prefer.split("odata.maxpagesize=")[1].split(",")[0])
            page, more = rows[:size], len(rows) > size
            expand = request.arg("$expand")
            out = [self._shape(entity, r, expand) for r in page]
            next_url = None
            if more:
                last = page[-1]
                query = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
                query["$skiptoken"] = f"{_instant(last[mod_field]).isoformat()}|{last[id_field]}"
                next_url = f"{self.url}{self.entity_path(entity)}?{urlencode(query, quote_via=quote)}"
            if self.dialect == "odata4":
                body: dict[str, Any] = {
                    "@odata.context": f"{self.url}/$metadata#companies({self.company})/{entity}",
                    "value": out,
                }
                if next_url:
                    body["@odata.nextLink"] = next_url
                return Response(body=exact_json.dumps(body), content_type="application/json; odata.metadata=minimal")
            d: dict[str, Any] = {"results": out}
            if next_url:
                d["__next"] = next_url
            raw = exact_json.dumps({"d": d})
            return Response(body=BOM + raw if self.bom else raw, content_type="application/json; charset=utf-8")

    def _shape(self, entity: str, row: dict[str, Any], expand: str | None) -> dict[str, Any]:
        out = dict(row)
        lines = self.expandable.get(entity)
        if lines and lines in out and expand != lines:
            if self.dialect == "odata4":
                del out[lines]
            else:
                out[lines] = {"__deferred": {"uri": f"{self.url}/{entity}/{lines}"}}
        if self.dialect == "odata4":
            id_field, mod_field = self._key(entity)
            # A stable digest, not hash(): str hashes change per process, and recordings must be reproducible.
            tag = int(hashlib.sha256(f"{row[id_field]}|{row[mod_field]}".encode()).hexdigest()[:12], 16) % 10**12
            out = {"@odata.etag": f'W/"{tag}"', **out}
        return out


def _instant(value: str) -> datetime:
    return normalise(value, "UTC").utc


def _bound(expr: str | None, field: str) -> datetime | None:
    """The instant of ``<field> ge <instant>`` (v4) or ``<field> ge datetime'<UTC>'`` (v2)."""
    if not expr:
        return None
    prefix = f"{field} ge "
    if not expr.startswith(prefix):
        raise ValueError(f"unsupported $filter {expr!r}")
    value = expr[len(prefix) :]
    if value.startswith("datetime'"):
        return datetime.fromisoformat(value[len("datetime'") : -1]).replace(tzinfo=UTC)
    return _instant(value)
