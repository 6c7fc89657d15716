"""A Kafka broker with TLS and SASL for tests, shared through ``conftest``'s session fixtures ``kafka_pki`` and
``secure_kafka`` (test_kafka_security, test_relay): one broker per session, however many modules use it.

Next to its PLAINTEXT listener the broker has three: SASL_SSL (SCRAM-SHA-512 users created at format time, and
OAUTHBEARER with Kafka's unsecured validator), MTLS (SSL, client certificates required) and EXPIRED (SSL serving
an expired certificate). Certificates come from ``CertAuthority`` (openssl) in a session temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools.services import CertAuthority, CertFiles, KafkaBroker, KafkaListener

USER, PASSWORD = "inlet", "scram-pw-8c1f"
CLIENT_ID, CLIENT_SECRET = "inlet-kafka", "oauth-secret-5d2e"
KEY_PASSWORD = "key-pw-0b7a"
WRONG = "wrong-secret-93ad"


@dataclass(frozen=True)
class Pki:
    ca: CertAuthority
    server: CertFiles
    expired_server: CertFiles
    client: CertFiles
    client_encrypted: CertFiles
    expired_client: CertFiles
    other_ca: CertAuthority
    other_client: CertFiles


def make_pki(root: Path) -> Pki:
    """The CA, the broker's certificates (one expired) and client certificates (one with an encrypted key, one
    expired, one from another CA) in ``root``."""
    ca, other = CertAuthority(root / "ca"), CertAuthority(root / "other", name="some other CA")
    return Pki(
        ca=ca,
        server=ca.issue("broker", server=True),
        expired_server=ca.issue("expired-broker", server=True, expired=True),
        client=ca.issue("inlet"),
        client_encrypted=ca.issue("inlet-enc", key_password=KEY_PASSWORD),
        expired_client=ca.issue("inlet-expired", expired=True),
        other_ca=other,
        other_client=other.issue("inlet"),
    )


def secure_broker(pki: Pki) -> KafkaBroker:
    """The secured broker (not started yet)."""
    return KafkaBroker(
        fast_jit=True,
        keystore=pki.server.keystore,
        truststore=pki.ca.cert,
        sasl_users={USER: PASSWORD},
        listeners=[
            KafkaListener("SASL_SSL", "SASL_SSL", ("SCRAM-SHA-512", "OAUTHBEARER")),
            KafkaListener("MTLS", "SSL", client_auth=True),
            KafkaListener("EXPIRED", "SSL", keystore=pki.expired_server.keystore),
        ],
    )
