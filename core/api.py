"""The operations API and web console of ``inlet run``, served on the metrics port next to the probes.

Read-only by default (``GET``): the status document of :mod:`inlet.core.status` (all of it, one integration's,
the contracts, the topics), the data-quality monitors' baselines and windows (``/api/monitors``), the OpenAPI
document (:data:`OPENAPI`) and the console (:mod:`inlet.core.console`).
The actions — ``POST /api/integrations/{customer}/{integration}/pause|resume|restart`` (:mod:`inlet.core.control`)
and ``POST /api/monitors/{customer}/{integration}/reset`` (forget the monitors' baselines) — need
``Authorization: Bearer <token>`` with the token from ``INLET_API_TOKEN`` or the file ``api.token_file``
names; it is compared in constant time. Without a header: 401; a wrong token: 403; no token configured: 403
saying how to enable them.

The HTTP server runs in its own thread (``core.health``); everything that reads or changes the supervisor runs
on its event loop (``asyncio.run_coroutine_threadsafe``), so the API never sees a half-updated count and never
races an integration's state changes. A loop too busy to answer within :data:`LOOP_TIMEOUT_SECONDS` gives 503.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import orjson
import structlog

from inlet.core.control import ACTIONS, Action
from inlet.core.errors import ConfigError
from inlet.core.health import Response
from inlet.core.secrets import resolve_secret

if TYPE_CHECKING:
    from inlet.core.config import SupervisorConfig
    from inlet.core.supervisor import Supervisor

__all__ = ["LOOP_TIMEOUT_SECONDS", "OPENAPI", "ROUTES", "Api", "api_token", "openapi_routes"]

log = structlog.get_logger("inlet.api")

LOOP_TIMEOUT_SECONDS = 10.0
"""How long a request waits for the supervisor's event loop."""

_T = TypeVar("_T")
_JSON = "application/json"
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_ENABLE_HINT = (
    "actions are disabled: no API token is configured; set INLET_API_TOKEN (or api.token_file in inlet.yaml) "
    "for `inlet run`, and pass the same token to `inlet pause|resume|restart` and `inlet monitors --reset`"
)

ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/status"),
    ("GET", "/api/integrations"),
    ("GET", "/api/integrations/{customer}/{integration}"),
    ("POST", "/api/integrations/{customer}/{integration}/pause"),
    ("POST", "/api/integrations/{customer}/{integration}/resume"),
    ("POST", "/api/integrations/{customer}/{integration}/restart"),
    ("GET", "/api/contracts"),
    ("GET", "/api/topics"),
    ("GET", "/api/monitors"),
    ("GET", "/api/monitors/{customer}/{integration}"),
    ("POST", "/api/monitors/{customer}/{integration}/reset"),
    ("GET", "/api/openapi.json"),
    ("GET", "/console"),
    ("GET", "/console/{customer}/{integration}"),
)
"""Every route the metrics port answers (``core.health`` serves the first three); :data:`OPENAPI` documents
exactly these (a test keeps the two equal)."""


def api_token(cfg: SupervisorConfig) -> str | None:
    """The actions' bearer token: ``INLET_API_TOKEN``, else the file ``api.token_file``; None: actions disabled.
    The value is remembered as a secret (``core.secrets``), so no log line shows it."""
    try:
        if os.environ.get("INLET_API_TOKEN"):
            return resolve_secret({"env": "INLET_API_TOKEN"}).get_secret_value()
        if cfg.api.token_file:
            return resolve_secret({"file": cfg.api.token_file}).get_secret_value()
    except ValueError as exc:
        raise ConfigError(str(exc), file="inlet.yaml", key="api.token_file") from None
    return None


def _json(code: int, doc: Any) -> Response:
    return code, _JSON, orjson.dumps(doc, option=orjson.OPT_INDENT_2), _HEADERS


def _error(code: int, message: str, **extra: str) -> Response:
    return code, _JSON, orjson.dumps({"error": message}), {**_HEADERS, **extra}


_SEGMENT = re.compile(r"^[^/]+$")


