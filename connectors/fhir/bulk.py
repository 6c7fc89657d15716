"""FHIR Bulk Data ``$export`` (system, group or patient level), streamed into the pipeline.

The protocol (FHIR Bulk Data Access IG, async request pattern):

1. **kick-off** ``GET [base]/$export`` (``Group/<id>/$export``, ``Patient/$export``) with
   ``Accept: application/fhir+json`` and ``Prefer: respond-async`` (+ ``_type``, ``_since``) → ``202`` and the
   status URL in ``Content-Location``;
2. **poll** the status URL: ``202`` (``X-Progress`` logged, ``Retry-After`` honoured in full and at least
   ``poll_min_seconds``; without one, backing off up to ``poll_max_seconds``) until ``200`` and the manifest
   (``transactionTime``, ``requiresAccessToken``, ``output[{type, url, count}]``, ``error[]``), all within
   ``export_deadline_seconds``;
3. **download** every output file, then every error file, as a stream of lines (never a whole file in
   memory): a batch is ``batch_size`` lines of one file; a line longer than ``max_line_bytes``, a line that
   is not JSON (a truncated last line included) and every OperationOutcome of an error file become DLQ
   records (stage decode) naming the file and line number;
4. **cleanup** ``DELETE`` the status URL once the last batch is committed.

Resources map through ``connectors.fhir.resources.map_resource`` (Patient, Encounter, Observation, Condition,
MedicationRequest) with the family's filter rules; any other exported type is filtered with a stated reason.
Each line is parsed by ``core.exact_json.loads``: orjson, unless the line holds a number a float would not give
back as written (``5.10``, ``1e-3``, 16+ digits), which then reaches the mapper as an exact Decimal.
Observations map to ``clinical.observation`` v2.0 and are published as v1.0 too (the contract's converter).

Position: ``{"transaction_time": <the _since of this export>, "export": {"status_url", "file", "file_url",
"line"}}`` while an export is being read: the first, empty batch commits the status URL alone, so a restart
(even after ``kill -9``) polls the *same* export instead of kicking off another, and a restart mid-download
skips the lines already committed. When the status URL no longer answers, a new export is kicked off from
the same ``_since``; records read again keep their event ids. The last batch carries just
``{"transaction_time": <the manifest's transactionTime>}``: the next pass exports with ``_since`` = it.

HTTP goes through :class:`core.http.HttpClient` (rate limit, auth incl. SMART backend services, retries with
``Retry-After``, size cap): ``request()`` for kick-off, polls and DELETE (the status code is the protocol),
``stream()`` for the files. OperationOutcomes are read by ``connectors.fhir.outcome``, lines split by
``connectors.fhir.ndjson``. Waiting between status polls is part of the protocol, not a rate limit, so it is
the one sleep in this connector.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, model_validator

from inlet.connectors.fhir.history import HistoryDeletion, map_deletion
from inlet.connectors.fhir.ndjson import NdjsonFile, NdjsonLine, ndjson_lines
from inlet.connectors.fhir.outcome import (
    Issue,
    OperationOutcomeError,
    describe_issues,
    final_outcome,
    outcome_issues,
)
from inlet.connectors.fhir.resources import CONTRACTS, MAPPERS, ZONE_NEEDED, filter_reason, map_resource
from inlet.connectors.fhir.strict import validate_strict
from inlet.contracts.base import Contract, published
from inlet.contracts.clinical_condition import ConditionV1
from inlet.contracts.clinical_deletion import DeletionV1
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_medication_request import MedicationRequestV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.core import exact_json, progress
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import DecodeError, InletError, MappingError, UpstreamError
from inlet.core.exact_json import member
from inlet.core.http import HttpClient, HttpResponse, HttpSettings, retry_after_seconds
from inlet.core.scaffold import Scaffold
from inlet.core.secrets import mask
from inlet.core.time import normalise
from inlet.core.types import Position

__all__ = [
    "BulkDeletion",
    "BulkExportError",
    "BulkExportExpired",
    "ExportErrorRecord",
    "FhirBulkExportConnector",
    "FhirBulkSettings",
    "ManifestCountMismatch",
    "SubsettedResource",
]

FHIR_JSON = "application/fhir+json"
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson", "application/octet-stream")


# --- errors --------------------------------------------------------------------------------------------------


class BulkExportError(UpstreamError):
    """The export failed or misbehaved on the server side (a fatal 5xx outcome, no status URL, a bad manifest,
    the deadline passed). Retriable: the supervisor restarts from the checkpoint, which re-polls or re-exports."""

    def __init__(self, message: str, issues: Sequence[Issue] = (), status: int | None = None) -> None:
        self.issues = tuple(issues)
        self.status = status
        self.codes = tuple(code for _, code, _ in self.issues)
        super().__init__(mask(message))


class BulkExportExpired(BulkExportError):
    """An output file answered 404/410: the server expired the export while it was being read. inlet DELETEs
    the abandoned export and kicks off a new one from the same ``_since`` (once per run); a second expiry in
    the same run is raised (retriable: the supervisor restarts from the checkpoint)."""


class ManifestCountMismatch(DecodeError):
    """An output file held fewer resources than its manifest ``count`` announced: resources are missing."""


@dataclass(frozen=True, slots=True)
class BulkDeletion(HistoryDeletion):
    """One ``DELETE`` entry of a Bundle in the manifest's ``deleted`` files; ``line`` is the Bundle's line and
    ``complete`` says it is the Bundle's last entry (the line is done once it is committed)."""

    where: str = ""
    line: int = 0
    complete: bool = True


