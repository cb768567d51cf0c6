"""The gateway's per-key caps on a fake clock: request rate, the sliding spend hour, retry-after."""

import pytest

from orchestray.policies.keycaps import KeyCaps, SpendWindow
from orchestray.testing import FakeClock


def test_the_request_rate_lets_one_minutes_share_through_then_says_when():
    clock = FakeClock()
    caps = KeyCaps(requests_per_minute=120, spend_per_hour=None)
    assert caps.admit("a", clock()) == 0.0 and caps.admit("a", clock()) == 0.0  # burst of 2/s
    wait = caps.admit("a", clock())
    assert wait == pytest.approx(0.5)
    assert caps.admit("b", clock()) == 0.0  # another key has its own bucket
    clock.advance(wait)
    assert caps.admit("a", clock()) == 0.0


def test_a_key_over_its_spend_waits_until_enough_of_the_hour_has_passed():
    clock = FakeClock()
    caps = KeyCaps(requests_per_minute=None, spend_per_hour=1.0)
    caps.spend("a", 0.6, clock())
    clock.advance(600)
    caps.spend("a", 0.6, clock())
    clock.advance(60)
    # 1.2 spent: under the cap once the first 0.6 leaves the hour, 2,940 s from now.
    assert caps.admit("a", clock()) == pytest.approx(3600 - 660)
    assert caps.admit("b", clock()) == 0.0
    clock.advance(3600 - 660)
    assert caps.admit("a", clock()) == 0.0


def test_the_wait_counts_every_spend_that_must_leave_the_window():
    clock = FakeClock()
    window = SpendWindow(window_s=100)
    for _ in range(3):
        window.add(0.5, clock())
        clock.advance(10)
    # 1.5 at t=0,10,20, now t=30; under a cap of 0.6 only once two have left: at t=110.
    assert window.time_under(0.6, clock()) == pytest.approx(80)
    assert window.time_under(2.0, clock()) == 0.0
    clock.advance(100)
    assert window.total(clock()) == 0.0 and len(window) == 0


def test_spend_is_refused_before_the_request_rate_is_touched_and_free_answers_count_nothing():
    clock = FakeClock()
    caps = KeyCaps(requests_per_minute=60, spend_per_hour=0.1)
    caps.spend("a", 0.0, clock())
    caps.spend("a", 0.2, clock())
    assert caps.admit("a", clock()) == pytest.approx(3600)
    clock.advance(3600)
    assert caps.admit("a", clock()) == 0.0  # the bucket was never drawn while refused


def test_nonsense_caps_are_refused():
    with pytest.raises(ValueError, match="requests_per_minute must be positive"):
        KeyCaps(requests_per_minute=0, spend_per_hour=None)
    with pytest.raises(ValueError):
        SpendWindow(window_s=0)
