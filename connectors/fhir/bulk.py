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
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_medication_request import MedicationRequestV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.core import exact_json
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import DecodeError, InletError, UpstreamError
from inlet.core.http import HttpClient, HttpResponse, HttpSettings, retry_after_seconds
from inlet.core.scaffold import Scaffold
from inlet.core.secrets import mask
from inlet.core.time import normalise
from inlet.core.types import Position

__all__ = ["BulkExportError", "ExportErrorRecord", "FhirBulkExportConnector", "FhirBulkSettings"]

FHIR_JSON = "application/fhir+json"
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson", "application/octet-stream")


# --- errors --------------------------------------------------------------------------------------------------


class BulkExportError(UpstreamError):
    """The export failed or misbehaved on the server side (a fatal 5xx outcome, no status URL, a bad manifest,
    the deadline passed). Retriable: the supervisor restarts from the checkpoint, which re-polls or re-exports."""

    def __init__(self, message: str, issues: Sequence[Issue] = ()) -> None:
        self.issues = tuple(issues)
        self.codes = tuple(code for _, code, _ in self.issues)
        super().__init__(mask(message))


class _ExportExpired(BulkExportError):
    """An output file answered 404/410: the server expired the export while it was being read."""


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
        return self


@dataclass(frozen=True)
class _Manifest:
    transaction_time: str
    requires_token: bool
    files: list[NdjsonFile]


