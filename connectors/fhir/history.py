"""FHIR deletions through ``_history``, for the search connector (``history_deletes: true``).

For servers that keep versions: a search never returns a deleted resource, so after the search pages of a pass the
connector reads ``GET [base]/<Type>/_history?_since=<s>`` (paged by ``Bundle.link[next]`` like the search) and maps
each entry with ``request.method = DELETE`` to ``clinical.deletion`` (identity ``(<Type>/<id>, "deleted@" + version
or time)``). The other entries are versions the search delivers anyway: they are not made records at all (so they
are not in the books: records in = events + DLQ + filtered holds over the deletions alone) and are only counted in
the pass's log line. ``s`` is the position's own ``deleted_since`` watermark, with ``deleted_at_watermark``
deduplicating deletions in that instant (``_since`` is inclusive) the way ``ids_at_watermark`` does for the search.
A history Bundle lists newest first, so the watermark moves only with the last history page; every batch before
carries the old one (a crash re-reads the history from it: same event ids). A position without ``deleted_since``
(written before, or with the flag off) starts the history at the pass's starting ``last_updated``; ``deleted_since:
null`` means from the beginning. With the flag off the position keeps its two keys, unchanged. A server that refuses
``_history`` (a 4xx such as 404/400/405, or a 200 OperationOutcome) gets one warning per pass and the pass ends as
if the flag were off; a page that is not a Bundle is one DLQ record, as for the search.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from inlet.contracts.clinical_deletion import DeletionV1
from inlet.core.connector import Batch
from inlet.core.errors import MappingError
from inlet.core.exact_json import member
from inlet.core.http import HttpClient, UpstreamRefused
from inlet.core.pagination import NextLinkPaginator, PageDecodeError, paginate
from inlet.core.time import ClockCap, Instant, normalise
from inlet.core.types import Position

__all__ = ["HistoryDeletion", "HistoryScan", "UndecodablePage", "map_deletion", "read_deletions"]


@dataclass(frozen=True, slots=True)
class UndecodablePage:
    """A page body that is not a JSON Bundle (of the search or of the history): the raw bytes, for the DLQ."""

    url: str
    body: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class HistoryDeletion:
    """A ``request.method = DELETE`` entry of a history Bundle, with the Bundle's ``meta.lastUpdated`` (the
    fallback time of an entry without ``response.lastModified``)."""

    entry: dict[str, Any]
    listed_at: str | None

    def target(self) -> tuple[str, str, str | None]:
        """``(type, id, version)`` from ``request.url`` (else ``fullUrl``); ("", "", None) when neither says.

        The version is the etag's (``W/"3"``), else the ``_history/3`` of the URL."""
        url = member(self.entry, "request", "url") or self.entry.get("fullUrl") or ""
        parts = [p for p in str(url).split("?", 1)[0].split("/") if p]
        version = None
        if len(parts) >= 4 and parts[-2] == "_history":
            version, parts = parts[-1], parts[:-2]
        etag = member(self.entry, "response", "etag")
        tagged = etag.removeprefix("W/").strip('"') if isinstance(etag, str) else ""
        version = tagged or version
        return (parts[-2], parts[-1], version) if len(parts) >= 2 else ("", "", version)

    def time(self) -> Any:
        """``response.lastModified``, else the listing's time."""
        return member(self.entry, "response", "lastModified") or self.listed_at

    def key(self) -> str:
        """What ``deleted_at_watermark`` holds: ``<Type>/<id>``, qualified by the version when there is one."""
        rtype, rid, version = self.target()
        return f"{rtype}/{rid}" if version is None else f"{rtype}/{rid}/_history/{version}"


