"""Loading a config directory: ``inlet.yaml`` (the supervisor) and ``integrations/*.yaml`` (one each).

Layout::

    <config dir>/
      inlet.yaml                      optional: sink, state dir, topic template, metrics port
      integrations/<anything>.yaml    one integration each: customer, integration, plugin, settings

YAML is safe-loaded and size-bounded. Every problem is reported as a :class:`ConfigError` naming the
file, the key path and what was expected; :func:`check_config` collects all of them at once so
``inlet check`` can list everything wrong in one go, while :func:`load_config` raises on the first.
Environment variables override the file for deployment: ``INLET_KAFKA_BOOTSTRAP`` switches the sink
to Kafka, ``INLET_STATE_DIR`` moves state. Every relative path in a config file resolves against the config
directory (``state_dir`` here, replay and shape paths through :meth:`IntegrationContext.path`).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inlet.contracts.base import Contract
from inlet.core.connector import Connector, IntegrationContext, PluginSettings
from inlet.core.errors import ConfigError
from inlet.core.registry import find_plugin

__all__ = [
    "DriftSettings",
    "IntegrationConfig",
    "KafkaSettings",
    "LoadedIntegration",
    "SupervisorConfig",
    "check_config",
    "find_config_dir",
    "load_config",
    "load_supervisor",
]

MAX_CONFIG_BYTES = 1024 * 1024
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Strict):
    """Producer settings. Defaults are tuned for throughput with acks=all (see bench/)."""

    bootstrap: str
    linger_ms: int = Field(default=5, ge=0)
    max_batch_size: int = Field(default=256 * 1024, ge=16 * 1024)
    max_in_flight_events: int = Field(default=20_000, ge=100)
    request_timeout_ms: int = Field(default=15_000, ge=1000)
    client_id: str = "inlet"


class SupervisorConfig(_Strict):
    """``inlet.yaml``: where events go and where state lives."""

    sink: Literal["auto", "outbox", "kafka"] = "auto"
    kafka: KafkaSettings | None = None
    state_dir: str = "var"
    """Checkpoints and the outbox; relative to the config directory (``INLET_STATE_DIR``: to the working one)."""
    topic_template: str = "{name}.v{major}"
    dlq_topic_template: str = "inlet.dlq.{customer}.{integration}"
    drift_topic_template: str = "inlet.drift.{customer}.{integration}"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port for /metrics, /healthz, /readyz; None: not served."""
    metrics_host: str = "127.0.0.1"
    """Interface for that port; a container sets 0.0.0.0."""
    restart_backoff_initial: float = Field(default=1.0, gt=0)
    restart_backoff_max: float = Field(default=60.0, gt=0)

    def resolved_sink(self) -> Literal["outbox", "kafka"]:
        """``auto`` means Kafka when a bootstrap is configured, the embedded outbox otherwise."""
        if self.sink == "auto":
            return "kafka" if self.kafka is not None else "outbox"
        return self.sink


class DriftSettings(_Strict):
    """Upstream drift checks: the recorded shape of the payloads this integration depends on."""

    shape: str
    """``shape.json`` (``core.drift``), relative to the config directory; usually next to the fixtures."""
    policy: Literal["map", "dlq"] = "map"
    """What happens to a drifted record after the alert: mapped anyway, or sent to the DLQ."""
    strict: bool = False
    """Also alert on fields never seen before."""


class IntegrationConfig(_Strict):
    """One ``integrations/*.yaml``: which plugin serves which customer, with its settings."""

    customer: str = Field(pattern=_SLUG)
    integration: str = Field(pattern=_SLUG)
    plugin: str
    enabled: bool = True
    zone: str | None = None
    poll_interval: float = Field(default=30.0, gt=0)
    max_in_flight: int = Field(default=4, ge=1, le=64)
    settings: dict[str, Any] = Field(default_factory=dict)
    drift: DriftSettings | None = None

    @field_validator("zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin)") from None
        return value

    @property
    def key(self) -> str:
        """``customer/integration``: how the CLI and logs name it."""
        return f"{self.customer}/{self.integration}"


