import math
import random

import pytest

from orchestray.emulator._quota import LIMIT_MODES, Quotas
from orchestray.errors import RequestTooLargeError
from orchestray.policies.ratelimit import Limits, RateLimiter, TokenBucket, WindowLog


def test_bucket_starts_full_and_refills_at_its_rate():
    bucket = TokenBucket(rate_per_s=10, capacity=5, now=0.0)
    assert all(bucket.try_take(1, 0.0) for _ in range(5))
    assert not bucket.try_take(1, 0.0)
    assert bucket.time_until(1, 0.0) == pytest.approx(0.1)
    assert bucket.try_take(1, 0.1)
    assert bucket.level(10.0) == 5  # never above capacity


def test_bucket_lets_an_oversized_take_through_as_debt():
    bucket = TokenBucket(rate_per_s=10, capacity=5, now=0.0)
    assert bucket.try_take(20, 0.0)  # bigger than the burst: goes, owing 15
    assert bucket.level(0.0) == -15
    # The debt holds the next caller back until it is paid: 15 + 1 tokens at 10/s.
    assert bucket.time_until(1, 0.0) == pytest.approx(1.6)


def test_refund_and_drain():
    bucket = TokenBucket(rate_per_s=1, capacity=10, now=0.0)
    bucket.try_take(8, 0.0)
    bucket.refund(5, 0.0)
    assert bucket.level(0.0) == 7
    bucket.refund(100, 0.0)
    assert bucket.level(0.0) == 10
    bucket.drain(0.0)
    assert bucket.level(0.0) == 0


def test_window_log_counts_only_the_last_span():
    log = WindowLog(1.0)
    for t in (0.0, 0.2, 0.4):
        log.add(1, t)
    assert log.used(0.5) == 3
    assert log.time_until(1, cap=3, now=0.5) == pytest.approx(0.5)  # when the 0.0 entry leaves
    assert log.time_until(2, cap=3, now=0.5) == pytest.approx(0.7)
    assert log.used(1.0) == 2
    log.refund(1, admitted_at=0.2, now=1.0)
    assert log.used(1.0) == 1
    assert log.time_until(50, cap=10, now=2.0) == 0  # too big for any window: goes into an empty one


# --- every enforcement shape, on a fake clock -----------------------------------------------------


def drive(limiter: RateLimiter, until: float, start: float = 0.0, tokens: int = 1) -> list[float]:
    """Admit as fast as the limiter allows (unbounded demand) from `start` to `until`."""
    times, now, joined = [], start, start
    while True:
        wait = limiter.delay(tokens, now)
        if wait > 0:
            now += wait
            if now >= until:
                return times
            continue
        limiter.admit(tokens, now, waiting_since=joined)
        times.append(now)
        joined = now  # the next caller was in line all along


def most_in_any_window(times: list[float], span: float = 1.0) -> int:
    """The largest count in any half-open window [t, t + span): a sliding window's view."""
    most, left = 0, 0
    for right, t in enumerate(times):
        while times[left] <= t - span:
            left += 1
        most = max(most, right - left + 1)
    return most


def most_in_a_calendar_second(times: list[float]) -> int:
    counts: dict[int, int] = {}
    for t in times:
        counts[math.floor(t)] = counts.get(math.floor(t), 0) + 1
    return max(counts.values(), default=0)


def overflows_a_bucket(times: list[float], per_second: float) -> int:
    """Calls a one-second token bucket (full at start, as the emulator's) would have refused."""
    bucket, refused = TokenBucket(per_second, per_second, times[0] if times else 0.0), 0
    for t in times:
        if not bucket.try_take(1, t):
            refused += 1
    return refused


@pytest.mark.parametrize("rpm", [600, 6000, 60_000])
def test_no_window_of_any_shape_is_over_the_limit_at_start(rpm):
    per_second = rpm / 60
    limiter = RateLimiter(Limits(rpm=rpm), now=0.0)
    times = drive(limiter, until=10.0)
    assert most_in_any_window(times) <= per_second
    assert most_in_a_calendar_second(times) <= per_second
    assert overflows_a_bucket(times, per_second) == 0
    # And it is not shy of the limit either: the pace is 99.5% of it.
    assert len(times) >= 0.99 * per_second * 10


