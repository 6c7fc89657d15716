"""Log lines per integration: its own ``log_level``, and its names (contract, position) on every line of its task."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from tests.helpers import write_config
from tools.servers.fhir import FhirTestServer

ROOT = Path(__file__).resolve().parents[2]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(root: Path, level: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INLET_")}
    env |= {"INLET_LOG_FORMAT": "json", "INLET_LOG_LEVEL": level}
    result = subprocess.run(
        [sys.executable, "-m", "inlet", "run", "--once", *args, "--config", str(root)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return result.returncode, lines, result.stderr[-4000:]


def test_each_integration_logs_at_its_own_level_and_every_line_names_it(tmp_path: Path) -> None:
    with FhirTestServer(generate_observations(120, seed=3)) as server:
        root = write_config(tmp_path, base_url=server.base_url, page_size=40)
        verbose = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
        verbose["log_level"] = "debug"
        (root / "integrations" / "acme.yaml").write_text(yaml.safe_dump(verbose))
        quiet = {**verbose, "customer": "quiet", "log_level": "warning"}
        quiet["settings"] = {
            **verbose["settings"],
            "http": {**verbose["settings"]["http"], "base_url": f"http://127.0.0.1:{_dead_port()}/fhir"},
        }
        (root / "integrations" / "quiet.yaml").write_text(yaml.safe_dump(quiet))
        assert load_config(root)[1][0].config.log_level in ("debug", "warning")
        code, lines, tail = _run(root, "info", "--no-progress")
    assert code == 1, tail  # the quiet one cannot reach its upstream and is given up
    acme = [line for line in lines if line.get("customer") == "acme"]
    debug = [line for line in acme if line["level"] == "debug"]
    assert any(line["event"] == "caught up" for line in debug), tail
    # A debug line of the shared core (the HTTP client, rate limiter, pipeline) counts as the integration's too.
    assert all(line["integration"] == "observations" for line in acme)
    caught_up = next(line for line in debug if line["event"] == "caught up")
    assert caught_up["contract"] == "clinical.observation 2.0"
    assert set(caught_up["position"]) >= {"last_updated"}  # the last committed position's scalars
    quiet_lines = [line for line in lines if line.get("customer") == "quiet"]
    assert quiet_lines, tail  # its warnings and errors (retries, restarts, given up) still show
    assert {line["level"] for line in quiet_lines} <= {"warning", "error"}, tail
    assert all(line["integration"] == "observations" for line in quiet_lines)
    # Outside any integration, the process's level applies: no debug line without a customer.
    assert not [line for line in lines if "customer" not in line and line["level"] == "debug"]


def test_without_log_level_the_process_level_applies(tmp_path: Path) -> None:
    with FhirTestServer(generate_observations(30, seed=4)) as server:
        root = write_config(tmp_path, base_url=server.base_url)
        code, lines, tail = _run(root, "info")
    assert code == 0, tail
    assert [line["event"] for line in lines] == ["progress"], tail  # the info line of --once; no debug line
    assert lines[0]["customer"] == "acme" and lines[0]["records"] == 30


def test_log_level_is_one_of_the_levels(tmp_path: Path) -> None:
    from inlet.core.config import check_config

    root = write_config(tmp_path, base_url="http://127.0.0.1:9/fhir")
    data = yaml.safe_load((root / "integrations" / "acme.yaml").read_text())
    data["log_level"] = "verbose"
    (root / "integrations" / "acme.yaml").write_text(yaml.safe_dump(data))
    errors = check_config(root)[2]
    assert any(e.key == "log_level" for e in errors), [str(e) for e in errors]
