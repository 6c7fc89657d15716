"""Record Spital Wien's Bulk Data fixtures from the local Bulk Data and SMART test servers serving generated data.

Serves ``connectors.fhir.synth.generate_dataset`` (seeded Patients, Encounters, Observations — never
third-party files) from the Bulk Data test server, behind SMART Backend Services on the auth test server
(the JWT assertion is verified there with the registered public key), and records both integrations with
``core.fixtures.record``: the token exchange, kick-off, status polls, manifest, NDJSON files and DELETE.

The SMART key is generated for the recording and thrown away: a recorded fixture replays with any key
(the recorded token endpoint answers whatever assertion comes), so CI and ``inlet replay`` set
``SPITAL_WIEN_SMART_KEY`` to a fresh throwaway key (:func:`throwaway_key`).

    .venv/bin/python -m tools.record_bulk
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inlet.connectors.fhir.synth import generate_dataset
from inlet.core.config import load_config
from inlet.core.fixtures import record
from tools.recording import origin, rewrite_origins
from tools.servers.auth import AuthTestServer, SmartClient
from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "customers"
KEY_ENV = "SPITAL_WIEN_SMART_KEY"


def throwaway_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-384 key (ES384), set as ``SPITAL_WIEN_SMART_KEY`` unless one is already there."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    os.environ.setdefault(KEY_ENV, pem)
    return key


def record_bulk(target: Path = ROOT / "fixtures") -> dict[str, int]:
    """Record spital-wien/nightly and /hourly under ``target``; golden events per integration.

    The data is synthetic, so a fixed pseudonymisation key is fine here.
    """
    os.environ.setdefault("INLET_PSEUDONYM_KEY", "spital-wien-synthetic-data-only")
    os.environ.pop(KEY_ENV, None)
    key = throwaway_key()
    # Only Spital Wien's: no other customer's secret needed.
    _, loaded = load_config(CONFIG, only=["spital-wien/nightly", "spital-wien/hourly"])
    data = generate_dataset(200, seed=31)
    cohort = [p["id"] for p in data.patients[:-1]]  # the last patient is not in the research cohort
    faults = BulkFaults(pending_polls=1, retry_after="1")
    counts: dict[str, int] = {}
    with (
        AuthTestServer() as auth,
        FhirBulkServer(
            data.all_resources(), faults=faults, groups={"research-cohort-7": cohort}, file_lines=200
        ) as bulk,
    ):
        for name in ("nightly", "hourly"):
            item = next(i for i in loaded if i.config.key == f"spital-wien/{name}")
            s: Any = item.settings
            auth.smart_clients[s.http.auth.client_id] = SmartClient(
                s.http.auth.client_id, key.public_key(), "ES384", s.http.auth.kid
            )
            assert httpx.URL(s.http.base_url).path == httpx.URL(bulk.base_url).path, "same path as the test server"
            redact = rewrite_origins(
                [
                    (origin(bulk.base_url), origin(s.http.base_url)),
                    (origin(auth.smart_token_url), origin(str(s.http.auth.token_url))),
                ]
            )
            auth_live = s.http.auth.model_copy(update={"token_url": auth.smart_token_url})
            http = s.http.model_copy(update={"base_url": bulk.base_url, "replay": None, "auth": auth_live})
            live = replace(item, settings=s.model_copy(update={"http": http}))
            counts[name] = record(live, target / "spital-wien" / name, redact=redact, replay_as=item)
        if auth.assertions == [] or any(h.get("alg") != "ES384" for h, _ in auth.assertions):
            raise RuntimeError("the recording did not authenticate with SMART ES384 assertions")
    return counts


if __name__ == "__main__":
    for name, count in record_bulk().items():
        print(f"recorded fixtures/spital-wien/{name}: {count} golden events")
