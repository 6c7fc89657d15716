"""The data-quality monitors' operator surface: the status API's ``open_alerts``, ``/api/monitors`` and ``inlet
monitors``, against a real supervisor whose monitors learn in seconds and then see its feed go silent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from typer.testing import CliRunner

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.cli import app
from inlet.core.config import load_config
from inlet.core.sinks.outbox import read_outbox
from inlet.core.supervisor import Supervisor
from tests.core.test_api import SCRIPT, Resource, api_config, base, coded_observation, get_json, wait_for
from tools.servers.fhir import FhirTestServer

MARKUP = "[/]note[bold]"
"""A code that is rich markup: printed as markup it would raise (a closing tag with nothing to close) or vanish."""
FAST_MONITORS: dict[str, Any] = {
    "window_seconds": 1,
    "learn_seconds": 2,
    "max_silence_seconds": 2,
    "volume_min_expected": 1e9,
}
"""Monitors that have learnt after 2 s and call the feed silent 2 s after its last event. Volume is learnt but never
judged: whether it alerts would depend on how the upstream's pages fall into 1 s windows on a loaded machine."""
ALERT_SECONDS = 90
"""Deadline for the silence alert (it opens about 4 s after the first pass; generous for a loaded 2-core box)."""


def upstream(seed: int) -> list[Resource]:
    """Synthetic Observations and two whose code is markup (HTML, rich), three of each."""
    resources = generate_observations(60, seed=seed)
    for n in range(3):
        resources.append(coded_observation(resources[0], f"script-{n}", SCRIPT, 7.5 + n))
        resources.append(coded_observation(resources[0], f"markup-{n}", MARKUP, 1.5 + n))
    return resources


def monitored_config(tmp_path: Path, *, base_url: str, customer: str) -> Path:
    """:func:`api_config` with ``<customer>/observations`` watched by :data:`FAST_MONITORS` and a second
    integration, ``<customer>/unwatched``, on the same upstream with its monitors off."""
    root = api_config(tmp_path, base_url=base_url, customer=customer)
    path = root / "integrations" / "acme.yaml"
    integration = yaml.safe_load(path.read_text())
    integration["monitors"] = FAST_MONITORS
    path.write_text(yaml.safe_dump(integration))
    unwatched = {**integration, "integration": "unwatched", "monitors": {"enabled": False}}
    (root / "integrations" / "unwatched.yaml").write_text(yaml.safe_dump(unwatched))
    return root


def checks(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["check"] for a in alerts]


async def silence_opened(supervisor: Supervisor, key: str) -> None:
    """Wait until the unit's running monitors hold an open silence alert."""

    def opened() -> bool:
        monitors = supervisor.monitors.get(key)
        return monitors is not None and "silence" in monitors.open

    await wait_for(opened, ALERT_SECONDS, f"the silence alert of {key}")


