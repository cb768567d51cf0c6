"""Routing: send each request to the provider or route its first matching rule names.

The rules and their matching are `orchestray.policies.routing.Router`; this coordinator asks it for
a decision, calls the chosen target, and wraps the target's trace in a span that records the
decision (the rule and why it matched). Streams pass straight through from the target.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import AsyncIterator, Callable

from orchestray.errors import OrchestrayError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.policies.routing import RouteDecision, Router

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish
from orchestray.coordinators._circuits import CircuitView, cooling_for, learn, told_at_once

__all__ = ["RouterCoordinator"]


class RouterCoordinator(Coordinator):
    kind = "route"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        router: Router,
        *,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`budget` (estimated cost per request) skips rules whose target would cost more."""
        super().__init__(name, resolve, clock)
        self.router = router
        self.budget = budget
        self.circuits = CircuitView()

    def choose(self, request: ChatRequest, avoid: Collection[str] = ()) -> RouteDecision:
        return self.router.choose(request, budget=self.budget, avoid=avoid)

    def _decisions(self, request: ChatRequest):
        """(decision, what to ask its target), routing around targets cooling down: a target
        with another to go to is asked to say at once if its circuit is open; one that says so
        is avoided from then on (`circuits`), and the request chooses again. The last choice
        left is asked as the caller asked, and waits for its probe if it must."""
        avoid = {t for t in self.router.targets() if self.circuits.is_open(t, self.clock())}
        while True:
            decision = self.choose(request, avoid)
            other = self.choose(request, avoid | {decision.target}).target
            alone = decision.target in avoid or other == decision.target
            yield decision, request if alone else told_at_once(request)
            if alone:
                return
            avoid.add(decision.target)

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        for decision, asked in self._decisions(request):
            try:
                answer = await self.resolve(decision.target).complete(asked)
            except OrchestrayError as err:
                learn(self.circuits, decision.target, err, self.clock())
                if asked is not request and cooling_for(err) is not None:
                    continue  # its circuit is open: choose again without it
                raise self._failed(err, decision, started) from None
            learn(self.circuits, decision.target, None, self.clock())
            return self._wrap(answer, decision, started)
        raise AssertionError("unreachable: the last decision is asked as the caller asked")

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = self.clock()
        for decision, asked in self._decisions(request):
            stream = self.resolve(decision.target).stream(asked)
            sent = False
            try:
                async for chunk in stream:
                    sent = True
                    if chunk.done and chunk.completion is not None:
                        yield Chunk(delta=chunk.delta, done=True, completion=self._wrap(chunk.completion, decision, started))
                    else:
                        yield chunk
                learn(self.circuits, decision.target, None, self.clock())
                return
            except OrchestrayError as err:
                learn(self.circuits, decision.target, err, self.clock())
                if not sent and asked is not request and cooling_for(err) is not None:
                    continue
                raise self._failed(err, decision, started) from None
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()

    def _wrap(self, answer: Completion, decision: RouteDecision, started: float) -> Completion:
        children = [answer.trace] if answer.trace is not None else []
        return finish(self.kind, self.name, answer, children, decision.describe(), self.clock() - started,
                      data=_data(decision))

    def _failed(self, err: OrchestrayError, decision: RouteDecision, started: float) -> OrchestrayError:
        child = failed_span(err, decision.target)
        failed = fail_with(err, self.kind, self.name, [child], decision.describe(), self.clock() - started)
        failed.span.data = _data(decision)
        return failed


def _data(decision: RouteDecision) -> dict:
    return {
        "target": decision.target,
        "rule": decision.rule,
        "reason": decision.reason,
        "task": decision.task,
        "tokens": decision.tokens,
    }
