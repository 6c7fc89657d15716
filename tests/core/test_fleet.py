"""A fleet of supervisors: the weighted, sticky assignment, and replicas sharing integrations on a real Kafka."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.fleet import Member, owners, plan
from inlet.core.monitors import STATE_SUFFIX
from tests.helpers import consume, owners_when, start_supervisor, supervisor_log
from tools.fleet_config import fleet_roots
from tools.servers.fhir import FhirTestServer

# --- the assignment (pure) ----------------------------------------------------------------------------------


def _members(n: int, units: dict[str, float], owned: dict[int, list[str]] | None = None) -> dict[str, Member]:
    return {f"m{i}": Member(f"r{i}", units, (owned or {}).get(i, [])) for i in range(n)}


def _load(shares: dict[str, list[str]], units: dict[str, float]) -> dict[str, float]:
    return {m: sum(units[k] for k in keys) for m, keys in shares.items()}


@given(
    weights=st.lists(st.sampled_from([0.5, 1.0, 1.0, 2.0, 5.0]), min_size=0, max_size=40),
    members=st.integers(min_value=1, max_value=6),
)
@settings(max_examples=200, deadline=None)
def test_every_unit_is_given_to_exactly_one_member_and_load_is_fair(weights: list[float], members: int) -> None:
    units = {f"c/i{n}": w for n, w in enumerate(weights)}
    shares = plan(_members(members, units))
    given_out = [k for keys in shares.values() for k in keys]
    assert sorted(given_out) == sorted(units)
    if units:
        loads = _load(shares, units).values()
        # Greedy heaviest-first: no member is more than one heaviest unit above the lightest one.
        assert max(loads) - min(loads) <= max(units.values()) + 1e-9


def test_a_member_only_gets_what_it_has_configured() -> None:
    members = {
        "a": Member("ra", {"c/x": 1.0, "c/y": 1.0}),
        "b": Member("rb", {"c/x": 1.0, "c/y": 1.0, "c/new": 1.0}),  # a rolling deploy: only b knows c/new
    }
    shares = plan(members)
    assert "c/new" in shares["b"]
    assert sorted(shares["a"] + shares["b"]) == ["c/new", "c/x", "c/y"]


def test_stickiness_keeps_units_where_they_ran_and_a_new_member_takes_a_fair_share() -> None:
    units = {f"c/i{n}": 1.0 for n in range(12)}
    first = plan(_members(3, units))
    owned = {i: first[f"m{i}"] for i in range(3)}
    again = plan(_members(3, units, owned))
    assert again == first  # nothing changed: nothing moves
    grown = plan(_members(4, units, owned))  # a fourth replica joins
    assert len(grown["m3"]) == 3
    moved = sum(1 for i in range(3) for k in grown[f"m{i}"] if k not in first[f"m{i}"])
    assert moved == 0  # the old members only gave units away
    assert sorted(k for keys in grown.values() for k in keys) == sorted(units)


def test_weights_count_and_slots_of_one_integration_spread() -> None:
    units = {"c/hub#0": 5.0, "c/hub#1": 5.0, "c/hub#2": 5.0, **{f"c/nightly{n}": 1.0 for n in range(6)}}
    shares = plan(_members(3, units))
    for keys in shares.values():
        assert sum(1 for k in keys if k.startswith("c/hub#")) == 1  # one slot of the hub per replica
    loads = _load(shares, units)
    assert max(loads.values()) - min(loads.values()) <= 1.0


def test_integrations_sharing_a_rate_limited_upstream_run_on_one_replica() -> None:
    units = {f"c/i{n}": 1.0 for n in range(8)}
    bundle = {"c/i0": "c https://ehr:443", "c/i1": "c https://ehr:443", "c/i2": "c https://ehr:443"}
    members = {f"m{i}": Member(f"r{i}", units, (), bundle) for i in range(3)}
    shares = plan(members)
    holders = [m for m, keys in shares.items() if {"c/i0", "c/i1", "c/i2"} & set(keys)]
    assert len(holders) == 1 and {"c/i0", "c/i1", "c/i2"} <= set(shares[holders[0]])
    assert sorted(k for keys in shares.values() for k in keys) == sorted(units)
    # A member that does not know every unit of a bundle never gets a unit it does not know.
    partial = {"m0": Member("r0", {"c/i0": 1.0}, (), bundle), "m1": Member("r1", {"c/i1": 1.0}, (), bundle)}
    assert plan(partial) == {"m0": ["c/i0"], "m1": ["c/i1"]}


def test_a_dead_members_units_go_to_the_survivors() -> None:
    units = {f"c/i{n}": 1.0 for n in range(9)}
    first = plan(_members(3, units))
    owned = {0: first["m0"], 1: first["m1"]}  # m2 died
    after = plan(_members(2, units, owned))
    assert set(first["m0"]) <= set(after["m0"]) and set(first["m1"]) <= set(after["m1"])
    assert sorted(after["m0"] + after["m1"]) == sorted(units)


# --- replicas on a real Kafka -------------------------------------------------------------------------------

pytestmark_kafka = [pytest.mark.kafka, pytest.mark.slow]


def _search(customer: str, integration: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "customer": customer,
        "integration": integration,
        "plugin": "fhir.observation_search",
        "zone": "Europe/Berlin",
        "poll_interval_seconds": 0.5,
        "settings": {
            "page_size": 50,
            "http": {"base_url": base_url, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5},
        },
        **extra,
    }


def _per_integration(records: list[Any]) -> dict[str, Counter[str]]:
    """integration → event id → copies."""
    out: dict[str, Counter[str]] = {}
    for r in records:
        h = dict(r.headers)
        out.setdefault(h["ce_integration"].decode(), Counter())[h["ce_id"].decode()] += 1
    return out


@pytest.mark.kafka
@pytest.mark.slow
async def test_two_replicas_split_the_integrations_and_one_takes_over_when_the_other_stops(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    resources = generate_observations(600, seed=3)
    wanted = sum(1 for r in resources if r["status"] != "entered-in-error")
    prefix = f"fleet-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}group"
    with FhirTestServer(resources, page_delay=0.02) as server:
        docs = [_search("acme", f"obs{n}", server.base_url) for n in range(6)]
        roots = fleet_roots(tmp_path, 2, kafka=kafka_bootstrap, prefix=prefix, group=group, integrations=docs)
        procs = [start_supervisor(root, log_level="info") for root in roots]
        try:
            cfg = load_config(roots[0])[0]
            seen = await owners_when(cfg, lambda seen: len(seen) == 6 and set(seen.values()) == {"r0", "r1"}, 90)
            assert len(seen) == 6 and Counter(seen.values()) == Counter({"r0": 3, "r1": 3}), (
                seen,
                supervisor_log(roots[0]),
            )
            shown = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "inlet", "status", "--fleet", "--json", "--config", str(roots[0])],
                capture_output=True,
                check=True,
                timeout=60,
            )
            doc = orjson.loads(shown.stdout)
            assert doc["group"] == group and doc["units"] == seen, doc  # `inlet status --fleet` says who runs what
            refused = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "inlet", "positions", "reset", "acme/obs0", "--yes", "--config", str(roots[0])],
                capture_output=True,
                timeout=60,
            )
            assert refused.returncode == 1, refused.stderr  # `inlet positions` will not move a running position
            assert f"fleet replica {seen['acme/obs0']} runs it" in refused.stderr.decode(), refused.stderr
            procs[1].send_signal(signal.SIGTERM)  # a clean stop: it leaves the group, r0 takes everything
            assert procs[1].wait(timeout=60) == 0, supervisor_log(roots[1])
            seen = await owners_when(cfg, lambda seen: len(seen) == 6 and set(seen.values()) == {"r0"}, 60)
            assert set(seen.values()) == {"r0"} and len(seen) == 6, (seen, supervisor_log(roots[0]))
            topic = f"{prefix}clinical.observation.v1"
            got = await consume(
                kafka_bootstrap,
                [topic],
                until=lambda rs: (
                    all(len(c) >= wanted for c in _per_integration(rs).values()) and len(_per_integration(rs)) == 6
                ),
                timeout=120,
            )
            per = _per_integration(got)
            assert sorted(per) == [f"obs{n}" for n in range(6)]
            assert all(len(ids) == wanted for ids in per.values()), {k: len(v) for k, v in per.items()}
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)


async def _committed(bootstrap: str, topic: str, wanted: int, integrations: int, timeout: float = 180) -> list[Any]:
    """Every record of ``topic`` a ``read_committed`` consumer sees, once each integration has ``wanted`` ids."""
    return await consume(
        bootstrap,
        [topic],
        until=lambda rs: (
            len(per := _per_integration(rs)) == integrations and all(len(c) >= wanted for c in per.values())
        ),
        timeout=timeout,
        isolation_level="read_committed",
    )


@pytest.mark.kafka
@pytest.mark.slow
async def test_exactly_once_across_ten_random_kill_9_of_replicas(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Three replicas, six exactly-once FHIR search integrations, ten kill -9 of replicas mid-stream: some at a
    random moment, some by failpoint inside the window that matters (a batch's events sent to Kafka, the
    transaction with its position not committed). Each dead replica is started again. A read_committed consumer
    sees every record's event exactly once. (With at-least-once delivery the failpoint kills leave duplicates.)"""
    import random

    rng = random.Random(7)
    resources = generate_observations(5000, seed=11)
    wanted = sum(1 for r in resources if r["status"] != "entered-in-error")
    prefix = f"eos-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}group"
    topic = f"{prefix}clinical.observation.v1"

    def start(i: int) -> Any:
        failpoint = f"position.save:{rng.randint(2, 10)}"
        return start_supervisor(roots[i], log_level="info", env={"INLET_FAILPOINT": failpoint})

    with FhirTestServer(resources, page_delay=0.3) as server:
        docs = [_search("acme", f"obs{n}", server.base_url, delivery="exactly_once") for n in range(6)]
        roots = fleet_roots(tmp_path, 3, kafka=kafka_bootstrap, prefix=prefix, group=group, integrations=docs)
        procs = [start(i) for i in range(3)]
        kills = by_failpoint = 0
        try:
            # Five deaths by failpoint, inside an open transaction; each dead replica started again, armed again.
            while by_failpoint < 5:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and all(p.poll() is None for p in procs):
                    time.sleep(0.05)
                dead = [i for i, p in enumerate(procs) if p.poll() is not None]
                assert dead, "no replica reached its failpoint within 120 s"
                for i in dead:
                    assert procs[i].returncode == -signal.SIGKILL, supervisor_log(roots[i])
                    procs[i] = start(i)
                by_failpoint += len(dead)
            kills = by_failpoint
            # Then kill -9 at random moments until ten in all (restarted without a failpoint).
            while kills < 10:
                time.sleep(rng.uniform(1.0, 3.0))
                victim = next((i for i, p in enumerate(procs) if p.poll() is not None), rng.randrange(3))
                if procs[victim].poll() is None:
                    procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(timeout=10)
                procs[victim] = start_supervisor(roots[victim], log_level="info")
                kills += 1
            # Read for less than a session timeout: how far the streams were when the last kill came.
            so_far = await consume(kafka_bootstrap, [topic], timeout=3.0, isolation_level="read_committed")
            assert len(so_far) < 6 * wanted, "the streams had ended before the last kill: not mid-stream"
            for i in range(3):  # the rest of the run without failpoints
                procs[i].send_signal(signal.SIGKILL)
                procs[i].wait(timeout=10)
                procs[i] = start_supervisor(roots[i], log_level="info")
            got = await _committed(kafka_bootstrap, topic, wanted, 6)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
    assert kills >= 10 and by_failpoint >= 5
    per = _per_integration(got)
    assert sorted(per) == [f"obs{n}" for n in range(6)]
    for name, copies in per.items():
        assert len(copies) == wanted, (name, len(copies), supervisor_log(roots[0]))
        doubled = [i for i, n in copies.items() if n > 1]
        assert not doubled, f"{name}: {len(doubled)} event ids seen twice by a read_committed consumer"