@dataclass(frozen=True, slots=True)
class _ShortFile:
    """A marker after the last line of an output file that held fewer lines than its manifest ``count``."""

    file: NdjsonFile
    read: int
    line: int


class SubsettedResource(DecodeError):
    """A resource tagged ``meta.tag`` SUBSETTED (trimmed by the server): never an event, so it cannot be taken for
    the complete resource (same id and version, fields missing) by a consumer de-duplicating by event id."""


SUBSETTED_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"


def _subsetted(res: dict[str, Any]) -> bool:
    meta = res.get("meta")
    tags = meta.get("tag") if type(meta) is dict else None
    if not isinstance(tags, list):
        return False
    for t in tags:  # a loop, not any(<generator>): every resource of an export passes here
        if type(t) is dict and t.get("code") == "SUBSETTED" and t.get("system") in (SUBSETTED_SYSTEM, None):
            return True
    return False


class ExportErrorRecord(DecodeError):
    """An OperationOutcome from the export's ``error`` files: a resource the server could not export."""


# --- the connector -------------------------------------------------------------------------------------------


class FhirBulkSettings(PluginSettings):
    """Settings of a Bulk Data export integration (``http.auth`` may be ``smart_backend``)."""

    http: HttpSettings
    level: Literal["system", "group", "patient"] = "system"
    group_id: str | None = None
    """Required for ``level: group``."""
    types: list[str] = Field(default_factory=list)
    """``_type``: resource types to export; empty lets the server export all it has."""
    since: str | None = None
    """``_since`` of the first export (any core.time format); None: everything."""
    incremental: bool = True
    """Later exports pass the previous ``transactionTime`` as ``_since``; false: always a full export."""
    params: dict[str, str] = Field(default_factory=dict)
    """Extra kick-off parameters (e.g. ``_typeFilter``)."""
    batch_size: int = Field(default=500, ge=1, le=50_000)
    poll_min_seconds: float = Field(default=1.0, ge=0)
    poll_max_seconds: float = Field(default=120.0, gt=0)
    export_deadline_seconds: float = Field(default=6 * 3600.0, gt=0)
    """From kick-off (or resume) until the manifest; then the export is cancelled (DELETE) and retried."""
    max_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    cleanup: bool = True
    strict: bool = False
    """Validate every resource against the full FHIR R4 model first (``connectors.fhir.strict``: ~40x slower)."""
    """DELETE the status URL once every file is committed."""

    @model_validator(mode="after")
    def _group_needs_id(self) -> FhirBulkSettings:
        if self.level == "group" and not self.group_id:
            raise ValueError("level 'group' needs group_id")
        if self.poll_min_seconds > self.poll_max_seconds:
            raise ValueError("poll_min_seconds must not exceed poll_max_seconds")
        if "_elements" in self.params:
            raise ValueError(
                "params._elements is refused: the server then trims resources (meta.tag SUBSETTED), "
                "and every contract this family maps needs the complete resource; export whole "
                "resources and leave fields out in the customer's map hook instead"
            )
        return self


