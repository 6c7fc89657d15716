"""Upstream authentication as httpx ``Auth`` flows, configured by a ``kind``-tagged settings model.

Why httpx ``Auth`` classes: the client calls the flow for every request, including the retries
``core.http`` makes, so a plugin cannot forget to authenticate, and a credential that has to be
fetched (an OAuth2 token, a SAP Business One session) is fetched by the same client, through the
same transport, limits and recording as the data requests: the flow *yields* the token or login
request and the client sends it. That request is marked :data:`CREDENTIAL_EXCHANGE`, which is how a
recording (``core.recording``) tells it from a data request: its body, which carries the secret, is
neither recorded nor digested, and the token or session of its answer is masked.

How the parts fit:

- **Settings** (one model per ``kind``, a discriminated union :data:`AuthSettings`) are what an
  integration writes in YAML under ``auth:``. Every secret field is a :data:`~core.secrets.Secret`,
  so it comes only from ``{env: NAME}`` or ``{file: PATH}`` and is masked in every log line.
  :func:`build_auth` turns settings into the ``httpx.Auth`` to hand to the client.
- **Static credentials** (:class:`BearerTokenAuth`, :class:`ApiKeyAuth`, :class:`BasicAuth`) set a
  header (or a query parameter) on each request.
- **Renewed credentials** share one engine, :class:`_RenewingAuth`: the credential is cached on
  the auth instance, obtained lazily by the first request, renewed before it is due (a token's
  ``expires_in``, a session's idle timeout) and renewed *once* when the upstream answers 401 with
  it; a second 401 is returned to the caller as is. An ``asyncio.Lock`` makes concurrent requests
  share one renewal. :class:`OAuth2ClientCredentialsAuth` (client secret), :class:`SmartBackendAuth`
  (SMART Backend Services: a signed JWT client assertion, RS384/ES384) and
  :class:`SessionLoginAuth` (cookies from a JSON login, SAP Business One Service Layer style) only
  say how to ask for the credential, how to read the answer and how to put it on a request.
- **Errors**: a token or login request the upstream refuses raises :class:`AuthError` (not
  retriable: the configuration is wrong), naming the URL, the status and the server's
  ``error`` / ``error_description``; 408/425/429/5xx answers raise the retriable
  :class:`~core.errors.UpstreamError`. Connect errors and timeouts on the token endpoint surface
  from the client as ``httpx.TransportError`` (whose ``.request`` is the token request), which
  ``core.http`` treats like any other transport error.

Secrets never appear in a repr, an exception or a log line: they are held as ``SecretStr``, server
text quoted in errors goes through :func:`core.secrets.mask`, and renewals are logged (info) with
the URL and the lifetime only. The flows are for ``httpx.AsyncClient``; the renewing ones refuse a
sync client.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import quote_plus

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from inlet.core.connector import PluginSettings
from inlet.core.errors import AuthError, ConfigError, UpstreamError
from inlet.core.secrets import OfflineSecret, Secret, mask

__all__ = [
    "CREDENTIAL_EXCHANGE",
    "ApiKeyAuth",
    "ApiKeyAuthSettings",
    "AuthError",
    "AuthSettings",
    "BasicAuth",
    "BasicAuthSettings",
    "BearerAuthSettings",
    "BearerTokenAuth",
    "OAuth2ClientCredentialsAuth",
    "OAuth2ClientCredentialsSettings",
    "SessionLoginAuth",
    "SessionLoginSettings",
    "SmartBackendAuth",
    "SmartBackendAuthSettings",
    "build_auth",
    "credential_id",
]

log = structlog.get_logger("inlet.auth")

CREDENTIAL_EXCHANGE = "inlet.credential_exchange"
"""The ``httpx.Request.extensions`` key marking a token or login request made by a renewing auth flow (value
``True``). ``core.recording`` records such an exchange without its request body (no digest either: it carries
the secret) and with the token or session of its answer masked; see :class:`_RenewingAuth`."""

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 300
"""SMART Backend Services: a client assertion's ``exp`` is at most five minutes in the future."""

