"""Seeded meter-hub traffic for fixtures, tests and benchmarks, shaped after real device payloads.

The shapes follow the Tasmota, Shelly Gen1 and Shelly Gen2 messages in ``../shared/data/iot`` (field names,
nesting, units, naive local ``Time``, per-value Gen1 topics, ``NotifyStatus`` frames) — but every value is
generated here, so the project's recorded fixtures hold no third-party data.

``municipal_traffic`` is one morning of a municipal utility's hub: household meters on Tasmota (one with
three-phase arrays, one with an SML smart-meter reader and a PV export), a Shelly 3EM (Gen1) and a Shelly
Pro 3EM (Gen2), plus what real hubs also carry: STATE frames, a resent frame, a meter replaced mid-way
(its counter starts again) and a truncated payload.

``grid_traffic`` is a grid operator's Sparkplug B edge nodes (substation RTUs) publishing feeder meters:
NBIRTH with aliases, NDATA by alias, a device behind a node (DBIRTH / DDATA), a ``seq`` run through the
255 -> 0 wrap, a lost message (gap), a resent message (duplicate), a node restart (NDEATH, NBIRTH with a
new ``bdSeq``) and a node whose NDATA arrives before any NBIRTH was seen — the cases the Sparkplug test
vectors cover, in generated traffic.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from inlet.connectors.mqtt_meter.sparkplug import DataType, Metric, Payload, encode_payload

__all__ = ["Message", "grid_traffic", "municipal_traffic", "tasmota_sensor"]

Message = tuple[str, bytes]
"""(topic, payload) as published."""

_BERLIN = ZoneInfo("Europe/Berlin")


def _local(at: datetime) -> str:
    """Tasmota's ``Time``: local wall time without an offset."""
    return at.astimezone(_BERLIN).replace(tzinfo=None).isoformat(timespec="seconds")


def tasmota_sensor(device_index: int, step: int, *, start: datetime | None = None) -> Message:
    """One Tasmota ``tele/<dev>/SENSOR`` frame with an ``ENERGY`` block (the benchmark's reading)."""
    at = (start or datetime(2026, 3, 29, 0, 30, tzinfo=UTC)) + timedelta(seconds=10 * step)
    total = 1000.0 + device_index * 10 + step * 0.0125
    body = {
        "Time": _local(at),
        "ENERGY": {
            "TotalStartTime": "2024-01-08T11:21:04",
            "Total": round(total, 4),
            "Yesterday": 5.12,
            "Today": round(2.0 + step * 0.0125, 4),
            "Power": 300 + (step * 7 + device_index) % 200,
            "ApparentPower": 320,
            "ReactivePower": 40,
            "Factor": 0.94,
            "Voltage": 229 + step % 4,
            "Current": 1.312,
        },
    }
    return f"tele/meter-{device_index:05d}/SENSOR", orjson.dumps(body)


