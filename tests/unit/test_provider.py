"""The provider's logic with a scripted backend and a fake clock: no Ray, no network, no sleeping."""

import asyncio
import heapq

import pytest

from orchestray.backends import Quota, Reply
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


class VirtualClock:
    """Time that stands still while any task can run, then jumps to the next sleeper's wake-up:
    hundreds of concurrent calls sleeping at once, as on a real clock, without the real wait."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, future))
        await future

    async def run(self, awaitable):
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            for _ in range(50):  # let everything that can run, run
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled
            if task.done() or not self._sleepers:
                continue
            wake = self._sleepers[0][0]
            self.now = max(self.now, wake)
            while self._sleepers and self._sleepers[0][0] <= wake:
                future = heapq.heappop(self._sleepers)[2]
                if not future.done():
                    future.set_result(None)
        return task.result()


class FlakyBackend:
    """Fails calls by a rule of the call's number, after a latency, all on a virtual clock."""

    def __init__(self, clock: VirtualClock, fails):
        self.clock = clock
        self.fails = fails  # number -> exception to raise after the latency, or None
        self.calls = 0

    async def complete(self, request):
        self.calls += 1
        outcome = self.fails(self.calls)
        if isinstance(outcome, ProviderTimeoutError):
            await self.clock.sleep(5.0)  # a hang, given up at the timeout
            raise outcome
        await self.clock.sleep(0.2)
        if outcome is not None:
            raise outcome
        return Reply("Answer: 4", input_tokens=10, output_tokens=5, model="m")

    async def close(self):
        pass


def flaky(clock, fails, **fields):
    config = ProviderConfig(name="p", kind="simulated", timeout_s=5.0, **fields)
    backend = FlakyBackend(clock, fails)
    return Provider(config, backend, clock=clock, sleep=clock.sleep), backend


async def test_clustered_timeouts_of_concurrent_calls_do_not_open_the_circuit():
    """The issue's batch: a provider that hangs on some calls and fails others with a 5xx. Calls
    made together hang together and time out in one instant, yet the provider answers most."""
    clock = VirtualClock()

    def fails(number):
        if number % 10 == 0:
            return ProviderTimeoutError("no answer within 5s", provider="p")
        if number % 10 == 5:
            return ProviderUnavailableError("503", provider="p", status=503)
        return None

    provider, backend = flaky(clock, fails, max_retries=6)
    states = []

    async def call(i):
        completion = await provider.complete(request(request_id=str(i)))
        states.append(provider.circuit.state)
        return completion

    answers = await clock.run(asyncio.gather(*(call(i) for i in range(500))))
    assert len(answers) == 500 and set(states) == {"closed"}
    assert provider.snapshot().timeouts >= 50  # they did cluster: 500 calls at once, one in ten hung
    failures, calls = provider.circuit.counts(clock.now)
    assert calls >= provider.config.circuit.min_calls and failures / calls < 0.5


async def test_a_provider_really_down_opens_the_circuit_and_callers_wait_for_the_probe():
    clock = VirtualClock()
    down = {"until": 0}

    def fails(number):
        return ProviderUnavailableError("503", provider="p", status=503) if number <= down["until"] else None

    provider, backend = flaky(clock, fails, max_retries=0, circuit={"min_calls": 20, "cooldown_s": 30})
    down["until"] = 10**9
    outcomes = await clock.run(asyncio.gather(*(provider.complete(request()) for _ in range(40)), return_exceptions=True))
    assert all(isinstance(o, ProviderUnavailableError) for o in outcomes)
    assert provider.circuit.state == "open"
    calls_when_opened = backend.calls
    # A caller with an alternative (max_retries=0: a fallback's member) hears at once.
    started = clock.now
    with pytest.raises(CircuitOpenError, match="cooling down: 20 of the last 20 calls failed") as caught:
        await provider.complete(request(max_retries=0))
    assert clock.now == started and backend.calls == calls_when_opened
    assert caught.value.retry_after == pytest.approx(30.0)
    # Callers with no alternative wait for the half-open probe instead of failing; the provider
    # comes back meanwhile, so the probe (one call) closes the circuit and they all go.
    down["until"] = backend.calls
    waiting = await clock.run(asyncio.gather(*(provider.complete(request(max_retries=10)) for _ in range(10))))
    assert len(waiting) == 10 and provider.circuit.state == "closed"
    assert clock.now - started >= 30.0 and backend.calls == calls_when_opened + 10


async def test_a_waiting_caller_gives_up_at_its_own_deadline():
    clock = VirtualClock()
    provider, backend = flaky(clock, lambda n: ProviderUnavailableError("503", provider="p"), max_retries=0,
                              circuit={"min_calls": 5, "cooldown_s": 60})
    await clock.run(asyncio.gather(*(provider.complete(request()) for _ in range(5)), return_exceptions=True))
    assert provider.circuit.state == "open"
    started = clock.now
    with pytest.raises(CircuitOpenError):
        # Two attempts of 5 s each can never outlast a 60 s cool-down: said at once.
        await clock.run(provider.complete(request(max_retries=1)))
    assert clock.now == started
    with pytest.raises(CircuitOpenError):
        # Twenty attempts may take 105 s: it waits for the probe, which fails (still down), and
        # the next probe would come after its deadline.
        await clock.run(provider.complete(request(max_retries=20)))
    assert 60 <= clock.now - started <= 105
    assert backend.calls == 6  # five, then the one probe


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
    assert provider.limiter._tokens.log.used(clock.now) == pytest.approx(4)
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


async def test_the_headers_teach_an_unconfigured_limit_and_lower_a_configured_one(clock, caplog):
    headers = Reply("Answer: 4", 10, 5, model="m",
                    quota=Quota(limit_requests=600, remaining_requests=9, reset_requests_s=0.1))
    provider, _ = make(clock, script=[headers])
    await provider.complete(request())
    assert provider.snapshot().limit_rpm == 600
    provider, _ = make(clock, script=[headers], limits={"rpm": 6000})
    with caplog.at_level("WARNING", logger="orchestray.provider"):
        await provider.complete(request())
    assert provider.snapshot().limit_rpm == 600
    assert "lower than the configured 6000" in caplog.text


async def test_a_429_teaches_the_limit_before_any_answer_has(clock):
    limited = RateLimitedError("429", provider="p", retry_after=0.1)
    limited.quota = Quota(limit_requests=120, remaining_requests=0, reset_requests_s=0.5)
    provider, _ = make(clock, script=[limited])
    await provider.complete(request())
    stats = provider.snapshot()
    assert (stats.limit_rpm, stats.rate_limited, stats.succeeded) == (120, 1, 1)
