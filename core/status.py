"""The status document of a running supervisor: one JSON-ready dict the API, the console and ``inlet status`` show.

:func:`snapshot` reads what the supervisor and the pipelines keep anyway (``core.metrics.Stats`` per integration,
updated once per committed batch), so taking it costs nothing on the hot path. Its shape::

    {"ready": bool, "unhealthy": {key: why}, "generated_at": ISO-8601, "sink", "replica", "fleet": group | None,
     "integrations": [{"key": "customer/integration", "customer", "integration", "plugin", "state", "replica",
                       "healthy",
                       "last_success", "lag_seconds", "watermark", "watermark_age_seconds",
                       "counts": {"records_in", "events_out", "dlq", "filtered"}, "dlq_by_stage",
                       "filtered_by_reason", "events_per_second", "dlq_reasons": [{"stage", "error_type",
                       "message", "count"}], "restarts", "last_error", "recent_dlq": [{"at", "stage",
                       "error_type", "message", "payload_preview", "payload_bytes"}], "drift_alerts": [...],
                       "open_alerts": [inlet.data_alert, ...]}],
     "contracts": [{"name", "version", "topic", "integrations"}]}

- ``state``: ``running`` (reading or writing), ``backing_off`` (failed, waiting to restart from its checkpoint),
  ``failed`` (given up, or stopped for good), ``paused`` (by an operator: ``inlet pause``), ``caught_up`` (a pull
  source waiting for its next poll, or a ``--once`` run that has read everything), ``stopped``; in a fleet also
  ``elsewhere`` (assigned to another replica: ``replica`` is None here, ``inlet status --fleet`` says which) and
  ``fenced`` (another replica took it over while this one was cut off; it waits for the next assignment).
- ``key``: ``customer/integration``, or ``customer/integration#slot`` for one slot of an integration with ``slots``.
- ``lag_seconds``: now minus the newest event time delivered (the CloudEvents ``time`` of the last event of each
  committed batch, so it costs one comparison per batch); None for a family whose events carry no time, or before
  the first event.
- ``watermark_age_seconds``: for pull sources whose position holds a timestamp watermark (``last_updated``,
  ``modified_since``, ``transaction_time``): now minus that watermark; None otherwise.
- ``open_alerts``: the data-quality alerts (``inlet.data_alert`` events, oldest first) open on the unit's running
  monitors (``core.monitors``); empty when none are open, its monitors are off, or it does not run here.
  :func:`monitors` and :func:`unit_monitors` are the monitors' own document (``GET /api/monitors``): each running
  unit's ``Monitors.describe()`` with its ``key``.
- Everything an operator reads here went through redaction: messages and errors, and every string of the
  monitors' documents (series and codes are upstream values), lose every known secret (``core.secrets``) and
  credential-looking values (``core.redact``); a payload preview of a plugin that declares
  PHI (``Connector.phi``) is pseudonymised like a recording, and one that cannot be (not JSON, not HL7 v2) is
  withheld. Previews are at most :data:`PREVIEW_CHARS` characters.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from inlet.core.metrics import DlqSample, Stats
from inlet.core.monitor_view import open_alerts
from inlet.core.redact import Redactor

if TYPE_CHECKING:
    from inlet.core.supervisor import Supervisor

__all__ = [
    "PREVIEW_CHARS",
    "STATES",
    "contracts",
    "integration_status",
    "monitors",
    "no_monitors_reason",
    "payload_preview",
    "redact_text",
    "snapshot",
    "topics",
    "unit_monitors",
]

STATES = ("running", "backing_off", "failed", "paused", "caught_up", "stopped")
PREVIEW_CHARS = 2000
"""A DLQ payload preview is cut to this many characters (after redaction)."""
RATE_WINDOW_SECONDS = 60.0
WATERMARK_KEYS = ("last_updated", "modified_since", "transaction_time", "since", "watermark")
"""Position members read as a pull source's timestamp watermark, first found wins."""

# One key per process for the PHI pseudonyms of previews: stable while the daemon runs, unknown to anyone else.
_PHI_KEY = os.urandom(32)
_SECRETS_ONLY = Redactor(b"secrets-only", phi=False)


def _iso(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, float | int):
        ts = datetime.fromtimestamp(ts, UTC)
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def redact_text(text: str | None) -> str | None:
    """``text`` with known secrets and credential-looking values masked (messages, errors)."""
    if text is None:
        return None
    out = _SECRETS_ONLY({"text": text})["text"]
    return str(out)


