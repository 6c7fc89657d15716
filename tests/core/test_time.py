"""core.time: every accepted spelling, every rejection, DST policies, series repair, and real feed values.

Real values are read at test time from the third-party sample data (``sample_data`` fixture), never copied.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inlet.core.errors import InletError, MappingError
from inlet.core.time import Ambiguous, Instant, TimestampError, normalise, normalise_series, zone

BERLIN, NEW_YORK, LORD_HOWE = "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"
DST_ZONES = (BERLIN, NEW_YORK, LORD_HOWE)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(zone_name: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Oracle for unambiguous local times: zoneinfo's own conversion."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone_name)).astimezone(UTC)


# --- ISO 8601 / RFC 3339 spellings -----------------------------------------------------------------------

T = utc(2024, 2, 29, 10, 20, 30)


@pytest.mark.parametrize(
    ("value", "zone_name", "expected", "precision"),
    [
        ("2024-02-29T10:20:30Z", None, T, "second"),
        ("2024-02-29t10:20:30z", None, T, "second"),
        ("2024-02-29 10:20:30Z", None, T, "second"),
        ("2024-02-29T11:20:30+01:00", None, T, "second"),
        ("2024-02-29T11:20:30+0100", None, T, "second"),
        ("2024-02-29T11:20:30+01", None, T, "second"),
        ("2024-02-29T05:20:30-05:00", None, T, "second"),
        ("2024-02-29T10:20:30-00:00", None, T, "second"),
        ("2024-02-29T10:20:30+00:00", None, T, "second"),
        ("2024-02-29T23:50:30+13:30", None, T, "second"),
        ("2024-03-01T04:20:30+18:00", None, T, "second"),
        ("2024-02-28T16:20:30-18:00", None, T, "second"),
        ("20240229T102030Z", None, T, "second"),
        ("20240229T112030+0100", None, T, "second"),
        ("20240229t102030z", None, T, "second"),
        ("20240229T1020Z", None, utc(2024, 2, 29, 10, 20), "minute"),
        ("2024-02-29T10:20Z", None, utc(2024, 2, 29, 10, 20), "minute"),
        ("2024-02-29T11:20+01:00", None, utc(2024, 2, 29, 10, 20), "minute"),
        ("  2024-02-29T10:20:30Z\n", None, T, "second"),  # surrounding whitespace (CSV exports)
        ("2024-02-29T10:20:30Z", "Mars/Olympus", T, "second"),  # zone is not consulted for offset values
        # local wall times need a zone
        ("2024-02-29T11:20:30", BERLIN, T, "second"),
        ("2024-02-29 11:20:30.5", BERLIN, T + timedelta(milliseconds=500), "millisecond"),
        ("20240229112030", BERLIN, T, "second"),  # compact local
        ("20261025013000", BERLIN, local(BERLIN, 2026, 10, 25, 1, 30), "second"),
        ("202402291120", BERLIN, utc(2024, 2, 29, 10, 20), "minute"),
        # dates and FHIR partial dates: local midnight of the first day
        ("20260115", BERLIN, utc(2026, 1, 14, 23), "day"),
        ("2024-02-29", BERLIN, utc(2024, 2, 28, 23), "day"),
        ("2024-02-29", NEW_YORK, utc(2024, 2, 29, 5), "day"),
        ("2024-02", BERLIN, utc(2024, 1, 31, 23), "month"),
        ("2024", BERLIN, utc(2023, 12, 31, 23), "year"),
        ("2024", "UTC", utc(2024, 1, 1), "year"),
        # 24:00 is the end of the day
        ("2024-02-29T24:00:00Z", None, utc(2024, 3, 1), "second"),
        ("2024-02-29T24:00Z", None, utc(2024, 3, 1), "minute"),
        ("2024-12-31T24:00:00.000+01:00", None, utc(2024, 12, 31, 23), "millisecond"),
        ("2024-03-30T24:00:00", BERLIN, utc(2024, 3, 30, 23), "second"),
        # leap second: clamped into its own minute
        ("2016-12-31T23:59:60Z", None, utc(2016, 12, 31, 23, 59, 59, 999_999), "second"),
        ("2016-12-31T23:59:60.5Z", None, utc(2016, 12, 31, 23, 59, 59, 999_999), "millisecond"),
        ("2017-01-01T00:59:60+01:00", None, utc(2016, 12, 31, 23, 59, 59, 999_999), "second"),
        ("20161231T235960Z", None, utc(2016, 12, 31, 23, 59, 59, 999_999), "second"),
    ],
)
def test_iso_spellings(value: str, zone_name: str | None, expected: datetime, precision: str) -> None:
    got = normalise(value, zone_name)
    assert got == Instant(expected, precision)  # type: ignore[arg-type]
    assert got.utc.tzinfo is UTC


@pytest.mark.parametrize("digits", range(10))
@pytest.mark.parametrize("separator", [".", ","])
def test_fraction_digits(digits: int, separator: str) -> None:
    fraction = "123456789"[:digits]
    text = f"2024-02-29T10:20:30{separator if digits else ''}{fraction}Z"
    got = normalise(text)
    assert got.utc == T + timedelta(microseconds=int(fraction[:6].ljust(6, "0") or 0))  # ns truncate
    assert got.precision == ("second" if digits == 0 else "millisecond" if digits <= 3 else "microsecond")
    assert normalise(text.replace("Z", "+02:00")).utc == got.utc - timedelta(hours=2)


def test_leap_second_orders_between_its_neighbours() -> None:
    before, leap, after = (
        normalise(v).utc for v in ("2016-12-31T23:59:59Z", "2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z")
    )
    assert before < leap < after and leap.date() == before.date()


# --- epoch numbers and /Date()/ ---------------------------------------------------------------------------

E = utc(2023, 11, 14, 22, 13, 20)


@pytest.mark.parametrize(
    ("value", "expected", "precision"),
    [
        (1_700_000_000, E, "second"),
        (1_700_000_000_123, E + timedelta(microseconds=123_000), "millisecond"),
        (1_700_000_000_123_456, E + timedelta(microseconds=123_456), "microsecond"),
        (1_700_000_000_123_456_789, E + timedelta(microseconds=123_456), "microsecond"),  # ns truncate to µs
        (1_700_000_000.5, E + timedelta(microseconds=500_000), "millisecond"),  # as written: one fraction digit
        (1_700_000_000_123.0, E + timedelta(microseconds=123_000), "millisecond"),
        ("1700000000", E, "second"),
        ("1700000000123", E + timedelta(microseconds=123_000), "millisecond"),
        ("1700000000.5", E + timedelta(microseconds=500_000), "millisecond"),  # written fraction digits refine
        ("1700000000.123456789", E + timedelta(microseconds=123_456), "microsecond"),
        ("1700000000123456789", E + timedelta(microseconds=123_456), "microsecond"),
        ("+1700000000", E, "second"),
        (0, utc(1970, 1, 1), "second"),
        (-86_400, utc(1969, 12, 31), "second"),
        ("-86400.5", utc(1969, 12, 30, 23, 59, 59, 500_000), "millisecond"),
        (99_999_999_999, utc(5138, 11, 16, 9, 46, 39), "second"),  # just below 1e11: still seconds
        (100_000_000_000, utc(1973, 3, 3, 9, 46, 40), "millisecond"),  # 1e11: milliseconds
    ],
)
def test_epoch_numbers_by_magnitude(value: object, expected: datetime, precision: str) -> None:
    # The unit states the precision (a millisecond epoch is a millisecond value), never "unknown".
    assert normalise(value) == Instant(expected, precision)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/Date(1552348800000)/", utc(2019, 3, 12)),
        ("/Date(1552348800000+0000)/", utc(2019, 3, 12)),
        ("/Date(1552348800000+0530)/", utc(2019, 3, 12)),  # the offset is informational: ms are UTC
        ("/Date(1552348800000-0800)/", utc(2019, 3, 12)),
        ("/Date(1555085857061)/", utc(2019, 4, 12, 16, 17, 37, 61_000)),
        ("\\/Date(1555085857061)\\/", utc(2019, 4, 12, 16, 17, 37, 61_000)),  # JSON-escaped form
        ("/Date(-86400000)/", utc(1969, 12, 31)),
        ("/Date(0)/", utc(1970, 1, 1)),
    ],
)
def test_dotnet_dates(value: str, expected: datetime) -> None:
    assert normalise(value, BERLIN) == Instant(expected, "millisecond")


# --- datetime objects, dates, start of day ------------------------------------------------------------------


def test_datetime_and_date_objects() -> None:
    aware = datetime(2024, 2, 29, 11, 20, 30, tzinfo=timezone(timedelta(hours=1)))
    assert normalise(aware) == Instant(T, None)
    assert normalise(datetime(2024, 2, 29, 11, 20, 30, tzinfo=ZoneInfo(BERLIN))).utc == T
    assert normalise(datetime(2024, 2, 29, 11, 20, 30), BERLIN).utc == T
    assert normalise(date(2024, 2, 29), BERLIN) == Instant(utc(2024, 2, 28, 23), "day")
    with pytest.raises(TimestampError, match="zone"):
        normalise(datetime(2024, 2, 29, 11, 20, 30))
    with pytest.raises(TimestampError):
        normalise(date(2024, 2, 29))
    folded = datetime(2024, 10, 27, 2, 30, fold=1)  # a naive datetime's fold is not a policy
    with pytest.raises(TimestampError, match="occurs twice"):
        normalise(folded, BERLIN)
    assert normalise(folded, BERLIN, ambiguous="earliest").utc == utc(2024, 10, 27, 0, 30)


def test_date_means_the_first_existing_instant_of_the_day() -> None:
    # Brazil moved its clocks at midnight: 2018-11-04 began at 01:00 -02:00, whatever the policies say.
    assert normalise("2018-11-04", "America/Sao_Paulo").utc == utc(2018, 11, 4, 3)
    with pytest.raises(TimestampError, match="gap"):
        normalise("2018-11-04T00:30:00", "America/Sao_Paulo")
    # Cuba fell back at 01:00 to 00:00: the day still starts at its first midnight.
    assert normalise("2023-11-05", "America/Havana").utc == utc(2023, 11, 5, 4)


# --- rejections -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "\t\n",
        "garbage",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e12",
        "0x1F",
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        [],
        ["2024-02-29"],
        {},
        {"t": 1},
        b"2024-02-29T10:20:30Z",
        3 + 4j,
        object(),
        "2024-02-30",
        "2023-02-29T10:20:30Z",
        "2024-13-01",
        "2024-00",
        "2024-02-29T25:00:00Z",
        "2024-02-29T24:00:01Z",
        "2024-02-29T24:30Z",
        "2024-02-29T23:60:00Z",
        "2024-02-29T10:20:61Z",
        "2024-02-29T10:20:30+18:01",
        "2024-02-29T10:20:30-19:00",
        "2024-02-29T10:20:30+1801",
        "2024-02-29T10:20:30+01:60",
        "2024-02-29T10:20:30+01:00:30",
        "2024-02-29T10:20:30.Z",
        "2024-02-29T10:20:30.+01:00",
        "20240229T102030.Z",
        "2024-02-29T10:20:30.1234567890Z",
        "2024-02-29T10:20:30 +01:00",
        "2024-02-29X10:20:30Z",
        "2024-02-29T102030Z",
        "20240229T10:20:30Z",
        "2024-02-29T10Z",
        "2024-02-29T10",
        "2024-W09-4",
        "2024-060",
        "10:20:30Z",
        "2024-2-29",
        "٢٠٢٤-٠٢-٢٩",
        "\uff12\uff10\uff12\uff14-02-29T10:20:30Z",
        "2024-02-29Z",
        "2024-02-29T10:20:30ZZ",
        "2024-02-29T10:20:30Z+01:00",
        "/Date(abc)/",
        "/Date()/",
        "/Date(1552348800000+9999)/",
        "/Date(1552348800000+0060)/",
        "Date(1552348800000)",
        "1700000000.",
        ".5",
        "-",
        "+",
        "10" * 11,
        10**20,
        -(10**20),
        10**400,
        1e300,
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T24:00:00Z",
    ],
)
def test_rejections(value: object) -> None:
    with pytest.raises(TimestampError):
        normalise(value, BERLIN)


def test_naive_without_zone_is_an_error_never_a_guess() -> None:
    for value in ("2024-02-29T10:20:30", "20240229", "2024", "2024-02", "20261025013000"):
        with pytest.raises(TimestampError, match="zone"):
            normalise(value)


def test_error_names_value_zone_and_expectation() -> None:
    assert issubclass(TimestampError, MappingError) and issubclass(TimestampError, InletError)
    with pytest.raises(TimestampError) as caught:
        normalise("2024-02-30T10:00:00", BERLIN)
    message = str(caught.value)
    assert "'2024-02-30T10:00:00'" in message and BERLIN in message and "expected" in message
    with pytest.raises(TimestampError, match=r"'2024-02-29T10:20:30'.*Mars/Olympus.*IANA"):
        normalise("2024-02-29T10:20:30", "Mars/Olympus")
    with pytest.raises(TimestampError) as caught:
        normalise("x" * 500)
    assert len(str(caught.value)) < 300  # huge values are abbreviated in the message


def test_max_future_seconds() -> None:
    now = utc(2024, 1, 1)
    assert normalise("2024-01-02T00:00:00Z", now=now, max_future_seconds=86_400).utc == utc(2024, 1, 2)
    with pytest.raises(TimestampError, match="no later than"):
        normalise("2024-01-02T00:00:01Z", now=now, max_future_seconds=86_400)
    with pytest.raises(TimestampError):
        normalise("/Date(1893456000000)/", now=now, max_future_seconds=0)
    with pytest.raises(TimestampError):
        normalise_series(["2023-12-31T23:00:00", "2024-01-01T02:00:00"], "UTC", now=now, max_future_seconds=3600)
    assert normalise("2099-01-01T00:00:00Z").utc.year == 2099  # no limit unless asked
    assert normalise("2000-01-01T00:00:00Z", max_future_seconds=0).utc.year == 2000  # real clock
    with pytest.raises(ValueError, match="aware"):
        normalise("2024-01-01T00:00:00Z", now=datetime(2024, 1, 1), max_future_seconds=0)


# --- DST policies -------------------------------------------------------------------------------------------

# (zone, repeated wall time, earliest, latest, skipped wall time, shift_forward, shift_backward)
DST_CASES = [
    (
        BERLIN,
        "2024-10-27T02:30:00",
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 1, 30),
        "2024-03-31T02:30:00",
        utc(2024, 3, 31, 1, 30),
        utc(2024, 3, 31, 0, 30),
    ),
    (
        NEW_YORK,
        "2024-11-03T01:30:00",
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 3, 6, 30),
        "2024-03-10T02:30:00",
        utc(2024, 3, 10, 7, 30),
        utc(2024, 3, 10, 6, 30),
    ),
    # Lord Howe moves by 30 minutes: +11:00 <-> +10:30
    (
        LORD_HOWE,
        "2024-04-07T01:45:00",
        utc(2024, 4, 6, 14, 45),
        utc(2024, 4, 6, 15, 15),
        "2024-10-06T02:15:00",
        utc(2024, 10, 5, 15, 45),
        utc(2024, 10, 5, 15, 15),
    ),
]


@pytest.mark.parametrize(("zone_name", "repeated", "earliest", "latest", "skipped", "forward", "backward"), DST_CASES)
def test_dst_policies(
    zone_name: str,
    repeated: str,
    earliest: datetime,
    latest: datetime,
    skipped: str,
    forward: datetime,
    backward: datetime,
) -> None:
    with pytest.raises(TimestampError, match="occurs twice"):
        normalise(repeated, zone_name)
    assert normalise(repeated, zone_name, ambiguous="earliest").utc == earliest
    assert normalise(repeated, zone_name, ambiguous="latest").utc == latest
    assert normalise(repeated, zone_name, nonexistent="shift_forward", ambiguous="latest").utc == latest
    with pytest.raises(TimestampError, match="gap"):
        normalise(skipped, zone_name)
    with pytest.raises(TimestampError, match="gap"):
        normalise(skipped, zone_name, ambiguous="earliest")  # the other policy does not apply
    assert normalise(skipped, zone_name, nonexistent="shift_forward").utc == forward
    assert normalise(skipped, zone_name, nonexistent="shift_backward").utc == backward
    # shift_forward reads the wall time with the pre-gap offset: later by exactly the gap length
    gap = forward - backward
    assert gap == timedelta(minutes=30 if zone_name == LORD_HOWE else 60)
    shifted = forward.astimezone(ZoneInfo(zone_name)).replace(tzinfo=None)
    assert shifted == datetime.fromisoformat(skipped) + gap


@pytest.mark.parametrize("zone_name", DST_ZONES)
def test_series_across_fall_back_keeps_every_reading_in_order(zone_name: str) -> None:
    tz = ZoneInfo(zone_name)
    start = {BERLIN: utc(2024, 10, 26, 23), NEW_YORK: utc(2024, 11, 3, 4), LORD_HOWE: utc(2024, 4, 6, 14)}
    truth = [start[zone_name] + timedelta(minutes=10 * i) for i in range(24)]
    walls = [t.astimezone(tz).replace(tzinfo=None).isoformat() for t in truth]
    assert len(set(walls)) < len(walls)  # the repeated hour really is in there
    series = normalise_series(walls, zone_name)
    assert [i.utc for i in series] == truth
    assert all(i.precision == "second" for i in series)
    # one at a time, a policy collapses or reorders the repeated hour: that is what the series repairs
    assert [normalise(w, zone_name, ambiguous="earliest").utc for w in walls] != truth


def test_series_details() -> None:
    # the first reading has no predecessor: the policy decides (and "raise" raises)
    with pytest.raises(TimestampError, match="occurs twice"):
        normalise_series(["2024-10-27T02:30:00"], BERLIN)
    first = normalise_series(["2024-10-27T02:30:00", "2024-10-27T02:10:00"], BERLIN, ambiguous="latest")
    assert [i.utc for i in first] == [utc(2024, 10, 27, 1, 30), utc(2024, 10, 27, 1, 10)]
    # mixed inputs, aware values set the order too; gaps follow the nonexistent policy
    mixed = normalise_series(
        ["2024-10-27T00:40:00Z", "2024-10-27T02:50:00", 1729993800, "2024-10-27T02:55:00", "/Date(1729994400000)/"],
        BERLIN,
    )
    assert [i.utc for i in mixed] == [
        utc(2024, 10, 27, 0, 40),
        utc(2024, 10, 27, 0, 50),
        utc(2024, 10, 27, 1, 50),
        utc(2024, 10, 27, 1, 55),
        utc(2024, 10, 27, 2),
    ]
    # a reading earlier than both occurrences cannot be placed by order: the policy decides again
    with pytest.raises(TimestampError, match="occurs twice"):
        normalise_series(["2024-10-27T02:00:00Z", "2024-10-27T02:10:00"], BERLIN)
    # hourly meters report 02:30 twice on fall-back day: the repeat is the second occurrence, not a duplicate
    hourly = normalise_series(
        ["2024-10-27T01:30:00", "2024-10-27T02:30:00", "2024-10-27T02:30:00", "2024-10-27T03:30:00"], BERLIN
    )
    assert [i.utc for i in hourly] == [utc(2024, 10, 26, 23, 30) + timedelta(hours=h) for h in range(4)]
    assert normalise_series([], BERLIN) == []
    assert normalise_series(iter(["2024-03-31T02:30:00"]), BERLIN, nonexistent="shift_backward")[0].utc == utc(
        2024, 3, 31, 0, 30
    )


# --- Instant and zone() ---------------------------------------------------------------------------------------


def test_instant_is_frozen() -> None:
    got = normalise("2024-02-29T10:20:30Z")
    with pytest.raises(AttributeError):
        got.utc = T  # type: ignore[misc]
    with pytest.raises(AttributeError):
        got.precision = "day"  # type: ignore[misc]
    assert hash(got) == hash(Instant(T, "second"))


@pytest.mark.parametrize(
    ("value", "zone_name", "text"),
    [
        ("2024-02-29T11:20:30.123+01:00", None, "2024-02-29T10:20:30.123Z"),
        ("2024-02-29T10:20:30.1Z", None, "2024-02-29T10:20:30.100Z"),
        ("2024-02-29T10:20:30.1234Z", None, "2024-02-29T10:20:30.123400Z"),
        ("2024-02-29T10:20:30Z", None, "2024-02-29T10:20:30Z"),
        ("2024-02-29T10:20Z", None, "2024-02-29T10:20:00Z"),
        ("2024-02-29", BERLIN, "2024-02-28T23:00:00Z"),
        ("2024", "UTC", "2024-01-01T00:00:00Z"),
        (1_700_000_000, None, "2023-11-14T22:13:20Z"),
        (1_700_000_000.25, None, "2023-11-14T22:13:20.250Z"),
        (1_700_000_000_123_456, None, "2023-11-14T22:13:20.123456Z"),
        ("/Date(1552348800000)/", None, "2019-03-12T00:00:00.000Z"),
        ("2016-12-31T23:59:60Z", None, "2016-12-31T23:59:59.999999Z"),
    ],
)
def test_isoformat(value: object, zone_name: str | None, text: str) -> None:
    got = normalise(value, zone_name)
    assert got.isoformat() == text
    assert normalise(text).utc == got.utc


def test_zone_is_cached_and_strict() -> None:
    assert zone(BERLIN) is zone(BERLIN)
    assert zone(BERLIN).key == BERLIN
    for bad in ("Mars/Olympus", "", "Europe", "../etc/passwd", "/etc/localtime", "Europe/Berlin\0"):
        with pytest.raises(TimestampError, match="IANA"):
            zone(bad)


# --- real values from the sample feeds -----------------------------------------------------------------------


def field_values(files: list[Path], keys: str) -> list[str]:
    """Every JSON string value of the given keys (a regex alternation), grep-like, JSON-unescaped."""
    pattern = re.compile(rf'"(?:{keys})"\s*:\s*"((?:[^"\\]|\\.)*)"')
    found = [json.loads(f'"{raw}"') for path in files for raw in pattern.findall(path.read_text("utf-8"))]
    assert found, f"no {keys} values in {len(files)} files"
    return found


def test_synthea_fhir_datetimes(sample_data: Path) -> None:
    files = sorted((sample_data / "fhir/smart-generated-sample-data-R4-SYNTHEA").glob("*.json"))
    values = field_values(files, "effectiveDateTime|issued|onsetDateTime|recordedDate|authoredOn")
    for value in values:
        got = normalise(value)
        assert got.utc == datetime.fromisoformat(value).astimezone(UTC), value
        assert got.precision == ("millisecond" if "." in value else "second"), value
    dates = field_values(files, "birthDate")
    assert all(normalise(v, "UTC") == Instant(utc(*map(int, v.split("-"))), "day") for v in dates)


def test_hl7_fhir_partial_dates(sample_data: Path) -> None:
    files = sorted((sample_data / "fhir/hl7-r4-official-examples").glob("*.json"))
    values = field_values(files, "birthDate|lastOccurrence|date|onsetDateTime|recordedDate|start|end")
    partial = [v for v in values if re.fullmatch(r"\d{4}(-\d{2})?", v)]
    assert {len(v) for v in partial} == {4, 7}  # both a year (Person birthDate 1963) and a month (2012-06)
    for value in partial:
        got = normalise(value, BERLIN)
        assert got.precision == ("year" if len(value) == 4 else "month")
        year, month = int(value[:4]), int(value[5:7] or 1)
        assert got.utc == local(BERLIN, year, month, 1)
    for value in values:
        if "T" in value:  # every full FHIR dateTime carries an offset
            assert normalise(value).utc == datetime.fromisoformat(value).astimezone(UTC), value


def test_xero_dates(sample_data: Path) -> None:
    files = sorted((sample_data / "erp/xero-openapi/extracted-response-examples").glob("*.json"))
    values = field_values(files, r"[A-Za-z]*Date[A-Za-z]*|UpdatedDateUTC|Timestamp")
    dotnet = [v for v in values if v.startswith("/Date(")]
    assert any("+" in v for v in dotnet) and any("+" not in v for v in dotnet)
    for value in dotnet:
        ms = int(re.match(r"/Date\((-?\d+)", value)[1])  # type: ignore[index]
        assert normalise(value) == Instant(utc(1970, 1, 1) + timedelta(milliseconds=ms), "millisecond")
    iso = [v for v in values if re.match(r"\d{4}-\d{2}-\d{2}T", v)]
    assert any(v.endswith("Z") for v in iso) and any(not v.endswith("Z") for v in iso)
    for value in iso:
        if value.endswith("Z"):  # includes 7 fractional digits (.NET ticks), truncated to µs
            assert normalise(value).utc == datetime.fromisoformat(value), value
        else:  # naive: meaningless without the organisation's zone
            with pytest.raises(TimestampError, match="zone"):
                normalise(value)
            wall = datetime.fromisoformat(value)
            assert normalise(value, "Pacific/Auckland").utc == wall.replace(
                tzinfo=ZoneInfo("Pacific/Auckland")
            ).astimezone(UTC)


def test_business_central_last_modified(sample_data: Path) -> None:
    files = sorted((sample_data / "erp/dynamics365-business-central-api-v2/responses").glob("*.json"))
    values = field_values(files, "lastModifiedDateTime")
    digits = {len(v.rstrip("Z").partition(".")[2]) for v in values}
    assert len(digits) >= 3  # 0, 1-3 fractional digits all occur
    for value in values:
        if "T" not in value:  # a few documented examples carry a bare date: a day in the company's zone
            with pytest.raises(TimestampError, match="zone"):
                normalise(value)
            assert normalise(value, "UTC") == Instant(datetime.fromisoformat(value).replace(tzinfo=UTC), "day")
            continue
        got = normalise(value)
        assert got.utc == datetime.fromisoformat(value), value
        assert got.precision == ("millisecond" if "." in value else "second")


def test_tasmota_device_times(sample_data: Path) -> None:
    files = [
        sample_data / "iot/evcc-device-responses/tasmota-http-status-responses.json",
        *sorted((sample_data / "iot/koestler-go-mqtt-to-influx").glob("*.jsonl")),
    ]
    values = field_values(files, "Time|StartTime|TotalStartTime")
    good = [v for v in values if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)?", v)]
    broken = [v for v in values if v not in good]
    assert broken and any(len(v) == 19 for v in good)  # the capture's broken times, and naive device clocks
    for value in good:
        expected = datetime.fromisoformat(value)
        if expected.tzinfo is None:
            expected = expected.replace(tzinfo=ZoneInfo(BERLIN))
        assert normalise(value, BERLIN).utc == expected.astimezone(UTC), value
    for value in broken:  # e.g. "2019-01-10T22:16:04qq", "invalid2019-01-10T22:45:41"
        with pytest.raises(TimestampError):
            normalise(value, BERLIN)


# --- properties -------------------------------------------------------------------------------------------------


def transitions(zone_name: str) -> list[datetime]:
    """UTC instants in 1970-2037 where the zone's offset changes (found by scanning, not hard-coded)."""
    if zone_name not in _TRANSITIONS:
        tz, found = ZoneInfo(zone_name), []
        day, end = utc(1970, 1, 1), utc(2038, 1, 1)
        while day < end:
            nxt = day + timedelta(days=1)
            if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
                lo, hi = day, nxt  # bisect to the minute the offset changes
                while hi - lo > timedelta(minutes=1):
                    mid = lo + (hi - lo) / 2
                    same = mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset()
                    lo, hi = (mid, hi) if same else (lo, mid)
                found.append(hi.replace(second=0, microsecond=0))
            day = nxt
        _TRANSITIONS[zone_name] = found
    return _TRANSITIONS[zone_name]


