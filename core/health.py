"""``/metrics``, ``/healthz`` and ``/readyz`` on one small HTTP port, for Prometheus and orchestrators.

- ``/healthz``: the supervisor's event loop is alive (a heartbeat younger than ``stale_after`` seconds).
  An orchestrator restarts the process when this fails: a wedged loop is the one thing inlet cannot heal.
- ``/readyz``: every integration is currently healthy (not backing off after an error); the body lists
  the unhealthy ones with their last error. Not ready is a signal to look, not to restart.
- ``/metrics``: the Prometheus registry (``core.metrics``).
- anything else goes to ``app`` when one is given: the supervisor's operations API and console (``core.api``).

It runs in a daemon thread with the stdlib HTTP server, so a busy event loop cannot starve the probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["App", "HealthServer", "Response"]

Response = tuple[int, str, bytes, Mapping[str, str]]
"""Status, content type, body and extra headers."""
MAX_REQUEST_BODY = 64 * 1024


class App(Protocol):
    """What serves the paths beyond the three probes (``core.api.Api``)."""

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response | None:
        """The response, or None for a path it does not serve."""


class HealthServer:
    """Serves the three endpoints; ``status()`` returns ``{integration: error or None}``."""

    def __init__(
        self,
        status: Callable[[], dict[str, str | None]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stale_after: float = 30.0,
        app: App | None = None,
    ) -> None:
        self._status = status
        self._app = app
        self.stale_after = stale_after
        self.last_beat = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                extra: Mapping[str, str] = {}
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST_BODY:
                    code, ctype, body = 413, "text/plain", b"request body too large\n"
                else:
                    request = self.rfile.read(length) if length > 0 else b""
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    answer = outer._app.handle(method, self.path, headers, request) if outer._app else None
                    if answer is not None:
                        code, ctype, body, extra = answer
                    elif method == "GET":
                        code, ctype, body = outer.respond(self.path)
                    else:
                        code, ctype, body = 405, "text/plain", b"method not allowed\n"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # probes every few seconds are not news
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="inlet-health", daemon=True)

    def beat(self) -> None:
        """Called from the event loop: proof that it still runs."""
        self.last_beat = time.monotonic()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Status code, content type and body for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        if path == "/healthz":
            age = time.monotonic() - self.last_beat
            ok = age < self.stale_after
            return (200 if ok else 503), "application/json", orjson.dumps({"ok": ok, "heartbeat_age_s": round(age, 1)})
        if path == "/readyz":
            unhealthy = {k: v for k, v in self._status().items() if v is not None}
            return (
                (503 if unhealthy else 200),
                "application/json",
                orjson.dumps({"ready": not unhealthy, "unhealthy": unhealthy}),
            )
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
