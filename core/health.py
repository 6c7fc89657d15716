"""``/metrics``, ``/healthz`` and ``/readyz`` on one small HTTP port, for Prometheus and orchestrators.

- ``/healthz``: the supervisor's event loop is alive (a heartbeat younger than ``stale_after`` seconds).
  An orchestrator restarts the process when this fails: a wedged loop is the one thing inlet cannot heal.
- ``/readyz``: every integration is currently healthy (not backing off after an error); the body lists
  the unhealthy ones with their last error. Not ready is a signal to look, not to restart.
- ``/metrics``: the Prometheus registry (``core.metrics``).

It runs in a daemon thread with the stdlib HTTP server, so a busy event loop cannot starve the probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["HealthServer"]


class HealthServer:
    """Serves the three endpoints; ``status()`` returns ``{integration: error or None}``."""

    def __init__(
        self,
        status: Callable[[], dict[str, str | None]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stale_after: float = 30.0,
    ) -> None:
        self._status = status
        self.stale_after = stale_after
        self.last_beat = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, ctype, body = outer.respond(self.path)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
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
