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

Position: ``{"transaction_time": <the _since of this export>, "export": {"status_url", "file", "file_url",
"line"}}`` while an export is being read: the first, empty batch commits the status URL alone, so a restart
(even after ``kill -9``) polls the *same* export instead of kicking off another, and a restart mid-download
skips the lines already committed. When the status URL no longer answers, a new export is kicked off from
the same ``_since``; records read again keep their event ids. The last batch carries just
``{"transaction_time": <the manifest's transactionTime>}``: the next pass exports with ``_since`` = it.

HTTP goes through :class:`core.http.HttpClient` (rate limit, auth incl. SMART backend services, retries with
``Retry-After``, size cap); :class:`_BulkHttpClient` adds what ``HttpClient.get`` lacks here — request
headers, the status code (202 vs 200), DELETE and a streamed body. Waiting between status polls is part of
the protocol, not a rate limit, so it is the one sleep in this connector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import Field, model_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay

from connectors.fhir.resources import MAPPERS, filter_reason, map_resource
from contracts.base import Contract
from contracts.clinical_condition import ConditionV1
from contracts.clinical_encounter import EncounterV1
from contracts.clinical_medication_request import MedicationRequestV1
from contracts.clinical_observation import ObservationV1
from contracts.clinical_patient import PatientV1
from core.connector import Batch, Connector, PluginSettings
from core.errors import DecodeError, InletError, UpstreamError
from core.http import (
    REQUESTS,
    RETRIES,
    STATUS_ACTIONS,
    HttpClient,
    HttpSettings,
    UpstreamRefused,
    _exception_action,
    _Retryable,
    _WaitRetryAfter,
    retry_after_seconds,
)
from core.secrets import mask
from core.time import normalise
from core.types import Position

__all__ = ["BulkExportError", "ExportErrorRecord", "FhirBulkExportConnector", "FhirBulkSettings",
           "NdjsonLine", "OperationOutcomeError", "outcome_issues"]

FHIR_JSON = "application/fhir+json"
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson", "application/octet-stream")
TRANSIENT_CODES = frozenset({"transient", "throttled", "timeout", "lock-error", "no-store", "incomplete"})
"""OperationOutcome issue codes that say "try again"; a 5xx whose issues carry none of them is final."""
_PREVIEW = 4096  # bytes of an over-long line kept as its DLQ payload


# --- errors --------------------------------------------------------------------------------------------------

Issue = tuple[str, str, str]
"""One OperationOutcome issue: (severity, code, diagnostics or details.text)."""


def outcome_issues(body: Any) -> tuple[Issue, ...]:
    """The issues of an OperationOutcome (bytes or parsed); () if it is not one."""
    if isinstance(body, bytes | bytearray):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ()
    if type(body) is not dict or body.get("resourceType") != "OperationOutcome":
        return ()
    out = []
    for issue in body.get("issue") or ():
        if type(issue) is dict:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            out.append((str(issue.get("severity", "")), str(issue.get("code", "")), str(text)))
    return tuple(out)


def _describe(issues: Sequence[Issue]) -> str:
    return "; ".join(f"{sev or '?'} {code or '?'}: {text}".rstrip(": ") for sev, code, text in issues)


class OperationOutcomeError(UpstreamRefused):
    """The FHIR server refused a request (4xx) and said why in an OperationOutcome: fix the request or config.

    ``codes`` and ``issues`` hold what the server said, so callers branch on ``"not-supported"`` etc.
    """

    def __init__(self, what: str, status: int, issues: Sequence[Issue], body: bytes = b"") -> None:
        self.status, self.issues = status, tuple(issues)
        self.codes = tuple(code for _, code, _ in self.issues)
        said = _describe(self.issues) or body[:300].decode("utf-8", "replace") or "no body"
        super().__init__(mask(f"{what} answered {status}: {said}"))


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


# --- HTTP: what HttpClient.get does not offer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes


def _transport(method: str, url: str, exc: httpx.HTTPError) -> InletError:
    message = mask(f"{method} {url}: {type(exc).__name__}: {exc}")
    if _exception_action(exc) == "retry":
        return _Retryable(message, type(exc).__name__)
    return UpstreamRefused(message)


class _BulkHttpClient(HttpClient):
    """``HttpClient`` plus request headers, status codes, DELETE and streamed bodies, with the same limiter,
    auth, retry policy (:data:`core.http.STATUS_ACTIONS`, ``Retry-After``) and size cap."""

    def _retrying(self, method: str, url: str) -> AsyncRetrying:
        s = self.settings

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, _Retryable) else "error"
            RETRIES.labels(self._label, reason).inc()
            self.log.warning("upstream request failed; retrying", method=method, url=mask(url),
                             attempt=state.attempt_number, reason=reason, error=str(exc)[:300],
                             wait=round(state.next_action.sleep, 2) if state.next_action else None)

        return AsyncRetrying(stop=stop_after_attempt(s.max_attempts) | stop_before_delay(s.deadline_seconds),
                             wait=_WaitRetryAfter(s.backoff_initial, s.backoff_max),
                             retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                             before_sleep=before_sleep, reraise=True)

    def _check(self, method: str, resp: httpx.Response, body: bytes) -> None:
        """Raise ``_Retryable`` for a status worth retrying, unless an OperationOutcome says it is final."""
        status = resp.status_code
        if STATUS_ACTIONS.get(status) != "retry":
            return
        issues = outcome_issues(body)
        if issues and status >= 500 and not any(code in TRANSIENT_CODES for _, code, _ in issues):
            return  # the server says the job itself failed: the caller decides (re-export), no retry
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is not None and status in (429, 503):
            self.limiter.pause_for(wait, "retry_after")  # everyone on this upstream waits, not just us
        raise _Retryable(mask(f"{method} {resp.request.url} answered {status}: {body[:300]!r}"), str(status), wait)

    async def _send_once(self, method: str, url: str, headers: Mapping[str, str],
                         params: Mapping[str, str] | None) -> _Answer:
        cap = self.settings.max_response_bytes
        try:
            async with self.limiter.slot(), self._client.stream(method, url, headers=headers, params=params) as resp:
                REQUESTS.labels(self._label, str(resp.status_code)).inc()
                self.limiter.observe(resp.headers)
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise UpstreamRefused(f"{method} {resp.request.url}: response exceeds max_response_bytes={cap}")
                    chunks.append(chunk)
                body = b"".join(chunks)
        except UpstreamError as exc:  # the auth flow's token endpoint answered 5xx / 429
            raise _Retryable(mask(str(exc)), "auth") from exc
        except httpx.HTTPError as exc:
            raise _transport(method, url, exc) from exc
        self._check(method, resp, body)
        return _Answer(resp.status_code, resp.headers, body)

    async def _attempts(self, method: str, url: str, once: Any) -> Any:
        started = time.monotonic()
        try:
            async for attempt in self._retrying(method, url):
                with attempt:
                    return await once()
        except _Retryable as exc:
            raise UpstreamError(f"{exc} (gave up after {attempt.retry_state.attempt_number} attempts, "
                                f"{time.monotonic() - started:.1f} s)") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                   params: Mapping[str, str] | None = None) -> _Answer:
        """One request with retries; the final answer whatever its status (4xx are the caller's to judge)."""
        answer: _Answer = await self._attempts(method, url, lambda: self._send_once(method, url, headers or {}, params))
        return answer

    async def open_stream(self, url: str, *, with_auth: bool) -> httpx.Response:
        """GET ``url`` with the body left unread (the caller iterates and closes it); opening is retried.

        The limiter slot is held for the response head only: a paused pipeline must not block other
        integrations sharing the upstream's concurrency cap while it holds a half-read file.
        """
        auth: Any = httpx.USE_CLIENT_DEFAULT if with_auth else None

        async def once() -> httpx.Response:
            request = self._client.build_request("GET", url, headers={"Accept": "application/fhir+ndjson"})
            try:
                async with self.limiter.slot():
                    resp = await self._client.send(request, stream=True, auth=auth)
            except UpstreamError as exc:
                raise _Retryable(mask(str(exc)), "auth") from exc
            except httpx.HTTPError as exc:
                raise _transport("GET", url, exc) from exc
            REQUESTS.labels(self._label, str(resp.status_code)).inc()
            self.limiter.observe(resp.headers)
            if resp.status_code >= 300:
                body = (await resp.aread())[:2000]
                await resp.aclose()
                self._check("GET", resp, body)
                raise OperationOutcomeError(f"GET {url}", resp.status_code, outcome_issues(body), body)
            return resp

        resp: httpx.Response = await self._attempts("GET", url, once)
        return resp