_RETRIABLE_STATUSES = frozenset({408, 425, 429, *range(500, 600)})
"""Answers of a token or login endpoint worth retrying later (UpstreamError); any other failure is AuthError."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_TEMPLATE_FIELDS = frozenset({"username", "password", "company"})
_MAX_ERROR_TEXT = 300


# --- settings ------------------------------------------------------------------------------------------------


def _absolute_http_url(value: str) -> str:
    """Refused at load time (``inlet check``), not at the first request; user-info is never echoed."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = httpx.URL("invalid:")
    if url.scheme not in ("http", "https") or not url.host:
        shown = value.split("@", 1)[-1] if "@" in value else value
        raise ValueError(
            f"must be an absolute http(s) URL such as https://host/path, got {shown!r}"
            + ("; add the scheme (http:// or https://)" if "://" not in value else "")
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_absolute_http_url)]


class BearerAuthSettings(PluginSettings):
    """A static bearer token: ``Authorization: Bearer <token>`` on every request."""

    kind: Literal["bearer"] = "bearer"
    token: Secret

    def build(self, logger: Any = None) -> httpx.Auth:
        return BearerTokenAuth(self.token)


class ApiKeyAuthSettings(PluginSettings):
    """A static API key in a header, a query parameter, or both."""

    kind: Literal["api_key"] = "api_key"
    key: Secret
    header: str | None = "X-API-Key"
    query_param: str | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> ApiKeyAuthSettings:
        if not self.header and not self.query_param:
            raise ValueError("api_key auth needs a header or a query_param to put the key in")
        return self

    def build(self, logger: Any = None) -> httpx.Auth:
        return ApiKeyAuth(self.key, header=self.header, query_param=self.query_param)


class BasicAuthSettings(PluginSettings):
    """HTTP Basic authentication (RFC 7617)."""

    kind: Literal["basic"] = "basic"
    username: str
    password: Secret

    def build(self, logger: Any = None) -> httpx.Auth:
        return BasicAuth(self.username, self.password)


class OAuth2ClientCredentialsSettings(PluginSettings):
    """OAuth2 client credentials grant (RFC 6749 §4.4) with a client secret."""

    kind: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: HttpUrl
    client_id: str
    client_secret: Secret
    scope: str | None = None
    refresh_before_seconds: float = Field(default=60, ge=0)
    """Fetch a new token this long before ``expires_in`` runs out (at most half the token's lifetime)."""
    client_auth: Literal["basic", "body"] = "basic"
    """``basic``: HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1); ``body``: form fields."""

    def build(self, logger: Any = None) -> httpx.Auth:
        return OAuth2ClientCredentialsAuth(self, logger=logger)


class SmartBackendAuthSettings(PluginSettings):
    """SMART Backend Services (HL7 SMART App Launch): client credentials with a signed JWT assertion."""

    kind: Literal["smart_backend"] = "smart_backend"
    token_url: HttpUrl
    client_id: str
    private_key: Secret
    """PEM private key: RSA (2048 bits or more) for RS384, P-384 for ES384."""
    algorithm: Literal["RS384", "ES384"] = "RS384"
    kid: str
    """Key id of the registered public key (JWT header ``kid``)."""
    jku: HttpUrl | None = None
    """The registered JWKS URL, sent as JWT header ``jku`` when the server needs it to find the key."""
    scope: str = "system/*.read"
    assertion_lifetime_seconds: int = Field(default=MAX_ASSERTION_LIFETIME, gt=0, le=MAX_ASSERTION_LIFETIME)
    refresh_before_seconds: float = Field(default=60, ge=0)
    """As for OAuth2: fetch a new token this long before it expires (at most half its lifetime)."""

    def build(self, logger: Any = None) -> httpx.Auth:
        return SmartBackendAuth(self, logger=logger)


def _default_body_template() -> dict[str, str]:
    return {"UserName": "{username}", "Password": "{password}", "CompanyDB": "{company}"}


