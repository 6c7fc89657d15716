"""core.auth against a real local authorization server (tools.servers.auth): every kind, renewal, errors, no leaks.

Secrets reach the settings the only way production allows: ``{env: NAME}`` with the variable set by
``monkeypatch``. Clients are plain ``httpx.AsyncClient(auth=build_auth(...))``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import BaseModel, ValidationError
from structlog.testing import capture_logs

from inlet.core.auth import (
    AuthError,
    AuthSettings,
    OAuth2ClientCredentialsSettings,
    SessionLoginSettings,
    build_auth,
    credential_id,
)
from inlet.core.errors import ConfigError, UpstreamError
from inlet.core.logging import configure_logging
from tools.servers.auth import AuthTestServer, SmartClient

CLIENT_ID = "inlet-client"


class Holder(BaseModel):
    """How an integration's settings carry auth (a discriminated union under ``auth:``)."""

    auth: AuthSettings | None = None


def settings(monkeypatch: pytest.MonkeyPatch, raw: dict[str, Any], **secret_values: str) -> Any:
    """Parse ``raw`` as YAML would give it, each secret field put in an env var and referenced as ``{env: ...}``."""
    for field, value in secret_values.items():
        name = f"INLET_TEST_{field.upper()}_{secrets.token_hex(4)}"
        monkeypatch.setenv(name, value)
        raw = {**raw, field: {"env": name}}
    return Holder.model_validate({"auth": raw}).auth


def client(auth_settings: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(auth=build_auth(auth_settings), timeout=5)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "RS384": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
    }


@pytest.fixture
def server() -> Iterator[AuthTestServer]:
    with AuthTestServer() as srv:
        srv.clients[CLIENT_ID] = "s3cret-client-" + secrets.token_hex(8)
        srv.users["manager"] = ("b1-pass-" + secrets.token_hex(8), "SBODEMOUS")
        yield srv


def oauth_settings(monkeypatch: pytest.MonkeyPatch, server: AuthTestServer, **extra: Any) -> Any:
    raw = {
        "kind": "oauth2_client_credentials",
        "token_url": server.oauth_token_url,
        "client_id": CLIENT_ID,
        "scope": "read",
        **extra,
    }
    return settings(monkeypatch, raw, client_secret=server.clients[CLIENT_ID])


def session_settings(monkeypatch: pytest.MonkeyPatch, server: AuthTestServer, **extra: Any) -> Any:
    raw = {"kind": "session", "login_url": server.login_url, "username": "manager", "company": "SBODEMOUS", **extra}
    return settings(monkeypatch, raw, password=server.users["manager"][0])


def smart_settings(
    monkeypatch: pytest.MonkeyPatch, server: AuthTestServer, key: Any, algorithm: str, **extra: Any
) -> Any:
    raw = {
        "kind": "smart_backend",
        "token_url": server.smart_token_url,
        "client_id": CLIENT_ID,
        "algorithm": algorithm,
        "kid": "key-1",
        **extra,
    }
    return settings(monkeypatch, raw, private_key=pem(key))


# --- static credentials --------------------------------------------------------------------------------------