# --- NDJSON lines --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    index: int
    url: str
    type: str
    kind: Literal["output", "error"]


class NdjsonLine(bytes):
    """One line of an output file, as the bytes received (so a DLQ record's value is the original line),
    with where it came from: ``file``, 1-based ``line``, and ``problem`` (over-long, unterminated)."""

    file: _File
    line: int
    problem: str | None
    unterminated: bool

    def where(self) -> str:
        shown = self.file.url.split("?", 1)[0]  # a pre-signed file URL's query is a credential
        return f"{self.file.kind} file #{self.file.index} {self.file.type} ({shown}) line {self.line}"


def _line(data: bytes, file: _File, number: int, problem: str | None = None, unterminated: bool = False) -> NdjsonLine:
    out = NdjsonLine(data)
    out.file, out.line, out.problem, out.unterminated = file, number, problem, unterminated
    return out


def _too_long(size: int, cap: int) -> str:
    return f"line of {size} bytes exceeds max_line_bytes={cap} (its first {min(size, _PREVIEW)} bytes are kept)"


async def _lines(resp: httpx.Response, file: _File, max_line: int) -> AsyncIterator[list[NdjsonLine]]:
    """The lines of a streamed body, one list per chunk received; memory stays within ``max_line`` + a chunk.

    Blank lines are counted (line numbers are the file's) but not yielded. A line over ``max_line`` keeps its
    first bytes and a problem; a last line without newline is flagged ``unterminated``.
    """
    buf = bytearray()
    number = 0
    over = 0  # > 0: length of the current line, which is over the cap and being discarded
    try:
        async for chunk in resp.aiter_bytes():
            out: list[NdjsonLine] = []
            start, size = 0, len(chunk)
            while start < size:
                nl = chunk.find(b"\n", start)
                end = size if nl < 0 else nl
                if over:
                    over += end - start
                    if len(buf) < _PREVIEW:
                        buf += chunk[start : min(end, start + _PREVIEW - len(buf))]
                elif len(buf) + end - start > max_line:
                    over = len(buf) + end - start
                    buf += chunk[start : min(end, start + max(0, _PREVIEW - len(buf)))]  # a preview only
                    del buf[_PREVIEW:]
                elif nl >= 0 and not buf:  # the common case: a whole line inside this chunk
                    number += 1
                    piece = chunk[start:nl].rstrip(b"\r")
                    if piece and not piece.isspace():
                        out.append(_line(piece, file, number))
                    start = nl + 1
                    continue
                else:
                    buf += chunk[start:end]
                if nl < 0:
                    break
                number += 1
                if over:
                    out.append(_line(bytes(buf), file, number, _too_long(over, max_line)))
                elif buf and not buf.isspace():
                    out.append(_line(bytes(buf.rstrip(b"\r")), file, number))
                buf.clear()
                over = 0
                start = nl + 1
            if out:
                yield out
    except httpx.HTTPError as exc:  # cut mid-body: transient, resume from the checkpoint
        raise UpstreamError(mask(f"download of {file.url} broke off after line {number}: "
                                 f"{type(exc).__name__}: {exc}")) from exc
    if over:
        yield [_line(bytes(buf), file, number + 1, _too_long(over, max_line))]
    elif buf and not buf.isspace():
        yield [_line(bytes(buf), file, number + 1, unterminated=True)]


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
    files: list[_File]