class SessionLoginSettings(PluginSettings):
    """A session cookie from a JSON login (SAP Business One Service Layer: ``POST /b1s/v1/Login``)."""

    kind: Literal["session"] = "session"
    login_url: HttpUrl
    username: str
    password: Secret
    company: str | None = None
    body_template: dict[str, str] = Field(default_factory=_default_body_template)
    """Login JSON fields; ``{username}``, ``{password}``, ``{company}`` are filled in, and a field whose
    placeholder has no value (``company`` unset) is left out."""
    cookie_names: list[str] = Field(default_factory=lambda: ["B1SESSION", "ROUTEID"])
    """Cookies of the login answer to send on every request (at least one must be set); empty: all."""
    session_timeout_seconds: float | None = Field(default=None, gt=0)
    """The server's idle timeout: log in again before a session idle this long would expire."""

    @field_validator("body_template")
    @classmethod
    def _known_placeholders(cls, template: dict[str, str]) -> dict[str, str]:
        for name, pattern in template.items():
            unknown = set(_PLACEHOLDER.findall(pattern)) - _TEMPLATE_FIELDS
            if unknown:
                raise ValueError(
                    f"body_template field {name!r} uses unknown placeholder(s) {sorted(unknown)}; "
                    f"known: {sorted(_TEMPLATE_FIELDS)}"
                )
        return template

    def build(self, logger: Any = None) -> httpx.Auth:
        return SessionLoginAuth(self, logger=logger)


AuthSettings = Annotated[
    BearerAuthSettings
    | ApiKeyAuthSettings
    | BasicAuthSettings
    | OAuth2ClientCredentialsSettings
    | SmartBackendAuthSettings
    | SessionLoginSettings,
    Field(discriminator="kind"),
]
"""An integration's ``auth:`` settings; ``kind`` picks the model."""


def build_auth(settings: AuthSettings | None, *, logger: Any = None) -> httpx.Auth | None:
    """The httpx ``Auth`` for ``settings`` (None: no auth). Build one per client: renewed credentials
    are cached on the instance. ``logger`` (e.g. ``ctx.logger()``) receives the renewal log lines."""
    return None if settings is None else settings.build(logger)


_CREDENTIAL_KEY = _random.token_bytes(32)


def credential_id(settings: AuthSettings | None) -> str:
    """A short id of the credentials, equal for equal credentials within this process, revealing nothing.

    For keying shared state such as rate limits per upstream and credentials: an HMAC with a key that
    lives only in this process, so the id cannot be checked against guessed passwords elsewhere.
    """
    if settings is None:
        return "anonymous"
    parts: list[str] = [settings.kind]
    for name, value in sorted(settings):
        parts.append(f"{name}={value.get_secret_value() if isinstance(value, SecretStr) else value!r}")
    return hmac.new(_CREDENTIAL_KEY, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:16]


# --- static credentials --------------------------------------------------------------------------------------


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class BearerTokenAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=***)"


class ApiKeyAuth(httpx.Auth):
    """An API key in a header and/or a query parameter on every request.

    A key in the query ends up in the request URL: anything that prints URLs must mask it (the log
    processor does, for every configured secret).
    """

    def __init__(self, key: SecretStr, *, header: str | None = "X-API-Key", query_param: str | None = None) -> None:
        if not header and not query_param:
            raise ConfigError("api_key auth needs a header or a query_param to put the key in")
        self._key = key
        self.header = header
        self.query_param = query_param

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self._key.get_secret_value()
        if self.header:
            request.headers[self.header] = key
        if self.query_param:
            request.url = request.url.copy_merge_params({self.query_param: key})
        yield request

    def __repr__(self) -> str:
        return f"ApiKeyAuth(header={self.header!r}, query_param={self.query_param!r}, key=***)"


class BasicAuth(httpx.Auth):
    """HTTP Basic authentication (RFC 7617) on every request."""

    def __init__(self, username: str, password: SecretStr) -> None:
        self.username = username
        self._header = SecretStr(_basic_header(username, password.get_secret_value()))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"


# --- renewed credentials: the shared engine ------------------------------------------------------------------

T = TypeVar("T")


@dataclass(slots=True)
class _Credential(Generic[T]):
    value: T
    renew_at: float | None
    """``time.monotonic()`` from which the credential is renewed before use; None: only after a 401."""


def _renew_at(lifetime: float | None, margin: float) -> float | None:
    """When to renew a credential that lasts ``lifetime`` seconds from now: ``margin`` before it ends, but
    never earlier than half-way, so a short-lived credential is not renewed on every request."""
    if lifetime is None:
        return None
    return time.monotonic() + lifetime - min(margin, lifetime / 2)


