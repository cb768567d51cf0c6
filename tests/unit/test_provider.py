"""The provider's logic with a scripted backend and a fake clock: no Ray, no network, no sleeping."""

import asyncio

import pytest

from orchestray.config import ProviderConfig
from orchestray.errors import (
    BadRequestError,
    CircuitOpenError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestTooLargeError,
)
from orchestray.messages import ChatRequest, Message
from orchestray.provider import Provider
from orchestray.testing import ScriptedBackend


def make(clock, script=None, latency=0.0, **fields):
    config = ProviderConfig(name="p", kind="simulated", price={"input_per_1k": 1.0, "output_per_1k": 2.0}, **fields)
    backend = ScriptedBackend(script=script or (), latency=latency, clock=clock)
    return Provider(config, backend, clock=clock, sleep=clock.sleep), backend


def request(**fields):
    return ChatRequest(messages=(Message("user", "What is 2 + 2?"),), **fields)


async def test_a_completion_carries_tokens_cost_and_trace(clock):
    provider, _ = make(clock, latency=0.5)
    completion = await provider.complete(request())
    assert completion.content == "Answer: 4" and completion.provider == "p"
    assert completion.cost == pytest.approx((10 * 1.0 + 5 * 2.0) / 1000)
    assert completion.latency_s == pytest.approx(0.5)
    assert completion.trace.name == "p" and completion.trace.retries == 0


async def test_waiters_are_served_in_the_order_they_came(clock):
    provider, backend = make(clock, limits={"rpm": 60, "burst_s": 1.0, "headroom": 1.0})  # one a second
    order = []

    async def call(i):
        await provider.complete(request(request_id=str(i)))
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(6)))
    assert order == list(range(6))
    assert backend.call_times == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0, 1004.0, 1005.0])


async def test_concurrency_cap_holds(clock):
    provider, backend = make(clock, latency=1.0, limits={"max_concurrency": 2})
    await asyncio.gather(*(provider.complete(request()) for _ in range(6)))
    assert backend.peak_active == 2
    assert len(backend.calls) == 6 and provider.limiter.in_flight == 0


async def test_an_oversized_request_fails_at_once(clock):
    provider, backend = make(clock, limits={"tpm": 100})
    with pytest.raises(RequestTooLargeError):
        await provider.complete(request(max_tokens=500))
    assert backend.call_times == []


async def test_a_429_is_retried_after_retry_after_and_slows_the_limiter(clock):
    provider, backend = make(clock, script=[RateLimitedError(retry_after=3.0, provider="p")], limits={"rpm": 6000})
    completion = await provider.complete(request())
    assert completion.trace.retries == 1
    assert backend.call_times[1] - backend.call_times[0] >= 3.0
    stats = provider.snapshot()
    assert stats.rate_limited == 1 and stats.retries == 1 and stats.succeeded == 1


async def test_max_retries_zero_surfaces_the_rate_limit_at_once(clock):
    provider, backend = make(clock, script=[RateLimitedError(retry_after=3.0, provider="p")])
    with pytest.raises(RateLimitedError) as caught:
        await provider.complete(request(max_retries=0))
    assert len(backend.calls) == 1
    assert caught.value.span.outcome == "error"  # coordinators can trace the failed call


async def test_bad_requests_are_not_retried(clock):
    provider, backend = make(clock, script=[BadRequestError("no such model", provider="p", status=404)])
    with pytest.raises(BadRequestError):
        await provider.complete(request())
    assert len(backend.calls) == 1


async def test_a_hang_becomes_a_timeout_and_is_retried(clock):
    provider, backend = make(clock, script=["hang"], timeout_s=2.0)

    async def fake_timeout_guard():
        return await provider.complete(request())

    # asyncio.timeout runs on the real loop clock, so give it a real (short) timeout.
    provider.config = provider.config.model_copy(update={"timeout_s": 0.05})
    completion = await fake_timeout_guard()
    assert completion.trace.retries == 1
    assert backend.cancelled == 1
    assert provider.snapshot().timeouts == 1


async def test_circuit_opens_after_repeated_failures_and_says_so_at_once(clock):
    failures = [ProviderUnavailableError("503", provider="p") for _ in range(3)]
    provider, backend = make(clock, script=failures, max_retries=2, circuit={"failure_threshold": 3, "cooldown_s": 30})
    with pytest.raises(ProviderUnavailableError):
        await provider.complete(request())
    with pytest.raises(CircuitOpenError, match="cooling down") as caught:
        await provider.complete(request())
    assert caught.value.retry_after == pytest.approx(30.0, abs=1.0)
    assert len(backend.calls) == 3  # the open circuit made no call
    clock.now += 31
    assert (await provider.complete(request())).content == "Answer: 4"  # the probe closes it


async def test_cancelling_frees_the_slot_and_gives_back_the_answer_budget(clock):
    provider, backend = make(clock, script=["hang"], limits={"tpm": 600, "max_concurrency": 1, "burst_s": 1.0, "headroom": 1.0})
    task = asyncio.create_task(provider.complete(request(max_tokens=5)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert provider.limiter.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.cancelled == 1
    assert provider.limiter.in_flight == 0
    # Budget was 4 (prompt) + 5 (max_tokens); only the prompt's 4 stay charged.
    assert provider.limiter._tokens.level(clock.now) == pytest.approx(10 - 4)
    assert provider.snapshot().cancelled == 1


async def test_streaming_yields_pieces_then_the_completion(clock):
    provider, _ = make(clock)
    chunks = [c async for c in provider.stream(request())]
    assert "".join(c.delta for c in chunks) == "Answer: 4"
    assert chunks[-1].done and chunks[-1].completion.output_tokens == 5
    assert provider.limiter.in_flight == 0


async def test_streaming_retries_before_the_first_piece(clock):
    provider, _ = make(clock, script=[ProviderUnavailableError("502", provider="p")])
    chunks = [c async for c in provider.stream(request())]
    assert chunks[-1].completion.trace.retries == 1


async def test_stopping_a_stream_early_releases_its_slot(clock):
    provider, _ = make(clock, limits={"max_concurrency": 1})
    stream = provider.stream(request())
    await anext(stream)
    assert provider.limiter.in_flight == 1
    await stream.aclose()
    assert provider.limiter.in_flight == 0
    assert provider.snapshot().cancelled == 1


async def test_a_timeout_error_names_the_provider(clock):
    provider, _ = make(clock, script=["hang", "hang"], timeout_s=0.02, max_retries=1)
    with pytest.raises(ProviderTimeoutError, match=r"^p: no answer within 0.02s"):
        await provider.complete(request())


async def test_a_call_cancelled_past_the_p95_still_counts_in_the_latency_history(clock):
    provider, backend = make(clock, script=[None] * 20 + ["hang", "hang"], latency=1.0)
    for _ in range(20):
        await provider.complete(request())
    assert await provider.latency_quantile(0.95) == pytest.approx(1.0)
    backend.latency = 0.0

    async def cancel_after(seconds):
        task = asyncio.create_task(provider.complete(request()))
        for _ in range(3):
            await asyncio.sleep(0)
        clock.now += seconds
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await cancel_after(0.2)  # cancelled early: says nothing, not recorded
    assert len(provider.latencies._values) == 20
    await cancel_after(5.0)  # slower than the p95: recorded, so hedging delays do not drift down
    assert len(provider.latencies._values) == 21 and provider.latencies.quantile(1.0) >= 5.0