class Api:
    """The ``app`` of the supervisor's :class:`~core.health.HealthServer`: routes ``/api/*`` and ``/console*``."""

    def __init__(self, supervisor: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        self.supervisor = supervisor
        self.loop = loop
        self.token = api_token(supervisor.cfg)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        async def call() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=LOOP_TIMEOUT_SECONDS)

    def _key(self, customer: str, integration: str) -> str | None:
        key = f"{unquote(customer)}/{unquote(integration)}"
        return key if key in self.supervisor.stats else None

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response | None:
        """The response for ``method path``, or None for the probes' paths (and unknown ones outside ours)."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        parts = path.split("/")[1:]
        if not parts or parts[0] not in ("api", "console"):
            return None
        if not all(_SEGMENT.match(p) for p in parts):
            return _error(404, f"not found: {path}; see /api/openapi.json")
        try:
            if parts[0] == "console":
                return self._console(method, parts[1:])
            return self._api(method, parts[1:], headers)
        except TimeoutError:
            return _error(503, f"the supervisor's event loop did not answer within {LOOP_TIMEOUT_SECONDS:g} s")
        except RuntimeError as exc:  # the loop has closed: the run is ending
            return _error(503, f"the supervisor is stopping: {exc}")

    def _api(self, method: str, parts: list[str], headers: Mapping[str, str]) -> Response:
        from inlet.core import status

        sup = self.supervisor
        if len(parts) == 4 and parts[0] == "integrations" and parts[3] in ACTIONS:
            if method != "POST":
                return _error(405, f"{parts[3]} is a POST", Allow="POST")
            return self._act(parts[1], parts[2], parts[3], headers)
        if len(parts) == 4 and parts[0] == "monitors" and parts[3] == "reset":
            if method != "POST":
                return _error(405, "reset is a POST", Allow="POST")
            return self._reset(parts[1], parts[2], headers)
        if method != "GET":
            message = "read-only: only the actions (pause, resume, restart, and a monitors reset) take a POST"
            return _error(405, message, Allow="GET")
        if parts == ["status"]:
            return _json(200, self._on_loop(lambda: status.snapshot(sup)))
        if parts == ["integrations"]:
            return _json(200, self._on_loop(lambda: status.snapshot(sup, recent=False)))
        if len(parts) == 3 and parts[0] == "integrations":
            key = self._key(parts[1], parts[2])
            if key is None:
                return _error(404, f"no integration {unquote(parts[1])}/{unquote(parts[2])} in this run")
            why = self._on_loop(sup.status).get(key)
            return _json(200, self._on_loop(lambda: status.integration_status(sup, key, why=why)))
        if parts == ["contracts"]:
            return _json(200, {"contracts": self._on_loop(lambda: status.contracts(sup))})
        if parts == ["topics"]:
            return _json(200, {"topics": self._on_loop(lambda: status.topics(sup))})
        if parts == ["monitors"]:
            return _json(200, self._on_loop(lambda: status.monitors(sup)))
        if len(parts) == 3 and parts[0] == "monitors":
            unit = f"{unquote(parts[1])}/{unquote(parts[2])}"

            def one() -> tuple[dict[str, Any] | None, str]:
                doc = status.unit_monitors(sup, unit)
                return doc, "" if doc is not None else status.no_monitors_reason(sup, unit)

            doc, why_not = self._on_loop(one)
            return _json(200, doc) if doc is not None else _error(404, why_not)
        if parts == ["openapi.json"]:
            return _json(200, OPENAPI)
        return _error(404, f"not found: /api/{'/'.join(parts)}; see /api/openapi.json")

    def _refused(self, headers: Mapping[str, str]) -> Response | None:
        """The answer to an action without the API token (401 none given, 403 a wrong one or none configured)."""
        if self.token is None:
            return _error(403, _ENABLE_HINT)
        given = headers.get("authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return _error(401, "an action needs Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
            return _error(403, "the bearer token is not the API token")
        return None

    def _act(self, customer: str, integration: str, action: Action, headers: Mapping[str, str]) -> Response:
        if (refused := self._refused(headers)) is not None:
            return refused
        key = self._key(customer, integration)
        if key is None:
            return _error(404, f"no integration {unquote(customer)}/{unquote(integration)} in this run")
        control, stats = self.supervisor.controls[key], self.supervisor.stats[key]

        def apply() -> str:
            before = stats.state
            control.apply(action)
            log.info(
                f"integration {action} asked by an operator", customer=stats.customer, integration=stats.integration
            )
            return before

        before = self._on_loop(apply)
        return _json(202, {"key": key, "action": action, "accepted": True, "state_before": before})

    def _reset(self, customer: str, integration: str, headers: Mapping[str, str]) -> Response:
        """Forget a unit's monitor baselines (``Supervisor.reset_monitors``); 404 saying why it has no monitors."""
        from inlet.core import status

        if (refused := self._refused(headers)) is not None:
            return refused
        sup, key = self.supervisor, f"{unquote(customer)}/{unquote(integration)}"

        async def reset() -> int | str:
            try:
                return await sup.reset_monitors(key)
            except KeyError:
                return status.no_monitors_reason(sup, key)

        done = asyncio.run_coroutine_threadsafe(reset(), self.loop)
        try:
            cleared = done.result(timeout=LOOP_TIMEOUT_SECONDS)
        except TimeoutError:  # a slow sink, or a busy loop: the reset is queued or done, only its answer is late
            message = f"the reset of {key} did not finish within {LOOP_TIMEOUT_SECONDS:g} s; it goes on"
            return _error(503, f"{message}: `inlet monitors {key}` shows when it is learning again")
        return _json(202, {"key": key, "cleared": cleared}) if isinstance(cleared, int) else _error(404, cleared)

    def _console(self, method: str, parts: list[str]) -> Response:
        from inlet.core import console, status

        if method != "GET":
            return _error(405, "the console is read-only", Allow="GET")
        sup = self.supervisor
        if not parts:
            doc = self._on_loop(lambda: status.snapshot(sup, recent=False))
            return 200, "text/html; charset=utf-8", console.render_overview(doc).encode(), console.HEADERS
        if len(parts) == 2:
            key = self._key(parts[0], parts[1])
            if key is None:
                page = console.render_missing(f"{unquote(parts[0])}/{unquote(parts[1])}")
                return 404, "text/html; charset=utf-8", page.encode(), console.HEADERS
            why = self._on_loop(sup.status).get(key)
            item = self._on_loop(lambda: status.integration_status(sup, key, why=why))
            monitors = self._on_loop(lambda: status.unit_monitors(sup, key))
            page = console.render_integration(item, monitors)
            return 200, "text/html; charset=utf-8", page.encode(), console.HEADERS
        return _error(404, f"not found: /console/{'/'.join(parts)}")


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}, "description": f"the {n} name"}
        for n in names
    ]


