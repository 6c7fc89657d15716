"""A real, local FHIR Bulk Data ``$export`` server for the bulk connector's tests.

Why its own server: the bulk protocol's hard parts are on the wire and in time — 202s with ``Retry-After``
and ``X-Progress`` before a manifest, NDJSON files streamed in chunks (so a client can be stopped or killed
mid-file), ``_since`` against ``meta.lastUpdated``, DELETE cleanup — and tests need to inject faults at an
exact request and read back when each request came. It shares ``tools.servers.base`` with the search server.

Endpoints (``base_url`` = ``http://127.0.0.1:PORT/fhir``):

* ``GET {base}/$export``, ``{base}/Patient/$export``, ``{base}/Group/<id>/$export``: kick-off. Requires
  ``Prefer: respond-async`` and ``Accept: application/fhir+json`` (else 400 with an OperationOutcome).
  ``_type`` (comma-separated), ``_since`` (resources with ``meta.lastUpdated`` after it) and
  ``_outputFormat`` (ndjson only); anything else is 400. Patient level: Patients and resources whose
  ``subject``/``patient`` references a Patient; group level: the same restricted to ``groups[<id>]``
  (unknown group: 404). Answers 202 with ``Content-Location: {base}/bulkstatus/<job>``; the job's
  ``transactionTime`` is the server's clock at kick-off, and resources updated after it are not exported.
* ``GET {base}/bulkstatus/<job>``: ``pending_polls`` times 202 (``Retry-After``, ``X-Progress``), then 200 with
  the manifest (``output`` split into files of at most ``file_lines`` resources per type, ``error`` when
  ``errors`` were given). ``DELETE`` the same URL: 202, and the job (files included) is gone (404).
* ``GET {base}/bulkfiles/<job>/<n>.ndjson``: the file, ``application/fhir+ndjson``, sent in ``chunk_size``
  pieces with ``chunk_delay`` between them (so a download takes measurable time).

Bulk Data v2 behaviours of the SMART reference server (``smart-on-fhir/bulk-data-server``):

* **paged manifests** (``manifest_page_files``): the manifest lists at most that many files per page and links
  the next page with ``link: [{"relation": "next", "url": "{base}/bulkmanifest/<job>/<page>"}]`` (as the
  reference server does with ``allowPartialManifests``); every page repeats ``transactionTime``;
* **deletions** (:meth:`FhirBulkServer.delete`): a ``_since`` export lists the resources deleted after it in
  ``deleted``: one NDJSON file of ``transaction`` Bundles, ``deleted_per_bundle`` DELETE entries each;
* **``_elements``**: resources are trimmed to the listed elements (plus ``id``, ``meta``, ``resourceType``) and
  tagged ``meta.tag`` SUBSETTED (``http://terminology.hl7.org/CodeSystem/v3-ObservationValue``);
* ``count_delta``: a type's manifest ``count`` is off by that many (a short file when positive).

Faults (:class:`BulkFaults`): 429 / 5xx with ``Retry-After`` on given kick-off, poll or file request numbers;
failed exports (status answers 500 with a non-transient OperationOutcome); a truncated last line in a type's
last file (cut in half, no newline); a connection cut mid-file; slow files (``chunk_delay``). On the server:
``expired_files`` (410 while the manifest is still served) and a bearer token every request must carry.
Every request is in :attr:`FhirBulkServer.requests` with its monotonic arrival time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from tools.servers.base import LocalHandler, LocalHTTPServer, LocalServer
from tools.servers.fhir import json_number

__all__ = ["BulkFaults", "BulkRequest", "FhirBulkServer"]

Resource = dict[str, Any]
NDJSON = "application/fhir+ndjson"


@dataclass
class BulkFaults:
    """What to break. Request numbers count from 1 per kind (kick-off, poll, file) since the server started."""

    pending_polls: int = 1
    """202 answers before the manifest, per job."""
    retry_after: str | None = "1"
    """``Retry-After`` on the 202s (seconds or an HTTP date); None sends none."""
    kickoff_status: Mapping[int, int] = field(default_factory=dict)
    """Kick-off number → error status (429, 503...), sent with ``fault_retry_after``."""
    poll_status: Mapping[int, int] = field(default_factory=dict)
    file_status: Mapping[int, int] = field(default_factory=dict)
    fault_retry_after: str | None = "1"
    fatal_exports: int = 0
    """The first N jobs fail: their status answers 500 with an OperationOutcome coded ``exception``."""
    truncated_last_line: frozenset[str] = frozenset()
    """Resource types whose last file ends with its last line cut in half and no newline."""
    cut_file_request: int | None = None
    """This file request number announces the whole Content-Length, sends half, and closes the connection."""
    chunk_delay: float = 0.0
    """Seconds between chunks of every file."""
    manifest_page_files: int | None = None
    """Files per manifest page (a ``link`` next to the rest); None: one manifest."""
    count_delta: Mapping[str, int] = field(default_factory=dict)
    """Resource type → added to the ``count`` of the type's last file in the manifest."""