@dataclass(slots=True)
class HistoryScan:
    """The records of history pages, and the newest instant they list (the next ``deleted_since``)."""

    newest: Instant | None
    keys: set[str]
    """Keys of the deletions at ``newest`` (``deleted_at_watermark``)."""
    deletions: int = 0
    versions: int = 0
    cap: ClockCap | None = None
    """Entries listed past it do not move ``newest`` (:class:`~inlet.core.time.ClockCap`). Such a deletion is
    delivered, and again on each pass until the clock passes it (the same event id: consumers deduplicate)."""

    def take(self, entries: list[Any], listed_at: str | None) -> list[Any]:
        """The records of one page: its DELETE entries, and entries that are not objects (the DLQ says why).
        Creates and updates are only counted: the search delivers them."""
        records: list[Any] = []
        for entry in entries:
            method = member(entry, "request", "method")
            record = HistoryDeletion(entry, listed_at) if method == "DELETE" else None
            if record is None and isinstance(entry, dict):
                self.versions += 1
                when = member(entry, "response", "lastModified")
            else:
                records.append(record if record is not None else entry)
                self.deletions += record is not None
                when = record.time() if record is not None else None
            try:
                inst = normalise(when, "UTC") if when is not None else None
            except MappingError:
                continue  # map() reports a deletion's bad time; the watermark just does not move
            if inst is None:
                continue
            if self.cap is not None and self.cap.past(inst.utc):
                continue
            if self.newest is None or inst.utc > self.newest.utc:
                self.newest, self.keys = inst, set()
            if inst.utc == self.newest.utc and record is not None:
                self.keys.add(record.key())
        return records


async def read_deletions(
    http: HttpClient,
    log: Any,
    resource_type: str,
    page_size: int,
    search_position: Position,
    since: str | None,
    seen: set[str],
    cap: ClockCap | None = None,
) -> AsyncIterator[Batch]:
    """The DELETE entries of ``<Type>/_history?_since=<since>``; the last batch moves the deletion watermark.

    A page's batch is held until the next page has arrived: history lists newest first, so only after
    the last page is the newest instant known, and that batch alone carries it.
    """

    def position(deleted_since: str | None, keys: set[str]) -> Position:
        return {**search_position, "deleted_since": deleted_since, "deleted_at_watermark": sorted(keys)}

    params: dict[str, Any] = {"_count": str(page_size)}
    if since is not None:
        params["_since"] = since
    scan = HistoryScan(normalise(since, "UTC") if since else None, set(seen), cap=cap)
    held: list[Any] | None = None
    pages = paginate(http, NextLinkPaginator("fhir"), f"{resource_type}/_history", params)
    while True:
        try:
            page = await anext(pages)
            body = page.body
            if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
                raise UpstreamRefused(
                    "answered an OperationOutcome: "
                    + "; ".join(
                        str(i.get("diagnostics") or i.get("code"))
                        for i in body.get("issue") or ()
                        if isinstance(i, dict)
                    )
                )
            if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                raise PageDecodeError(page.url, orjson.dumps(body), "not a FHIR Bundle")
        except StopAsyncIteration:
            break
        except UpstreamRefused as exc:
            log.warning(
                "the server refuses the history of deletions; none read this pass",
                resource_type=resource_type,
                error=str(exc)[:300],
            )
            if held is not None:
                yield Batch(held, position(since, seen))
            return
        except PageDecodeError as exc:
            if held is not None:
                yield Batch(held, position(since, seen))
            yield Batch([UndecodablePage(exc.url, exc.body, exc.reason)], position(since, seen))
            return
        if held is not None:
            yield Batch(held, position(since, seen))
        held = scan.take(page.records, member(body, "meta", "lastUpdated"))
    log.info(
        "history read",
        resource_type=resource_type,
        since=since,
        deletions=scan.deletions,
        versions_skipped=scan.versions,
    )
    if cap is not None:
        cap.warn(log, resource_type=resource_type, read="history")
    yield Batch(held or [], position(scan.newest.isoformat() if scan.newest else since, scan.keys))


def map_deletion(record: HistoryDeletion, resource_type: str) -> DeletionV1:
    """A DELETE entry as ``clinical.deletion``; MappingError naming the entry when it does not say what or when."""
    rtype, rid, version = record.target()
    where = f"history DELETE entry {str(record.entry)[:200]}"
    if not rid:
        raise MappingError(f"{where}: neither request.url nor fullUrl names <Type>/<id>")
    if rtype != resource_type:
        raise MappingError(f"{where}: the history of {resource_type} listed {rtype}/{rid}")
    when = record.time()
    if when is None:
        raise MappingError(f"{where}: no response.lastModified and no Bundle meta.lastUpdated")
    deleted = normalise(when, "UTC")
    return DeletionV1(
        resource_type=rtype,
        resource_id=rid,
        deleted_at=deleted.utc,
        deleted_at_precision=deleted.precision,
        source_version=version,
    )
