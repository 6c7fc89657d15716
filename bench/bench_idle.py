"""What an idle integration costs: memory and CPU of ``inlet run`` with N FHIR search integrations between polls.

    .venv/bin/python bench/bench_idle.py                          # N = 1, 100 and 1,000; ~9 min here
    .venv/bin/python bench/bench_idle.py --counts 10,100 --window 10 --poll-interval 40
    .venv/bin/python bench/bench_idle.py --json                   # only the JSON document

For each N: the local FHIR test server (``tools.servers.fhir.FhirTestServer``, in this process, on 127.0.0.1)
serves a small generated data set; a fresh config directory holds N ``fhir.observation_search`` integrations
(``bench-c0000/observations`` ...) against it, ``poll_interval_seconds`` P, the SQLite outbox sink, the probe
port on loopback. ``inlet run --config DIR`` (the real CLI, a child process) starts; this script asks
``/api/integrations`` every 2 s until every integration has committed a batch and is ``caught_up``, then stops
asking (the API's own work would be measured) and measures, from ``/proc/<pid>``:

- **idle**: a ``--window`` of seconds in which no integration polls (checked: the server answered no request in
  it), starting ``--settle`` seconds after the catch-up, once the HTTP pools are released (``core.http``).
  CPU = the on-CPU time of the child's threads over the window; RSS = ``VmRSS`` at its end (``VmHWM``: the peak,
  start-up included), threads and open file descriptors too.
- **poll cycle**: the next P seconds, in which every integration polls once (checked: the server's search count):
  CPU over that window minus the idle rate = the CPU of one poll per integration (search, page parse, the
  duplicate filter, the commit).

The process is then stopped with SIGTERM (bounded) and the next N starts from scratch. The server's CPU is this
process's and is not counted. Every wait is bounded: ``--timeout`` per N for start-up and catch-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inlet.connectors.fhir.synth import generate_dataset  # noqa: E402
from inlet.core import http as core_http  # noqa: E402
from tools.servers.fhir import FhirTestServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = getattr(core_http, "IDLE_RELEASE_SECONDS", 0.0) + 2.0


@dataclass
class Sample:
    """One reading of the child's /proc entries."""

    at: float
    cpu_s: float
    rss_kb: int
    hwm_kb: int
    threads: int
    fds: int


@dataclass
class Result:
    n: int
    poll_interval_s: float
    startup_s: float
    """From spawning ``inlet run`` to every integration caught up once."""
    rss_mb: float
    hwm_mb: float
    rss_per_integration_kb: float
    """(RSS - RSS of the same process with one integration) / (N - 1); see ``--baseline``."""
    idle_window_s: float
    idle_cpu_pct: float
    """Of one core, no poll in the window."""
    idle_cpu_ms_per_s: float
    poll_window_s: float
    polls: int
    poll_cpu_ms_total: float
    """CPU of one poll of every integration (the poll window's CPU minus the idle rate over it)."""
    poll_cpu_ms_per_integration: float
    avg_cpu_pct_at_interval: float
    """Over the poll window: what the process uses on average at this poll interval."""
    threads: int
    fds: int
    idle_requests: int


