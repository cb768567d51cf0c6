"""Routing: send each request to the provider or route its first matching rule names.

The rules and their matching are `orchestray.policies.routing.Router`; this coordinator asks it for
a decision, calls the chosen target, and wraps the target's trace in a span that records the
decision (the rule and why it matched). Streams pass straight through from the target.
"""

from __future__ import annotations

import time
from typing import AsyncIterator, Callable

from orchestray.errors import OrchestrayError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.policies.routing import RouteDecision, Router

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish

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

    def choose(self, request: ChatRequest) -> RouteDecision:
        return self.router.choose(request, budget=self.budget)

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        decision = self.choose(request)
        try:
            answer = await self.resolve(decision.target).complete(request)
        except OrchestrayError as err:
            raise self._failed(err, decision, started) from None
        return self._wrap(answer, decision, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = self.clock()
        decision = self.choose(request)
        stream = self.resolve(decision.target).stream(request)
        try:
            async for chunk in stream:
                if chunk.done and chunk.completion is not None:
                    yield Chunk(delta=chunk.delta, done=True, completion=self._wrap(chunk.completion, decision, started))
                else:
                    yield chunk
        except OrchestrayError as err:
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
