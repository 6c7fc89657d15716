"""One timestamp normaliser for every source format: ``normalise(value, zone) -> Instant``.

Every timestamp inlet emits goes through :func:`normalise` (or :func:`normalise_series` for a device's
ordered readings); connectors never parse time by hand. The result is an :class:`Instant`: the moment in
UTC (``datetime``, microsecond resolution) plus the precision the *source* stated.

Rules
-----
* **Accepted text.** ISO 8601 / RFC 3339 extended (``2024-02-29T10:20:30.123+01:00``) and basic
  (``20240229T102030Z``, compact local ``20241025013000``) forms; separator ``T``, ``t`` or space; offsets
  ``Z``, ``z``, ``±HH:MM``, ``±HHMM``, ``±HH`` and ``-00:00`` (= UTC, the local offset being unknown);
  0-9 fractional digits after ``.`` or ``,`` (digits past the microsecond are truncated); FHIR partial dates
  ``2024`` and ``2024-02``; OData / .NET ``/Date(ms)/`` and ``/Date(ms±hhmm)/`` (the ms are UTC, the offset is
  informational and only range-checked). Surrounding whitespace is ignored.
* **Epoch numbers** (``int``, ``float`` or a numeric string) pick their unit by magnitude ``|v|``:
  ``< 1e11`` seconds, ``< 1e14`` milliseconds, ``< 1e17`` microseconds, ``< 1e20`` nanoseconds. 1e11 s is
  the year 5138 and 1e11 ms is March 1973, so every plausible feed value is unambiguous; epoch ms before
  1973 are read as seconds (documented limitation). Sub-microsecond digits are floored; floats round to the
  nearest microsecond. The unit is the precision (``1700000000`` → ``second``, ``1700000000123`` →
  ``millisecond``, µs and ns → ``microsecond``); fraction digits as written refine it (``"1700000000.5"``
  and ``1700000000.37`` → ``millisecond``; a float's digits are those of its shortest repr, i.e. the JSON
  text). A string of 4, 8, 12 or 14 digits (no sign, no fraction) is a calendar value (``YYYY``,
  ``YYYYMMDD``, ``YYYYMMDDhhmm``, ``YYYYMMDDhhmmss``), never an epoch.
* **Zones.** A value without an offset is local wall time in ``zone`` (an IANA name); without ``zone`` it
  is an error, never a guess. ``zone`` is ignored for values that carry their own offset.
* **DST.** A wall time that occurs twice (fall-back) follows ``ambiguous``: ``raise``, ``earliest``
  (the first occurrence, the pre-transition offset) or ``latest``. A wall time in a spring-forward gap follows
  ``nonexistent``: ``raise``; ``shift_forward`` (read with the offset before the gap, i.e. moved later by
  the gap length: 02:30 -> 03:30) or ``shift_backward`` (offset after the gap: 02:30 -> 01:30) — moved *by
  the gap's length*, java.time's and PEP 495's rule, which keeps distinct readings distinct and in order;
  or ``snap_forward`` (to the first instant after the gap: 02:30 -> 03:00) or ``snap_backward`` (to the
  last microsecond before it: 02:30 -> 01:59:59.999999) — *to the gap's edge*, which is what pandas calls
  ``shift_forward`` / ``shift_backward``. The names differ from pandas' on purpose: the same word must not
  mean two rules. With ``near`` (when the value was received, e.g. a device's current time) a repeated or
  skipped wall time takes the reading closest to it instead, whatever the policies. Dates and partial dates
  mean the *start* of that day in ``zone``: its first existing instant, whatever the policies (some zones
  skip midnight).
* **Leap second** ``:60`` is clamped to ``:59.999999``: ``datetime`` cannot hold it, clamping keeps the
  value in its own minute and day (bucketing and FHIR dates stay right) and strictly between the seconds
  around it, whereas rolling to the next ``:00`` would collide with a genuine reading of that second.
* **24:00** (only as ``24:00``, ``24:00:00`` or with a zero fraction) is 00:00 of the next day.
* **Precision** is the finest unit the source wrote: ``year``, ``month``, ``day``, ``minute``, ``second``,
  ``millisecond`` (1-3 fractional digits), ``microsecond`` (4-9), or ``None`` when the source does not
  say (``datetime`` objects). Epoch numbers and ``/Date(ms)/`` (``millisecond``) state theirs by the unit.
* **Rejected** with :class:`~core.errors.TimestampError` (message: value, zone, expectation): blank
  strings, NaN/Infinity, booleans, containers, ``None``, impossible dates, hours past 24, offsets beyond
  ±18:00, ``.`` without digits, anything else, and values later than ``now + max_future_seconds``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from inlet.core.errors import TimestampError

__all__ = [
    "Ambiguous",
    "ClockCap",
    "Instant",
    "Nonexistent",
    "Precision",
    "TimestampError",
    "normalise",
    "normalise_series",
    "zone",
]

Precision = Literal["year", "month", "day", "minute", "second", "millisecond", "microsecond"]
Ambiguous = Literal["raise", "earliest", "latest"]
Nonexistent = Literal["raise", "shift_forward", "shift_backward", "snap_forward", "snap_backward"]

_EXPECTED: Final = "an ISO 8601 / RFC 3339 date-time, a FHIR partial date, an epoch number or /Date(ms)/"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_S_END: Final = 10**11  # the magnitude rule's unit bounds (module docstring), for the int fast path
_EPOCH_MS_END: Final = 10**14
_ONE_DAY: Final = timedelta(days=1)
_MAX_OFFSET_MIN: Final = 18 * 60
_fromiso = datetime.fromisoformat
_combine = datetime.combine
_new = tuple.__new__

# Both ISO regexes share one group layout: Y M D h m s frac Z sign oh om. [0-9], not \d: no Unicode digits.
_TZ = r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
_EXTENDED: Final = re.compile(
    r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?" + _TZ + r")?)?)?"
)
_BASIC: Final = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})(?:[Tt ]?([0-9]{2})([0-9]{2})"
    r"(?:([0-9]{2})(?:[.,]([0-9]{1,9}))?)?" + _TZ + r")?"
)
_DOTNET: Final = re.compile(r"\\?/Date\(([+-]?[0-9]{1,20})(?:[+-]([0-9]{2})([0-9]{2}))?\)\\?/")
_NUMBER: Final = re.compile(r"([+-]?)([0-9]{1,20})(?:\.([0-9]{1,9}))?")
_CALENDAR_DIGITS: Final = frozenset({4, 8, 12, 14})

# Fast path for the common extended forms ``YYYY-MM-DD[Tt ]hh:mm[:ss[.f{1,6}]]`` + ``Z`` / ``±HH:MM`` / nothing.
# Per zone designator, the value's total length -> (precision, end of the separator slice, the separators
# allowed at positions 4, 7, 10, 13 (,16 (,19)), read in one slice). C fromisoformat also reads any separator
# at 10, basic and hour-only times and ``:30.Z``: the slice keeps the fast path to what the strict path
# accepts, and the length fixes the precision. Up to 6 fraction digits only: past the sixth, fromisoformat
# skips any junk before a zone designator, so 7-9 digits (.NET ticks) take the strict path.
_FastShape = tuple[Precision, int, frozenset[str]]
_SEPS_MINUTE: Final = frozenset({"--T:", "--t:", "-- :"})
_SEPS_SECOND: Final = frozenset({s + ":" for s in _SEPS_MINUTE})
_SEPS_FRACTION: Final = frozenset({s + ":" + f for s in _SEPS_MINUTE for f in ".,"})


def _fast_shapes(tz_len: int) -> dict[int, _FastShape]:
    shapes: dict[int, _FastShape] = {
        16 + tz_len: ("minute", 14, _SEPS_MINUTE),
        19 + tz_len: ("second", 17, _SEPS_SECOND),
    }
    for digits in range(1, 7):
        shapes[20 + digits + tz_len] = ("millisecond" if digits <= 3 else "microsecond", 20, _SEPS_FRACTION)
    return shapes


_SHAPES_Z: Final = _fast_shapes(1)
_SHAPES_OFFSET: Final = _fast_shapes(6)
_SHAPES_NAIVE: Final = _fast_shapes(0)
# "+HH:MM" -> offset for every legal offset; a miss means "not this shape" or "beyond ±18:00".
_OFFSETS: Final = {
    f"{sign}{m // 60:02d}:{m % 60:02d}": timedelta(minutes=m if sign == "+" else -m)
    for sign in "+-"
    for m in range(_MAX_OFFSET_MIN + 1)
}
# Results for strings that carry their own offset (Z, ±HH:MM, ...), /Date()/ or an epoch, by the exact string:
# they do not depend on zone, policies, ``near`` or the series. The ERP and FHIR read loops normalise each
# record's modification time for the watermark and the mapping does it again, and a feed's readings share
# their times. Bounded: emptied when full (cheaper than LRU bookkeeping on every hit). Only successes are kept;
# the future bound is checked on every call.
_SEEN: dict[str, Instant] = {}
_SEEN_MAX: Final = 4096
_ZONES: dict[str, ZoneInfo] = {}
_TIMESPECS: Final = {"millisecond": "milliseconds", "microsecond": "microseconds"}
_SUBSECOND: Final[tuple[Precision, ...]] = (
    "second",
    "millisecond",
    "millisecond",
    "millisecond",
    "microsecond",
    "microsecond",
    "microsecond",
)
_ONE_US: Final = timedelta(microseconds=1)


def _epoch_precision(shift: int, fraction_digits: int = 0) -> Precision:
    """The precision an epoch number states: its unit (from the µs shift), refined by written fraction digits."""
    return _SUBSECOND[min(6, 6 - min(shift, 6) + fraction_digits)]


class Instant(NamedTuple):
    """A normalised moment: ``utc`` (aware, UTC, µs) and the ``precision`` the source stated.

    A NamedTuple rather than a frozen dataclass: it is just as immutable and about twice as cheap to
    build, which matters on the per-field hot path.
    """

    utc: datetime
    precision: Precision | None = None

    def isoformat(self) -> str:
        """RFC 3339 in UTC with ``Z``; always a full date-time (RFC 3339 has no partial forms).

        Fractional digits follow the precision (3 for millisecond, 6 for microsecond, none otherwise),
        widened to 3 or 6 when the instant carries sub-second digits its precision does not imply
        (epoch floats, a clamped leap second), so the text never loses information.
        """
        us = self.utc.microsecond
        spec = _TIMESPECS.get(self.precision or "", "")
        if us and (not spec or (spec == "milliseconds" and us % 1000)):
            spec = "milliseconds" if us % 1000 == 0 else "microseconds"
        return _combine(self.utc, self.utc.time()).isoformat(timespec=spec or "seconds") + "Z"


@dataclass(slots=True)
class ClockCap:
    """The latest source time that may move a pass's watermark: this host's clock plus ``max_clock_skew_seconds``,
    fixed when the pass starts; and the records dated past it since the last warning.

    Readers that keep a watermark (the newest modification time read) deliver a record dated past the cap but do
    not move the watermark to it: one bogus far-future time (a server clock, a migration bug) would otherwise carry
    the watermark past every change still to come, and the integration would stop without an error."""

    at: datetime
    rows: int = 0
    latest: datetime | None = None

    @classmethod
    def from_now(cls, seconds: float) -> ClockCap:
        return cls(datetime.now(UTC) + timedelta(seconds=seconds))

    def past(self, moment: datetime) -> bool:
        """Whether ``moment`` lies past the cap (then counted): such a record must not move the watermark."""
        if moment <= self.at:
            return False
        self.rows += 1
        self.latest = moment if self.latest is None else max(self.latest, moment)
        return True

    def warn(self, log: Any, **where: Any) -> None:
        """One warning for the records counted since the last one (per page, so a long pass says it early)."""
        if self.rows:
            log.warning(
                "records dated past this host's clock: delivered, the watermark does not move to them",
                **where,
                count=self.rows,
                latest=self.latest.isoformat() if self.latest else None,
                cap=self.at.isoformat(),
            )
            self.rows = 0


def zone(name: str) -> ZoneInfo:
    """The cached ``ZoneInfo`` for an IANA name; :class:`TimestampError` for unknown names."""
    tz = _ZONES.get(name)
    if tz is None:
        try:
            tz = ZoneInfo(name)
        except (ValueError, KeyError, OSError, TypeError) as exc:  # bad key, not found, directory, ...
            message = f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Berlin'"
            raise TimestampError(message) from exc
        _ZONES[name] = tz
    return tz


def _fail(value: object, zone_name: str | None, expected: str) -> TimestampError:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return TimestampError(f"timestamp {text} (zone {zone_name or 'not given'}): expected {expected}")


def _normalise(
    value: object,
    zone: str | None = None,
    *,
    ambiguous: Ambiguous = "raise",
    nonexistent: Nonexistent = "raise",
    now: datetime | None = None,
    max_future_seconds: float | None = None,
    near: datetime | None = None,
) -> Instant:
    """Normalise one timestamp to an :class:`Instant`; see the module docstring for the rules.

    ``near`` (aware) is when the value was received: a wall time that occurs twice, or falls in a gap, takes
    the reading closest to it — a device's clock in the repeated autumn hour is then read right instead of
    refused. The policies apply only without ``near``.
    """
    if type(value) is str:
        instant = _SEEN.get(value)
        if instant is None and (size := len(value)) > 15:
            # Fast path (see _SHAPES_Z): the zone designator, the length and one slice of the separators give
            # the shape and precision; C fromisoformat does digits and calendar. Whatever it raises on (24:00,
            # leap second, bad digits, out of range) and every other spelling takes the strict path.
            if value[-1] == "Z":
                shape = _SHAPES_Z.get(size)
                if shape is not None and value[4 : shape[1] : 3] in shape[2]:
                    try:  # noqa: SIM105 (contextlib.suppress costs a context manager per value). Z is UTC itself
                        instant = _new(Instant, (_fromiso(value), shape[0]))
                    except (ValueError, OverflowError):
                        pass
            elif (off := _OFFSETS.get(value[-6:])) is not None:
                shape = _SHAPES_OFFSET.get(size)
                if shape is not None and value[4 : shape[1] : 3] in shape[2]:
                    try:  # ±00:00 parses to UTC itself; other offsets are read as Z and moved
                        moment = _fromiso(value[:-6] + "Z") - off if off else _fromiso(value)
                        instant = _new(Instant, (moment, shape[0]))
                    except (ValueError, OverflowError):
                        pass
            else:
                shape = _SHAPES_NAIVE.get(size)
                if shape is not None and value[4 : shape[1] : 3] in shape[2]:
                    try:
                        moment = _fromiso(value)
                    except (ValueError, OverflowError):
                        pass
                    else:
                        if moment.tzinfo is None:  # else an offset hid in what looked like fraction digits
                            # local wall time: depends on zone and policies, never kept
                            moment = _localise(
                                moment,
                                shape[0],
                                value,
                                zone,
                                ambiguous=ambiguous,
                                nonexistent=nonexistent,
                                previous=None,
                                near=near,
                            )
                            if max_future_seconds is not None:
                                _check_future(moment, value, zone, now, max_future_seconds)
                            return _new(Instant, (moment, shape[0]))
            if instant is not None:
                if len(_SEEN) >= _SEEN_MAX:
                    _SEEN.clear()
                _SEEN[value] = instant
        if instant is not None:
            if max_future_seconds is not None:
                _check_future(instant.utc, value, zone, now, max_future_seconds)
            return instant
    elif type(value) is int and 0 <= value < _EPOCH_MS_END:  # epoch s or ms from a JSON number (not bool)
        if value < _EPOCH_S_END:
            instant = _new(Instant, (_EPOCH + timedelta(0, value), "second"))
        else:
            instant = _new(Instant, (_EPOCH + timedelta(0, 0, 0, value), "millisecond"))
        if max_future_seconds is not None:
            _check_future(instant.utc, value, zone, now, max_future_seconds)
        return instant
    return _strict(value, zone, ambiguous, nonexistent, now, max_future_seconds, None, near)


def _strict(
    value: object,
    zone: str | None,
    ambiguous: Ambiguous,
    nonexistent: Nonexistent,
    now: datetime | None,
    max_future_seconds: float | None,
    previous: datetime | None,
    near: datetime | None = None,
) -> Instant:
    """The full path: parse, localise a naive value (``previous`` orders a series, ``near`` picks the closest
    reading of a repeated or skipped wall time), check the future bound."""
    moment, precision = _parse(value, zone)
    if moment.tzinfo is None:
        moment = _localise(
            moment, precision, value, zone, ambiguous=ambiguous, nonexistent=nonexistent, previous=previous, near=near
        )
        instant: Instant = _new(Instant, (moment, precision))
    else:
        instant = _new(Instant, (moment, precision))
        if type(value) is str:  # its own offset, /Date()/ or an epoch: the same for every zone and policy
            if len(_SEEN) >= _SEEN_MAX:
                _SEEN.clear()
            _SEEN[value] = instant
    if max_future_seconds is not None:
        _check_future(moment, value, zone, now, max_future_seconds)
    return instant


def normalise_series(
    values: Iterable[object],
    zone: str | None = None,
    *,
    ambiguous: Ambiguous = "raise",
    nonexistent: Nonexistent = "raise",
    now: datetime | None = None,
    max_future_seconds: float | None = None,
) -> list[Instant]:
    """Normalise a device's readings, in order, resolving DST fall-back by monotonicity.

    A local wall time in the repeated hour takes the earliest occurrence *after* the previous reading: the
    first pass maps to the earlier offset and, once the wall clock has gone back (or repeats, as hourly
    meters do at 02:30), to the later one, so no reading is lost or reordered. Only when order cannot decide
    (the first reading, or both occurrences not after the previous one) does the ``ambiguous`` policy
    apply. Exact when consecutive readings are at most the DST shift apart (60 min; 30 at Lord Howe):
    sparser readings in the repeated hour look the same on either side, and take the first one after.
    """
    out: list[Instant] = []
    previous: datetime | None = None
    for value in values:
        instant = _strict(value, zone, ambiguous, nonexistent, now, max_future_seconds, previous)
        out.append(instant)
        previous = instant.utc
    return out


def _check_future(
    moment: datetime, value: object, zone_name: str | None, now: datetime | None, max_future_seconds: float
) -> None:
    if now is None:
        now = datetime.now(UTC)
    elif now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")  # a caller bug, not a bad record
    if moment > now + timedelta(seconds=max_future_seconds):
        raise _fail(value, zone_name, f"no later than {max_future_seconds:g} s after {now.isoformat()}")


def _parse(value: object, zone_name: str | None) -> tuple[datetime, Precision | None]:
    """Aware-UTC moment, or a naive wall time still to be localised, plus the stated precision."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise _fail(value, zone_name, f"a non-blank string: {_EXPECTED}")
        return _parse_text(text, value, zone_name)
    if isinstance(value, bool):  # before int: bool is an int subclass, and True is not 1970-01-01T00:00:01
        raise _fail(value, zone_name, f"{_EXPECTED}, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(value, zone_name, "a finite epoch number")
        shift = _epoch_shift(abs(value), value, zone_name)
        if isinstance(value, int):
            us = value * 10**shift if shift >= 0 else value // 10**-shift
        else:
            us = round(value * 10.0**shift)
        return _from_epoch_us(us, value, zone_name), _epoch_precision(shift, _float_digits(value))
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            # naive: a fresh wall time drops a tzinfo that does not know and the fold (the policy decides)
            return _wall(
                value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond
            ), None
        try:
            return value.astimezone(UTC), None
        except OverflowError:
            raise _fail(value, zone_name, "a moment within years 1-9999 in UTC") from None
    if isinstance(value, date):
        return _wall(value.year, value.month, value.day), "day"
    raise _fail(value, zone_name, f"{_EXPECTED}, not {type(value).__name__}")


def _float_digits(value: float) -> int:
    """Fraction digits a float was written with: its shortest round-trip repr (what JSON carried)."""
    if isinstance(value, int):
        return 0
    text = repr(value)
    return 0 if "e" in text or text.endswith(".0") else len(text.partition(".")[2])


def _epoch_shift(magnitude: float, value: object, zone_name: str | None) -> int:
    """Power of ten turning the epoch number into microseconds (see the magnitude rule)."""
    if magnitude < 1e11:
        return 6
    if magnitude < 1e14:
        return 3
    if magnitude < 1e17:
        return 0
    if magnitude < 1e20:
        return -3
    raise _fail(value, zone_name, "an epoch number below 1e20 (seconds, ms, µs or ns)")


def _from_epoch_us(us: int, value: object, zone_name: str | None) -> datetime:
    try:
        return _EPOCH + timedelta(0, 0, us)
    except OverflowError:
        raise _fail(value, zone_name, "an epoch within years 1-9999") from None


def _parse_text(text: str, value: object, zone_name: str | None) -> tuple[datetime, Precision | None]:
    match = _DOTNET.fullmatch(text)
    if match:
        ms, oh, om = match.groups()
        if oh is not None and (int(om) > 59 or int(oh) * 60 + int(om) > _MAX_OFFSET_MIN):
            raise _fail(value, zone_name, "a /Date(ms±hhmm)/ offset within ±18:00")
        return _from_epoch_us(int(ms) * 1000, value, zone_name), "millisecond"
    match = _NUMBER.fullmatch(text)
    if match and (match[1] or match[3] or len(match[2]) not in _CALENDAR_DIGITS):
        sign, whole, frac = match[1], match[2], match[3] or ""
        unit = _epoch_shift(int(whole), value, zone_name)
        shift = unit - len(frac)
        scaled = int(sign + whole + frac)  # exact integer arithmetic: no float rounding for strings
        us = scaled * 10**shift if shift >= 0 else scaled // 10**-shift
        return _from_epoch_us(us, value, zone_name), _epoch_precision(unit, len(frac))
    match = _EXTENDED.fullmatch(text) or _BASIC.fullmatch(text)
    if match is None:
        raise _fail(value, zone_name, _EXPECTED)
    return _parse_iso(match.groups(), value, zone_name)


def _parse_iso(
    groups: tuple[str | Any, ...], value: object, zone_name: str | None
) -> tuple[datetime, Precision | None]:
    year, month, day, hour, minute, second, frac, z, sign, oh, om = groups
    if hour is None:
        try:
            wall = _wall(int(year), int(month or 1), int(day or 1))
        except ValueError as exc:
            raise _fail(value, zone_name, f"a real calendar date ({exc})") from None
        return wall, "day" if day else "month" if month else "year"
    h, m, s = int(hour), int(minute), int(second or 0)
    us = int(frac[:6].ljust(6, "0")) if frac else 0
    precision: Precision = (
        ("millisecond" if len(frac) <= 3 else "microsecond") if frac else "second" if second else "minute"
    )
    if m > 59 or s > 60:
        raise _fail(value, zone_name, "minutes 00-59 and seconds 00-60")
    end_of_day = h == 24
    if end_of_day and (m or s or us):
        raise _fail(value, zone_name, "24:00 only as 24:00:00 (the end of the day)")
    if h > 24:
        raise _fail(value, zone_name, "hours 00-23, or 24:00:00 for the end of the day")
    if s == 60:
        s, us = 59, 999_999  # leap second: clamp (module docstring says why)
    try:
        wall = _wall(int(year), int(month), int(day), 0 if end_of_day else h, m, s, us)
        if end_of_day:
            wall += _ONE_DAY
    except (ValueError, OverflowError) as exc:
        raise _fail(value, zone_name, f"a real calendar date and time ({exc})") from None
    if sign:
        minutes = int(oh) * 60 + int(om or 0)
        if int(om or 0) > 59 or minutes > _MAX_OFFSET_MIN:
            raise _fail(value, zone_name, "a UTC offset within ±18:00")
        try:
            wall -= timedelta(minutes=minutes if sign == "+" else -minutes)
        except OverflowError:
            raise _fail(value, zone_name, "a moment within years 1-9999 in UTC") from None
    elif not z:
        return wall, precision
    return _combine(wall, wall.time(), UTC), precision


def _wall(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    fold: int = 0,
) -> datetime:
    """A naive local wall time: deliberately zone-less until _localise applies the zone and DST policy."""
    return datetime(year, month, day, hour, minute, second, microsecond, fold=fold)  # noqa: DTZ001


def _localise(
    wall: datetime,
    precision: Precision | None,
    value: object,
    zone_name: str | None,
    *,
    ambiguous: Ambiguous,
    nonexistent: Nonexistent,
    previous: datetime | None,
    near: datetime | None = None,
) -> datetime:
    """UTC for a naive wall time in ``zone_name``, applying the DST policies (``previous``: series order)."""
    if zone_name is None:
        raise _fail(value, zone_name, "an offset (Z or ±HH:MM) in the value, or a zone for local times")
    try:
        tz = zone(zone_name)
    except TimestampError:
        raise _fail(value, zone_name, "an IANA time-zone name such as 'Europe/Berlin'") from None
    folded = _wall(wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, wall.microsecond, 1)
    try:
        # PEP 495: fold=0 reads a repeated or skipped wall time with the offset before the transition,
        # fold=1 with the one after. Equal results: the wall time is unique (the usual case).
        first = wall - (tz.utcoffset(wall) or timedelta(0))
        second = wall - (tz.utcoffset(folded) or timedelta(0))
    except OverflowError:
        raise _fail(value, zone_name, "a local time within years 1-9999 in UTC") from None
    start_of_day = precision in ("year", "month", "day")
    if first == second:
        chosen = first
    elif near is not None and not start_of_day:
        at = near.astimezone(UTC).replace(tzinfo=None)
        chosen = min((first, second), key=lambda c: abs(c - at))
    elif first < second:  # repeated hour (fall-back): first is the earlier occurrence
        after = None if previous is None else _combine(previous, previous.time())
        if start_of_day:
            chosen = first
        elif after is not None and (first > after or second > after):
            chosen = first if first > after else second
        elif ambiguous in ("earliest", "latest"):
            chosen = first if ambiguous == "earliest" else second
        else:
            raise _fail(
                value,
                zone_name,
                f"an unambiguous local time ({wall} occurs twice in {zone_name}; "
                "pass ambiguous='earliest' or 'latest')",
            )
    elif start_of_day or nonexistent == "shift_forward":  # gap (spring-forward): first is the later one
        chosen = first
    elif nonexistent == "shift_backward":
        chosen = second
    elif nonexistent in ("snap_forward", "snap_backward"):
        edge = _gap_end(second, first, tz)
        chosen = edge if nonexistent == "snap_forward" else edge - _ONE_US
    else:
        raise _fail(
            value,
            zone_name,
            f"an existing local time ({wall} falls in a DST gap of {zone_name}; "
            "pass nonexistent='shift_forward', 'shift_backward', 'snap_forward' or "
            "'snap_backward')",
        )
    return _combine(chosen, chosen.time(), UTC)


def _gap_end(low: datetime, high: datetime, tz: ZoneInfo) -> datetime:
    """The transition instant (naive UTC) inside ``(low, high]``: the first with the post-gap offset."""
    after = tz.utcoffset(_combine(high, high.time(), UTC).astimezone(tz).replace(tzinfo=None))
    while high - low > _ONE_US:  # bisection over at most a few hours: ~35 steps, only for gap times
        mid = low + (high - low) // 2
        local = _combine(mid, mid.time(), UTC).astimezone(tz)
        if local.utcoffset() == after:
            high = mid
        else:
            low = mid
    return high


# The compiled front (core/_speedups.c, built by `pip install`): the common offset-bearing RFC 3339 shapes and the
# cache in one C call, every other value and call handed to the Python function above. Without a C compiler the
# package still installs and ``normalise`` is the Python function alone (same results, slower).
try:
    from inlet.core import _speedups
except ImportError:  # pragma: no cover - a build without the extension
    _speedups = None  # type: ignore[assignment]
if _speedups is not None:
    _speedups.install(_normalise, _SEEN, Instant, UTC, _SEEN_MAX, ("minute", "second", "millisecond", "microsecond"))
COMPILED: Final = _speedups is not None
"""Whether ``normalise`` is the compiled front (CI requires it; benchmarks report it)."""
if TYPE_CHECKING:  # one name, one signature (the Python function's) for the type checker
    normalise = _normalise
else:
    normalise = _normalise if _speedups is None else _speedups.normalise
