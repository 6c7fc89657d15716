"""``inlet dlq``: list, show and replay the dead-letter queue of a config's sink (outbox or Kafka), see
:mod:`inlet.core.dlq`. Messages and payloads are shown redacted: secrets always, PHI for healthcare plugins."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer
from rich.table import Table

from inlet.core.cli_common import ConfigOpt, config_dir, err, fail_config, out
from inlet.core.config import LoadedIntegration, SupervisorConfig, check_config
from inlet.core.dlq import (
    SCAN_LIMIT,
    DlqEntry,
    ReplayReport,
    filter_entries,
    parse_since,
    preview,
    read_dlq,
    replay,
    scrub,
)
from inlet.core.errors import DlqError, InletError
from inlet.core.metrics import OTHER_REASON, Reason
from inlet.core.secrets import mask

__all__ = ["dlq_app", "top_reasons"]

dlq_app = typer.Typer(no_args_is_help=True, help="The dead-letter queue: list, show and replay DLQ records.")

IntegrationArg = Annotated[str | None, typer.Argument(metavar="[CUSTOMER/INTEGRATION]", help="Only this integration")]
StageOpt = Annotated[str | None, typer.Option("--stage", help="Only this stage (decode, map, validate, sink, read)")]
ErrorTypeOpt = Annotated[str | None, typer.Option("--error-type", help="Only this error type (e.g. MappingError)")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Only records written since: ISO 8601 time, or a duration (2h, 30m, 3d)")
]
ScanOpt = Annotated[int, typer.Option("--scan-limit", help="Read at most this many DLQ records from the sink")]

MESSAGE_CHARS = 100
"""A message in the ``list`` table and the run summary; ``show`` and ``--json`` print all of it (up to the 4 KiB a
DLQ header keeps)."""
TOP_REASONS = 5
"""How many DLQ reasons the run summary names per integration."""


def top_reasons(key: str, reasons: Counter[Reason], n: int = TOP_REASONS) -> list[str]:
    """The run summary's lines for an integration's most frequent DLQ reasons (stage, error type, message), the
    rest summed up in one line; messages shortened, secrets masked."""
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0] == OTHER_REASON, kv[0]))
    lines = [
        f"{key}: DLQ reason {count}x {stage} {error_type}: {_short(mask(message))}"
        for (stage, error_type, message), count in ranked[:n]
        if (stage, error_type, message) != OTHER_REASON
    ]
    rest = [(r, c) for r, c in ranked if r == OTHER_REASON or r not in dict(ranked[:n])]
    if rest:
        total = sum(c for _, c in rest)
        lines.append(f"{key}: DLQ reason {total}x more, other reasons: inlet dlq list {key}")
    return lines


def _load(config: Path | None, only: list[str] | None, *, offline: bool) -> tuple[SupervisorConfig, list[Any]]:
    sup_cfg, loaded, errors = check_config(config_dir(config), only=only, offline=offline)
    if errors:
        fail_config(errors)
    assert sup_cfg is not None
    return sup_cfg, loaded


def _read(sup_cfg: SupervisorConfig, loaded: list[LoadedIntegration], scan_limit: int) -> list[DlqEntry]:
    try:
        return read_dlq(sup_cfg, loaded, limit=scan_limit)
    except InletError as exc:  # Kafka not reachable, or refusing inlet
        err.print(f"cannot read the DLQ: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except DlqError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(2) from None


def _phi(loaded: list[LoadedIntegration]) -> dict[str, bool]:
    return {i.config.key: i.plugin.phi for i in loaded}


def _short(text: str, n: int = MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _doc(e: DlqEntry, phi: bool) -> dict[str, Any]:
    return {
        "id": e.id,
        "integration": e.key,
        "at": e.at.isoformat() if e.at else None,
        "where": e.where,
        "stage": e.stage,
        "error_type": e.error_type,
        "message": scrub(e.message, phi=phi),
        "source_key": scrub(e.source_key, phi=phi) if e.source_key else None,
        "position": e.position,
        "payload_bytes": len(e.payload),
        "digest": e.digest,
        "copies": e.copies,
        "resolved": e.resolved,
    }


@dlq_app.command("list")
def dlq_list(
    integration: IntegrationArg = None,
    config: ConfigOpt = None,
    stage: StageOpt = None,
    error_type: ErrorTypeOpt = None,
    since: SinceOpt = None,
    state: Annotated[
        Literal["all", "open", "resolved"], typer.Option("--state", help="open: not resolved by a replay")
    ] = "all",
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show the newest N")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON document per line")] = False,
    scan_limit: ScanOpt = SCAN_LIMIT,
) -> None:
    """List DLQ records (newest last): id, when, stage, error type, message, and whether a replay resolved them."""
    sup_cfg, loaded = _load(config, [integration] if integration else None, offline=True)
    when = _since(since)
    entries = filter_entries(_read(sup_cfg, loaded, scan_limit), stage=stage, error_type=error_type, since=when)
    entries = [e for e in entries if state == "all" or (state == "open") == (e.resolved is None)]
    shown = entries[-limit:] if limit > 0 else []
    phi = _phi(loaded)
    if json_out:
        for e in shown:
            sys.stdout.write(orjson.dumps(_doc(e, phi.get(e.key, True))).decode() + "\n")
        return
    table = Table(title=f"DLQ records ({len(shown)} of {len(entries)} matching)")
    for col in ("id", "integration", "written", "stage", "error type", "message", "state"):
        table.add_column(col, overflow="fold" if col == "message" else "ellipsis")
    for e in shown:
        table.add_row(
            e.id,
            e.key,
            e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else "-",
            e.stage,
            e.error_type,
            _short(scrub(e.message, phi=phi.get(e.key, True))),
            "resolved" if e.resolved else "open",
        )
    out.print(table)


@dlq_app.command("show")
def dlq_show(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="The DLQ record's id (its ce_id), or its start")],
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="As one JSON document")] = False,
    scan_limit: ScanOpt = SCAN_LIMIT,
) -> None:
    """Show one DLQ record: its headers, reason, position and a redacted preview of its payload."""
    sup_cfg, loaded = _load(config, None, offline=True)
    found = [e for e in _read(sup_cfg, loaded, scan_limit) if e.id.startswith(record_id.strip())]
    if not found or len(record_id.strip()) < 4:
        err.print(f"no DLQ record with id {record_id!r} in the configured integrations' DLQ", markup=False)
        raise typer.Exit(1)
    if len({e.id for e in found}) > 1:
        err.print(f"{record_id!r} is the start of {len({e.id for e in found})} ids: give more of it", markup=False)
        raise typer.Exit(1)
    phi = _phi(loaded)
    for e in found:  # one per payload: a later version of the same source record failing at the same stage
        p = phi.get(e.key, True)
        headers = {k: scrub(v, phi=p) for k, v in e.headers.items()}
        if json_out:
            doc = {**_doc(e, p), "headers": headers, "payload_preview": preview(e.payload, phi=p)}
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
            continue
        out.print(f"[bold]DLQ record {e.id}[/] of {e.key}", highlight=False)
        lines = [
            ("state", f"resolved ({e.resolved})" if e.resolved else "open"),
            ("written", e.at.isoformat() if e.at else "-"),
            ("where", e.where + (f" (and {e.copies - 1} identical copies)" if e.copies > 1 else "")),
            ("reason", f"{e.stage} {e.error_type}: {scrub(e.message, phi=p)}"),
            ("source key", scrub(e.source_key, phi=p) if e.source_key else "-"),
            ("position", orjson.dumps(e.position).decode() if e.position is not None else "-"),
            ("payload", f"{len(e.payload)} bytes, sha256 {e.digest}…" + (", redacted (PHI)" if p else "")),
        ]
        for name, value in lines:
            out.print(f"{name:>11}: {value}", markup=False, highlight=False, soft_wrap=True)
        out.print("headers:", highlight=False)
        for k, v in headers.items():
            out.print(f"  {k}: {v}", markup=False, highlight=False, soft_wrap=True)
        out.print("payload preview:", highlight=False)
        out.print(preview(e.payload, phi=p), markup=False, highlight=False, soft_wrap=True)


@dlq_app.command("replay")
def dlq_replay(
    integration: Annotated[str, typer.Argument(metavar="CUSTOMER/INTEGRATION")],
    config: ConfigOpt = None,
    stage: StageOpt = None,
    error_type: ErrorTypeOpt = None,
    since: SinceOpt = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="Only this DLQ record (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen; send and mark nothing")] = False,
    scan_limit: ScanOpt = SCAN_LIMIT,
) -> None:
    """Send DLQ records of CUSTOMER/INTEGRATION through its (fixed) plugin again, into the configured sink.

    Events get the ids a first delivery would have had; a record is marked resolved once the sink acknowledged
    its events, and is not replayed again. A record that still fails stays in the DLQ (reported, not rewritten).
    Exit code 1 when a record still fails or the sink refused an event."""
    sup_cfg, loaded = _load(config, [integration], offline=False)
    item: LoadedIntegration = loaded[0]
    when = _since(since)
    entries = filter_entries(_read(sup_cfg, loaded, scan_limit), stage=stage, error_type=error_type, since=when)
    if ids:
        entries = [e for e in entries if any(e.id.startswith(i) for i in ids)]
    try:
        report = asyncio.run(replay(sup_cfg, item, entries, dry_run=dry_run))
    except InletError as exc:
        err.print(f"replay stopped: {type(exc).__name__}: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _report(item, report, dry_run=dry_run)
    if report.count("failed") or report.count("refused"):
        raise typer.Exit(1)


def _report(item: LoadedIntegration, report: ReplayReport, *, dry_run: bool) -> None:
    phi = item.plugin.phi
    for o in report.outcomes:
        if o.status in ("resolved", "filtered", "would resolve", "would filter"):
            what = f"{len(o.event_ids)} event(s)" if "resolve" in o.status else f"filtered: {o.reason}"
            line = f"  {o.status}: {o.entry.id} ({scrub(o.entry.source_key or '-', phi=phi)}): {what}"
        else:
            line = (
                f"  {o.status}: {o.entry.id} ({scrub(o.entry.source_key or '-', phi=phi)}): {scrub(o.reason, phi=phi)}"
            )
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    key = item.config.key
    if not report.outcomes:
        said = f"nothing to replay for {key}"
    elif dry_run:
        said = (
            f"dry run for {key}: {report.count('would resolve')} would be resolved, "
            f"{report.count('would filter')} filtered, {report.count('failed')} still fail, "
            f"{report.count('skipped')} cannot be replayed; nothing sent, nothing marked"
        )
    else:
        events = sum(len(o.event_ids) for o in report.outcomes if o.status == "resolved")
        said = (
            f"replayed {len(report.outcomes)} DLQ record(s) of {key}: {report.count('resolved')} resolved "
            f"({events} events), {report.count('filtered')} now filtered, {report.count('failed')} still fail "
            f"(left in the DLQ), {report.count('refused')} refused by the sink, {report.count('skipped')} cannot be "
            "replayed"
        )
    if report.already:
        said += f"; {report.already} already resolved by an earlier replay: nothing done for them"
    out.print(said, markup=False, highlight=False, soft_wrap=True)
