"""One replica's config directory of a fleet, for the fleet tests and ``bench/bench_fleet.py``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["fleet_roots", "write_fleet_config"]


def write_fleet_config(
    root: Path,
    *,
    kafka: str,
    prefix: str,
    group: str,
    replica: str,
    integrations: Sequence[dict[str, Any]],
    session_timeout_seconds: float = 6.0,
    request_timeout_ms: int | None = 5000,
    fleet: dict[str, Any] | None = None,
    **supervisor: Any,
) -> Path:
    """One replica's config directory: ``integrations`` (each a full integration YAML document) in fleet
    ``group``, topics under ``prefix`` (DLQ ``<prefix>dlq``, positions ``<prefix>positions``), its own state dir,
    quick restarts; ``fleet`` and ``supervisor`` add or override keys of ``fleet:`` and of ``inlet.yaml``.
    Replicas of one fleet get the same integrations and group in different roots."""
    (root / "integrations").mkdir(parents=True, exist_ok=True)
    kafka_settings: dict[str, Any] = {"bootstrap": kafka}
    if request_timeout_ms is not None:
        kafka_settings["request_timeout_ms"] = request_timeout_ms
    sup = {
        "state_dir": str(root / "state"),
        "restart_backoff_initial_seconds": 0.2,
        "restart_backoff_max_seconds": 2.0,
        "topic_template": prefix + "{name}.v{major}",
        "dlq_topic_template": prefix + "dlq",
        "kafka": kafka_settings,
        "fleet": {
            "group": group,
            "replica": replica,
            "positions_topic": prefix + "positions",
            "session_timeout_seconds": session_timeout_seconds,
            "heartbeat_interval_seconds": session_timeout_seconds / 4,
            "rebalance_timeout_seconds": 30,
            **(fleet or {}),
        },
        **supervisor,
    }
    (root / "inlet.yaml").write_text(yaml.safe_dump(sup))
    for doc in integrations:
        (root / "integrations" / f"{doc['customer']}.{doc['integration']}.yaml").write_text(yaml.safe_dump(doc))
    return root


def fleet_roots(folder: Path, count: int, **options: Any) -> list[Path]:
    """The config directories of replicas ``r0`` .. ``r<count-1>`` under ``folder`` (:func:`write_fleet_config`)."""
    return [write_fleet_config(folder / f"r{i}", replica=f"r{i}", **options) for i in range(count)]