def _ok(description: str, schema: dict[str, Any], content: str = _JSON) -> dict[str, Any]:
    return {"description": description, "content": {content: {"schema": schema}}}


_ERROR = {"$ref": "#/components/schemas/Error"}
_NOT_FOUND = {"404": _ok("No such integration in this run", _ERROR)}
_TOKEN_REFUSED = {
    "401": _ok("No bearer token given", _ERROR),
    "403": _ok("Wrong token, or actions disabled (no token configured)", _ERROR),
}
_NO_MONITORS = {"404": _ok("Not in this run, not running here, or its monitors are off (the error says which)", _ERROR)}


def _action(verb: str, what: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{verb} one integration",
            "description": what,
            "operationId": f"{verb.lower()}Integration",
            "security": [{"bearer": []}],
            "parameters": _path_params("customer", "integration"),
            "responses": {
                "202": _ok(
                    "Accepted: the integration's state changes shortly", {"$ref": "#/components/schemas/Accepted"}
                ),
                **_TOKEN_REFUSED,
                **_NOT_FOUND,
            },
        }
    }


_COUNTS = {
    "type": "object",
    "properties": {k: {"type": "integer"} for k in ("records_in", "events_out", "dlq", "filtered")},
    "required": ["records_in", "events_out", "dlq", "filtered"],
}
_NULL_STR = {"type": ["string", "null"]}
_NULL_NUM = {"type": ["number", "null"]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "inlet operations API",
        "version": "1.0.0",
        "description": "Served by `inlet run` on its metrics port (metrics_host:metrics_port, loopback by default).",
    },
    "paths": {
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {"200": _ok("Prometheus text format", {"type": "string"}, "text/plain")},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the event loop is alive",
                "operationId": "healthz",
                "responses": {
                    "200": _ok("Alive", {"$ref": "#/components/schemas/Health"}),
                    "503": _ok("The event loop is wedged", {"$ref": "#/components/schemas/Health"}),
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: every integration healthy",
                "operationId": "readyz",
                "responses": {
                    "200": _ok("Ready", {"$ref": "#/components/schemas/Ready"}),
                    "503": _ok(
                        "Not ready; the unhealthy integrations with why", {"$ref": "#/components/schemas/Ready"}
                    ),
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "The whole status document",
                "operationId": "status",
                "responses": {"200": _ok("Status", {"$ref": "#/components/schemas/Status"})},
            }
        },
        "/api/integrations": {
            "get": {
                "summary": "Every integration's status (recent_dlq left empty: see one integration)",
                "operationId": "listIntegrations",
                "responses": {"200": _ok("Status", {"$ref": "#/components/schemas/Status"})},
            }
        },
        "/api/integrations/{customer}/{integration}": {
            "get": {
                "summary": "One integration's status, with its recent DLQ records",
                "operationId": "getIntegration",
                "parameters": _path_params("customer", "integration"),
                "responses": {"200": _ok("Status", {"$ref": "#/components/schemas/Integration"}), **_NOT_FOUND},
            }
        },
        "/api/integrations/{customer}/{integration}/pause": _action(
            "Pause", "Stop reading once the in-flight batches are committed; no new upstream request until resumed."
        ),
        "/api/integrations/{customer}/{integration}/resume": _action(
            "Resume", "Read on from the checkpoint a pause left."
        ),
        "/api/integrations/{customer}/{integration}/restart": _action(
            "Restart", "Close the connector (in-flight batches committed) and start it again now, from the checkpoint."
        ),
        "/api/contracts": {
            "get": {
                "summary": "The contracts the integrations publish",
                "operationId": "listContracts",
                "responses": {
                    "200": _ok(
                        "Contracts",
                        {
                            "type": "object",
                            "properties": {
                                "contracts": {"type": "array", "items": {"$ref": "#/components/schemas/Contract"}}
                            },
                        },
                    )
                },
            }
        },
        "/api/topics": {
            "get": {
                "summary": "The Kafka topics the integrations write (contract, DLQ, drift)",
                "operationId": "listTopics",
                "responses": {
                    "200": _ok(
                        "Topics",
                        {
                            "type": "object",
                            "properties": {
                                "topics": {"type": "array", "items": {"$ref": "#/components/schemas/Topic"}}
                            },
                        },
                    )
                },
            }
        },
        "/api/monitors": {
            "get": {
                "summary": "The data-quality monitors of every integration running here: baselines, current window, "
                "open alerts",
                "operationId": "listMonitors",
                "responses": {"200": _ok("Monitors", {"$ref": "#/components/schemas/Monitors"})},
            }
        },
        "/api/monitors/{customer}/{integration}": {
            "get": {
                "summary": "One integration's data-quality monitors (a slot: integration#slot)",
                "operationId": "getMonitors",
                "parameters": _path_params("customer", "integration"),
                "responses": {
                    "200": _ok("Monitors", {"$ref": "#/components/schemas/Monitor"}),
                    **_NO_MONITORS,
                },
            }
        },
        "/api/monitors/{customer}/{integration}/reset": {
            "post": {
                "summary": "Forget one integration's data-quality baselines (a slot: integration#slot)",
                "description": "For an intended change: its open alerts clear (published as cleared, saying so) and "
                "it learns again for learn_seconds.",
                "operationId": "resetMonitors",
                "security": [{"bearer": []}],
                "parameters": _path_params("customer", "integration"),
                "responses": {
                    "202": _ok(
                        "Reset: learning again",
                        {
                            "type": "object",
                            "properties": {
                                "key": {"type": "string"},
                                "cleared": {"type": "integer", "description": "the open alerts it cleared"},
                            },
                            "required": ["key", "cleared"],
                        },
                    ),
                    **_TOKEN_REFUSED,
                    **_NO_MONITORS,
                    "503": _ok(
                        "Not finished in time; it goes on (GET /api/monitors/{customer}/{integration} says when "
                        "it learns again)",
                        _ERROR,
                    ),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/console": {
            "get": {
                "summary": "Web console: every integration",
                "operationId": "console",
                "responses": {"200": _ok("HTML page", {"type": "string"}, "text/html")},
            }
        },
        "/console/{customer}/{integration}": {
            "get": {
                "summary": "Web console: one integration, its DLQ reasons and recent DLQ records",
                "operationId": "consoleIntegration",
                "parameters": _path_params("customer", "integration"),
                "responses": {
                    "200": _ok("HTML page", {"type": "string"}, "text/html"),
                    "404": _ok("No such integration", {"type": "string"}, "text/html"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "INLET_API_TOKEN or the file api.token_file of inlet.yaml",
            }
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "Accepted": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "action": {"enum": list(ACTIONS)},
                    "accepted": {"type": "boolean"},
                    "state_before": {"type": "string"},
                },
            },
            "Health": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "heartbeat_age_s": {"type": "number"}},
            },
            "Ready": {
                "type": "object",
                "properties": {
                    "ready": {"type": "boolean"},
                    "unhealthy": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "Status": {
                "type": "object",
                "properties": {
                    "ready": {"type": "boolean"},
                    "unhealthy": {"type": "object", "additionalProperties": {"type": "string"}},
                    "generated_at": {"type": "string", "format": "date-time"},
                    "sink": {"enum": ["kafka", "outbox"]},
                    "replica": {"type": "string", "description": "this supervisor's name in a fleet"},
                    "fleet": {"type": ["string", "null"], "description": "the fleet's consumer group; null: none"},
                    "integrations": {"type": "array", "items": {"$ref": "#/components/schemas/Integration"}},
                    "contracts": {"type": "array", "items": {"$ref": "#/components/schemas/Contract"}},
                },
                "required": ["ready", "integrations", "contracts"],
            },
            "Integration": {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "description": "customer/integration, or customer/integration#slot"},
                    "customer": {"type": "string"},
                    "integration": {"type": "string"},
                    "plugin": {"type": "string"},
                    "state": {
                        "enum": [
                            "running",
                            "backing_off",
                            "failed",
                            "paused",
                            "caught_up",
                            "stopped",
                            "elsewhere",
                            "fenced",
                        ]
                    },
                    "replica": {
                        "type": ["string", "null"],
                        "description": "the replica running it: this one, or null when it runs elsewhere in the fleet",
                    },
                    "healthy": {"type": "boolean"},
                    "unhealthy_reason": _NULL_STR,
                    "last_success": {"type": ["string", "null"], "format": "date-time"},
                    "lag_seconds": _NULL_NUM,
                    "watermark": _NULL_STR,
                    "watermark_age_seconds": _NULL_NUM,
                    "counts": _COUNTS,
                    "dlq_by_stage": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "filtered_by_reason": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "batches": {"type": "integer"},
                    "events_per_second": {"type": "number"},
                    "dlq_reasons": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "stage": {"type": "string"},
                                "error_type": {"type": "string"},
                                "message": {"type": "string"},
                                "count": {"type": "integer"},
                            },
                        },
                    },
                    "restarts": {"type": "integer"},
                    "last_error": _NULL_STR,
                    "recent_dlq": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "at": {"type": "string", "format": "date-time"},
                                "stage": {"type": "string"},
                                "error_type": {"type": "string"},
                                "message": {"type": "string"},
                                "payload_preview": {"type": "string"},
                                "payload_bytes": {"type": "integer"},
                            },
                        },
                    },
                    "drift_alerts": {"type": "array", "items": {"type": "object"}},
                    "open_alerts": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/DataAlert"},
                        "description": "the data-quality alerts open now, oldest first (empty: none, or monitors off)",
                    },
                },
                "required": ["key", "state", "counts", "dlq_reasons", "restarts", "open_alerts"],
            },
            "DataAlert": {
                "type": "object",
                "description": "An event of the inlet.data_alert v1 contract, as published when the alert opened",
                "properties": {
                    "alert_id": {"type": "string"},
                    "status": {"enum": ["open", "cleared"]},
                    "customer": {"type": "string"},
                    "integration": {"type": "string"},
                    "monitor": {"enum": ["volume", "freshness", "numeric", "categorical", "nulls"]},
                    "check": {
                        "enum": [
                            "volume_drop",
                            "volume_spike",
                            "silence",
                            "lag",
                            "level_shift",
                            "share_change",
                            "null_rate",
                        ]
                    },
                    "contract": _NULL_STR,
                    "field": _NULL_STR,
                    "series": _NULL_STR,
                    "measure": {"enum": ["events", "seconds", "value", "share"]},
                    "expected": {"type": "number"},
                    "seen": {"type": "number"},
                    "window_start": {"type": "string", "format": "date-time"},
                    "window_end": {"type": "string", "format": "date-time"},
                    "observed_at": {"type": "string", "format": "date-time"},
                    "detail": {"type": "string"},
                },
                "required": ["alert_id", "status", "monitor", "check", "measure", "expected", "seen", "detail"],
            },
            "Monitors": {
                "type": "object",
                "properties": {
                    "generated_at": {"type": "string", "format": "date-time"},
                    "replica": {"type": "string"},
                    "monitors": {"type": "array", "items": {"$ref": "#/components/schemas/Monitor"}},
                },
                "required": ["monitors"],
            },
            "Monitor": {
                "type": "object",
                "description": "One running unit's monitors: each baseline and the window in progress",
                "properties": {
                    "key": {"type": "string", "description": "customer/integration, or customer/integration#slot"},
                    "customer": {"type": "string"},
                    "integration": {"type": "string"},
                    "learning": {"type": "boolean", "description": "no alert until learning_until"},
                    "learning_until": {"type": ["string", "null"], "format": "date-time"},
                    "window": {
                        "type": "object",
                        "properties": {
                            "start": {"type": "string", "format": "date-time"},
                            "seconds": {"type": "number"},
                            "events": {"type": "integer"},
                        },
                    },
                    "volume": {
                        "type": "object",
                        "properties": {"expected_in_window": _NULL_NUM, "baseline_per_hour": _NULL_NUM},
                    },
                    "freshness": {
                        "type": "object",
                        "properties": {
                            "last_event_at": {"type": ["string", "null"], "format": "date-time"},
                            "lag_baseline_seconds": _NULL_NUM,
                            "lag_window_median_seconds": _NULL_NUM,
                        },
                    },
                    "numeric": {
                        "type": "array",
                        "description": "at most 200 series (numeric_series counts them all)",
                        "items": {
                            "type": "object",
                            "properties": {
                                "contract": {"type": "string"},
                                "field": {"type": "string"},
                                "series": {"type": "string"},
                                "baseline": {
                                    "type": ["object", "null"],
                                    "properties": {"median": _NULL_NUM, "p05": _NULL_NUM, "p95": _NULL_NUM},
                                },
                                "windows_learnt": {"type": "integer"},
                                "window": {
                                    "type": "object",
                                    "properties": {"values": {"type": "integer"}, "median": _NULL_NUM},
                                },
                            },
                        },
                    },
                    "numeric_series": {"type": "integer"},
                    "shares": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "monitor": {"enum": ["categorical", "nulls"]},
                                "contract": {"type": "string"},
                                "field": {"type": "string"},
                                "baseline": {
                                    "type": "object",
                                    "additionalProperties": {"type": "number"},
                                    "description": "the top 20 codes (nulls: null) and their share, 0..1",
                                },
                                "window": {
                                    "type": "object",
                                    "properties": {
                                        "events": {"type": "integer"},
                                        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                                    },
                                },
                            },
                        },
                    },
                    "open_alerts": {"type": "array", "items": {"$ref": "#/components/schemas/DataAlert"}},
                },
                "required": ["key", "learning", "window", "volume", "freshness", "numeric", "shares", "open_alerts"],
            },
            "Contract": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "topic": {"type": "string"},
                    "integrations": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Topic": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"enum": ["contract", "dlq", "drift"]},
                    "partitions": {"type": "integer"},
                    "writers": {"type": "array", "items": {"type": "string"}},
                    "contracts": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
"""The OpenAPI 3.1 document of every route on the metrics port (``GET /api/openapi.json``)."""


def openapi_routes() -> set[tuple[str, str]]:
    """``(METHOD, path template)`` of every operation :data:`OPENAPI` documents."""
    return {(m.upper(), p) for p, ops in OPENAPI["paths"].items() for m in ops}
