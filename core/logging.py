"""structlog set-up: JSON lines in production, readable on a TTY, secrets masked in every line.

The masking processor runs last before rendering, on the rendered-to-be values, so a secret that
ends up inside an exception message or a URL is blanked too (core.secrets knows every resolved value).

Per integration: the supervisor runs each integration in a task of its own and calls :func:`bind_integration`
there, so every line logged in that task — by the connector, the HTTP client, the rate limiter, the pipeline —
carries ``customer``, ``integration`` and (when the integration produces one) ``contract``, and
:func:`bind_position` adds the last committed ``position`` (its scalar values) after each batch. An integration's
``log_level`` overrides ``INLET_LOG_LEVEL`` for the lines of its task: :func:`allow_level` lowers the process's
floor to the most verbose level configured, and a processor drops each line below its integration's level.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO, cast

import structlog

from inlet.core.secrets import known_secrets, mask

__all__ = [
    "LEVELS",
    "allow_level",
    "bind_integration",
    "bind_position",
    "configure_logging",
    "mask_secrets",
]

LEVELS = ("debug", "info", "warning", "error")
"""The levels ``INLET_LOG_LEVEL`` and an integration's ``log_level`` take."""

_NUMBERS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "err": 40, "exception": 40}
_NUMBERS |= {"critical": 50, "fatal": 50}
_process = {"level": 20}  # INLET_LOG_LEVEL, as configured last
_task_level: ContextVar[int | None] = ContextVar("inlet_log_level", default=None)
_POSITION_VALUE_CHARS = 120


class _Stderr:
    """``sys.stderr`` as it is at each write, not as it was at configuration: a progress display (rich) or a
    test's capture that swaps ``sys.stderr`` gets the log lines too."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace every known secret value in every string field with ``***``."""
    if not known_secrets():
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask(value)
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = mask(str(value))
    return event


def _by_level(_logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop a line below its integration's level (the process's level outside one)."""
    wanted = _task_level.get()
    if _NUMBERS.get(name, 20) < (_process["level"] if wanted is None else wanted):
        raise structlog.DropEvent
    return event


def _number(level: str) -> int:
    return _NUMBERS.get(level.lower(), 20)


def _set_floor(level: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(min(level, _process["level"])))


def current_level() -> str:
    """The level name configured last (``INFO`` before any): what a child process is configured with."""
    return logging.getLevelName(_process["level"])


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for the process; ``INLET_LOG_LEVEL`` / ``INLET_LOG_FORMAT`` override."""
    level = (level or os.environ.get("INLET_LOG_LEVEL", "info")).upper()
    fmt = os.environ.get("INLET_LOG_FORMAT")
    if json is None:
        json = fmt == "json" or (fmt is None and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    _process["level"] = logging.getLevelNamesMapping().get(level, 20)
    structlog.configure(
        processors=[
            _by_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=False,
    )
    _set_floor(_process["level"])
    # aiokafka logs through stdlib logging; keep its noise out of the way (its errors still show).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)


def allow_level(levels: Iterable[str | None]) -> None:
    """Let lines as verbose as the most verbose of ``levels`` (integrations' ``log_level``) through the process's
    filter; each integration's own level then applies in its task (:func:`bind_integration`)."""
    _set_floor(min((_number(level) for level in levels if level), default=_process["level"]))


def bind_integration(
    customer: str, integration: str, *, contract: str | None = None, log_level: str | None = None
) -> None:
    """Bind an integration's names (and its contract, when it has one) to every line of the current task and of
    the tasks it starts, and apply its ``log_level`` there. Call it at the top of the integration's own task."""
    names: dict[str, Any] = {"customer": customer, "integration": integration}
    if contract is not None:
        names["contract"] = contract
    structlog.contextvars.bind_contextvars(**names)
    _task_level.set(None if log_level is None else _number(log_level))


def bind_position(position: object) -> None:
    """Bind the last committed position to the lines of the current task: its scalar values (long strings cut,
    URLs left out — a status or next link may carry a token), nested mappings one level deep as ``a.b``."""
    shown: dict[str, Any] = {}
    if isinstance(position, dict):
        for key, value in position.items():
            items = value.items() if isinstance(value, dict) else ((None, value),)
            for sub, v in items:
                if isinstance(v, str):
                    if "://" in v:
                        continue
                    shown_v: object = v if len(v) <= _POSITION_VALUE_CHARS else v[: _POSITION_VALUE_CHARS - 1] + "…"
                elif v is None or isinstance(v, int | float | bool):
                    shown_v = v
                else:
                    continue
                shown[str(key) if sub is None else f"{key}.{sub}"] = shown_v
    elif isinstance(position, str | int | float):
        shown["value"] = position
    structlog.contextvars.bind_contextvars(position=shown)