@dataclass(frozen=True)
class _Manifest:
    transaction_time: str
    requires_token: bool
    files: list[NdjsonFile]
    pages: int = 1


MAX_MANIFEST_PAGES = 10_000
"""A paged manifest longer than this is refused (a server that links pages forever)."""


class FhirBulkExportConnector(Connector[FhirBulkSettings]):
    """Bulk Data ``$export`` → every resource type the family maps (``connectors.fhir.resources.MAPPERS``);
    other types are filtered with a stated reason, so an unrestricted ``_type`` still balances the books."""

    name: ClassVar[str] = "fhir.bulk_export"
    settings_model: ClassVar[type[PluginSettings]] = FhirBulkSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (
        PatientV1,
        EncounterV1,
        ObservationV2,
        ConditionV1,
        MedicationRequestV1,
        DeletionV1,
    )
    description: ClassVar[str] = "FHIR Bulk Data $export (system/group/patient), NDJSON streamed, _since incremental"
    phi: ClassVar[bool] = True
    zone_needed: ClassVar[str] = ZONE_NEEDED
    mapped_types: ClassVar[frozenset[str]] = frozenset(MAPPERS)
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="fhir_bulk",
        integration="nightly",
        hooks=("filter", "map"),
        zone="Europe/Berlin",
        settings={"http": {"base_url": "https://fhir.{customer}.invalid/fhir"}},
        record="inlet record {key} --config {config}   # with settings.http.base_url pointing at a test server",
    )

    http: HttpClient
    _finished: str | None = None  # status URL to DELETE once the final position is committed

    def produces(self) -> tuple[type[Contract], ...]:
        """The contracts of the exported types this family maps (all of them when ``types`` is empty), each with
        the majors it is dual-published as."""
        types = self.settings.types or list(CONTRACTS)
        mapped = dict.fromkeys(CONTRACTS[t] for t in types if t in CONTRACTS and t in self.mapped_types)
        if self.settings.incremental or self.settings.since is not None:  # deleted is listed for a _since export
            mapped[DeletionV1] = None
        return published(tuple(mapped))

    async def open(self) -> None:
        self.http = HttpClient(self.settings.http, self.ctx)

    async def close(self) -> None:
        await self.http.aclose()

    # -- read: I/O only --------------------------------------------------------------------------
    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        s = self.settings
        pos = position or {}
        since: str | None = pos.get("transaction_time")
        if since is None and s.since is not None:
            since = normalise(s.since, self.ctx.zone).isoformat()
        export: dict[str, Any] | None = pos.get("export")
        for attempt in (1, 2):  # a second export only if the first one's files vanished while being read
            manifest = await self._resume(export) if export else None
            if manifest is None or export is None:
                status_url = await self._kick_off(since if s.incremental else None)
                export = {"status_url": status_url, "file": 0, "file_url": None, "line": 0}
                yield Batch([], {"transaction_time": since, "export": export})  # commit the status URL first
                manifest = await self._wait(status_url)
            try:
                async for batch in self._download(manifest, export, since):
                    yield batch
                return
            except BulkExportExpired as exc:
                await self._delete(str(export["status_url"]), "abandoned: its files are gone")
                if attempt == 2:
                    raise
                self.log.warning("bulk export files are gone; kicking off a new export", error=str(exc))
                export = None

    async def _kick_off(self, since: str | None) -> str:
        s = self.settings
        path = {"system": "$export", "group": f"Group/{s.group_id}/$export", "patient": "Patient/$export"}[s.level]
        params = dict(s.params)
        if s.types:
            params["_type"] = ",".join(s.types)
        if since is not None:
            params["_since"] = since
        answer = await self.http.request(
            "GET", path, headers={"Accept": FHIR_JSON, "Prefer": "respond-async"}, params=params, final=final_outcome
        )
        if answer.status != 202:
            raise self._refusal(f"$export kick-off ({s.level})", answer)
        location = answer.headers.get("Content-Location")
        if not location:
            raise BulkExportError("$export kick-off answered 202 without a Content-Location status URL")
        status_url = str(httpx.URL(s.http.base_url).join(location))
        self.log.info(
            "bulk export kicked off", level=s.level, since=since, types=list(s.types), status_url=mask(status_url)
        )
        progress.report(phase="export kicked off")
        return status_url

    async def _resume(self, export: Mapping[str, Any]) -> _Manifest | None:
        """The manifest of the export in ``export`` if its status URL still answers; None to start afresh."""
        url = str(export["status_url"])
        try:
            manifest = await self._wait(url)
        except (OperationOutcomeError, BulkExportError) as exc:
            self.log.warning(
                "bulk export to resume is gone; kicking off a new one", status_url=mask(url), error=str(exc)
            )
            if getattr(exc, "status", None) not in (404, 410):
                await self._delete(url, "abandoned: it failed")  # a failed export may still hold files
            return None
        index, file_url = int(export["file"]), export.get("file_url")
        if file_url is not None and (index >= len(manifest.files) or manifest.files[index].url != file_url):
            self.log.warning(
                "bulk export manifest changed since the checkpoint; kicking off a new one", status_url=mask(url)
            )
            await self._delete(url, "abandoned: its manifest changed")
            return None
        page = manifest.files[index].page if index < len(manifest.files) else manifest.pages
        self.log.info("resuming bulk export", status_url=mask(url), page=page, file=index, line=export["line"])
        return manifest

    async def _wait(self, status_url: str) -> _Manifest:
        s = self.settings
        deadline = time.monotonic() + s.export_deadline_seconds
        delay = max(s.poll_min_seconds, 0.05)
        while True:
            answer = await self.http.request(
                "GET", status_url, headers={"Accept": "application/json"}, final=final_outcome
            )
            if answer.status == 200:
                return await self._manifest_pages(answer.body, status_url)
            if answer.status != 202:
                raise self._refusal("$export status", answer)
            hinted = retry_after_seconds(answer.headers.get("Retry-After"))
            # The server's Retry-After is honoured in full (never polled sooner); without one, backoff to the max.
            wait = max(hinted, s.poll_min_seconds) if hinted is not None else delay
            delay = min(delay * 2, s.poll_max_seconds)
            if time.monotonic() + wait > deadline:
                await self._delete(status_url, "deadline")
                raise BulkExportError(
                    f"bulk export {mask(status_url)} not complete after "
                    f"export_deadline_seconds={s.export_deadline_seconds}; cancelled"
                )
            self.log.info("bulk export in progress", progress=answer.headers.get("X-Progress"), wait=round(wait, 2))
            progress.report(phase="waiting for the export", note=(answer.headers.get("X-Progress") or "")[:60])
            await asyncio.sleep(wait)

    def _refusal(self, what: str, answer: HttpResponse) -> InletError:
        issues = outcome_issues(answer.body)
        if answer.status >= 500 or (answer.status in (404, 410) and what.startswith("$export status")):
            return BulkExportError(
                f"{what} answered {answer.status}: {describe_issues(issues) or answer.body[:300]!r}",
                issues,
                status=answer.status,
            )
        return OperationOutcomeError(what, answer.status, issues, answer.body)

    async def _manifest_pages(self, body: bytes, status_url: str) -> _Manifest:
        """The whole manifest: the first page and every page its ``link`` (``relation``/``rel`` ``next``) chain
        leads to, read before any file is, so the position never advances past a page not yet seen."""
        files: list[NdjsonFile] = []
        first = self._manifest(body, status_url, 1, files)
        url, page, seen = first[1], 1, {status_url}
        while url is not None:
            if url in seen or page >= MAX_MANIFEST_PAGES:
                raise BulkExportError(
                    f"bulk export manifest of {mask(status_url)}: page {page + 1} "
                    f"{'repeats a page' if url in seen else 'is past MAX_MANIFEST_PAGES'}"
                )
            seen.add(url)
            page += 1
            answer = await self.http.request("GET", url, headers={"Accept": "application/json"}, final=final_outcome)
            if answer.status != 200:
                raise self._refusal(f"$export status (manifest page {page})", answer)
            tt, url, _ = self._manifest(answer.body, url, page, files)
            if tt != first[0]:
                raise BulkExportError(
                    f"bulk export manifest page {page} of {mask(status_url)} has transactionTime "
                    f"{tt}, page 1 has {first[0]}"
                )
        counts = {kind: sum(f.kind == kind for f in files) for kind in ("output", "deleted", "error")}
        self.log.info("bulk export manifest read", status_url=mask(status_url), pages=page, **counts)
        return _Manifest(first[0], first[2], files, page)

    def _manifest(self, body: bytes, url: str, page: int, files: list[NdjsonFile]) -> tuple[str, str | None, bool]:
        """Appends one manifest page's files (output, deleted, error) to ``files``; its (transactionTime, next page
        URL or None, requiresAccessToken)."""
        try:
            doc = orjson.loads(body)
            tt = doc["transactionTime"]
            if not isinstance(tt, str):
                raise TypeError("transactionTime is not a string")
            kinds: tuple[Literal["output", "deleted", "error"], ...] = ("output", "deleted", "error")
            for kind in kinds:
                for item in doc.get(kind) or ():
                    count = item.get("count")
                    files.append(
                        NdjsonFile(
                            len(files),
                            str(httpx.URL(url).join(str(item["url"]))),
                            str(item.get("type", "")),
                            kind,
                            page,
                            count if type(count) is int and kind == "output" else None,
                        )
                    )
            following = None
            for link in doc.get("link") or ():
                if (link.get("relation") or link.get("rel")) == "next" and link.get("url"):
                    following = str(httpx.URL(url).join(str(link["url"])))
            return tt, following, bool(doc.get("requiresAccessToken", False))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BulkExportError(
                f"bulk export manifest page {page} from {mask(url)} is not usable: "
                f"{type(exc).__name__}: {exc}; body {body[:300]!r}"
            ) from exc

    async def _download(
        self, manifest: _Manifest, export: Mapping[str, Any], since: str | None
    ) -> AsyncIterator[Batch]:
        """Batches of lines, file after file; each held back until the next exists, so the last one can carry
        the final position (the new transactionTime)."""
        s = self.settings
        status_url, first, skip = str(export["status_url"]), int(export["file"]), int(export["line"])
        origin = httpx.URL(s.http.base_url)
        held: Batch | None = None
        downloaded = 0  # bytes of the files before this one, for the progress display
        progress.report(phase="downloading", done=first, total=len(manifest.files), unit="files", note="")
        for file in manifest.files[first:]:
            same_origin = (httpx.URL(file.url).scheme, httpx.URL(file.url).netloc) == (origin.scheme, origin.netloc)
            if manifest.requires_token and not same_origin:
                raise BulkExportError(
                    f"bulk export file {mask(file.url)} requires the access token but is not on "
                    f"{origin.host}: credentials are only sent to their own upstream"
                )
            async with self.http.stream(
                file.url,
                headers={"Accept": "application/fhir+ndjson"},
                send_auth=manifest.requires_token,
                final=final_outcome,
            ) as resp:
                if resp.status_code >= 300:
                    body = (await resp.aread())[:2000]
                    refused = OperationOutcomeError(f"GET {file.url}", resp.status_code, outcome_issues(body), body)
                    if resp.status_code in (404, 410):
                        raise BulkExportExpired(str(refused), refused.issues, status=resp.status_code)
                    raise refused
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if ctype not in NDJSON_TYPES:
                    raise BulkExportError(
                        f"bulk export file {mask(file.url)} has content type {ctype!r}, "
                        f"expected one of {', '.join(NDJSON_TYPES)}"
                    )
                pending: list[Any] = []
                read = last = 0
                async for lines in ndjson_lines(resp, file, s.max_line_bytes):
                    progress.report(bytes_done=downloaded + resp.num_bytes_downloaded)
                    read += len(lines)
                    last = lines[-1].line
                    records: list[Any] = lines
                    if file.kind == "deleted":
                        records = _deletions(lines, manifest.transaction_time)
                    # Resuming: the lines up to the committed one are in the sink already.
                    pending.extend([r for r in records if r.line > skip] if skip and file.index == first else records)
                    while len(pending) >= s.batch_size:
                        chunk, pending = pending[: s.batch_size], pending[s.batch_size :]
                        if held is not None:
                            yield held
                        held = Batch(chunk, self._at(since, status_url, file, _done(chunk[-1])))
                downloaded += resp.num_bytes_downloaded
                progress.report(done=file.index + 1, bytes_done=downloaded)
                if file.count is not None and read != file.count:
                    self._count_mismatch(file, read)
                    if read < file.count and not (skip and file.index == first and skip > last):
                        pending.append(_ShortFile(file, read, last + 1))
                if pending:
                    if held is not None:
                        yield held
                    held = Batch(pending, self._at(since, status_url, file, _done(pending[-1])))
        final = {"transaction_time": manifest.transaction_time}
        self._finished = status_url if s.cleanup else None
        self.log.info("bulk export read", files=len(manifest.files), transaction_time=manifest.transaction_time)
        yield Batch(held.records if held is not None else [], final)

    def _count_mismatch(self, file: NdjsonFile, read: int) -> None:
        short = file.count is not None and read < file.count
        (self.log.error if short else self.log.warning)(
            "bulk export file holds fewer resources than its manifest count"
            if short
            else "bulk export file holds more resources than its manifest count",
            file=file.index,
            page=file.page,
            type=file.type,
            url=mask(file.url.split("?", 1)[0]),
            count=file.count,
            read=read,
        )

    @staticmethod
    def _at(since: str | None, status_url: str, file: NdjsonFile, line: int) -> Position:
        return {
            "transaction_time": since,
            "export": {
                "status_url": status_url,
                "page": file.page,
                "file": file.index,
                "file_url": file.url,
                "line": line,
            },
        }

    def describe_position(self, position: Position | None) -> str:
        pos = position or {}
        since = pos.get("transaction_time") or self.settings.since
        export = pos.get("export")
        if isinstance(export, dict):
            return (
                f"resumes the export begun with _since {since or '(none)'} at file {export.get('file')}, line "
                f"{export.get('line')} (a new export with the same _since if the server has dropped it)"
            )
        if since is None or not self.settings.incremental:
            return "kicks off a full export: every resource"
        return f"kicks off an export of every resource changed since {since} (_since)"

    async def acknowledge(self, position: Position) -> None:
        if self._finished is not None and "export" not in position:
            url, self._finished = self._finished, None
            await self._delete(url, "complete")

    async def _delete(self, status_url: str, why: str) -> None:
        """Best effort: the server expires exports anyway; a failed cleanup must not fail a committed run."""
        try:
            answer = await self.http.request("DELETE", status_url, final=final_outcome)
            self.log.info("bulk export deleted", status_url=mask(status_url), status=answer.status, why=why)
        except InletError as exc:
            self.log.warning("bulk export cleanup failed", status_url=mask(status_url), error=str(exc))

    # -- pure hooks ------------------------------------------------------------------------------
    def decode(self, raw: Any) -> Any:
        if isinstance(raw, BulkDeletion):
            return raw
        if isinstance(raw, _ShortFile):
            raise ManifestCountMismatch(
                f"output file #{raw.file.index} {raw.file.type} ({raw.file.url.split('?', 1)[0]}, manifest page "
                f"{raw.file.page}): the manifest announced {raw.file.count} resources, the file held {raw.read}: "
                f"{(raw.file.count or 0) - raw.read} missing"
            )
        if not isinstance(raw, NdjsonLine):
            raise DecodeError(f"expected an NDJSON line, got {type(raw).__name__}")
        if raw.problem:
            raise DecodeError(f"{raw.where()}: {raw.problem}")
        try:
            res = exact_json.loads(raw)  # Decimals where a float would not carry a number as written
        except json.JSONDecodeError as exc:  # orjson's error is one too
            what = "truncated last line (no newline at the end)" if raw.unterminated else "invalid JSON"
            raise DecodeError(f"{raw.where()}: {what}: {exc}") from None
        if type(res) is not dict:
            raise DecodeError(f"{raw.where()}: a JSON {type(res).__name__}, not a resource object")
        if raw.file.kind == "deleted":  # only a line that is not a Bundle of entries gets here
            raise DecodeError(
                f"{raw.where()}: a {res.get('resourceType')} without entries, not a Bundle of DELETE requests"
            )
        if raw.file.kind == "error" or res.get("resourceType") == "OperationOutcome":
            said = describe_issues(outcome_issues(res)) or "an OperationOutcome without issues"
            raise ExportErrorRecord(f"{raw.where()}: the server could not export a resource: {said}")
        if _subsetted(res):
            raise SubsettedResource(
                f"{raw.where()}: {res.get('resourceType')}/{res.get('id')} is tagged SUBSETTED "
                f"(trimmed by the server): not the complete resource, never an event"
            )
        if self.settings.strict:
            validate_strict(res)
        return res

    def filter(self, record: Any) -> str | None:
        if isinstance(record, BulkDeletion):
            rtype = record.target()[0]
            if rtype and rtype not in self.mapped_types:
                return f"deletion of {rtype}: no contract mapping in this family yet"
            return None
        rtype = record.get("resourceType")
        if rtype not in self.mapped_types:
            return f"{rtype} has no contract mapping in this family yet"
        return filter_reason(record)

    def identity(self, record: Any) -> tuple[str, str]:
        if isinstance(record, BulkDeletion):
            rtype, rid, version = record.target()
            return f"{rtype}/{rid}", f"deleted@{version or record.time()}"
        return (
            f"{record.get('resourceType')}/{record.get('id')}",
            str(member(record, "meta", "versionId") or member(record, "meta", "lastUpdated") or ""),
        )

    def map(self, record: Any) -> Sequence[Contract]:
        if isinstance(record, BulkDeletion):
            if member(record.entry, "request", "method") != "DELETE":
                raise MappingError(f"{record.where}: a deleted Bundle entry whose request.method is not DELETE")
            return [map_deletion(record, record.target()[0])]
        return [map_resource(record, self.ctx.zone)]