_TRANSITIONS: dict[str, list[datetime]] = {}
SHIFT = {BERLIN: 60, NEW_YORK: 60, LORD_HOWE: 30}  # minutes the clocks move (Lord Howe: 60 until 1985)


@st.composite
def zone_and_instant(draw: st.DrawFn) -> tuple[str, datetime]:
    """A DST zone and an instant in 1970-2037: uniform, or within two hours of one of its transitions."""
    zone_name = draw(st.sampled_from(DST_ZONES))
    if draw(st.booleans()):
        moment = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2037, 12, 31)))
        return zone_name, moment.replace(tzinfo=UTC)
    near = draw(st.sampled_from(transitions(zone_name)))
    return zone_name, near + timedelta(seconds=draw(st.integers(-7200, 7200)))


@settings(max_examples=600, deadline=None)
@given(case=zone_and_instant())
def test_every_instant_round_trips_through_its_wall_time(case: tuple[str, datetime]) -> None:
    zone_name, moment = case
    tz = ZoneInfo(zone_name)
    seen = moment.astimezone(tz)
    wall = seen.replace(tzinfo=None)
    # independent oracle: the wall time is ambiguous iff an instant 30 or 60 minutes away shows it too
    shifts = [timedelta(minutes=m) for m in (-60, -30, 30, 60)]
    twins = [moment + d for d in shifts if (moment + d).astimezone(tz).replace(tzinfo=None) == wall]
    policy: Ambiguous = "latest" if seen.fold else "earliest"
    for value in (wall.isoformat(), wall, wall.strftime("%Y%m%dT%H%M%S.%f")):
        assert normalise(value, zone_name, ambiguous=policy).utc == moment
        if twins:
            with pytest.raises(TimestampError, match="occurs twice"):
                normalise(value, zone_name)
        else:
            assert normalise(value, zone_name).utc == moment


