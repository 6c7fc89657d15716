"""Replay matching is explicit: method, path, query, selected headers and body; a miss names the nearest.
Credential exchanges (token requests, session logins) are recorded without their secrets and replay without any."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel

from inlet.core.auth import AuthSettings, build_auth
from inlet.core.recording import RecordingTransport, ReplayMiss, ReplayTransport
from inlet.core.redact import scan_for_leaks
from tools.servers.auth import AuthTestServer, SmartClient


def _upstream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.path, "body": request.content.decode()})


async def test_replay_matches_headers_and_body_and_names_the_nearest_recording(tmp_path: Path) -> None:
    path = tmp_path / "http.jsonl"
    async with httpx.AsyncClient(
        transport=RecordingTransport(path, inner=httpx.MockTransport(_upstream)), base_url="http://upstream.test"
    ) as client:
        await client.get("/items", params={"b": "2", "a": "1"}, headers={"Accept": "application/json"})
        await client.post("/search", json={"q": "x"})
    async with httpx.AsyncClient(transport=ReplayTransport(path), base_url="http://elsewhere.test") as client:
        ok = await client.get("/items", params={"a": "1", "b": "2"}, headers={"Accept": "application/json"})
        assert ok.json() == {"path": "/items", "body": ""}
        assert (await client.post("/search", json={"q": "x"})).status_code == 200
        with pytest.raises(ReplayMiss, match=r"nearest recorded: GET /items\?a=1&b=2"):
            await client.get("/items", params={"a": "1", "b": "2"}, headers={"Accept": "text/csv"})
        with pytest.raises(ReplayMiss, match=r"POST /search"):
            await client.post("/search", json={"q": "y"})


# -- credential exchanges ------------------------------------------------------------------------------------


class Holder(BaseModel):
    """How an integration's settings carry auth."""

    auth: AuthSettings


class _Tap(httpx.AsyncBaseTransport):
    """The real network, with everything secret that crossed it kept aside to look for in the recording."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.secrets: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if body:  # a token request's form (client secret, signed assertion) or a login's JSON, and its digest
            self.secrets.append(hashlib.sha256(body).hexdigest())
            self.secrets += [v for vs in parse_qs(body.decode()).values() for v in vs if len(v) > 20]
        if "authorization" in request.headers:  # Basic id:secret to a token endpoint, Bearer token to /data
            self.secrets.append(request.headers["authorization"].split(" ", 1)[-1])
        self.secrets += [c.split("=", 1)[-1] for c in request.headers.get("cookie", "").split("; ") if c]
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        for header in response.headers.get_list("set-cookie"):
            self.secrets.append(header.split(";")[0].split("=", 1)[1])
        if content.startswith(b"{"):
            answer = orjson.loads(content)
            self.secrets += [str(answer[k]) for k in ("access_token", "SessionId") if k in answer]
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _kind(kind: str, server: AuthTestServer) -> tuple[dict[str, Any], str, str]:
    """The auth settings of ``kind`` against ``server`` (without the secret), the secret's field and value."""
    if kind == "session":
        password = "b1-pass-" + secrets.token_hex(8)
        server.users["manager"] = (password, "SBODEMOUS")
        raw = {"kind": "session", "login_url": server.login_url, "username": "manager", "company": "SBODEMOUS"}
        return raw, "password", password
    if kind.startswith("oauth2"):
        secret = "s3cret-client-" + secrets.token_hex(8)
        server.clients["inlet-client"] = secret
        raw = {
            "kind": "oauth2_client_credentials",
            "token_url": server.oauth_token_url,
            "client_id": "inlet-client",
            "scope": "read",
            "client_auth": kind.removeprefix("oauth2_"),
        }
        return raw, "client_secret", secret
    key = ec.generate_private_key(ec.SECP384R1())
    server.smart_clients["inlet-client"] = SmartClient("inlet-client", key.public_key(), "ES384", "key-1")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    raw = {
        "kind": "smart_backend",
        "token_url": server.smart_token_url,
        "client_id": "inlet-client",
        "algorithm": "ES384",
        "kid": "key-1",
    }
    return raw, "private_key", pem


@pytest.mark.parametrize("kind", ["session", "oauth2_basic", "oauth2_body", "smart_backend"])
async def test_a_credential_exchange_is_recorded_without_its_secrets_and_replays_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "http.jsonl"
    tap = _Tap()
    with AuthTestServer() as server:
        raw, field, secret = _kind(kind, server)
        monkeypatch.setenv("RECORDED_AUTH_SECRET", secret)
        live = Holder.model_validate({"auth": {**raw, field: {"env": "RECORDED_AUTH_SECRET"}}}).auth
        recorded = []
        # No redact hook: the recording layer itself keeps a credential exchange's secrets out of the file.
        async with httpx.AsyncClient(auth=build_auth(live), transport=RecordingTransport(path, inner=tap)) as client:
            for n in range(4):
                if n == 2:
                    server.expire_sessions()  # the next request is refused once and the credential renewed
                    server.revoke_tokens()
                recorded.append((await client.get(server.data_url)).json())
        logins = 2
        assert server.hits(httpx.URL(raw.get("login_url") or raw["token_url"]).path, 200) == logins
    text = path.read_bytes().decode()
    planted = [secret, hashlib.sha256(secret.encode()).hexdigest(), *tap.secrets]
    if kind == "smart_backend":
        planted += [line for line in secret.splitlines() if "PRIVATE KEY" not in line]
    assert scan_for_leaks(text, secrets=planted, phi_values=[]) == []
    exchanges = [orjson.loads(line) for line in text.splitlines() if line.startswith('{"match"')]
    credential = [d for d in exchanges if not d["request"].startswith("GET /data")]
    assert len(credential) == logins and all("body_sha256" not in d["match"] for d in credential)

    # Replay: no secret anywhere (an offline stand-in), yet every request is answered as recorded.
    monkeypatch.delenv("RECORDED_AUTH_SECRET")
    offline = Holder.model_validate(
        {"auth": {**raw, field: {"env": "RECORDED_AUTH_SECRET"}}}, context={"offline": True}
    ).auth
    async with httpx.AsyncClient(auth=build_auth(offline), transport=ReplayTransport(path)) as client:
        replayed = [(await client.get("http://upstream.invalid/data")).json() for _ in range(4)]
    assert replayed == recorded and {r["auth"] for r in replayed} == {"session" if kind == "session" else "bearer"}