def municipal_traffic(steps: int = 12, *, seed: int = 7) -> list[Message]:
    """A morning of a municipal hub (Europe/Berlin), every 5 minutes across the 2026 spring DST change."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET; clocks jump 02:00 -> 03:00 at 01:00 UTC
    out: list[Message] = []
    totals = {"hh-0101": 4211.5, "hh-0102": 873.25, "pv-0201": 15320.0}
    gen1_wh = [[118_000.0, 9_500.0], [97_250.0, 0.0], [101_900.0, 250.0]]
    gen2_wh = [2_450_000.0, 310_000.0]
    for step in range(steps):
        at = start + timedelta(minutes=5 * step)
        local = _local(at)
        # Tasmota single-phase household meter.
        totals["hh-0101"] += rng.uniform(0.02, 0.09)
        power = round(rng.uniform(180, 900))
        household = len(out)
        out.append(
            (
                "tele/hh-0101/SENSOR",
                orjson.dumps(
                    {
                        "Time": local,
                        "ENERGY": {
                            "TotalStartTime": "2023-11-02T09:14:51",
                            "Total": round(totals["hh-0101"], 3),
                            "Yesterday": 6.114,
                            "Today": round(0.35 + 0.06 * step, 3),
                            "Power": power,
                            "ApparentPower": power + 21,
                            "ReactivePower": 35,
                            "Factor": 0.96,
                            "Voltage": rng.randint(227, 234),
                            "Current": round(power / 230, 3),
                        },
                    }
                ),
            )
        )
        # Tasmota three-phase (array-valued channels).
        if step == 7:  # the meter was replaced this morning: the new one counts from almost zero
            totals["hh-0102"] = 0.4
        totals["hh-0102"] += rng.uniform(0.05, 0.2)
        phases = [round(rng.uniform(100, 1400)) for _ in range(3)]
        out.append(
            (
                "tele/hh-0102/SENSOR",
                orjson.dumps(
                    {
                        "Time": local,
                        "ENERGY": {
                            "TotalStartTime": "2025-02-17T08:00:00",
                            "Total": round(totals["hh-0102"], 3),
                            "Yesterday": 11.02,
                            "Today": round(0.8 + 0.1 * step, 3),
                            "Power": phases,
                            "Voltage": [231, 229, 232],
                            "Current": [round(p / 230, 3) for p in phases],
                            "Factor": [0.91, 0.93, 0.95],
                        },
                    }
                ),
            )
        )
        # Tasmota SML reader on a bidirectional smart meter with PV: negative power is export.
        totals["pv-0201"] += rng.uniform(0.0, 0.05)
        out.append(
            (
                "tele/pv-0201/SENSOR",
                orjson.dumps(
                    {
                        "Time": local,
                        "SML": {
                            "Total_in": round(totals["pv-0201"], 4),
                            "Total_out": round(2210.5 + 0.3 * step, 4),
                            "Power_curr": -round(rng.uniform(400, 2600)),
                            "Meter_id": "0a01445a4e0003b6c2d1",
                        },
                    }
                ),
            )
        )
        if step % 4 == 0:
            out.append(
                (
                    "tele/hh-0101/STATE",
                    orjson.dumps(
                        {
                            "Time": local,
                            "Uptime": f"3T0{step % 10}:12:44",
                            "Heap": 25,
                            "POWER": "ON",
                            "Wifi": {"AP": 1, "SSId": "swn-meters", "RSSI": 76, "Signal": -62},
                        }
                    ),
                )
            )
        # Shelly 3EM (Gen1): one topic per value; energy counters in Wh on the EM API.
        for i in range(3):
            gen1_wh[i][0] += rng.uniform(5, 40)
            base = f"shellies/shellyem3-8CAAB5{i:02d}/emeter/{i}"
            out.append((f"{base}/power", orjson.dumps(round(rng.uniform(50, 800), 2))))
            out.append((f"{base}/voltage", orjson.dumps(round(rng.uniform(228, 233), 2))))
            out.append((f"{base}/total", orjson.dumps(round(gen1_wh[i][0], 1))))
            out.append((f"{base}/total_returned", orjson.dumps(gen1_wh[i][1])))
        # Shelly Pro 3EM (Gen2): NotifyStatus with the em:0 component, ts in epoch seconds.
        gen2_wh[0] += rng.uniform(200, 900)
        pw = [round(rng.uniform(1000, 9000), 1) for _ in range(3)]
        out.append(
            (
                "swn/shellypro3em-a0b1c2/events/rpc",
                orjson.dumps(
                    {
                        "src": "shellypro3em-a0b1c2",
                        "dst": "swn/shellypro3em-a0b1c2/events",
                        "method": "NotifyStatus",
                        "params": {
                            "ts": round(at.timestamp() + 0.37, 2),
                            "em:0": {
                                "id": 0,
                                "a_act_power": pw[0],
                                "b_act_power": pw[1],
                                "c_act_power": pw[2],
                                "a_voltage": 230.1,
                                "b_voltage": 229.8,
                                "c_voltage": 231.0,
                                "total_act_power": round(sum(pw), 1),
                            },
                            "emdata:0": {"id": 0, "total_act": round(gen2_wh[0], 2), "total_act_ret": gen2_wh[1]},
                        },
                    }
                ),
            )
        )
        if step == 3:  # the hub resent the previous household frame (same Time): a duplicate
            out.append(out[household])
        if step == 9:  # a frame cut off mid-way by a flaky uplink
            out.append(("tele/hh-0101/SENSOR", b'{"Time":"' + local.encode() + b'","ENERGY":{"Total":42'))
    return out


# Feeder metrics of the grid operator's RTUs: (name, alias, datatype, engUnit). German names are the
# operator's; the plugin maps them.
_FEEDER: tuple[tuple[str, int, DataType, str | None], ...] = (
    ("Zaehler/Bezug", 10, DataType.Double, "kWh"),
    ("Zaehler/Lieferung", 11, DataType.Double, "kWh"),
    ("Messung/Wirkleistung", 12, DataType.Double, "kW"),
    ("Messung/Spannung L1", 13, DataType.Float, "V"),
    ("Messung/Temperatur Trafo", 14, DataType.Float, None),
)


def _birth_metrics(bd_seq: int, values: list[float], at_ms: int) -> list[Metric]:
    metrics = [
        Metric("bdSeq", None, at_ms, DataType.UInt64, False, bd_seq),
        Metric("Node Control/Rebirth", 1, at_ms, DataType.Boolean, False, False),
    ]
    metrics += [
        Metric(name, alias, at_ms, dtype, False, v, {"engUnit": unit} if unit else {})
        for (name, alias, dtype, unit), v in zip(_FEEDER, values, strict=True)
    ]
    return metrics


def _data_metrics(values: list[float], at_ms: int, only: int | None = None) -> list[Metric]:
    """DATA metrics by alias only, datatype left out (the birth certificate has it).

    ``only``: report by exception — just the first ``only`` metrics changed beyond their deadband.
    """
    return [
        Metric(None, alias, at_ms, DataType.Unknown, False, v)
        for (_, alias, _, _), v in list(zip(_FEEDER, values, strict=True))[:only]
    ]


def grid_traffic(*, steps: int = 262, seed: int = 5) -> list[Message]:
    """A grid operator's substations on Sparkplug B, NDATA every minute (see the module doc).

    uw-winterthur reports by exception (the import counter each minute, everything every 30 minutes) long
    enough for its ``seq`` to wrap; uw-baden reports import and power for the first hour, restarting once.
    """
    rng = random.Random(seed)
    group = "netz-ost"
    t0 = int(datetime(2026, 10, 25, 0, 0, tzinfo=UTC).timestamp() * 1000)  # the Zurich fall-back night
    out: list[Message] = []
    state = {"uw-winterthur": [81_250.5, 4_100.25], "uw-baden": [55_010.0, 12_800.0]}

    def values(node: str) -> list[float]:
        imp, exp = state[node]
        state[node] = [imp + rng.uniform(0.5, 3.0), exp + rng.uniform(0.0, 0.4)]
        return [
            round(state[node][0], 3),
            round(state[node][1], 3),
            round(rng.uniform(-800, 2400), 1),
            round(rng.uniform(229, 233), 1),
            round(rng.uniform(35, 60), 1),
        ]

    def publish(
        kind: str, node: str, seq: int | None, metrics: list[Metric], at_ms: int, device: str | None = None
    ) -> None:
        topic = f"spBv1.0/{group}/{kind}/{node}" + (f"/{device}" if device else "")
        out.append((topic, encode_payload(Payload(at_ms, seq, None, metrics))))

    # uw-baden's NDATA arrives before we saw its NBIRTH (inlet started after the node was born).
    publish("NDATA", "uw-baden", 17, _data_metrics(values("uw-baden"), t0), t0)
    nodes = ("uw-winterthur", "uw-baden")
    seq = dict.fromkeys(nodes, 0)
    bd = {"uw-winterthur": 3, "uw-baden": 8}
    for node in nodes:
        publish("NBIRTH", node, 0, _birth_metrics(bd[node], values(node), t0), t0)
    for step in range(1, steps):
        at = t0 + step * 60_000
        for node in nodes:
            if node == "uw-baden" and step > 60:
                continue
            seq[node] = (seq[node] + 1) % 256
            if node == "uw-baden" and step == 40:
                seq[node] = (seq[node] + 2) % 256  # two messages lost upstream of the broker: a gap
            only = 2 if node == "uw-baden" else None if step % 30 == 0 else 1
            publish("NDATA", node, seq[node], _data_metrics(values(node), at, only), at)
            if node == "uw-winterthur" and step == 25:
                out.append(out[-1])  # the edge node's outbox resent a message: a duplicate
        if step == 5:  # a meter behind uw-winterthur announces itself and reports
            seq["uw-winterthur"] = (seq["uw-winterthur"] + 1) % 256
            publish(
                "DBIRTH",
                "uw-winterthur",
                seq["uw-winterthur"],
                [Metric("Zaehler/Bezug", 20, at, DataType.Double, False, 1200.5, {"engUnit": "kWh"})],
                at,
                device="zaehler-3",
            )
        if step in (6, 7):
            seq["uw-winterthur"] = (seq["uw-winterthur"] + 1) % 256
            publish(
                "DDATA",
                "uw-winterthur",
                seq["uw-winterthur"],
                [Metric(None, 20, at, DataType.Unknown, False, 1200.5 + step)],
                at,
                device="zaehler-3",
            )
        if step == 45:  # uw-baden restarts: its will (NDEATH) and a new birth with the next bdSeq
            publish(
                "NDEATH", "uw-baden", None, [Metric("bdSeq", None, None, DataType.UInt64, False, bd["uw-baden"])], at
            )
            bd["uw-baden"] += 1
            seq["uw-baden"] = 0
            publish("NBIRTH", "uw-baden", 0, _birth_metrics(bd["uw-baden"], values("uw-baden"), at + 1), at + 1)
    return out
