"""Pagination strategies: how a connector walks every page of a listing, picked rather than re-implemented.

Why in the core and not in each plugin: paging is where upstreams misbehave quietly. A next link points back to
an earlier page, a cursor never runs out, a total is wrong, a relative link is resolved against the wrong base.
The base class owns those checks, so a plugin that picks a strategy cannot forget them::

    Paginator                   abstract: first_request() / next_request(page), loop detection, max_pages
    ├── NextLinkPaginator       the body names the next URL: FHIR Bundle.link, OData v4 / v2, or a dotted path
    ├── OffsetPaginator         offset/limit parameters; ends on a short page (or a cross-checked total)
    ├── PageNumberPaginator     a page-number parameter; ends on an empty or short page
    └── CursorPaginator         an opaque cursor from the body goes back as a parameter; ends when it is absent

A pass: ``first_request(path, params)`` starts it (forgetting any earlier pass), then every page fetched goes to
``next_request(page)``, which returns the next request or None at the end. Every request of the pass is
remembered: being sent to one again raises :class:`PaginationLoopError` naming it (a link, offset or cursor seen
before is a server bug, not something to follow forever), and so does a page repeating the records of the page
before it (an upstream ignoring a misspelt offset parameter would otherwise serve page 1 until ``max_pages``).
More than ``max_pages`` pages raises :class:`PaginationLimitError`; a next link to another host is refused
(credentials). A paginator holds the state of one pass, so use one per concurrent pass. Errors (defined in
:mod:`core.errors`, exported here too)::

    InletError
    ├── PaginationError             not retriable: the same pass would fail the same way
    │   ├── PaginationLoopError     a request repeated in the pass (``url``, ``token``)
    │   └── PaginationLimitError    ``max_pages`` reached with more on offer (a never-ending cursor)
    └── RecordError > DecodeError
        └── PageDecodeError         a page that is not JSON, or without records where configured (``url``, ``body``)

:func:`paginate` runs that loop over ``core.http.HttpClient.get`` (so retries, bounds and rate limits apply to
every page) and decodes bodies with orjson (or the ``loads`` it is given: :func:`core.exact_json.loads` keeps
decimals exact, as FHIR search does), after dropping a leading UTF-8 byte order mark (OData v2 servers send
one; RFC 8259 lets a parser ignore it); a page that is not usable JSON raises :class:`PageDecodeError` naming the
URL. Records are found by ``records_path``, a dotted path (``value``, ``d.results``, ``data.items``);
a key that itself contains dots, like ``@odata.nextLink``, is matched whole.

Declarative settings: :data:`PaginationSettings` (discriminated on ``kind``) validates from YAML, and
:func:`build_paginator` turns it into a paginator.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Self, TypedDict
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import orjson
from pydantic import Field, model_validator
from typing_extensions import Unpack, override

from inlet.core import progress
from inlet.core.connector import PluginSettings
from inlet.core.errors import (
    DecodeError,
    PageDecodeError,
    PaginationError,
    PaginationLimitError,
    PaginationLoopError,
)
from inlet.core.exact_json import default as _json_default

if TYPE_CHECKING:
    from inlet.core.http import HttpClient

__all__ = [
    "DEFAULT_MAX_PAGES",
    "NEXT_LINK_PRESETS",
    "CursorPaginator",
    "CursorSettings",
    "NextLinkPaginator",
    "NextLinkPreset",
    "NextLinkSettings",
    "OffsetPaginator",
    "OffsetSettings",
    "Page",
    "PageDecodeError",
    "PageNumberPaginator",
    "PageNumberSettings",
    "PageRequest",
    "PaginationError",
    "PaginationLimitError",
    "PaginationLoopError",
    "PaginationSettings",
    "Paginator",
    "PaginatorOptions",
    "build_paginator",
    "paginate",
]

DEFAULT_MAX_PAGES: Final = 100_000
"""Pages in one pass before it is called never-ending; a real listing this long should raise it explicitly."""


# --- pages and requests --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One request of a pass: a URL (relative to the client's base URL, or absolute) and its query parameters."""

    url: str
    params: Mapping[str, Any] | None = None
    token: str | None = None
    """What moved the pass here (next link, offset, page number, cursor); named in loop and limit errors."""


