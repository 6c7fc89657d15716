"""The web console: server-rendered HTML pages of the status document (``core.status``), read-only.

``/console`` lists every integration (state, health, lag, rates, restarts, last error) with the contracts;
``/console/{customer}/{integration}`` shows one: its DLQ reasons, recent DLQ records with their redacted payload
previews, and drift alerts. Jinja2 renders them with autoescape on, so whatever a record or an error message
holds is shown as text; the pages carry no script at all (a ``<meta http-equiv="refresh">`` reloads them) and the
Content-Security-Policy in :data:`HEADERS` forbids any, so even a missed escape could not run one.
"""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, select_autoescape

__all__ = ["HEADERS", "REFRESH_SECONDS", "render_integration", "render_missing", "render_overview"]

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
</style>
</head>
<body>
<p><a href="/console">inlet console</a> · <span class="muted">refreshes every {{ refresh }} s</span></p>
{% block body %}{% endblock %}
</body>
</html>
"""

_OVERVIEW = """{% extends "base.html" %}
{% block title %}inlet: {{ "ready" if doc.ready else "not ready" }}{% endblock %}
{% block body %}
<h1 id="readiness" class="{{ 'healthy' if doc.ready else 'unhealthy' }}">
{{- "Ready" if doc.ready else "Not ready" -}}
</h1>
<p class="muted">sink: {{ doc.sink }} · generated {{ doc.generated_at }}</p>
<h2>Integrations</h2>
<table id="integrations">
<tr><th>integration</th><th>plugin</th><th>state</th><th>health</th><th>lag (s)</th><th>events/s</th>
<th>records in</th><th>events out</th><th>DLQ</th><th>filtered</th><th>restarts</th><th>last success</th>
<th>last error</th></tr>
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
<td>{{ i.last_success or "-" }}</td>
<td class="error">{{ i.unhealthy_reason or i.last_error or "" }}</td>
</tr>
{% endfor %}
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
{% endblock %}
"""

_MISSING = """{% extends "base.html" %}
{% block title %}inlet: not found{% endblock %}
{% block body %}<h1>No integration {{ key }} in this run</h1>{% endblock %}
"""

_ENV = Environment(
    loader=DictLoader(
        {"base.html": _BASE, "overview.html": _OVERVIEW, "integration.html": _INTEGRATION, "missing.html": _MISSING}
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


_ENV.globals.update(refresh=REFRESH_SECONDS, fmt=_fmt)


def render_overview(doc: dict[str, Any]) -> str:
    """The ``/console`` page of a status document (``core.status.snapshot``)."""
    return _ENV.get_template("overview.html").render(doc=doc)


def render_integration(item: dict[str, Any]) -> str:
    """The ``/console/{customer}/{integration}`` page of one integration's status."""
    return _ENV.get_template("integration.html").render(i=item)


def render_missing(key: str) -> str:
    """The page for an integration this run does not have."""
    return _ENV.get_template("missing.html").render(key=key)
