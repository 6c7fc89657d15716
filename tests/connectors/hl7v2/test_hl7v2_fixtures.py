"""HL7 v2 record / replay through the CLI: a real listener recording a real sender, PHI pseudonymised, ACKs checked."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from inlet.connectors.hl7v2.parser import parse
from inlet.connectors.hl7v2.synth import hospital_feed
from inlet.core.config import load_config
from inlet.core.errors import ConfigError
from inlet.core.fixtures import replay
from inlet.core.redact import Redactor, scan_for_leaks
from tools.record_hl7 import PSEUDONYM_KEY

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(root: Path, port: int) -> Path:
    (root / "integrations").mkdir(parents=True)
    (root / "inlet.yaml").write_text(yaml.safe_dump({"state_dir": str(root / "state")}))
    (root / "integrations" / "hl7.yaml").write_text(
        yaml.safe_dump(
            {
                "customer": "acme",
                "integration": "hl7",
                "plugin": "hl7v2",
                "zone": "Europe/Berlin",
                "settings": {"mllp": {"host": "127.0.0.1", "port": port}},
            }
        )
    )
    return root


def _phi(messages: list[bytes]) -> set[str]:
    """Identifiers, names, streets and phones of the generated patients (what must never reach a fixture)."""
    values = set()
    for raw in messages:
        msg = parse(raw)
        pid = msg.first("PID")
        if pid is None:
            continue
        values.update(
            {
                msg.value(pid, 3, 1),
                msg.value(pid, 3, 1, rep=2),
                msg.value(pid, 5, 1),
                msg.value(pid, 11, 1),
                msg.value(pid, 13, 1),
            }
        )
        if (mrg := msg.first("MRG")) is not None:
            values.add(msg.value(mrg, 1, 1))
    return {v for v in values if len(v) >= 5}


def test_record_and_replay_an_mllp_integration_through_the_cli(tmp_path: Path) -> None:
    port = free_port()
    root = _config(tmp_path / "cfg", port)
    fixtures = tmp_path / "fx"
    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}
    env["INLET_PSEUDONYM_KEY"] = "test-key-0123456789abcdef"
    messages = hospital_feed(3, seed=5)

    def inlet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inlet", *args, "--config", str(root), "--fixtures", str(fixtures)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    recorder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inlet",
            "record",
            "acme/hl7",
            "--config",
            str(root),
            "--fixtures",
            str(fixtures),
            "--idle",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sender = subprocess.run(
        [sys.executable, "-m", "tools.mllp_send", "--port", str(port), "--timeout", "120"],
        input=b"\n\n".join(messages),
        cwd=ROOT,
        capture_output=True,
        timeout=180,
        check=False,
    )
    out, err = recorder.communicate(timeout=180)
    assert recorder.returncode == 0, out + err
    acks = [orjson.loads(line) for line in sender.stdout.splitlines()]
    assert [a["ack"] for a in acks] == ["AA"] * (len(messages) - 2) + ["AR", "AE"]  # SIU^S12, a non-numeric NM

    lines = [orjson.loads(line) for line in (fixtures / "mllp.jsonl").read_bytes().splitlines()]
    assert [d["message"] for d in lines if "message" in d] == list(range(1, len(messages) + 1))
    assert sorted(d["ack"] for d in lines if "ack" in d) == list(range(1, len(messages) + 1))
    for name in ("mllp.jsonl", "events.jsonl"):
        leaks = scan_for_leaks((fixtures / name).read_text(), secrets=[], phi_values=_phi(messages))
        assert leaks == [], (name, leaks)

    replayed = inlet("replay", "acme/hl7")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "events equal the goldens" in replayed.stdout

    # The connector would now answer a message differently than recorded: replay says which, --update accepts.
    text = (fixtures / "mllp.jsonl").read_text()
    (fixtures / "mllp.jsonl").write_text(text.replace("MSA|AA|", "MSA|AE|", 1))
    changed = inlet("replay", "acme/hl7")
    assert changed.returncode != 0 and "acknowledges messages differently" in changed.stdout + changed.stderr
    assert inlet("replay", "acme/hl7", "--update").returncode == 0
    assert inlet("replay", "acme/hl7").returncode == 0


def test_hl7_pseudonyms_are_stable_across_messages_and_idempotent() -> None:
    redactor = Redactor(b"k" * 16, phi=True)
    adt, oru = hospital_feed(1, seed=3)[0].decode(), hospital_feed(1, seed=3)[2].decode()
    once = redactor({"hl7": adt})["hl7"]
    assert redactor({"hl7": once})["hl7"] == once
    assert "NK1" not in once and "\r" in once and once.count("\r") == adt.count("\r") - 1
    pid_adt = parse(once.encode()).first("PID")
    pid_oru = parse(redactor({"hl7": oru})["hl7"].encode()).first("PID")
    assert pid_adt is not None and pid_oru is not None
    assert pid_adt.fields[3] == pid_oru.fields[3] and pid_adt.fields[3].startswith("ID-")
    assert len(pid_adt.fields[7]) == 4  # birth year only


def _error_acks(path: Path) -> list[str]:
    """The HL7 text of every recorded acknowledgement that is not ``AA``."""
    docs = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return [d["hl7"] for d in docs if "ack" in d and "|AA|" not in d["hl7"]]


@pytest.mark.parametrize("key", ["st-marien/hl7", "hopital-du-lac/hl7"])
def test_replay_update_redacts_the_acks_it_rewrites(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``replay --update`` rewrites ``mllp.jsonl``'s ACKs redacted as recording redacted them: on an unchanged plugin
    the file stays byte for byte, error texts (which can quote the message) stay pseudonyms."""
    fixtures = tmp_path / "fx"
    shutil.copytree(ROOT / "fixtures" / key, fixtures)
    mllp = fixtures / "mllp.jsonl"
    recorded = mllp.read_bytes()
    errors = _error_acks(mllp)
    assert errors and all("|Text-" in ack for ack in errors)  # the committed recording: texts pseudonymised
    _, [item] = load_config(ROOT / "examples" / "customers", only=[key], offline=True)

    # No key: nothing to rewrite when no ACK changed (the recorded ones stay) ...
    monkeypatch.delenv("INLET_PSEUDONYM_KEY", raising=False)
    replay(item, fixtures, update=True)
    assert mllp.read_bytes() == recorded
    # ... and a changed ACK cannot be written without it.
    changed = recorded.replace(b"MSA|AA|", b"MSA|AE|", 1)
    mllp.write_bytes(changed)
    with pytest.raises(ConfigError, match="INLET_PSEUDONYM_KEY"):
        replay(item, fixtures, update=True)
    assert mllp.read_bytes() == changed

    # With the recording's key: every ACK rewritten from the replay, redacted alike, so byte-identical.
    monkeypatch.setenv("INLET_PSEUDONYM_KEY", PSEUDONYM_KEY)
    replay(item, fixtures, update=True)
    assert mllp.read_bytes() == recorded
    # An error ACK the recording lacks is written pseudonymised too, never with the raw error text.
    first_error = next(line for line in recorded.splitlines() if line.startswith(b'{"ack"') and b"|Text-" in line)
    mllp.write_bytes(recorded.replace(first_error + b"\n", b""))
    replay(item, fixtures, update=True)
    assert mllp.read_bytes() == recorded
    assert "is not mapped" not in mllp.read_text()  # the family's raw text for the unmapped SIU^S12
    assert _error_acks(mllp) == errors
    for ack in errors:
        texts = [
            seg.split("|")[n] for seg in ack.split("\r") for name, n in (("MSA", 3), ("ERR", 8)) if seg[:3] == name
        ]
        assert len(texts) == 2 and all(re.fullmatch(r"Text-[0-9a-f]{8}", t) for t in texts), ack