@dataclass(frozen=True, slots=True)
class Page:
    """A fetched page: the decoded body, the request that fetched it and the records found in it."""

    body: Any
    url: str
    params: Mapping[str, Any] | None
    records: list[Any]
    number: int = 1
    """1-based position of the page in its pass."""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of records on this page."""
        return len(self.records)


# --- the base ------------------------------------------------------------------------------------------------


class PaginatorOptions(TypedDict, total=False):
    """Keyword options every paginator takes (see :class:`Paginator`)."""

    records_path: str | None
    """Dotted path to the records array; None: the strategy's default (the body itself, or the preset's)."""
    allow_missing_records: bool | None
    """A page without the records path counts as empty instead of being an error; None: the strategy's rule."""
    max_pages: int
    """Pages in one pass before :class:`PaginationLimitError`."""
    detect_repeated_pages: bool
    """A page with the same records (count, first, last) as the one before is a loop; turn off only for
    upstreams whose records carry no identity, so that two pages can look alike."""


class Paginator(abc.ABC):
    """Base of every pagination strategy: owns the pass state, loop detection, ``max_pages`` and records.

    Subclasses implement :meth:`get_next` (and :meth:`get_first` when the first request needs parameters) and
    may set :attr:`step_name` and :attr:`default_records_paths`; the keyword options are
    :class:`PaginatorOptions`.
    """

    step_name: ClassVar[str] = "token"
    """How error messages call what moves the pass on: "next link", "offset", "page", "cursor"."""
    default_records_paths: ClassVar[tuple[str, ...]] = ()
    """Where records are when no ``records_path`` is given; empty means the body itself is the array."""

    def __init__(
        self,
        *,
        records_path: str | None = None,
        allow_missing_records: bool | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        detect_repeated_pages: bool = True,
    ) -> None:
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        self.records_paths: tuple[str, ...] = (records_path,) if records_path else self.default_records_paths
        self.allow_missing_records = bool(allow_missing_records)
        self.max_pages = max_pages
        self.detect_repeated_pages = detect_repeated_pages
        self._seen: set[_RequestKey] = set()
        self._pages = 0
        self._last_fingerprint: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(records_paths={self.records_paths!r}, max_pages={self.max_pages})"

    # -- the pass -----------------------------------------------------------------------------------------

    def first_request(self, path: str, params: Mapping[str, Any] | None = None) -> PageRequest:
        """Start a pass (forgetting the previous one) with its first request."""
        self._seen.clear()
        self._pages = 0
        self._last_fingerprint = None
        return self.get_first(path, dict(params or {}))

    def next_request(self, page: Page) -> PageRequest | None:
        """The request after ``page``, or None when the pass is complete.

        Raises :class:`PaginationLoopError` when it was already made in this pass, or when ``page`` has the
        same records as the page before it, and :class:`PaginationLimitError` when the pass already has
        ``max_pages`` pages.
        """
        self._seen.add(_request_key(page.url, page.params))
        self._pages += 1
        fingerprint = _fingerprint(page.records) if self.detect_repeated_pages else None
        previous = self._last_fingerprint
        self._last_fingerprint = fingerprint
        request = self.get_next(page)
        if request is None:
            return None
        shown = _display(request.url, request.params)
        key = _request_key(request.url, request.params)
        if key in self._seen:
            raise PaginationLoopError(
                f"pagination loop after page {self._pages}: {self.step_name} {request.token or shown!r} leads to "
                f"{shown}, which was already requested in this pass; the upstream's paging is broken "
                "(report it to its owner), following it would never end",
                url=shown,
                token=request.token,
            )
        if fingerprint is not None and fingerprint == previous:
            # New request, same data: the upstream ignores the parameter that should move it on (a misspelt
            # offset_param, say). Following it would read page 1 max_pages times, each a duplicate.
            here = _display(page.url, page.params)
            raise PaginationLoopError(
                f"pagination loop at page {self._pages}: {here} returned the same {page.count} records as the "
                f"page before it; the upstream seems to ignore the {self.step_name} (check the parameter names "
                "in the pagination settings)",
                url=here,
                token=request.token,
            )
        if self._pages >= self.max_pages:
            raise PaginationLimitError(
                f"stopped after max_pages={self.max_pages} pages: the upstream still offers {self.step_name} "
                f"{request.token or shown!r} ({shown}); a never-ending cursor? If the listing really is that "
                "long, raise max_pages",
                url=shown,
                token=request.token,
                max_pages=self.max_pages,
            )
        self._seen.add(key)
        return request

    @property
    def pages(self) -> int:
        """Pages handed to :meth:`next_request` in the current pass."""
        return self._pages

    # -- hooks --------------------------------------------------------------------------------------------

    def get_first(self, path: str, params: dict[str, Any]) -> PageRequest:
        """Hook: the first request of a pass. Default: ``path`` with the caller's parameters."""
        return PageRequest(path, params or None)

    @abc.abstractmethod
    def get_next(self, page: Page) -> PageRequest | None:
        """Hook: the request after ``page``, or None at the end. Loop and limit checks are the base's job."""

    # -- records ------------------------------------------------------------------------------------------

    def records(self, body: Any) -> list[Any]:
        """The records of a decoded page body; raises :class:`DecodeError` when they are not where configured."""
        if not self.records_paths:
            if isinstance(body, list):
                return body
            raise DecodeError(
                f"expected the body to be a JSON array of records, got {_kind(body)}; "
                "set records_path to where the records are"
            )
        for path in self.records_paths:
            value = _lookup(body, path)
            if value is _MISSING:
                continue
            if value is None:
                return []
            if isinstance(value, list):
                return value
            raise DecodeError(f"records at {path!r} are {_kind(value)}, expected a JSON array")
        if self.allow_missing_records:
            return []
        where = " or ".join(repr(p) for p in self.records_paths)
        keys = f"top-level keys {sorted(body)[:20]}" if isinstance(body, dict) else _kind(body)
        raise DecodeError(f"no records at {where}; the page has {keys} (check records_path)")

    def make_page(
        self,
        body: Any,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        number: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> Page:
        """A :class:`Page` of a decoded body, with its records extracted."""
        return Page(body, url, params, self.records(body), number, headers if headers is not None else {})


# --- strategies ----------------------------------------------------------------------------------------------

NextLinkPreset = Literal["fhir", "odata4", "odata2"]
"""Known places of a next link: FHIR ``Bundle.link``, OData v4 ``@odata.nextLink``, OData v2 ``d.__next``."""


@dataclass(frozen=True, slots=True)
class _Preset:
    find_next: Callable[[Any], Any]
    where: str
    records_paths: tuple[str, ...]
    records_optional: bool
    """True where the standard omits the records of an empty page (FHIR leaves out ``Bundle.entry``)."""


def _fhir_next(body: Any) -> Any:
    links = body.get("link") if isinstance(body, dict) else None
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next":
            return link.get("url")
    return None


def _at(*paths: str) -> Callable[[Any], Any]:
    def find(body: Any) -> Any:
        for path in paths:
            value = _lookup(body, path)
            if value is not _MISSING:
                return value
        return None

    return find


NEXT_LINK_PRESETS: Final[Mapping[str, _Preset]] = {
    "fhir": _Preset(_fhir_next, "Bundle.link[relation=next].url", ("entry",), records_optional=True),
    # "odata.nextLink" is the OData v4.0 JSON spelling of older servers; v4.01 writes "@odata.nextLink".
    "odata4": _Preset(_at("@odata.nextLink", "odata.nextLink"), "@odata.nextLink", ("value",), records_optional=False),
    # OData v1 (and some SAP gateways) put the array at "d" itself; v2 wraps it in "d.results".
    "odata2": _Preset(_at("d.__next"), "d.__next", ("d.results", "d"), records_optional=False),
}
"""Where each preset finds the next link and the records; policy as data."""


class NextLinkPaginator(Paginator):
    """The body names the URL of the next page (HATEOAS): a preset, or a dotted ``path`` like ``links.next``.

    Relative links are resolved against the URL of the page that carried them (RFC 3986), never against the
    client's base URL. A link to another origin (scheme, host, port) is refused unless ``allow_other_origin``:
    following it would send the integration's credentials to a host nobody configured.
    """

    step_name: ClassVar[str] = "next link"

    def __init__(
        self,
        preset: NextLinkPreset | None = None,
        *,
        path: str | None = None,
        allow_other_origin: bool = False,
        **options: Unpack[PaginatorOptions],
    ) -> None:
        if (preset is None) == (path is None):
            raise ValueError("NextLinkPaginator needs exactly one of preset (fhir, odata4, odata2) or path")
        if preset is not None:
            chosen = NEXT_LINK_PRESETS.get(preset)
            if chosen is None:
                raise ValueError(f"unknown next-link preset {preset!r}; known: {', '.join(NEXT_LINK_PRESETS)}")
            self._preset = chosen
        else:
            assert path is not None
            self._preset = _Preset(_at(path), path, (), records_optional=False)
        if options.get("allow_missing_records") is None:
            options["allow_missing_records"] = self._preset.records_optional
        super().__init__(**options)
        if not options.get("records_path"):
            self.records_paths = self._preset.records_paths
        self.preset = preset
        self.allow_other_origin = allow_other_origin

    def next_link(self, body: Any) -> str | None:
        """The raw next link of a decoded body (unresolved), or None when there is none."""
        raw = self._preset.find_next(body)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise DecodeError(f"the next link at {self._preset.where} is {_kind(raw)}, expected a URL string")
        return raw

    @override
    def get_next(self, page: Page) -> PageRequest | None:
        raw = self.next_link(page.body)
        if raw is None:
            return None
        url = urljoin(page.url, raw)
        here, there = _origin(page.url), _origin(url)
        if here and there != here and not self.allow_other_origin:
            raise PaginationError(
                f"the next link {url} leaves the origin {here} of page {page.url}; refusing to send "
                "the integration's requests (and credentials) there. Set allow_other_origin if "
                "the upstream really pages across hosts"
            )
        return PageRequest(url, None, token=url)


class OffsetPaginator(Paginator):
    """``offset``/``limit`` parameters, advanced by the number of records received.

    The pass ends on a page with fewer than ``limit`` records. With ``total_path`` a total may also end it one
    request earlier, but only when it agrees with what was received: a total that is smaller than the records
    already read is ignored, and no total keeps a pass going past a short page. ``limit`` must not exceed the
    upstream's maximum page size, or its first (capped) page looks short and ends the pass.
    """

    step_name: ClassVar[str] = "offset"

    def __init__(
        self,
        limit: int,
        offset_param: str = "offset",
        limit_param: str | None = "limit",
        *,
        start: int = 0,
        total_path: str | None = None,
        **options: Unpack[PaginatorOptions],
    ) -> None:
        if limit < 1 or start < 0:
            raise ValueError(f"OffsetPaginator needs limit >= 1 and start >= 0, got limit={limit}, start={start}")
        super().__init__(**options)
        self.limit = limit
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.start = start
        self.total_path = total_path

    def _params(self, params: Mapping[str, Any], offset: int) -> dict[str, Any]:
        out = {**params, self.offset_param: offset}
        if self.limit_param:
            out[self.limit_param] = self.limit
        return out

    @override
    def get_first(self, path: str, params: dict[str, Any]) -> PageRequest:
        return PageRequest(path, self._params(params, self.start), token=str(self.start))

    @override
    def get_next(self, page: Page) -> PageRequest | None:
        if page.count < self.limit:
            return None
        offset = _int_param(page.params, self.offset_param, self.start) + page.count
        if self.total_path is not None:
            total = _lookup(page.body, self.total_path)
            if isinstance(total, int) and not isinstance(total, bool) and offset == total:
                return None
        return PageRequest(page.url, self._params(page.params or {}, offset), token=str(offset))


class PageNumberPaginator(Paginator):
    """A page-number parameter, counting from ``start``; the pass ends on an empty page, or a short one when
    the page ``size`` is known (sent as ``size_param``, or the upstream's fixed page size)."""

    step_name: ClassVar[str] = "page"

    def __init__(
        self,
        page_param: str = "page",
        start: int = 1,
        size_param: str | None = None,
        size: int | None = None,
        **options: Unpack[PaginatorOptions],
    ) -> None:
        if size_param is not None and size is None:
            raise ValueError(f"PageNumberPaginator: size_param={size_param!r} needs a size")
        if size is not None and size < 1:
            raise ValueError(f"PageNumberPaginator: size must be >= 1, got {size}")
        super().__init__(**options)
        self.page_param = page_param
        self.start = start
        self.size_param = size_param
        self.size = size

    def _params(self, params: Mapping[str, Any], number: int) -> dict[str, Any]:
        out = {**params, self.page_param: number}
        if self.size_param and self.size is not None:
            out[self.size_param] = self.size
        return out

    @override
    def get_first(self, path: str, params: dict[str, Any]) -> PageRequest:
        return PageRequest(path, self._params(params, self.start), token=str(self.start))

    @override
    def get_next(self, page: Page) -> PageRequest | None:
        if page.count == 0 or (self.size is not None and page.count < self.size):
            return None
        number = _int_param(page.params, self.page_param, self.start) + 1
        return PageRequest(page.url, self._params(page.params or {}, number), token=str(number))


class CursorPaginator(Paginator):
    """An opaque cursor found at ``cursor_path`` in the body is sent back as ``cursor_param``; the pass ends
    when the cursor is missing, null or empty."""

    step_name: ClassVar[str] = "cursor"

    def __init__(self, cursor_path: str, cursor_param: str, **options: Unpack[PaginatorOptions]) -> None:
        super().__init__(**options)
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param

    @override
    def get_next(self, page: Page) -> PageRequest | None:
        cursor = _lookup(page.body, self.cursor_path)
        if cursor is _MISSING or cursor is None or cursor == "":
            return None
        if isinstance(cursor, bool) or not isinstance(cursor, str | int | float):
            raise DecodeError(f"the cursor at {self.cursor_path!r} is {_kind(cursor)}, expected a string or number")
        token = str(cursor)
        return PageRequest(page.url, {**(page.params or {}), self.cursor_param: token}, token=token)


# --- the loop ------------------------------------------------------------------------------------------------


async def paginate(
    http: HttpClient,
    paginator: Paginator,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    loads: Callable[[bytes], Any] = orjson.loads,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Page]:
    """Every page of a pass, in order: fetched with ``http.get`` (retries, bounds and limits apply per page).

    ``loads`` parses each body (orjson by default; ``core.exact_json.loads`` for Decimals where a float would
    not carry a number as written); it raises ``json.JSONDecodeError`` (orjson's error is one) for bad JSON.
    ``headers`` go with every page request (a conditional header such as ``If-Modified-Since``).
    Raises :class:`PageDecodeError` for a page that is not usable JSON, and the paginator's
    :class:`PaginationError` s for loops and never-ending passes.
    """
    request: PageRequest | None = paginator.first_request(path, params)
    number = 0
    while request is not None:
        # Absolute before fetching, so the page knows its own URL and relative next links resolve per RFC 3986.
        url, query = _absolute(http.settings.base_url, request.url), request.params
        body, answer_headers = await http.get(url, query, headers=headers)
        number += 1
        progress.page()
        content_type = answer_headers.get("content-type")
        try:
            # A leading UTF-8 byte order mark is allowed by RFC 8259 parsers (and sent by real OData v2
            # servers); the parsers refuse it, so it is dropped here. The DLQ keeps the body as received.
            decoded = loads(body[3:] if body.startswith(_BOM) else body)
        except json.JSONDecodeError as exc:
            raise PageDecodeError(_display(url, query), body, f"not JSON ({exc})", content_type) from exc
        # Records or a next link not where configured: the error names the page and keeps its bytes for the DLQ.
        try:
            page = paginator.make_page(decoded, url, query, number=number, headers=answer_headers)
        except DecodeError as exc:
            raise PageDecodeError(_display(url, query), body, str(exc), content_type) from exc
        yield page
        try:
            request = paginator.next_request(page)
        except DecodeError as exc:
            raise PageDecodeError(_display(url, query), body, str(exc), content_type) from exc


# --- settings ------------------------------------------------------------------------------------------------


class _CommonSettings(PluginSettings):
    records_path: str | None = None
    """Dotted path to the records array; None: the strategy's default (the body itself for most)."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    detect_repeated_pages: bool = True
    """A page repeating the previous page's records is a loop (turn off for records without identity)."""
    allow_missing_records: bool | None = None
    """A page without the records path counts as empty instead of being an error; None: the strategy's
    default (only the FHIR preset allows it, as FHIR omits an empty page's ``entry``)."""

    def options(self) -> PaginatorOptions:
        """The options every paginator takes, from these settings."""
        return PaginatorOptions(
            records_path=self.records_path,
            allow_missing_records=self.allow_missing_records,
            max_pages=self.max_pages,
            detect_repeated_pages=self.detect_repeated_pages,
        )


class NextLinkSettings(_CommonSettings):
    """``kind: next_link`` with a ``preset`` (fhir, odata4, odata2) or a dotted ``path`` to the link."""

    kind: Literal["next_link"] = "next_link"
    preset: NextLinkPreset | None = None
    path: str | None = None
    allow_other_origin: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.preset is None) == (self.path is None):
            raise ValueError("next_link pagination needs exactly one of preset (fhir, odata4, odata2) or path")
        return self

    def build(self) -> Paginator:
        return NextLinkPaginator(
            self.preset, path=self.path, allow_other_origin=self.allow_other_origin, **self.options()
        )


