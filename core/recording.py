"""Record and replay HTTP exchanges through httpx's transport layer (no monkeypatching).

A recording is ``http.jsonl``: one exchange per line, in request order, holding the request's method,
path and sorted query, and the response's status, content type and body (JSON bodies stored as JSON
so a fixture diff is reviewable). Request headers are never written — that is where credentials live.

Replay matches a request explicitly on method, path and query (the host is ignored: recordings are made
against local test servers on random ports), on the headers in :data:`MATCH_HEADERS` (content negotiation:
an ``Accept`` or ``Prefer: respond-async`` change is a different request) and on a SHA-256 of the body
(JSON and text bodies; form-encoded bodies are where credentials travel and are not digested).
Identical requests are answered in recorded order, the last one repeating (a daemon polling a caught-up
upstream). A request with no recording fails with
:class:`ReplayMiss`, showing the nearest recorded request, so a plugin author sees what changed.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

from core.errors import InletError

__all__ = ["MATCH_HEADERS", "RecordingTransport", "ReplayMiss", "ReplayTransport", "request_key", "request_match"]


class ReplayMiss(InletError):
    """A replayed integration made a request that was never recorded (not retriable: replay is offline)."""


MATCH_HEADERS = ("accept", "prefer", "content-type")
"""Request headers that take part in matching (never credentials)."""


def request_match(request: httpx.Request) -> dict[str, Any]:
    """What besides :func:`request_key` a replayed request must match: selected headers, body digest."""
    match: dict[str, Any] = {}
    headers = {h: request.headers[h] for h in MATCH_HEADERS if h in request.headers}
    if headers:
        match["headers"] = headers
    content = request.content
    if content and "form-urlencoded" not in request.headers.get("content-type", ""):
        match["body_sha256"] = hashlib.sha256(content).hexdigest()
    return match


def request_key(request: httpx.Request) -> str:
    """``METHOD path?sorted-query``: what replay matches on."""
    query = sorted(httpx.QueryParams(request.url.query).multi_items())
    qs = "&".join(f"{k}={v}" for k, v in query)
    return f"{request.method} {request.url.path}" + (f"?{qs}" if qs else "")


def _body_doc(content: bytes, content_type: str) -> dict[str, Any]:
    if "json" in content_type:
        try:
            return {"json": orjson.loads(content)}
        except orjson.JSONDecodeError:
            pass
    return {"text": content.decode("utf-8", "replace")}


def _full_key(line: str, match: dict[str, Any]) -> str:
    """The request line plus its match fields, as one comparable (and human-readable) string."""
    return line + (" " + orjson.dumps(match, option=orjson.OPT_SORT_KEYS).decode() if match else "")


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to ``inner`` and appends every exchange to ``path`` (JSON lines)."""

    def __init__(self, path: Path, inner: httpx.AsyncBaseTransport | None = None,
                 redact: Any = None) -> None:
        self.path = path
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.redact = redact  # optional callable(doc) -> doc applied to each exchange before writing
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        ctype = response.headers.get("content-type", "")
        doc: dict[str, Any] = {
            "request": request_key(request),
            "match": request_match(request),
            "response": {"status": response.status_code, "content_type": ctype, **_body_doc(content, ctype)},
        }
        if retry_after := response.headers.get("retry-after"):
            doc["response"]["retry_after"] = retry_after
        if self.redact is not None:
            doc = self.redact(doc)
        with self.path.open("ab") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers requests from a recording made by :class:`RecordingTransport`."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no recording at {path}")
        self.path = path
        self._answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in path.read_bytes().splitlines():
            if line.strip():
                doc = orjson.loads(line)
                resp = doc["response"]
                # Serialise each body once, not on every replayed request.
                resp["content"] = orjson.dumps(resp["json"]) if "json" in resp else resp.get("text", "").encode()
                self._answers[_full_key(doc["request"], doc.get("match", {}))].append(resp)
        self._served: dict[str, int] = defaultdict(int)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = _full_key(request_key(request), request_match(request))
        answers = self._answers.get(key)
        if not answers:
            near = difflib.get_close_matches(key, list(self._answers), n=1, cutoff=0.0)
            raise ReplayMiss(f"no recorded exchange for {key} in {self.path}; "
                             f"nearest recorded: {near[0] if near else '(none)'}")
        i = min(self._served[key], len(answers) - 1)
        self._served[key] += 1
        resp = answers[i]
        content = resp["content"]
        headers = {"content-type": resp.get("content_type", "application/octet-stream")}
        if "retry_after" in resp:
            headers["retry-after"] = resp["retry_after"]
        return httpx.Response(resp["status"], headers=headers, content=content, request=request)
