"""Real Kafka and Mosquitto brokers on loopback, for the test suite and for people without Docker.

inlet's integration tests run against real brokers (docs/development.md, "The test command") on machines that
have Java and apt but no Docker engine. This module makes those brokers cheap to get, with the standard
library only so that it runs before any dependency is installed:

- ``ensure_kafka_jars()`` resolves Apache Kafka from Maven Central once (``tools/kafka/pom.xml``) into a
  cache directory; ``KafkaBroker`` runs it as a single-node KRaft broker on free loopback ports.
- ``ensure_mosquitto()`` installs the Debian package when it is missing; ``Mosquitto`` runs one broker with
  its own config file.

Both broker classes share one lifecycle (``start`` / ``stop`` / ``restart`` / ``close``, context manager) and
keep their ports and data directory across ``restart()``, so a test can make a broker go away and come back.
A started process never outlives this Python process: ``atexit`` closes every broker, and on Linux the kernel
SIGKILLs a broker started from the main thread if this process dies without running ``atexit`` (kill -9, a CI
timeout) through ``PR_SET_PDEATHSIG``.

Secured brokers, for the security tests: :class:`CertAuthority` makes a throw-away CA and server/client
certificates with ``openssl`` (into the test's temporary directory, never into the repository);
``KafkaBroker(listeners=...)`` adds SSL / SASL_SSL / mutual-TLS listeners next to its PLAINTEXT one, with SCRAM
users created when the storage is formatted; ``Mosquitto(tls=...)`` adds a TLS listener that requires client
certificates.

- ``ensure_chromium()`` installs the Debian ``chromium`` and ``chromium-driver`` packages when missing (the web
  console's browser tests drive a headless Chromium through Selenium).
- ``ensure_promtool()`` installs the Debian ``prometheus`` package when ``promtool`` is missing (the tests check
  ``deploy/prometheus/alerts.yml`` with ``promtool check rules``).

Command line: ``python -m tools.services COMMAND``, COMMAND one of ``fetch-kafka``, ``install-mosquitto``,
``install-chromium``, ``install-promtool``, ``kafka``, ``mosquitto``; ``kafka`` and ``mosquitto`` print
``INLET_KAFKA_BOOTSTRAP=...`` / ``INLET_MQTT_URL=...`` and run until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import ClassVar, Literal, Self

__all__ = [
    "KAFKA_VERSION",
    "KEYSTORE_PASSWORD",
    "CertAuthority",
    "CertFiles",
    "KafkaBroker",
    "KafkaListener",
    "Mosquitto",
    "MosquittoTls",
    "ServiceError",
    "ensure_chromium",
    "ensure_kafka_jars",
    "ensure_mosquitto",
    "ensure_promtool",
    "kafka_lib_dir",
    "main",
]

KAFKA_VERSION = "4.1.2"
_KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
KAFKA_POM = _KAFKA_DIR / "pom.xml"
KAFKA_LOG4J = _KAFKA_DIR / "log4j2.xml"
_COMPLETE = ".complete"  # written into the lib dir after a successful fetch; holds the pom's digest
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


class ServiceError(RuntimeError):
    """A broker could not be installed, started or stopped; the message says why and what to do."""


# --- Kafka jars -----------------------------------------------------------------------------------


def kafka_lib_dir() -> Path:
    """Where the Kafka jars are cached: ``${INLET_CACHE:-~/.cache/inlet}/kafka-<version>/lib``."""
    cache = Path(os.environ.get("INLET_CACHE") or "~/.cache/inlet").expanduser()
    return cache / f"kafka-{KAFKA_VERSION}" / "lib"


def ensure_kafka_jars() -> Path:
    """Fetch the Kafka jars with Maven unless a complete copy for the current pom is cached; return the dir.

    A marker file written after Maven succeeds tells a complete copy from a half-downloaded one, and a file
    lock keeps concurrent callers (parallel test workers) from fetching over each other.
    """
    lib = kafka_lib_dir()
    digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    marker = lib / _COMPLETE
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest:
            return lib
        mvn = _require("mvn", "Maven fetches the Kafka jars: apt-get install -y maven")
        print(f"fetching Apache Kafka {KAFKA_VERSION} jars into {lib}", file=sys.stderr, flush=True)
        shutil.rmtree(lib, ignore_errors=True)
        result = subprocess.run(
            [
                mvn, "-B", "-q", "-Dstyle.color=never",
                "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
                f"-DoutputDirectory={lib}", "-DincludeScope=runtime", "-f", str(KAFKA_POM),
            ],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"fetching the Kafka jars failed (mvn exit {result.returncode}); Maven Central must be "
                f"reachable:\n{_last_lines(result.stdout + result.stderr)}"
            )
        marker.write_text(digest + "\n")
    return lib


# --- Mosquitto package ----------------------------------------------------------------------------


def _mosquitto_binary() -> str | None:
    # Debian puts it in /usr/sbin, which is not on the PATH of ordinary users.
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def _apt_install(what: str, packages: list[str]) -> None:
    """``apt-get update`` then install ``packages`` (as root, or through sudo); a failure names the packages to
    install by hand. ``what`` is what the message says is being installed."""
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{what} is not installed and there is no apt-get: install {' and '.join(packages)}")
    sudo = [] if os.geteuid() == 0 else [_require("sudo", "run as root or install sudo")]
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    print(f"installing {what} with apt-get", file=sys.stderr, flush=True)
    for args in (["update"], ["install", "-y", "--no-install-recommends", *packages]):
        result = subprocess.run([*apt, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"`apt-get {' '.join(args)}` failed (exit {result.returncode}); install the Debian packages "
                f"{' and '.join(packages)} by hand:\n{_last_lines(result.stdout + result.stderr)}"
            )


def ensure_mosquitto() -> str:
    """Return the path of the ``mosquitto`` binary, installing the Debian packages first if needed."""
    found = _mosquitto_binary()
    if found:
        return found
    _apt_install("mosquitto", ["mosquitto", "mosquitto-clients"])
    found = _mosquitto_binary()
    if found is None:
        raise ServiceError("apt-get installed mosquitto but no `mosquitto` binary was found")
    return found


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def ensure_chromium() -> tuple[Path, Path]:
    """The Chromium and chromedriver binaries (Debian's paths), installing the packages first if needed."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        _apt_install("chromium", ["chromium", "chromium-driver"])
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        raise ServiceError(f"apt-get installed chromium but {CHROMIUM} or {CHROMEDRIVER} is missing")
    return CHROMIUM, CHROMEDRIVER


def ensure_promtool() -> str:
    """The path of ``promtool`` (Prometheus's rule and config checker), installing Debian's ``prometheus`` package
    first if needed (its service is not started: only the binary is used)."""
    found = shutil.which("promtool")
    if found:
        return found
    _apt_install("promtool (Debian package prometheus)", ["prometheus"])
    found = shutil.which("promtool")
    if found is None:
        raise ServiceError("apt-get installed prometheus but no `promtool` binary was found")
    return found


# --- test certificates ----------------------------------------------------------------------------

KEYSTORE_PASSWORD = "changeit"
"""Password of every PKCS12 keystore :class:`CertAuthority` writes (test material only)."""

_CA_CONFIG = """\
[ca]
default_ca = local
[local]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
"""


@dataclass(frozen=True)
class CertFiles:
    """One issued certificate: PEM certificate, PEM private key (PKCS#8) and a PKCS12 keystore of both plus the
    CA (password :data:`KEYSTORE_PASSWORD`), all in the CA's directory."""

    cert: Path
    key: Path
    keystore: Path


class CertAuthority:
    """A throw-away certificate authority made with ``openssl`` in ``directory`` (a test's tmp dir).

    ``issue()`` signs server certificates (``subjectAltName = IP:127.0.0.1,DNS:localhost``) and client
    certificates; ``expired=True`` makes one whose validity ended yesterday. EC P-256 keys: fast to make, and
    Java, OpenSSL and Python all accept them. Never meant for anything but loopback tests.
    """

    def __init__(self, directory: Path, name: str = "inlet test CA") -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self._openssl = _require("openssl", "apt-get install -y openssl")
        self.key = directory / "ca.key"
        self.cert = directory / "ca.pem"
        """The CA certificate (PEM): what clients and brokers trust."""
        self._config = directory / "ca.cnf"
        (directory / "issued").mkdir(exist_ok=True)
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text(f"{uuid.uuid4().int >> 64:016X}\n")
        self._config.write_text(_CA_CONFIG.format(dir=directory))
        self._run(
            "req",
            "-x509",
            "-new",
            *self._new_key(self.key),
            "-days",
            "30",
            "-subj",
            f"/CN={name}",
            "-out",
            str(self.cert),
        )

    def issue(
        self, name: str, *, server: bool = False, expired: bool = False, key_password: str | None = None
    ) -> CertFiles:
        """Sign ``<name>.pem`` (and ``<name>.key``, ``<name>.p12``): CN ``name``; a server certificate carries
        the loopback SAN; ``key_password`` encrypts the PEM key (AES-256)."""
        key, csr = self.directory / f"{name}.key", self.directory / f"{name}.csr"
        cert, keystore = self.directory / f"{name}.pem", self.directory / f"{name}.p12"
        ext = self.directory / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        ext.write_text(
            "basicConstraints = critical, CA:FALSE\n"
            f"extendedKeyUsage = {usage}\n" + ("subjectAltName = IP:127.0.0.1, DNS:localhost\n" if server else "")
        )
        self._run("req", "-new", *self._new_key(key), "-subj", f"/CN={name}", "-out", str(csr))
        now = datetime.now(UTC)
        start, end = (
            (now - timedelta(days=3), now - timedelta(days=1))
            if expired
            else (now - timedelta(hours=1), now + timedelta(days=30))
        )
        self._run(
            "ca",
            "-batch",
            "-notext",
            "-config",
            str(self._config),
            "-cert",
            str(self.cert),
            "-keyfile",
            str(self.key),
            "-in",
            str(csr),
            "-out",
            str(cert),
            "-extfile",
            str(ext),
            "-startdate",
            start.strftime("%Y%m%d%H%M%SZ"),
            "-enddate",
            end.strftime("%Y%m%d%H%M%SZ"),
        )
        self._run(
            "pkcs12",
            "-export",
            "-in",
            str(cert),
            "-inkey",
            str(key),
            "-certfile",
            str(self.cert),
            "-name",
            name,
            "-out",
            str(keystore),
            "-passout",
            f"pass:{KEYSTORE_PASSWORD}",
        )
        if key_password is not None:
            encrypted = key.with_suffix(".key.enc")
            self._run(
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-in",
                str(key),
                "-out",
                str(encrypted),
                "-passout",
                f"pass:{key_password}",
            )
            encrypted.replace(key)
        return CertFiles(cert=cert, key=key, keystore=keystore)

    @staticmethod
    def _new_key(path: Path) -> list[str]:
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(path)]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [self._openssl, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.directory,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"`openssl {args[0]}` failed (exit {result.returncode}):\n{_last_lines(result.stdout + result.stderr)}"
            )