def _frozen(pid: int) -> bool:
    """The process is stopped (SIGSTOP): state T in /proc/PID/stat."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


async def _positions(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every position record of the positions topic in order: (key, value document); the data-quality monitors'
    states stored beside them (``...@monitors``) left out."""
    records = await consume(bootstrap, [topic], idle=1.5, isolation_level="read_committed")
    return [
        (key, orjson.loads(r.value))
        for r in records
        if r.value is not None and not (key := r.key.decode()).endswith(STATE_SUFFIX)
    ]


def _covered(resources: list[dict[str, Any]], position: dict[str, Any]) -> set[str]:
    """Ids a FHIR search position claims are in Kafka: updated before its watermark, or at it and listed."""
    from inlet.core.time import normalise

    mark = normalise(position["last_updated"]).utc
    listed = set(position["ids_at_watermark"])
    return {
        r["id"]
        for r in resources
        if (at := normalise(r["meta"]["lastUpdated"]).utc) < mark or (at == mark and r["id"] in listed)
    }


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_a_replica_frozen_past_its_session_loses_its_integrations_without_loss(
    tmp_path: Path, kafka_bootstrap: str, delivery: str
) -> None:
    """r1 freezes (SIGSTOP by failpoint) right after a batch's events went to Kafka and before its position is
    written — exactly-once: inside the open transaction. Its integrations move to r0 within the session timeout.
    On SIGCONT, at-least-once: r1 writes its late position, which only ever claims what Kafka has (it may move a
    position back: duplicates with the same ids, nothing lost); exactly-once: r1's transaction is fenced and no
    read_committed consumer sees a duplicate."""
    resources = generate_observations(2500, seed=5)
    wanted_ids = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    prefix = f"frozen-{uuid.uuid4().hex[:8]}."
    group, topic, positions_topic = f"{prefix}group", f"{prefix}clinical.observation.v1", f"{prefix}positions"
    session = 6.0
    with FhirTestServer(resources, page_delay=0.2) as server:
        docs = [_search("acme", f"obs{n}", server.base_url, delivery=delivery) for n in range(4)]
        roots = fleet_roots(
            tmp_path,
            2,
            kafka=kafka_bootstrap,
            prefix=prefix,
            group=group,
            integrations=docs,
            session_timeout_seconds=session,
        )
        r0 = start_supervisor(roots[0], log_level="info")
        cfg = load_config(roots[0])[0]
        await owners_when(cfg, lambda seen: len(seen) >= 4, 60)
        r1 = start_supervisor(roots[1], log_level="info", env={"INLET_FAILPOINT": "position.save:4:stop"})
        procs = [r0, r1]
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not _frozen(r1.pid) and r1.poll() is None:
                time.sleep(0.05)
            assert _frozen(r1.pid), supervisor_log(roots[1])
            frozen_at = time.monotonic()
            theirs = {k for k, r in (await owners(cfg)).items() if r == "r1"}
            seen = await owners_when(cfg, lambda seen: len(seen) == 4 and set(seen.values()) == {"r0"}, session + 60)
            moved_after = time.monotonic() - frozen_at
            assert set(seen.values()) == {"r0"} and len(seen) == 4, (seen, supervisor_log(roots[0]))
            assert moved_after < session + 30, f"took {moved_after:.1f} s to move r1's integrations"
            time.sleep(2)  # r0 commits on the moved integrations
            r1.send_signal(signal.SIGCONT)
            log_deadline = time.monotonic() + 60
            if delivery == "exactly_once":
                while time.monotonic() < log_deadline and "integration fenced" not in supervisor_log(roots[1]):
                    time.sleep(0.2)
                assert "integration fenced" in (roots[1] / "supervisor.log").read_text(), supervisor_log(roots[1])
            else:
                late: list[str] = []
                while time.monotonic() < log_deadline and not late:
                    written = await _positions(kafka_bootstrap, positions_topic)
                    # a position r1 wrote for an integration after r0 had written one for it: the late write
                    late = [
                        key
                        for n, (key, doc) in enumerate(written)
                        if doc["replica"] == "r1" and any(k == key and d["replica"] == "r0" for k, d in written[:n])
                    ]
                assert late, "r1 wrote no late position after SIGCONT"
                in_kafka = {orjson.loads(r.value)["observation_id"] for r in await consume(kafka_bootstrap, [topic])}
                for key, doc in written:  # every position written so far claims only what Kafka has
                    claimed = _covered(resources, doc["position"]) & wanted_ids
                    assert claimed <= in_kafka, f"{key}: position ahead of Kafka by {len(claimed - in_kafka)}"
            assert r1.poll() is None, supervisor_log(roots[1])  # it lives on, rejoins, may get work back
            got = await _committed(kafka_bootstrap, topic, len(wanted_ids), 4)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
    assert theirs, "r1 ran nothing before it froze"
    ids: dict[tuple[str, str], set[str]] = {}
    copies: Counter[str] = Counter()
    for r in got:
        h = dict(r.headers)
        ids.setdefault((h["ce_integration"].decode(), orjson.loads(r.value)["observation_id"]), set()).add(
            h["ce_id"].decode()
        )
        copies[h["ce_id"].decode()] += 1
    for n in range(4):
        assert {o for (i, o) in ids if i == f"obs{n}"} == wanted_ids
    assert all(len(v) == 1 for v in ids.values()), "a re-read record got a new event id"
    if delivery == "exactly_once":
        assert max(copies.values()) == 1, "a read_committed consumer saw an event twice"


