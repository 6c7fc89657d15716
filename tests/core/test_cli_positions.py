"""``inlet positions show|set|reset`` on both stores: SQLite checkpoints and a fleet's positions topic on Kafka,
including the refusal while the integration runs and the unknown-integration error."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner

from inlet.core.checkpoint import CheckpointStore
from inlet.core.cli import app
from inlet.core.config import KafkaSettings
from inlet.core.positions import KafkaPositions
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "acme/observations"
WATERMARK = {"last_updated": "2024-03-01T10:00:00+00:00", "ids_at_watermark": ["o1", "o2"]}


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["positions", *args])


def _flat(text: str) -> str:
    return " ".join(text.split())


def _sqlite_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, base_url="http://127.0.0.1:9/fhir")


def _stored(root: Path) -> dict[str, Any] | None:
    store = CheckpointStore(root / "state" / "checkpoints.sqlite")
    try:
        return store.load_sync("acme", "observations")
    finally:
        store.close()


# --- SQLite ---------------------------------------------------------------------------------------------------


def test_show_set_reset_on_the_checkpoints(tmp_path: Path) -> None:
    root = _sqlite_config(tmp_path)
    config = ["--config", str(root)]

    shown = _cli("show", *config)
    assert shown.exit_code == 0, shown.output
    assert f"{KEY}\n  position: none\n  next run: reads every Observation from the start" in shown.output

    # Without --yes (and no terminal): what it would mean, then nothing changed, exit 1.
    dry = _cli("set", KEY, "--position", orjson.dumps(WATERMARK).decode(), *config)
    assert dry.exit_code == 1, dry.output
    out = _flat(dry.output)
    assert "old position: none" in out and '"last_updated":"2024-03-01T10:00:00+00:00"' in out
    assert "next run, now: reads every Observation from the start" in out
    assert (
        "next run, after: re-reads every Observation updated since 2024-03-01T10:00:00+00:00 "
        "(the 2 delivered at that instant are skipped)"
    ) in out
    assert "nothing changed (pass --yes to apply)" in out
    assert _stored(root) is None

    applied = _cli("set", KEY, "--position", orjson.dumps(WATERMARK).decode(), "--yes", *config)
    assert applied.exit_code == 0, applied.output
    assert _stored(root) == WATERMARK

    position_file = tmp_path / "position.json"
    position_file.write_text('{"last_updated": "2024-04-01T00:00:00+00:00", "ids_at_watermark": []}')
    from_file = _cli("set", KEY, "--file", str(position_file), "-y", *config)
    assert from_file.exit_code == 0, from_file.output
    assert '"ids_at_watermark":["o1","o2"]' in _flat(from_file.output)  # the old one shown
    assert _stored(root) == {"last_updated": "2024-04-01T00:00:00+00:00", "ids_at_watermark": []}

    shown = _cli("show", KEY, *config)
    assert shown.exit_code == 0, shown.output
    assert "written:" in shown.output and "re-reads every Observation updated since 2024-04-01" in shown.output
    as_json = _cli("show", "--json", *config)
    assert orjson.loads(as_json.stdout)[KEY]["position"] == _stored(root)

    reset = _cli("reset", KEY, "--yes", *config)
    assert reset.exit_code == 0, reset.output
    out = _flat(reset.output)
    assert "new position: none" in out and "next run, after: reads every Observation from the start" in out
    assert _stored(root) is None
    assert orjson.loads(_cli("show", "--json", *config).stdout) == {}


def test_positions_leave_the_monitors_state_beside_them_alone_until_a_reset(tmp_path: Path) -> None:
    root = _sqlite_config(tmp_path)
    config = ["--config", str(root)]
    state = {"format": 1, "open": {"volume_drop": {}}, "numeric": {}}
    store = CheckpointStore(root / "state" / "checkpoints.sqlite")
    try:
        asyncio.run(store.save("acme", "observations", WATERMARK))
        asyncio.run(store.save("acme", "observations@monitors", state))
    finally:
        store.close()
    shown = _cli("show", *config)
    assert "monitors: baselines stored beside it, 1 alert(s) open" in shown.output
    assert "observations@monitors" not in shown.output  # not a position of its own
    assert list(orjson.loads(_cli("show", "--json", *config).stdout)) == [KEY]

    new = {"last_updated": "2024-04-01T00:00:00+00:00", "ids_at_watermark": []}
    applied = _cli("set", KEY, "--position", orjson.dumps(new).decode(), "--yes", *config)
    assert applied.exit_code == 0, applied.output
    store = CheckpointStore(root / "state" / "checkpoints.sqlite")
    try:
        assert store.load_sync("acme", "observations@monitors") == state  # a new position keeps the baselines
        reset = _cli("reset", KEY, "--yes", *config)
        assert reset.exit_code == 0 and "its monitors learn again" in reset.output
        assert store.load_sync("acme", "observations@monitors") is None and _stored(root) is None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--position", "[1, 2]"], "a position is a JSON object, not list"),
        (["--position", "{not json"], "the position is not JSON"),
        ([], "exactly one of --position JSON or --file F"),
        (["--position", "{}", "--file", "x.json"], "exactly one of --position JSON or --file F"),
        (["--file", "/nonexistent/position.json"], "cannot read /nonexistent/position.json"),
    ],
)
def test_a_position_must_be_a_json_object(tmp_path: Path, args: list[str], problem: str) -> None:
    root = _sqlite_config(tmp_path)
    result = _cli("set", KEY, *args, "--yes", "--config", str(root))
    assert result.exit_code == 2 and problem in _flat(result.output), result.output
    assert _stored(root) is None


@pytest.mark.parametrize("command", [["show"], ["set", "--position", "{}", "--yes"], ["reset", "--yes"]])
def test_an_unknown_integration_names_the_known_ones(tmp_path: Path, command: list[str]) -> None:
    root = _sqlite_config(tmp_path)
    result = _cli(command[0], "acme/nope", *command[1:], "--config", str(root))
    assert result.exit_code == 2, result.output
    assert f"unknown integration 'acme/nope': the known ones are {KEY}" in _flat(result.output)


def _hold(state: Path, keys: list[str]) -> subprocess.Popen[str]:
    """A process holding ``running(state, keys)`` as a supervisor does, until killed; returns once it holds it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from inlet.core.positions import running\n"
        "with running(Path(sys.argv[1]), sys.argv[2:]):\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(state), *keys], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "holding\n", "the holder did not start"  # EOF ('') if it died
    return proc


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.stdout is not None
    proc.stdout.close()


