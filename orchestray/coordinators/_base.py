"""What every coordinator shares: the model interface it presents and calls, and its trace."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable, Iterable, Protocol

from orchestray.errors import OrchestrayError
from orchestray.messages import ChatRequest, Chunk, Completion, Span

__all__ = ["Model", "Resolve", "Coordinator", "failed_span", "cancelled_span", "finish", "fail_with", "cancel_all"]


class Model(Protocol):
    """A provider or a coordinator: anything a coordinator can call, and what it is itself."""

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]: ...


Resolve = Callable[[str], Model]


class Coordinator:
    """Base of the patterns. Subclasses implement `complete`; `stream` defaults to one piece.

    `resolve(name)` gives the model (provider or route) behind a name; `clock` is injected so
    the logic runs under a fake clock in tests.
    """

    kind = "coordinator"

    def __init__(self, name: str, resolve: Resolve, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.resolve = resolve
        self.clock = clock

    async def complete(self, request: ChatRequest) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        completion = await self.complete(request)
        if completion.content:
            yield Chunk(delta=completion.content)
        yield Chunk(done=True, completion=completion)


def failed_span(err: BaseException, name: str) -> Span:
    """The span of a failed call: the provider's own when it attached one."""
    span = getattr(err, "span", None)
    if isinstance(span, Span):
        return span
    message = str(err) if isinstance(err, OrchestrayError) else f"{type(err).__name__}: {err}"
    return Span(name=name, outcome="error", error=message)


def cancelled_span(name: str, latency_s: float) -> Span:
    return Span(name=name, outcome="cancelled", latency_s=latency_s)


def finish(
    kind: str,
    name: str,
    answer: Completion,
    children: Iterable[Span],
    decision: str,
    latency_s: float,
    *,
    data: dict | None = None,
    content: str | None = None,
    confidence: float | None = None,
) -> Completion:
    """The coordinator's completion: the chosen answer, with all calls' cost and a trace node."""
    spans = list(children)
    span = Span(
        name=name,
        kind=kind,
        model=answer.model,
        input_tokens=sum(s.input_tokens for s in spans),
        output_tokens=sum(s.output_tokens for s in spans),
        latency_s=latency_s,
        decision=decision,
        data=data,
        children=spans,
    )
    return Completion(
        content=answer.content if content is None else content,
        model=answer.model,
        provider=answer.provider,
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        latency_s=latency_s,
        cost=span.total_cost(),
        finish_reason=answer.finish_reason,
        confidence=answer.confidence if confidence is None else confidence,
        trace=span,
    )


def fail_with(err: OrchestrayError, kind: str, name: str, children: Iterable[Span], decision: str, latency_s: float) -> OrchestrayError:
    """Attach the coordinator's trace to the error it raises, so callers can still see the calls."""
    err.span = Span(name=name, kind=kind, outcome="error", latency_s=latency_s, decision=decision,
                    error=str(err), children=list(children))
    return err


async def cancel_all(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel and wait: a cancelled provider call has aborted its HTTP request when this returns."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
