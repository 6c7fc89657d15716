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

Change tracking (v4, ``track_changes=True``): a request with ``Prefer: odata.track-changes`` is answered with
``Preference-Applied`` and, on its last page, an ``@odata.deltaLink`` (``$deltatoken``: the server's change
version when the pass began, the defining ``$filter`` / ``$expand`` kept). GETting it answers every row added or
modified since, and a deleted entity for every row :meth:`OdataTestServer.delete` removed since — OData 4.0
``{"@odata.context": ".../$deletedEntity", "id", "reason"}`` or, with ``removed_style="4.01"``, ``{"@removed":
{"reason"}, "@id": "<entity>(<id>)"}`` — paged by ``@odata.nextLink`` and ending with a new delta link.
:meth:`OdataTestServer.expire_delta_links` makes every link issued so far answer ``expired_status`` (410 Gone).

v2 presets: ``paths`` serves an entity set under its own path (Exact Online's ``/api/v1/<division>/crm/Accounts``);
``modified_of`` gives a set's modification instant from a row (SAP ``A_BusinessPartner``: a date and an
``Edm.Time``), ordering and filtering by it; a ``$filter`` may join ``<field> ge datetime'<UTC>'`` terms with
``or`` (a row matches when one of its fields is set and not before the bound).
"""

from __future__ import annotations

import hashlib
import itertools
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
        track_changes: bool = False,
        removed_style: Literal["4.0", "4.01"] = "4.0",
        paths: Mapping[str, str] | None = None,
        modified_of: Mapping[str, Callable[[dict[str, Any]], datetime]] | None = None,
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
        self.track_changes = track_changes
        self.removed_style = removed_style
        self.expired_status = 410
        self.entity_paths = dict(paths or {})
        self.modified_of = dict(modified_of or {})
        self._clock = itertools.count(1)
        self.version = 0
        """The change version: raised by every add, modify and delete."""
        self._versions: dict[str, dict[str, int]] = {name: {} for name in self.data}
        self._removed: dict[str, list[tuple[int, dict[str, Any]]]] = {name: [] for name in self.data}
        self._valid_from = 0
        for name in self.data:
            self.route(self.entity_path(name), self._entity_handler(name))

    def entity_path(self, entity: str) -> str:
        if entity in self.entity_paths:
            return self.entity_paths[entity]
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
            self._versions[entity][str(record_id)] = self._bump()

    def add(self, entity: str, record: dict[str, Any]) -> None:
        id_field, _ = self._key(entity)
        with self._data_lock:
            self.data[entity].append(dict(record))
            self._versions[entity][str(record[id_field])] = self._bump()

    def delete(self, entity: str, record_id: str) -> None:
        """Remove a row; delta links issued before answer a deleted entity for it."""
        id_field, _ = self._key(entity)
        with self._data_lock:
            row = next(r for r in self.data[entity] if r[id_field] == record_id)
            self.data[entity].remove(row)
            self._versions[entity].pop(str(record_id), None)
            self._removed[entity].append((self._bump(), row))

    def expire_delta_links(self) -> None:
        """Every delta link issued so far is answered with ``expired_status`` from now on."""
        with self._data_lock:
            self._valid_from = self._bump()  # links issued from now on name this version or a later one

    def _bump(self) -> int:
        self.version = next(self._clock)
        return self.version

    def _order(self, entity: str, row: dict[str, Any]) -> tuple[datetime, str]:
        """Where a row sorts: :func:`_order`, or by the set's ``modified_of`` instant, then id."""
        id_field, mod_field = self._key(entity)
        if entity in self.modified_of:
            return self.modified_of[entity](row), str(row.get(id_field, ""))
        return _order(row, id_field, mod_field)

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
            mod_field = self._key(entity)[1]
            prefers = [p.strip() for p in request.headers.get("prefer", "").split(",")]
            if request.arg("$deltatoken") is not None:
                return self._serve_delta(entity, request, prefers)
            rows = sorted(self.data[entity], key=lambda r: self._order(entity, r))
            if entity in self.modified_of or " or " in (request.arg("$filter") or ""):
                rows = _filtered(rows, request.arg("$filter"), mod_field, lambda r: self._order(entity, r)[0])
            else:
                bound = _bound(request.arg("$filter"), mod_field)
                if bound is not None:  # a row without a modification time: null ge x is false in OData
                    rows = [r for r in rows if r.get(mod_field) and _instant(r[mod_field]) >= bound]
            token = request.arg("$skiptoken")
            if token and not self.loop:
                last_time, last_id = token.split("|", 1)
                after = (datetime.fromisoformat(last_time), last_id)
                rows = [r for r in rows if self._order(entity, r) > after]
            size = self._page_size(prefers)
            page, more = rows[:size], len(rows) > size
            expand = request.arg("$expand")
            out = [self._shape(entity, r, expand) for r in page]
            next_url = None
            tracking = self.dialect == "odata4" and self.track_changes and "odata.track-changes" in prefers
            query = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
            if tracking:
                query.setdefault("$trackfrom", str(self.version))  # the version when the pass began
            if more:
                last_at, last_key = self._order(entity, page[-1])
                query["$skiptoken"] = f"{last_at.isoformat()}|{last_key}"
                next_url = f"{self.url}{self.entity_path(entity)}?{urlencode(query, quote_via=quote)}"
            if self.dialect == "odata4":
                body: dict[str, Any] = {
                    "@odata.context": f"{self.url}/$metadata#companies({self.company})/{entity}",
                    "value": out,
                }
                if next_url:
                    body["@odata.nextLink"] = next_url
                elif tracking:
                    body["@odata.deltaLink"] = self._delta_link(entity, request, query["$trackfrom"])
                return Response(
                    body=exact_json.dumps(body),
                    content_type="application/json; odata.metadata=minimal",
                    headers={"Preference-Applied": "odata.track-changes"} if tracking else {},
                )
            d: dict[str, Any] = {"results": out}
            if next_url:
                d["__next"] = next_url
            raw = exact_json.dumps({"d": d})
            return Response(body=BOM + raw if self.bom else raw, content_type="application/json; charset=utf-8")

    def _page_size(self, prefers: list[str]) -> int:
        for pref in prefers:
            if self.dialect == "odata4" and pref.startswith("odata.maxpagesize="):
                return int(pref.split("=", 1)[1])
        return self.page_size

    def _delta_link(self, entity: str, request: Request, version: str) -> str:
        """The link to the changes after ``version``: the defining query's filter and expansion, a token."""
        query = {k: v[0] for k, v in request.query.items() if k in ("$filter", "$expand")}
        query["$deltatoken"] = version
        return f"{self.url}{self.entity_path(entity)}?{urlencode(query, quote_via=quote)}"

    def _serve_delta(self, entity: str, request: Request, prefers: list[str]) -> Response:
        """Rows added or modified and rows deleted after the token's version, by (version, id) keyset."""
        since = int(request.arg("$deltatoken") or "0")
        if since < self._valid_from:
            return Response(
                status=self.expired_status,
                body={"error": {"code": "DeltaTokenExpired", "message": f"The delta token {since} has expired."}},
            )
        id_field, mod_field = self._key(entity)
        now = int(request.arg("$deltanow") or self.version)
        versions = self._versions[entity]
        changed = [(versions.get(str(r[id_field]), 0), r, False) for r in self.data[entity]]
        gone = [(v, r, True) for v, r in self._removed[entity]]
        bound = _bound(request.arg("$filter"), mod_field)
        entries = sorted(
            (e for e in changed + gone if e[0] > since and (bound is None or self._order(entity, e[1])[0] >= bound)),
            key=lambda e: (e[0], str(e[1][id_field])),
        )
        token = request.arg("$skiptoken")
        if token:
            last_version, last_id = token.split("|", 1)
            entries = [e for e in entries if (e[0], str(e[1][id_field])) > (int(last_version), last_id)]
        size = self._page_size(prefers)
        page, more = entries[:size], len(entries) > size
        expand = request.arg("$expand")
        context = f"{self.url}/$metadata#companies({self.company})/{entity}"
        out: list[dict[str, Any]] = []
        for _version, row, removed in page:
            if not removed:
                out.append(self._shape(entity, row, expand))
            elif self.removed_style == "4.01":
                out.append({"@removed": {"reason": "deleted"}, "@id": f"{entity}({row[id_field]})"})
            else:
                out.append({"@odata.context": f"{context}/$deletedEntity", "id": row[id_field], "reason": "deleted"})
        body: dict[str, Any] = {"@odata.context": f"{context}/$delta", "value": out}
        if more:
            query = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
            query["$deltanow"] = str(now)
            query["$skiptoken"] = f"{page[-1][0]}|{page[-1][1][id_field]}"
            body["@odata.nextLink"] = f"{self.url}{self.entity_path(entity)}?{urlencode(query, quote_via=quote)}"
        else:
            body["@odata.deltaLink"] = self._delta_link(entity, request, str(now))
        return Response(body=exact_json.dumps(body), content_type="application/json; odata.metadata=minimal")

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
            tag = int(hashlib.sha256(f"{row.get(id_field)}|{row.get(mod_field)}".encode()).hexdigest()[:12], 16)
            tag %= 10**12
            out = {"@odata.etag": f'W/"{tag}"', **out}
        return out