def test_transitions_are_found_and_hit() -> None:
    for zone_name in DST_ZONES:
        found = transitions(zone_name)
        assert len(found) > 60, zone_name  # Lord Howe: DST since 1981; the others every year
        assert (utc(2024, 10, 27, 1) in found) == (zone_name == BERLIN)


@settings(max_examples=300, deadline=None)
@given(case=zone_and_instant(), data=st.data(), count=st.integers(1, 40))
def test_series_round_trips_through_wall_times(case: tuple[str, datetime], data: st.DataObject, count: int) -> None:
    zone_name, moment = case
    step = data.draw(st.integers(1, SHIFT[zone_name]), label="step minutes")  # see normalise_series
    moment -= timedelta(minutes=data.draw(st.integers(0, count * step)))  # so the series crosses it
    tz = ZoneInfo(zone_name)
    truth = [moment + timedelta(minutes=step * i) for i in range(count)]
    walls = [t.astimezone(tz).replace(tzinfo=None).isoformat() for t in truth]
    first_policy: Ambiguous = "latest" if truth[0].astimezone(tz).fold else "earliest"
    assert [i.utc for i in normalise_series(walls, zone_name, ambiguous=first_policy)] == truth


offsets = st.integers(-18 * 60, 18 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets),
    separator=st.sampled_from("Tt "),
    digits=st.integers(0, 9),
    style=st.integers(0, 3),
    extra=st.text("0123456789", min_size=3, max_size=3),
)
def test_offset_spellings_fast_and_strict_paths_agree(
    moment: datetime, separator: str, digits: int, style: int, extra: str
) -> None:
    offset = moment.utcoffset() or timedelta(0)
    sign, minutes = ("-" if offset < timedelta(0) else "+"), abs(offset) // timedelta(minutes=1)
    tz = [
        "Z" if not minutes else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
        f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}",
        "z" if not minutes else f"{sign}{minutes // 60:02d}{minutes % 60:02d}",
    ][style]
    fraction = (f"{moment.microsecond:06d}" + extra)[:digits]
    wall = moment.replace(tzinfo=None, microsecond=0).isoformat(sep=separator)  # strftime drops year padding
    text = wall + (f".{fraction}" if digits else "") + tz
    expected = moment.replace(microsecond=int(fraction[:6].ljust(6, "0") or 0)).astimezone(UTC)
    got = normalise(text)
    assert got.utc == expected
    assert normalise(f" {text} ") == got  # the leading space forces the strict regex path
    assert normalise(got.isoformat()).utc == got.utc