class FhirBulkExportConnector(Connector[FhirBulkSettings]):
    """Bulk Data ``$export`` → every resource type the family maps (``connectors.fhir.resources.MAPPERS``);
    other types are filtered with a stated reason, so an unrestricted ``_type`` still balances the books."""

    name: ClassVar[str] = "fhir.bulk_export"
    settings_model: ClassVar[type[PluginSettings]] = FhirBulkSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (PatientV1, EncounterV1, ObservationV2, ConditionV1,
                                                       MedicationRequestV1)
    description: ClassVar[str] = "FHIR Bulk Data $export (system/group/patient), NDJSON streamed, _since incremental"
    phi: ClassVar[bool] = True
    zone_needed: ClassVar[str] = ZONE_NEEDED
    mapped_types: ClassVar[frozenset[str]] = frozenset(MAPPERS)
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="fhir_bulk", integration="nightly", hooks=("filter", "map"), zone="Europe/Berlin",
        settings={"http": {"base_url": "https://fhir.{customer}.invalid/fhir"}},
        record="inlet record {key} --config {config}   # with settings.http.base_url pointing at a test server")

    http: HttpClient
    _finished: str | None = None  # status URL to DELETE once the final position is committed

    def produces(self) -> tuple[type[Contract], ...]:
        """The contracts of the exported types this family maps (all of them when ``types`` is empty), each with
        the majors it is dual-published as."""
        types = self.settings.types or list(CONTRACTS)
        mapped = dict.fromkeys(CONTRACTS[t] for t in types if t in CONTRACTS and t in self.mapped_types)
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
            except _ExportExpired as exc:
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
        answer = await self.http.request("GET", path, headers={"Accept": FHIR_JSON, "Prefer": "respond-async"},
                                         params=params, final=final_outcome)
        if answer.status != 202:
            raise self._refusal(f"$export kick-off ({s.level})", answer)
        location = answer.headers.get("Content-Location")
        if not location:
            raise BulkExportError("$export kick-off answered 202 without a Content-Location status URL")
        status_url = str(httpx.URL(s.http.base_url).join(location))
        self.log.info("bulk export kicked off", level=s.level, since=since, types=s.types, status_url=mask(status_url))
        return status_url

    async def _resume(self, export: Mapping[str, Any]) -> _Manifest | None:
        """The manifest of the export in ``export`` if its status URL still answers; None to start afresh."""
        url = str(export["status_url"])
        try:
            manifest = await self._wait(url)
        except (OperationOutcomeError, BulkExportError) as exc:
            self.log.warning("bulk export to resume is gone; kicking off a new one", status_url=mask(url),
                             error=str(exc))
            return None
        index, file_url = int(export["file"]), export.get("file_url")
        if file_url is not None and (index >= len(manifest.files) or manifest.files[index].url != file_url):
            self.log.warning("bulk export manifest changed since the checkpoint; kicking off a new one",
                             status_url=mask(url))
            return None
        self.log.info("resuming bulk export", status_url=mask(url), file=index, line=export["line"])
        return manifest

    async def _wait(self, status_url: str) -> _Manifest:
        s = self.settings
        deadline = time.monotonic() + s.export_deadline_seconds
        delay = max(s.poll_min_seconds, 0.05)
        while True:
            answer = await self.http.request("GET", status_url, headers={"Accept": "application/json"},
                                             final=final_outcome)
            if answer.status == 200:
                return self._manifest(answer.body, status_url)
            if answer.status != 202:
                raise self._refusal("$export status", answer)
            hinted = retry_after_seconds(answer.headers.get("Retry-After"))
            # The server's Retry-After is honoured in full (never polled sooner); without one, backoff to the max.
            wait = max(hinted, s.poll_min_seconds) if hinted is not None else delay
            delay = min(delay * 2, s.poll_max_seconds)
            if time.monotonic() + wait > deadline:
                await self._delete(status_url, "deadline")
                raise BulkExportError(f"bulk export {mask(status_url)} not complete after "
                                      f"export_deadline_seconds={s.export_deadline_seconds}; cancelled")
            self.log.info("bulk export in progress", progress=answer.headers.get("X-Progress"), wait=round(wait, 2))
            await asyncio.sleep(wait)

    def _refusal(self, what: str, answer: HttpResponse) -> InletError:
        issues = outcome_issues(answer.body)
        if answer.status >= 500 or (answer.status in (404, 410) and what == "$export status"):
            return BulkExportError(f"{what} answered {answer.status}: {describe_issues(issues) or answer.body[:300]!r}",
                                   issues)
        return OperationOutcomeError(what, answer.status, issues, answer.body)

    def _manifest(self, body: bytes, status_url: str) -> _Manifest:
        try:
            doc = orjson.loads(body)
            tt = doc["transactionTime"]
            if not isinstance(tt, str):
                raise TypeError("transactionTime is not a string")
            files: list[NdjsonFile] = []
            for kind in ("output", "error"):
                for item in doc.get(kind) or ():
                    url = str(httpx.URL(status_url).join(str(item["url"])))
                    files.append(NdjsonFile(len(files), url, str(item.get("type", "")), kind))
            return _Manifest(tt, bool(doc.get("requiresAccessToken", False)), files)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BulkExportError(f"bulk export manifest from {mask(status_url)} is not usable: "
                                  f"{type(exc).__name__}: {exc}; body {body[:300]!r}") from exc

    async def _download(self, manifest: _Manifest, export: Mapping[str, Any],
                        since: str | None) -> AsyncIterator[Batch]:
        """Batches of lines, file after file; each held back until the next exists, so the last one can carry
        the final position (the new transactionTime)."""
        s = self.settings
        status_url, first, skip = str(export["status_url"]), int(export["file"]), int(export["line"])
        origin = httpx.URL(s.http.base_url)
        held: Batch | None = None
        for file in manifest.files[first:]:
            same_origin = (httpx.URL(file.url).scheme, httpx.URL(file.url).netloc) == (origin.scheme, origin.netloc)
            if manifest.requires_token and not same_origin:
                raise BulkExportError(f"bulk export file {mask(file.url)} requires the access token but is not on "
                                      f"{origin.host}: credentials are only sent to their own upstream")
            async with self.http.stream(file.url, headers={"Accept": "application/fhir+ndjson"},
                                        send_auth=manifest.requires_token, final=final_outcome) as resp:
                if resp.status_code >= 300:
                    body = (await resp.aread())[:2000]
                    refused = OperationOutcomeError(f"GET {file.url}", resp.status_code, outcome_issues(body), body)
                    if resp.status_code in (404, 410):
                        raise _ExportExpired(str(refused), refused.issues)
                    raise refused
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if ctype not in NDJSON_TYPES:
                    raise BulkExportError(f"bulk export file {mask(file.url)} has content type {ctype!r}, "
                                          f"expected one of {', '.join(NDJSON_TYPES)}")
                pending: list[NdjsonLine] = []
                async for lines in ndjson_lines(resp, file, s.max_line_bytes):
                    # Resuming: the lines up to the committed one are in the sink already.
                    pending.extend([ln for ln in lines if ln.line > skip] if skip and file.index == first else lines)
                    while len(pending) >= s.batch_size:
                        chunk, pending = pending[: s.batch_size], pending[s.batch_size:]
                        if held is not None:
                            yield held
                        held = Batch(chunk, self._at(since, status_url, file, chunk[-1].line))
                if pending:
                    if held is not None:
                        yield held
                    held = Batch(pending, self._at(since, status_url, file, pending[-1].line))
        final = {"transaction_time": manifest.transaction_time}
        self._finished = status_url if s.cleanup else None
        self.log.info("bulk export read", files=len(manifest.files), transaction_time=manifest.transaction_time)
        yield Batch(held.records if held is not None else [], final)

    @staticmethod
    def _at(since: str | None, status_url: str, file: NdjsonFile, line: int) -> Position:
        return {"transaction_time": since,
                "export": {"status_url": status_url, "file": file.index, "file_url": file.url, "line": line}}

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
        if raw.file.kind == "error" or res.get("resourceType") == "OperationOutcome":
            said = describe_issues(outcome_issues(res)) or "an OperationOutcome without issues"
            raise ExportErrorRecord(f"{raw.where()}: the server could not export a resource: {said}")
        if self.settings.strict:
            validate_strict(res)
        return res

    def filter(self, record: dict[str, Any]) -> str | None:
        rtype = record.get("resourceType")
        if rtype not in self.mapped_types:
            return f"{rtype} has no contract mapping in this family yet"
        return filter_reason(record)

    def identity(self, record: dict[str, Any]) -> tuple[str, str]:
        meta = record.get("meta") or {}
        return (f"{record.get('resourceType')}/{record.get('id')}",
                str(meta.get("versionId") or meta.get("lastUpdated") or ""))

    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        return [map_resource(record, self.ctx.zone)]