def test_no_window_is_over_the_limit_after_a_pause():
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    times = drive(limiter, until=3.0)
    # Idle for a while: nothing is banked for a burst when calls come back.
    times += drive(limiter, start=7.5, until=10.0)
    assert most_in_any_window(times) <= 100
    assert most_in_a_calendar_second(times) <= 100
    assert overflows_a_bucket(times, 100) == 0
    after = [t for t in times if t >= 7.5]
    # At most a fraction of a call banked, then evenly spaced again at once.
    assert after[1] - after[0] >= 0.5 / 99.5
    assert after[2] - after[1] == pytest.approx(1 / 99.5, rel=0.05)


def test_late_wake_ups_are_caught_up_without_overrunning_a_window():
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    rng = random.Random(7)
    times, now = [], 0.0
    while now < 20.0:
        wait = limiter.delay(1, now)
        if wait > 0:
            # A busy event loop wakes late, now and then very late.
            now += wait + (rng.uniform(0.02, 0.05) if rng.random() < 0.02 else rng.uniform(0, 0.003))
            continue
        limiter.admit(1, now, waiting_since=0.0)
        times.append(now)
    assert most_in_any_window(times) <= 100
    assert most_in_a_calendar_second(times) <= 100
    assert len(times) >= 0.99 * 100 * 20


@pytest.mark.parametrize("mode", LIMIT_MODES)
def test_paced_calls_pass_every_emulator_shape_with_jitter(mode):
    """The limiter's admissions, shifted by network jitter, against the emulator's own enforcement."""
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    quotas = Quotas(rpm=6000, tpm=None, mode=mode)
    rng = random.Random(3)
    arrivals = sorted(t + rng.uniform(0.001, 0.003) for t in drive(limiter, until=30.0))
    refused = sum(quotas.admit("m", 1, t) is not None for t in arrivals)
    assert refused <= len(arrivals) * 0.001
    assert len(arrivals) >= 0.99 * 100 * 30


def test_tokens_are_paced_and_reconciled_with_usage():
    limiter = RateLimiter(Limits(tpm=6000, headroom=1.0), now=0.0)  # 100 tokens a second
    permit = limiter.admit(100, 0.0)
    assert limiter.delay(100, 0.0) == pytest.approx(1.0)
    # The answer used only 40 of the 100 budgeted: 60 come back, in the pace and the window,
    # so the next call goes once the 40 used have had their 0.4 s of the pace.
    limiter.release(permit, used_tokens=40, now=0.0)
    assert limiter.delay(60, 0.0) == pytest.approx(0.4, abs=0.02)
    assert limiter.delay(61, 0.4) == pytest.approx(0.6, abs=0.02)  # 101 in the window: wait for it to pass


def test_usage_above_the_estimate_is_charged():
    limiter = RateLimiter(Limits(tpm=6000, headroom=1.0), now=0.0)
    permit = limiter.admit(10, 0.0)
    limiter.release(permit, used_tokens=110, now=0.0)
    assert limiter.delay(1, 0.0) >= 1.0  # 110 tokens used: past a whole second's 100


def test_a_request_larger_than_a_window_goes_alone_and_the_debt_holds_the_rest():
    limiter = RateLimiter(Limits(tpm=6000, headroom=1.0), now=0.0)
    assert limiter.delay(500, 0.0) == pytest.approx(0.0, abs=0.02)
    limiter.admit(500, limiter.delay(500, 0.0))
    assert limiter.delay(1, 0.0) >= 4.9  # five seconds' worth owed


def test_a_request_that_can_never_fit_fails_at_once():
    limiter = RateLimiter(Limits(tpm=1000), now=0.0)
    limiter.validate(1000)
    with pytest.raises(RequestTooLargeError, match="1001 tokens.*1000 tokens per minute"):
        limiter.validate(1001)