iso_alphabet = "0123456789-:.,+TtZz /Date()W"
anything = st.one_of(
    st.text(),
    st.text(iso_alphabet),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.,+Zz-]{2,22}\Z"),
    st.from_regex(r"\A/Date\([0-9+-]{0,22}\)/\Z"),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(),
    st.dates(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=anything,
    zone_name=st.one_of(st.none(), st.sampled_from([*DST_ZONES, "UTC"]), st.text(max_size=20)),
    ambiguous=st.sampled_from(["raise", "earliest", "latest"]),
    nonexistent=st.sampled_from(["raise", "shift_forward", "shift_backward"]),
)
def test_only_timestamp_errors_escape(value: object, zone_name: str | None, ambiguous: str, nonexistent: str) -> None:
    try:
        got = normalise(value, zone_name, ambiguous=ambiguous, nonexistent=nonexistent)  # type: ignore[arg-type]
    except TimestampError:
        return
    assert got.utc.tzinfo is UTC and isinstance(got, Instant)
    assert got.precision in (None, "year", "month", "day", "minute", "second", "millisecond", "microsecond")


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.text(iso_alphabet), st.integers(), st.datetimes()), max_size=6))
def test_series_only_raises_timestamp_errors(values: list[object]) -> None:
    try:
        result = normalise_series(values, BERLIN)
    except TimestampError:
        return
    assume(result)
    assert len(result) == len(values)


