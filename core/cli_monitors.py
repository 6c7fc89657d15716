"""``inlet monitors``: the data-quality monitors of the running supervisor, through its API (``GET /api/monitors``).

Without a key, one row per integration (or slot) running here: learning or watching, the window in progress against
what its baseline expects, and its open alerts. With ``CUSTOMER/INTEGRATION``, that one's monitors: volume,
freshness, each numeric series and each watched code field (baseline against the window), and its open alerts.
Series names and codes come from upstream values, so they are printed as plain text, never as rich markup.

``--reset`` (an action: it needs the API token, and a confirmation) makes one integration's monitors forget their
baselines after an intended change; its open alerts clear, saying so, and it learns again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from inlet.core.cli_common import ConfigOpt, err, out
from inlet.core.cli_ops import UrlOpt, _request, _token, api_get, api_url, quoted_key
from inlet.core.console import duration, measured, number, share, top_codes

__all__ = ["alerts_table", "monitors_cmd", "monitors_table", "unit_tables"]


def _learning(doc: dict[str, Any]) -> str:
    if doc.get("learning"):
        return f"learning until {doc.get('learning_until') or 'its first event'}"
    return "watching"


def _codes(counts: dict[str, float], total: float | None = None) -> Text:
    """The largest codes of ``counts`` with their shares, as plain text (codes are upstream values)."""
    return Text(", ".join(f"{code} {share(n)}" for code, n in top_codes(counts, total)) or "-")


def monitors_table(doc: dict[str, Any]) -> Table:
    """``GET /api/monitors`` as a table, one row per running integration (or slot)."""
    units = doc.get("monitors", [])
    title = f"data-quality monitors on {escape(str(doc.get('replica', '?')))}: {len(units)} running"
    table = Table(title=title, title_justify="left")
    table.add_column("integration")
    table.add_column("learning")
    for name in ("window events", "expected", "open alerts"):
        table.add_column(name, justify="right")
    table.add_column("last event")
    for m in units:
        alerts = len(m.get("open_alerts", []))
        table.add_row(
            Text(m["key"]),
            _learning(m),
            str(m["window"]["events"]),
            number(m["volume"]["expected_in_window"]),
            f"[red]{alerts}[/]" if alerts else "0",
            m["freshness"]["last_event_at"] or "-",
        )
    return table


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    """Open data alerts (``inlet.data_alert`` events), oldest first."""
    table = Table(title=f"open alerts: {len(alerts)}", title_justify="left")
    for name in ("since", "check", "field", "series / code", "expected", "seen", "detail"):
        table.add_column(name, justify="right" if name in ("expected", "seen") else "left", overflow="fold")
    for a in alerts:
        table.add_row(
            a["observed_at"],
            a["check"],
            Text(" ".join(x for x in (a.get("contract"), a.get("field")) if x) or "-"),
            Text(a.get("series") or "-"),
            measured(a["expected"], a["measure"]),
            measured(a["seen"], a["measure"]),
            Text(a["detail"]),
        )
    return table


def unit_tables(doc: dict[str, Any]) -> list[Table]:
    """``GET /api/monitors/{customer}/{integration}``: a summary, the numeric series, the code fields, the alerts."""
    window, volume, fresh = doc["window"], doc["volume"], doc["freshness"]
    summary = Table(title=Text(f"{doc['key']}: {_learning(doc)}"), title_justify="left", show_header=False)
    summary.add_column("monitor")
    summary.add_column("now")
    summary.add_row(
        "volume",
        f"{window['events']} events in the window from {window['start']} ({number(window['seconds'])} s), "
        f"{number(volume['expected_in_window'])} expected; baseline {number(volume['baseline_per_hour'])} per hour",
    )
    summary.add_row(
        "freshness",
        f"last event {fresh['last_event_at'] or '-'}; lag baseline {duration(fresh['lag_baseline_seconds'])}, "
        f"window median {duration(fresh['lag_window_median_seconds'])}",
    )
    numeric = Table(title=f"numeric series: {doc.get('numeric_series', 0)}", title_justify="left")
    for name in ("contract", "field", "series"):
        numeric.add_column(name, overflow="fold")
    for name in ("baseline median", "p05", "p95", "windows", "window median", "values"):
        numeric.add_column(name, justify="right")
    for n in doc["numeric"]:
        band = n["baseline"] or {}
        numeric.add_row(
            Text(n["contract"]),
            Text(n["field"]),
            Text(n["series"]),
            number(band.get("median")),
            number(band.get("p05")),
            number(band.get("p95")),
            str(n["windows_learnt"]),
            number(n["window"]["median"]),
            str(n["window"]["values"]),
        )
    shares = Table(title="codes and missing values", title_justify="left")
    for name in ("monitor", "contract", "field", "baseline (top codes)", "window (top codes)"):
        shares.add_column(name, overflow="fold")
    for sh in doc["shares"]:
        w = sh["window"]
        window_codes = _codes(w["counts"], w["events"])
        window_codes.append(f" ({w['events']} events)", style="dim")
        shares.add_row(sh["monitor"], Text(sh["contract"]), Text(sh["field"]), _codes(sh["baseline"]), window_codes)
    return [summary, numeric, shares, alerts_table(doc["open_alerts"])]


def _get(url: str, key: str | None) -> dict[str, Any]:
    """The API's document; exit 1 with its error (a 404 names the key and why it has no monitors here)."""
    code, doc = api_get(url)
    if code != 200 or not isinstance(doc, dict):
        message = doc.get("error") if isinstance(doc, dict) else doc
        what = "the API answered" if key is None else f"no monitors for {key}"
        err.print(f"{what} ({code}): {message}", style="red", markup=False, highlight=False)
        raise typer.Exit(1)
    return doc


