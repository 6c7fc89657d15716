"""What the fixture-recording tools share: pointing a recording at the configured upstream.

The tools record against local test servers on random ports; the committed fixture must read as if it came
from the configured upstream, so that replay pages and polls exactly as it would against the real system
(same origin, same paths). :func:`rewrite_origins` is the ``redact`` hook that does it;
:func:`record_from_fhir_server` is the whole FHIR search case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from inlet.core.config import LoadedIntegration
from inlet.core.fixtures import record
from tools.servers.fhir import FhirTestServer

__all__ = ["origin", "record_from_fhir_server", "rewrite_origins"]


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    return str(httpx.URL(url).copy_with(path="/"))[:-1]


def rewrite_origins(pairs: Iterable[tuple[str, str]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A ``redact`` hook replacing each test-server origin by the configured one, everywhere in an exchange."""
    swaps = [(old.encode(), new.encode()) for old, new in pairs]

    def redact(doc: dict[str, Any]) -> dict[str, Any]:
        raw = orjson.dumps(doc)
        for old, new in swaps:
            raw = raw.replace(old, new)
        return orjson.loads(raw)  # type: ignore[no-any-return]

    return redact


def record_from_fhir_server(item: LoadedIntegration, resources: list[Any], fixtures: Path) -> int:
    """Serve ``resources`` from a fresh FHIR test server and record ``item`` from it; the golden events."""
    with FhirTestServer(resources) as server:
        configured: Any = item.settings
        redact = rewrite_origins([(origin(server.base_url), origin(configured.http.base_url))])
        http = configured.http.model_copy(update={"base_url": server.base_url, "replay": None})
        live = replace(item, settings=configured.model_copy(update={"http": http}))
        return record(live, fixtures, redact=redact, replay_as=item)