class FhirBulkExportConnector(Connector[FhirBulkSettings]):
    """Bulk Data ``$export`` → every resource type the family maps (``connectors.fhir.resources.MAPPERS``);
    other types are filtered with a stated reason, so an unrestricted ``_type`` still balances the books."""

    name: ClassVar[str] = "fhir.bulk_export"
    settings_model: ClassVar[type[PluginSettings]] = FhirBulkSettings
    contracts: ClassVar[tuple[type[Contract], ...]] = (PatientV1, EncounterV1, ObservationV1, ConditionV1,
                                                       MedicationRequestV1)
    description: ClassVar[str] = "FHIR Bulk Data $export (system/group/patient), NDJSON streamed, _since incremental"
    phi: ClassVar[bool] = True
    mapped_types: ClassVar[frozenset[str]] = frozenset(MAPPERS)

    http: _BulkHttpClient
    _finished: str | None = None  # status URL to DELETE once the final position is committed

    async def open(self) -> None:
        self.http = _BulkHttpClient(self.settings.http, self.ctx)

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
        answer = await self.http.send("GET", path, headers={"Accept": FHIR_JSON, "Prefer": "respond-async"},
                                      params=params)
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
            answer = await self.http.send("GET", status_url, headers={"Accept": "application/json"})
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

    def _refusal(self, what: str, answer: _Answer) -> InletError:
        issues = outcome_issues(answer.body)
        if answer.status >= 500 or (answer.status in (404, 410) and what == "$export status"):
            return BulkExportError(f"{what} answered {answer.status}: {_describe(issues) or answer.body[:300]!r}",
                                   issues)
        return OperationOutcomeError(what, answer.status, issues, answer.body)

    def _manifest(self, body: bytes, status_url: str) -> _Manifest:
        try:
            doc = orjson.loads(body)
            tt = doc["transactionTime"]
            if not isinstance(tt, str):
                raise TypeError("transactionTime is not a string")
            files: list[_File] = []
            for kind in ("output", "error"):
                for item in doc.get(kind) or ():
                    url = str(httpx.URL(status_url).join(str(item["url"])))
                    files.append(_File(len(files), url, str(item.get("type", "")), kind))
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
            try:
                resp = await self.http.open_stream(file.url, with_auth=manifest.requires_token)
            except OperationOutcomeError as exc:
                if exc.status in (404, 410):
                    raise _ExportExpired(str(exc), exc.issues) from exc
                raise
            try:
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if ctype not in NDJSON_TYPES:
                    raise BulkExportError(f"bulk export file {mask(file.url)} has content type {ctype!r}, "
                                          f"expected one of {', '.join(NDJSON_TYPES)}")
                pending: list[NdjsonLine] = []
                async for lines in _lines(resp, file, s.max_line_bytes):
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
            finally:
                await resp.aclose()
        final = {"transaction_time": manifest.transaction_time}
        self._finished = status_url if s.cleanup else None
        self.log.info("bulk export read", files=len(manifest.files), transaction_time=manifest.transaction_time)
        yield Batch(held.records if held is not None else [], final)

    @staticmethod
    def _at(since: str | None, status_url: str, file: _File, line: int) -> Position:
        return {"transaction_time": since,
                "export": {"status_url": status_url, "file": file.index, "file_url": file.url, "line": line}}

    async def acknowledge(self, position: Position) -> None:
        if self._finished is not None and "export" not in position:
            url, self._finished = self._finished, None
            await self._delete(url, "complete")

    async def _delete(self, status_url: str, why: str) -> None:
        """Best effort: the server expires exports anyway; a failed cleanup must not fail a committed run."""
        try:
            answer = await self.http.send("DELETE", status_url)
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
            res = orjson.loads(memoryview(raw))  # orjson takes exact bytes types only
        except orjson.JSONDecodeError as exc:
            what = "truncated last line (no newline at the end)" if raw.unterminated else "invalid JSON"
            raise DecodeError(f"{raw.where()}: {what}: {exc}") from None
        if type(res) is not dict:
            raise DecodeError(f"{raw.where()}: a JSON {type(res).__name__}, not a resource object")
        if raw.file.kind == "error" or res.get("resourceType") == "OperationOutcome":
            said = _describe(outcome_issues(res)) or "an OperationOutcome without issues"
            raise ExportErrorRecord(f"{raw.where()}: the server could not export a resource: {said}")
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