class OffsetSettings(_CommonSettings):
    """``kind: offset``: ``limit`` records per page, at ``offset_param``/``limit_param``."""

    kind: Literal["offset"] = "offset"
    limit: int = Field(ge=1)
    offset_param: str = "offset"
    limit_param: str | None = "limit"
    start: int = Field(default=0, ge=0)
    total_path: str | None = None

    def build(self) -> Paginator:
        return OffsetPaginator(
            self.limit,
            self.offset_param,
            self.limit_param,
            start=self.start,
            total_path=self.total_path,
            **self.options(),
        )


class PageNumberSettings(_CommonSettings):
    """``kind: page_number``: ``page_param`` from ``start``, optionally ``size`` records per page."""

    kind: Literal["page_number"] = "page_number"
    page_param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _size_given(self) -> Self:
        if self.size_param is not None and self.size is None:
            raise ValueError("page_number pagination: size_param needs a size")
        return self

    def build(self) -> Paginator:
        return PageNumberPaginator(self.page_param, self.start, self.size_param, self.size, **self.options())


class CursorSettings(_CommonSettings):
    """``kind: cursor``: the cursor at ``cursor_path`` goes back as ``cursor_param``."""

    kind: Literal["cursor"] = "cursor"
    cursor_path: str
    cursor_param: str

    def build(self) -> Paginator:
        return CursorPaginator(self.cursor_path, self.cursor_param, **self.options())


