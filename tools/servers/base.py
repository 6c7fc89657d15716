"""The scaffolding the local test servers share: serve on 127.0.0.1 in a background thread, stop cleanly.

Why: ``fhir``, ``http`` and ``auth`` each carried the same copy of it (a threading server with daemon handler
threads that records unexpected errors, the start/stop lifecycle, the context manager, ``port``/``origin``,
TCP_NODELAY, the error list). It lives here once; each server keeps only what is its own (its handler, its
URLs, extra steps on stop through :meth:`LocalServer._closed`).
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar

__all__ = ["LocalHTTPServer", "LocalHandler", "LocalServer"]

AppT = TypeVar("AppT", bound="LocalServer")


class LocalHTTPServer(ThreadingHTTPServer, Generic[AppT]):
    """The listening server: handler threads are daemons; ``app`` is the :class:`LocalServer` it serves."""

    daemon_threads = True
    request_queue_size = 128  # concurrency tests open many connections at once
    app: AppT

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.app.record_errors:
            super().handle_error(request, client_address)
            return
        # A client that hangs up mid-response (timeouts, truncated-page tests) is normal here; anything
        # else is a server bug, recorded so tests can assert there were none.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            self.app._record_error(repr(exc))


class LocalHandler(BaseHTTPRequestHandler):
    """A keep-alive handler that sends without Nagle delays and logs nothing."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle's algorithm and delayed ACKs every response
        # would then wait ~40 ms for the peer, making paging tests needlessly slow.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log on the server object is what tests look at."""


class LocalServer:
    """Serves ``handler`` on ``host:port`` (port 0: the OS picks) in a thread. Use as a context manager or
    call ``start()``/``stop()``."""

    record_errors: ClassVar[bool] = True
    """Unexpected handler errors go to :attr:`errors`; if false, they are printed as ``socketserver`` does."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, host: str, port: int, thread_name: str, poll_interval: float
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._thread_name = thread_name
        self._poll_interval = poll_interval  # short: stop() waits for it
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._httpd: LocalHTTPServer[LocalServer] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # set by stop(): cuts short any response being held

    def start(self) -> str:
        """Bind and serve in a background thread (idempotent); returns the origin."""
        self._serve()
        return self.origin

    def _serve(self) -> None:
        """What ``start()`` does before returning a URL: bind and serve, unless serving already."""
        if self._httpd is None:
            httpd: LocalHTTPServer[LocalServer] = LocalHTTPServer((self._host, self._port), self._handler)
            httpd.app = self
            self._httpd = httpd
            self._stopping.clear()
            self._thread = threading.Thread(
                target=httpd.serve_forever, args=(self._poll_interval,), name=self._thread_name, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent); cuts short responses being held."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        self._closed()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _closed(self) -> None:
        """Hook: called by ``stop()`` once the listening socket is closed, before the thread is joined."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inside the server (should stay empty: bad records must not crash it)."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)
