"""``inlet relay``: ship the embedded outbox to Kafka (the move from the embedded default to Kafka).

Kept apart from :mod:`inlet.core.cli` like the plugin commands; registered there as ``relay``. It reads only
``inlet.yaml`` (Kafka settings, state dir, the ``relay:`` and ``topics:`` sections, the DLQ topic template): no
plugin, setting or integration secret is needed. Before shipping, the topics the outbox rows target get the
supervisor's start-up check (``core.topics``); a row Kafka refuses for good goes to its integration's DLQ topic.

Exit codes: 0 — shipped (``--once``: everything that was there) or stopped by a signal; 1 — another relay holds
the outbox, Kafka refused inlet (credentials, certificates, authorization: not retried) or, ``--once``, kept
failing; 2 — the configuration is wrong, or topics are missing and ``topics.create`` does not create them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from inlet.core.cli_common import config_dir, err, fail_config, out, supervisor_only
from inlet.core.config import SupervisorConfig
from inlet.core.errors import ConfigError

__all__ = ["relay_cmd"]


def _supervisor_config(config: Path | None) -> tuple[SupervisorConfig, Path]:
    root = config_dir(config).resolve()
    return supervisor_only(root), root


def relay_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="INLET_CONFIG",
            help="Config directory (inlet.yaml); default: the nearest folder up with an inlet.yaml",
        ),
    ] = None,
    once: Annotated[bool, typer.Option(help="Ship what the outbox holds now, then stop")] = False,
) -> None:
    """Ship the outbox's events and DLQ records to Kafka in order, then follow new ones (until SIGTERM).

    Same topic, key, value and headers (event ids unchanged); a row counts as shipped once Kafka acknowledged
    it and every row before it. A row Kafka refuses for good (too large, a topic it will not take) goes to its
    integration's DLQ topic instead. Kafka comes from inlet.yaml's kafka: or INLET_KAFKA_BOOTSTRAP; pruning and
    paging from its relay: section; missing topics are created or refused as its topics: section says. Exit 1
    when another relay holds the outbox, Kafka refuses inlet, or (--once) Kafka keeps failing; 2 on a
    configuration problem or missing topics.
    """
    from inlet.core.logging import configure_logging
    from inlet.core.relay import Relay, RelayBusy, RelayError, RelayRefused
    from inlet.core.supervisor import state_dir

    configure_logging()
    sup_cfg, root = _supervisor_config(config)
    if sup_cfg.kafka is None:
        err.print("no Kafka to relay to: set kafka.bootstrap in inlet.yaml or INLET_KAFKA_BOOTSTRAP")
        raise typer.Exit(2)
    outbox = state_dir(sup_cfg) / "outbox.sqlite"
    if once and not outbox.exists():
        err.print(f"no outbox at {outbox}: nothing to relay")
        raise typer.Exit(1)
    relay = Relay.from_config(sup_cfg, outbox, config_dir=root)
    err.print(
        f"inlet: relaying {outbox} to Kafka at {sup_cfg.kafka.bootstrap}"
        + (" (what is there now)" if once else " (following; Ctrl-C or SIGTERM stops)")
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await relay.run(stop, once=once, max_failures=3 if once else None)

    started = time.monotonic()
    failed: str | None = None
    verdict = "relay failed"
    try:
        asyncio.run(main())
    except RelayBusy as exc:
        err.print(f"[bold red]relay not started:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except RelayRefused as exc:
        failed, verdict = str(exc), "relay stopped: Kafka refused it"
    except RelayError as exc:
        failed = str(exc)
    except ConfigError as exc:  # topics missing on Kafka and not created (core.topics)
        fail_config([exc])
    p = relay.progress
    out.print(
        f"relay: shipped {p.shipped} event(s) in {time.monotonic() - started:.1f} s"
        + (f" ({p.dead_lettered} refused by Kafka, as DLQ records)" if p.dead_lettered else "")
        + f"; {p.remaining} remaining; watermark seq {p.watermark}; pruned {p.pruned}",
        highlight=False,
    )
    if failed is not None:
        err.print(f"[bold red]{verdict}:[/] {failed}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