@dataclass(frozen=True)
class LoadedIntegration:
    """A validated integration: its config, plugin class and validated plugin settings."""

    config: IntegrationConfig
    plugin: type[Connector[Any]]
    settings: PluginSettings
    file: Path
    context: IntegrationContext
    produces: tuple[type[Contract], ...] = ()
    """The contracts this integration emits with its settings (what its connector says)."""
    warnings: tuple[str, ...] = ()
    """Configuration that runs but loses data or surprises (``inlet check`` prints them)."""

    def build(self) -> Connector[Any]:
        """A fresh connector instance (the supervisor makes a new one on every restart)."""
        return self.plugin(self.context, self.settings)


def _read_yaml(path: Path) -> Any:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", file=str(path))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", file=str(path)) from None


def _validation_errors(exc: ValidationError, path: Path, prefix: str = "") -> list[ConfigError]:
    out = []
    for err in exc.errors():
        key = prefix + ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r:.80})"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(ConfigError(f"{msg}{shown}", file=str(path), key=key or None))
    return out


def _env_overrides(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    bootstrap = os.environ.get("INLET_KAFKA_BOOTSTRAP")
    if bootstrap:
        data["kafka"] = {**(data.get("kafka") or {}), "bootstrap": bootstrap}
    state = os.environ.get("INLET_STATE_DIR")
    if state:
        data["state_dir"] = str(Path(state).resolve())  # an environment variable is relative to where it is set
    return data


def load_supervisor(root: Path, errors: list[ConfigError]) -> SupervisorConfig:
    """``inlet.yaml`` of ``root`` (defaults when absent) with env overrides; problems are appended to ``errors``."""
    path = root / "inlet.yaml"
    data: Any = {}
    if path.exists():
        try:
            data = _read_yaml(path) or {}
        except ConfigError as exc:
            errors.append(exc)
            data = {}
    if not isinstance(data, dict):
        errors.append(ConfigError(f"expected a mapping at the top, got {type(data).__name__}", file=str(path)))
        data = {}
    try:
        sup = SupervisorConfig.model_validate(_env_overrides(data))
    except ValidationError as exc:
        errors.extend(_validation_errors(exc, path))
        sup = SupervisorConfig()
    # Like every path in a config, state_dir is relative to the config directory, never to the working
    # directory: the same config run from two places must find the same checkpoints and outbox.
    return sup.model_copy(update={"state_dir": str((root / sup.state_dir).resolve())})


def _read_integration(path: Path) -> IntegrationConfig:
    """The integration's own keys (customer, integration, plugin, ...): no plugin import, no secret."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, got {type(data).__name__}", file=str(path))
    try:
        return IntegrationConfig.model_validate(data)
    except ValidationError as exc:
        raise _Many(_validation_errors(exc, path)) from None


def _load_integration(path: Path, root: Path, cfg: IntegrationConfig, *, offline: bool,
                      state: Path | None) -> LoadedIntegration:
    try:
        plugin = find_plugin(cfg.plugin)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("key plugin: "), file=str(path), key="plugin") from None
    try:
        settings = plugin.settings_model.model_validate(cfg.settings, context={"offline": offline})
    except ValidationError as exc:
        raise _Many(_validation_errors(exc, path, prefix="settings.")) from None
    ctx = IntegrationContext(customer=cfg.customer, integration=cfg.integration, zone=cfg.zone,
                             config_root=root, state_dir=state)
    item = LoadedIntegration(config=cfg, plugin=plugin, settings=settings, file=path, context=ctx)
    try:  # what the connector refuses when constructed, check refuses too (constructors do no I/O)
        connector = item.build()
    except ConfigError as exc:
        raise ConfigError(exc.message, file=str(path), key=exc.key) from None
    return replace(item, produces=connector.produces(), warnings=tuple(connector.config_warnings()))


class _Many(Exception):
    """Several config errors from one file."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def _errors_of(exc: ConfigError | _Many) -> list[ConfigError]:
    return exc.errors if isinstance(exc, _Many) else [exc]


def check_config(root: Path, *, only: Collection[str] | None = None, offline: bool = False
                 ) -> tuple[SupervisorConfig, list[LoadedIntegration], list[ConfigError]]:
    """Validate a whole config directory, collecting every error instead of stopping at the first.

    ``only`` (``customer/integration`` keys) loads just those integrations: the other files are read for
    their keys alone, so their plugins' settings and secrets are neither validated nor needed, and an error
    in them does not stop work on the chosen one. ``offline`` lets absent secrets be stand-ins
    (:class:`~inlet.core.secrets.OfflineSecret`) for replaying recorded fixtures.
    """
    errors: list[ConfigError] = []
    if not root.is_dir():
        return SupervisorConfig(), [], [ConfigError("config directory does not exist", file=str(root))]
    root = root.resolve()
    sup = load_supervisor(root, errors)
    loaded: list[LoadedIntegration] = []
    files = sorted((root / "integrations").glob("*.y*ml"))
    if not files:
        errors.append(ConfigError("no integration files (integrations/*.yaml)", file=str(root)))
    seen: dict[str, Path] = {}
    wanted = set(only) if only is not None else None
    for path in files:
        try:
            cfg = _read_integration(path)
        except (ConfigError, _Many) as exc:
            if wanted is None:  # with --only, a broken file of another integration is not this run's problem
                errors.extend(_errors_of(exc))
            continue
        if cfg.key in seen:
            errors.append(ConfigError(f"{cfg.key} is already defined in {seen[cfg.key]}",
                                      file=str(path), key="integration"))
            continue
        seen[cfg.key] = path
        if wanted is not None and cfg.key not in wanted:
            continue
        try:
            loaded.append(_load_integration(path, root, cfg, offline=offline,
                                            state=None if offline else Path(sup.state_dir)))
        except (ConfigError, _Many) as exc:
            errors.extend(_errors_of(exc))
    for key in sorted((wanted or set()) - set(seen)):
        close = difflib.get_close_matches(key, seen, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        errors.append(ConfigError(f"no integration {key} here{hint} (have: {', '.join(sorted(seen)) or 'none'})",
                                  file=str(root)))
    if not re.fullmatch(r"[A-Za-z0-9._{}-]+", sup.topic_template):
        errors.append(ConfigError("topic template may only hold letters, digits, . _ - and {fields}",
                                  file=str(root / "inlet.yaml"), key="topic_template"))
    return sup, loaded, errors


def find_config_dir(given: Path | None, *, cwd: Path | None = None) -> Path:
    """The config directory a command works on: ``--config`` / ``INLET_CONFIG`` when given, else the nearest
    directory holding an ``inlet.yaml``, from the working directory up (as git and ruff find theirs).

    Raises a ConfigError that says everywhere it looked.
    """
    if given is not None:
        return given
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "inlet.yaml").is_file():
            return folder
    raise ConfigError(f"no config directory: none given with --config or INLET_CONFIG, and no inlet.yaml in {start} "
                      "or any folder above it. Point --config at a directory holding inlet.yaml and "
                      "integrations/*.yaml (e.g. --config examples/config)")


def load_config(root: Path, *, only: Collection[str] | None = None, offline: bool = False
                ) -> tuple[SupervisorConfig, list[LoadedIntegration]]:
    """Like :func:`check_config` but raises the first error (all of them in the message)."""
    sup, loaded, errors = check_config(root, only=only, offline=offline)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            raise ConfigError("\n".join(str(e) for e in errors), file=None) from first
        raise first
    return sup, loaded
