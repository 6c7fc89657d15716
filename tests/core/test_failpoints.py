"""``INLET_FAILPOINT`` parsing (the kill itself is exercised by tests/connectors/hl7v2/test_hl7v2_kill9.py)."""

from __future__ import annotations

import pytest

from inlet.core.failpoints import ENV, Failpoint, configured


def test_a_failpoint_is_named_with_the_hit_it_kills_at() -> None:
    assert configured("mllp.after_sink", "mllp.after_sink:3") == 3
    assert configured("mllp.after_sink", " other.point:1 , mllp.after_sink:12 ") == 12
    assert configured("mllp.after_sink", "other.point:1") is None
    assert configured("mllp.after_sink", "") is None


@pytest.mark.parametrize("value", ["mllp.after_sink", "mllp.after_sink:0", "mllp.after_sink:x", "MLLP:3"])
def test_a_malformed_value_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match="is not NAME:N"):
        configured("mllp.after_sink", value)


def test_an_unset_failpoint_does_nothing_and_an_armed_one_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    point = Failpoint("mllp.after_sink")
    for _ in range(3):
        point.hit()
    assert point.at is None and point.hits == 0
    monkeypatch.setenv(ENV, "mllp.after_sink:1000000")
    armed = Failpoint("mllp.after_sink")
    armed.hit()
    assert armed.at == 1_000_000 and armed.hits == 1


def test_stop_freezes_instead_of_killing(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    monkeypatch.setenv(ENV, "position.save:2:stop")
    point = Failpoint("position.save")
    assert point.at == 2 and point.signal == signal.SIGSTOP
    monkeypatch.setenv(ENV, "position.save:2")
    assert Failpoint("position.save").signal == signal.SIGKILL
    with pytest.raises(ValueError, match="is not NAME:N"):
        configured("position.save", "position.save:2:pause")
