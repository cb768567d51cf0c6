"""Fallback: try providers in order, moving on when one fails, is rate limited or is unavailable."""

from __future__ import annotations

import time
from typing import Callable

from orchestray.errors import AllFailedError, OrchestrayError
from orchestray.messages import ChatRequest, Completion

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish
from orchestray.coordinators._circuits import CircuitView, learn, told_at_once

__all__ = ["FallbackCoordinator"]


class FallbackCoordinator(Coordinator):
    """Every member but the last is asked with `max_retries=0` (unless the request says
    otherwise), so a rate limit or an outage moves to the next member at once instead of
    waiting out backoff; the last member retries as its provider is configured to.

    A member known to be cooling down (its circuit said so on an earlier call) is moved behind
    the others: it is asked only when they have all failed, and then, if it is the last one
    left, it waits for its probe. The last member before it keeps its retries but says at once
    if its own circuit is open.
    """

    kind = "fallback"

    def __init__(self, name: str, resolve: Resolve, providers: list[str], clock: Callable[[], float] = time.monotonic):
        super().__init__(name, resolve, clock)
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = list(providers)
        self.circuits = CircuitView()

    def _tries(self, request: ChatRequest) -> list[tuple[str, ChatRequest]]:
        """(member, what to ask it) in the order to try them."""
        ready, cooling = self.circuits.order(self.providers, self.clock())
        order = ready + cooling
        fast = request if request.max_retries is not None else request.with_changes(max_retries=0)
        tries = [(name, fast) for name in order[:-1]] + [(order[-1], request)]
        if ready and cooling:  # the last ready member keeps its retries, with cooling ones behind it
            tries[len(ready) - 1] = (ready[-1], told_at_once(request))
        return tries

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        spans, causes = [], []
        for name, asked in self._tries(request):
            try:
                answer = await self.resolve(name).complete(asked)
            except OrchestrayError as err:
                learn(self.circuits, name, err, self.clock())
                causes.append(err)
                spans.append(failed_span(err, name))
                continue
            learn(self.circuits, name, None, self.clock())
            decision = f"{name} answered" + (f" after {len(causes)} failed: " + "; ".join(f"{s.name}: {s.error}" for s in spans) if causes else "")
            trace = [answer.trace] if answer.trace is not None else []
            return finish(self.kind, self.name, answer, spans + trace, decision, self.clock() - started,
                          data={"answered_by": name, "position": self.providers.index(name)})
        raise fail_with(AllFailedError(f"fallback {self.name}", causes), self.kind, self.name, spans,
                        "every member failed", self.clock() - started)
