"""What every coordinator shares: the model interface it presents and calls, `n` as independent
runs, the requests it sends its members, and its trace."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import AsyncIterator, Callable, Iterable, Protocol

import msgspec

from orchestray.errors import OrchestrayError
from orchestray.messages import ChatRequest, Choice, Chunk, Completion, Message, Span, ToolCallDelta

__all__ = [
    "Model",
    "Resolve",
    "Coordinator",
    "sample_seed",
    "ask_in_turn",
    "own_question",
    "failed_span",
    "cancelled_span",
    "finish",
    "fail_with",
    "cancel_all",
]


class Model(Protocol):
    """A provider or a coordinator: anything a coordinator can call, and what it is itself."""

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]: ...


Resolve = Callable[[str], Model]


def sample_seed(seed: int | None, index: int) -> int:
    """A distinct, reproducible seed per sample, so samples of one prompt differ."""
    return ((seed or 0) * 1_000_003 + index * 7_919 + 1) % (2**31)


class Coordinator:
    """Base of the patterns. Subclasses implement `complete` (and may implement `stream`) for one
    answer; `stream` defaults to the completion in pieces.

    A request with `n` > 1 is n independent runs of the pattern, whatever the subclass: the base
    wraps each subclass's `complete` and `stream` so that they see `n` = 1 only, and the runs come
    back as one completion whose `more_choices` are runs 1..n-1 (see `_runs`). Members are never
    asked for n choices: an ensemble of n-choice answers would vote over the wrong thing.

    `resolve(name)` gives the model (provider or route) behind a name; `clock` is injected so
    the logic runs under a fake clock in tests.
    """

    kind = "coordinator"

    def __init__(self, name: str, resolve: Resolve, clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.resolve = resolve
        self.clock = clock

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        one = cls.__dict__.get("complete")
        if one is not None:
            @functools.wraps(one)
            async def complete(self, request: ChatRequest) -> Completion:
                if request.n > 1:
                    return await self._runs(request, functools.partial(one, self))
                return await one(self, request)

            cls.complete = complete
        one_stream = cls.__dict__.get("stream")
        if one_stream is not None:
            @functools.wraps(one_stream)
            async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
                # n runs cannot stream as one: they are run whole and sent choice by choice.
                chunks = Coordinator.stream(self, request) if request.n > 1 else one_stream(self, request)
                async for chunk in chunks:
                    yield chunk

            cls.stream = stream

    async def complete(self, request: ChatRequest) -> Completion:  # pragma: no cover - abstract
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        completion = await self.complete(request)
        for choice in completion.choices():
            for chunk in _pieces(choice):
                yield chunk
        yield Chunk(done=True, completion=completion)

    async def _runs(self, request: ChatRequest, run_once) -> Completion:
        """`n` independent runs: run 0 asks as the caller did, run i with its own seed, so runs of
        a sampled pattern differ. Usage and cost are summed; each run's trace is a child span
        marked with the choice it became. One failed run fails the call, as a provider would."""
        started = self.clock()
        n = request.n
        asked = [request.with_changes(n=1, seed=request.seed if i == 0 else sample_seed(request.seed, i))
                 for i in range(n)]
        results = await asyncio.gather(*(run_once(r) for r in asked), return_exceptions=True)
        spans, causes = [], []
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                if not isinstance(result, (OrchestrayError, asyncio.CancelledError)):
                    raise result
                causes.append(result)
                span = failed_span(result, self.name)
            else:
                span = result.trace or Span(name=self.name, kind=self.kind, cost=result.cost)
            spans.append(msgspec.structs.replace(span, data={**(span.data or {}), "choice": i}))
        elapsed = self.clock() - started
        decision = f"n={n}: {n} independent runs"
        if causes:
            first = next(c for c in causes if isinstance(c, OrchestrayError))
            raise fail_with(first, self.kind, self.name, spans, f"{decision}; {len(causes)} failed", elapsed)
        answers: list[Completion] = list(results)  # type: ignore[arg-type]
        data = {"n": n, "choices": [{"choice": i, "provider": a.provider, "cost": a.cost,
                                     "decision": a.trace.decision if a.trace is not None else None}
                                    for i, a in enumerate(answers)]}
        span = Span(name=self.name, kind=self.kind, model=answers[0].model,
                    input_tokens=sum(s.input_tokens for s in spans), output_tokens=sum(s.output_tokens for s in spans),
                    latency_s=elapsed, decision=decision, data=data, children=spans)
        more = tuple(msgspec.structs.replace(a.first_choice(), index=i) for i, a in enumerate(answers[1:], 1))
        return msgspec.structs.replace(
            answers[0],
            more_choices=more,
            input_tokens=sum(a.input_tokens for a in answers),
            output_tokens=sum(a.output_tokens for a in answers),
            cached_tokens=sum(a.cached_tokens for a in answers),
            reasoning_tokens=sum(a.reasoning_tokens for a in answers),
            latency_s=elapsed,
            cost=span.total_cost(),
            trace=span,
        )


def _pieces(choice: Choice):
    """A finished choice as stream pieces: its text, each tool call whole, its refusal."""
    if choice.content:
        yield Chunk(delta=choice.content, choice=choice.index)
    for j, call in enumerate(choice.tool_calls):
        yield Chunk(choice=choice.index,
                    tool_calls=(ToolCallDelta(index=j, id=call.id, name=call.name, arguments=call.arguments),))
    if choice.refusal:
        yield Chunk(refusal=choice.refusal, choice=choice.index)


# The fields that shape the answer the caller gets back. A pattern's own question (a judge's
# verdict, a search step's proposals) must come back as text the pattern can read, so it is
# asked without them; the caller's conversation, images and sampling fields still go along.
_OUTPUT_OPTIONS = {"response_format": None, "n": 1, "logprobs": None, "top_logprobs": None,
                   "parallel_tool_calls": None}


def ask_in_turn(request: ChatRequest, text: str) -> ChatRequest:
    """The caller's request with `text` as the turn the model answers: the last user turn's text
    replaced (its images kept) when the conversation ends with the user, else a new user turn
    after the tool results or the assistant turn it ends with."""
    if request.messages and request.messages[-1].role == "user":
        return request.with_last_user_text(text)
    return request.with_changes(messages=request.messages + (Message("user", text),))


def own_question(request: ChatRequest, text: str) -> ChatRequest:
    """A pattern's own question over the caller's conversation, answered in text. Tools stay
    declared with `tool_choice: none` when there are any, since providers refuse tool turns in a
    history without the tools they name."""
    changes = dict(_OUTPUT_OPTIONS, tool_choice="none" if request.tools else None)
    return ask_in_turn(request, text).with_changes(**changes)


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
    confidence: float | None = None,
) -> Completion:
    """The coordinator's completion: the chosen answer whole (tool calls, refusal, logprobs, finish
    reason, usage details), with all calls' cost and a trace node."""
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
    return msgspec.structs.replace(
        answer,
        latency_s=latency_s,
        cost=span.total_cost(),
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