def test_set_and_reset_refuse_while_a_supervisor_runs_the_integration(tmp_path: Path) -> None:
    root = _sqlite_config(tmp_path)
    config = ["--config", str(root)]
    state = root / "state"

    other = _hold(state, ["beta/observations"])  # a supervisor running only other integrations
    try:
        result = _cli("set", KEY, "--position", '{"last_updated": "2024-01-01T00:00:00+00:00"}', "--yes", *config)
        assert result.exit_code == 0, result.output
    finally:
        _kill9(other)

    holder = _hold(state, [KEY, "beta/observations"])
    try:
        for command in (["set", KEY, "--position", "{}", "--yes"], ["reset", KEY, "--yes"]):
            refused = _cli(*command, *config)
            assert refused.exit_code == 1, refused.output
            out = _flat(refused.output)
            assert f"{KEY} is running (the supervisor running on {state} (pid {holder.pid}) runs it)" in out
        assert _stored(root) == {"last_updated": "2024-01-01T00:00:00+00:00"}
    finally:
        _kill9(holder)

    # kill -9 left its supervisor.json behind, but the lock died with the process: nothing runs.
    assert orjson.loads((state / "supervisor.json").read_bytes())["pid"] == holder.pid
    result = _cli("reset", KEY, "--yes", *config)
    assert result.exit_code == 0, result.output
    assert _stored(root) is None


# --- Kafka (fleet) --------------------------------------------------------------------------------------------


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})], 30_000)
        for _ in range(300):  # visible in the metadata, within 60 s
            if name in await admin.list_topics():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"topic {name} not visible after 60 s")
    finally:
        await admin.close()


async def _kafka_position(bootstrap: str, topic: str) -> dict[str, Any] | None:
    store = KafkaPositions(KafkaSettings(bootstrap=bootstrap), topic, replica="reader")
    try:
        await store.start()
        return await store.load("acme", "observations")
    finally:
        await store.aclose()


def _fleet_config(tmp_path: Path, bootstrap: str) -> tuple[Path, str]:
    topic = f"positions-{uuid.uuid4().hex[:10]}"
    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir", kafka=bootstrap)
    doc = yaml.safe_load((root / "inlet.yaml").read_text())
    doc["fleet"] = {"group": f"g-{uuid.uuid4().hex[:8]}", "positions_topic": topic}
    (root / "inlet.yaml").write_text(yaml.safe_dump(doc))
    asyncio.run(_create_topic(bootstrap, topic))
    return root, topic


@pytest.mark.kafka
def test_show_set_reset_on_a_fleets_positions_topic(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, topic = _fleet_config(tmp_path, kafka_bootstrap)
    config = ["--config", str(root)]
    monkeypatch.setenv("INLET_REPLICA", "operator-cli")

    shown = _cli("show", *config)
    assert shown.exit_code == 0, shown.output
    assert f"positions in topic {topic}" in shown.output and "position: none" in shown.output

    # No replica of the group runs it (the group is empty): set goes through, asked of the real group.
    applied = _cli("set", KEY, "--position", orjson.dumps(WATERMARK).decode(), "--yes", *config)
    assert applied.exit_code == 0, applied.output
    assert asyncio.run(_kafka_position(kafka_bootstrap, topic)) == WATERMARK
    shown = _cli("show", KEY, *config)
    assert "by operator-cli" in shown.output and "updated since 2024-03-01T10:00:00+00:00" in shown.output

    unknown = _cli("reset", "acme/nope", "--yes", *config)
    assert unknown.exit_code == 2 and f"the known ones are {KEY}" in _flat(unknown.output)

    reset = _cli("reset", KEY, "--yes", *config)
    assert reset.exit_code == 0, reset.output
    assert asyncio.run(_kafka_position(kafka_bootstrap, topic)) is None
    assert orjson.loads(_cli("show", "--json", *config).stdout) == {}


@pytest.mark.kafka
def test_set_refuses_while_a_fleet_replica_owns_the_integration(
    tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group's answer stands in for a running replica here (``core.fleet.owners`` is the group's view)."""
    import inlet.core.fleet

    root, topic = _fleet_config(tmp_path, kafka_bootstrap)
    asked: list[str] = []

    async def owners(cfg: Any) -> dict[str, str]:
        asked.append(cfg.fleet.group)
        return {KEY: "replica-7"}

    monkeypatch.setattr(inlet.core.fleet, "owners", owners)
    refused = _cli("set", KEY, "--position", "{}", "--yes", "--config", str(root))
    assert refused.exit_code == 1, refused.output
    assert f"{KEY} is running (fleet replica replica-7 runs it (consumer group g-" in _flat(refused.output)
    assert asked and asyncio.run(_kafka_position(kafka_bootstrap, topic)) is None