def test_concurrency_cap_waits_for_a_release():
    limiter = RateLimiter(Limits(max_concurrency=2), now=0.0)
    first = limiter.admit(1, 0.0)
    limiter.admit(1, 0.0)
    assert math.isinf(limiter.delay(1, 0.0))
    limiter.release(first, None, 0.0)
    limiter.release(first, None, 0.0)  # a second release of the same permit changes nothing
    assert limiter.in_flight == 1
    assert limiter.delay(1, 0.0) == 0


def test_unlimited_never_waits():
    limiter = RateLimiter(Limits(), now=0.0)
    for _ in range(10_000):
        assert limiter.delay(10**6, 0.0) == 0
        limiter.admit(10**6, 0.0)


# --- 429s ----------------------------------------------------------------------------------------


def test_a_429_pauses_for_retry_after_and_tightens_the_window_not_the_rate():
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    drive(limiter, until=5.0)
    limiter.on_rate_limited(retry_after=0.05, now=5.0)
    assert limiter.delay(1, 5.0) == pytest.approx(0.05)
    times = drive(limiter, start=5.05, until=15.0)
    # Calls the provider counts up to 10 ms late still fit: no 1.01 s holds more than 100.
    assert most_in_any_window(times, span=1.01) <= 100
    assert len(times) / 9.95 >= 98.5  # the rate barely moves


def test_429s_that_persist_slow_the_rate_and_it_recovers_in_seconds():
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    for t in (1.0, 1.5, 2.0, 2.5):
        limiter.on_rate_limited(retry_after=0.01, now=t)
    slowed = drive(limiter, start=2.51, until=3.01)
    assert len(slowed) <= 0.92 * 50  # 50 in half a second at the full pace
    recovered = drive(limiter, start=6.0, until=8.0)
    assert len(recovered) >= 0.94 * 200  # a few seconds later, back to (nearly) the full rate


def test_no_retry_after_means_a_one_second_pause_and_long_ones_are_capped():
    limiter = RateLimiter(Limits(rpm=60, max_pause_s=5.0), now=0.0)
    limiter.on_rate_limited(retry_after=None, now=0.0)
    assert limiter.delay(1, 0.0) == pytest.approx(1.0)
    limiter.on_rate_limited(retry_after=3600, now=1.0)
    assert limiter.delay(1, 1.0) == pytest.approx(5.0)


# --- rate-limit headers --------------------------------------------------------------------------


def test_an_unconfigured_limit_is_learned_from_the_headers():
    limiter = RateLimiter(Limits(), now=0.0)
    early = [limiter.admit(1, 0.0) for _ in range(60)]  # before any answer: nothing to go by
    assert limiter.learned() == {"rpm": None, "tpm": None}
    warning = limiter.observe("requests", limit=6000, remaining=40, reset_s=1.0, permit=early[-1], now=0.05)
    assert warning is None and limiter.learned()["rpm"] == 6000
    # The calls already sent count: only 40 more fit in the first second, then the pace holds.
    times = drive(limiter, start=0.05, until=10.0)
    assert most_in_any_window([0.0] * 60 + times) <= 100
    assert len(times) >= 0.99 * (60 * 0 + 100 * 10 - 60)


def test_a_configured_limit_above_the_reported_one_warns_and_uses_the_lower():
    limiter = RateLimiter(Limits(rpm=12_000), now=0.0)
    permit = limiter.admit(1, 0.0)
    warning = limiter.observe("requests", limit=6000, remaining=99, reset_s=0.01, permit=permit, now=0.0)
    assert "6000" in warning and "12000" in warning
    assert limiter.learned()["rpm"] == 6000
    assert limiter.observe("requests", limit=6000, remaining=98, reset_s=0.01, permit=permit, now=0.0) is None  # once
    # A configured limit below the reported one stays: the user may share the key on purpose.
    lower = RateLimiter(Limits(rpm=3000), now=0.0)
    lower.observe("requests", limit=6000, remaining=99, reset_s=0.01, permit=lower.admit(1, 0.0), now=0.0)
    assert lower.learned()["rpm"] == 3000