class _RenewingAuth(httpx.Auth, abc.ABC, Generic[T]):
    """A credential obtained by a request of its own, cached, renewed when due and once after a 401.

    Subclasses say how to ask for the credential (:meth:`_renewal_request`), how to read the answer
    (:meth:`_accept`, raising :class:`AuthError` / ``UpstreamError``) and how to put it on a request
    (:meth:`_apply`). The engine marks every renewal request with :data:`CREDENTIAL_EXCHANGE`, so a recording
    knows it for a credential exchange whatever the kind.
    """

    requires_request_body = True  # a request retried after a 401 is sent again, body and all
    requires_response_body = True

    def __init__(self, endpoint: str, *, logger: Any = None) -> None:
        self.endpoint = endpoint
        self.log = logger or log
        self._credential: _Credential[T] | None = None
        self._lock = asyncio.Lock()

    @abc.abstractmethod
    def _renewal_request(self, original: httpx.Request) -> httpx.Request:
        """The token or login request; ``original`` is the request being authenticated."""

    @abc.abstractmethod
    def _accept(self, response: httpx.Response) -> _Credential[T]:
        """The credential from the renewal response (its body is read); raise on a refusal."""

    @abc.abstractmethod
    def _apply(self, request: httpx.Request, value: T) -> None:
        """Put the credential on ``request``."""

    def _used(self, credential: _Credential[T]) -> None:
        """Called after the upstream accepted ``credential`` (sessions with an idle timeout slide)."""

    def _due(self, refused: _Credential[T] | None) -> bool:
        credential = self._credential
        if credential is None or credential is refused:
            return True
        return credential.renew_at is not None and time.monotonic() >= credential.renew_at

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError(f"{type(self).__name__} works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        refused: _Credential[T] | None = None
        for attempt in (1, 2):
            if self._due(refused):
                async with self._lock:  # concurrent requests wait for one renewal instead of making their own
                    if self._due(refused):
                        renewal = self._renewal_request(request)
                        # The client's timeouts reach only requests passed to send(): a renewal made here
                        # carries the original's, or a token endpoint that stops answering would hang the pass.
                        timeout = {"timeout": request.extensions["timeout"]} if "timeout" in request.extensions else {}
                        renewal.extensions = {**renewal.extensions, **timeout, CREDENTIAL_EXCHANGE: True}
                        response = yield renewal
                        await response.aread()
                        self._credential = self._accept(response)
            credential = self._credential
            assert credential is not None
            self._apply(request, credential.value)
            response = yield request
            if response.status_code != 401:
                self._used(credential)
                return
            if attempt == 1:
                self.log.info(
                    "credential refused by the upstream (401); renewing it once",
                    refused_by=mask(str(request.url)),
                    token_url=self.endpoint,
                )
            refused = credential

    def _refusal(self, response: httpx.Response, action: str) -> None:
        """Raise for a failed token/login answer: UpstreamError if worth retrying, else AuthError."""
        if response.is_success:
            return
        detail = _server_error(response)
        message = mask(
            f"{action} {response.request.method} {response.request.url} answered "
            f"{response.status_code} {response.reason_phrase}" + (f": {detail}" if detail else "")
        )
        if response.status_code in _RETRIABLE_STATUSES:
            raise UpstreamError(message)
        raise AuthError(message)


def _server_error(response: httpx.Response) -> str:
    """The server's explanation: OAuth ``error``/``error_description``, an OData error, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_ERROR_TEXT]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        parts = [error, body.get("error_description")]
    elif isinstance(error, dict):  # OData / SAP B1: {"error": {"code": ..., "message": {"value": ...}}}
        message = error.get("message")
        parts = [error.get("code"), message.get("value") if isinstance(message, dict) else message]
    else:
        return response.text.strip()[:_MAX_ERROR_TEXT]
    return " - ".join(str(part) for part in parts if part not in (None, ""))[:_MAX_ERROR_TEXT]


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AuthError(
            f"{what} {response.request.url} answered {response.status_code} without a JSON object "
            f"(Content-Type {response.headers.get('Content-Type')!r})"
        )
    return body


def _seconds(value: Any) -> float | None:
    """``expires_in`` as seconds: a number or a numeric string (some servers send one); else None."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(seconds, 0.0)


def _user_agent(original: httpx.Request) -> dict[str, str]:
    agent = original.headers.get("User-Agent")
    return {"User-Agent": agent} if agent else {}


# --- OAuth2 client credentials and SMART Backend Services -----------------------------------------------------


class _TokenAuth(_RenewingAuth[SecretStr]):
    """A bearer token from a client-credentials token endpoint; subclasses build the token request form."""

    def __init__(self, token_url: str, refresh_before: float, *, logger: Any = None) -> None:
        super().__init__(token_url, logger=logger)
        self.refresh_before = refresh_before

    @abc.abstractmethod
    def _token_form(self) -> tuple[dict[str, str], dict[str, str]]:
        """Form fields and extra headers of a token request."""

    def _renewal_request(self, original: httpx.Request) -> httpx.Request:
        form, headers = self._token_form()
        self.log.debug("requesting an access token", token_url=self.endpoint, grant_type=form.get("grant_type"))
        return httpx.Request(
            "POST", self.endpoint, data=form, headers={"Accept": "application/json", **_user_agent(original), **headers}
        )

    def _accept(self, response: httpx.Response) -> _Credential[SecretStr]:
        self._refusal(response, "token request")
        body = _json_object(response, "token request")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"token request {response.request.url} answered {response.status_code} without an access_token"
            )
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthError(
                f"token request {response.request.url}: token_type {token_type!r} is not supported (only Bearer)"
            )
        lifetime = _seconds(body.get("expires_in"))
        self.log.info("access token fetched", token_url=self.endpoint, expires_in=lifetime)
        return _Credential(SecretStr(token), _renew_at(lifetime, self.refresh_before))

    def _apply(self, request: httpx.Request, value: SecretStr) -> None:
        request.headers["Authorization"] = f"Bearer {value.get_secret_value()}"


