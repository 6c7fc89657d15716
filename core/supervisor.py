"""The supervisor: runs every enabled integration of a config directory, each as its own task.

- One sink (Kafka or the SQLite outbox) and one checkpoint store are shared by all integrations.
- An integration that fails (upstream or Kafka unavailable, a bug) is restarted with jittered
  exponential backoff from its last checkpoint; the others keep running.
- A pull integration that has caught up sleeps ``poll_interval`` and reads again; with ``once`` it
  stops after one pass instead (the README's first command, tests, cron-style runs).
- SIGTERM / SIGINT drain: stop reading, wait for the acknowledgements of what was handed to the sink,
  commit those positions, close the sink, return — exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import signal
from pathlib import Path

import structlog

from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import LoadedIntegration, SupervisorConfig
from inlet.core.drift import Shape
from inlet.core.envelope import Enveloper
from inlet.core.errors import TransientError
from inlet.core.health import HealthServer
from inlet.core.metrics import Stats
from inlet.core.pipeline import DriftCheck, Pipeline
from inlet.core.sinks import Sink
from inlet.core.sinks.outbox import OutboxSink

__all__ = ["Supervisor", "build_sink", "state_dir"]

log = structlog.get_logger("inlet.supervisor")


GC_THRESHOLDS = (20_000, 20, 50)
"""Young-generation threshold 20k allocations instead of 700: a batch allocates tens of thousands of
short-lived objects (models, events, header lists), and with the default the collector ran every few
records — 30-40 % of the CPU of a Tasmota reading in a measured pass (bench_mqtt's pure-CPU split:
213-242 → 129 µs per reading). Memory cost: at most ~20k extra young objects between collections."""


def tune_gc() -> None:
    """Set the daemon's collector up for streaming: what is loaded so far lives as long as the process, so it
    is frozen out of full collections, and young collections run per ~20k allocations. The benchmarks call
    this too, so they measure what ``inlet run`` runs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def state_dir(cfg: SupervisorConfig) -> Path:
    """Where checkpoints and the outbox live (absolute once loaded: resolved against the config directory)."""
    return Path(cfg.state_dir)


def build_sink(cfg: SupervisorConfig) -> Sink:
    """The configured sink: Kafka when a bootstrap is set (or sink: kafka), else the embedded outbox."""
    if cfg.resolved_sink() == "kafka":
        if cfg.kafka is None:
            raise ValueError("sink: kafka needs kafka.bootstrap (or INLET_KAFKA_BOOTSTRAP)")
        from inlet.core.sinks.kafka import KafkaSink

        return KafkaSink(cfg.kafka)
    return OutboxSink(state_dir(cfg) / "outbox.sqlite")


class Supervisor:
    """Runs integrations until stopped (or, with ``once``, until each has caught up once)."""

    def __init__(self, cfg: SupervisorConfig, integrations: list[LoadedIntegration], *, once: bool = False,
                 max_failures: int | None = None) -> None:
        self.cfg = cfg
        self.integrations = [i for i in integrations if i.config.enabled]
        self.once = once
        # In once mode an integration that keeps failing is given up on, so the run ends and says so.
        self.max_failures = max_failures if max_failures is not None else (3 if once else None)
        self.stop_event = asyncio.Event()
        self.stats = {i.config.key: Stats(i.config.customer, i.config.integration) for i in self.integrations}
        self.failed: dict[str, str] = {}
        self.sink = build_sink(cfg)
        self.health: HealthServer | None = None
        self.checkpoints = CheckpointStore(state_dir(cfg) / "checkpoints.sqlite")

    def stop(self) -> None:
        """Ask every integration to drain and the run to end."""
        if not self.stop_event.is_set():
            log.info("stopping: draining in-flight batches")
            self.stop_event.set()

    def status(self) -> dict[str, str | None]:
        """Per integration: None when healthy, else its last error (for /readyz)."""
        return {k: (None if s.healthy else (s.last_error or "failing")) for k, s in self.stats.items()}

    async def _heartbeat(self) -> None:
        while self.health is not None:
            self.health.beat()
            await asyncio.sleep(1.0)

    async def run(self) -> dict[str, Stats]:
        """Run to completion; returns each integration's stats."""
        loop = asyncio.get_running_loop()
        beat: asyncio.Task[None] | None = None
        if self.cfg.metrics_port is not None:
            self.health = HealthServer(self.status, host=self.cfg.metrics_host, port=self.cfg.metrics_port)
            self.health.start()
            beat = asyncio.create_task(self._heartbeat())
            log.info("serving /metrics, /healthz, /readyz", port=self.health.port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await asyncio.gather(*(self._supervise(i) for i in self.integrations))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.sink.stop()
            self.checkpoints.close()
            if self.health is not None:
                self.health.stop()
                self.health = None
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        return self.stats

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=seconds)

    async def _supervise(self, item: LoadedIntegration) -> None:
        cfg = item.config
        stats = self.stats[cfg.key]
        bound = log.bind(customer=cfg.customer, integration=cfg.integration)
        env = Enveloper(cfg.customer, cfg.integration, topic_template=self.cfg.topic_template,
                        dlq_topic_template=self.cfg.dlq_topic_template,
                        drift_topic_template=self.cfg.drift_topic_template)
        drift = None
        if cfg.drift is not None:
            shape = Shape.from_json(item.context.path(cfg.drift.shape).read_bytes())
            drift = DriftCheck(shape, policy=cfg.drift.policy, strict=cfg.drift.strict)
        backoff = self.cfg.restart_backoff_initial
        failures = 0
        while not self.stop_event.is_set():
            connector = item.build()
            try:
                async with connector:
                    position = await self.checkpoints.load(cfg.customer, cfg.integration)
                    while not self.stop_event.is_set():
                        pipeline = Pipeline(connector, env, self.sink, self.checkpoints, stats,
                                            max_in_flight=cfg.max_in_flight, drift=drift)
                        position = await pipeline.run(position, self.stop_event)
                        failures, backoff = 0, self.cfg.restart_backoff_initial
                        if self.once:
                            return
                        await self._sleep(cfg.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                stats.restarted(exc)
                level = bound.warning if isinstance(exc, TransientError) else bound.error
                level("integration failed; restarting from its last checkpoint", error=repr(exc),
                      retry_in=round(backoff, 2), failures=failures,
                      exc_info=not isinstance(exc, TransientError))
                if self.max_failures is not None and failures >= self.max_failures:
                    self.failed[cfg.key] = f"{type(exc).__name__}: {exc}"
                    bound.error("integration given up after repeated failures", failures=failures)
                    return
                await self._sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.cfg.restart_backoff_max)