async def test_open_alerts_and_monitors_in_the_api_and_the_cli(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
) -> None:
    customer = f"monitors{uuid.uuid4().hex[:6]}"
    key, off = f"{customer}/observations", f"{customer}/unwatched"
    with FhirTestServer(upstream(seed=31)) as server:
        root = monitored_config(tmp_path, base_url=server.base_url, customer=customer)
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        client = aclosing(httpx.AsyncClient(timeout=30))
        await wait_for(lambda: key in supervisor.monitors, 60, "the monitors")
        # Learning: no alert yet, in either document.
        learning = await get_json(client, f"{base(supervisor)}/api/monitors/{key}")
        assert learning["key"] == key and learning["learning"] is True
        assert (await get_json(client, f"{base(supervisor)}/api/integrations/{key}"))["open_alerts"] == []

        # The first pass is all the feed sends (the poll interval is an hour): the monitors call it silent.
        await wait_for(lambda: supervisor.stats[key].state == "caught_up", 60, "the first pass")
        await silence_opened(supervisor, key)
        doc = await get_json(client, f"{base(supervisor)}/api/status")
        listing = await get_json(client, f"{base(supervisor)}/api/monitors")
        one = await get_json(client, f"{base(supervisor)}/api/monitors/{key}")
        entry = await get_json(client, f"{base(supervisor)}/api/integrations/{key}")
        refused = await client.get(f"{base(supervisor)}/api/monitors/{off}")
        unknown = await client.get(f"{base(supervisor)}/api/monitors/{customer}/nothing")

        runner = CliRunner()
        url = ["--url", base(supervisor)]
        table = await asyncio.to_thread(runner.invoke, app, ["monitors", *url])
        detail = await asyncio.to_thread(runner.invoke, app, ["monitors", key, *url])
        as_json = await asyncio.to_thread(runner.invoke, app, ["monitors", key, "--json", *url])
        missing = await asyncio.to_thread(runner.invoke, app, ["monitors", off, *url])

    # The status documents: the watched integration's open alert, none for the one with its monitors off.
    by_key = {i["key"]: i for i in doc["integrations"]}
    assert checks(by_key[key]["open_alerts"]) == ["silence"], by_key[key]["open_alerts"]
    assert by_key[off]["open_alerts"] == [] and by_key[off]["counts"]["events_out"] > 0  # it ran, unwatched
    [alert] = by_key[key]["open_alerts"]
    assert alert["status"] == "open" and alert["monitor"] == "freshness" and alert["integration"] == "observations"
    assert entry["open_alerts"] == [alert]

    # The monitors' documents: every running watched unit, each describe()d with its key.
    assert [m["key"] for m in listing["monitors"]] == [key]
    assert listing["monitors"][0]["open_alerts"] == [alert] == one["open_alerts"]
    assert one["learning"] is False and one["customer"] == customer
    assert one["freshness"]["last_event_at"] is not None and one["freshness"]["lag_baseline_seconds"] > 0
    assert one["volume"]["baseline_per_hour"] is not None  # learnt, though never judged here
    series = {(n["field"], n["series"]) for n in one["numeric"]}
    assert {("value.value", SCRIPT), ("value.value", MARKUP)} <= series
    assert one["numeric_series"] == len(one["numeric"])
    codes = [sh for sh in one["shares"] if sh["field"] == "code[0].code"]
    assert len(codes) == 1 and codes[0]["monitor"] == "categorical"

    # 404s say which key and why.
    assert refused.status_code == 404 and off in refused.json()["error"] and "monitors off" in refused.json()["error"]
    assert unknown.status_code == 404 and f"no integration {customer}/nothing" in unknown.json()["error"]

    # The CLI: a row per watched integration; one integration's monitors with upstream codes as plain text.
    assert table.exit_code == 0, table.output
    [row] = [line for line in table.stdout.splitlines() if key in line]
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[0] == key and cells[1] == "watching" and cells[4] == "1", cells
    assert off not in table.stdout
    assert detail.exit_code == 0, detail.output
    for shown in ("silence", "no events for", "value.value", "code[0].code", SCRIPT, MARKUP, "open alerts: 1"):
        assert shown in detail.stdout, shown
    assert as_json.exit_code == 0 and orjson.loads(as_json.stdout)["open_alerts"] == [alert]
    assert missing.exit_code == 1 and off in missing.output and "monitors off" in missing.output