class OAuth2ClientCredentialsAuth(_TokenAuth):
    """OAuth2 client credentials with a client secret; the token is cached on this instance."""

    def __init__(self, settings: OAuth2ClientCredentialsSettings, *, logger: Any = None) -> None:
        super().__init__(settings.token_url, settings.refresh_before_seconds, logger=logger)
        self.settings = settings

    def _token_form(self) -> tuple[dict[str, str], dict[str, str]]:
        s = self.settings
        form = {"grant_type": "client_credentials"}
        if s.scope:
            form["scope"] = s.scope
        secret = s.client_secret.get_secret_value()
        if s.client_auth == "body":
            return {**form, "client_id": s.client_id, "client_secret": secret}, {}
        return form, {"Authorization": _basic_header(quote_plus(s.client_id), quote_plus(secret))}

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentialsAuth(token_url={self.endpoint!r}, client_id={self.settings.client_id!r})"


def _load_signing_key(pem: SecretStr, algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The private key for ``algorithm``; ConfigError (never quoting the key) if it is not one.

    Offline replay has no key (an :class:`OfflineSecret`): a throwaway one of the right kind signs the
    assertions, which the recorded token endpoint answers whatever they carry.
    """
    if isinstance(pem, OfflineSecret):
        if algorithm == "RS384":
            return rsa.generate_private_key(65537, 2048)
        return ec.generate_private_key(ec.SECP384R1())
    text = pem.get_secret_value()
    if "\\n" in text and "\n" not in text:  # a PEM squeezed into one env line with escaped newlines
        text = text.replace("\\n", "\n")
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "smart_backend private_key is not an unencrypted PEM private key", key="private_key"
        ) from None
    if algorithm == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(
                f"smart_backend RS384 needs an RSA key of 2048 bits or more, got {key.key_size}", key="private_key"
            )
        return key
    if algorithm == "ES384" and isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ConfigError(f"smart_backend ES384 needs a P-384 key, got {key.curve.name}", key="private_key")
        return key
    raise ConfigError(
        f"smart_backend private_key is a {type(key).__name__.lstrip('_')}, which cannot sign {algorithm}",
        key="private_key",
    )


class SmartBackendAuth(_TokenAuth):
    """SMART Backend Services: each token request carries a fresh signed JWT client assertion.

    Claims: ``iss`` = ``sub`` = client_id, ``aud`` = token URL, ``iat``, ``exp`` (at most five minutes
    ahead), a random ``jti``; header ``alg``, ``kid``, ``typ: JWT`` and ``jku`` when configured.
    """

    def __init__(self, settings: SmartBackendAuthSettings, *, logger: Any = None) -> None:
        super().__init__(settings.token_url, settings.refresh_before_seconds, logger=logger)
        self.settings = settings
        self._key = _load_signing_key(settings.private_key, settings.algorithm)

    def client_assertion(self) -> str:
        """A new signed client assertion (single use: the server refuses a ``jti`` it has seen)."""
        s = self.settings
        now = int(time.time())
        claims = {
            "iss": s.client_id,
            "sub": s.client_id,
            "aud": s.token_url,
            "iat": now,
            "exp": now + s.assertion_lifetime_seconds,
            "jti": _random.token_urlsafe(24),
        }
        headers: dict[str, Any] = {"kid": s.kid, "typ": "JWT"}
        if s.jku:
            headers["jku"] = s.jku
        return jwt.encode(claims, self._key, algorithm=s.algorithm, headers=headers)

    def _token_form(self) -> tuple[dict[str, str], dict[str, str]]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.settings.scope,
            "client_assertion_type": JWT_BEARER_ASSERTION,
            "client_assertion": self.client_assertion(),
        }
        return form, {}

    def __repr__(self) -> str:
        s = self.settings
        return f"SmartBackendAuth(token_url={self.endpoint!r}, client_id={s.client_id!r}, kid={s.kid!r})"


# --- session login -------------------------------------------------------------------------------------------


def _render_body(template: Mapping[str, str], values: Mapping[str, str | None]) -> dict[str, str]:
    """Fill the login template; a field whose placeholder has no value is left out."""
    body: dict[str, str] = {}
    for name, pattern in template.items():
        if any(values.get(p) is None for p in _PLACEHOLDER.findall(pattern)):
            continue
        body[name] = _PLACEHOLDER.sub(lambda m: values[m[1]] or "", pattern)
    return body


def _with_cookies(header: str | None, cookies: Mapping[str, SecretStr]) -> str:
    """A ``Cookie`` header: the request's own cookies, ours replacing any of the same name."""
    kept = [
        part.strip()
        for part in (header or "").split(";")
        if part.strip() and part.split("=", 1)[0].strip() not in cookies
    ]
    return "; ".join([*kept, *(f"{name}={value.get_secret_value()}" for name, value in cookies.items())])


class SessionLoginAuth(_RenewingAuth[dict[str, SecretStr]]):
    """Log in with a JSON POST, send the session cookies on every request, log in again on a 401.

    With ``session_timeout_seconds`` the session is renewed before it has been idle that long (less a
    margin of a tenth, at most 30 s), so a quiet integration does not pay a 401 first.
    """

    def __init__(self, settings: SessionLoginSettings, *, logger: Any = None) -> None:
        super().__init__(settings.login_url, logger=logger)
        self.settings = settings

    def _renewal_request(self, original: httpx.Request) -> httpx.Request:
        s = self.settings
        body = _render_body(
            s.body_template, {"username": s.username, "password": s.password.get_secret_value(), "company": s.company}
        )
        self.log.debug("logging in", login_url=self.endpoint, username=s.username)
        return httpx.Request(
            "POST", self.endpoint, json=body, headers={"Accept": "application/json", **_user_agent(original)}
        )

    def _accept(self, response: httpx.Response) -> _Credential[dict[str, SecretStr]]:
        self._refusal(response, "login")
        wanted = self.settings.cookie_names
        cookies = {
            c.name: SecretStr(c.value)
            for c in response.cookies.jar
            if c.value is not None and (not wanted or c.name in wanted)
        }
        if not cookies:
            raise AuthError(
                f"login {response.request.url} answered {response.status_code} but set none of the "
                f"session cookies {wanted or '(any)'}"
            )
        self.log.info(
            "session opened",
            login_url=self.endpoint,
            cookies=sorted(cookies),
            idle_timeout=self.settings.session_timeout_seconds,
        )
        return _Credential(cookies, self._idle_deadline())

    def _idle_deadline(self) -> float | None:
        timeout = self.settings.session_timeout_seconds
        return _renew_at(timeout, min(30.0, timeout / 10)) if timeout is not None else None

    def _used(self, credential: _Credential[dict[str, SecretStr]]) -> None:
        credential.renew_at = self._idle_deadline()

    def _apply(self, request: httpx.Request, value: dict[str, SecretStr]) -> None:
        request.headers["Cookie"] = _with_cookies(request.headers.get("Cookie"), value)

    def __repr__(self) -> str:
        return f"SessionLoginAuth(login_url={self.endpoint!r}, username={self.settings.username!r})"