def _sample(pid: int) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Sample(
        at=time.monotonic(),
        cpu_s=_cpu_s(pid),
        rss_kb=int(fields["VmRSS"].split()[0]),
        hwm_kb=int(fields["VmHWM"].split()[0]),
        threads=int(fields["Threads"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def _cpu_s(pid: int) -> float:
    """CPU seconds of the process: the sum of its threads' on-CPU nanoseconds (``/proc/<pid>/task/*/schedstat``,
    finer than utime + stime's clock ticks, which count 10 ms at a time), else utime + stime."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except OSError:
        total = 0
    if total:
        return total / 1e9
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / TICK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, n: int, base_url: str, port: int, poll_interval: float) -> None:
    (directory / "integrations").mkdir(parents=True)
    (directory / "inlet.yaml").write_text(
        f"sink: outbox\nstate_dir: state\nmetrics_host: 127.0.0.1\nmetrics_port: {port}\n", encoding="utf-8"
    )
    for i in range(n):
        (directory / "integrations" / f"bench-c{i:04d}.observations.yaml").write_text(
            f"customer: bench-c{i:04d}\n"
            "integration: observations\n"
            "plugin: fhir.observation_search\n"
            "zone: Europe/Berlin\n"
            f"poll_interval_seconds: {poll_interval}\n"
            "settings:\n"
            "  page_size: 100\n"
            "  http:\n"
            f"    base_url: {base_url}\n",
            encoding="utf-8",
        )


def _integrations(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/integrations", timeout=30) as resp:
        doc = json.loads(resp.read())
    return list(doc["integrations"])


def _searches(server: FhirTestServer) -> int:
    return sum(1 for r in server.requests if r.kind in ("search", "page"))


def measure(n: int, *, resources: int, poll_interval: float, window: float, timeout: float, settle: float) -> Result:
    data = generate_dataset(resources, seed=1).all_resources()
    observations = [r for r in data if r.get("resourceType") == "Observation"]
    with FhirTestServer(observations) as server, tempfile.TemporaryDirectory(prefix="inlet-idle-") as tmp:
        port = _free_port()
        config = Path(tmp) / "config"
        write_config(config, n, server.base_url, port, poll_interval)
        log_path = Path(tmp) / "inlet.log"
        # The child runs the tree this script is in (a copy of the repository measures that copy's code).
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "INLET_LOG_FORMAT": "json", "INLET_LOG_LEVEL": "warning", "PYTHONPATH": path}
        env.pop("INLET_KAFKA_BOOTSTRAP", None)
        started = time.monotonic()
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "inlet", "run", "--config", str(config), "--no-progress"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp,
            )
        try:
            return _run(n, child, server, port, started, poll_interval, window, timeout, log_path, settle)
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(timeout=10)


def _run(
    n: int,
    child: subprocess.Popen[bytes],
    server: FhirTestServer,
    port: int,
    started: float,
    poll_interval: float,
    window: float,
    timeout: float,
    log_path: Path,
    settle: float,
) -> Result:
    deadline = started + timeout
    first_caught_up: float | None = None
    while True:
        if child.poll() is not None:
            raise SystemExit(f"inlet run exited with {child.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"N={n}: not every integration caught up within {timeout:g} s")
        time.sleep(2.0)
        try:
            items = _integrations(port)
        except OSError:
            continue  # the probe port is not up yet
        done = [i for i in items if i["state"] == "caught_up" and i["last_success"] is not None]
        if done and first_caught_up is None:
            first_caught_up = time.monotonic()
        if len(items) == n and len(done) == n:
            break
    assert first_caught_up is not None
    caught_up = time.monotonic()
    startup = caught_up - started
    # The next polls start P s after the first integration caught up (2 s early at most: the API's resolution).
    idle_end = first_caught_up - 2.0 + poll_interval - 1.0
    # After the last integration caught up: its HTTP pool is released IDLE_RELEASE_SECONDS later (core.http),
    # part of the poll's cost, counted in the poll window below, not in the idle one.
    idle_start = caught_up + settle
    if idle_end - idle_start < 3.0:  # the last one caught up too long after the first
        raise SystemExit(
            f"N={n}: the catch-up took {caught_up - first_caught_up:.0f} s; no idle window is left before the "
            f"next polls: raise --poll-interval above {poll_interval:g}"
        )
    idle_len = min(window, idle_end - idle_start)
    time.sleep(max(0.0, idle_start - time.monotonic()))
    requests_before = _searches(server)
    a = _sample(child.pid)
    time.sleep(idle_len)
    b = _sample(child.pid)
    idle_requests = _searches(server) - requests_before
    idle_rate = (b.cpu_s - a.cpu_s) / (b.at - a.at)
    # One full poll cycle: every integration polls once within P s (its pass takes milliseconds).
    time.sleep(max(0.0, first_caught_up - 2.0 + poll_interval - 0.5 - time.monotonic()))
    c = _sample(child.pid)
    before = _searches(server)
    time.sleep(poll_interval)
    d = _sample(child.pid)
    polls = _searches(server) - before
    poll_cpu = (d.cpu_s - c.cpu_s) - idle_rate * (d.at - c.at)
    return Result(
        n=n,
        poll_interval_s=poll_interval,
        startup_s=round(startup, 1),
        rss_mb=round(b.rss_kb / 1024, 1),
        hwm_mb=round(b.hwm_kb / 1024, 1),
        rss_per_integration_kb=0.0,
        idle_window_s=round(b.at - a.at, 1),
        idle_cpu_pct=round(100 * idle_rate, 2),
        idle_cpu_ms_per_s=round(1000 * idle_rate, 1),
        poll_window_s=round(d.at - c.at, 1),
        polls=polls,
        poll_cpu_ms_total=round(1000 * poll_cpu, 1),
        poll_cpu_ms_per_integration=round(1000 * poll_cpu / max(1, polls), 2),
        avg_cpu_pct_at_interval=round(100 * (d.cpu_s - c.cpu_s) / (d.at - c.at), 2),
        threads=b.threads,
        fds=b.fds,
        idle_requests=idle_requests,
    )


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000", help="comma-separated N (default 100,1000)")
    parser.add_argument("--baseline", type=int, default=1, help="N of the reference run for RSS per integration")
    parser.add_argument("--resources", type=int, default=20, help="Observations the server holds (default 20)")
    parser.add_argument("--poll-interval", type=float, default=60.0, help="poll_interval_seconds (default 60)")
    parser.add_argument("--window", type=float, default=20.0, help="idle window, seconds (default 20)")
    parser.add_argument("--timeout", type=float, default=300.0, help="start-up and catch-up bound per N")
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE_SECONDS,
        help="seconds after the catch-up before the idle window (default: core.http's pool release + 2)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON document")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    m = machine()
    say = (lambda *_: None) if args.json else print
    say(
        f"machine: {m['nproc']} cores, {m['cpu_model']}; Python {m['python']}; load average at start "
        f"{m['loadavg_at_start']}"
    )
    say(f"command: {' '.join([sys.executable, *sys.argv])}")
    kw = {
        "settle": args.settle,
        "resources": args.resources,
        "poll_interval": args.poll_interval,
        "window": args.window,
        "timeout": args.timeout,
    }
    base = measure(args.baseline, **kw) if args.baseline > 0 else None
    results = []
    for n in counts:
        r = measure(n, **kw)
        if base is not None and n > base.n:
            r.rss_per_integration_kb = round((r.rss_mb - base.rss_mb) * 1024 / (n - base.n), 1)
        else:
            r.rss_per_integration_kb = round(r.rss_mb * 1024 / n, 1)
        results.append(r)
        if r.idle_requests:
            say(f"warning: N={n}: {r.idle_requests} requests fell into the idle window")
    rows = ([base] if base is not None else []) + results
    say()
    say(
        "| N | start-up s | RSS MB | peak MB | RSS per integration KB | idle CPU % of one core | "
        "poll cycle CPU ms (per integration) | avg CPU % at P | threads | fds |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = "(baseline)" if base is not None and r is base else f"{r.rss_per_integration_kb:,.1f}"
        say(
            f"| {r.n:,} | {r.startup_s} | {r.rss_mb} | {r.hwm_mb} | {per} | {r.idle_cpu_pct} | "
            f"{r.poll_cpu_ms_total:,.0f} ({r.poll_cpu_ms_per_integration}; {r.polls} polls) | "
            f"{r.avg_cpu_pct_at_interval} | {r.threads} | {r.fds} |"
        )
    say(
        f"\nP = {args.poll_interval:g} s; idle window {args.window:g} s with no poll; RSS per integration = "
        f"(RSS - RSS at N={args.baseline}) / (N - {args.baseline}). Goal: 1,000 integrations < 512 MB and < 5 % "
        "of one core idle."
    )
    doc = {"machine": m, "command": sys.argv, "results": [asdict(r) for r in rows]}
    print(json.dumps(doc) if args.json else "\n" + json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
