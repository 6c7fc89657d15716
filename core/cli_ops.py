"""``inlet status`` and ``inlet pause|resume|restart``: the running supervisor, through its API (``core.api``).
The helpers to find and ask the API (:func:`api_url`, :func:`api_get`, :func:`quoted_key`) serve ``inlet monitors``
(``core.cli_monitors``) too.

Where the API is: ``--url``, else ``INLET_API_URL``, else ``http://<metrics_host>:<metrics_port>`` of the config's
``inlet.yaml`` (``0.0.0.0`` / ``::`` read as loopback). The actions send ``Authorization: Bearer <token>``, the
token read from ``--token-file`` or ``INLET_API_TOKEN``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer
from rich.live import Live
from rich.table import Table

from inlet.core.cli_common import ConfigOpt, config_dir, err, out, supervisor_only

__all__ = ["UrlOpt", "action_cmd", "api_get", "api_url", "quoted_key", "status_cmd", "status_table"]

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The supervisor's API, e.g. http://127.0.0.1:9108 (default: INLET_API_URL, else metrics_host:metrics_port "
        "of inlet.yaml)",
    ),
]
TIMEOUT_SECONDS = 15.0
MAX_ERROR_CHARS = 60


def api_url(url: str | None, config: Path | None) -> str:
    """The API's base URL: ``--url``, ``INLET_API_URL``, or the config's metrics port (exit 2 when none)."""
    found = url or os.environ.get("INLET_API_URL")
    if found:
        return found.rstrip("/")
    cfg = supervisor_only(config_dir(config))
    if cfg.metrics_port is None or cfg.metrics_port == 0:
        err.print(
            "[red]no API address: inlet.yaml sets no metrics_port; pass --url or set INLET_API_URL[/]", highlight=False
        )
        raise typer.Exit(2)
    host = cfg.metrics_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - where it listens on every interface, loopback is one
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.metrics_port}"


def _request(method: str, url: str, *, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
            response = client.request(method, url, headers=headers)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach the supervisor's API at {url}: {exc}[/]", highlight=False)
        err.print("is `inlet run` running with metrics_port set? (--url / INLET_API_URL point elsewhere)")
        raise typer.Exit(1) from None
    try:
        return response.status_code, orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.status_code, {"error": response.text[:500]}


def api_get(url: str) -> tuple[int, Any]:
    """``GET url`` of the supervisor's API: the status code and the JSON body; exit 1 when it cannot be reached."""
    return _request("GET", url)


def quoted_key(key: str) -> str:
    """``CUSTOMER/INTEGRATION`` (a slot: ``INTEGRATION#SLOT``) as the API's two path segments; exit 2 otherwise."""
    customer, sep, integration = key.partition("/")
    if not sep or not customer or not integration or "/" in integration:
        err.print(f"[red]expected CUSTOMER/INTEGRATION, got {key!r}[/]", highlight=False)
        raise typer.Exit(2)
    return f"{quote(customer, safe='')}/{quote(integration, safe='')}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def status_table(doc: dict[str, Any]) -> Table:
    """The status document (``core.status``) as a table, one row per integration."""
    ready = "[green]ready[/]" if doc.get("ready") else "[red]not ready[/]"
    table = Table(title=f"inlet: {ready} (sink: {doc.get('sink', '?')})", title_justify="left")
    for name in ("integration", "state", "health", "lag s", "events/s", "in", "out", "dlq", "filtered", "restarts"):
        table.add_column(name, justify="right" if name not in ("integration", "state", "health") else "left")
    table.add_column("last success")
    table.add_column("last error", overflow="fold")
    for i in doc.get("integrations", []):
        c = i["counts"]
        error = i.get("unhealthy_reason") or i.get("last_error") or ""
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        table.add_row(
            i["key"],
            i["state"],
            "[green]healthy[/]" if i.get("healthy") else "[red]unhealthy[/]",
            _fmt(i.get("lag_seconds")),
            f"{i.get('events_per_second', 0):,.1f}",
            str(c["records_in"]),
            str(c["events_out"]),
            str(c["dlq"]),
            str(c["filtered"]),
            str(i["restarts"]),
            i.get("last_success") or "-",
            error.replace("[", "\\["),
        )
    return table


