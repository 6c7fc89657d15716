"""JSON parsing that keeps every number as written, at orjson's speed when the document allows it.

orjson reads a JSON number with a fraction or an exponent as a binary float. For most numbers that loses
nothing a reader can see: the float's shortest round-trip ``repr`` gives back the digits the JSON wrote. It does
lose a source decimal's precision when the number token has

- a fraction of two or more digits ending in 0 (``5.10`` → ``5.1``: the scale is gone; ``5.0`` survives,
  ``repr`` keeps one zero),
- an exponent (``1e-3`` reads back as ``0.001``; ``1.50e2`` as ``150.0``), or
- more than 15 significant digits (``1234567890123456789.0123456789`` → ``1.2345678901234568e+18``; 15 is
  the most a double carries for every value), which also covers integers beyond 64 bits (orjson reads those
  as floats, silently).

:func:`loads` scans the bytes for such a token (:func:`needs_exact`) and only then parses the document with
``json.loads(..., parse_float=Decimal)``; otherwise orjson does it. Either way integers stay ``int``. A reader
of the result gets an exact :class:`~decimal.Decimal` wherever a float would not give back what was written,
and a float only where ``repr(value)`` is exactly what was written — :func:`number_text` turns both into the
plain-notation decimal the JSON wrote.

The scan is three precompiled regexes (:data:`PATTERNS`) — run as one pass in C where the compiled helpers are
built (``core/_speedups.c``, same answer) — one per place a JSON number can stand: an object
member's value (after ``:``, whose previous character is ``"`` or whitespace — so the colons inside
timestamps are skipped at once), an array's first element (after ``[``) and any later one (after ``,``).
Each starts with one literal character, which Python's regex engine finds at memchr-like speed; a single
pattern starting with a character class scans several times slower. About 4 µs for a 1 KB resource
(orjson parses it in about 2). It is conservative, not knowing whether it is inside a string, so a string such
as ``"ratio: 5.10, ..."`` sends its document the slow way too (same result, just slower). A miss cannot
happen: every number token is preceded by one of the three, and every token of the three kinds matches.
Both parsers refuse what JSON refuses (``NaN``, ``Infinity``); errors are :class:`json.JSONDecodeError`
(orjson's is a subclass).

:data:`COUNTS` counts the documents each way went (tests assert the fast path is still taken).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, NoReturn

import orjson

from inlet.contracts.base import plain_decimal

__all__ = ["COUNTS", "PATTERNS", "ParseCounts", "default", "dumps", "loads", "member", "needs_exact", "number_text"]

_TOKEN: Final = (  # after the delimiter: a number token a float would not give back as written
    rb"[ \t\r\n]*-?[0-9](?:"
    rb"[0-9]*\.[0-9]*[0-9]0(?=[ \t\r\n,\]}])"  # a fraction of 2+ digits ending in 0
    rb"|[0-9]*(?:\.[0-9]+)?[eE]"  # an exponent
    rb"|(?:\.?[0-9]){15}"  # 16+ digits (leading zeros counted: a false alarm costs only time)
    rb")"
)
PATTERNS: Final = (
    re.compile(rb':(?<=["\s]:)' + _TOKEN),  # an object member's value (not a colon inside a timestamp)
    re.compile(rb"\[" + _TOKEN),  # an array's first element
    re.compile(rb"," + _TOKEN),  # a later array element
)
"""Where a number token a float would not give back as written may stand (module docstring)."""
_MEMBER, _FIRST, _LATER = (p.search for p in PATTERNS)


@dataclass
class ParseCounts:
    """How many documents :func:`loads` parsed each way, since the process started."""

    fast: int = 0
    exact: int = 0


COUNTS: Final = ParseCounts()


def _needs_exact(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` holds a number token that a float would not give back as written."""
    return _MEMBER(data) is not None or _FIRST(data) is not None or _LATER(data) is not None


# The same scan in one C pass (core/_speedups.c, built by `pip install`; ~4x cheaper than the three regexes on a
# FHIR resource), equal to the Python function above on every input (tests/core/test_exact_json.py).
try:
    from inlet.core._speedups import needs_exact
except ImportError:  # pragma: no cover - a build without the extension
    needs_exact = _needs_exact


def _refuse_constant(name: str) -> NoReturn:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Parse one JSON document; numbers a float cannot carry as written become :class:`~decimal.Decimal`."""
    if not needs_exact(data):
        COUNTS.fast += 1
        # orjson takes exact bytes types only (an NDJSON line is a bytes subclass): a memoryview costs nothing.
        return orjson.loads(data if type(data) is bytes else memoryview(data))
    COUNTS.exact += 1
    raw = bytes(data)
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except (UnicodeDecodeError, RecursionError) as exc:  # orjson raises JSONDecodeError for both
        raise json.JSONDecodeError(f"{type(exc).__name__}: {exc}", "", 0) from None


def member(value: Any, *path: str) -> Any:
    """The value at ``path`` through nested JSON objects of a :func:`loads` result; None where a step is missing or
    is not an object.

    For code that only looks something up on the way (a watermark, a version, a search mode): a member of the
    wrong JSON kind there is the mapper's to report, naming the element, so looking must not raise. A reader
    that raised on it (``(res.get("meta") or {}).get(...)`` with ``"meta": []``) failed the whole page, again on
    every retry.
    """
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def number_text(value: Decimal | float | int) -> str:
    """The plain-notation decimal a parsed JSON number was written as (for a :func:`loads` result).

    A Decimal keeps its digits and scale; an int its digits; a float is ``repr`` (the shortest round trip, which
    is what the JSON wrote whenever :func:`loads` left it a float) written out without exponent
    (``1e-05`` → ``"0.00001"``). ValueError for what no plain decimal can carry (not finite, absurdly long).
    """
    if type(value) is float:
        return plain_decimal(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return plain_decimal(value)
    return str(int(value))


def default(value: Any) -> Any:
    """orjson's ``default=`` for :func:`loads` results: a Decimal is written back as the JSON number it was."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int | None = None) -> bytes:
    """``orjson.dumps`` that also writes the Decimals :func:`loads` made, as the numbers they were."""
    return orjson.dumps(value, default=default, option=option)
