"""The supervisor: runs every enabled integration of a config directory, each as its own task.

- One sink (Kafka or the SQLite outbox) and one checkpoint store are shared by all integrations.
- An integration that fails (upstream or Kafka unavailable, a bug) is restarted with jittered
  exponential backoff from its last checkpoint; the others keep running.
- A pull integration that has caught up sleeps ``poll_interval_seconds`` and reads again; with ``once`` it
  stops after one pass instead (the README's first command, tests, cron-style runs).
- SIGTERM / SIGINT drain: stop reading, wait for the acknowledgements of what was handed to the sink,
  commit those positions, close the sink, return — exit code 0.
- Writing to Kafka (the sink, or the relay), the run starts with :func:`core.topics.check_topics`: every topic it
  will write exists, or is created (``topics.create``), or the run is refused with one error naming the missing
  ones and ``inlet topics apply`` — before any integration reads. With Kafka not reachable yet, each
  integration (sink: kafka) runs the check before it reads, backing off like any sink outage.
- An error whose class is ``fatal`` (:class:`~core.errors.SinkRefused`: Kafka refused inlet's password or
  certificate) stops the integration for good instead of restarting it; ``/readyz`` reports it. When no
  integration is left running and the probes are served, the supervisor stays up (not ready, saying why) until
  SIGTERM.
- With ``fleet:`` in ``inlet.yaml`` it is one replica of several: it runs what the fleet's consumer group assigns
  it (:mod:`inlet.core.fleet`), releasing an integration (drained, committed) before a rebalance hands it on;
  positions then live in Kafka (:mod:`inlet.core.positions`), and an integration with ``delivery: exactly_once``
  writes through its own transactional producer (:mod:`inlet.core.sinks.transactional`). An integration with
  ``slots`` runs as that many units, one connector each.
- With ``relay: {enabled: true}`` (and Kafka configured) the integrations write the outbox and the relay
  (:mod:`inlet.core.relay`) ships it to Kafka alongside them: the outbox is then a local buffer that keeps the
  integrations reading while Kafka is away, and Kafka gets every event in outbox order. With ``once`` the relay
  ships what the integrations wrote before the run ends; a stop leaves unshipped rows for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.errors import GroupAuthorizationFailedError

from inlet.core.config import LoadedIntegration, SupervisorConfig
from inlet.core.control import Control
from inlet.core.drift import Shape
from inlet.core.envelope import Enveloper, Event
from inlet.core.errors import ConfigError, Fenced, InletError
from inlet.core.fleet import Membership, Unit, replica_name, units_of
from inlet.core.gauges import unwatch, watch
from inlet.core.health import HealthServer
from inlet.core.metrics import Stats
from inlet.core.monitors import Monitors, state_key, store_state
from inlet.core.pipeline import DriftCheck, Pipeline
from inlet.core.positions import PositionStore, open_positions, running
from inlet.core.progress import IntegrationProgress, ProgressView, enter, show
from inlet.core.ratelimit import paused_for
from inlet.core.sinks import Sink
from inlet.core.sinks.outbox import OutboxSink

if TYPE_CHECKING:
    from inlet.core.relay import Relay
    from inlet.core.sinks.transactional import ExactlyOnce

__all__ = ["Supervisor", "build_sink", "state_dir"]

log = structlog.get_logger("inlet.supervisor")


GC_THRESHOLDS = (100_000, 20, 50)
"""Young-generation threshold 100k allocations instead of 700: a batch allocates tens of thousands of
short-lived objects (models, events, header lists), and with the default the collector ran every few
records — 30-40 % of the CPU of a Tasmota reading in a measured pass (bench_mqtt's pure-CPU split:
213-242 → 129 µs per reading). 100k rather than 20k: the events of the batches in flight (up to four of 500
messages, five events each, held until Kafka acknowledges them) outlive young collections that come too often,
and every collection walks them again; in MQTT drains the collector took 26-35 µs per message at 20k and 11-15 at
100k (bench_mqtt, same session). Memory cost: at most ~100k extra young objects (~10 MB) between collections."""


def tune_gc() -> None:
    """Set the daemon's collector up for streaming: what is loaded so far lives as long as the process, so it
    is frozen out of full collections, and young collections run per ~100k allocations. The benchmarks call
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
            raise ConfigError(
                "sink: kafka needs a Kafka to write to: set kafka.bootstrap (host:port,...) in inlet.yaml or "
                "the INLET_KAFKA_BOOTSTRAP environment variable, or choose sink: outbox",
                file="inlet.yaml",
                key="kafka.bootstrap",
            )
        from inlet.core.sinks.kafka import KafkaSink

        return KafkaSink(cfg.kafka)
    return OutboxSink(state_dir(cfg) / "outbox.sqlite")