async def test_a_reset_needs_the_token_clears_the_open_alerts_and_learns_again(
    tmp_path: Path,
    run_supervisor: Callable[[Supervisor], asyncio.Task[Any]],
    aclosing: Callable[[httpx.AsyncClient], httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("INLET_API_TOKEN", token)
    customer = f"reset{uuid.uuid4().hex[:6]}"
    key, off = f"{customer}/observations", f"{customer}/unwatched"
    with FhirTestServer(upstream(seed=32)) as server:
        root = monitored_config(tmp_path, base_url=server.base_url, customer=customer)
        supervisor = Supervisor(*load_config(root))
        run_supervisor(supervisor)
        client = aclosing(httpx.AsyncClient(timeout=30))
        await wait_for(lambda: key in supervisor.monitors, 60, "the monitors")
        await silence_opened(supervisor, key)
        one, reset = f"{base(supervisor)}/api/monitors/{key}", f"{base(supervisor)}/api/monitors/{key}/reset"
        runner, url = CliRunner(), ["--url", base(supervisor)]

        # Refused, and nothing changed: no token, a wrong one, a GET, the CLI without --yes (no terminal here).
        no_token = await client.post(reset)
        wrong = await client.post(reset, headers={"Authorization": "Bearer nope"})
        as_get = await client.get(reset)
        unconfirmed = await asyncio.to_thread(runner.invoke, app, ["monitors", key, "--reset", *url])
        no_key = await asyncio.to_thread(runner.invoke, app, ["monitors", "--reset", *url])
        still = await get_json(client, one)
        assert no_token.status_code == 401 and wrong.status_code == 403, (no_token.text, wrong.text)
        assert as_get.status_code == 405
        assert unconfirmed.exit_code == 1 and "nothing changed" in unconfirmed.output
        assert no_key.exit_code == 2 and "CUSTOMER/INTEGRATION" in no_key.output
        assert still["learning"] is False and checks(still["open_alerts"]) == ["silence"]
        first = still["open_alerts"]

        # Through the CLI (the token from a file): the silence alert clears, and opens again once it has learnt.
        monkeypatch.delenv("INLET_API_TOKEN")
        tokenless = await asyncio.to_thread(runner.invoke, app, ["monitors", key, "--reset", "--yes", *url])
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        by_cli = await asyncio.to_thread(
            runner.invoke, app, ["monitors", key, "--reset", "--yes", "--token-file", str(token_file), *url]
        )
        assert tokenless.exit_code == 1 and "401" in tokenless.output
        assert by_cli.exit_code == 0, by_cli.output
        assert f"{key}: baselines forgotten, 1 open alert cleared" in by_cli.stdout
        await silence_opened(supervisor, key)

        # Through the API: learning for an hour from here, so what follows is checked before it can alert again.
        monitors = supervisor.monitors[key]
        monitors.settings = monitors.settings.model_copy(update={"learn_seconds": 3600.0})
        second = (await get_json(client, one))["open_alerts"]
        accepted = await client.post(reset, headers={"Authorization": f"Bearer {token}"})
        after = await get_json(client, one)
        entry = await get_json(client, f"{base(supervisor)}/api/integrations/{key}")
        unwatched = await client.post(reset.replace(key, off), headers={"Authorization": f"Bearer {token}"})
        read_only = await client.post(one)

    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"key": key, "cleared": len(second)} and len(second) >= 1
    assert after["learning"] is True and after["open_alerts"] == [] and entry["open_alerts"] == []
    assert unwatched.status_code == 404 and "monitors off" in unwatched.json()["error"]  # as the GET says
    assert read_only.status_code == 405 and "monitors reset" in read_only.json()["error"]

    # The sink got each alert opened, then cleared by the operator's reset.
    rows = read_outbox(root / "state" / "outbox.sqlite", limit=1000, topic="inlet.data_alert.v1")
    events = [orjson.loads(r.value) for r in rows]
    for alert in [*first, *second]:
        published = [e for e in events if e["alert_id"] == alert["alert_id"]]
        assert [e["status"] for e in published] == ["open", "cleared"], published
        assert "operator" in published[1]["detail"], published[1]


def test_the_cli_says_when_the_supervisor_cannot_be_reached() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["monitors", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot reach the supervisor's API at http://127.0.0.1:9" in result.output
    bad = runner.invoke(app, ["monitors", "no-slash", "--url", "http://127.0.0.1:9"])
    assert bad.exit_code == 2 and "CUSTOMER/INTEGRATION" in bad.output