# --- lifecycle shared by the brokers --------------------------------------------------------------

_OPEN: set[_Service] = set()


@atexit.register
def _close_all() -> None:
    for service in list(_OPEN):
        with contextlib.suppress(Exception):
            service.close()


class _Service:
    """One broker process; ports and data directory stay the same across stop/start."""

    name: ClassVar[str]

    def __init__(self, data_dir: Path | None, startup_timeout: float) -> None:
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"inlet-{self.name}-")) if data_dir is None else data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.data_dir / "logs" / "console.log"
        self.startup_timeout = startup_timeout
        # Wall time of the last successful start(), readiness included.
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        _OPEN.add(self)

    # Subclasses: first-start setup (idempotent), the command line, and the readiness check.
    def _prepare(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _diagnostics(self) -> str:
        return f"--- {self.console_log}:\n{_tail(self.console_log)}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def start(self) -> Self:
        """Start the broker (no-op if running) and return once it accepts clients."""
        if self.running:
            return self
        began = time.monotonic()
        self._prepare()
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_log, "ab") as console:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the broker in order
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 -- only prctl, needed to never leave orphans
            )
        while not self._ready():
            if (code := self._proc.poll()) is not None:
                raise ServiceError(f"{self.name} exited with code {code} while starting\n{self._diagnostics()}")
            if time.monotonic() - began > self.startup_timeout:
                self.stop()
                raise ServiceError(
                    f"{self.name} was not ready after {self.startup_timeout:.0f} s\n{self._diagnostics()}"
                )
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker and wait for it (SIGKILL after `timeout`); data dir and ports are kept."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> Self:
        """Stop then start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the data directory if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        _OPEN.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- Kafka ----------------------------------------------------------------------------------------


_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(frozen=True)
class KafkaListener:
    """A client listener of a :class:`KafkaBroker` next to its PLAINTEXT one (which the broker itself uses).

    ``mechanisms`` (SASL listeners): ``SCRAM-SHA-256`` / ``SCRAM-SHA-512`` (the broker's ``sasl_users``, created
    at format time), ``PLAIN`` (the same users, in the JAAS config) and ``OAUTHBEARER`` with Kafka's unsecured
    validator: it accepts an unsigned JWT (``alg: none``) carrying ``sub`` and ``exp`` — for tests only.
    ``client_auth``: mutual TLS (``ssl.client.auth=required``), client certificates checked against the broker's
    ``truststore``. ``keystore``: this listener's own server certificate (PKCS12), e.g. an expired one.
    """

    name: str
    """Kafka's listener name: upper-case letters, digits and ``_`` (e.g. ``SASL_SSL``, ``MTLS``)."""
    protocol: Literal["SSL", "SASL_SSL", "SASL_PLAINTEXT"]
    mechanisms: tuple[str, ...] = ()
    client_auth: bool = False
    keystore: Path | None = None

    def __post_init__(self) -> None:
        if (
            not self.name.replace("_", "").isalnum()
            or not self.name.isupper()
            or self.name in ("PLAINTEXT", "CONTROLLER")
        ):
            raise ValueError(f"listener name {self.name!r}: upper case, not PLAINTEXT or CONTROLLER")
        sasl = self.protocol.startswith("SASL_")
        if sasl != bool(self.mechanisms) or not set(self.mechanisms) <= set(_SASL_MECHANISMS):
            raise ValueError(
                f"listener {self.name}: SASL listeners need mechanisms from {_SASL_MECHANISMS}, others none"
            )
        if self.client_auth and self.protocol == "SASL_PLAINTEXT":
            raise ValueError(f"listener {self.name}: client_auth needs TLS")