async def test_bearer_token(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "static-" + secrets.token_hex(8)
    server.static_tokens.add(token)
    async with client(settings(monkeypatch, {"kind": "bearer"}, token=token)) as http:
        response = await http.get(server.data_url)
    assert response.json() == {"ok": True, "auth": "bearer"}
    assert server.requests[-1].headers["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("placement", [{}, {"header": None, "query_param": "api_key"}])
async def test_api_key_in_header_or_query(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch, placement: dict[str, Any]
) -> None:
    key = "key-" + secrets.token_hex(8)
    server.api_keys.add(key)
    async with client(settings(monkeypatch, {"kind": "api_key", **placement}, key=key)) as http:
        response = await http.get(server.data_url, params={"page": "2"})
    assert response.json()["auth"] == "api_key"
    seen = server.requests[-1]
    assert (seen.query, seen.headers.get("x-api-key")) == (
        ({"page": "2", "api_key": key}, None) if placement else ({"page": "2"}, key)
    )


async def test_basic(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = settings(monkeypatch, {"kind": "basic", "username": "manager"}, password=server.users["manager"][0])
    async with client(auth) as http:
        assert (await http.get(server.data_url)).json()["auth"] == "basic"
        server.users["manager"] = ("changed", None)
        assert (await http.get(server.data_url)).status_code == 401


# --- OAuth2 client credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize("client_auth", ["basic", "body"])
async def test_oauth2_token_fetched_once_and_reused(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch, client_auth: str
) -> None:
    async with client(oauth_settings(monkeypatch, server, client_auth=client_auth)) as http:
        for _ in range(5):
            assert (await http.get(server.data_url)).json()["auth"] == "bearer"
    token_request = server.requests[0]
    assert token_request.path == "/oauth/token"
    assert token_request.fields["grant_type"] == "client_credentials"
    assert token_request.fields["scope"] == "read"
    assert ("client_secret" in token_request.fields) == (client_auth == "body")
    assert token_request.headers.get("authorization", "").startswith("Basic") == (client_auth == "basic")
    assert server.hits("/oauth/token") == 1
    assert server.hits("/data", 200) == 5


async def test_oauth2_tokens_expiring_and_revoked_mid_stream(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens live 0.4 s: renewed before they expire (no 401 from expiry); one server-side revocation costs
    exactly one 401 and one extra fetch; no request fails."""
    server.token_lifetime = 0.4
    statuses, revoked = [], False
    async with client(oauth_settings(monkeypatch, server, refresh_before_seconds=0.15)) as http:
        started = time.monotonic()
        for _ in range(50):
            if server.hits("/oauth/token") == 2 and not revoked:  # right after a renewal: the cached token is fresh
                server.revoke_tokens()
                revoked = True
            statuses.append((await http.get(server.data_url)).status_code)
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    assert statuses == [200] * 50
    assert server.hits("/data", 401) == 1
    # A token is renewed 0.25 s after it was fetched: about elapsed / 0.25 fetches, plus one for the revocation.
    fetches = server.hits("/oauth/token")
    assert elapsed / 0.4 <= fetches <= elapsed / 0.25 + 3, (fetches, elapsed)


async def test_oauth2_second_401_is_returned_after_one_renewal(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.accept_tokens = False
    with capture_logs() as logs:
        async with client(oauth_settings(monkeypatch, server)) as http:
            response = await http.get(server.data_url)
    assert response.status_code == 401
    assert server.hits("/oauth/token") == 2
    assert server.hits("/data", 401) == 2
    # The log names the endpoint that refused the credential, not (only) where the credential came from.
    [renewal] = [e for e in logs if e["event"].startswith("credential refused by the upstream")]
    assert renewal["refused_by"] == server.data_url and renewal["token_url"].endswith("/oauth/token")


async def test_concurrent_requests_share_one_token_fetch(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.token_delay = 0.1  # every request is waiting while the first fetch is under way
    async with client(oauth_settings(monkeypatch, server)) as http:
        first = await asyncio.gather(*(http.get(server.data_url) for _ in range(20)))
        assert server.hits("/oauth/token") == 1
        server.revoke_tokens()
        second = await asyncio.gather(*(http.get(server.data_url) for _ in range(20)))
    assert [r.status_code for r in first + second] == [200] * 40
    assert server.hits("/oauth/token") == 2  # twenty requests refused together renew once


async def test_token_endpoint_refusal_is_auth_error(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = oauth_settings(monkeypatch, server)
    server.clients[CLIENT_ID] = "another-secret"
    async with client(auth) as http:
        with pytest.raises(AuthError) as caught:
            await http.get(server.data_url)
    message = str(caught.value)
    assert server.oauth_token_url in message
    assert "401" in message
    assert "invalid_client" in message
    assert "client authentication failed" in message
    assert not caught.value.retriable
    assert server.hits("/data") == 0


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_token_endpoint_unavailable_is_upstream_error(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    server.token_faults.append(status)
    async with client(oauth_settings(monkeypatch, server)) as http:
        with pytest.raises(UpstreamError, match=f"{server.oauth_token_url} answered {status}") as caught:
            await http.get(server.data_url)
        assert caught.value.retriable
        assert (await http.get(server.data_url)).status_code == 200  # the next try fetches a token


async def test_a_token_endpoint_that_stops_answering_times_out_with_the_clients_timeout(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.token_delay = 3.0  # the server sleeps before answering; the client gives up after 0.5 s
    http = httpx.AsyncClient(auth=build_auth(oauth_settings(monkeypatch, server)), timeout=0.5)
    async with http:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.get(server.data_url)
    assert str(caught.value.request.url) == server.oauth_token_url


async def test_token_endpoint_unreachable_surfaces_as_transport_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with AuthTestServer() as gone:
        token_url = gone.oauth_token_url
    raw = {"kind": "oauth2_client_credentials", "token_url": token_url, "client_id": CLIENT_ID}
    async with client(settings(monkeypatch, raw, client_secret="whatever-secret")) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get("http://127.0.0.1:9/data")
    assert str(caught.value.request.url) == token_url  # core.http maps transport errors to UpstreamError


def test_sync_client_is_refused(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        httpx.Client(auth=build_auth(oauth_settings(monkeypatch, server))) as http,
        pytest.raises(NotImplementedError, match="AsyncClient"),
    ):
        http.get(server.data_url)


# --- SMART Backend Services ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
async def test_smart_assertion_verified_by_server(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any], algorithm: str
) -> None:
    key = keys[algorithm]
    jku = server.origin + "/.well-known/jwks.json"
    server.smart_clients[CLIENT_ID] = SmartClient(CLIENT_ID, key.public_key(), algorithm, "key-1", jku)
    async with client(smart_settings(monkeypatch, server, key, algorithm, jku=jku)) as http:
        assert (await http.get(server.data_url)).json()["auth"] == "bearer"
        server.revoke_tokens()
        assert (await http.get(server.data_url)).json()["auth"] == "bearer"
    assert server.hits("/smart/token", 200) == 2
    (header1, claims1), (_, claims2) = server.assertions
    assert header1 == {"alg": algorithm, "typ": "JWT", "kid": "key-1", "jku": jku}
    assert claims1["iss"] == claims1["sub"] == CLIENT_ID
    assert claims1["aud"] == server.smart_token_url
    assert 0 < claims1["exp"] - time.time() <= 300
    assert claims1["jti"] != claims2["jti"]
    form = server.requests[0].fields
    assert form["scope"] == "system/*.read"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


async def test_smart_wrong_key_is_refused(
    server: AuthTestServer, monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any]
) -> None:
    registered = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server.smart_clients[CLIENT_ID] = SmartClient(CLIENT_ID, registered.public_key(), "RS384", "key-1")
    async with client(smart_settings(monkeypatch, server, keys["RS384"], "RS384")) as http:
        with pytest.raises(AuthError) as caught:
            await http.get(server.data_url)
    assert server.smart_token_url in str(caught.value)
    assert "invalid_client" in str(caught.value)
    assert "Signature verification failed" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"aud": "https://elsewhere.example/token"}, "Audience"),
        ({"exp_in": 600}, "more than five minutes"),
        ({"sub": "someone-else"}, "sub must equal iss"),
        ({"kid": "key-2"}, "JWT header kid"),
        ({"replay": True}, "already used"),
    ],
)
def test_smart_server_verifier_is_strict(
    server: AuthTestServer, keys: dict[str, Any], change: dict[str, Any], complaint: str
) -> None:
    """The test server must refuse what a real one refuses, or the SMART tests above would prove nothing."""
    key = keys["ES384"]
    server.smart_clients[CLIENT_ID] = SmartClient(CLIENT_ID, key.public_key(), "ES384", "key-1")
    now = int(time.time())
    claims = {
        "iss": CLIENT_ID,
        "sub": change.get("sub", CLIENT_ID),
        "aud": change.get("aud", server.smart_token_url),
        "exp": now + change.get("exp_in", 60),
        "jti": secrets.token_hex(8),
    }
    assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": change.get("kid", "key-1"), "typ": "JWT"})
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.read",
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    if change.get("replay"):
        assert httpx.post(server.smart_token_url, data=form).status_code == 200
    response = httpx.post(server.smart_token_url, data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert complaint in response.json()["error_description"]


def test_smart_key_not_matching_algorithm_is_config_error(
    monkeypatch: pytest.MonkeyPatch, keys: dict[str, Any]
) -> None:
    raw = {
        "kind": "smart_backend",
        "token_url": "https://auth.example/token",
        "client_id": "c",
        "kid": "k",
        "algorithm": "RS384",
    }
    with pytest.raises(ConfigError, match="cannot sign RS384") as caught:
        build_auth(settings(monkeypatch, raw, private_key=pem(keys["ES384"])))
    assert "PRIVATE KEY" not in str(caught.value)
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        build_auth(settings(monkeypatch, raw, private_key="not a key at all"))


# --- session login -------------------------------------------------------------------------------------------


async def test_session_login_and_relogin_on_401(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with client(session_settings(monkeypatch, server)) as http:
        for _ in range(3):
            assert (await http.get(server.data_url)).json()["auth"] == "session"
        server.expire_sessions()
        for _ in range(3):
            assert (await http.get(server.data_url)).json()["auth"] == "session"
    login = server.requests[0]
    assert login.fields == {"UserName": "manager", "Password": server.users["manager"][0], "CompanyDB": "SBODEMOUS"}
    assert server.hits("/b1s/v1/Login") == 2
    assert server.hits("/data", 401) == 1
    cookie = server.requests[-1].headers["cookie"]
    assert "B1SESSION=" in cookie
    assert "ROUTEID=.node1" in cookie


async def test_session_renewed_before_idle_timeout(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with client(session_settings(monkeypatch, server, session_timeout_seconds=0.3)) as http:
        assert (await http.get(server.data_url)).status_code == 200
        await asyncio.sleep(0.3)
        assert (await http.get(server.data_url)).status_code == 200
    assert server.hits("/b1s/v1/Login") == 2
    assert server.hits("/data", 401) == 0


async def test_session_login_refused(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = session_settings(monkeypatch, server)
    server.users["manager"] = ("another-password", "SBODEMOUS")
    async with client(auth) as http:
        with pytest.raises(AuthError, match=r"/b1s/v1/Login answered 401 Unauthorized: 100000027 - Login failed"):
            await http.get(server.data_url)


# --- settings ------------------------------------------------------------------------------------------------


def test_settings_are_a_discriminated_union(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INLET_TEST_SECRET", "value-of-the-secret")
    ref = {"env": "INLET_TEST_SECRET"}
    parsed = Holder.model_validate(
        {
            "auth": {
                "kind": "oauth2_client_credentials",
                "client_id": "c",
                "token_url": "https://auth.example/token",
                "client_secret": ref,
            }
        }
    )
    assert isinstance(parsed.auth, OAuth2ClientCredentialsSettings)
    assert build_auth(None) is None
    assert credential_id(parsed.auth) == credential_id(parsed.auth.model_copy())
    assert credential_id(parsed.auth) != credential_id(parsed.auth.model_copy(update={"client_id": "d"}))
    refused: list[dict[str, Any]] = [
        {"kind": "bearer", "token": "literal-token"},  # a secret written into the config
        {"kind": "api_key", "key": ref, "header": None},  # nowhere to put the key
        {"kind": "basic", "username": "u", "password": ref, "realm": "x"},  # unknown key
        {"kind": "kerberos"},
        {"kind": "session", "login_url": "/b1s/v1/Login", "username": "u", "password": ref},  # not absolute
        {
            "kind": "session",
            "login_url": "https://b1.example/Login",
            "username": "u",
            "password": ref,
            "body_template": {"User": "{user}"},
        },
        {
            "kind": "smart_backend",
            "token_url": "https://a.example/t",
            "client_id": "c",
            "private_key": ref,
            "kid": "k",
            "assertion_lifetime_seconds": 600,
        },
    ]
    for raw in refused:
        with pytest.raises(ValidationError):
            Holder.model_validate({"auth": raw})


async def test_login_body_leaves_out_unset_company(server: AuthTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.users["clerk"] = ("clerk-pass-" + secrets.token_hex(4), None)
    auth = settings(
        monkeypatch,
        {"kind": "session", "login_url": server.login_url, "username": "clerk", "cookie_names": []},
        password=server.users["clerk"][0],
    )
    assert isinstance(auth, SessionLoginSettings)
    async with client(auth) as http:
        assert (await http.get(server.data_url)).json()["auth"] == "session"
    assert server.requests[0].fields == {"UserName": "clerk", "Password": server.users["clerk"][0]}


# --- no secret anywhere --------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Debug level for configure_logging; structlog's configuration put back afterwards."""
    saved = structlog.get_config()
    monkeypatch.setenv("INLET_LOG_LEVEL", "debug")
    yield
    structlog.configure(**saved)


async def test_no_secret_in_logs_errors_or_reprs(
    server: AuthTestServer,
    monkeypatch: pytest.MonkeyPatch,
    keys: dict[str, Any],
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)  # here, not in a fixture: it binds sys.stderr, which capsys swaps in the test
    bearer, api_key = "bearer-" + secrets.token_hex(8), "apikey-" + secrets.token_hex(8)
    server.static_tokens.add(bearer)
    server.api_keys.add(api_key)
    server.smart_clients[CLIENT_ID] = SmartClient(CLIENT_ID, keys["RS384"].public_key(), "RS384", "key-1")
    server.echo_secrets = True
    configured = [
        settings(monkeypatch, {"kind": "bearer"}, token=bearer),
        settings(monkeypatch, {"kind": "api_key", "query_param": "api_key"}, key=api_key),
        settings(monkeypatch, {"kind": "basic", "username": "manager"}, password=server.users["manager"][0]),
        oauth_settings(monkeypatch, server),
        smart_settings(monkeypatch, server, keys["RS384"], "RS384"),
        session_settings(monkeypatch, server),
    ]
    texts: list[str] = []
    issued: list[str] = []
    bound = structlog.get_logger().bind(customer="acme", integration="obs")
    for auth_settings in configured:
        auth = build_auth(auth_settings, logger=bound)
        texts += [repr(auth), repr(auth_settings), str(auth_settings)]
        async with httpx.AsyncClient(auth=auth) as http:
            assert (await http.get(server.data_url)).status_code == 200
            issued += server.issued_tokens()
            server.revoke_tokens()
            server.expire_sessions()
            assert (await http.get(server.data_url)).status_code == 200  # renewal paths log too
            issued += server.issued_tokens()
    # Refusals whose server text quotes the secret that was presented.
    server.clients[CLIENT_ID] = "not-what-the-client-has"
    server.users["manager"] = ("not-what-the-client-has", None)
    for auth_settings in (configured[3], configured[5]):
        async with httpx.AsyncClient(auth=build_auth(auth_settings)) as http:
            with pytest.raises(AuthError) as caught:
                await http.get(server.data_url)
        texts += [str(caught.value), repr(caught.value)]
    logged = capsys.readouterr().err

    assert '"event": "access token fetched"' in logged
    assert f'"token_url": "{server.oauth_token_url}"' in logged
    assert '"level": "debug"' in logged
    assert '"integration": "obs"' in logged  # the integration's logger, when build_auth is given one
    assert "***" in texts[-2]  # the echoed secret was masked in the exception
    assert "***" not in logged  # nothing needed masking: no secret was ever handed to the logger
    secret_values = [bearer, api_key, *(s.get_secret_value() for c in configured for s in _secrets(c)), *issued]
    private_key_line = pem(keys["RS384"]).splitlines()[1]
    for text in [logged, *texts]:
        for value in [*secret_values, private_key_line]:
            assert value not in text


def _secrets(model: BaseModel) -> list[Any]:
    return [value for _, value in model if hasattr(value, "get_secret_value")]
