"""``inlet topics plan`` and ``inlet topics apply``: the Kafka topics a configuration writes (:mod:`inlet.core.topics`).

``plan`` compares them with the cluster and changes nothing: what exists, what is missing, what differs
(partitions, replication, retention / cleanup policy and the other configured settings). ``apply`` creates the
missing ones with their configured settings and reports differences of existing ones without altering them.
Both take ``--config`` and ``--only`` like every command, and need none of the integrations' secrets.

Exit codes: 0 — every topic exists as configured; 1 — something is missing or differs (``plan``), could not be
created or still differs (``apply``), or Kafka could not be reached; 2 — the configuration is wrong.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.table import Table

from inlet.core.cli_common import ConfigOpt, OnlyOpt, config_dir, err, fail_config, out
from inlet.core.config import LoadedIntegration, SupervisorConfig, check_config
from inlet.core.errors import ConfigError, SinkRefused, TransientError

__all__ = ["topics_app"]

topics_app = typer.Typer(
    no_args_is_help=True, help="Kafka topics the configuration writes: plan (compare), apply (create the missing)."
)

_T = TypeVar("_T")


def _load(config: Path | None, only: list[str] | None) -> tuple[SupervisorConfig, list[LoadedIntegration], Path]:

    root = config_dir(config)
    # offline: which contracts an integration produces needs its settings, never its secrets
    sup_cfg, loaded, errors = check_config(root, only=only, offline=True)
    if errors:
        fail_config(errors)
    if sup_cfg.kafka is None:
        fail_config(
            [
                ConfigError(
                    "no Kafka configured: topics are for the Kafka sink and the relay; set "
                    "kafka.bootstrap here or INLET_KAFKA_BOOTSTRAP",
                    file=str(root / "inlet.yaml"),
                    key="kafka",
                )
            ]
        )
    return sup_cfg, loaded, root


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run against Kafka; an outage or a refusal of inlet's credentials is one line and exit 1."""
    from inlet.core.logging import configure_logging

    configure_logging(os.environ.get("INLET_LOG_LEVEL", "warning"))
    try:
        return asyncio.run(coroutine)
    except (TransientError, SinkRefused) as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _shown(configs: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in configs.items())


def _print_plan(plan: Any, title: str) -> None:
    table = Table(title=title)
    for col in ("topic", "kind", "state", "partitions", "replication", "configs", "written by"):
        table.add_column(col, no_wrap=col in ("kind", "state", "partitions", "replication"))
    for s in plan.states:
        spec = s.spec
        state = {"ok": "exists", "missing": "[yellow]missing[/]", "differs": "[red]differs[/]"}[s.status]
        if s.exists:
            partitions = str(s.actual_partitions) + (
                "" if s.actual_partitions == spec.partitions else f" (wanted {spec.partitions})"
            )
            replication = str(s.actual_replication) + (
                "" if s.actual_replication == s.replication_factor else f" (wanted {s.replication_factor})"
            )
        else:
            partitions, replication = str(spec.partitions), str(s.replication_factor)
        table.add_row(spec.name, spec.kind, state, partitions, replication, _shown(s.configs), "\n".join(spec.writers))
    out.print(table)
    for s in plan.states:
        for difference in s.differences:
            out.print(f"  {s.spec.name}: {difference}", markup=False, highlight=False, soft_wrap=True)
        if s.note:
            out.print(f"  {s.spec.name}: {s.note}", markup=False, highlight=False, soft_wrap=True)
    for note in plan.notes:
        out.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)


def _counts(plan: Any) -> str:
    return (
        f"{len(plan.states)} topic(s) on {plan.where}: {len(plan.states) - len(plan.missing)} exist, "
        f"{len(plan.missing)} missing, {len(plan.differing)} differ"
    )


@topics_app.command("plan")
def plan_cmd(config: ConfigOpt = None, only: OnlyOpt = None) -> None:
    """Compare the topics the configuration writes with the cluster: what exists, is missing, differs."""
    from inlet.core.topics import plan_topics, required_topics

    sup_cfg, loaded, root = _load(config, only)
    assert sup_cfg.kafka is not None
    plan = _run(plan_topics(sup_cfg.kafka, required_topics(sup_cfg, loaded)))
    _print_plan(plan, f"topics of {root}")
    out.print(_counts(plan), highlight=False)
    if plan.missing:
        out.print(f"create the missing ones: inlet topics apply --config {root}", highlight=False)
    if plan.differing:
        out.print(
            "differences are not altered by apply: change them on the cluster, or the configuration", highlight=False
        )
    if plan.missing or plan.differing:
        raise typer.Exit(1)


@topics_app.command("apply")
def apply_cmd(config: ConfigOpt = None, only: OnlyOpt = None) -> None:
    """Create the missing topics with their configured settings; report (never alter) existing ones that differ."""
    from inlet.core.topics import create_missing, plan_topics, required_topics

    sup_cfg, loaded, root = _load(config, only)
    kafka = sup_cfg.kafka
    assert kafka is not None
    specs = required_topics(sup_cfg, loaded)

    async def apply() -> tuple[Any, dict[str, str | None], Any]:
        before = await plan_topics(kafka, specs)
        results = await create_missing(kafka, before)
        return before, results, await plan_topics(kafka, specs) if results else before

    before, results, after = _run(apply())
    for name, problem in results.items():
        if problem is None:
            state = next(s for s in before.states if s.spec.name == name)
            out.print(
                f"created {name}: {state.spec.partitions} partition(s), replication {state.replication_factor}, "
                f"{', '.join(f'{k}={v}' for k, v in state.configs.items())}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        else:
            err.print(f"[bold red]not created[/] {name}: {problem}", highlight=False, soft_wrap=True)
    _print_plan(after, f"topics of {root}")
    out.print(_counts(after), highlight=False)
    if after.differing:
        out.print(
            "differences are reported, not altered: change them on the cluster, or the configuration", highlight=False
        )
    if after.missing or after.differing:
        raise typer.Exit(1)