def _done(record: Any) -> int:
    """The last line of a file that is complete once ``record`` is committed (a Bundle's entries are emitted one
    by one: a batch ending inside a Bundle has committed only the line before, and a resume re-reads it)."""
    return int(record.line) - (isinstance(record, BulkDeletion) and not record.complete)


def _deletions(lines: list[NdjsonLine], transaction_time: str) -> list[Any]:
    """The lines of a ``deleted`` file as one :class:`BulkDeletion` per Bundle entry; a line that is not a Bundle
    with entries stays a line (decode sends it to the DLQ, saying why). A deletion's time is the entry's
    ``response.lastModified``, else the Bundle's ``meta.lastUpdated`` / ``timestamp``, else the export's
    ``transactionTime`` (the latest it can have happened)."""
    out: list[Any] = []
    for ln in lines:
        try:
            doc = orjson.loads(memoryview(ln)) if not ln.problem else None  # orjson refuses bytes subclasses
        except orjson.JSONDecodeError:
            doc = None
        entries = doc.get("entry") if type(doc) is dict and doc.get("resourceType") == "Bundle" else None
        if not isinstance(entries, list) or not entries or not all(type(e) is dict for e in entries):
            out.append(ln)
            continue
        listed = member(doc, "meta", "lastUpdated") or member(doc, "timestamp") or transaction_time
        for n, entry in enumerate(entries):
            out.append(
                BulkDeletion(
                    entry, listed, where=f"{ln.where()} entry {n + 1}", line=ln.line, complete=n == len(entries) - 1
                )
            )
    return out
