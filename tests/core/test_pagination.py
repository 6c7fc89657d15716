"""Pagination strategies (core.pagination): end to end through core.http against the local JSON server, and
``next_request`` on hand-written bodies (FHIR Bundle links, OData v4/v2)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from inlet.core.connector import IntegrationContext
from inlet.core.errors import DecodeError, InletError
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.pagination import (
    CursorPaginator,
    CursorSettings,
    NextLinkPaginator,
    NextLinkSettings,
    OffsetPaginator,
    OffsetSettings,
    Page,
    PageDecodeError,
    PageNumberPaginator,
    PageNumberSettings,
    PageRequest,
    PaginationError,
    PaginationLimitError,
    PaginationLoopError,
    PaginationSettings,
    Paginator,
    build_paginator,
    paginate,
)
from tools.servers.http import Faults, HttpTestServer, Response

CTX = IntegrationContext("acme", "obs")


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer(25, page_size=10) as s:
        yield s


async def collect(
    server: HttpTestServer, paginator: Paginator, path: str, params: Mapping[str, Any] | None = None, **settings: Any
) -> tuple[list[Any], list[Page]]:
    """Every record's id (unwrapping FHIR entries) and every page, through a real HttpClient."""
    http_settings = HttpSettings(
        base_url=server.url, max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.02, **settings
    )
    ids: list[Any] = []
    pages: list[Page] = []
    async with HttpClient(http_settings, CTX) as http:
        async for page in paginate(http, paginator, path, params):
            pages.append(page)
            ids += [(r.get("resource") or r)["id"] for r in page.records]
    return ids, pages


ALL = list(range(1, 26))


# --- end to end ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("links", ["absolute", "root", "relative", "query"])
async def test_next_link_every_record_once_in_order(server: HttpTestServer, links: str) -> None:
    paginator = NextLinkPaginator(path="links.next", records_path="items")
    ids, pages = await collect(server, paginator, "/next", {"links": links})
    assert ids == ALL
    assert [p.count for p in pages] == [10, 10, 5]
    assert [p.number for p in pages] == [1, 2, 3]
    assert [r.path for r in server.requests] == ["/next"] * 3


@pytest.mark.parametrize("links", ["root", "relative", "query"])
async def test_relative_next_links_resolve_against_the_page_url_under_a_base_path(links: str) -> None:
    with HttpTestServer(25, page_size=10, base_path="/api/v1") as server:
        ids, pages = await collect(
            server, NextLinkPaginator(path="links.next", records_path="items"), "next", {"links": links}
        )
    assert ids == ALL
    assert pages[1].url.startswith(f"{server.origin}/api/v1/next?")
    assert all(r.target.startswith("/api/v1/next?") for r in server.requests)


async def test_fhir_preset(server: HttpTestServer) -> None:
    ids, pages = await collect(server, NextLinkPaginator("fhir"), "/fhir", {"_count": 7})
    assert ids == ALL
    assert [p.count for p in pages] == [7, 7, 7, 4]


@pytest.mark.parametrize("preset", ["odata4", "odata2"])
async def test_odata_presets(server: HttpTestServer, preset: str) -> None:
    ids, pages = await collect(server, NextLinkPaginator(preset), f"/{preset}", {"$top": 8})  # type: ignore[arg-type]
    assert ids == ALL
    assert [p.count for p in pages] == [8, 8, 8, 1]
    assert "%24skiptoken=24" in pages[-1].url or "$skiptoken=24" in pages[-1].url


async def test_offset_stops_on_a_short_page(server: HttpTestServer) -> None:
    ids, pages = await collect(server, OffsetPaginator(10, records_path="items"), "/offset")
    assert ids == ALL
    assert [p.count for p in pages] == [10, 10, 5]
    assert [r.query["offset"] for r in server.requests] == [["0"], ["10"], ["20"]]


async def test_offset_full_last_page_needs_an_empty_page_unless_a_total_agrees() -> None:
    with HttpTestServer(30) as server:
        ids, pages = await collect(server, OffsetPaginator(10, records_path="items"), "/offset")
        assert ids == list(range(1, 31))
        assert [p.count for p in pages] == [10, 10, 10, 0]
        server.reset_log()
        ids, pages = await collect(server, OffsetPaginator(10, records_path="items", total_path="total"), "/offset")
        assert ids == list(range(1, 31))
        assert len(pages) == 3  # the total saved the empty request