class Supervisor:
    """Runs integrations until stopped (or, with ``once``, until each has caught up once)."""

    def __init__(
        self,
        cfg: SupervisorConfig,
        integrations: list[LoadedIntegration],
        *,
        once: bool = False,
        max_failures: int | None = None,
        progress: ProgressView | None = None,
    ) -> None:
        self.cfg = cfg
        self.integrations = [i for i in integrations if i.config.enabled]
        self.items = {i.config.key: i for i in self.integrations}
        # What runs: one unit per integration, one per slot of an integration with slots > 1 (core.fleet).
        self.units = {u.key: u for u in units_of(self.integrations)}
        self.once = once
        # In once mode an integration that keeps failing is given up on, so the run ends and says so.
        self.max_failures = max_failures if max_failures is not None else (3 if once else None)
        self.stop_event = asyncio.Event()
        self.stats = {key: Stats(u.customer, u.name) for key, u in self.units.items()}
        self.failed: dict[str, str] = {}
        # What each integration has done so far (core.progress): the lag gauge, and bars or lines when shown.
        self.progress = {key: IntegrationProgress(key, s) for key, s in self.stats.items()}
        self.progress_view = progress
        # The operator's pause / resume / restart of each integration (core.control, through core.api).
        self.controls = {key: Control() for key in self.stats}
        # The data-quality monitors of the units running here (core.monitors), from their first position load on.
        self.monitors: dict[str, Monitors] = {}
        self.sink = build_sink(cfg)
        self.health: HealthServer | None = None
        self.checkpoints: PositionStore = open_positions(cfg)
        self.replica = replica_name(cfg.fleet)
        self.membership: Membership | None = None
        self.refused: ConfigError | None = None  # the start-up check refused the run (topics missing on Kafka)
        self._topics_checked = False
        self._topics_lock = asyncio.Lock()
        self.relay: Relay | None = None
        if cfg.relay.enabled and cfg.kafka is not None:  # the config also guarantees the outbox sink then
            from inlet.core.relay import Relay

            config_dir = integrations[0].context.config_root if integrations else None
            self.relay = Relay.from_config(cfg, state_dir(cfg) / "outbox.sqlite", config_dir=config_dir)
        elif cfg.resolved_sink() == "kafka":
            from inlet.core.relay import unshipped

            if left := unshipped(state_dir(cfg) / "outbox.sqlite"):
                log.warning(
                    "the outbox holds events never shipped to Kafka: `inlet relay --once` ships them; "
                    "shipped after newer ones, they would land behind those of their keys",
                    unshipped=left,
                )

    def stop(self) -> None:
        """Ask every integration to drain and the run to end."""
        if not self.stop_event.is_set():
            log.info("stopping: draining in-flight batches")
            self.stop_event.set()
        for control in self.controls.values():
            control.wake()

    def status(self) -> dict[str, str | None]:
        """Per integration: None when healthy, else why it stopped or its last error (for /readyz)."""
        status = {
            k: self.failed.get(k)
            or (None if s.healthy else (s.last_error or "failing"))
            or paused_for(s.customer, s.integration)
            for k, s in self.stats.items()
        }
        if self.relay is not None:
            status["relay"] = self.failed.get("relay") or self.relay.progress.last_error
        return status

    async def _run_relay(self) -> None:
        assert self.relay is not None
        try:
            # Following, a standalone `inlet relay` on this outbox is waited for; once, it is a failure.
            await self.relay.run(self.stop_event, max_failures=self.max_failures, wait_for_lock=not self.once)
        except Exception as exc:  # a relay that ends never takes the integrations down
            self.failed["relay"] = f"{type(exc).__name__}: {exc}"
            log.error("relay given up", error=str(exc), exc_info=not isinstance(exc, InletError))

    async def _check_topics(self) -> None:
        """The start-up check (``core.topics``), once per run: raises ``TopicsMissing`` (and stops the run) when
        topics are missing and not created, ``SinkUnavailable`` / ``SinkRefused`` when Kafka is away or refuses."""
        if self._topics_checked or self.cfg.kafka is None or not self.integrations:
            return
        async with self._topics_lock:
            if self._topics_checked:
                return
            from inlet.core.topics import check_topics

            try:
                await check_topics(self.cfg, self.integrations, config_dir=self.integrations[0].context.config_root)
            except ConfigError as exc:
                self.refused = exc
                self.stop_event.set()  # every integration ends; run() raises it
                for control in self.controls.values():
                    control.wake()
                raise
            self._topics_checked = True

    async def _check_topics_at_start(self) -> None:
        if self.cfg.kafka is None or (self.cfg.resolved_sink() != "kafka" and not self.cfg.relay.enabled):
            return
        try:
            await self._check_topics()
        except InletError as exc:
            if not (exc.retriable or exc.fatal):  # topics missing: the run is refused
                raise
            log.warning(
                "kafka topics not checked yet: Kafka is not reachable or refuses inlet; checked again before "
                "each integration reads"
                if self.cfg.resolved_sink() == "kafka"
                else "kafka topics not checked: Kafka is not reachable or refuses inlet",
                error=str(exc),
            )

    async def _heartbeat(self) -> None:
        while self.health is not None:
            self.health.beat()
            await asyncio.sleep(1.0)

    async def run(self) -> dict[str, Stats]:
        """Run to completion; returns each integration's stats."""
        loop = asyncio.get_running_loop()
        beat: asyncio.Task[None] | None = None
        if self.cfg.metrics_port is not None:
            from inlet.core.api import Api

            api = Api(self, loop)
            self.health = HealthServer(self.status, host=self.cfg.metrics_host, port=self.cfg.metrics_port, app=api)
            self.health.start()
            beat = asyncio.create_task(self._heartbeat())
            log.info(
                "serving /metrics, /healthz, /readyz, /api, /console",
                port=self.health.port,
                actions="enabled" if api.token else "disabled (no api token)",
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        relay = asyncio.create_task(self._run_relay()) if self.relay is not None else None
        watch(self)
        view = self.progress_view
        shown = asyncio.create_task(show(view, list(self.progress.values()))) if view is not None else None
        try:
            await self._run_units()
            if self.refused is not None:
                raise self.refused
            if self.failed and not self.once and self.health is not None and not self.stop_event.is_set():
                # Stopped for good (SinkRefused): keep /readyz saying why until the operator has seen it.
                log.error(
                    "no integration is running; /readyz reports why; waiting for SIGTERM", failed=sorted(self.failed)
                )
                await self.stop_event.wait()
            if relay is not None and self.relay is not None:
                self.relay.finish()  # once: ship what was written, then end; stopping: it drains and ends
                await relay
        finally:
            unwatch(self)
            if shown is not None:
                shown.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await shown
            if relay is not None and not relay.done():
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.sink.stop()
            await self.checkpoints.aclose()
            if self.health is not None:
                self.health.stop()
                self.health = None
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        return self.stats

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep, but wake at once when stopping (or when ``wake`` is set: a pause or restart)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # no extra task per sleeping integration, unlike wait_for
                await (wake or self.stop_event).wait()

    async def _run_units(self) -> None:
        """Every unit here (one supervisor), or what the fleet assigns to this replica."""
        if self.cfg.fleet is not None and self.once:
            raise ConfigError(
                "inlet run --once does not join a fleet: a fleet's replicas run until stopped "
                "(leave fleet: out of inlet.yaml for a one-off run)",
                file="inlet.yaml",
                key="fleet",
            )
        await self._check_topics_at_start()
        if self.refused is not None:
            return
        if self.cfg.fleet is not None:
            await self._run_fleet()
            return
        with running(state_dir(self.cfg), list(self.stats)):  # `inlet positions` refuses to change these meanwhile
            await asyncio.gather(*(self._supervise(u) for u in self.units.values()))

    async def _run_fleet(self) -> None:
        """Run what the fleet's group assigns to this replica, until stopped (``core.fleet``)."""
        tasks: dict[str, asyncio.Task[None]] = {}

        async def assigned(keys: list[str]) -> None:
            for key in keys:
                if key in self.units and key not in tasks:
                    self.controls[key].claim()
                    tasks[key] = asyncio.create_task(self._supervise(self.units[key]))
            for key, stats in self.stats.items():
                if key not in tasks:
                    stats.state = "elsewhere"

        async def revoked() -> None:
            for key in tasks:
                self.controls[key].release()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)
            tasks.clear()

        backoff = self.cfg.restart_backoff_initial_seconds
        while not self.stop_event.is_set():
            self.membership = Membership(self.cfg, list(self.units.values()), on_assigned=assigned, on_revoked=revoked)
            try:
                await self.membership.run(self.stop_event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the group (Kafka) is away: nothing runs here until it is back
                if (isinstance(exc, InletError) and exc.fatal) or isinstance(exc, GroupAuthorizationFailedError):
                    self.failed["fleet"] = f"{type(exc).__name__}: {exc}"
                    log.error("fleet membership refused: nothing runs on this replica", error=str(exc))
                    await self.stop_event.wait()
                    return
                log.warning("fleet membership lost; joining again", error=repr(exc), retry_in=round(backoff, 2))
                await self._sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.cfg.restart_backoff_max_seconds)

    async def _supervise(self, unit: Unit) -> None:
        item = self.items[unit.integration]
        cfg = item.config
        stats = self.stats[unit.key]
        bound = log.bind(customer=cfg.customer, integration=unit.name)
        progress = self.progress[unit.key]
        # The contracts it produces, each name once (a dual-published major is the same contract).
        names = {m.contract_name: m.contract_version for m in reversed(item.produces)}
        contract = ", ".join(f"{n} {v}" for n, v in reversed(names.items())) or None
        # This task's log lines carry the integration's names and level; the progress hooks find its progress.
        enter(progress, customer=cfg.customer, integration=unit.name, contract=contract, log_level=cfg.log_level)
        env = Enveloper.of(self.cfg, cfg.customer, cfg.integration)
        drift = None
        if cfg.drift is not None:
            shape = Shape.from_json(item.context.path(cfg.drift.shape).read_bytes())
            drift = DriftCheck(shape, policy=cfg.drift.policy, strict=cfg.drift.strict)
        ticker = asyncio.create_task(self._tick_monitors(unit, env, stats, bound))
        try:
            await self._run_integration(unit, item, stats, env, drift, self.controls[unit.key], bound)
        finally:
            ticker.cancel()
            if (monitors := self.monitors.pop(unit.key, None)) is not None:
                monitors.forget_metrics()  # running elsewhere now (fleet), or stopped: its alerts are not ours
                if stats.state != "fenced":  # what changed since the last commit (a fenced replica owns nothing)
                    try:
                        await store_state(monitors, self.checkpoints, cfg.customer, unit.name)
                    except Exception as exc:  # the baselines as of the last stored window stay
                        bound.warning("data-quality monitor state not stored at stop", error=repr(exc))
            progress.finished = True
            if stats.state not in ("failed", "caught_up", "fenced"):
                stats.state = "stopped"

    @staticmethod
    async def _paused(control: Control, stats: Stats, bound: Any) -> bool:
        """Wait while an operator has the integration paused; True when it was (resumed now, or stopping)."""
        if not control.paused:
            return False
        stats.state = "paused"
        bound.info("integration paused: it reads again when resumed")
        await control.resumed.wait()
        return True

    async def _run_integration(
        self,
        unit: Unit,
        item: LoadedIntegration,
        stats: Stats,
        env: Enveloper,
        drift: DriftCheck | None,
        control: Control,
        bound: Any,
    ) -> None:
        """Read, restart after failures with backoff, pause and resume, until stopped (the states: core.status)."""
        cfg = item.config
        backoff = self.cfg.restart_backoff_initial_seconds
        failures = 0
        while not (self.stop_event.is_set() or control.released):
            if await self._paused(control, stats, bound):
                continue
            if control.begin():  # an operator's restart: no backoff left to wait out
                failures, backoff = 0, self.cfg.restart_backoff_initial_seconds
            connector = item.build(once=self.once, slot=unit.slot)
            # Exactly-once: this integration's own transactional producer is its sink and writes its positions.
            eos = self._exactly_once(unit) if cfg.delivery == "exactly_once" else None
            sink: Sink = eos or self.sink
            store: PositionStore = eos or self.checkpoints
            try:
                if self.cfg.resolved_sink() == "kafka":
                    await self._check_topics()
                async with connector:
                    await store.start()  # exactly-once: fences an older owner's producer before reading its position
                    position = await store.load(cfg.customer, unit.name)
                    if cfg.monitors.enabled and unit.key not in self.monitors:  # baselines as last stored
                        saved = await store.load(cfg.customer, state_key(unit.name))
                        self.monitors[unit.key] = Monitors(
                            cfg.customer, unit.name, cfg.monitors, zone=cfg.zone, state=saved
                        )
                    while not control.halt.is_set():
                        stats.state = "running"
                        pipeline = Pipeline(
                            connector,
                            env,
                            sink,
                            store,
                            stats,
                            max_in_flight=1 if eos is not None else cfg.max_in_flight,
                            drift=drift,
                            position_name=unit.name,
                            redelivered=eos is not None and item.plugin.redelivers,
                            monitors=self.monitors.get(unit.key),
                        )
                        position = await pipeline.run(position, control.halt)
                        failures, backoff = 0, self.cfg.restart_backoff_initial_seconds
                        if not await self._caught_up(item, stats, control, bound):
                            break
                if self.once and stats.state == "caught_up":
                    return
            except asyncio.CancelledError:
                raise
            except Fenced as exc:  # another replica runs it now; the group's next assignment says who
                stats.state = "fenced"
                bound.warning("integration fenced: another replica has taken it over", error=str(exc))
                return
            except Exception as exc:
                failures += 1
                if self._given_up(exc, unit, stats, bound, failures):
                    return
                transient = isinstance(exc, InletError) and exc.retriable
                level = bound.warning if transient else bound.error
                level(
                    "integration failed; restarting from its last checkpoint",
                    error=repr(exc),
                    retry_in=round(backoff, 2),
                    failures=failures,
                    exc_info=not transient,
                )
                stats.state = "backing_off"
                await self._sleep(backoff * random.uniform(0.8, 1.2), control.halt)
                backoff = min(backoff * 2, self.cfg.restart_backoff_max_seconds)
            finally:
                if eos is not None:
                    await eos.stop()

    async def _tick_monitors(self, unit: Unit, env: Enveloper, stats: Stats, bound: Any) -> None:
        """Between batches: end the windows that are over and notice a silent feed, which sends no batch to do it.
        Alerts found here go straight to the shared sink (at least once: one that fails is sent with the next)."""
        period = min(30.0, max(0.5, self.items[unit.integration].config.monitors.window_seconds / 10))
        unsent: list[Event] = []
        while not self.stop_event.is_set():
            await self._sleep(period)
            monitors = self.monitors.get(unit.key)
            if monitors is None or stats.state == "paused":  # an operator's pause is no silence of the feed
                continue
            unsent += [env.envelope(a, a.alert_id, a.status) for a in monitors.tick()]
            if await self._deliver_alerts(unit, monitors, unsent, bound):
                unsent = []

    async def _deliver_alerts(self, unit: Unit, monitors: Monitors, events: list[Event], bound: Any) -> bool:
        """Send alert events found between batches to the shared sink, then store the monitors' state if it changed
        (so a stored state never claims an alert whose event was not sent). False: the sink failed, send again."""
        if events:
            try:
                refused = await self.sink.send(events)
            except Exception as exc:  # the sink is down: the integration itself backs off and says so
                bound.warning("data alerts not delivered yet; retrying", error=repr(exc), alerts=len(events))
                return False
            for r in refused:
                bound.error("data alert refused by the sink", error=f"{r.error_type}: {r.message}")
        try:
            await store_state(monitors, self.checkpoints, unit.customer, unit.name)
        except Exception as exc:  # stored again after the integration's next commit
            bound.warning("data-quality monitor state not stored yet", error=repr(exc))
        return True

    async def reset_monitors(self, unit_key: str) -> int:
        """An operator's ``inlet monitors --reset``: the change the monitors see was intended, so they forget every
        baseline and learn again (stored at once); the number of alerts that cleared. The cleared alerts go to the
        shared sink as the ticker's do; a sink that fails only costs their delivery (logged), the reset stands.
        KeyError: no monitors of ``unit_key`` run here."""
        monitors, unit = self.monitors[unit_key], self.units[unit_key]
        cfg = self.items[unit.integration].config
        bound = log.bind(customer=cfg.customer, integration=unit.name)
        cleared = monitors.reset()
        env = Enveloper.of(self.cfg, cfg.customer, cfg.integration)
        await self._deliver_alerts(unit, monitors, [env.envelope(a, a.alert_id, a.status) for a in cleared], bound)
        bound.info("data-quality baselines reset by an operator", cleared=len(cleared))
        return len(cleared)

    def _given_up(self, exc: Exception, unit: Unit, stats: Stats, bound: Any, failures: int) -> bool:
        """True when a failed integration is not restarted: fatal, refused at start, or too many failures."""
        if isinstance(exc, InletError) and exc.fatal:  # SinkRefused: a wrong password or certificate
            self.failed[unit.key] = f"{type(exc).__name__}: {exc}"
            stats.state = "failed"
            bound.error("integration stopped, not restarted: restarting cannot fix this", error=str(exc))
            return True
        if exc is self.refused:  # the start-up check refused the run: nothing to restart
            return True
        stats.restarted(exc)
        if self.max_failures is not None and failures >= self.max_failures:
            transient = isinstance(exc, InletError) and exc.retriable
            self.failed[unit.key] = f"{type(exc).__name__}: {exc}"
            stats.state = "failed"
            level = bound.warning if transient else bound.error
            level("integration failed", error=repr(exc), failures=failures, exc_info=not transient)
            bound.error("integration given up after repeated failures", failures=failures)
            return True
        return False

    async def _caught_up(self, item: LoadedIntegration, stats: Stats, control: Control, bound: Any) -> bool:
        """After a read pass: False when it ended because of a stop, pause or restart (or ``once``); else sleep
        until the next poll and say True."""
        cfg = item.config
        if self.stop_event.is_set() and (paused := paused_for(cfg.customer, cfg.integration)):
            # Stopped while waiting out a pause: not caught up, whatever the books say.
            stats.interrupted = f"stopped while waiting: {paused}"
            bound.warning("integration stopped while its upstream is paused", paused=paused)
        if control.halt.is_set():  # stopping, pausing or restarting: the connector is closed
            return False
        stats.state = "caught_up"
        if self.once:
            return False
        await self._sleep(cfg.poll_interval_seconds, control.halt)
        return True

    def _exactly_once(self, unit: Unit) -> ExactlyOnce:
        from inlet.core.sinks.transactional import ExactlyOnce

        assert self.cfg.fleet is not None and self.cfg.kafka is not None  # the config guarantees both
        return ExactlyOnce(self.cfg.kafka, f"{self.cfg.fleet.transactional_id_prefix}.{unit.key}", self.checkpoints)
