"""Fallback: try providers in order, moving on when one fails, is rate limited or is unavailable."""

from __future__ import annotations

import time
from typing import Callable

from orchestray.errors import AllFailedError, OrchestrayError
from orchestray.messages import ChatRequest, Completion

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish

__all__ = ["FallbackCoordinator"]


class FallbackCoordinator(Coordinator):
    """Every member but the last is asked with `max_retries=0` (unless the request says
    otherwise), so a rate limit or an outage moves to the next member at once instead of
    waiting out backoff; the last member retries as its provider is configured to."""

    kind = "fallback"

    def __init__(self, name: str, resolve: Resolve, providers: list[str], clock: Callable[[], float] = time.monotonic):
        super().__init__(name, resolve, clock)
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self.providers = list(providers)

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        spans, causes = [], []
        for i, name in enumerate(self.providers):
            last = i == len(self.providers) - 1
            asked = request if last or request.max_retries is not None else request.with_changes(max_retries=0)
            try:
                answer = await self.resolve(name).complete(asked)
            except OrchestrayError as err:
                causes.append(err)
                spans.append(failed_span(err, name))
                continue
            decision = f"{name} answered" + (f" after {len(causes)} failed: " + "; ".join(f"{s.name}: {s.error}" for s in spans) if causes else "")
            trace = [answer.trace] if answer.trace is not None else []
            return finish(self.kind, self.name, answer, spans + trace, decision, self.clock() - started,
                          data={"answered_by": name, "position": i})
        raise fail_with(AllFailedError(f"fallback {self.name}", causes), self.kind, self.name, spans,
                        "every member failed", self.clock() - started)