def test_remaining_shows_another_clients_share_and_the_pace_leaves_it():
    limiter = RateLimiter(Limits(rpm=6000), now=0.0)
    quotas = Quotas(rpm=6000, tpm=None, mode="sliding")  # the key both clients share
    other_every = 1 / 40  # another client sends 40 a second
    other_next, now, ours, refused = 0.0, 0.0, [], 0
    while now < 20.0:
        while other_next <= now:
            quotas.admit("m", 1, other_next)
            other_next += other_every
        wait = limiter.delay(1, now)
        if wait > 0:
            now = min(now + wait, other_next)
            continue
        permit = limiter.admit(1, now)
        if quotas.admit("m", 1, now) is not None:
            refused += 1
            limiter.on_rate_limited(0.01, now)
            continue
        state = quotas.states("m", now)[0]
        limiter.observe("requests", state.limit, state.remaining, state.reset_s, permit, now)
        ours.append(now)
    late = [t for t in ours if t >= 10.0]
    assert len(late) / 10 == pytest.approx(60, rel=0.05)  # what the other client leaves
    assert refused <= 0.01 * len(ours)


def test_an_exhausted_quota_counted_over_the_minute_pauses_until_its_reset():
    limiter = RateLimiter(Limits(rpm=600), now=0.0)
    permit = limiter.admit(1, 0.0)
    limiter.observe("requests", limit=600, remaining=300, reset_s=30.0, permit=permit, now=0.0)  # per-minute units
    assert limiter.delay(1, 1.0) == 0
    limiter.observe("requests", limit=600, remaining=0, reset_s=30.0, permit=permit, now=1.0)
    assert limiter.delay(1, 1.0) == pytest.approx(30.0)


# --- counted from the send ------------------------------------------------------------------------


def test_a_call_sent_late_holds_its_window_from_the_send():
    limiter = RateLimiter(Limits(rpm=600, headroom=1.0), now=0.0)  # 10 in any second
    permits = []
    for i in range(10):
        now = i * 0.1
        assert limiter.delay(1, now) == pytest.approx(0.0, abs=1e-9)
        permits.append(limiter.admit(1, now, waiting_since=now, at_send=True))
    limiter.sent(permits[0], 0.3)  # the first went out 0.3 s after it was let go
    for i, permit in enumerate(permits[1:], start=1):
        limiter.sent(permit, i * 0.1)
    # Stamped at admission, an 11th could go at 1.0 and the provider would count 11 in 1.0..1.3.
    assert limiter.delay(1, 1.0) == pytest.approx(0.3)
    assert limiter.delay(1, 1.3) == 0


def test_a_call_not_yet_sent_stays_in_every_window_and_one_never_sent_leaves_none():
    limiter = RateLimiter(Limits(rpm=120, headroom=1.0), now=0.0)  # 2 in any second
    first = limiter.admit(1, 0.0, at_send=True)
    second = limiter.admit(1, 0.5, waiting_since=0.5, at_send=True)
    # Neither has gone out: at 5 s both still fill the window (they may go at any moment).
    assert limiter.delay(1, 5.0) > 0
    limiter.sent(first, 5.0)
    limiter.release(second, None, 5.0)  # failed before it was written: the provider never saw it
    assert limiter.delay(1, 5.0) == 0
    limiter.admit(1, 5.0, at_send=False)
    assert limiter.delay(1, 5.0) == pytest.approx(1.0)  # the first (sent at 5.0) and this one
    limiter.sent(first, 9.0)  # a second write of the same request (a redirect) moves nothing
    assert limiter.delay(1, 6.0) == 0


def test_usage_is_reconciled_against_the_send_stamp():
    limiter = RateLimiter(Limits(tpm=600, headroom=1.0), now=0.0)  # 10 tokens in any second
    permit = limiter.admit(8, 0.0, at_send=True)
    limiter.sent(permit, 0.2)
    limiter.release(permit, 2, 0.3)  # used 2 of the 8 budgeted
    assert limiter.delay(8, 0.3) == 0
