"""The monitoring files in deploy/: the alerting rules check with promtool, and every metric a dashboard panel or an
alert expression uses is one inlet exports; docker-compose.yml provisions Prometheus and Grafana with them."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from tools.services import ensure_promtool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "inlet-dashboard.json"

# Every module that declares metrics (a test keeps this list complete: see the last test).
METRIC_MODULES = (
    "core.metrics",
    "core.http",
    "core.ratelimit",
    "core.drift",
    "core.monitors",
    "core.gauges",
    "core.supervisor",
    "core.fleet",
)
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}
_METRIC = re.compile(r"\binlet_[a-z0-9_]+\b")
_PROMETHEUS_OWN = {"up"}  # what Prometheus itself records per scrape target


def exported() -> set[str]:
    """The series names inlet serves on /metrics: its modules imported, read from the registry."""
    for module in METRIC_MODULES:
        importlib.import_module(f"inlet.{module}")
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return {n for n in names if n.startswith("inlet_")}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _panel_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"]]
    return exprs


def test_promtool_checks_the_rules_and_the_prometheus_config() -> None:
    promtool = ensure_promtool()
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "InletDown",
        "InletIntegrationNotReady",
        "InletIntegrationStalled",
        "InletRestarting",
        "InletKafkaSinkErrors",
        "InletDeadLetterRate",
        "InletUpstreamDrift",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


@pytest.mark.parametrize("where", ["alerts", "dashboard"])
def test_every_metric_used_is_one_inlet_exports(where: str) -> None:
    exprs = [r["expr"] for r in _rules()] if where == "alerts" else _panel_exprs()
    names = exported()
    used = {m for expr in exprs for m in _METRIC.findall(re.sub(r'"[^"]*"', '""', expr))}
    assert used, exprs
    assert used <= names, f"not exported by inlet: {sorted(used - names)}; inlet exports {sorted(names)}"
    bare = {
        token
        for expr in exprs
        for token in re.findall(r"(?<![\w{,=\"$.])([a-z_:][a-z0-9_:]*)\s*(?:\{|\[|$|\s*[=!<>])", expr)
        if not token.startswith("inlet_")
    }
    assert bare <= _PROMETHEUS_OWN | {"by", "and", "or", "unless", "on", "ignoring", "without"}, bare


def test_the_dashboard_has_a_panel_per_concern_and_covers_every_integration_metric() -> None:
    doc = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in doc["panels"]}
    assert {
        "Events out per second",
        "Records in per second",
        "DLQ records per second, by stage",
        "Lag",
        "Stalled (seconds since the last commit or caught-up pass)",
        "Ready",
    } <= titles
    assert {"Restarts, by error", "Kafka sink errors", "Drift alerts, by kind", "Rate-limit pauses and waits"} <= titles
    used = {m for expr in _panel_exprs() for m in _METRIC.findall(expr)}
    assert exported() - used <= {"inlet_batches_total"}, sorted(exported() - used)
    assert all(p["datasource"]["uid"] == "prometheus" for p in doc["panels"])
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_provisions_prometheus_and_grafana_with_these_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    env = services["supervisor"]["environment"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (target,) = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"supervisor:{env['INLET_METRICS_PORT']}" and env["INLET_METRICS_HOST"] == "0.0.0.0"
    mounts = [v.split(":")[0] for s in ("prometheus", "grafana") for v in services[s]["volumes"]]
    for mount in mounts:
        assert not mount.startswith("./") or (ROOT / mount).exists(), mount
    assert "./deploy/prometheus" in mounts and "./deploy/grafana/inlet-dashboard.json" in mounts
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"


def test_the_metric_modules_are_all_there_are() -> None:
    declaring = set()
    for folder in ("core", "connectors"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if re.search(
                r"^from prometheus_client(\.\w+)* import .*\b(Counter|Gauge|Histogram|Summary|REGISTRY)\b", text, re.M
            ):
                declaring.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert declaring - {"core.health"} <= set(METRIC_MODULES), declaring