@dataclass(frozen=True)
class BulkRequest:
    """One request the server answered."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    status: int
    kind: str
    """kickoff, status, manifest, file, delete, error..."""
    at: float
    """time.monotonic() when the request arrived."""
    headers: Mapping[str, str]


@dataclass
class _Job:
    id: str
    transaction_time: str
    files: list[tuple[str, bytes]]  # (type, NDJSON body); type "deleted:Bundle" for the deleted section
    polls: int = 0


class FhirBulkServer(LocalServer):
    """The Bulk Data test server; ``resources`` may mix types. ``add()`` replaces resources by type and id."""

    def __init__(
        self,
        resources: Iterable[Resource] = (),
        *,
        faults: BulkFaults | None = None,
        file_lines: int = 1000,
        chunk_size: int = 16384,
        errors: Iterable[Resource] = (),
        groups: Mapping[str, Iterable[str]] | None = None,
        bearer_token: str | None = None,
        requires_access_token: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(_Handler, host=host, port=port, thread_name="fhir-bulk-server", poll_interval=0.05)
        self.faults = faults or BulkFaults()
        self.file_lines = file_lines
        self.chunk_size = chunk_size
        self.error_outcomes = list(errors)
        self.groups = {k: set(v) for k, v in (groups or {}).items()}
        self.bearer_token = bearer_token
        self.requires_access_token = requires_access_token
        self._resources: dict[tuple[str, str], Resource] = {}
        self._jobs: dict[str, _Job] = {}
        self._job_count = 0
        self.deleted: dict[tuple[str, str], str] = {}
        """(type, id) → when it was deleted (:meth:`delete`)."""
        self.deleted_per_bundle = 2
        self.broken_deleted_line: bytes | None = None
        """Appended as a line to every ``deleted`` file."""
        self.pages_gone = False
        """Manifest pages after the first answer 404 (an export expiring while its manifest is read)."""
        self.expired_files: set[str] = set()
        """Job ids whose files answer 410 Gone while the status URL still serves the manifest."""
        self._counts: dict[str, int] = {}
        self.requests: list[BulkRequest] = []
        self.add(resources)

    @property
    def base_url(self) -> str:
        return self.origin + "/fhir"

    def start(self) -> str:
        self._serve()
        return self.base_url

    def add(self, resources: Iterable[Resource]) -> None:
        with self._lock:
            for r in resources:
                self._resources[(str(r.get("resourceType")), str(r.get("id")))] = r

    def touch(self, resource_type: str, ids: Iterable[str]) -> list[Resource]:
        """Update resources now (new ``versionId``, ``lastUpdated`` = the server clock); returns them."""
        out = []
        with self._lock:
            for rid in ids:
                r = dict(self._resources[(resource_type, rid)])
                meta = dict(r.get("meta") or {})
                meta["versionId"] = str(int(meta.get("versionId") or "1") + 1)
                meta["lastUpdated"] = _now()
                r["meta"] = meta
                self._resources[(resource_type, rid)] = r
                out.append(r)
        return out

    def delete(self, resource_type: str, ids: Iterable[str]) -> None:
        """Delete resources now: later ``_since`` exports list them under ``deleted``."""
        with self._lock:
            for rid in ids:
                self._resources.pop((resource_type, rid), None)
                self.deleted[(resource_type, rid)] = _now()

    def jobs(self) -> list[str]:
        """The ids of the exports not deleted."""
        with self._lock:
            return sorted(self._jobs)

    def of(self, kind: str, method: str = "GET") -> list[BulkRequest]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind and r.method == method]

    # -- the protocol --------------------------------------------------------------------------------------
    def _count(self, kind: str) -> int:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            return self._counts[kind]

    def respond(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, str, dict[str, str], bytes]:
        """(status, kind, headers, body) for one request; file bodies are sent by the handler in chunks."""
        if self.bearer_token and headers.get("authorization") != f"Bearer {self.bearer_token}":
            return _outcome(401, "login", "missing or wrong bearer token", "unauthorized")
        rest = path.removeprefix("/fhir/")
        if rest in ("$export", "Patient/$export") or (rest.startswith("Group/") and rest.endswith("/$export")):
            if method != "GET":
                return _outcome(405, "not-supported", f"{method} is not allowed on $export", "bad_method")
            return self._kick_off(rest, query, headers)
        parts = rest.split("/")
        if parts[0] == "bulkstatus" and len(parts) == 2:
            return self._status(parts[1]) if method == "GET" else self._delete(parts[1])
        if parts[0] == "bulkmanifest" and len(parts) == 3 and method == "GET" and parts[2].isdigit():
            return self._status(parts[1], int(parts[2]))
        if parts[0] == "bulkfiles" and len(parts) == 3 and method == "GET":
            return self._file(parts[1], parts[2])
        return _outcome(404, "not-found", f"no such endpoint {method} {path}", "not_found")

    def _fault(self, table: Mapping[int, int], number: int) -> tuple[int, str, dict[str, str], bytes] | None:
        status = table.get(number)
        if status is None:
            return None
        code = "throttled" if status == 429 else "transient"
        st, _, _, body = _outcome(status, code, f"injected fault: HTTP {status}", "fault")
        ra = self.faults.fault_retry_after
        return st, "fault", ({"Retry-After": ra} if ra is not None else {}), body

    def _kick_off(
        self, rest: str, query: dict[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, str, dict[str, str], bytes]:
        if (fault := self._fault(self.faults.kickoff_status, self._count("kickoff"))) is not None:
            return fault
        if headers.get("prefer") != "respond-async" or FHIR_ACCEPT not in headers.get("accept", ""):
            return _outcome(
                400, "invalid", "kick-off needs Prefer: respond-async and Accept: application/fhir+json", "bad_request"
            )
        unknown = set(query) - {"_type", "_since", "_outputFormat", "_elements", "allowPartialManifests"}
        if unknown:
            return _outcome(400, "not-supported", f"unsupported parameters {sorted(unknown)}", "bad_request")
        fmt = query.get("_outputFormat", ["application/fhir+ndjson"])[-1]
        if fmt not in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
            return _outcome(400, "not-supported", f"_outputFormat {fmt} is not supported", "bad_request")
        types = {t for v in query.get("_type", []) for t in v.split(",") if t}
        since = _instant(query["_since"][-1]) if "_since" in query else None
        if "_since" in query and since is None:
            return _outcome(400, "invalid", f"_since {query['_since'][-1]!r} is not an instant", "bad_request")
        members: set[str] | None = None
        if rest.startswith("Group/"):
            gid = rest.split("/")[1]
            if gid not in self.groups:
                return _outcome(404, "not-found", f"Group/{gid} does not exist", "not_found")
            members = self.groups[gid]
        now = _now()
        with self._lock:
            chosen = [r for r in self._resources.values() if _wanted(r, types, since, _instant(now))]
            if rest != "$export":
                chosen = [
                    r for r in chosen if _patient_of(r) is not None and (members is None or _patient_of(r) in members)
                ]
            self._job_count += 1  # never reused, even after a DELETE
            job = _Job(f"job{self._job_count:04d}", now, [])
            by_type: dict[str, list[Resource]] = {}
            for r in chosen:
                by_type.setdefault(str(r.get("resourceType")), []).append(r)
            elements = {e.split(".")[-1] for v in query.get("_elements", []) for e in v.split(",") if e}
            for rtype in sorted(by_type):
                group = [_subset(r, elements) for r in by_type[rtype]] if elements else by_type[rtype]
                for start in range(0, len(group), self.file_lines):
                    body = b"".join(
                        orjson.dumps(r, default=json_number) + b"\n" for r in group[start : start + self.file_lines]
                    )
                    job.files.append((rtype, body))
                if rtype in self.faults.truncated_last_line:
                    last = job.files[-1][1].rstrip(b"\n")
                    cut = last.rfind(b"\n") + 1
                    job.files[-1] = (rtype, last[: cut + (len(last) - cut) // 2])
            gone = sorted(
                k
                for k, at in self.deleted.items()
                if since is not None
                and (not types or k[0] in types)
                and _wanted({"meta": {"lastUpdated": at}}, set(), since, _instant(now))
            )
            if gone:
                n = self.deleted_per_bundle
                bundles = [
                    {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "entry": [
                            {
                                "fullUrl": f"{self.base_url}/{t}/{i}",
                                "request": {"method": "DELETE", "url": f"{t}/{i}"},
                                "response": {"status": "204", "lastModified": self.deleted[(t, i)]},
                            }
                            for t, i in gone[start : start + n]
                        ],
                    }
                    for start in range(0, len(gone), n)
                ]
                body = b"".join(orjson.dumps(b) + b"\n" for b in bundles)
                if self.broken_deleted_line is not None:
                    body += self.broken_deleted_line + b"\n"
                job.files.append(("deleted:Bundle", body))
            if self.error_outcomes:
                job.files.append(("OperationOutcome", b"".join(orjson.dumps(e) + b"\n" for e in self.error_outcomes)))
            self._jobs[job.id] = job
        return 202, "kickoff", {"Content-Location": f"{self.base_url}/bulkstatus/{job.id}"}, b""

    def _status(self, job_id: str, page: int = 1) -> tuple[int, str, dict[str, str], bytes]:
        if page == 1 and (fault := self._fault(self.faults.poll_status, self._count("status"))) is not None:
            return fault
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _outcome(404, "not-found", f"export {job_id} does not exist (deleted or expired)", "status")
            job.polls += page == 1
            polls = job.polls
        if int(job_id.removeprefix("job")) <= self.faults.fatal_exports:
            return _outcome(500, "exception", "export failed: database unavailable", "status")
        if polls <= self.faults.pending_polls:
            headers = {"X-Progress": f"{100 * polls // (self.faults.pending_polls + 1)}% done"}
            if self.faults.retry_after is not None:
                headers["Retry-After"] = self.faults.retry_after
            return 202, "status", headers, b""
        size = self.faults.manifest_page_files or max(1, len(job.files))
        pages = max(1, -(-len(job.files) // size))
        if page > pages or (page > 1 and self.pages_gone):
            return _outcome(404, "not-found", f"export {job_id} has no manifest page {page}", "manifest")
        output, error, deleted = [], [], []
        last_of_type = {rtype: n for n, (rtype, _) in enumerate(job.files)}
        for n, (rtype, body) in enumerate(job.files):
            if not (page - 1) * size <= n < page * size:
                continue
            item = {"type": rtype.removeprefix("deleted:"), "url": f"{self.base_url}/bulkfiles/{job.id}/{n}.ndjson"}
            if rtype == "OperationOutcome":
                error.append(item)
            elif rtype.startswith("deleted:"):
                deleted.append(item)
            else:
                count = body.count(b"\n") + (not body.endswith(b"\n"))
                if last_of_type[rtype] == n:
                    count += self.faults.count_delta.get(rtype, 0)
                output.append({**item, "count": count})
        manifest: dict[str, Any] = {
            "transactionTime": job.transaction_time,
            "request": f"{self.base_url}/$export",
            "requiresAccessToken": self.requires_access_token,
            "output": output,
            "error": error,
        }
        if deleted:
            manifest["deleted"] = deleted
        if page < pages:
            manifest["link"] = [{"relation": "next", "url": f"{self.base_url}/bulkmanifest/{job.id}/{page + 1}"}]
        return 200, "manifest", {"Content-Type": "application/json"}, orjson.dumps(manifest)

    def _delete(self, job_id: str) -> tuple[int, str, dict[str, str], bytes]:
        with self._lock:
            gone = self._jobs.pop(job_id, None)
        if gone is None:
            return _outcome(404, "not-found", f"export {job_id} does not exist", "delete")
        return 202, "delete", {}, b""

    def _file(self, job_id: str, name: str) -> tuple[int, str, dict[str, str], bytes]:
        number = self._count("file")
        if (fault := self._fault(self.faults.file_status, number)) is not None:
            return fault
        with self._lock:
            job = self._jobs.get(job_id)
        if job_id in self.expired_files:
            return _outcome(410, "not-found", f"the files of {job_id} have expired", "file_gone")
        index = name.removesuffix(".ndjson")
        if job is None or not index.isdigit() or int(index) >= len(job.files):
            return _outcome(404, "not-found", f"file {job_id}/{name} does not exist", "file")
        kind = "file_cut" if number == self.faults.cut_file_request else "file"
        return 200, kind, {"Content-Type": NDJSON}, job.files[int(index)][1]


FHIR_ACCEPT = "application/fhir+json"


class _Handler(LocalHandler):
    server: LocalHTTPServer[FhirBulkServer]
    timeout = 60

    def do_GET(self) -> None:
        self._handle("GET")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        app = self.server.app
        arrived = time.monotonic()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, kind, extra, body = app.respond(method, split.path, query, headers)
        except Exception as exc:
            app._record_error(repr(exc))
            status, kind, extra, body = _outcome(500, "exception", f"test server bug: {exc!r}", "error")
        with app._lock:
            app.requests.append(BulkRequest(method, split.path, query, status, kind, arrived, headers))
        self.send_response(status)
        if "Content-Type" not in extra:
            self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if kind not in ("file", "file_cut"):
            self.wfile.write(body)
            return
        end = len(body) // 2 if kind == "file_cut" else len(body)
        for start in range(0, end, app.chunk_size):
            if start and app.faults.chunk_delay and app._stopping.wait(app.faults.chunk_delay):
                break
            self.wfile.write(body[start : min(end, start + app.chunk_size)])
            self.wfile.flush()
        if end < len(body):
            self.close_connection = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _wanted(r: Resource, types: set[str], since: datetime | None, until: datetime | None) -> bool:
    if types and r.get("resourceType") not in types:
        return False
    updated = _instant((r.get("meta") or {}).get("lastUpdated"))
    if since is not None and (updated is None or updated <= since):
        return False
    return not (until is not None and updated is not None and updated > until)


SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def _subset(r: Resource, elements: set[str]) -> Resource:
    """``r`` with only ``elements`` (and the mandatory ones), tagged SUBSETTED, as ``_elements`` asks."""
    out = {k: v for k, v in r.items() if k in elements or k in ("resourceType", "id", "meta")}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    out["meta"] = meta
    return out


def _patient_of(r: Resource) -> str | None:
    """The Patient a resource belongs to (its own id for a Patient), None for shared resources."""
    if r.get("resourceType") == "Patient":
        return str(r.get("id"))
    for key in ("subject", "patient"):
        ref = (r.get(key) or {}).get("reference") if isinstance(r.get(key), dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref.removeprefix("Patient/")
    return None


def _outcome(status: int, code: str, text: str, kind: str) -> tuple[int, str, dict[str, str], bytes]:
    body = orjson.dumps(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    )
    return status, kind, {}, body
