"""``core.exact_json``'s number scan: the compiled pass (``core/_speedups.c``) answers exactly as the three
regexes it replaces (the Python function kept as ``_needs_exact``), on generated text and on the sample feeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inlet.core import exact_json

COMPILED = exact_json.needs_exact is not exact_json._needs_exact

# Every character the patterns look at, and a few they do not: delimiters, digits, signs, exponents, whitespace
# (JSON's and the bytes regex's \s), quotes and letters.
ALPHABET = b'0123456789.-+eE:,[]{}" \t\r\n\x0b\x0cax'
tokens = st.one_of(
    st.binary(max_size=4).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)),
    st.sampled_from([b"5.10", b"5.0", b"1e-3", b"1.50e2", b"1.e5", b"12345678901234567", b"1.234567890123456"]),
    st.sampled_from([b": ", b'":', b" :", b"[", b",", b"]", b"}", b"-", b"0", b".", b"00"]),
)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@settings(max_examples=4000, deadline=None)
@given(parts=st.lists(tokens, max_size=24))
def test_the_compiled_scan_equals_the_regexes_on_generated_text(parts: list[bytes]) -> None:
    data = b"".join(parts)
    expected = exact_json._needs_exact(data)
    assert exact_json.needs_exact(data) is expected, data
    assert exact_json.needs_exact(bytearray(data)) is expected
    assert exact_json.needs_exact(memoryview(data)) is expected


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_the_compiled_scan_equals_the_regexes_on_the_sample_feeds(sample_data: Path) -> None:
    seen = {True: 0, False: 0}
    for path in sorted(sample_data.rglob("*")):
        if path.suffix in (".json", ".jsonl", ".ndjson") and path.is_file() and path.stat().st_size < 20_000_000:
            data = path.read_bytes()
            for chunk in (data, *data.splitlines()[:2000]):
                expected = exact_json._needs_exact(chunk)
                assert exact_json.needs_exact(chunk) is expected, (path.name, chunk[:200])
                seen[expected] += 1
    assert seen[True] > 10 and seen[False] > 1000, seen  # both answers met on real data


def test_the_compiled_scan_is_built_in_ci() -> None:
    if os.environ.get("CI") == "true":
        assert COMPILED, "core/_speedups.c was not built by `pip install -e .` (see setup.py)"
    assert exact_json.needs_exact(b'{"v": 5.10}') and not exact_json.needs_exact(b'{"v": 5.1, "t": "10:20"}')
    with pytest.raises(TypeError):
        exact_json.needs_exact("text, not bytes")  # type: ignore[arg-type]
