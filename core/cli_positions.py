"""``inlet positions show|set|reset``: where each integration's next run reads on from (:mod:`inlet.core.positions`).

They work on whichever store the configuration uses: ``checkpoints.sqlite`` in the state directory, or with
``fleet:`` the compacted positions topic on Kafka.

``set`` and ``reset`` move a position, so they print first what the change means: the old and the new position
and what the next run will read (the connector's :meth:`~inlet.core.connector.Connector.describe_position`).
They apply it only when confirmed: ``--yes``, or answering the question on a terminal; anywhere else (a script,
CI) without ``--yes`` they change nothing and exit 1, so a forgotten flag is noticed rather than taken as done.

They refuse while the integration runs, since its next commit would overwrite the change: on this state
directory, a supervisor holding its lock (:func:`~inlet.core.positions.running_supervisor`); in a fleet, the
replica the consumer group gave it to (``core.fleet.owners``). Stop it first: stop that supervisor, or run it
without the integration (``enabled: false``, ``--only`` the others).

Exit codes: 0 — shown or changed; 1 — refused (running), not confirmed, or Kafka could not be reached;
2 — the configuration is wrong, the integration is unknown, or the position is not a JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar, cast

import orjson
import typer

from inlet.core.cli_common import ConfigOpt, config_dir, err, fail_config, out
from inlet.core.config import LoadedIntegration, SupervisorConfig, check_config
from inlet.core.connector import Connector
from inlet.core.errors import ConfigError, SinkRefused, TransientError
from inlet.core.monitors import STATE_SUFFIX, state_key
from inlet.core.positions import PositionRecord, PositionStore, open_positions, running_supervisor
from inlet.core.types import Position

__all__ = ["positions_app"]

positions_app = typer.Typer(
    no_args_is_help=True,
    help="Where each integration's next run reads on from: show, set, reset (checkpoints or the fleet's topic).",
)

KeyArg = Annotated[
    str,
    typer.Argument(metavar="CUSTOMER/INTEGRATION", help="The integration (with #SLOT for one slot of several)"),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking (needed off a terminal)")]

_T = TypeVar("_T")


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(config: Path | None) -> tuple[SupervisorConfig, dict[str, LoadedIntegration]]:
    """The configuration (offline: no secret is needed) and its integrations by position key, a key per slot of an
    integration with ``slots`` > 1 (``customer/integration#0`` ...)."""
    sup_cfg, loaded, errors = check_config(config_dir(config), offline=True)
    if errors:
        fail_config(errors)
    known: dict[str, LoadedIntegration] = {}
    for item in loaded:
        c = item.config
        if c.slots == 1:
            known[c.key] = item
        else:
            known.update({f"{c.key}#{slot}": item for slot in range(c.slots)})
    return sup_cfg, known


def _with_store(cfg: SupervisorConfig, work: Callable[[PositionStore], Awaitable[_T]]) -> _T:
    """Run ``work`` on the configuration's store; Kafka away or refusing inlet is one line and exit 1."""

    async def run() -> _T:
        store = open_positions(cfg)
        try:
            await store.start()
            return await work(store)
        finally:
            await store.aclose()

    from inlet.core.logging import configure_logging

    configure_logging(os.environ.get("INLET_LOG_LEVEL", "warning"))
    try:
        return asyncio.run(run())
    except (TransientError, SinkRefused) as exc:
        _fail(str(exc))
    except ConfigError as exc:  # the positions topic is missing
        fail_config([exc])


def _split(key: str, known: dict[str, LoadedIntegration], stored: dict[str, PositionRecord]) -> tuple[str, str]:
    """``(customer, integration)`` of a key that is configured or has a stored position; exit 2 otherwise."""
    customer, sep, integration = key.partition("/")
    if sep and customer and integration and (key in known or key in stored):
        return customer, integration
    names = sorted(set(known) | set(stored))
    _fail(f"unknown integration {key!r}: the known ones are {', '.join(names) or '(none)'}", code=2)


def _shown(position: Position | None) -> str:
    return "none" if position is None else orjson.dumps(position, option=orjson.OPT_SORT_KEYS).decode()


def _next_run(item: LoadedIntegration | None, position: Position | None) -> str:
    """What the integration's connector says the next run reads from ``position``; the generic wording when the
    integration is not configured (any more) or its connector cannot be built here."""
    if item is not None:
        with contextlib.suppress(Exception):  # a description is worth less than the command that wants it
            return item.build().describe_position(position)
    return Connector.describe_position(cast(Any, None), position)  # the base's wording uses no state


def _written(record: PositionRecord) -> str:
    return f"{record.updated_at} by {record.replica}" if record.replica else record.updated_at


def _line(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)


# --- refusing while it runs -------------------------------------------------------------------------------------


def _runs_where(cfg: SupervisorConfig, key: str) -> str | None:
    """Who runs ``key`` now (a sentence), or None: a supervisor on this state directory, or a fleet replica."""
    found = running_supervisor(Path(cfg.state_dir))
    if found is not None and (found.integrations is None or key in found.integrations):
        pid = f"pid {found.pid}" if found.pid is not None else "pid unknown"
        return f"the supervisor running on {cfg.state_dir} ({pid}) runs it"
    if cfg.fleet is None:
        return None
    from inlet.core.fleet import owners

    try:
        owned = asyncio.run(owners(cfg))
    except (TransientError, SinkRefused) as exc:
        return f"which fleet replica runs it cannot be told: {exc}"
    if key in owned:
        return f"fleet replica {owned[key]} runs it (consumer group {cfg.fleet.group})"
    return None


def _refuse_if_running(cfg: SupervisorConfig, key: str, what: str) -> None:
    if (where := _runs_where(cfg, key)) is not None:
        _fail(
            f"not {what}: {key} is running ({where}); its next commit would overwrite the change. Stop it first "
            "(stop that supervisor, or run it without this integration), then try again"
        )


def _confirm(yes: bool, what: str) -> None:
    """Go on when ``--yes`` or confirmed on a terminal; otherwise exit 1 having changed nothing."""
    if yes:
        return
    if sys.stdin.isatty() and typer.confirm(f"{what}?", default=False):
        return
    _fail(f"not {what}: nothing changed (pass --yes to apply)")


# --- the commands -----------------------------------------------------------------------------------------------


@positions_app.command("show")
def show_cmd(
    key: Annotated[
        str | None, typer.Argument(metavar="[CUSTOMER/INTEGRATION]", help="Only this integration (#SLOT for a slot)")
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored positions as JSON")] = False,
) -> None:
    """Each integration's position, who wrote it and when, and what its next run reads."""
    sup_cfg, known = _load(config)
    stored = _with_store(sup_cfg, lambda store: store.snapshot())
    if key is not None:
        _split(key, known, stored)
        keys = [key]
    else:
        keys = sorted(set(known) | {k for k in stored if not k.endswith(STATE_SUFFIX)})
    if as_json:  # the connectors' positions; the monitors' states beside them are `inlet monitors`'s
        doc = {
            k: {"position": r.position, "updated_at": r.updated_at, "replica": r.replica}
            for k in keys
            if (r := stored.get(k)) is not None
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode() + "\n")
        return
    where = f"topic {sup_cfg.fleet.positions_topic}" if sup_cfg.fleet else f"{sup_cfg.state_dir}/checkpoints.sqlite"
    _line(f"positions in {where}:")
    for k in keys:
        record = stored.get(k)
        position = record.position if record else None
        _line(k + ("" if k in known else "  (not configured)"))
        _line(f"  position: {_shown(position)}")
        if record is not None:
            _line(f"  written:  {_written(record)}")
        if (monitors := stored.get(state_key(k))) is not None:
            _line(f"  monitors: baselines stored beside it, {len(monitors.position.get('open', {}))} alert(s) open")
        _line(f"  next run: {_next_run(known.get(k), position)}")


def _change(
    cfg: SupervisorConfig, known: dict[str, LoadedIntegration], key: str, new: Position | None, yes: bool
) -> None:
    """Show what moving ``key`` to ``new`` (None: forgetting it) means, refuse while it runs, confirm, apply."""
    what = "reset" if new is None else "set"
    stored = _with_store(cfg, lambda store: store.snapshot())
    customer, integration = _split(key, known, stored)
    _refuse_if_running(cfg, key, what)
    record = stored.get(key)
    old = record.position if record else None
    item = known.get(key)
    _line(f"{key}:")
    _line(f"  old position: {_shown(old)}" + (f"  (written {_written(record)})" if record else ""))
    _line(f"  new position: {_shown(new)}")
    _line(f"  next run, now:   {_next_run(item, old)}")
    _line(f"  next run, after: {_next_run(item, new)}")
    _confirm(yes, f"{what} the position of {key}")
    _refuse_if_running(cfg, key, what)  # again: it may have started while the question was open

    async def apply(store: PositionStore) -> None:
        if new is None:  # from the start: the monitors learn again too (a backfill is no normal hour)
            await store.reset(customer, integration)
            await store.reset(customer, state_key(integration))
        else:
            await store.save(customer, integration, new)

    _with_store(cfg, apply)
    done = "has no position now (its monitors learn again)" if new is None else "has the new position"
    _line(f"{what}: {key} {done}")


@positions_app.command("set")
def set_cmd(
    key: KeyArg,
    position: Annotated[str | None, typer.Option("--position", help="The new position: a JSON object")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A file holding the new position (a JSON object)")] = None,
    config: ConfigOpt = None,
    yes: YesOpt = False,
) -> None:
    """Set an integration's position: its next run reads on from there. Refused while it runs."""
    if (position is None) == (file is None):
        _fail("give the new position with exactly one of --position JSON or --file F", code=2)
    try:
        raw = position.encode() if position is not None else cast(Path, file).read_bytes()
        doc = orjson.loads(raw)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}", code=2)
    except orjson.JSONDecodeError as exc:
        _fail(f"the position is not JSON: {exc}", code=2)
    if not isinstance(doc, dict):
        _fail(f"a position is a JSON object, not {type(doc).__name__}: {orjson.dumps(doc).decode()[:200]}", code=2)
    sup_cfg, known = _load(config)
    _change(sup_cfg, known, key, doc, yes)


@positions_app.command("reset")
def reset_cmd(key: KeyArg, config: ConfigOpt = None, yes: YesOpt = False) -> None:
    """Forget an integration's position: its next run reads from the start. Refused while it runs."""
    sup_cfg, known = _load(config)
    _change(sup_cfg, known, key, None, yes)
