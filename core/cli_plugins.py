"""The plugin authors' commands: ``inlet plugins`` (what is installed, what it takes) and ``inlet new``.

Kept apart from :mod:`inlet.core.cli` (the operators' commands) so each stays readable; both are one
``inlet`` command line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from inlet.core.cli_common import err, out
from inlet.core.errors import ConfigError

__all__ = ["new_app", "plugins_app"]

plugins_app = typer.Typer(help="Installed connector plugins: families, customers, settings.")
new_app = typer.Typer(no_args_is_help=True, help="Start something new from a scaffold.")


def _fail(exc: ConfigError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


@plugins_app.callback(invoke_without_command=True)
def plugins_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False
) -> None:
    """List every plugin: name, family, distribution and version, contracts produced."""
    if ctx.invoked_subcommand is not None:
        return
    from inlet.core.registry import family_of, origin_of, plugins

    rows: list[dict[str, Any]] = []
    for name, cls in sorted(plugins().items()):
        origin = origin_of(name)
        rows.append(
            {
                "name": name,
                "family": family_of(cls),
                "distribution": origin.distribution,
                "version": origin.version,
                "contracts": [f"{m.contract_name} {m.contract_version}" for m in cls.contracts],
                "description": cls.description,
            }
        )
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = Table(title="plugins")
    for col in ("plugin", "family", "distribution", "contracts"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["name"], row["family"], f"{row['distribution']} {row['version']}", "\n".join(row["contracts"]) or "-"
        )
    out.print(table)


@plugins_app.command("show")
def plugins_show(
    name: str, schema: Annotated[bool, typer.Option("--schema", help="The settings as JSON Schema")] = False
) -> None:
    """One plugin's settings: every key with its type, default and documentation (or its JSON Schema)."""
    from inlet.core.registry import family_of, find_plugin, origin_of
    from inlet.core.settings_doc import setting_rows

    try:
        cls = find_plugin(name)
    except ConfigError as exc:
        _fail(exc)
        return
    model = cls.settings_model
    if schema:
        sys.stdout.write(orjson.dumps(model.model_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    origin = origin_of(name)
    out.print(
        f"[bold]{name}[/] ({family_of(cls)} family, {origin.distribution} {origin.version}): "
        f"{cls.description or cls.__doc__ or ''}",
        highlight=False,
    )
    out.print(
        f"class {cls.__module__}.{cls.__qualname__}; settings {model.__name__}; contracts: "
        + (", ".join(f"{m.contract_name} {m.contract_version}" for m in cls.contracts) or "-"),
        highlight=False,
    )
    table = Table(title=f"settings: of {name}")
    for col in ("setting", "type", "default", "about"):
        table.add_column(col, overflow="fold")
    for row in setting_rows(model):
        table.add_row(*(Text(cell) for cell in (row.path, row.type, row.default, row.doc)))  # [kind=...] is no markup
    out.print(table)


@new_app.command("customer")
def new_customer_cmd(
    name: Annotated[str, typer.Argument(help="The customer's slug, e.g. acme-hospital")],
    family: Annotated[str | None, typer.Option(help="The connector family (see `inlet new families`)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Start from this existing customer instead")] = None,
    integration: Annotated[str | None, typer.Option(help="Integration name (default: the family's)")] = None,
    config: Annotated[
        Path,
        typer.Option("--config", "-c", envvar="INLET_CONFIG", help="Config directory the integration YAML goes to"),
    ] = Path("."),
    plugins_dir: Annotated[Path, typer.Option(help="Where the plugin module goes")] = Path("connectors/customers"),
    fixtures: Annotated[Path, typer.Option(help="Fixtures root")] = Path("fixtures"),
) -> None:
    """Scaffold a customer: plugin module, documented integration YAML, fixtures README."""
    from inlet.core.scaffold import new_customer

    if (family is None) == (from_ is None):
        _fail(ConfigError("give exactly one of --family FAMILY or --from EXISTING-CUSTOMER"))
    try:
        made = new_customer(
            name,
            family=family,
            integration=integration,
            existing=from_,
            plugins_dir=plugins_dir,
            config=config,
            fixtures=fixtures,
        )
    except ConfigError as exc:
        _fail(exc)
        return
    out.print(f"created customer {name} (plugin {made.plugin}):", highlight=False)
    for path in made.files:
        out.print(f"  {path}", highlight=False)
    out.print(
        f"next: fill in the YAML, write the hooks marked 'not configured yet', then `inlet check --config {config}`",
        highlight=False,
    )


@new_app.command("families")
def new_families() -> None:
    """The families `inlet new customer --family` can start from, and the hooks each generates."""
    from inlet.core.scaffold import families

    table = Table(title="families")
    for col in ("family", "base class", "hooks to write", "settings model"):
        table.add_column(col)
    for fam, cls in families().items():
        scaffold: Any = cls.__dict__["scaffold"]
        table.add_row(
            fam,
            f"{cls.__module__}.{cls.__qualname__}",
            ", ".join(scaffold.hooks) or "(settings only)",
            cls.settings_model.__name__,
        )
    out.print(table)
