"""A provider: one model endpoint behind its rate limiter, retry loop and circuit breaker.

This is the logic a provider actor runs. It takes its backend, clock and sleep as arguments, so
the same code runs in a unit test with a fake clock and in a Ray actor with the real one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import AsyncIterator, Awaitable, Callable

import msgspec
import tenacity

from orchestray.admission import AdmissionGate
from orchestray.backends import Backend, Quota, Reply
from orchestray.backends._send_stamp import sending
from orchestray.config import ProviderConfig
from orchestray.errors import (
    CircuitOpenError,
    OrchestrayError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from orchestray.messages import ChatRequest, Chunk, Completion, Span
from orchestray.policies.circuit import CircuitBreaker
from orchestray.policies.ratelimit import Permit, RateLimiter
from orchestray.policies.retry import RetryPolicy
from orchestray.provider_stats import (
    ProviderMetrics,
    ProviderStats,
    _Latencies,
    _NoMetrics,
)

__all__ = ["Provider", "AdmissionGate", "ProviderStats", "ProviderMetrics", "DEFAULT_OUTPUT_BUDGET"]

# Tokens budgeted for an answer when the request sets no max_tokens (what providers assume too).
DEFAULT_OUTPUT_BUDGET = 256

_log = logging.getLogger("orchestray.provider")


class Provider:
    def __init__(
        self,
        config: ProviderConfig,
        backend: Backend,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: ProviderMetrics | None = None,
        rng: random.Random | None = None,
    ):
        self.config = config
        self.name = config.name
        self.backend = backend
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics or _NoMetrics()
        self._rng = rng or random.Random()
        self.limiter = RateLimiter(config.limits.to_limits(), clock())
        self.gate = AdmissionGate(self.limiter, clock, sleep)
        # A backend whose transport reports when each request's headers are written: its calls
        # count in the window from then, not from admission (see backends._send_stamp).
        self._at_send = bool(getattr(backend, "stamps_sends", False))
        self.retry = RetryPolicy(max_retries=config.max_retries)
        circuit = config.circuit
        self.circuit = CircuitBreaker(circuit.failure_rate, circuit.min_calls, circuit.window_s, circuit.cooldown_s)
        self._circuit_verdict = asyncio.Event()  # set (and replaced) when a probe's verdict is in
        self.stats = ProviderStats(name=config.name)
        self.latencies = _Latencies()

    # The budget a call holds in the token bucket until its real usage is known.
    def budget(self, request: ChatRequest) -> tuple[int, int]:
        prompt = request.prompt_tokens()
        return prompt, prompt + max(1, request.n) * (request.max_tokens or DEFAULT_OUTPUT_BUDGET)

    async def complete(self, request: ChatRequest) -> Completion:
        prompt_tokens, budget = self.budget(request)
        self.limiter.validate(budget)
        self.stats.requests += 1
        started = self._clock()
        attempts = 0

        deadline = self._deadline(request, started)

        async def attempt() -> Reply:
            nonlocal attempts
            attempts += 1
            return await self._attempt(request, prompt_tokens, budget, deadline)

        try:
            reply = await self._with_retries(request, attempt)
        except BaseException as err:
            self._fail(err, started, attempts)
            raise
        return self._succeed(reply, started, attempts)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Chunks of text, then one chunk with `done=True` and the whole completion.

        Retries happen only until the first piece arrives: a half-sent answer cannot be retried.
        """
        prompt_tokens, budget = self.budget(request)
        self.limiter.validate(budget)
        self.stats.requests += 1
        started = self._clock()
        attempts = 0

        deadline = self._deadline(request, started)

        async def open_stream():
            nonlocal attempts
            attempts += 1
            return await self._open_stream(request, prompt_tokens, budget, deadline)

        try:
            permit, pieces, first, admitted_at = await self._with_retries(request, open_stream)
        except BaseException as err:
            self._fail(err, started, attempts)
            raise
        used: int | None = prompt_tokens
        timeout = request.timeout_s or self.config.timeout_s
        try:
            item = first
            while not isinstance(item, Reply):
                # Backends yield text as plain str (the common case) and richer pieces as Chunks.
                yield item if isinstance(item, Chunk) else Chunk(delta=item)
                item = await self._guard(anext(pieces), timeout)
            used = item.input_tokens + item.output_tokens
            self._learn(item.quota, permit)
            yield Chunk(done=True, completion=self._succeed(item, started, attempts))
        except (asyncio.CancelledError, GeneratorExit) as err:
            self._fail(err, started, attempts)  # the caller stopped listening: a cancel
            raise
        except BaseException as err:
            self._record_failure(err, admitted_at)
            self._fail(err, started, attempts)
            raise
        finally:
            self.gate.release(permit, used)
            await pieces.aclose()

    async def _with_retries(self, request: ChatRequest, attempt: Callable[[], Awaitable]):
        # Most calls succeed at once, and setting tenacity up costs more than the rest of the
        # provider's bookkeeping together; so the first attempt runs before it, and a failure is
        # handed to tenacity as the outcome of its attempt 1. Tenacity alone still decides
        # whether, when and how often to try again: one loop, one policy.
        try:
            return await attempt()
        except Exception as err:
            first_error: Exception | None = err
        retrying = tenacity.AsyncRetrying(
            sleep=self._sleep,
            before_sleep=self._on_retry,
            **self.retry.tenacity_kwargs(request.max_retries, self._rng),
        )
        async for try_ in retrying:
            with try_:
                if first_error is not None:
                    error, first_error = first_error, None
                    raise error
                return await attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _on_retry(self, state: tenacity.RetryCallState) -> None:
        self.stats.retries += 1
        self._metrics.retried(self.name)

    def _deadline(self, request: ChatRequest, started: float) -> float:
        """When a call gives up waiting for the circuit: the time its attempts may take at most."""
        retries = self.retry.max_retries if request.max_retries is None else request.max_retries
        return started + (request.timeout_s or self.config.timeout_s) * (retries + 1)

    async def _through_circuit(self, request: ChatRequest, deadline: float) -> float:
        """Wait, if need be, until the circuit lets this call go; return the time it did.

        A call asked with `max_retries=0` or `wait_for_circuit=False` has somewhere else to go
        (a fallback's next member, a race's other runners): an open circuit fails it at once.
        Any other call has no alternative, so it waits for the half-open probe's verdict, as
        long as its own deadline allows.
        """
        elsewhere = request.wait_for_circuit is False or (request.wait_for_circuit is None and request.max_retries == 0)
        while True:
            now = self._clock()
            wait = self.circuit.retry_after(now)
            if wait <= 0:
                return now
            left = deadline - now
            probing = self.circuit.state == "half-open"
            if elsewhere or left <= 0 or (wait > left and not probing):
                failures, calls = self.circuit.opened_after
                raise CircuitOpenError(
                    f"cooling down: {failures} of the last {calls} calls failed; next try in {wait:.1f}s",
                    provider=self.name,
                    retry_after=wait,
                )
            await self._wait_for_verdict(min(wait, left))

    async def _wait_for_verdict(self, timeout_s: float) -> None:
        timer = asyncio.ensure_future(self._sleep(timeout_s))
        verdict = asyncio.ensure_future(self._circuit_verdict.wait())
        try:
            await asyncio.wait((timer, verdict), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            verdict.cancel()

    def _circuit_moved(self) -> None:
        self._circuit_verdict.set()
        self._circuit_verdict = asyncio.Event()

    async def _attempt(self, request: ChatRequest, prompt_tokens: int, budget: int, deadline: float) -> Reply:
        admitted_at = await self._through_circuit(request, deadline)
        permit = await self.gate.acquire(budget, self._at_send)
        used: int | None = None
        try:
            with sending(lambda: self.gate.sent(permit)):
                reply = await self._guard(self.backend.complete(request), request.timeout_s or self.config.timeout_s)
            used = reply.input_tokens + reply.output_tokens
            self._after_reply(reply, permit, admitted_at)
            return reply
        except asyncio.CancelledError:
            used = prompt_tokens  # aborted before any answer: give back the answer's budget
            raise
        except BaseException as err:
            self._record_failure(err, admitted_at)
            raise
        finally:
            self.gate.release(permit, used)

    async def _open_stream(self, request: ChatRequest, prompt_tokens: int, budget: int, deadline: float):
        admitted_at = await self._through_circuit(request, deadline)
        permit = await self.gate.acquire(budget, self._at_send)
        pieces = aiter(self.backend.stream(request))
        try:
            with sending(lambda: self.gate.sent(permit)):
                first = await self._guard(anext(pieces), request.timeout_s or self.config.timeout_s)
        except asyncio.CancelledError:
            self.gate.release(permit, prompt_tokens)
            await pieces.aclose()
            raise
        except BaseException as err:
            self._record_failure(err, admitted_at)
            self.gate.release(permit, None)
            await pieces.aclose()
            raise
        return permit, pieces, first, admitted_at

    async def _guard(self, awaitable: Awaitable, timeout_s: float):
        try:
            async with asyncio.timeout(timeout_s):
                return await awaitable
        except TimeoutError:
            raise ProviderTimeoutError(f"no answer within {timeout_s:g}s", provider=self.name) from None
        except StopAsyncIteration:
            raise ProviderUnavailableError("the stream ended without a final usage report", provider=self.name) from None

    def _after_reply(self, reply: Reply, permit: Permit, admitted_at: float) -> None:
        if self.circuit.record_success(self._clock(), admitted_at):
            self._circuit_moved()
        self._learn(reply.quota, permit)

    def _learn(self, quota: Quota | None, permit: Permit | None) -> None:
        """Every answer's rate-limit headers teach the limiter the provider's limits and load."""
        if quota is None:
            return
        now = self._clock()
        observe = self.limiter.observe
        for warning in (
            observe("requests", quota.limit_requests, quota.remaining_requests, quota.reset_requests_s, permit, now),
            observe("tokens", quota.limit_tokens, quota.remaining_tokens, quota.reset_tokens_s, permit, now),
        ):
            if warning is not None:
                _log.warning("provider %s: %s", self.name, warning)

    def _record_failure(self, err: BaseException, admitted_at: float) -> None:
        now = self._clock()
        if isinstance(err, RateLimitedError):
            self.stats.rate_limited += 1
            self._metrics.rate_limited(self.name)
            self._learn(getattr(err, "quota", None), None)
            self.limiter.on_rate_limited(err.retry_after, now)
        if isinstance(err, ProviderTimeoutError):
            self.stats.timeouts += 1
        if isinstance(err, (ProviderTimeoutError, ProviderUnavailableError)):
            moved = self.circuit.record_failure(now, admitted_at)
        elif isinstance(err, ProviderError):
            # A 429, a 400 or a refused key: the provider answered, so it is up.
            moved = self.circuit.record_success(now, admitted_at)
        else:
            return  # cancelled, or a fault of ours: says nothing of the provider
        if moved:
            self._circuit_moved()

    async def latency_quantile(self, q: float, min_samples: int = 1) -> float | None:
        """A latency percentile of recent calls (a race hedges at the p95); None without data."""
        return self.latencies.quantile(q, min_samples)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return self.config.price.cost(input_tokens, output_tokens)

    def _succeed(self, reply: Reply, started: float, attempts: int) -> Completion:
        latency = self._clock() - started
        cost = self.cost(reply.input_tokens, reply.output_tokens)
        stats = self.stats
        stats.succeeded += 1
        stats.input_tokens += reply.input_tokens
        stats.output_tokens += reply.output_tokens
        stats.cost += cost
        self.latencies.add(latency)
        self._metrics.call(self.name, "ok", latency, reply.input_tokens, reply.output_tokens, cost)
        span = Span(
            name=self.name,
            model=reply.model or self.config.model,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            latency_s=latency,
            cost=cost,
            retries=max(0, attempts - 1),
            dropped=list(reply.dropped),
        )
        return Completion(
            content=reply.text,
            model=reply.model or self.config.model,
            provider=self.name,
            tool_calls=reply.tool_calls,
            refusal=reply.refusal,
            logprobs=reply.logprobs,
            finish_reason=reply.finish_reason,
            more_choices=reply.more_choices,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cached_tokens=reply.cached_tokens,
            reasoning_tokens=reply.reasoning_tokens,
            latency_s=latency,
            cost=cost,
            trace=span,
        )

    def _fail(self, err: BaseException, started: float, attempts: int) -> None:
        latency = self._clock() - started
        cancelled = isinstance(err, (asyncio.CancelledError, GeneratorExit))
        if cancelled:
            self.stats.cancelled += 1
            # A call cancelled after running longer than the p95 was slower than the p95 (a
            # hedged race's slow primary): keep it, or the p95 drifts down as hedges win and
            # the race hedges ever more. A call cancelled sooner says nothing of its latency.
            p95 = self.latencies.quantile(0.95, 20)
            if p95 is not None and latency >= p95:
                self.latencies.add(latency)
        else:
            self.stats.failed += 1
        outcome = "cancelled" if cancelled else "error"
        self._metrics.call(self.name, outcome, latency, 0, 0, 0.0)
        if isinstance(err, OrchestrayError):
            # Coordinators put the failed call in their trace too.
            err.span = Span(
                name=self.name,
                model=self.config.model,
                outcome=outcome,
                latency_s=latency,
                retries=max(0, attempts - 1),
                error=str(err),
            )

    def snapshot(self) -> ProviderStats:
        limits = self.limiter.learned()
        stats = msgspec.structs.replace(
            self.stats,
            in_flight=self.limiter.in_flight,
            waiting=self.gate.waiting,
            latency_p50_s=self.latencies.quantile(0.5),
            latency_p95_s=self.latencies.quantile(0.95),
            latency_p99_s=self.latencies.quantile(0.99),
            circuit=self.circuit.state,
            limit_rpm=limits["rpm"],
            limit_tpm=limits["tpm"],
            paused_s=max(0.0, self.limiter.paused_until - self._clock()),
        )
        return stats

    async def close(self) -> None:
        await self.backend.close()