def _fetch_status(base: str) -> dict[str, Any]:
    code, doc = _request("GET", f"{base}/api/integrations")
    if code != 200 or not isinstance(doc, dict):
        err.print(f"[red]the API answered {code}: {doc.get('error') if isinstance(doc, dict) else doc}[/]")
        raise typer.Exit(1)
    return doc


def status_cmd(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every --interval seconds until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch", min=0.5)] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status document as JSON")] = False,
    fleet: Annotated[
        bool, typer.Option("--fleet", help="Which replica of the config's fleet runs what (asks Kafka's group)")
    ] = False,
) -> None:
    """What the running supervisor's integrations are doing: state, health, lag, rates, counts, last error."""
    if fleet:
        fleet_status(config, as_json=as_json)
        return
    base = api_url(url, config)
    if as_json and not watch:
        out.print_json(orjson.dumps(_fetch_status(base)).decode())
        return
    if not watch:
        out.print(status_table(_fetch_status(base)))
        return
    try:
        with Live(status_table(_fetch_status(base)), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                doc = _fetch_status(base)
                if as_json:
                    out.print_json(orjson.dumps(doc).decode())
                else:
                    live.update(status_table(doc), refresh=True)
    except KeyboardInterrupt:
        return


def fleet_status(config: Path | None, *, as_json: bool) -> None:
    """``inlet status --fleet``: every unit of the config and the replica running it, as the group coordinator
    knows it (no replica's API needed: a dead replica's units show as unassigned until the group moves them)."""
    import asyncio

    from inlet.core.cli_common import fail_config
    from inlet.core.config import check_config
    from inlet.core.errors import InletError
    from inlet.core.fleet import owners, units_of

    sup, loaded, errors = check_config(config_dir(config), offline=True)
    if errors:
        fail_config(errors)
    if sup.fleet is None:
        err.print("[red]inlet.yaml has no fleet: section: one supervisor runs every integration[/]")
        raise typer.Exit(2)
    try:
        running = asyncio.run(owners(sup))
    except InletError as exc:
        err.print(f"[red]cannot ask Kafka about fleet {sup.fleet.group}: {exc}[/]", highlight=False)
        raise typer.Exit(1) from None
    units = [u.key for u in units_of(loaded)]
    rows = {key: running.get(key) for key in [*units, *sorted(set(running) - set(units))]}
    if as_json:
        out.print_json(orjson.dumps({"group": sup.fleet.group, "units": rows}).decode())
        return
    table = Table(title=f"fleet {sup.fleet.group}: {len(set(running.values()))} replica(s)", title_justify="left")
    table.add_column("integration")
    table.add_column("replica")
    for key, replica in rows.items():
        table.add_row(key, replica or "[red]unassigned[/]")
    out.print(table)


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            err.print(f"[red]cannot read the token file {token_file}: {exc.strerror}[/]", highlight=False)
            raise typer.Exit(2) from None
    return os.environ.get("INLET_API_TOKEN") or None


def action_cmd(action: str) -> Any:
    """The command for one action (pause, resume, restart)."""
    what = {
        "pause": "Pause an integration: it stops reading once its in-flight batches are committed",
        "resume": "Resume a paused integration: it reads on from its checkpoint",
        "restart": "Restart an integration now, from its checkpoint (resumes a paused one)",
    }[action]

    def command(
        key: Annotated[str, typer.Argument(metavar="CUSTOMER/INTEGRATION", help="The integration")],
        config: ConfigOpt = None,
        url: UrlOpt = None,
        token_file: Annotated[
            Path | None, typer.Option("--token-file", help="File holding the API token (default: INLET_API_TOKEN)")
        ] = None,
    ) -> None:
        quoted = quoted_key(key)
        base = api_url(url, config)
        code, doc = _request("POST", f"{base}/api/integrations/{quoted}/{action}", token=_token(token_file))
        if code != 202:
            message = doc.get("error") if isinstance(doc, dict) else doc
            err.print(f"[red]{action} refused ({code}): {message}[/]", highlight=False)
            raise typer.Exit(1)
        out.print(f"{action}: accepted for {key} (it was {doc.get('state_before')})", highlight=False)

    command.__doc__ = what
    return command