@settings(max_examples=1000, deadline=None)
@given(
    text=st.one_of(
        st.text(iso_alphabet, max_size=35),
        st.from_regex(r"\A20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][0-9][Tt ][0-2][0-9]:[0-5][0-9][0-9:.,+Zz-]{0,18}\Z"),
    )
)
def test_fast_path_is_never_more_lenient_than_the_strict_path(text: str) -> None:
    def outcome(value: str) -> Instant | str:
        try:
            return normalise(value, BERLIN, ambiguous="earliest", nonexistent="shift_forward")
        except TimestampError:
            return "rejected"

    assert outcome(text) == outcome(f" {text}")  # a leading space bypasses the fast path


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("shift_forward", utc(2024, 3, 31, 1, 30)),  # by the gap's length (java.time): 02:30 -> 03:30 CEST
        ("shift_backward", utc(2024, 3, 31, 0, 30)),  # by the gap's length: 02:30 -> 01:30 CET
        ("snap_forward", utc(2024, 3, 31, 1, 0)),  # to the gap's end (pandas' shift_forward): 03:00 CEST
        ("snap_backward", utc(2024, 3, 31, 0, 59, 59, 999_999)),  # to just before it (pandas' shift_backward)
    ],
)
def test_gap_policies_have_unambiguous_names(policy: str, expected: datetime) -> None:
    assert normalise("2024-03-31T02:30:00", BERLIN, nonexistent=policy).utc == expected  # type: ignore[arg-type]


def test_snap_policies_find_a_half_hour_gap_edge() -> None:
    # Lord Howe springs forward by 30 minutes (02:00 -> 02:30 local, +10:30 -> +11:00).
    edge = normalise("2024-10-06T02:10:00", "Australia/Lord_Howe", nonexistent="snap_forward").utc
    assert edge == utc(2024, 10, 5, 15, 30)
    before = normalise("2024-10-06T02:10:00", "Australia/Lord_Howe", nonexistent="snap_backward").utc
    assert before == edge - timedelta(microseconds=1)
