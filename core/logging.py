"""structlog set-up: JSON lines in production, readable on a TTY, secrets masked in every line.

The masking processor runs last before rendering, on the rendered-to-be values, so a secret that
ends up inside an exception message or a URL is blanked too (core.secrets knows every resolved value).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from inlet.core.secrets import known_secrets, mask

__all__ = ["configure_logging", "mask_secrets"]


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


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for the process; ``INLET_LOG_LEVEL`` / ``INLET_LOG_FORMAT`` override."""
    level = (level or os.environ.get("INLET_LOG_LEVEL", "info")).upper()
    fmt = os.environ.get("INLET_LOG_FORMAT")
    if json is None:
        json = fmt == "json" or (fmt is None and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping().get(level, 20)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through stdlib logging; keep its noise out of the way (its errors still show).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
