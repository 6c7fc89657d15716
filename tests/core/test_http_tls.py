"""core.http's shared TLS context: one per CA source, never one that trusts what the client's own settings do not.

Every ``HttpClient`` verifies with :func:`core.http.tls_context` (one context per process and CA source instead of
one per client: the CA store is ~0.85 MB each). These tests pin what sharing must not change: a client trusts
exactly the CAs httpx would have given it (``SSL_CERT_FILE``, else certifi's bundle), certificates are verified,
and a client with another CA source gets another context, not the one of whoever came first.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inlet.core.connector import IntegrationContext
from inlet.core.errors import UpstreamError
from inlet.core.http import HttpClient, HttpSettings, tls_context
from inlet.core.ratelimit import reset_limiters
from tools.services import CertAuthority, CertFiles


class _Json(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


@contextmanager
def _https(cert: CertFiles) -> Iterator[str]:
    """A JSON answer over TLS on 127.0.0.1 with ``cert``; yields the origin."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Json)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _client(origin: str, integration: str) -> HttpClient:
    settings = HttpSettings(base_url=origin, max_attempts=1, timeout_seconds=10)
    return HttpClient(settings, IntegrationContext("acme", integration, zone="UTC"))


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    reset_limiters()
    yield
    reset_limiters()


async def test_clients_with_different_ca_sources_do_not_share_a_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = CertAuthority(tmp_path / "ca")  # no openssl binary: a failure naming it, never a skip
    with _https(ca.issue("fhir", server=True)) as origin:
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.cert))  # a private CA, as httpx reads it
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        private = tls_context()
        async with _client(origin, "private-ca") as http:
            body, _ = await http.get("/Observation")
        assert body == b'{"ok": true}'
        assert tls_context() is private  # the same CA source: one context, however many clients

        monkeypatch.delenv("SSL_CERT_FILE")  # certifi's bundle: the test CA is not in it
        public = tls_context()
        assert public is not private
        async with _client(origin, "public-cas") as http:
            with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/Observation")


def test_the_shared_context_verifies_certificates_and_host_names() -> None:
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
