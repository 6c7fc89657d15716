"""A real, local authorization server and protected resource for the ``core.auth`` tests.

Why a server rather than mocks: token caching, refresh before expiry, renewal on 401 and sharing one
token fetch between concurrent requests are about what reaches the wire, and a SMART client assertion
is only proven right when a verifier that knows nothing about the client checks it. Everything runs on
127.0.0.1 (port 0) in a background thread, like ``tools.servers.fhir``.

Endpoints (``origin`` is ``http://127.0.0.1:PORT``):

* ``POST /oauth/token``: OAuth2 client credentials (RFC 6749 §4.4); the client authenticates with HTTP
  Basic (form-encoded id and secret, §2.3.1) or ``client_id``/``client_secret`` form fields. Issues
  opaque bearer tokens living ``token_lifetime`` seconds (``expires_in`` says so).
* ``POST /smart/token``: SMART Backend Services. The ``client_assertion`` JWT is verified with PyJWT
  against the client's registered public key: ``alg`` as registered (RS384/ES384), ``typ`` JWT, ``kid``
  (and ``jku``) as registered, ``iss`` = ``sub`` = client id, ``aud`` = this endpoint's URL, ``exp``
  present and at most five minutes ahead, ``jti`` present and never seen before. Refusals are OAuth
  error JSON (``invalid_client``, ``invalid_request``, ``unsupported_grant_type``) with status 400.
* ``POST /b1s/v1/Login``: SAP Business One Service Layer login (JSON ``UserName``/``Password``/
  ``CompanyDB``); sets ``B1SESSION`` and ``ROUTEID`` cookies; failures in B1's error format.
* ``GET /data``: the protected resource. Accepts a live issued token or static token (``Bearer``), an
  API key (``X-API-Key`` header or ``api_key`` query parameter), a Basic user, or a ``B1SESSION``
  cookie of a live session; anything else is 401.

Test controls: :meth:`AuthTestServer.revoke_tokens` and :meth:`expire_sessions` (server-side, now),
``token_faults`` (statuses the next token requests answer with), ``token_delay`` (to make concurrent
fetches overlap), ``accept_tokens`` (False: every bearer token is refused at ``/data``) and
``echo_secrets`` (error descriptions quote the presented secret, as careless servers do). Every request
is recorded (method, path, lower-cased headers, form/JSON fields, status) in :attr:`requests`; verified
SMART assertions (header and claims) in :attr:`assertions`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt

from tools.servers.base import LocalHandler, LocalHTTPServer, LocalServer

__all__ = ["AuthTestServer", "RequestRecord", "SmartClient"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_SECONDS = 300
CLOCK_SKEW = 5


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered."""

    method: str
    path: str
    """Path without the query."""
    query: dict[str, str]
    headers: dict[str, str]
    """Header names lower-cased."""
    fields: dict[str, Any]
    """Form fields (token endpoints) or the JSON body (login)."""
    status: int


@dataclass(frozen=True)
class SmartClient:
    """A registered SMART backend client: its id, public key and the key's ``kid`` (and ``jku``)."""

    client_id: str
    public_key: Any
    algorithm: str = "RS384"
    kid: str = "key-1"
    jku: str | None = None