def payload_preview(payload: bytes, *, phi: bool) -> str:
    """The start of a DLQ payload as an operator may see it: secrets masked always, PHI pseudonymised for a
    plugin that declares it (``core.redact``, as in recordings), at most :data:`PREVIEW_CHARS` characters."""
    if not payload:
        return ""
    redactor = Redactor(_PHI_KEY, phi=True) if phi else _SECRETS_ONLY
    text = payload.decode("utf-8", errors="replace")
    try:
        doc: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    if doc is not None:
        shown = orjson.dumps(redactor({"payload": doc})["payload"]).decode()
    elif phi and text.lstrip().startswith("MSH"):
        shown = redactor.hl7(text).replace("\r", "\n")
        shown = str(redactor({"text": shown})["text"])
    elif phi:
        return f"[{len(payload)} bytes withheld: not JSON or HL7 v2, and this plugin's records may hold PHI]"
    else:
        shown = str(redactor({"text": text})["text"])
    if len(shown) > PREVIEW_CHARS:
        shown = shown[: PREVIEW_CHARS - 1] + "…"
    return shown


def _events_per_second(stats: Stats, now: float) -> float:
    samples, total = stats.rate_samples, stats.totals.events_out
    base = samples[0]
    for t, n in samples:  # the newest sample at least a window old, else the oldest kept
        if now - t >= RATE_WINDOW_SECONDS:
            base = (t, n)
        else:
            break
    elapsed = now - base[0]
    return round((total - base[1]) / elapsed, 3) if elapsed > 0 else 0.0


def _watermark(position: object) -> str | None:
    if not isinstance(position, dict):
        return None
    for key in WATERMARK_KEYS:
        value = position.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _age(value: str | None, now: datetime) -> float | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return round((now - ts).total_seconds(), 3)


def _sample(s: DlqSample, *, phi: bool) -> dict[str, Any]:
    return {
        "at": _iso(s.at),
        "stage": s.stage,
        "error_type": s.error_type,
        "message": redact_text(s.message),
        "payload_preview": payload_preview(s.payload, phi=phi),
        "payload_bytes": len(s.payload),
    }


def integration_status(
    supervisor: Supervisor, key: str, *, why: str | None = None, recent: bool = True
) -> dict[str, Any]:
    """One integration's entry of :func:`snapshot` (``KeyError`` for an unknown key); ``recent=False`` leaves
    ``recent_dlq`` empty (the list view: previews are up to :data:`PREVIEW_CHARS` each)."""
    stats = supervisor.stats[key]
    item = supervisor.items[supervisor.units[key].integration]
    phi = bool(item.plugin.phi)
    now = datetime.now(UTC)
    t = stats.totals
    lag = None if stats.newest_event_time is None else round((now - stats.newest_event_time).total_seconds(), 3)
    watermark = _watermark(stats.last_position)
    return {
        "key": key,
        "customer": stats.customer,
        "integration": stats.integration,
        "plugin": item.config.plugin,
        "state": stats.state,
        "replica": None if stats.state == "elsewhere" else supervisor.replica,
        "healthy": why is None,
        "unhealthy_reason": redact_text(why),
        "last_success": _iso(stats.last_success),
        "lag_seconds": lag,
        "watermark": watermark,
        "watermark_age_seconds": _age(watermark, now),
        "counts": {
            "records_in": t.records_in,
            "events_out": t.events_out,
            "dlq": t.dlq.total(),
            "filtered": t.filtered.total(),
        },
        "dlq_by_stage": dict(sorted(t.dlq.items())),
        "filtered_by_reason": dict(sorted(t.filtered.items())),
        "batches": stats.batches,
        "events_per_second": _events_per_second(stats, time.monotonic()),
        "dlq_reasons": [
            {"stage": stage, "error_type": error_type, "message": redact_text(message), "count": n}
            for (stage, error_type, message), n in t.reasons.most_common()
        ],
        "restarts": stats.restarts,
        "last_error": redact_text(stats.last_error),
        "recent_dlq": [_sample(s, phi=phi) for s in reversed(stats.recent_dlq)] if recent else [],
        "drift_alerts": [_drift(d) for d in reversed(stats.recent_drift)],
        "open_alerts": _masked(open_alerts([m])) if (m := supervisor.monitors.get(key)) is not None else [],
    }