async def test_offset_never_trusts_a_total_alone() -> None:
    with HttpTestServer(25, total="high") as server:  # claims 50: the short page still ends the pass
        ids, pages = await collect(server, OffsetPaginator(10, records_path="items", total_path="total"), "/offset")
    assert ids == ALL
    assert len(pages) == 3
    with HttpTestServer(30, total="low") as server:  # claims 15: contradicted by page 2, so ignored
        ids, _ = await collect(server, OffsetPaginator(10, records_path="items", total_path="total"), "/offset")
    assert ids == list(range(1, 31))


async def test_offset_with_odata_parameter_names(server: HttpTestServer) -> None:
    ids, _ = await collect(server, OffsetPaginator(6, "$skip", "$top", records_path="items"), "/offset")
    assert ids == ALL


async def test_page_number_stops_on_a_short_page(server: HttpTestServer) -> None:
    paginator = PageNumberPaginator("page", 1, "size", 10, records_path="results")
    ids, pages = await collect(server, paginator, "/page")
    assert ids == ALL
    assert [r.query["page"] for r in server.requests] == [["1"], ["2"], ["3"]]
    assert len(pages) == 3


async def test_page_number_without_size_stops_on_an_empty_page(server: HttpTestServer) -> None:
    ids, pages = await collect(server, PageNumberPaginator(records_path="results"), "/page")
    assert ids == ALL
    assert [p.count for p in pages] == [10, 10, 5, 0]


@pytest.mark.parametrize("end", ["null", "missing", "empty"])
async def test_cursor_stops_when_the_cursor_is_gone(server: HttpTestServer, end: str) -> None:
    paginator = CursorPaginator("meta.next_cursor", "cursor", records_path="data")
    ids, pages = await collect(server, paginator, "/cursor", {"end": end, "size": 10})
    assert ids == ALL
    assert len(pages) == 3
    assert server.requests[1].query["cursor"] == ["ca"]
    assert server.requests[2].query["end"] == [end]  # the caller's parameters travel with the cursor


async def test_a_paging_loop_is_stopped_naming_the_repeated_link(server: HttpTestServer) -> None:
    pages: list[Page] = []
    async with HttpClient(HttpSettings(base_url=server.url), CTX) as http:
        with pytest.raises(PaginationLoopError) as caught:
            async for page in paginate(http, NextLinkPaginator(path="links.next", records_path="items"), "/loop"):
                pages.append(page)
    assert len(pages) == 3
    assert len(server.requests) == 3
    assert f"{server.url}/loop?page=2" in str(caught.value)
    assert caught.value.url == f"{server.url}/loop?page=2"
    assert "already requested in this pass" in str(caught.value)
    assert not caught.value.retriable


async def test_an_ignored_offset_parameter_is_a_loop_not_endless_duplicates(server: HttpTestServer) -> None:
    with pytest.raises(PaginationLoopError, match=r"returned the same 10 records as the page before it") as caught:
        await collect(server, OffsetPaginator(10, "skip", records_path="items"), "/offset")  # server wants offset
    assert len(server.requests) == 2
    assert caught.value.url.endswith("/offset?skip=10&limit=10")


async def test_a_never_ending_cursor_stops_at_max_pages(server: HttpTestServer) -> None:
    paginator = CursorPaginator("meta.next_cursor", "cursor", records_path="data", max_pages=7)
    async with HttpClient(HttpSettings(base_url=server.url), CTX) as http:
        with pytest.raises(PaginationLimitError) as caught:
            async for _ in paginate(http, paginator, "/forever"):
                pass
    assert len(server.requests) == 7
    assert "max_pages=7" in str(caught.value)
    assert "never-ending" in str(caught.value)
    assert caught.value.token == "c7"
    assert isinstance(caught.value, InletError)


async def test_faults_every_page_once_in_order_through_retries() -> None:
    faults = Faults(fail_rate=0.2, truncate_rate=0.1, retry_after=None, seed=4)
    with HttpTestServer(60, faults=faults) as server:
        paginator = NextLinkPaginator(path="links.next", records_path="items")
        http_settings = HttpSettings(
            base_url=server.url, max_attempts=10, backoff_initial_seconds=0.001, backoff_max_seconds=0.005
        )
        ids: list[int] = []
        async with HttpClient(http_settings, CTX) as http:
            async for page in paginate(http, paginator, "/next", {"size": 5}):
                ids += [r["id"] for r in page.records]
            retries = http.retries
    assert ids == list(range(1, 61))
    assert server.counts["fault:status"] + server.counts["fault:truncated"] == retries > 0
    assert server.counts["status:200"] == 12 + server.counts["fault:truncated"]