def _order(row: dict[str, Any], id_field: str, mod_field: str) -> tuple[datetime, str]:
    """Where a row sorts (and what a skip token names): by modification time, then id. A row without a
    modification time (the empty example of a documentation sample) sorts first, as nulls do ascending."""
    modified = row.get(mod_field)
    return (_instant(modified) if modified else _NO_TIME), str(row.get(id_field, ""))


_NO_TIME = datetime.min.replace(tzinfo=UTC)


def _instant(value: str) -> datetime:
    return normalise(value, "UTC").utc


def _filtered(
    rows: list[dict[str, Any]], expr: str | None, field: str, modified: Callable[[dict[str, Any]], datetime]
) -> list[dict[str, Any]]:
    """The rows a ``$filter`` keeps: ``<field> ge <instant>`` on the modification instant, or ``or``-joined
    ``<field> ge datetime'<UTC>'`` terms on the fields named (a null field does not match)."""
    if not expr:
        return rows
    terms = expr.split(" or ")
    if len(terms) == 1:
        bound = _bound(expr, field)
        return [r for r in rows if bound is None or modified(r) >= bound]
    checks = [(term.split(" ", 1)[0], _bound(term, term.split(" ", 1)[0])) for term in terms]
    return [r for r in rows if any(r.get(f) and _instant(r[f]) >= b for f, b in checks if b is not None)]


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