def _masked(value: Any) -> Any:
    """``value`` with known secrets and credential-looking values masked in every string and member name: the
    monitors name series and codes after upstream values, which an upstream may fill with anything."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(k) if isinstance(k, str) else k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def unit_monitors(supervisor: Supervisor, key: str) -> dict[str, Any] | None:
    """The running monitors of unit ``key`` as ``Monitors.describe()`` shows them, with the ``key``; None when it
    has none running here (:func:`no_monitors_reason` says why). Take it on the supervisor's event loop."""
    found = supervisor.monitors.get(key)
    if found is None:
        return None
    return {"key": key, **_masked(found.describe())}


def monitors(supervisor: Supervisor) -> dict[str, Any]:
    """Every running unit's monitors (:func:`unit_monitors`), in the order of the status document."""
    return {
        "generated_at": _iso(time.time()),
        "replica": supervisor.replica,
        "monitors": [doc for key in supervisor.stats if (doc := unit_monitors(supervisor, key)) is not None],
    }


def no_monitors_reason(supervisor: Supervisor, key: str) -> str:
    """Why unit ``key`` has no monitors running here, as a sentence naming it and what to do."""
    if key not in supervisor.stats:
        slots = [k for k in supervisor.stats if k.startswith(f"{key}#")]
        if slots:
            return f"{key} runs as slots, each with its own monitors: ask for one of {', '.join(slots)}"
        return f"no integration {key} in this run"
    if not supervisor.items[supervisor.units[key].integration].config.monitors.enabled:
        return f"{key} has its monitors off (monitors.enabled: false in its integration YAML)"
    state = supervisor.stats[key].state
    if state == "elsewhere":
        return f"{key} runs on another replica of the fleet: ask that one (`inlet status --fleet` says which)"
    if state in ("failed", "stopped", "fenced"):
        return f"{key} is {state}: its monitors run only while it runs"
    return f"{key} has no monitors running yet (state {state}): they start when it first loads its position"


def _drift(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": _iso(alert.get("at")),
        "source_key": redact_text(alert.get("source_key")),
        "changes": [{k: redact_text(str(v)) for k, v in change.items()} for change in alert.get("changes", [])],
    }


def contracts(supervisor: Supervisor) -> list[dict[str, Any]]:
    """The contracts the integrations publish: name, version, the topic each is written to, and by whom."""
    from inlet.contracts.base import converters_from
    from inlet.core.envelope import Enveloper

    found: dict[tuple[str, str, str], set[str]] = {}
    cfg = supervisor.cfg
    for item in supervisor.integrations:
        c = item.config
        env = Enveloper.of(cfg, c.customer, c.integration)
        for model in item.produces:
            for written in (model, *converters_from(model)):
                found.setdefault((written.contract_name, written.contract_version, env.topic_for(written)), set()).add(
                    c.key
                )
    return [
        {"name": name, "version": version, "topic": topic, "integrations": sorted(keys)}
        for (name, version, topic), keys in sorted(found.items())
    ]


def topics(supervisor: Supervisor) -> list[dict[str, Any]]:
    """Every topic the integrations write (contract, DLQ and drift topics), as ``core.topics`` computes them."""
    from inlet.core.topics import required_topics

    return [
        {
            "name": spec.name,
            "kind": spec.kind,
            "partitions": spec.partitions,
            "writers": list(spec.writers),
            "contracts": list(spec.contracts),
        }
        for spec in required_topics(supervisor.cfg, supervisor.integrations)
    ]


def snapshot(supervisor: Supervisor, *, recent: bool = True) -> dict[str, Any]:
    """The whole status document (see the module docstring). Not thread-safe: take it on the supervisor's event
    loop (``core.api`` does), since the pipelines update what it reads."""
    status = supervisor.status()
    unhealthy = {k: redact_text(v) for k, v in status.items() if v is not None}
    return {
        "ready": not unhealthy,
        "unhealthy": unhealthy,
        "generated_at": _iso(time.time()),
        "sink": supervisor.cfg.resolved_sink(),
        "replica": supervisor.replica,
        "fleet": None if supervisor.cfg.fleet is None else supervisor.cfg.fleet.group,
        "integrations": [
            integration_status(supervisor, key, why=status.get(key), recent=recent) for key in supervisor.stats
        ],
        "contracts": contracts(supervisor),
    }
