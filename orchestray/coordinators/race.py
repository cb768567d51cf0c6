"""Race: every provider answers the same request; the first success wins and the rest are cancelled.

With `hedge_after` the race is hedged ("The Tail at Scale"): the next provider is called only
when no answer has come for that long, a fixed delay or the observed 95th percentile latency of
the provider already running, so most requests cost one call and only the slow tail costs two.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, Callable

from orchestray.errors import AllFailedError, CircuitOpenError
from orchestray.messages import ChatRequest, Chunk, Completion

from orchestray.coordinators._base import Coordinator, Resolve, cancel_all, cancelled_span, fail_with, failed_span, finish
from orchestray.coordinators._circuits import CircuitView, cooling_for, learn, told_at_once, waits_for_circuit

__all__ = ["RaceCoordinator"]

# Before a provider has answered this many calls its p95 is a guess; hedge after this instead.
_MIN_SAMPLES_FOR_P95 = 20
_P95_REFRESH_S = 2.0


class RaceCoordinator(Coordinator):
    kind = "race"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        providers: list[str],
        hedge_after_ms: float | str | None = None,
        *,
        fallback_hedge_ms: float = 1000.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(name, resolve, clock)
        if not providers:
            raise ValueError("a race needs at least one provider")
        self.providers = list(providers)
        self.hedge_after_ms = hedge_after_ms
        self.fallback_hedge_ms = fallback_hedge_ms
        self._p95: dict[str, tuple[float, float | None]] = {}  # name -> (read at, seconds)
        self.circuits = CircuitView()

    async def hedge_delay_s(self, running: str) -> float | None:
        """Seconds to wait for `running` before calling the next provider; None: call all now."""
        if self.hedge_after_ms is None:
            return None
        if self.hedge_after_ms != "p95":
            return float(self.hedge_after_ms) / 1000.0
        read_at, value = self._p95.get(running, (-1e18, None))
        now = self.clock()
        if now - read_at > _P95_REFRESH_S:
            quantile = getattr(self.resolve(running), "latency_quantile", None)
            # None until the provider has answered enough calls for a p95 to mean something.
            value = await quantile(0.95, _MIN_SAMPLES_FOR_P95) if quantile is not None else None
            self._p95[running] = (now, value)
        return value if value is not None else self.fallback_hedge_ms / 1000.0

    async def _race(self, request: ChatRequest, start: Callable[[str, ChatRequest], Awaitable]):
        """Race the members; return ((winner name, result), spans of the others, calls made).

        Members known to be cooling down (an open circuit) are passed over, and the others are
        asked to say at once if theirs is open. Only when every other member has failed are the
        cooling ones asked again, as the caller asked: then they wait for their probes, each
        within its own deadline (unless the caller itself has somewhere else to go).
        """
        started = self.clock()
        ready, cooling = self.circuits.order(self.providers, started)
        spans: list = []
        causes: list[BaseException] = []
        launched = 0
        said_open: list[str] = []
        if ready:
            asked = told_at_once(request) if len(self.providers) > 1 else request  # alone: nowhere else to go
            won, said_open, calls = await self._run(ready, lambda n: start(n, asked), spans, causes)
            launched += calls
            if won is not None:
                return won, spans, launched
        if not waits_for_circuit(request):
            for name in cooling:  # passed over without a call: say so, for the caller's fallback
                err = _cooling_error(name, self.circuits.open_for(name, self.clock()))
                causes.append(err)
                spans.append(failed_span(err, name))
        elif said_open or cooling:
            won, _, calls = await self._run(said_open + cooling, lambda n: start(n, request), spans, causes)
            launched += calls
            if won is not None:
                return won, spans, launched
        raise fail_with(AllFailedError(f"race {self.name}", causes), self.kind, self.name, spans,
                        "every provider failed", self.clock() - started)

    async def _run(self, names: list[str], start: Callable[[str], Awaitable], spans: list, causes: list):
        """Run starters in hedged order: ((winner, result) or None, members that said their
        circuit is open, calls made). Failed and cancelled calls add their spans and causes."""
        waiting = list(names)
        running: dict[asyncio.Task, tuple[str, float]] = {}
        said_open: list[str] = []

        def launch() -> str:
            name = waiting.pop(0)
            running[asyncio.ensure_future(start(name))] = (name, self.clock())
            return name

        first = launch()
        delay = await self.hedge_delay_s(first)
        if delay is None:
            while waiting:
                launch()
        try:
            while running:
                timeout = delay if waiting else None
                done, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    launch()  # no answer within the hedge delay: call the next provider too
                    continue
                winner = None
                for task in [t for t in running if t in done]:  # in launch order: stable traces
                    name, _ = running.pop(task)
                    err = task.exception()
                    learn(self.circuits, name, err, self.clock())
                    if err is None and winner is None:
                        winner = (name, task.result())
                    elif err is not None:
                        causes.append(err)
                        spans.append(failed_span(err, name))
                        if cooling_for(err) is not None:
                            said_open.append(name)
                    else:  # a second success in the same instant: it lost, but it was paid for
                        trace = getattr(task.result(), "trace", None)
                        spans.append(trace if trace is not None else cancelled_span(name, 0.0))
                if winner is not None:
                    return winner, said_open, len(names) - len(waiting)
                while waiting and len(running) == 0:
                    launch()  # everything running failed: the next one goes at once
        finally:
            losers = list(running.items())
            await cancel_all(running)
            for task, (name, launched_at) in losers:
                spans.append(cancelled_span(name, self.clock() - launched_at))
        return None, said_open, len(names) - len(waiting)

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        (name, answer), others, launched = await self._race(request, lambda n, r: self.resolve(n).complete(r))
        return self._finish(answer, name, others, launched, started)

    def _finish(self, answer: Completion, name: str, others, launched: int, started: float) -> Completion:
        cancelled = [s.name for s in others if s.outcome == "cancelled"]
        failed = [s.name for s in others if s.outcome == "error"]
        decision = f"{name} answered first"
        if failed:
            decision += f"; failed: {', '.join(failed)}"
        if cancelled:
            decision += f"; cancelled: {', '.join(cancelled)}"
        spans = [answer.trace] if answer.trace is not None else []
        data = {"winner": name, "calls": launched, "hedged": self.hedge_after_ms is not None}
        return finish(self.kind, self.name, answer, spans + others, decision, self.clock() - started, data=data)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The first provider to send a piece wins the stream; the others are cancelled."""
        started = self.clock()
        streams: dict[str, AsyncIterator[Chunk]] = {}

        async def first_piece(name: str, asked: ChatRequest):
            stream = self.resolve(name).stream(asked)
            streams[name] = stream
            return await anext(stream)

        try:
            (name, first), others, launched = await self._race(request, first_piece)
        except BaseException:
            await _close(streams.values())
            raise
        winner_stream = streams.pop(name)
        await _close(streams.values())
        try:
            chunk = first
            while True:
                if chunk.done and chunk.completion is not None:
                    yield Chunk(done=True, completion=self._finish(chunk.completion, name, others, launched, started))
                    return
                yield chunk
                chunk = await anext(winner_stream)
        finally:
            await winner_stream.aclose()


async def _close(streams) -> None:
    for stream in list(streams):
        try:
            await stream.aclose()
        except Exception:  # a loser's stream failing as it closes changes nothing
            pass


def _cooling_error(name: str, wait: float) -> CircuitOpenError:
    return CircuitOpenError(f"passed over: its circuit is open; next try in {wait:.1f}s", provider=name, retry_after=wait)
