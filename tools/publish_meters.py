"""Play a meter hub: publish the project's generated meter traffic to an MQTT broker at QoS 1.

For the "new meter hub" tutorial (docs/tutorials/new-meter-hub.md) and for trying an MQTT integration by hand
against a local Mosquitto (``python -m tools.services mosquitto``). The traffic is generated
(``connectors.mqtt_meter.synth``: ``municipal`` — Tasmota and Shelly frames of one morning; ``grid`` —
Sparkplug B substation RTUs), never third-party data, and published with the same helper the fixture
recorder uses (``tools.record_meters.publish``: every PUBACK awaited, so the broker has it all, in order).

A hub's traffic only waits for an integration that has a persistent session on the broker. Given an
integration key (and its config directory), this creates that session first — the client id and
subscriptions the integration itself uses (``inlet.core.mqtt.create_session``) — so what is published
now is queued for ``inlet record`` or ``inlet run`` to drain later::

    python -m tools.publish_meters city-power/meters --config hubs     # session of that integration, then publish
    python -m tools.publish_meters --url mqtt://127.0.0.1:1883 --traffic grid   # just publish
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inlet.connectors.mqtt_meter.synth import Message, grid_traffic, municipal_traffic
from inlet.core.config import load_config
from inlet.core.errors import ConfigError
from inlet.core.logging import configure_logging
from inlet.core.mqtt import create_session, share_group
from tools.record_meters import publish

__all__ = ["main", "session_for", "traffic"]


def traffic(kind: str, steps: int | None = None, seed: int | None = None) -> list[Message]:
    """The generated messages of ``kind`` (``municipal`` or ``grid``); ``steps``/``seed`` as synth takes them."""
    options: dict[str, Any] = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
    if kind == "municipal":
        return municipal_traffic(**options)
    if kind == "grid":
        return grid_traffic(**options)
    raise ValueError(f"unknown traffic {kind!r}: municipal or grid")


def session_for(key: str, config: Path) -> tuple[str, str]:
    """Create the persistent session of integration ``key`` in ``config`` (of each of its ``slots``); its broker
    URL and client id(s)."""
    _, [item] = load_config(config, only=[key])
    mqtt_settings: Any = getattr(item.settings, "mqtt", None)
    if mqtt_settings is None:
        raise ConfigError(f"{key} is not an MQTT integration (its settings have no mqtt section)", file=str(item.file))
    # The client id the MQTT meter family connects with; the session (and its queue) belongs to it.
    cfg = item.config
    client_id = mqtt_settings.client_id or f"inlet-{cfg.customer}-{cfg.integration}"
    group = share_group(mqtt_settings, cfg.customer, cfg.integration)
    client_ids = create_session(mqtt_settings, client_id, slots=cfg.slots, group=group)
    return str(mqtt_settings.url), ", ".join(client_ids)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.publish_meters", description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "integration",
        nargs="?",
        metavar="CUSTOMER/INTEGRATION",
        help="create this integration's persistent session first (needs --config)",
    )
    parser.add_argument("--config", type=Path, help="the config directory holding that integration")
    parser.add_argument("--url", help="broker to publish to (default: the integration's mqtt.url)")
    parser.add_argument("--traffic", choices=("municipal", "grid"), default="municipal")
    parser.add_argument("--steps", type=int, help="how much traffic (synth's steps; default: synth's)")
    parser.add_argument("--seed", type=int, help="generator seed (default: synth's)")
    args = parser.parse_args(argv)
    configure_logging()  # structured lines on stderr at INLET_LOG_LEVEL, like inlet's own commands
    if args.integration is None and args.url is None:
        parser.error("give an integration (with --config) or --url")
    url = args.url
    try:
        if args.integration is not None:
            if args.config is None:
                parser.error("an integration needs --config DIR")
            session_url, client_id = session_for(args.integration, args.config)
            url = url or session_url
            print(f"session {client_id} ready on {session_url}")
        if not re.fullmatch(r"mqtt://[^:/]+:[0-9]+", url):
            parser.error(f"broker {url}: this publisher speaks plain mqtt://host:port only")
        messages = traffic(args.traffic, args.steps, args.seed)
        publish(url, messages)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"published {len(messages)} messages ({args.traffic} traffic) to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