async def test_a_body_that_is_not_json_is_a_decode_error_naming_the_url(server: HttpTestServer) -> None:
    server.route("/broken", lambda request: Response(body=b'{"items": [1, 2'))
    with pytest.raises(PageDecodeError) as caught:
        await collect(server, OffsetPaginator(10, records_path="items"), "/broken")
    assert f"{server.url}/broken?offset=0&limit=10" in str(caught.value)
    assert caught.value.body == b'{"items": [1, 2'
    assert isinstance(caught.value, DecodeError)


async def test_records_not_where_configured_is_a_decode_error(server: HttpTestServer) -> None:
    with pytest.raises(PageDecodeError) as caught:
        await collect(server, OffsetPaginator(10, records_path="value"), "/offset")
    assert "no records at 'value'" in str(caught.value)
    assert "['items', 'total']" in str(caught.value)


# --- next_request on hand-written bodies ---------------------------------------------------------------------

BASE = "https://fhir.example.org/r4"


def fhir_bundle(next_url: str | None, entries: int = 2) -> dict[str, Any]:
    links = [{"relation": "self", "url": f"{BASE}/Observation?_count=2"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    links.append({"relation": "previous", "url": f"{BASE}/Observation?page=0"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if entries:
        bundle["entry"] = [{"resource": {"resourceType": "Observation", "id": str(i)}} for i in range(entries)]
    return bundle


def test_fhir_next_link_from_the_link_list() -> None:
    p = NextLinkPaginator("fhir")
    first = p.first_request("Observation", {"_count": 2})
    assert (first.url, first.params) == ("Observation", {"_count": 2})
    page = p.make_page(fhir_bundle(f"{BASE}?_getpages=abc&_getpagesoffset=2"), f"{BASE}/Observation", first.params)
    nxt = p.next_request(page)
    assert nxt is not None
    assert nxt.url == f"{BASE}?_getpages=abc&_getpagesoffset=2"
    assert nxt.params is None
    assert page.count == 2


def test_fhir_last_page_without_next_or_entries() -> None:
    p = NextLinkPaginator("fhir")
    page = p.make_page(fhir_bundle(None, entries=0), f"{BASE}/Observation")
    assert page.records == []  # FHIR omits an empty entry array
    assert p.next_request(page) is None


def test_relative_next_link_resolves_against_the_page_url() -> None:
    p = NextLinkPaginator("fhir")
    page = p.make_page(fhir_bundle("Observation?page=2"), f"{BASE}/Observation?_count=2")
    nxt = p.next_request(page)
    assert nxt is not None and nxt.url == f"{BASE}/Observation?page=2"


def test_odata4_next_link_and_legacy_spelling() -> None:
    p = NextLinkPaginator("odata4")
    url = "https://erp.example.com/odata/Items"
    page = p.make_page(
        {"@odata.context": "$metadata#Items", "value": [{"id": 1}], "@odata.nextLink": "Items?$skiptoken=1"}, url
    )
    nxt = p.next_request(page)
    assert nxt is not None and nxt.url == "https://erp.example.com/odata/Items?$skiptoken=1"
    assert page.records == [{"id": 1}]
    legacy = p.make_page({"value": [], "odata.nextLink": f"{url}?$skiptoken=2"}, url)
    nxt = p.next_request(legacy)
    assert nxt is not None and nxt.url.endswith("$skiptoken=2")
    assert p.next_request(p.make_page({"value": [{"id": 9}]}, url)) is None


def test_odata2_next_link_and_records() -> None:
    p = NextLinkPaginator("odata2")
    url = "https://sap.example.com/sap/opu/odata/sap/API_X/A_Item"
    page = p.make_page({"d": {"results": [{"id": 1}, {"id": 2}], "__next": "A_Item?$skiptoken=2"}}, url)
    assert page.records == [{"id": 1}, {"id": 2}]
    nxt = p.next_request(page)
    assert nxt is not None and nxt.url == f"{url}?$skiptoken=2"
    v1 = p.make_page({"d": [{"id": 3}]}, url)  # OData v1: the array is "d" itself
    assert v1.records == [{"id": 3}]
    assert p.next_request(v1) is None
    with pytest.raises(DecodeError, match=r"no records at 'd.results' or 'd'"):
        p.make_page({"error": {"message": "nope"}}, url)


def test_odata4_records_missing_is_an_error_not_an_empty_page() -> None:
    with pytest.raises(DecodeError, match=r"no records at 'value'; the page has top-level keys \['error'\]"):
        NextLinkPaginator("odata4").make_page({"error": {"code": "x"}}, "https://erp.example.com/Items")


def test_hand_written_loop_is_detected() -> None:
    p = NextLinkPaginator(path="next", records_path="items")
    p.first_request("https://api.example.com/items")
    page1 = p.make_page({"items": [1], "next": "/items?p=2"}, "https://api.example.com/items")
    nxt = p.next_request(page1)
    assert nxt is not None
    page2 = p.make_page({"items": [2], "next": "/items"}, nxt.url)
    with pytest.raises(PaginationLoopError, match=r"next link 'https://api.example.com/items'"):
        p.next_request(page2)
    p.first_request("https://api.example.com/items")  # a new pass forgets the old one
    assert p.next_request(page1) is not None


def test_next_link_to_another_origin_is_refused_unless_allowed() -> None:
    body = {"items": [], "next": "https://evil.example.net/items?p=2"}
    with pytest.raises(PaginationError, match=r"leaves the origin https://api\.example\.com:443"):
        NextLinkPaginator(path="next", records_path="items").next_request(
            Page(body, "https://api.example.com/items", None, [])
        )
    allowed = NextLinkPaginator(path="next", records_path="items", allow_other_origin=True)
    assert allowed.next_request(Page(body, "https://api.example.com/items", None, [])) is not None


def test_next_link_that_is_not_a_string_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"next link at links.next is an object"):
        NextLinkPaginator(path="links.next").next_request(Page({"links": {"next": {"href": "x"}}}, "/x", None, []))


def test_offset_and_page_number_next_requests() -> None:
    o = OffsetPaginator(2, records_path="items")
    first = o.first_request("/items", {"q": "a"})
    assert first.params == {"q": "a", "offset": 0, "limit": 2}
    nxt = o.next_request(o.make_page({"items": [1, 2]}, "/items", first.params))
    assert nxt is not None and nxt.params == {"q": "a", "offset": 2, "limit": 2}
    assert o.next_request(o.make_page({"items": [3]}, "/items", nxt.params)) is None
    n = PageNumberPaginator(start=0)
    first = n.first_request("/items")
    nxt = n.next_request(n.make_page([1, 2, 3], "/items", first.params))
    assert nxt is not None and nxt.params == {"page": 1}
    assert n.next_request(n.make_page([], "/items", nxt.params)) is None


def test_cursor_next_requests() -> None:
    c = CursorPaginator("paging.after", "after", records_path="results")
    page = c.make_page({"results": [1], "paging": {"after": 42}}, "/deals", {"limit": 1})
    nxt = c.next_request(page)
    assert nxt is not None and nxt.params == {"limit": 1, "after": "42"}
    with pytest.raises(DecodeError, match=r"cursor at 'paging\.after' is an object"):
        c.next_request(c.make_page({"results": [], "paging": {"after": {"x": 1}}}, "/deals"))
    # the same cursor twice in a pass is a loop
    c.first_request("/deals", {"limit": 1})
    c.next_request(page)
    again = c.make_page({"results": [2], "paging": {"after": 42}}, "/deals", nxt.params)
    with pytest.raises(PaginationLoopError, match="cursor '42'"):
        c.next_request(again)


def test_repeated_page_detection_can_be_turned_off_for_records_without_identity() -> None:
    p = PageNumberPaginator(size=2)
    first = p.first_request("/readings")
    nxt = p.next_request(p.make_page([0.5, 0.5], "/readings", first.params))
    assert nxt is not None
    with pytest.raises(PaginationLoopError, match="same 2 records"):
        p.next_request(p.make_page([0.5, 0.5], "/readings", nxt.params))
    lenient = PageNumberPaginator(size=2, detect_repeated_pages=False)
    first = lenient.first_request("/readings")
    nxt = lenient.next_request(lenient.make_page([0.5, 0.5], "/readings", first.params))
    assert nxt is not None
    assert lenient.next_request(lenient.make_page([0.5, 0.5], "/readings", nxt.params)) is not None


def test_records_path_errors_and_dotted_keys() -> None:
    p = CursorPaginator("c", "c", records_path="data.items")
    assert p.records({"data": {"items": None}}) == []
    with pytest.raises(DecodeError, match=r"records at 'data\.items' are an object"):
        p.records({"data": {"items": {}}})
    with pytest.raises(DecodeError, match="expected the body to be a JSON array"):
        CursorPaginator("c", "c").records({"items": []})
    assert CursorPaginator("c", "c", records_path="wrap.0.rows").records({"wrap": [{"rows": [5]}]}) == [5]


@given(total=st.integers(0, 60), limit=st.integers(1, 12))
def test_offset_and_page_number_read_everything_once(total: int, limit: int) -> None:
    data = list(range(total))

    def offset_window(p: Mapping[str, Any]) -> tuple[int, int]:
        return int(p["offset"]), int(p["limit"])

    def page_window(p: Mapping[str, Any]) -> tuple[int, int]:
        return (int(p["page"]) - 1) * int(p["size"]), int(p["size"])

    offset = OffsetPaginator(limit, records_path="items")
    pages = PageNumberPaginator(size_param="size", size=limit, records_path="items")
    for paginator, window in ((offset, offset_window), (pages, page_window)):
        request: PageRequest | None = paginator.first_request("/items")
        seen: list[int] = []
        while request is not None:
            assert request.params is not None
            start, size = window(request.params)
            page = paginator.make_page({"items": data[start : start + size]}, request.url, request.params)
            seen += page.records
            request = paginator.next_request(page)
        assert seen == data


# --- settings ------------------------------------------------------------------------------------------------

ADAPTER: TypeAdapter[Any] = TypeAdapter(PaginationSettings)


def test_settings_build_each_kind() -> None:
    fhir = build_paginator(ADAPTER.validate_python({"kind": "next_link", "preset": "fhir"}))
    assert isinstance(fhir, NextLinkPaginator)
    assert fhir.records_paths == ("entry",) and fhir.allow_missing_records
    custom = build_paginator(
        ADAPTER.validate_python({"kind": "next_link", "path": "links.next", "records_path": "items", "max_pages": 50})
    )
    assert isinstance(custom, NextLinkPaginator) and custom.max_pages == 50
    offset = build_paginator(
        ADAPTER.validate_python(
            {"kind": "offset", "limit": 100, "offset_param": "$skip", "limit_param": "$top", "records_path": "value"}
        )
    )
    assert isinstance(offset, OffsetPaginator) and (offset.limit, offset.offset_param) == (100, "$skip")
    page = build_paginator(ADAPTER.validate_python({"kind": "page_number", "size_param": "per_page", "size": 50}))
    assert isinstance(page, PageNumberPaginator) and page.size == 50
    cursor = build_paginator(
        ADAPTER.validate_python(
            {"kind": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor", "records_path": "data"}
        )
    )
    assert isinstance(cursor, CursorPaginator)
    lenient = build_paginator(
        ADAPTER.validate_python(
            {"kind": "page_number", "detect_repeated_pages": False, "allow_missing_records": True, "max_pages": 9}
        )
    )
    assert (lenient.detect_repeated_pages, lenient.allow_missing_records, lenient.max_pages) == (False, True, 9)
    assert not build_paginator(ADAPTER.validate_python({"kind": "next_link", "preset": "odata4"})).allow_missing_records
    assert isinstance(ADAPTER.validate_python({"kind": "offset", "limit": 5}), OffsetSettings)
    assert isinstance(NextLinkSettings(preset="odata4").build(), NextLinkPaginator)
    assert isinstance(PageNumberSettings().build(), PageNumberPaginator)
    assert isinstance(CursorSettings(cursor_path="a", cursor_param="b").build(), CursorPaginator)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "next_link", "preset": "fhir", "path": "x"}, "exactly one of preset"),
        ({"kind": "next_link"}, "exactly one of preset"),
        ({"kind": "next_link", "preset": "hal"}, "preset"),
        ({"kind": "offset"}, "limit"),
        ({"kind": "offset", "limit": 0}, "greater than or equal to 1"),
        ({"kind": "page_number", "size_param": "n"}, "size_param needs a size"),
        ({"kind": "cursor", "cursor_path": "a", "cursor_param": "b", "cursr": 1}, "Extra inputs are not permitted"),
        ({"kind": "link_header"}, "does not match any of the expected tags"),
        ({"limit": 5}, "Unable to extract tag"),
    ],
)
def test_settings_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ADAPTER.validate_python(data)


async def test_a_leading_utf8_byte_order_mark_is_accepted(server: HttpTestServer) -> None:
    """OData v2 servers (SAP gateways) start some bodies with a BOM: valid JSON for RFC 8259 parsers."""
    server.route("/bom", lambda request: Response(body=b'\xef\xbb\xbf{"d": {"results": [{"id": 1}, {"id": 2}]}}'))
    ids, _ = await collect(server, NextLinkPaginator("odata2"), "/bom")
    assert ids == [1, 2]