@pytest.mark.kafka
@pytest.mark.mqtt
@pytest.mark.slow
async def test_thirty_integrations_on_three_replicas_survive_a_kill_and_a_fourth_takes_a_share(
    tmp_path: Path, kafka_bootstrap: str, mosquitto_factory: Any
) -> None:
    """20 FHIR search, 7 FHIR bulk export and 3 MQTT integrations on three replicas. One is killed -9 mid-stream:
    its integrations resume on the others within the session timeout (plus a generous margin for a loaded
    machine); a fourth replica then takes a fair share. Every source record is in Kafka, duplicates only with
    identical event ids."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from inlet.core.mqtt import MqttSettings, create_session
    from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

    session = 6.0
    resources = generate_observations(400, seed=21)
    wanted = {r["id"] for r in resources if r["status"] != "entered-in-error"}
    readings = 1500
    prefix = f"thirty-{uuid.uuid4().hex[:8]}."
    group = f"{prefix}group"
    broker = mosquitto_factory()
    faults = BulkFaults(pending_polls=1, retry_after="0", chunk_delay=0.05)
    with (
        FhirTestServer(resources, page_delay=0.5) as search,
        FhirBulkServer(resources, faults=faults, file_lines=100) as bulk,
    ):
        docs = [_search("acme", f"s{n}", search.base_url) for n in range(20)]
        for doc in docs:
            doc["settings"]["page_size"] = 10  # 40 pages of 0.5 s: still reading when r1 is killed
        docs += [
            {
                "customer": "acme",
                "integration": f"b{n}",
                "plugin": "fhir.bulk_export",
                "zone": "Europe/Vienna",
                "poll_interval_seconds": 3600,
                "weight": 2,
                "settings": {
                    "types": ["Observation"],
                    "batch_size": 50,
                    "poll_min_seconds": 0.01,
                    "poll_max_seconds": 2.0,
                    "http": {"base_url": bulk.base_url, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5},
                },
            }
            for n in range(7)
        ]
        mqtt_docs: list[dict[str, Any]] = [
            {
                "customer": "acme",
                "integration": f"m{n}",
                "plugin": "mqtt_meter",
                "weight": 3,
                "settings": {
                    "mqtt": {"url": broker.url, "topics": [f"hub{n}/+/power"], "client_id": f"inlet-{prefix}m{n}"},
                    "routes": [{"topic": f"hub{n}/+/power", "decoder": "json", "device_level": 1}],
                },
            }
            for n in range(3)
        ]
        for doc in mqtt_docs:
            mqtt_settings = doc["settings"]["mqtt"]
            create_session(MqttSettings.model_validate(mqtt_settings), mqtt_settings["client_id"])
        docs += mqtt_docs
        roots = fleet_roots(
            tmp_path,
            4,
            kafka=kafka_bootstrap,
            prefix=prefix,
            group=group,
            integrations=docs,
            session_timeout_seconds=session,
        )
        procs = [start_supervisor(roots[i], log_level="info") for i in range(3)]
        host, port = broker.url.removeprefix("mqtt://").split(":")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
        in_flight = threading.BoundedSemaphore(20)
        client.on_publish = lambda *args: in_flight.release()
        client.connect(host, int(port))
        client.loop_start()

        def publish_all() -> None:
            for i in range(readings):
                for n in range(3):
                    in_flight.acquire()
                    payload = {"metric": "power", "value": i, "unit": "W", "ts": 1_763_000_000_000 + i}
                    client.publish(f"hub{n}/dev{i % 7}/power", orjson.dumps(payload), qos=1)
                if i % 100 == 0:
                    time.sleep(0.05)

        publisher = threading.Thread(target=publish_all, daemon=True)
        try:
            cfg = load_config(roots[0])[0]
            seen = await owners_when(cfg, lambda seen: len(seen) == 30 and set(seen.values()) == {"r0", "r1", "r2"}, 90)
            assert len(seen) == 30 and set(seen.values()) == {"r0", "r1", "r2"}, seen
            publisher.start()
            time.sleep(2.0)
            theirs = sorted(k for k, r in seen.items() if r == "r1")
            procs[1].send_signal(signal.SIGKILL)
            procs[1].wait(timeout=10)
            killed = time.monotonic()
            # Read for less than the session timeout: r1's integrations cannot have moved yet.
            so_far = _by_source(
                await consume(kafka_bootstrap, [f"{prefix}clinical.observation.v1"], timeout=session / 2)
            )
            mid = [
                k for k in theirs if not k.startswith("acme/m") and len(so_far.get(k.split("/")[1], {})) < len(wanted)
            ]
            assert mid, ("not killed mid-stream", [(k, len(so_far.get(k.split("/")[1], {}))) for k in theirs])
            # Resumed elsewhere: the group has given every unit of r1 to a survivor (whose first commit follows; a
            # caught-up pull source has nothing new to commit, so the positions topic cannot tell). That they ran
            # there is what the read-back below proves: every record of them is in Kafka.
            seen = await owners_when(cfg, lambda seen: len(seen) == 30 and "r1" not in seen.values(), session + 60)
            took = time.monotonic() - killed
            assert len(seen) == 30 and "r1" not in seen.values(), (seen, supervisor_log(roots[0]))
            assert took < session + 30, f"r1's integrations ({len(theirs)}) took {took:.0f} s to move"
            procs.append(start_supervisor(roots[3], log_level="info"))  # a fourth replica joins
            seen = await owners_when(cfg, lambda seen: len(seen) == 30 and Counter(seen.values())["r3"] >= 5, 90)
            assert Counter(seen.values())["r3"] >= 5, Counter(seen.values())
            publisher.join(timeout=120)

            def done(records: list[Any]) -> bool:
                per = _by_source(records)
                return len(per) == 30 and all(
                    len(v) >= (readings if k.startswith("m") else len(wanted)) for k, v in per.items()
                )

            got = await consume(
                kafka_bootstrap,
                [f"{prefix}clinical.observation.v1", f"{prefix}energy.meter_reading.v1"],
                until=done,
                timeout=240,
            )
        finally:
            client.loop_stop()
            client.disconnect()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=10)
    per = _by_source(got)
    assert sorted(per) == sorted(d["integration"] for d in docs)
    for name, records in per.items():
        expected = {float(i) for i in range(readings)} if name.startswith("m") else wanted
        assert set(records) == expected, (name, len(expected - set(records)))
        assert all(len(ids) == 1 for ids in records.values()), f"{name}: a re-read record got a new event id"


def _by_source(records: list[Any]) -> dict[str, dict[Any, set[str]]]:
    """integration → source record (observation id, or a reading's quantity) → its event ids."""
    out: dict[str, dict[Any, set[str]]] = {}
    for r in records:
        h = dict(r.headers)
        doc = orjson.loads(r.value)
        source = doc.get("observation_id", doc.get("quantity"))
        out.setdefault(h["ce_integration"].decode(), {}).setdefault(source, set()).add(h["ce_id"].decode())
    return out