@dataclass
class _Reply:
    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Refused(Exception):
    """An OAuth error answer: ``error`` code, description, status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


class AuthTestServer(LocalServer):
    """Token endpoints, a B1-style login and a protected resource. Use as a context manager."""

    record_errors = False  # a handler error is printed (this server has no error log to assert on)

    def __init__(self, *, token_lifetime: float = 3600.0, host: str = "127.0.0.1") -> None:
        super().__init__(_Handler, host=host, port=0, thread_name="auth-test-server", poll_interval=0.05)
        self.token_lifetime = token_lifetime
        self.token_delay = 0.0
        self.token_faults: deque[int] = deque()
        self.accept_tokens = True
        self.echo_secrets = False
        self.unsecured_jwt = False
        """Issue unsigned JWTs (``alg: none``, ``sub`` = client id, ``iat``, ``exp``) instead of opaque tokens:
        what Kafka's unsecured OAUTHBEARER validator accepts (tests of Kafka's OAUTHBEARER)."""
        self.clients: dict[str, str] = {}
        self.smart_clients: dict[str, SmartClient] = {}
        self.users: dict[str, tuple[str, str | None]] = {}
        self.api_keys: set[str] = set()
        self.static_tokens: set[str] = set()
        self.assertions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, str] = {}
        self._jtis: set[str] = set()
        self._requests: list[RequestRecord] = []

    # -- URLs ---------------------------------------------------------------------------------------------

    @property
    def oauth_token_url(self) -> str:
        return self.origin + "/oauth/token"

    @property
    def smart_token_url(self) -> str:
        return self.origin + "/smart/token"

    @property
    def login_url(self) -> str:
        return self.origin + "/b1s/v1/Login"

    @property
    def data_url(self) -> str:
        return self.origin + "/data"

    # -- test controls and observations -------------------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on."""
        with self._lock:
            self._tokens.clear()

    def expire_sessions(self) -> None:
        """Every session opened so far is refused from now on."""
        with self._lock:
            self._sessions.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def hits(self, path: str, status: int | None = None) -> int:
        """How many requests to ``path`` were answered (with ``status``, if given)."""
        return sum(1 for r in self.requests if r.path == path and (status is None or r.status == status))

    def issued_tokens(self) -> list[str]:
        """Tokens and session ids handed out and still live (to check they never reach a log)."""
        with self._lock:
            return [*self._tokens, *self._sessions]

    # -- endpoints ----------------------------------------------------------------------------------------

    def _respond(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], fields: dict[str, Any]
    ) -> _Reply:
        routes = {
            ("POST", "/oauth/token"): self._oauth_token,
            ("POST", "/smart/token"): self._smart_token,
            ("POST", "/b1s/v1/Login"): self._login,
        }
        if (method, path) in routes:
            return routes[(method, path)](headers, fields)
        if path == "/data":
            return self._data(query, headers) if method == "GET" else _Reply(405, {"error": "method not allowed"})
        return _Reply(404, {"error": "not found"})

    def _token_fault(self) -> _Reply | None:
        if self.token_delay:
            time.sleep(self.token_delay)
        with self._lock:
            status = self.token_faults.popleft() if self.token_faults else None
        if status is None:
            return None
        return _Reply(status, {"error": "temporarily_unavailable", "error_description": "injected fault"})

    def _oauth_token(self, headers: dict[str, str], form: dict[str, Any]) -> _Reply:
        if fault := self._token_fault():
            return fault
        try:
            if form.get("grant_type") != "client_credentials":
                raise _Refused("unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
            client_id = self._check_client_secret(headers, form)
        except _Refused as refused:
            return _oauth_error(refused)
        return self._issue(form.get("scope"), subject=client_id)

    def _check_client_secret(self, headers: dict[str, str], form: dict[str, Any]) -> str:
        authorization = headers.get("authorization", "")
        if authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
            client_id, secret, status = unquote_plus(client_id), unquote_plus(secret), 401
        else:
            client_id, secret, status = form.get("client_id", ""), form.get("client_secret", ""), 400
        if not client_id or self.clients.get(client_id) != secret:
            echo = f" (presented secret {secret!r})" if self.echo_secrets else ""
            raise _Refused("invalid_client", f"client authentication failed for {client_id!r}{echo}", status)
        return client_id

    def _smart_token(self, headers: dict[str, str], form: dict[str, Any]) -> _Reply:
        if fault := self._token_fault():
            return fault
        try:
            if form.get("grant_type") != "client_credentials":
                raise _Refused("unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
            if form.get("client_assertion_type") != JWT_BEARER or not form.get("client_assertion"):
                raise _Refused("invalid_request", "client_assertion_type must be jwt-bearer, with a client_assertion")
            if not form.get("scope"):
                raise _Refused("invalid_request", "scope is required")
            self._verify_assertion(form["client_assertion"])
        except _Refused as refused:
            return _oauth_error(refused)
        return self._issue(form["scope"])

    def _verify_assertion(self, assertion: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError as exc:
            raise _Refused("invalid_client", f"client_assertion is not a JWT: {exc}") from exc
        client = self.smart_clients.get(str(issuer))
        if client is None:
            raise _Refused("invalid_client", f"unknown client {issuer!r}")
        expected = {"alg": client.algorithm, "typ": "JWT", "kid": client.kid, "jku": client.jku}
        for name, value in expected.items():
            if header.get(name) != value:
                raise _Refused("invalid_client", f"JWT header {name} is {header.get(name)!r}, expected {value!r}")
        try:
            claims = jwt.decode(
                assertion,
                client.public_key,
                algorithms=[client.algorithm],
                audience=self.smart_token_url,
                issuer=client.client_id,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _Refused("invalid_client", f"client_assertion rejected: {exc}") from exc
        if claims["sub"] != client.client_id:
            raise _Refused("invalid_client", "sub must equal iss (the client id)")
        if claims["exp"] > time.time() + MAX_ASSERTION_SECONDS + CLOCK_SKEW:
            raise _Refused("invalid_client", "exp is more than five minutes in the future")
        with self._lock:
            if claims["jti"] in self._jtis:
                raise _Refused("invalid_client", f"jti {claims['jti']!r} was already used")
            self._jtis.add(claims["jti"])
            self.assertions.append((header, claims))

    def _issue(self, scope: str | None, *, subject: str | None = None) -> _Reply:
        token = uuid.uuid4().hex + uuid.uuid4().hex
        if self.unsecured_jwt:
            now = int(time.time())
            claims = {
                "sub": subject or "client",
                "iat": now,
                "exp": now + int(self.token_lifetime),
                "jti": token,
                **({"scope": scope} if scope else {}),
            }
            token = ".".join(_b64url(part) for part in ({"alg": "none"}, claims)) + "."
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}
        if scope:
            body["scope"] = scope
        return _Reply(200, body, [("Cache-Control", "no-store")])

    def _login(self, headers: dict[str, str], body: dict[str, Any]) -> _Reply:
        user = self.users.get(str(body.get("UserName")))
        company_ok = user is not None and user[1] in (None, body.get("CompanyDB"))
        if user is None or user[0] != body.get("Password") or not company_ok:
            echo = f" (password {body.get('Password')!r})" if self.echo_secrets else ""
            return _b1_error(401, 100000027, "Login failed" + echo)
        session = str(uuid.uuid4())
        with self._lock:
            self._sessions[session] = str(body["UserName"])
        return _Reply(
            200,
            {
                "odata.metadata": "$metadata#B1Sessions/@Element",
                "SessionId": session,
                "Version": "1000191",
                "SessionTimeout": 30,
            },
            [("Set-Cookie", f"B1SESSION={session}; HttpOnly"), ("Set-Cookie", "ROUTEID=.node1; Path=/b1s")],
        )

    def _data(self, query: dict[str, str], headers: dict[str, str]) -> _Reply:
        kind = self._authenticated(query, headers)
        if kind is not None:
            return _Reply(200, {"ok": True, "auth": kind})
        if "b1session" in headers.get("cookie", "").lower():
            return _b1_error(401, 301, "Invalid session or session already timeout.")
        return _Reply(401, {"error": "unauthorized"}, [("WWW-Authenticate", 'Bearer error="invalid_token"')])

    def _authenticated(self, query: dict[str, str], headers: dict[str, str]) -> str | None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        with self._lock:
            if scheme == "Bearer" and (
                credentials in self.static_tokens
                or (self.accept_tokens and self._tokens.get(credentials, 0) > time.monotonic())
            ):
                return "bearer"
            if scheme == "Basic":
                username, _, password = base64.b64decode(credentials).decode().partition(":")
                if username in self.users and self.users[username][0] == password:
                    return "basic"
            key = headers.get("x-api-key") or query.get("api_key")
            if key is not None and key in self.api_keys:
                return "api_key"
            session = _cookies(headers.get("cookie", "")).get("B1SESSION")
            if session is not None and session in self._sessions:
                return "session"
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)


def _b64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _oauth_error(refused: _Refused) -> _Reply:
    headers = [("WWW-Authenticate", "Basic")] if refused.status == 401 else []
    return _Reply(refused.status, {"error": refused.error, "error_description": str(refused)}, headers)


def _b1_error(status: int, code: int, text: str) -> _Reply:
    return _Reply(status, {"error": {"code": code, "message": {"lang": "en-us", "value": text}}})


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";") if part.strip())
    return {name: value for name, _, value in pairs}


def _fields(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        parsed = json.loads(body)
        return parsed if isinstance(parsed, dict) else {}
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


class _Handler(LocalHandler):
    server: LocalHTTPServer[AuthTestServer]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        app = self.server.app
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        fields = _fields(headers.get("content-type", ""), body)
        reply = app._respond(method, url.path, query, headers, fields)
        app._record(RequestRecord(method, url.path, query, headers, fields, reply.status))
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
