import random

import pytest
import tenacity

from orchestray.errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestTooLargeError,
)
from orchestray.policies.retry import RetryPolicy, is_retryable_status

policy = RetryPolicy(max_retries=3, base_s=0.25, max_backoff_s=8.0, max_retry_after_s=30.0)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_statuses_never_retried(status):
    assert not is_retryable_status(status)


@pytest.mark.parametrize(
    "error, retry",
    [
        (RateLimitedError(provider="p"), True),
        (ProviderTimeoutError("slow"), True),
        (ProviderUnavailableError("502"), True),
        (CircuitOpenError("cooling", retry_after=3), False),
        (BadRequestError("bad"), False),
        (AuthenticationError("key"), False),
        (RequestTooLargeError("big"), False),
        (ValueError("bug"), False),
    ],
)
def test_which_errors_are_retried(error, retry):
    assert policy.should_retry(error) is retry


def test_retry_after_is_honoured_within_its_cap():
    assert policy.wait_s(1, RateLimitedError(retry_after=2.0), rand=0.0) == 2.0
    assert policy.wait_s(1, RateLimitedError(retry_after=500.0), rand=0.0) == 30.0


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    lows = [policy.wait_s(n, ProviderUnavailableError("x"), rand=0.0) for n in range(1, 9)]
    highs = [policy.wait_s(n, ProviderUnavailableError("x"), rand=0.999) for n in range(1, 9)]
    assert lows[:4] == [0.125, 0.25, 0.5, 1.0]
    assert all(low < high <= 8.0 for low, high in zip(lows, highs))
    assert highs[-1] == pytest.approx(8.0, rel=0.01)


async def test_the_tenacity_loop_follows_the_policy_and_sleeps_through_the_injected_sleep():
    slept: list[float] = []

    async def sleep(seconds):
        slept.append(seconds)

    calls = 0

    async def flaky():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimitedError(retry_after=1.5)
        if calls == 2:
            raise ProviderUnavailableError("503")
        return "ok"

    retrying = tenacity.AsyncRetrying(sleep=sleep, **policy.tenacity_kwargs(rng=random.Random(0)))
    result = None
    async for attempt in retrying:
        with attempt:
            result = await flaky()
    assert result == "ok" and calls == 3
    assert 1.5 <= slept[0] < 1.6
    assert 0.125 <= slept[1] <= 0.5


async def test_the_loop_stops_after_max_retries_and_reraises():
    async def sleep(seconds):
        pass

    calls = 0
    with pytest.raises(ProviderUnavailableError):
        async for attempt in tenacity.AsyncRetrying(sleep=sleep, **policy.tenacity_kwargs(max_retries=2)):
            with attempt:
                calls += 1
                raise ProviderUnavailableError("down")
    assert calls == 3