class KafkaBroker(_Service):
    """A single-node KRaft Kafka (broker and controller in one JVM) on 127.0.0.1.

    `fast_jit` limits the JIT to C1, which starts faster and is right for tests; benchmarks keep the default.
    `overrides` are extra or replacement ``server.properties`` entries.

    Security (tests of TLS and SASL): `listeners` are extra client listeners on their own ports
    (:meth:`bootstrap_of`); TLS ones serve `keystore` (PKCS12, password `keystore_password`, e.g. a
    :class:`CertFiles` ``.keystore``), and mutual-TLS ones trust the CA certificates of `truststore` (PEM).
    `sasl_users` (name: password) are created for every SCRAM mechanism a listener enables when the storage is
    formatted (``--add-scram``; KRaft has no later offline way), and are PLAIN's users too.
    """

    name = "kafka"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        controller_port: int = 0,
        fast_jit: bool = False,
        overrides: Mapping[str, str] | None = None,
        listeners: Sequence[KafkaListener] = (),
        keystore: Path | None = None,
        keystore_password: str = KEYSTORE_PASSWORD,
        truststore: Path | None = None,
        sasl_users: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, startup_timeout)
        free = _free_ports(2 + len(listeners))
        self.port = port or free[0]
        self.controller_port = controller_port or free[1]
        self.fast_jit = fast_jit
        self.overrides = dict(overrides or {})
        self.listeners = tuple(listeners)
        self.listener_ports = {listener.name: free[2 + i] for i, listener in enumerate(self.listeners)}
        if len(self.listener_ports) != len(self.listeners):
            raise ValueError("listener names must differ")
        self.keystore = keystore
        self.keystore_password = keystore_password
        self.truststore = truststore
        self.sasl_users = dict(sasl_users or {})
        tls = [listener for listener in self.listeners if listener.protocol != "SASL_PLAINTEXT"]
        if any(listener.keystore is None for listener in tls) and keystore is None:
            raise ValueError("TLS listeners need a keystore (the broker's or their own)")
        if any(listener.client_auth for listener in tls) and truststore is None:
            raise ValueError("a client_auth listener needs a truststore (the CA of the client certificates)")
        self.server_log = self.data_dir / "logs" / "server.log"
        self._properties = self.data_dir / "server.properties"
        self._log_dirs = self.data_dir / "data"
        self._classpath = ""
        self._java = ""

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener."""
        return f"127.0.0.1:{self.port}"

    def bootstrap_of(self, listener: str) -> str:
        """``127.0.0.1:<port>`` of the extra listener named ``listener``."""
        return f"127.0.0.1:{self.listener_ports[listener]}"

    def _security_settings(self) -> dict[str, str]:
        """``server.properties`` lines of the extra listeners (per listener name)."""
        out: dict[str, str] = {}
        if self.keystore is not None:
            out |= {
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.keystore),
                "ssl.keystore.password": self.keystore_password,
            }
        if self.truststore is not None:
            out |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.truststore)}
        mechanisms = sorted({m for listener in self.listeners for m in listener.mechanisms})
        if mechanisms:
            out["sasl.enabled.mechanisms"] = ",".join(mechanisms)
        for listener in self.listeners:
            prefix = f"listener.name.{listener.name.lower()}."
            if listener.keystore is not None:
                out |= {
                    prefix + "ssl.keystore.type": "PKCS12",
                    prefix + "ssl.keystore.location": str(listener.keystore),
                    prefix + "ssl.keystore.password": self.keystore_password,
                }
            if listener.client_auth:
                out[prefix + "ssl.client.auth"] = "required"
            if listener.mechanisms:
                out[prefix + "sasl.enabled.mechanisms"] = ",".join(listener.mechanisms)
            for mechanism in listener.mechanisms:
                out[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = self._jaas(mechanism)
        return out

    def _jaas(self, mechanism: str) -> str:
        if mechanism.startswith("SCRAM-"):
            return "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        if mechanism == "PLAIN":
            users = "".join(f' user_{name}="{password}"' for name, password in self.sasl_users.items())
            return f"org.apache.kafka.common.security.plain.PlainLoginModule required{users};"
        # OAUTHBEARER without a sasl.server.callback.handler.class: Kafka's unsecured validator (unsigned JWTs).
        return (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            'unsecuredLoginStringClaim_sub="broker";'
        )

    def _settings(self) -> dict[str, str]:
        # Every replication setting is 1 because there is one node.
        extra = [(listener.name, listener.protocol, self.listener_ports[listener.name]) for listener in self.listeners]
        listeners = ",".join(f"{name}://127.0.0.1:{port}" for name, _, port in extra)
        protocols = "".join(f",{name}:{protocol}" for name, protocol, _ in extra)
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            + (f",{listeners}" if listeners else ""),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}" + (f",{listeners}" if listeners else ""),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" + protocols,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._log_dirs),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            **self._security_settings(),
            **self.overrides,
        }

    def _jvm(self, *options: str) -> list[str]:
        return [
            self._java, *options, "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.server_log.parent}", f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-cp", self._classpath,
        ]  # fmt: skip

    def _prepare(self) -> None:
        self._java = _require("java", "Kafka needs Java 17+: apt-get install -y openjdk-17-jre-headless")
        self._classpath = str(ensure_kafka_jars() / "*")  # the JVM expands the wildcard itself
        self.server_log.parent.mkdir(parents=True, exist_ok=True)
        self._properties.write_text("".join(f"{k}={v}\n" for k, v in self._settings().items()))
        if (self._log_dirs / "meta.properties").exists():
            return  # formatted by an earlier start: keep the data
        # A one-shot tool: C1 only and a small heap whatever `fast_jit` says.
        command = [
            *self._jvm("-Xmx256m", "-XX:TieredStopAtLevel=1"),
            "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(self._properties),
            *self._scram_arguments(),
        ]  # fmt: skip
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"formatting Kafka storage in {self._log_dirs} failed (exit {result.returncode}):\n"
                f"{_last_lines(result.stdout + result.stderr)}"
            )

    def _scram_arguments(self) -> list[str]:
        """``--add-scram`` per SCRAM mechanism and user: KRaft stores SCRAM credentials from the format on."""
        scram = sorted({m for listener in self.listeners for m in listener.mechanisms if m.startswith("SCRAM-")})
        return [
            arg
            for mechanism in scram
            for name, password in self.sasl_users.items()
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]

    def _command(self) -> list[str]:
        jit = ["-XX:TieredStopAtLevel=1"] if self.fast_jit else []
        return [
            *self._jvm("-Xms512m", "-Xmx512m", "-XX:+UseG1GC", *jit),
            "kafka.Kafka",
            str(self._properties),
        ]

    def _ready(self) -> bool:
        return _api_versions_ok(self.port)

    def _diagnostics(self) -> str:
        return f"{super()._diagnostics()}\n--- {self.server_log}:\n{_tail(self.server_log)}"


def _cluster_id() -> str:
    # Kafka's Uuid.randomUuid().toString(): 16 random bytes, URL-safe base64 without padding, never "-..."
    while (text := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return text


def _api_versions_ok(port: int) -> bool:
    """One ApiVersions v0 round trip; True once the broker answers with error code 0."""
    client_id = b"inlet-probe"
    # Request header v1: api_key 18, api_version 0, correlation id, client id; v0 has an empty body.
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            correlation_id, error_code = struct.unpack_from(">ih", _recv_exactly(sock, size))
    except (OSError, struct.error):
        return False
    return bool(correlation_id == 7 and error_code == 0)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


# --- Mosquitto ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener of :class:`Mosquitto`: its certificate and key (PEM, e.g. a :class:`CertFiles`'s) and the CA
    that client certificates must be signed by (``require_certificate true``: no client certificate, no entry)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True


class Mosquitto(_Service):
    """A Mosquitto 2 broker on 127.0.0.1 with anonymous access.

    `persistence` keeps sessions and queued QoS 1 messages across restart() (saved on SIGTERM);
    ``max_queued_messages 0`` because the default 1000 silently drops an offline session's backlog.
    `log_packets` (``log_type all``) makes the console log name every PUBLISH sent and PUBACK received per
    client id: the broker's own record of what was acknowledged, for tests that must prove it.
    `tls` adds a TLS listener on its own port (:attr:`tls_url`, ``mqtts://``) next to the plain one.
    """

    name = "mosquitto"

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        persistence: bool = False,
        log_packets: bool = False,
        tls: MosquittoTls | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(data_dir, startup_timeout)
        free = _free_ports(2)
        self.port = port or free[0]
        self.tls = tls
        self.tls_port = free[1] if port != free[1] else _free_ports(1)[0]
        self.persistence = persistence
        self.log_packets = log_packets
        self.config = self.data_dir / "mosquitto.conf"
        self._binary = ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """``mqtts://127.0.0.1:<port>`` of the TLS listener (with `tls` only)."""
        if self.tls is None:
            raise ServiceError("this Mosquitto has no TLS listener: pass tls=MosquittoTls(...)")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def _prepare(self) -> None:
        binary = _mosquitto_binary()
        if binary is None:
            raise ServiceError("mosquitto is not installed: run `python -m tools.services install-mosquitto`")
        self._binary = binary
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_queued_messages 0",
            # Run as root, mosquitto would switch to the `mosquitto` user and could not write our data dir.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.data_dir}/"]
        else:
            lines.append("persistence false")
        if self.log_packets:
            lines.append("log_type all")
        if self.tls is not None:  # listener options below apply to this listener (mosquitto.conf(5))
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [self._binary, "-c", str(self.config)]

    def _ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
        except OSError:
            return False
        return True


# --- helpers --------------------------------------------------------------------------------------


def _require(binary: str, hint: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ServiceError(f"`{binary}` not found on PATH; {hint}")
    return path


def _free_ports(count: int) -> list[int]:
    """Ports the OS reports free on loopback; held together so that they differ from each other."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when we die, or None where that is unsafe.

    The signal fires when the *thread* that forked exits, so it is only set up from the main thread.
    """
    libc = _LIBC
    if libc is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return setup


def _last_lines(text: str, count: int = 30) -> str:
    return "\n".join(text.splitlines()[-count:])


def _tail(path: Path, count: int = 30) -> str:
    try:
        return _last_lines(path.read_text(errors="replace"), count)
    except OSError as exc:
        return f"(unreadable: {exc})"


# --- command line ---------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _serve(service: KafkaBroker | Mosquitto, env_line: Callable[[], str]) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cleans up like Ctrl-C does
    try:
        with service:
            print(env_line(), flush=True)
            print(
                f"{service.name} ready in {service.startup_seconds:.1f} s; "
                f"data and logs in {service.data_dir}; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while service.running:
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    print(f"{service.name} exited unexpectedly; see {service.console_log}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.services", description=(__doc__ or "").split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-kafka", help="fetch the Kafka jars into the cache (Maven) and print the dir")
    commands.add_parser("install-mosquitto", help="apt-get install mosquitto if missing; print its path")
    commands.add_parser("install-chromium", help="apt-get install chromium and chromedriver if missing")
    commands.add_parser("install-promtool", help="apt-get install prometheus (for promtool) if missing; print its path")
    for name, what in (("kafka", "a single-node Kafka"), ("mosquitto", "a Mosquitto broker")):
        command = commands.add_parser(name, help=f"run {what} on 127.0.0.1 until Ctrl-C or SIGTERM")
        command.add_argument("--port", type=int, default=0, help="listener port (default: a free one)")
        command.add_argument("--data-dir", type=Path, help="kept after exit (default: a temporary dir)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch-kafka":
            print(ensure_kafka_jars())
            return 0
        if args.command == "install-mosquitto":
            print(ensure_mosquitto())
            return 0
        if args.command == "install-chromium":
            print(*ensure_chromium())
            return 0
        if args.command == "install-promtool":
            print(ensure_promtool())
            return 0
        if args.command == "kafka":
            broker = KafkaBroker(args.data_dir, port=args.port)
            return _serve(broker, lambda: f"INLET_KAFKA_BOOTSTRAP={broker.bootstrap}")
        mosquitto = Mosquitto(args.data_dir, port=args.port, persistence=args.data_dir is not None)
        return _serve(mosquitto, lambda: f"INLET_MQTT_URL={mosquitto.url}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
