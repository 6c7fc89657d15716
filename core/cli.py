"""The ``inlet`` command line: run the supervisor, check configs, list integrations, tail events.

Every command takes ``--config DIR`` (env ``INLET_CONFIG``), the directory with ``inlet.yaml`` and
``integrations/*.yaml``; without either, the nearest folder from the working directory up that holds an
``inlet.yaml``. ``run``, ``check``, ``record`` and ``replay`` work on one integration when asked
(``--only CUSTOMER/INTEGRATION``, or the positional of record/replay) and then load only that one.
Output is a rich table on a terminal; errors name the file and key.
"""

from __future__ import annotations

import asyncio
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from inlet import __version__
from inlet.core.cli_common import ConfigOpt, OnlyOpt, config_dir, err, fail_config, out, supervisor_only
from inlet.core.cli_dlq import dlq_app, top_reasons
from inlet.core.cli_monitors import monitors_cmd
from inlet.core.cli_ops import action_cmd, status_cmd
from inlet.core.cli_plugins import new_app, plugins_app
from inlet.core.cli_positions import positions_app
from inlet.core.cli_relay import relay_cmd
from inlet.core.cli_topics import topics_app
from inlet.core.config import LoadedIntegration, SupervisorConfig, check_config
from inlet.core.errors import ConfigError
from inlet.core.logging import allow_level, configure_logging
from inlet.core.metrics import Stats

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
events_app = typer.Typer(no_args_is_help=True, help="Look at events in the embedded outbox.")
app.add_typer(events_app, name="events")
contracts_app = typer.Typer(help="Versioned event contracts: list, check, diff.")
app.add_typer(contracts_app, name="contracts")
app.add_typer(plugins_app, name="plugins")
app.add_typer(new_app, name="new")
app.command("relay")(relay_cmd)
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(positions_app, name="positions")
app.command("status")(status_cmd)
app.command("monitors")(monitors_cmd)
for _action in ("pause", "resume", "restart"):
    app.command(_action)(action_cmd(_action))


def _version(value: bool) -> None:
    if value:
        out.print(f"inlet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print inlet's version and exit")
    ] = None,
) -> None:
    """inlet: customer feeds to versioned events on Kafka."""


def _load(
    config: Path, only: list[str] | None = None, *, offline: bool = False
) -> tuple[SupervisorConfig, list[LoadedIntegration]]:
    """The validated config directory, or exit 2 listing every problem (validated once)."""
    sup_cfg, loaded, errors = check_config(config, only=only, offline=offline)
    if errors:
        fail_config(errors)
    return sup_cfg, loaded


def _summary(stats: dict[str, Stats], failed: dict[str, str], seconds: float) -> None:
    """Print the per-integration table, then where the DLQ records came from (stages, top reasons) and why
    records were filtered."""
    table = Table(title=f"inlet run summary ({seconds:.1f} s)")
    for col in ("integration", "read", "events", "DLQ", "filtered", "drift", "restarts", "balanced"):
        table.add_column(col, justify="left" if col == "integration" else "right", no_wrap=True)
    details = []
    for key, s in stats.items():
        t = s.totals
        status = "FAILED" if key in failed else ("STOPPED" if s.interrupted else "yes" if t.balanced() else "NO")
        table.add_row(
            key,
            str(t.records_in),
            str(t.events_out),
            str(t.dlq.total()),
            str(t.filtered.total()),
            str(t.drift),
            str(s.restarts),
            status,
        )
        details += [f"{key}: DLQ {n} at stage {stage}" for stage, n in sorted(t.dlq.items())]
        details += top_reasons(key, t.reasons)
        details += [f"{key}: filtered {n}: {reason}" for reason, n in sorted(t.filtered.items())]
        if key in failed:
            details.append(f"{key}: gave up: {failed[key]}")
        elif s.interrupted:
            details.append(f"{key}: {s.interrupted}")
    out.print(table)
    for line in details:
        out.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(
    config: ConfigOpt = None,
    only: OnlyOpt = None,
    once: Annotated[bool, typer.Option(help="Stop each integration once it has caught up")] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show progress: bars on a terminal, a log line every 10 s off one (default: with --once)",
        ),
    ] = None,
) -> None:
    """Run the supervisor: every enabled integration, until SIGTERM (or caught up, with --once)."""
    from inlet.core.progress import view_for
    from inlet.core.supervisor import Supervisor, state_dir, tune_gc

    configure_logging()
    sup_cfg, integrations = _load(config_dir(config), only)
    allow_level(i.config.log_level for i in integrations)  # an integration's log_level may be below the process's
    _warn(integrations)
    tune_gc()
    try:
        view = view_for(once if progress is None else progress, err)
        supervisor = Supervisor(sup_cfg, integrations, once=once, progress=view)
    except ConfigError as exc:  # sink: kafka without a bootstrap
        fail_config([exc])
    target = (
        f"Kafka at {sup_cfg.kafka.bootstrap}"
        if sup_cfg.resolved_sink() == "kafka" and sup_cfg.kafka
        else f"the outbox {state_dir(sup_cfg) / 'outbox.sqlite'}"
    )
    err.print(f"inlet: running {len(supervisor.integrations)} integration(s) into {target}")
    started = time.monotonic()
    try:
        stats = asyncio.run(supervisor.run())
    except ConfigError as exc:  # refused at start-up: topics missing on Kafka (core.topics)
        fail_config([exc])
    _summary(stats, supervisor.failed, time.monotonic() - started)
    if supervisor.failed:
        raise typer.Exit(1)


