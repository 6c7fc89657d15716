"""Progress of ``inlet run --once``: bars on a terminal, ``progress`` log lines off one; the hooks and gauges."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import generate_latest

from inlet.core import gauges, progress
from inlet.core.metrics import BatchCounts, Stats

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "config"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INLET_")}
    return {**env, "INLET_STATE_DIR": str(tmp_path / "state"), **extra}


def test_off_a_terminal_progress_is_a_log_line_with_the_counts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inlet", "run", "--once", "--config", str(EXAMPLE)],
        cwd=ROOT,
        env=_env(tmp_path, INLET_LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    done = [line for line in lines if line["event"] == "progress"]
    assert len(done) == 1, result.stderr[-3000:]
    (line,) = done
    assert line["customer"] == "example-clinic" and line["integration"] == "observations"
    assert line["final"] is True and line["phase"] == "caught up"
    assert line["records"] == 245 and line["events"] == 414 and line["dlq"] == 3
    assert line["pages"] == 5 and line["batches"] == 5  # the FHIR search counted its pages through core.pagination
    assert "━" not in result.stderr  # no bar drawn into a log


def test_on_a_terminal_a_progress_bar_is_drawn(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inlet", "run", "--once", "--config", str(EXAMPLE)],
        cwd=ROOT,
        env=_env(tmp_path, TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.wait(timeout=120) == 0
    screen = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    assert "━" in screen, screen[-3000:]
    bar = [line for line in screen.splitlines() if "example-clinic/observations" in line and "caught up" in line]
    assert bar, screen[-3000:]
    assert "245 records" in bar[-1] and "414 events" in bar[-1] and "5 pages" in bar[-1]
    assert '"event": "progress"' not in screen  # the bar, not the log lines


def test_hooks_report_to_the_current_integration_only() -> None:
    stats = Stats("acme", "nightly")
    p = progress.IntegrationProgress("acme/nightly", stats)
    progress.report(phase="nobody listens")  # outside an integration's task: nothing happens
    progress.page()

    async def integration_task() -> None:
        progress.enter(p, customer="acme", integration="nightly", contract="x 1.0", log_level=None)
        progress.report(phase="downloading", done=0, total=3, unit="files")
        progress.page()
        progress.report(done=2, bytes_done=3 * 1024 * 1024)
        stats.add(BatchCounts(records_in=10, records_mapped=10, events_out=10))
        progress.committed({"since": "2024-01-01", "next": "https://x.invalid/?token=1", "ids": [1, 2]})
        assert structlog.contextvars.get_contextvars()["position"] == {"since": "2024-01-01"}

    asyncio.run(integration_task())
    assert structlog.contextvars.get_contextvars().get("customer") is None  # bound in that task only
    assert p.detail() == "downloading · 10 records · 10 events · 1 pages · 2/3 files · 3.0 MiB"
    fields = p.fields()
    assert fields["done"] == 2 and fields["total"] == 3 and fields["bytes"] == 3 * 1024 * 1024
    p.caught_up()
    assert p.phase == "caught up" and p.total is None and p.lag_seconds() < 5


def test_lag_and_readiness_are_gauges_per_integration() -> None:
    stats = Stats("acme", "nightly")
    stats.newest_event_time = datetime.now(UTC) - timedelta(hours=2)  # the newest source time delivered
    p = progress.IntegrationProgress("acme/nightly", stats)
    p.last_progress -= 42

    class Running:
        def __init__(self) -> None:
            self.progress = {"acme/nightly": p}

        def status(self) -> dict[str, str | None]:
            return {"acme/nightly": "UpstreamError: 503"}

    running = Running()
    gauges.watch(running)
    try:
        text = generate_latest().decode()
    finally:
        gauges.unwatch(running)
    lag = re.search(r'^inlet_stalled_seconds\{customer="acme",integration="nightly"\} (\S+)$', text, re.M)
    assert lag is not None and 42 <= float(lag.group(1)) < 60
    assert 'inlet_ready{customer="acme",integration="nightly"} 0.0' in text
    event_lag = re.search(r'^inlet_lag_seconds\{customer="acme",integration="nightly"\} (\S+)$', text, re.M)
    assert event_lag is not None and 7200 <= float(event_lag.group(1)) < 7260
    assert "acme" not in generate_latest().decode().split("inlet_stalled_seconds", 1)[1].split("# HELP", 1)[0]


def test_an_integration_another_replica_runs_has_no_samples_here() -> None:
    stats = Stats("acme", "moved")
    stats.state = "elsewhere"  # the fleet gave it to another replica: that one reports it
    p = progress.IntegrationProgress("acme/moved", stats)
    p.last_progress -= 7200  # would look stalled for two hours

    class Replica:
        def __init__(self) -> None:
            self.progress = {"acme/moved": p}

        def status(self) -> dict[str, str | None]:
            return {"acme/moved": None}

    replica = Replica()
    gauges.watch(replica)
    try:
        text = generate_latest().decode()
        stats.state = "running"  # assigned here again: reported again
        again = generate_latest().decode()
    finally:
        gauges.unwatch(replica)
    assert 'integration="moved"' not in text
    assert 'inlet_stalled_seconds{customer="acme",integration="moved"}' in again


def test_a_bulk_export_reports_its_phase_files_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
    from inlet.connectors.fhir.synth import generate_dataset
    from inlet.core.checkpoint import CheckpointStore
    from inlet.core.connector import IntegrationContext
    from inlet.core.envelope import Enveloper
    from inlet.core.pipeline import Pipeline
    from inlet.core.sinks.memory import MemorySink
    from tools.servers.fhir_bulk import FhirBulkServer

    stats = Stats("acme", "bulk")
    p = progress.IntegrationProgress("acme/bulk", stats)
    seen: list[str] = []
    report = progress.report

    def recording_report(**changes: Any) -> None:  # every state the connector reports, not samples of them
        report(**changes)
        seen.append(p.detail())

    monkeypatch.setattr(progress, "report", recording_report)

    async def integration_task(base_url: str) -> None:
        progress.enter(p, customer="acme", integration="bulk", contract=None, log_level=None)
        settings = FhirBulkSettings.model_validate(
            {"http": {"base_url": base_url}, "poll_min_seconds": 0.01, "batch_size": 50}
        )
        connector = FhirBulkExportConnector(IntegrationContext("acme", "bulk", zone="Europe/Vienna"), settings)
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink = MemorySink()
        try:
            async with connector:
                await Pipeline(connector, Enveloper("acme", "bulk"), sink, store, stats).run(None, asyncio.Event())
        finally:
            store.close()

    with FhirBulkServer(generate_dataset(300, seed=5).observations, file_lines=100) as server:
        asyncio.run(integration_task(server.base_url))
    files = [d for d in seen if "downloading" in d]
    assert files, seen
    total = int(files[-1].split(" files")[0].rsplit("/", 1)[1])
    assert total >= 3 and f"{total}/{total} files" in files[-1]
    assert p.phase == "caught up" and p.bytes > 10_000 and stats.totals.records_in >= 300
