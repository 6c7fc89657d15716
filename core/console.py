"""The web console: server-rendered HTML pages of the status document (``core.status``), read-only.

``/console`` lists every integration (state, health, lag, rates, restarts, last error, open data alerts) with the
open data-quality alerts and the contracts; ``/console/{customer}/{integration}`` shows one: its DLQ reasons,
recent DLQ records with their redacted payload previews, drift alerts, and its data quality (open alerts and each
monitor's baseline against the window in progress, ``Monitors.describe()``). Jinja2 renders them with autoescape
on, so whatever a record, an error message or a series name taken from upstream values holds is shown as text;
the pages carry no script at all (a ``<meta http-equiv="refresh">`` reloads them) and the Content-Security-Policy
in :data:`HEADERS` forbids any, so even a missed escape could not run one.
"""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

__all__ = [
    "HEADERS",
    "REFRESH_SECONDS",
    "TOP_CODES",
    "duration",
    "measured",
    "number",
    "render_integration",
    "render_missing",
    "render_overview",
    "share",
    "top_codes",
]

REFRESH_SECONDS = 5
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
}

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{ refresh }}">
<title>{% block title %}inlet{% endblock %}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.healthy { color: #17692e; font-weight: 600; }
.unhealthy { color: #a1151b; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { white-space: pre-wrap; word-break: break-all; max-width: 70rem; margin: 0; }
.muted { color: #777; }
.alerting { color: #a1151b; font-weight: 600; }
ul.codes { list-style: none; margin: 0; padding: 0; }
td.at { white-space: nowrap; }
</style>
</head>
<body>
<p><a href="/console">inlet console</a> · <span class="muted">refreshes every {{ refresh }} s</span></p>
{% block body %}{% endblock %}
</body>
</html>
"""

_ALERTS = """{% macro header(with_key=false) -%}
<tr>{% if with_key %}<th>integration</th>{% endif %}<th>since</th><th>check</th><th>field</th><th>series / code</th>
<th>expected</th><th>seen</th><th>detail</th></tr>
{%- endmacro %}
{% macro row(a, key=none) -%}
<tr class="data-alert">{% if key is not none %}<td>{{ key }}</td>{% endif %}
<td class="at">{{ a.observed_at }}</td><td class="check">{{ a.check }}</td>
<td class="field">{{ a.contract or "" }}{% if a.field %} {{ a.field }}{% endif %}</td>
<td class="series">{{ a.series or "-" }}</td>
<td class="num expected">{{ measured(a.expected, a.measure) }}</td>
<td class="num seen">{{ measured(a.seen, a.measure) }}</td>
<td class="detail">{{ a.detail }}</td></tr>
{%- endmacro %}
"""

_OVERVIEW = """{% extends "base.html" %}
{% import "alerts.html" as alerts %}
{% block title %}inlet: {{ "ready" if doc.ready else "not ready" }}{% endblock %}
{% block body %}
<h1 id="readiness" class="{{ 'healthy' if doc.ready else 'unhealthy' }}">
{{- "Ready" if doc.ready else "Not ready" -}}
</h1>
<p class="muted">sink: {{ doc.sink }} · generated {{ doc.generated_at }}</p>
<h2>Integrations</h2>
<table id="integrations">
<tr><th>integration</th><th>plugin</th><th>state</th><th>health</th><th>lag (s)</th><th>events/s</th>
<th>records in</th><th>events out</th><th>DLQ</th><th>filtered</th><th>restarts</th><th>data alerts</th>
<th>last success</th><th>last error</th></tr>
{% for i in doc.integrations %}
<tr data-key="{{ i.key }}">
<td><a href="/console/{{ i.customer | urlencode }}/{{ i.integration | urlencode }}">{{ i.key }}</a></td>
<td>{{ i.plugin }}</td>
<td class="state">{{ i.state }}</td>
<td class="health {{ 'healthy' if i.healthy else 'unhealthy' }}">{{ "healthy" if i.healthy else "unhealthy" }}</td>
<td class="num">{{ fmt(i.lag_seconds) }}</td>
<td class="num">{{ i.events_per_second }}</td>
<td class="num">{{ i.counts.records_in }}</td>
<td class="num">{{ i.counts.events_out }}</td>
<td class="num">{{ i.counts.dlq }}</td>
<td class="num">{{ i.counts.filtered }}</td>
<td class="num">{{ i.restarts }}</td>
<td class="num data-alerts{{ ' alerting' if i.open_alerts }}">
<a href="/console/{{ i.customer | urlencode }}/{{ i.integration | urlencode }}#data-quality">
{{- i.open_alerts | length }}</a></td>
<td>{{ i.last_success or "-" }}</td>
<td class="error">{{ i.unhealthy_reason or i.last_error or "" }}</td>
</tr>
{% endfor %}
</table>
<h2>Open data alerts</h2>
<table id="data-alerts">
{{ alerts.header(with_key=true) }}
{% for i in doc.integrations %}{% for a in i.open_alerts %}{{ alerts.row(a, key=i.key) }}{% endfor %}{% endfor %}
{% if not doc.integrations | map(attribute="open_alerts") | select | list %}
<tr><td colspan="8" class="muted">none open</td></tr>
{% endif %}
</table>
<h2>Contracts</h2>
<table id="contracts">
<tr><th>contract</th><th>version</th><th>topic</th><th>written by</th></tr>
{% for c in doc.contracts %}
<tr><td>{{ c.name }}</td><td>{{ c.version }}</td><td>{{ c.topic }}</td><td>{{ c.integrations | join(", ") }}</td></tr>
{% endfor %}
</table>
{% endblock %}
"""

_INTEGRATION = """{% extends "base.html" %}
{% import "alerts.html" as alerts %}
{% block title %}inlet: {{ i.key }}{% endblock %}
{% block body %}
<h1>{{ i.key }}</h1>
<table id="summary">
<tr><th>plugin</th><td>{{ i.plugin }}</td></tr>
<tr><th>state</th><td class="state">{{ i.state }}</td></tr>
<tr><th>health</th><td class="health {{ 'healthy' if i.healthy else 'unhealthy' }}">
{{ "healthy" if i.healthy else "unhealthy" }}{% if i.unhealthy_reason %}: {{ i.unhealthy_reason }}{% endif %}</td></tr>
<tr><th>last success</th><td>{{ i.last_success or "-" }}</td></tr>
<tr><th>lag (s)</th><td>{{ fmt(i.lag_seconds) }}</td></tr>
<tr><th>watermark</th><td>{{ i.watermark or "-" }}{% if i.watermark_age_seconds is not none %}
({{ fmt(i.watermark_age_seconds) }} s old){% endif %}</td></tr>
<tr><th>events/s</th><td>{{ i.events_per_second }}</td></tr>
<tr><th>counts</th><td>{{ i.counts.records_in }} in · {{ i.counts.events_out }} events · {{ i.counts.dlq }} DLQ ·
{{ i.counts.filtered }} filtered</td></tr>
<tr><th>restarts</th><td>{{ i.restarts }}</td></tr>
<tr><th>last error</th><td class="error">{{ i.last_error or "-" }}</td></tr>
</table>
<h2>DLQ reasons</h2>
<table id="dlq-reasons">
<tr><th>stage</th><th>error type</th><th>message</th><th>records</th></tr>
{% for r in i.dlq_reasons %}
<tr><td>{{ r.stage }}</td><td>{{ r.error_type }}</td><td class="reason">{{ r.message }}</td>
<td class="num">{{ r.count }}</td></tr>
{% else %}
<tr><td colspan="4" class="muted">no DLQ records</td></tr>
{% endfor %}
</table>
<h2>Recent DLQ records</h2>
<table id="recent-dlq">
<tr><th>at</th><th>stage</th><th>error type</th><th>message</th><th>payload (redacted preview)</th></tr>
{% for r in i.recent_dlq %}
<tr><td>{{ r.at }}</td><td>{{ r.stage }}</td><td>{{ r.error_type }}</td><td>{{ r.message }}</td>
<td><pre class="payload">{{ r.payload_preview }}</pre>
<span class="muted">{{ r.payload_bytes }} bytes kept</span></td></tr>
{% else %}
<tr><td colspan="5" class="muted">none since the start</td></tr>
{% endfor %}
</table>
<h2>Drift alerts</h2>
<table id="drift">
<tr><th>at</th><th>source key</th><th>changes</th></tr>
{% for d in i.drift_alerts %}
<tr><td>{{ d.at }}</td><td>{{ d.source_key or "-" }}</td>
<td>{% for c in d.changes %}{{ c.path }}: {{ c.kind }} ({{ c.detail }})<br>{% endfor %}</td></tr>
{% else %}
<tr><td colspan="3" class="muted">none since the start</td></tr>
{% endfor %}
</table>
<h2 id="data-quality">Data quality</h2>
{% if m is none %}
<p class="muted" id="no-monitors">No data-quality monitors run for it here (monitors off, or not running here).</p>
{% else %}
<table id="monitor-summary">
<tr><th>learning</th><td>{% if m.learning %}learning until {{ m.learning_until or "its first event" }}: no alerts
before{% else %}watching (learnt by {{ m.learning_until }}){% endif %}</td></tr>
<tr><th>window</th><td>from {{ m.window.start }} ({{ num(m.window.seconds) }} s)</td></tr>
<tr><th>volume</th><td class="volume">{{ m.window.events }} events, {{ num(m.volume.expected_in_window) }} expected
in the window · baseline {{ num(m.volume.baseline_per_hour) }} per hour</td></tr>
<tr><th>freshness</th><td class="freshness">last event {{ m.freshness.last_event_at or "-" }} · lag baseline
{{ duration(m.freshness.lag_baseline_seconds) }}, window median {{ duration(m.freshness.lag_window_median_seconds) }}
</td></tr>
</table>
<h3>Open alerts</h3>
<table id="data-alerts">
{{ alerts.header() }}
{% for a in i.open_alerts %}{{ alerts.row(a) }}{% else %}
<tr><td colspan="7" class="muted">none open</td></tr>
{% endfor %}
</table>
<h3>Numeric series</h3>
<table id="monitor-numeric">
<tr><th>contract</th><th>field</th><th>series</th><th>baseline median</th><th>p05</th><th>p95</th>
<th>windows learnt</th><th>window median</th><th>window values</th></tr>
{% for n in m.numeric %}
<tr><td>{{ n.contract }}</td><td>{{ n.field }}</td><td class="series">{{ n.series }}</td>
{% set b = n.baseline or {"median": none, "p05": none, "p95": none} %}
<td class="num">{{ num(b.median) }}</td><td class="num">{{ num(b.p05) }}</td><td class="num">{{ num(b.p95) }}</td>
<td class="num">{{ n.windows_learnt }}</td>
<td class="num">{{ num(n.window.median) }}</td><td class="num">{{ n.window["values"] }}</td></tr>
{% else %}
<tr><td colspan="9" class="muted">no numeric series watched yet</td></tr>
{% endfor %}
</table>
{% if m.numeric_series > m.numeric | length %}
<p class="muted">{{ m.numeric | length }} of {{ m.numeric_series }} series shown (the API lists the same)</p>
{% endif %}
<h3>Codes and missing values</h3>
<table id="monitor-shares">
<tr><th>monitor</th><th>contract</th><th>field</th><th>baseline (top codes)</th><th>window (top codes)</th></tr>
{% for sh in m.shares %}
<tr><td>{{ sh.monitor }}</td><td>{{ sh.contract }}</td><td>{{ sh.field }}</td>
<td><ul class="codes baseline">{% for code, share in top(sh.baseline) %}<li><span class="code">{{ code }}</span>
{{ percent(share) }}</li>{% else %}<li class="muted">learning</li>{% endfor %}</ul></td>
<td><ul class="codes window">{% for code, share in top(sh.window.counts, sh.window.events) %}<li><span class="code">
{{- code }}</span> {{ percent(share) }}</li>{% endfor %}</ul>
<span class="muted">{{ sh.window.events }} events</span></td></tr>
{% else %}
<tr><td colspan="5" class="muted">no codes or optional fields watched yet</td></tr>
{% endfor %}
</table>
{% endif %}
{% endblock %}
"""

_MISSING = """{% extends "base.html" %}
{% block title %}inlet: not found{% endblock %}
{% block body %}<h1>No integration {{ key }} in this run</h1>{% endblock %}
"""

_ENV = Environment(
    loader=DictLoader(
        {
            "base.html": _BASE,
            "alerts.html": _ALERTS,
            "overview.html": _OVERVIEW,
            "integration.html": _INTEGRATION,
            "missing.html": _MISSING,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)


TOP_CODES = 5
"""Codes shown per field and column on an integration's page and by ``inlet monitors`` (the API has the top 20)."""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def number(value: float | None) -> str:
    """A monitor's number: six significant digits, so a median of 0.0042 and one of 250000 both read right."""
    return "-" if value is None else f"{value:.6g}"


def share(value: float | None) -> str:
    """A share (0..1) as a percentage."""
    return "-" if value is None else f"{value:.1%}"


def duration(seconds: float | None) -> str:
    """Seconds in the unit a person reads them in: a lag of a few seconds, of hours, or of years of backfill."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(seconds) >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.3g} s"


def measured(value: float | None, measure: str) -> str:
    """An alert's expected or seen value in its ``measure`` (``inlet.data_alert``): shares as percentages,
    seconds as a duration, events and values as numbers."""
    if measure == "share":
        return share(value)
    return duration(value) if measure == "seconds" else number(value)


def top_codes(counts: dict[str, float], total: float | None = None) -> list[tuple[str, float]]:
    """The :data:`TOP_CODES` largest of ``counts`` with their shares (of ``total`` when the values are counts)."""
    if total is not None and total <= 0:
        return []
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_CODES]
    return [(code, n / total if total else n) for code, n in ranked]


_ENV.globals.update(
    refresh=REFRESH_SECONDS,
    fmt=_fmt,
    num=number,
    percent=share,
    duration=duration,
    measured=measured,
    top=top_codes,
)


def render_overview(doc: dict[str, Any]) -> str:
    """The ``/console`` page of a status document (``core.status.snapshot``)."""
    return _ENV.get_template("overview.html").render(doc=doc)


def render_integration(item: dict[str, Any], monitors: dict[str, Any] | None = None) -> str:
    """The ``/console/{customer}/{integration}`` page of one integration's status, with its running monitors
    (``core.status.unit_monitors``; None: monitors off or not running here)."""
    return _ENV.get_template("integration.html").render(i=item, m=monitors)


def render_missing(key: str) -> str:
    """The page for an integration this run does not have."""
    return _ENV.get_template("missing.html").render(key=key)