PaginationSettings = Annotated[
    NextLinkSettings | OffsetSettings | PageNumberSettings | CursorSettings, Field(discriminator="kind")
]
"""How an integration pages, as YAML: ``pagination: {kind: offset, limit: 100, records_path: items}``."""


def build_paginator(settings: NextLinkSettings | OffsetSettings | PageNumberSettings | CursorSettings) -> Paginator:
    """The paginator that validated pagination settings describe."""
    return settings.build()


# --- helpers -------------------------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

_RequestKey = tuple[str, tuple[tuple[str, str], ...]]
_BOM: Final = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark some servers put before a JSON body (valid: RFC 8259 lets a parser ignore it)."""


def _lookup(node: Any, path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``. The longest dotted run that is a key wins (``@odata.x``);
    a numeric segment indexes an array."""
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if isinstance(node, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in node:
                    node, i = node[key], j
                    break
            else:
                return _MISSING
        elif isinstance(node, list) and parts[i].isdigit() and int(parts[i]) < len(node):
            node, i = node[int(parts[i])], i + 1
        else:
            return _MISSING
    return node


def _fingerprint(records: list[Any]) -> bytes | None:
    """A cheap fingerprint of a page's records (count, first, last); None for an empty page."""
    if not records:
        return None
    try:
        return orjson.dumps([len(records), records[0], records[-1]], default=_json_default, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # records that are not JSON values (a plugin's own objects): no check
        return None


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _int_param(params: Mapping[str, Any] | None, name: str, default: int) -> int:
    value = (params or {}).get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PaginationError(f"request parameter {name}={value!r} is not an integer") from None


def _pairs(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in (params or {}).items():
        for item in value if isinstance(value, list | tuple) else (value,):
            pairs.append((str(name), str(item)))
    return pairs


def _request_key(url: str, params: Mapping[str, Any] | None) -> _RequestKey:
    """What makes two requests the same: URL without query, plus query and parameters as a sorted set."""
    split = urlsplit(url)
    pairs = parse_qsl(split.query, keep_blank_values=True) + _pairs(params)
    return urlunsplit((split.scheme, split.netloc.lower(), split.path, "", "")), tuple(sorted(pairs))


def _display(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(_pairs(params))}"


def _origin(url: str) -> str:
    split = urlsplit(url)
    if not split.scheme:
        return ""
    port = split.port or {"http": 80, "https": 443}.get(split.scheme.lower())
    return f"{split.scheme.lower()}://{(split.hostname or '').lower()}:{port}"


def _absolute(base_url: str, url: str) -> str:
    """``url`` as the client will fetch it: httpx appends a relative URL to the base URL's path."""
    if urlsplit(url).scheme:
        return url
    return base_url.rstrip("/") + "/" + url.lstrip("/")
