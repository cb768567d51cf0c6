import math

import pytest

from orchestray.errors import RequestTooLargeError
from orchestray.policies.ratelimit import Limits, RateLimiter, TokenBucket


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


def test_limiter_paces_requests_at_the_rate_not_the_minute():
    limiter = RateLimiter(Limits(rpm=600, burst_s=0.5, headroom=1.0), now=0.0)  # 10/s, burst 5
    admitted_at = []
    now = 0.0
    while len(admitted_at) < 25:
        wait = limiter.delay(1, now)
        if wait > 0:
            now += wait
            continue
        limiter.admit(1, now)
        admitted_at.append(now)
    # 5 at once, then one every 0.1 s: 25 calls by 2 s, never a minute's quota in a burst.
    assert admitted_at[:5] == [0.0] * 5
    assert admitted_at[-1] == pytest.approx(2.0)


def test_headroom_aims_below_the_limit():
    limiter = RateLimiter(Limits(rpm=6000, burst_s=0.01, headroom=0.9), now=0.0)
    now, admitted = 0.0, 0
    while now < 10.0:
        wait = limiter.delay(1, now)
        if wait > 0:
            now += wait
            continue
        limiter.admit(1, now)
        admitted += 1
    assert admitted == pytest.approx(900, abs=3)


def test_tokens_per_minute_and_reconciliation():
    limiter = RateLimiter(Limits(tpm=6000, burst_s=1.0, headroom=1.0), now=0.0)  # 100 tokens/s
    permit = limiter.admit(100, 0.0)
    assert limiter.delay(100, 0.0) == pytest.approx(1.0)
    # The answer used only 40 of the 100 budgeted: 60 come back at once.
    limiter.release(permit, used_tokens=40, now=0.0)
    assert limiter.delay(60, 0.0) == 0
    assert limiter.delay(100, 0.0) == pytest.approx(0.4)


def test_usage_above_the_estimate_is_charged():
    limiter = RateLimiter(Limits(tpm=6000, burst_s=1.0, headroom=1.0), now=0.0)
    permit = limiter.admit(10, 0.0)
    limiter.release(permit, used_tokens=110, now=0.0)
    assert limiter.delay(1, 0.0) == pytest.approx(0.11)


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


def test_a_429_pauses_for_retry_after_then_slows_the_refill():
    limiter = RateLimiter(Limits(rpm=600, burst_s=0.1, headroom=1.0), now=0.0)  # 10/s
    limiter.on_rate_limited(retry_after=2.0, now=0.0)
    assert limiter.delay(1, 0.0) == pytest.approx(2.0)
    assert limiter.delay(1, 1.999) == pytest.approx(0.001)
    # After the pause the refill runs at 90% of the limit, recovering 1% a second.
    now, admitted = 2.0, 0
    while now < 4.0:
        wait = limiter.delay(1, now)
        if wait > 0:
            now += wait
            continue
        limiter.admit(1, now)
        admitted += 1
    assert 17 <= admitted <= 19  # 10/s unslowed would be 20 or 21
    limiter.on_rate_limited(retry_after=None, now=10.0)
    assert limiter.delay(1, 10.0) == pytest.approx(1.0)  # no retry-after: a one-second pause


def test_retry_after_is_capped():
    limiter = RateLimiter(Limits(rpm=60, max_pause_s=5.0), now=0.0)
    limiter.on_rate_limited(retry_after=3600, now=0.0)
    assert limiter.delay(1, 0.0) == pytest.approx(5.0)


def test_an_exhausted_long_quota_pauses_until_its_reset():
    limiter = RateLimiter(Limits(rpm=60), now=0.0)
    limiter.on_quota(remaining=0, reset_s=0.2, now=0.0)  # per-second enforcement: pacing covers it
    assert limiter.delay(1, 0.0) == 0
    limiter.on_quota(remaining=0, reset_s=30.0, now=0.0)
    assert limiter.delay(1, 0.0) == pytest.approx(30.0)


def test_unlimited_never_waits():
    limiter = RateLimiter(Limits(), now=0.0)
    for _ in range(10_000):
        assert limiter.delay(10**6, 0.0) == 0
        limiter.admit(10**6, 0.0)