@app.command()
def check(config: ConfigOpt = None, only: OnlyOpt = None) -> None:
    """Validate a config directory; list every problem with its file and key."""
    config = config_dir(config)
    _, loaded, errors = check_config(config, only=only)
    if errors:
        fail_config(errors)
    _warn(loaded)
    out.print(f"[green]ok[/]: {len(loaded)} integration(s) in {config}")


def _warn(loaded: list[LoadedIntegration]) -> None:
    """Configuration that runs but loses data (e.g. a missing zone): said on stderr, never an exit code."""
    for item in loaded:
        for warning in item.warnings:
            err.print(f"[yellow]warning[/]: {item.config.key} ({item.file}): {warning}", highlight=False)


def _describe(position: dict[str, object] | None) -> str:
    """A position for people: scalars as they are, long lists as their length."""
    if not position:
        return "-"
    parts = []
    for key, value in sorted(position.items()):
        shown = f"[{len(value)} items]" if isinstance(value, list | dict) and len(value) > 3 else orjson.dumps(value)
        parts.append(f"{key}={shown if isinstance(shown, str) else shown.decode()}")
    return "\n".join(parts)


@app.command()
def integrations(config: ConfigOpt = None) -> None:
    """List the configured integrations, their plugins, contracts, topics and checkpoints."""
    from inlet.core.checkpoint import CheckpointStore
    from inlet.core.envelope import Enveloper
    from inlet.core.supervisor import state_dir

    config = config_dir(config)
    sup_cfg, loaded = _load(config)
    table = Table(title=f"integrations in {config}")
    for col in ("integration", "plugin", "enabled", "zone", "contracts → topics", "checkpoint"):
        table.add_column(col)
    store = CheckpointStore(state_dir(sup_cfg) / "checkpoints.sqlite")
    try:
        for item in loaded:
            c = item.config
            env = Enveloper(c.customer, c.integration, topic_template=sup_cfg.topic_template)
            topics = "\n".join(f"{m.contract_name} {m.contract_version} → {env.topic_for(m)}" for m in item.produces)
            pos = store.load_sync(c.customer, c.integration)
            table.add_row(c.key, c.plugin, "yes" if c.enabled else "no", c.zone or "-", topics, _describe(pos))
    finally:
        store.close()
    out.print(table)


@events_app.command("tail")
def events_tail(
    config: ConfigOpt = None,
    n: Annotated[int, typer.Option("-n", help="How many events")] = 10,
    topic: Annotated[str | None, typer.Option(help="Only this topic")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events")] = False,
    headers: Annotated[bool, typer.Option(help="Print the CloudEvents headers too")] = True,
) -> None:
    """Print the newest events of the embedded outbox as JSON lines (DLQ records included)."""
    from inlet.core.sinks.outbox import read_outbox
    from inlet.core.supervisor import state_dir

    config = config_dir(config)
    sup_cfg = supervisor_only(config)
    path = state_dir(sup_cfg) / "outbox.sqlite"
    if not path.exists():
        err.print(f"no outbox at {path} yet: run `inlet run --config {config}` first")
        raise typer.Exit(1)
    rows = read_outbox(path, limit=n, topic=topic)
    last = 0
    while True:
        for row in rows:
            doc: dict[str, object] = {
                "seq": row.seq,
                "topic": row.topic,
                "key": row.key.decode("utf-8", "replace") if row.key else None,
            }
            if headers:
                doc["headers"] = row.headers
            try:
                doc["value"] = orjson.loads(row.value)
            except orjson.JSONDecodeError:
                doc["value"] = row.value.decode("utf-8", "replace")
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
            last = row.seq
        sys.stdout.flush()
        if not follow:
            return
        time.sleep(1.0)
        rows = read_outbox(path, limit=1000, topic=topic, after=last)


@contracts_app.callback(invoke_without_command=True)
def contracts_list(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="INLET_CONFIG", help="Also show which integrations produce each"),
    ] = None,
) -> None:
    """List contracts, versions, topics, dual-published majors and (with --config) the integrations producing them."""
    if ctx.invoked_subcommand is not None:
        return
    from inlet import contracts
    from inlet.contracts.base import converters_from

    producers: dict[str, list[str]] = {}
    if config is not None and config.is_dir():
        for item in check_config(config)[1]:
            for model in item.produces:
                producers.setdefault(f"{model.contract_name} {model.contract_version}", []).append(item.config.key)
    table = Table(title="contracts")
    for col in ("contract", "version", "topic", "compatibility", "also published as", "produced by"):
        table.add_column(col)
    for model in contracts.all_contracts():
        key = f"{model.contract_name} {model.contract_version}"
        also = ", ".join(f"v{t.contract_version}" for t in converters_from(model)) or "-"
        table.add_row(
            model.contract_name,
            model.contract_version,
            f"{model.contract_name}.v{model.major()}",
            model.compatibility,
            also,
            ", ".join(producers.get(key, [])) or "-",
        )
    out.print(table)


