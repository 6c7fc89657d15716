"""Replay matching is explicit: method, path, query, selected headers and body; a miss names the nearest."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from inlet.core.recording import RecordingTransport, ReplayMiss, ReplayTransport


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