def _reset(base: str, quoted: str, key: str, token_file: Path | None, *, yes: bool, as_json: bool) -> None:
    """Post the reset once confirmed (``--yes``, or yes on a terminal; elsewhere exit 1 having changed nothing),
    with the token and request of the other actions (``inlet pause``)."""
    what = f"forget the data-quality baselines of {key} (its open alerts clear; it learns again)"
    if not yes and not (sys.stdin.isatty() and typer.confirm(f"{what}?", default=False)):
        err.print(f"{key} not reset: nothing changed (pass --yes to reset)", style="red", markup=False, highlight=False)
        raise typer.Exit(1)
    code, doc = _request("POST", f"{base}/api/monitors/{quoted}/reset", token=_token(token_file))
    if code != 202 or not isinstance(doc, dict):
        message = doc.get("error") if isinstance(doc, dict) else doc
        err.print(f"reset refused ({code}): {message}", style="red", markup=False, highlight=False)
        raise typer.Exit(1)
    if as_json:
        out.print_json(orjson.dumps(doc).decode())
        return
    cleared = doc["cleared"]
    out.print(
        Text(f"{key}: baselines forgotten, {cleared} open alert{'' if cleared == 1 else 's'} cleared; learning again")
    )


def monitors_cmd(
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="CUSTOMER/INTEGRATION", help="One integration (a slot: INTEGRATION#SLOT); default: every one"
        ),
    ] = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's monitors document as JSON")] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="Forget the integration's baselines after an intended change (needs the API token)"
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Reset without asking (needed off a terminal)")] = False,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the API token (default: INLET_API_TOKEN)")
    ] = None,
) -> None:
    """The data-quality monitors of the running supervisor: learning or watching, volume, freshness, numeric
    series and codes against their baselines, and the open data alerts. With --reset, one integration's monitors
    forget their baselines and learn again (its open alerts clear)."""
    if reset and key is None:
        err.print("--reset needs CUSTOMER/INTEGRATION: baselines are reset one integration at a time", style="red")
        raise typer.Exit(2)
    quoted = None if key is None else quoted_key(key)
    base = api_url(url, config)
    if reset and key is not None and quoted is not None:
        _reset(base, quoted, key, token_file, yes=yes, as_json=as_json)
        return
    doc = _get(f"{base}/api/monitors" if quoted is None else f"{base}/api/monitors/{quoted}", key)
    if as_json:
        out.print_json(orjson.dumps(doc).decode())
    elif quoted is None:
        out.print(monitors_table(doc))
    else:
        for part in unit_tables(doc):
            out.print(part)
