"""Tree-of-thought: a breadth-first beam search whose every proposal and evaluation is a model call.

The search itself is `orchestray.policies.search.BeamSearch`, a pure state machine; this
coordinator only makes its calls. A level's calls go out at once, spread round-robin over the
route's providers (or routes: a race can sit inside a step). The n evaluations of one state are
independent draws because each carries its `sample` as the request's seed. A failed call costs
its state a proposal or a vote, never the search; only a search in which every call failed
raises. The task is `general` by default (`orchestray.tasks.thought`: any problem, models propose
k thoughts, value them, and at the end a model writes the final answer from the best path), a
user's `ThoughtTask`, or `game24`. A task with `answer_prompt` gets that one more call after the
search (on the next provider in turn), counted in the caps: the search leaves it one call, and it
is skipped (the best path's own text answers) when the token or cost cap is already spent or
it fails. Other tasks answer with their text for the best state (`Answer: <expression> = 24`).
The trace holds every call, the tree, the totals and the best path.

Each call is the search's own question asked over the caller's conversation (history, images,
sampling fields), in text: the proposals and verdicts are parsed, so the caller's tools and
response format do not apply to them (`own_question`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import msgspec

from orchestray.errors import AllFailedError, OrchestrayError
from orchestray.messages import ChatRequest, Completion, Span
from orchestray.policies.search import BeamSearch, Call, Reply, SearchResult, run_search_async
from orchestray.tasks import ThoughtTask, task_for

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish, own_question, sample_seed

__all__ = ["TreeOfThoughtCoordinator"]

# Room for a call's reply. Proposals are a handful of short lines, a verdict a line or two of
# reasoning and a word; generous enough for a real model's working, and it bounds the tokens a
# provider reserves in its rate limiter for each call.
PROPOSE_MAX_TOKENS = 512
VALUE_MAX_TOKENS = 256
ANSWER_MAX_TOKENS = 1024


class TreeOfThoughtCoordinator(Coordinator):
    kind = "tree_of_thought"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        providers: list[str],
        *,
        task: str | ThoughtTask = "general",
        breadth: int = 5,
        depth: int = 3,
        evaluations: int = 3,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        temperature: float | None = 0.7,
        propose_max_tokens: int = PROPOSE_MAX_TOKENS,
        value_max_tokens: int = VALUE_MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`max_tokens` caps the whole search's tokens (input and output); each call's own reply
        is bounded by `propose_max_tokens` or `value_max_tokens`. `temperature` applies to every
        call unless the request sets one: sampled evaluations need a temperature above 0."""
        super().__init__(name, resolve, clock)
        if not providers:
            raise ValueError("a tree-of-thought search needs at least one provider")
        self.providers = list(providers)
        self.task = task
        self.breadth = breadth
        self.depth = depth
        self.evaluations = evaluations
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.temperature = temperature
        self.call_max_tokens = {"propose": propose_max_tokens, "value": value_max_tokens, "answer": ANSWER_MAX_TOKENS}

    def search_for(self, request: ChatRequest) -> tuple[Any, BeamSearch]:
        """The task and a fresh search for the puzzle in the request's last user message."""
        task = task_for(self.task, request.last_user_text())
        max_calls = self.max_calls
        if max_calls is not None and hasattr(task, "answer_prompt") and max_calls > 1:
            max_calls -= 1  # the final answer's call
        search = BeamSearch(
            task, task.root(), breadth=self.breadth, depth=self.depth, evaluations=self.evaluations,
            max_calls=max_calls, max_tokens=self.max_tokens, max_cost=self.max_cost,
        )
        return task, search

    def _call_request(self, call: Call, request: ChatRequest) -> ChatRequest:
        seed = call.sample if request.seed is None else sample_seed(request.seed, call.sample)
        temperature = request.temperature if request.temperature is not None else self.temperature
        return own_question(request, call.prompt).with_changes(
            max_tokens=self.call_max_tokens.get(call.kind, VALUE_MAX_TOKENS),
            temperature=temperature,
            seed=seed,
            request_id=f"{request.request_id}:{call.id}" if request.request_id else "",
        )

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        task, search = self.search_for(request)
        spans: dict[int, Span] = {}
        answered: list[Completion] = []
        causes: list[BaseException] = []
        bugs: list[BaseException] = []

        async def ask(call: Call) -> Reply:
            # Round-robin by call id: a batch's ids run consecutively, so a level's calls (and a
            # state's evaluations) are spread evenly over the providers.
            provider = self.providers[call.id % len(self.providers)]
            label = f"{call.kind} node {call.node}" + (f" sample {call.sample}" if call.kind == "value" else "")
            label = "final answer from the best path" if call.kind == "answer" else label
            try:
                answer = await self.resolve(provider).complete(self._call_request(call, request))
            except OrchestrayError as err:
                causes.append(err)
                spans[call.id] = _labelled(failed_span(err, provider), label)
                return Reply.failed(str(err))
            except Exception as err:  # a bug, not a model failing: raised when the search ends
                bugs.append(err)
                return Reply.failed(f"{type(err).__name__}: {err}")
            answered.append(answer)
            trace = answer.trace if answer.trace is not None else Span(name=provider, cost=answer.cost)
            spans[call.id] = _labelled(trace, label)
            return Reply(answer.content, answer.input_tokens, answer.output_tokens, answer.cost)

        result = await _search_or_raise(search, ask, bugs)
        final = await self._final_answer(task, result, ask) if answered else None
        children = [spans[i] for i in sorted(spans)]
        elapsed = self.clock() - started
        if not answered and causes:
            raise fail_with(AllFailedError(f"tree-of-thought {self.name}", causes), self.kind, self.name,
                            children, "every call failed", elapsed)
        content = final.text if final is not None and final.text is not None else task.answer(result.best.state)
        decision = self._decision(result)
        extra = final if final is not None and final.text is not None else Reply(None)
        summary = Completion(
            content=content,
            model=_joined(a.model for a in answered) or self.name,
            provider=_joined(a.provider for a in answered) or self.name,
            input_tokens=result.input_tokens + extra.input_tokens,
            output_tokens=result.output_tokens + extra.output_tokens,
        )
        totals = _totals(result)
        if extra.text is not None:  # the final answer's call belongs to the run's totals
            totals["calls"] += 1
            totals["answer_calls"] = 1
            totals["input_tokens"] += extra.input_tokens
            totals["output_tokens"] += extra.output_tokens
            totals["cost"] += extra.cost
        data = {
            "task": self.task if isinstance(self.task, str) else self.task.name,
            "final_answer": "model" if final is not None and final.text is not None else "best path",
            "solved": result.solved,
            "stopped_by": result.stopped_by,
            "best_path": [str(n.state) for n in result.path],
            "best_value": result.best.value,
            "totals": totals,
            "settings": {"breadth": self.breadth, "depth": self.depth, "evaluations": self.evaluations,
                         "max_calls": self.max_calls, "max_tokens": self.max_tokens, "max_cost": self.max_cost},
            "tree": result.tree(),
        }
        return finish(self.kind, self.name, summary, children, decision, elapsed, data=data,
                      confidence=1.0 if result.solved else 0.0)

    async def _final_answer(self, task: Any, result: SearchResult, ask) -> Reply | None:
        """A model's final answer from the best path, when the task asks one and the caps leave room."""
        prompt_for = getattr(task, "answer_prompt", None)
        prompt = prompt_for(result.best.state) if prompt_for is not None else None
        if prompt is None:
            return None
        spent_tokens = result.input_tokens + result.output_tokens
        if (self.max_calls is not None and result.calls >= self.max_calls) or (
            self.max_tokens is not None and spent_tokens >= self.max_tokens) or (
            self.max_cost is not None and result.cost >= self.max_cost):
            return None
        return await ask(Call(result.calls, "answer", prompt, result.best.id))

    @staticmethod
    def _decision(result: SearchResult) -> str:
        if result.solved:
            return f"solved at depth {result.best.depth} after {result.calls} calls (stopped by {result.stopped_by})"
        return (f"not solved after {result.calls} calls, {result.levels} levels "
                f"(stopped by {result.stopped_by}); best state at depth {result.best.depth}")


def _labelled(span: Span, label: str) -> Span:
    """A copy of a call's span saying what the call was for (a nested pattern keeps its decision)."""
    return msgspec.structs.replace(span, decision=f"{label}: {span.decision}" if span.decision else label)


async def _search_or_raise(search: BeamSearch, ask, bugs: list[BaseException]) -> SearchResult:
    result = await run_search_async(search, ask)
    if bugs:
        raise bugs[0]
    return result


def _totals(result: SearchResult) -> dict[str, Any]:
    return {
        "calls": result.calls,
        "propose_calls": result.propose_calls,
        "value_calls": result.value_calls,
        "failed_calls": result.failed_calls,
        "cache_hits": result.cache_hits,
        "duplicates": result.duplicates,
        "levels": result.levels,
        "nodes": len(result.nodes),
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost": result.cost,
    }


def _joined(names) -> str:
    return ",".join(dict.fromkeys(n for n in names if n))