@contracts_app.command("check")
def contracts_check() -> None:
    """Fail when a model differs from its checked-in schema or a minor breaks an earlier one of its major."""
    from inlet import contracts  # noqa: F401 - registers every contract
    from inlet.contracts.schemas import check_contracts

    problems = check_contracts()
    for p in problems:
        err.print(f"  • {p}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print("[green]ok[/]: every contract matches its checked-in schema and its earlier minors")


@contracts_app.command("diff")
def contracts_diff(
    name: str, old: str, new: str, mode: Annotated[str | None, typer.Option(help="BACKWARD, FORWARD or FULL")] = None
) -> None:
    """Explain in words whether version NEW of contract NAME can replace OLD, field by field."""
    from inlet.contracts.compat import check
    from inlet.contracts.schemas import checked_in

    schemas = checked_in(name)
    missing = [v for v in (old, new) if v not in schemas]
    if missing:
        err.print(f"no checked-in schema for {name} {', '.join(missing)} (have: {', '.join(schemas) or 'none'})")
        raise typer.Exit(2)
    chosen = (mode or "FORWARD").upper()
    if chosen not in ("BACKWARD", "FORWARD", "FULL"):
        err.print(f"--mode must be BACKWARD, FORWARD or FULL, not {mode}")
        raise typer.Exit(2)
    issues = check(schemas[old], schemas[new], chosen)  # type: ignore[arg-type]
    if not issues:
        out.print(f"{name} {new} is {chosen} compatible with {old}")
        return
    out.print(f"{name} {new} is NOT {chosen} compatible with {old}:")
    for issue in issues:
        out.print(f"  • {issue}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _integration(config: Path | None, key: str, *, offline: bool = False) -> LoadedIntegration:
    """Only the integration ``key`` loaded (offline: absent secrets are stand-ins); exit 2 when it is not there."""
    _, loaded = _load(config_dir(config), [key], offline=offline)
    return loaded[0]


FixturesOpt = Annotated[Path | None, typer.Option(help="Fixture directory (default fixtures/CUSTOMER/INTEGRATION)")]


@app.command("record")
def record_cmd(
    integration: str,
    config: ConfigOpt = None,
    fixtures: FixturesOpt = None,
    idle: Annotated[float, typer.Option(help="MQTT / MLLP: stop after this many seconds without a message")] = 3.0,
) -> None:
    """Run CUSTOMER/INTEGRATION against its upstream and write its fixtures (exchanges or messages, shape, goldens).

    An MQTT integration records what its persistent session receives until ``--idle`` quiet seconds; an HL7 v2
    (MLLP) integration listens on its configured port and records the messages senders send, and the ACKs it
    answers, until ``--idle`` quiet seconds (plus 10 s for the first sender to connect).
    """
    from inlet.core.fixtures import record

    configure_logging()
    item = _integration(config, integration)
    target = fixtures or Path("fixtures") / integration
    try:
        count = record(item, target, idle_seconds=idle)
    except ConfigError as exc:  # e.g. no pseudonym key for a healthcare feed: a fix to make, not a traceback
        fail_config([exc])
    out.print(f"recorded {integration} into {target}: {count} golden events")


@app.command("replay")
def replay_cmd(
    integration: str,
    config: ConfigOpt = None,
    fixtures: FixturesOpt = None,
    update: Annotated[bool, typer.Option(help="Rewrite the golden events after a reviewed change")] = False,
) -> None:
    """Run CUSTOMER/INTEGRATION offline from its fixtures and show the diff against its golden events.

    Needs no secret: the recording was redacted, so absent credentials are replayed with stand-ins.
    """
    from inlet.core.fixtures import event_lines, golden_diff, replay

    configure_logging()
    item = _integration(config, integration, offline=True)
    target = fixtures or Path("fixtures") / integration
    try:
        actual = replay(item, target, update=update)
    except ConfigError as exc:  # --update of a healthcare feed's ACKs without the pseudonym key
        fail_config([exc])
    if update:
        (target / "events.jsonl").write_text("".join(event_lines(actual)))
        out.print(f"updated {target / 'events.jsonl'}: {len(actual)} events")
        return
    diff = golden_diff(target, actual)
    if diff:
        sys.stdout.write(diff)
        raise typer.Exit(1)
    out.print(f"[green]ok[/]: {len(actual)} events equal the goldens in {target}")


def main() -> None:
    """Console-script entry point."""
    # Python hides DeprecationWarnings outside __main__: show inlet's (an old settings key names its new one).
    warnings.filterwarnings("default", category=DeprecationWarning, module="inlet")
    app()
