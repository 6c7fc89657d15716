"""What every ``inlet`` sub-command module shares: the consoles, the ``--config`` / ``--only`` options, finding the
config directory and reporting configuration problems (exit 2), so the operators' commands (:mod:`.cli`), the
plugin authors' (:mod:`.cli_plugins`), ``topics`` and ``relay`` behave alike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from inlet.core.config import SupervisorConfig, find_config_dir, load_supervisor
from inlet.core.errors import ConfigError

__all__ = ["ConfigOpt", "OnlyOpt", "config_dir", "err", "fail_config", "out", "supervisor_only"]

# Piped output (CI logs, `| less`) is not cut to 80 columns: tables stay readable.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="INLET_CONFIG",
        help="Config directory (inlet.yaml + integrations/*.yaml); default: the nearest folder up with an inlet.yaml",
    ),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        metavar="CUSTOMER/INTEGRATION",
        help="Only this integration (repeatable); the others' settings and secrets are not loaded",
    ),
]


def fail_config(errors: list[ConfigError]) -> NoReturn:
    """List every configuration problem (file, key, what was expected) and exit 2."""
    err.print(f"[bold red]{len(errors)} problem(s) in the configuration:[/]")
    for e in errors:
        err.print(f"  • {e}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def config_dir(config: Path | None) -> Path:
    """``--config`` / ``INLET_CONFIG``, or the nearest ``inlet.yaml`` upwards; exit 2 saying where it looked."""
    try:
        return find_config_dir(config)
    except ConfigError as exc:
        fail_config([exc])


def supervisor_only(config: Path) -> SupervisorConfig:
    """``inlet.yaml`` alone: commands that read state or ship the outbox need no plugin, setting or secret."""
    errors: list[ConfigError] = []
    sup_cfg = load_supervisor(config.resolve(), errors) if config.is_dir() else None
    if sup_cfg is None:
        fail_config([ConfigError("config directory does not exist", file=str(config))])
    if errors:
        fail_config(errors)
    return sup_cfg
