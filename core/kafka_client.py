"""How every Kafka client of inlet is built from :class:`~inlet.core.config.KafkaSettings`.

The sink's producer, the topic administration (``inlet topics``) and the outbox relay all connect with the
same options, so a security setting (TLS, SASL) added here reaches each of them; nothing else constructs an
aiokafka client's connection options by hand.

Security:

- **TLS** (``SSL``, ``SASL_SSL``): :func:`ssl_context` verifies the broker's certificate chain against
  ``ssl_cafile`` (or the system's CAs) and its host name unless ``ssl_check_hostname: false``; with
  ``ssl_certfile``/``ssl_keyfile`` it presents a client certificate (mutual TLS).
- **SASL**: PLAIN and SCRAM with ``username``/``password``; OAUTHBEARER with :class:`OAuthBearerTokenProvider`,
  which fetches tokens with ``core.auth``'s OAuth2 client-credentials flow (cached, renewed before expiry).

Telling a refusal from an outage: when a client cannot start, aiokafka raises the same
``KafkaConnectionError('Unable to bootstrap ...')`` for a wrong password, an untrusted certificate and a broker
that is down; the real reason only reaches its log. :func:`refusal` finds it again: it opens one connection to
each bootstrap address with aiokafka's own ``create_conn`` and the same options — the same TLS handshake,
ApiVersions and SASL exchange the client did — and looks at the exception that now comes out. A TLS
verification failure, a TLS alert from the broker (it refused our client certificate), a SASL authentication
or mechanism error, or a token endpoint refusing the client credentials is a :class:`~core.errors.SinkRefused`
(fatal, naming broker, security protocol and mechanism); a refused/reset/timed-out connection is an outage.
The probe runs only after a failed start, so the normal path pays nothing. (A logging handler on aiokafka's
logger would see the same exception, but only by the wording of a log call, and it cannot tell which of the
process's clients — producer, relay, admin — a record belongs to.)

aiokafka 0.14's OAUTHBEARER client ignores the broker's error challenge (RFC 7628 §3.2.2): it reports
"Authenticated" for a refused token and the connection fails later with unrelated errors. When OAUTHBEARER is
configured, :func:`connection_options` makes aiokafka answer that challenge as Kafka's Java client does
(``%x01``), so the broker sends its authentication failure and the refusal is seen where it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import httpx
import structlog
from aiokafka import errors as kafka_errors
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import AIOKafkaConnection, OAuthAuthenticator, create_conn

from inlet.core.auth import AuthError, OAuth2ClientCredentialsAuth, OAuth2ClientCredentialsSettings
from inlet.core.config import KafkaSettings
from inlet.core.errors import SinkRefused, SinkUnavailable, TransientError, UpstreamError
from inlet.core.secrets import mask

__all__ = ["OAuthBearerTokenProvider", "connection_options", "describe", "refusal", "refused_reason", "ssl_context"]

log = structlog.get_logger("inlet.kafka")

PROBE_TIMEOUT_SECONDS = 30.0
"""Upper bound of one diagnosis connection (TLS handshake, ApiVersions, SASL) per bootstrap address."""


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, admin, consumer): where and how to connect."""
    s = settings
    options: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap,
        "client_id": s.client_id,
        "request_timeout_ms": s.request_timeout_ms,
    }
    if s.security_protocol == "PLAINTEXT":
        return options
    options["security_protocol"] = s.security_protocol
    if s.security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(s)
    if s.sasl_mechanism is not None:
        options["sasl_mechanism"] = s.sasl_mechanism
        if s.sasl_mechanism == "OAUTHBEARER":
            assert s.oauth is not None  # validated with the settings
            _answer_oauthbearer_error_challenges()
            options["sasl_oauth_token_provider"] = OAuthBearerTokenProvider(s.oauth)
        else:
            assert s.username is not None and s.password is not None  # validated with the settings
            options["sasl_plain_username"] = s.username
            options["sasl_plain_password"] = s.password.get_secret_value()
    return options


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of ``settings``: broker verified (chain always, host name unless turned off), optional
    client certificate. ValueError naming the setting when a file cannot be used."""
    s = settings
    try:
        context = ssl.create_default_context(cafile=s.ssl_cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"ssl_cafile {s.ssl_cafile}: not usable as PEM CA certificates ({exc})") from None
    context.check_hostname = s.ssl_check_hostname
    if s.ssl_certfile is not None:
        password = s.ssl_key_password.get_secret_value() if s.ssl_key_password is not None else None
        try:
            context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile, password=password)
        except (ssl.SSLError, OSError) as exc:
            hint = "encrypted: set ssl_key_password" if password is None else "check ssl_key_password"
            raise ValueError(
                mask(
                    f"ssl_certfile {s.ssl_certfile} with ssl_keyfile {s.ssl_keyfile}: cannot load the "
                    f"client certificate and key ({exc}); the key must be the certificate's own, PEM, "
                    f"and if {hint}"
                )
            ) from None
    return context


def describe(settings: KafkaSettings) -> str:
    """The broker and how inlet connects to it, for error messages: never a secret."""
    s = settings
    parts = [f"security_protocol {s.security_protocol}"]
    if s.sasl_mechanism is not None:
        who = f", user {s.username}" if s.username else (f", client {s.oauth.client_id}" if s.oauth else "")
        parts.append(f"sasl_mechanism {s.sasl_mechanism}{who}")
    if s.ssl_certfile is not None:
        parts.append(f"client certificate {s.ssl_certfile}")
    return f"Kafka at {s.bootstrap} ({', '.join(parts)})"


# --- telling a refusal from an outage --------------------------------------------------------------------------

_SASL_STATE = (kafka_errors.IllegalSaslStateError,)
_TLS_TRANSIENT = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ssl.SSLSyscallError,
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
)
_TLS_ALERT_RECORD = 0x15  # first byte of a TLS alert record: a TLS listener answering a plaintext client


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first (bounded: chains can loop)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 10:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def refused_reason(settings: KafkaSettings, exc: BaseException) -> str | None:
    """Why the broker (or the token endpoint) refused us, if ``exc`` says so; None when it looks like an outage."""
    s = settings
    for error in _chain(exc):
        if isinstance(error, AuthError):
            return f"the OAuth token endpoint refused the client credentials: {error}"
        if isinstance(error, kafka_errors.SaslAuthenticationFailed):
            what = "the token" if s.sasl_mechanism == "OAUTHBEARER" else f"username {s.username!r} and its password"
            return f"SASL authentication failed: the broker rejected {what}: {error}"
        if isinstance(error, kafka_errors.UnsupportedSaslMechanismError):
            return (
                f"the listener does not enable sasl_mechanism {s.sasl_mechanism}"
                + (f" ({error.args[0]})" if error.args and isinstance(error.args[0], str) else "")
                + "; use one the broker lists"
            )
        if isinstance(error, _SASL_STATE):
            return (
                "the listener does not expect a SASL login (it is not a SASL listener): check "
                "security_protocol against the broker's listener"
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = error.verify_message or str(error)
            hint = {
                "certificate has expired": "the broker's certificate has expired: it must be renewed",
                "Hostname mismatch": "the broker's certificate is not issued for this host name: connect by a "
                "name in its subjectAltName (or, knowingly, ssl_check_hostname: false)",
            }
            fix = next(
                (text for key, text in hint.items() if key in detail),
                "the broker's certificate is not signed by a CA in ssl_cafile"
                + (f" ({s.ssl_cafile})" if s.ssl_cafile else " (unset: the system's CAs)"),
            )
            return f"TLS: the broker's certificate was not accepted ({detail}): {fix}"
        if isinstance(error, ssl.SSLError) and not isinstance(error, _TLS_TRANSIENT):
            reason = getattr(error, "reason", None) or str(error)
            if s.ssl_certfile is None:
                fix = "the listener may require a client certificate (mutual TLS): set ssl_certfile and ssl_keyfile"
            else:
                fix = (
                    f"the broker refused the client certificate {s.ssl_certfile}: it must be signed by a CA the "
                    "broker trusts, and be valid now"
                )
            return f"TLS handshake refused ({reason}): {fix}"
        if isinstance(error, asyncio.IncompleteReadError) and (error.expected or 0) >> 24 == _TLS_ALERT_RECORD:
            return f"the listener speaks TLS but security_protocol is {s.security_protocol}: use SSL or SASL_SSL"
    return None


async def start_client(client: Any, settings: KafkaSettings, *, close: str = "stop") -> None:
    """Start an aiokafka client (producer, admin); on failure close it and raise :class:`SinkRefused` when the
    brokers refused inlet's credentials or certificates (fatal), else :class:`SinkUnavailable` (an outage, retried).

    aiokafka says "Unable to bootstrap" for a wrong password as for a broker that is down; :func:`refusal` tells
    them apart with one probe, paid only after a failed start. ``close`` names the client's closing method.
    """
    try:
        await client.start()
    except (kafka_errors.KafkaError, OSError, TransientError, AuthError) as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(getattr(client, close)(), timeout=5)
        if (refused := await refusal(settings, exc)) is not None:
            raise refused from exc
        raise SinkUnavailable(f"{describe(settings)} is not reachable: {exc!r}") from exc


async def refusal(settings: KafkaSettings, error: BaseException | None = None) -> SinkRefused | None:
    """A :class:`SinkRefused` when the brokers refuse inlet's credentials or certificates, None otherwise.

    ``error`` (what the client raised) is looked at first; if it does not say (aiokafka's "Unable to bootstrap"),
    each bootstrap address is probed with aiokafka's own connection code and the same options.
    """
    reason = refused_reason(settings, error) if error is not None else None
    if reason is None:
        reason = await _probe(settings)
    if reason is None:
        return None
    return SinkRefused(
        mask(f"{describe(settings)} refused the connection: {reason}. Not retried: fix the configuration and restart")
    )


async def _probe(settings: KafkaSettings) -> str | None:
    options = connection_options(settings)
    connect = {
        name: options[name]
        for name in (
            "client_id",
            "request_timeout_ms",
            "security_protocol",
            "ssl_context",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "sasl_oauth_token_provider",
        )
        if name in options
    }
    addresses = [address.strip() for address in settings.bootstrap.split(",") if address.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host.strip("[]"), int(port), **connect), PROBE_TIMEOUT_SECONDS)
        except (OSError, kafka_errors.KafkaError, TimeoutError, TransientError, AuthError, ValueError) as exc:
            reason = refused_reason(settings, exc)
            if reason is not None:
                return f"{address}: {reason}" if len(addresses) > 1 else reason
            log.info("kafka probe: not refused, unreachable", address=address, error=repr(exc))
            continue
        conn.close()
    return None


# --- OAUTHBEARER -----------------------------------------------------------------------------------------------


class OAuthBearerTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token source: ``core.auth``'s OAuth2 client-credentials flow, token cached on the
    flow and renewed ``refresh_before_seconds`` before it expires (or when it has).

    The flow is an ``httpx.Auth``: it is driven with a placeholder request (never sent), which it answers by
    yielding the token request (when a token is due) and then the placeholder carrying ``Authorization:
    Bearer <token>``. Failures reach aiokafka as connection errors (it retries those); the original — a refusal
    (``AuthError``: fatal) or a 5xx / unreachable endpoint (transient) — is their ``__cause__``.
    """

    def __init__(self, settings: OAuth2ClientCredentialsSettings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self._auth = OAuth2ClientCredentialsAuth(settings, logger=log)
        self._timeout = timeout

    async def token(self) -> str:
        try:
            return await self._token()
        except AuthError as exc:
            raise kafka_errors.KafkaConnectionError(f"OAUTHBEARER: {exc}") from exc
        except (UpstreamError, httpx.HTTPError) as exc:
            raise kafka_errors.KafkaConnectionError(
                mask(f"OAUTHBEARER: token endpoint {self.settings.token_url} unavailable: {exc!r}")
            ) from exc

    async def _token(self) -> str:
        placeholder = httpx.Request("GET", self.settings.token_url)
        flow = self._auth.async_auth_flow(placeholder)
        try:
            request = await flow.__anext__()
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                while request is not placeholder:
                    request = await flow.asend(await client.send(request))
        finally:
            await flow.aclose()
        return placeholder.headers["Authorization"].removeprefix("Bearer ")

    def __repr__(self) -> str:
        return f"OAuthBearerTokenProvider(token_url={self.settings.token_url!r}, client_id={self.settings.client_id!r})"


class _OAuthBearerAuthenticator(OAuthAuthenticator):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER exchange, answering the broker's error challenge (RFC 7628 §3.2.2) with ``%x01``.

    On a token it refuses, the broker answers the client's first message with an error JSON
    (``{"status":"invalid_token"}``) instead of an empty success; the client must send ``%x01`` and the broker
    then fails the authentication (SaslAuthenticationFailed). aiokafka 0.14 stops after the first message
    instead and goes on as if authenticated.
    """

    _challenge_answered = False

    async def step(self, payload: bytes | None) -> tuple[bytes, bool] | None:
        if self._token_sent and payload and not self._challenge_answered:
            self._challenge_answered = True
            return b"\x01", True
        result: tuple[bytes, bool] | None = await super().step(payload)
        return result


def _oauth_authenticator(self: Any) -> OAuthAuthenticator:
    return _OAuthBearerAuthenticator(sasl_oauth_token_provider=self._sasl_oauth_token_provider)


def _answer_oauthbearer_error_challenges() -> None:
    """Install :class:`_OAuthBearerAuthenticator` for aiokafka's connections (idempotent; tests prove it works)."""
    AIOKafkaConnection.authenticator_oauth = _oauth_authenticator
