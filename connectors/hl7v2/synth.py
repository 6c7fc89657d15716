"""Seeded HL7 v2 traffic for fixtures, tests and benchmarks, shaped after the sample corpus (``../shared/data/hl7v2``).

The shapes follow what the corpus holds — v2.5.1 ``MSH`` with an offset on MSH-7 (and some without), ``EVN``,
``PID`` with several PID-3 repetitions (MR, SS), XPN names, XAD home and old addresses, XTN phones, ``NK1``
next of kin, ``PV1`` with attending doctors (XCN), visit number and admit / discharge times; ``ORU^R01`` with
``ORC``/``OBR``/``OBX``/``NTE``, OBX value types NM (UCUM units, reference ranges, abnormal flags), SN, ST, TX
(with ``\\.br\\`` and ``\\T\\`` escapes), CWE, statuses F/C/P/X — but every value is generated here, so the
project's recorded fixtures hold no third-party data and no real person.

:func:`hospital_feed` makes one hospital's morning: for each patient an admission (A01 or A04), updates (A08),
lab results (ORU^R01, a corrected resend among them), a discharge (A03) and — for some — a cancellation (A11 /
A13); plus what real feeds also carry: a merge of a duplicate record (A40 with MRG), a message type the
interface does not take (``SIU^S12`` → ``AR``) and a result with a non-numeric NM value (→ ``AE``).
Options shape a hospital's quirks: ``separator`` (``"\\n"`` instead of ``"\\r"``), ``charset`` and ``msh18``
(ISO-8859-1 text with or without saying so), ``zpv`` (ward and bed in a ``ZPV`` segment after ``PV1``) and
``lab_codes`` (OBX-3 in a local code system instead of LOINC).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["LOINC_TESTS", "Patient", "hospital_feed"]

FAMILY = (
    "Schneider",
    "Müller",
    "Weiß",
    "Jäger",
    "Dubois",
    "Lefèvre",
    "Nowak",
    "Okafor",
    "García",
    "Björk",
    "Brandt",
    "Köhler",
    "Sørensen",
    "Rossi",
    "Haddad",
    "Nguyen",
)
GIVEN = ("Anna", "Jürgen", "Zoë", "René", "Chloé", "Mehmet", "Lena", "Paul", "Éloïse", "Ines", "Jonas", "Aylin")
STREETS = ("Hauptstraße", "Rue de la Gare", "Lindenallee", "Chemin des Prés", "Am Mühlbach", "Bahnhofplatz")
CITIES = (
    ("Berlin", "10115"),
    ("Potsdam", "14467"),
    ("Lausanne", "1003"),
    ("Genève", "1201"),
    ("Zürich", "8001"),
    ("Hamburg", "20095"),
)

LOINC_TESTS: tuple[tuple[str, str, str, str, str, tuple[float, float]], ...] = (
    # (local code, LOINC, name, unit, decimals, reference range)
    ("GLU", "2339-0", "Glucose", "mg/dL", "0", (70.0, 99.0)),
    ("KREA", "38483-4", "Creatinine", "mg/dL", "2", (0.6, 1.2)),
    ("NA", "2947-0", "Sodium", "mmol/L", "0", (135.0, 145.0)),
    ("K", "6298-4", "Potassium", "mmol/L", "1", (3.5, 5.1)),
    ("HB", "718-7", "Hemoglobin", "g/dL", "1", (12.0, 16.0)),
    ("LEUK", "6690-2", "Leukocytes", "10*3/uL", "2", (4.0, 10.0)),
)


@dataclass(frozen=True)
class Patient:
    """A generated patient and their stay."""

    mrn: str
    ssn: str
    family: str
    given: str
    birth: str
    sex: str
    street: str
    city: str
    postal: str
    phone: str
    visit: str
    admit: datetime
    ward: str
    bed: str


def _dtm(at: datetime, zone: ZoneInfo, *, offset: bool, seconds: bool = True) -> str:
    local = at.astimezone(zone)
    text = local.strftime("%Y%m%d%H%M%S" if seconds else "%Y%m%d%H%M")
    return text + (local.strftime("%z") if offset else "")


def _patient(rng: random.Random, i: int, start: datetime, prefix: str) -> Patient:
    city, postal = rng.choice(CITIES)
    born = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 33_000))
    return Patient(
        mrn=f"{prefix}{100_000 + i * 37 + rng.randrange(30)}",
        ssn=f"{rng.randrange(10**8, 10**9)}",
        family=rng.choice(FAMILY),
        given=rng.choice(GIVEN),
        birth=born.strftime("%Y%m%d"),
        sex=rng.choice("MFFMMFUO"[: 6 + (i % 3)]),
        street=f"{rng.choice(STREETS)} {rng.randrange(1, 120)}",
        city=city,
        postal=postal,
        phone=f"+49 30 {rng.randrange(1_000_000, 9_999_999)}",
        visit=f"V{prefix}{500_000 + i}",
        admit=start + timedelta(minutes=rng.randrange(0, 240)),
        ward=rng.choice(("K3", "C2", "INT1", "M4")),
        bed=f"{rng.randrange(1, 30):02d}",
    )


def hospital_feed(  # noqa: PLR0915 (one message builder per kind, kept together)
    patients: int = 6,
    *,
    seed: int = 21,
    facility: str = "GEN HOSP",
    zone: str = "Europe/Berlin",
    separator: str = "\r",
    charset: str = "utf-8",
    msh18: str = "UNICODE UTF-8",
    zpv: bool = False,
    lab_codes: Mapping[str, str] | None = None,
    id_prefix: str = "M",
    start: datetime | None = None,
) -> list[bytes]:
    """One hospital's morning of ADT and ORU traffic (module docstring), as the bytes a sender sends.

    ``lab_codes``: OBX-3 in this local coding system (``{"system": "99LAB"}``-style name → written as
    ``<local code>^<name>^<system>``) instead of LOINC. ``charset``: how the text is encoded; ``msh18``: what
    MSH-18 says (``""`` for a sender that does not say).
    """
    rng = random.Random(seed)
    tz = ZoneInfo(zone)
    start = start or datetime(2026, 3, 28, 21, 30, tzinfo=ZoneInfo("UTC"))  # over the spring DST change
    control = iter(range(1, 10_000))
    messages: list[str] = []

    def msh(kind: str, at: datetime, *, offset: bool = True) -> str:
        return "|".join(
            [
                "MSH",
                "^~\\&",
                "ADT" if kind.startswith("ADT") else "LAB",
                facility,
                "INLET",
                "DWH",
                _dtm(at, tz, offset=offset),
                "",
                kind,
                f"{facility[:3].upper()}{next(control):05d}",
                "P",
                "2.5.1",
                "",
                "",
                "AL",
                "NE",
                "",
                msh18,
            ]
        )

    def pid(p: Patient) -> str:
        return "|".join(
            [
                "PID",
                "1",
                "",
                f"{p.mrn}^^^{facility}^MR~{p.ssn}^^^SSA^SS",
                "",
                f"{p.family}^{p.given}^^^^^L",
                f"{p.family}^^^^^^M",
                p.birth,
                p.sex,
                "",
                "",
                f"{p.street}^^{p.city}^^{p.postal}^DEU^H~Alte Gasse 1^^{p.city}^^{p.postal}^DEU^O",
                "",
                f"{p.phone}^PRN^PH",
                "",
                "",
                "",
                "",
                f"A{p.visit}",
            ]
        )

    def pv1(p: Patient, trigger: str, discharged: datetime | None) -> str:
        klass = "E" if trigger == "A04" else "I"
        fields = [
            "PV1",
            "1",
            klass,
            f"{p.ward}^{p.bed}^1^{facility}",
            "R",
            "",
            "",
            f"D{rng.randrange(100, 999)}^Doktor^Eva^^^Dr.",
            "",
            "",
            "MED" if klass == "I" else "EME",
        ]
        fields += [""] * 8 + [p.visit] + [""] * 24
        fields += [_dtm(p.admit, tz, offset=False), _dtm(discharged, tz, offset=False) if discharged else ""]
        return "|".join(fields)

    def zpv_seg(p: Patient) -> list[str]:
        return [f"ZPV|1|{p.ward}|{p.bed}|{'Station ' + p.ward}"] if zpv else []

    def adt(p: Patient, trigger: str, at: datetime, discharged: datetime | None = None, offset: bool = True) -> str:
        segs = [
            msh(f"ADT^{trigger}^ADT_A01", at, offset=offset),
            f"EVN|{trigger}|{_dtm(at, tz, offset=offset)}",
            pid(p),
            f"NK1|1|{rng.choice(FAMILY)}^{rng.choice(GIVEN)}|SPO^Spouse|{p.street}^^{p.city}",
            pv1(p, trigger, discharged),
            *zpv_seg(p),
        ]
        return separator.join(segs) + separator

    def obx3(local: str, loinc: str, name: str) -> str:
        if lab_codes is not None:
            return f"{local}^{name}^{lab_codes['system']}"
        return f"{loinc}^{name}^LN"

    def oru(p: Patient, at: datetime, order: int, *, status: str = "F", bad: bool = False) -> str:
        taken = at - timedelta(minutes=40)
        segs = [
            msh("ORU^R01^ORU_R01", at),
            pid(p),
            pv1(p, "A01", None),
            f"ORC|RE|PL{order}|FI{order}",
            f"OBR|1|PL{order}|FI{order}|24323-8^Comprehensive metabolic panel^LN|||{_dtm(taken, tz, offset=True)}"
            f"||||||||D{order % 7}^Labor^Leo||||||{_dtm(at, tz, offset=True)}|||{status}|CH",
        ]
        tests = rng.sample(LOINC_TESTS, 3)
        set_id = 0
        for local, loinc, name, unit, decimals, (low, high) in tests:
            set_id += 1
            value = rng.uniform(low * 0.7, high * 1.3)
            text = f"{value:.{decimals}f}" if not bad or set_id > 1 else "see note"
            flag = "H" if value > high else "L" if value < low else "N"
            segs.append(
                f"OBX|{set_id}|NM|{obx3(local, loinc, name)}||{text}|{unit}^{unit}^UCUM|"
                f"{low:g}-{high:g}|{flag}|||{status}|||{_dtm(taken, tz, offset=True)}"
            )
        set_id += 1
        segs.append(f"OBX|{set_id}|SN|2160-0^Creatinine clearance^LN||>^90|mL/min^mL/min^UCUM|||||{status}")
        set_id += 1
        segs.append(
            f"OBX|{set_id}|CWE|882-1^ABO and Rh group^LN||{rng.choice(('A', 'B', 'O'))}^Blood group^L||||||{status}"
        )
        set_id += 1
        comment = rng.choice(("Probe leicht hämolysiert", "Sérum légèrement hémolysé", "Kein Befund"))
        segs.append(f"OBX|{set_id}|TX|11526-1^Lab comment^LN||{comment}\\.br\\Labor \\T\\ Diagnostik||||||{status}")
        segs.append("NTE|1|L|Befund telefonisch an Station übermittelt")
        return separator.join(segs) + separator

    people = [_patient(rng, i, start, id_prefix) for i in range(patients)]
    order = 7000
    for i, p in enumerate(people):
        at = p.admit
        messages.append(adt(p, "A04" if i % 3 == 2 else "A01", at, offset=i % 2 == 0))
        at += timedelta(minutes=25)
        messages.append(adt(p, "A08", at))
        order += 1
        at += timedelta(minutes=50)
        messages.append(oru(p, at, order, status="P" if i % 2 else "F"))
        if i % 2:
            at += timedelta(minutes=20)
            messages.append(oru(p, at, order, status="F"))
        if i % 4 == 0:
            at += timedelta(minutes=30)
            messages.append(oru(p, at, order, status="C"))  # a corrected result keeps its ids
        at += timedelta(hours=2)
        if i % 5 == 3:
            messages.append(adt(p, "A11", at))
            continue
        discharged = at
        messages.append(adt(p, "A03", at, discharged))
        if i % 5 == 4:
            at += timedelta(minutes=10)
            messages.append(adt(p, "A13", at))
    # A duplicate record of the first patient, merged into it (ADT^A40, MRG-1 names the retired id).
    first = people[0]
    dup = f"{id_prefix}9{first.mrn[len(id_prefix) :]}"
    at = start + timedelta(hours=6)
    messages.append(
        separator.join(
            [
                msh("ADT^A40^ADT_A39", at),
                f"EVN|A40|{_dtm(at, tz, offset=True)}",
                pid(first),
                f"MRG|{dup}^^^{facility}^MR||{first.visit}",
            ]
        )
        + separator
    )
    # What the interface does not take, and a result it cannot read.
    messages.append(separator.join([msh("SIU^S12^SIU_S12", at), "SCH|1|1|||||ROUTINE"]) + separator)
    order += 1
    messages.append(oru(people[-1], at + timedelta(minutes=5), order, bad=True))
    return [m.encode(charset) for m in messages]
