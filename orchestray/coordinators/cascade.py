"""Cascade: a cheap model first, escalating to the next stage while an acceptance test fails.

A stage is any provider or route. Acceptance: self-reported confidence, agreement among k
samples, a judge's score, or a custom predicate (`orchestray.policies.confidence`). The answer
reports which stage answered, the cost of every stage, and the cost saved against sending the
request to the last stage alone.

Every stage gets the caller's whole request (tools, response format, images, history); only the
confidence instruction is added, to the last user turn's text. When the request asks for JSON the
confidence is asked for as a `"confidence"` field of the object instead, so the answer stays
JSON (a `json_schema` without that property is left as it is: no confidence, and the stage
escalates; use `accept: agreement` there). Agreement compares tool calls by name and canonical
arguments and JSON in canonical form, and the answer is a sample that voted for the majority.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable

from orchestray.errors import AllFailedError, OrchestrayError
from orchestray.messages import ChatRequest, Completion
from orchestray.policies.confidence import AcceptanceTest, StageAnswer, judge_score_prompt
from orchestray.policies.extraction import reply_answer
from orchestray.policies.voting import candidate_text

if TYPE_CHECKING:
    from orchestray.config import PriceConfig

from orchestray.coordinators._base import (
    Coordinator,
    Resolve,
    fail_with,
    failed_span,
    finish,
    own_question,
    sample_seed,
)

__all__ = ["CascadeCoordinator", "CONFIDENCE_INSTRUCTION", "JSON_CONFIDENCE_INSTRUCTION"]

CONFIDENCE_INSTRUCTION = (
    "After your answer, state how confident you are that it is correct, on its own line, as "
    "'Confidence: <a number from 0 to 1>'."
)
JSON_CONFIDENCE_INSTRUCTION = (
    "In the JSON object, include a field \"confidence\": how confident you are that the answer is "
    "correct, as a number from 0 to 1."
)


class CascadeCoordinator(Coordinator):
    kind = "cascade"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        stages: list[str],
        accept: AcceptanceTest,
        *,
        judge: str | None = None,
        ask_confidence: bool = True,
        price_of: Callable[[str], PriceConfig | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(name, resolve, clock)
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        if accept.needs_judge and not judge:
            raise ValueError("a judge acceptance test needs a `judge` model")
        self.stages = list(stages)
        self.accept = accept
        self.judge = judge
        self.ask_confidence = ask_confidence
        self.price_of = price_of or (lambda name: None)

    def _asked(self, request: ChatRequest) -> ChatRequest:
        if not self.ask_confidence:
            return request
        instruction = CONFIDENCE_INSTRUCTION
        fmt = request.response_format
        if fmt is not None and fmt.wants_json:
            properties = (fmt.schema or {}).get("properties")
            if fmt.type == "json_schema" and not (isinstance(properties, dict) and "confidence" in properties):
                return request  # a strict schema leaves no room for the field; asking would fight it
            instruction = JSON_CONFIDENCE_INSTRUCTION
        return request.with_last_user_text(f"{request.last_user_text()}\n\n{instruction}")

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        asked = self._asked(request)
        wants_json = request.response_format is not None and request.response_format.wants_json
        spans, causes, stages = [], [], []
        answer: Completion | None = None
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            before = len(spans)
            k = self.accept.samples if not last else 0
            try:
                # The last stage's answer is accepted whatever it says: no confidence to ask for.
                answer, samples = await self._run_stage(stage, request if last else asked, k, spans)
            except OrchestrayError as err:
                causes.append(err)
                spans.append(failed_span(err, stage))
                stages.append({"stage": stage, "cost": _cost(spans[before:]), "decision": f"failed: {err}"})
                answer = None
                continue
            if last:
                stages.append({"stage": stage, "cost": _cost(spans[before:]), "decision": "last stage: accepted"})
                break
            judge_reply = await self._judge(request, answer, spans) if self.accept.needs_judge else None
            verdict = self.accept(StageAnswer(
                text=answer.content, samples=tuple(s.content for s in samples), judge_reply=judge_reply, stage=stage,
                tool_calls=answer.tool_calls, sample_calls=tuple(s.tool_calls for s in samples), wants_json=wants_json,
                logprobs=answer.logprobs,
            ))
            record = {"stage": stage, "cost": _cost(spans[before:]), "decision": verdict.reason, "score": verdict.score}
            if answer.tool_calls:
                record["tool_calls"] = [c.canonical() for c in answer.tool_calls]
            if verdict.answer is not None:
                record["answer"] = verdict.answer
                # The majority's reply, not merely the first sample: that is what was accepted.
                answer = next((s for s in samples if reply_answer(_extract_of(self.accept), s.content, s.tool_calls,
                                                                  wants_json=wants_json) == verdict.answer), answer)
            stages.append(record)
            if verdict.accept:
                break
        elapsed = self.clock() - started
        if answer is None:
            raise fail_with(AllFailedError(f"cascade {self.name}", causes), self.kind, self.name, spans,
                            "every stage failed", elapsed)
        total = _cost(spans)
        alone = self._last_stage_alone(request, answer, stages)
        answered_by = stages[-1]["stage"]
        data = {
            "answered_by": answered_by,
            "stage_index": len(stages) - 1,
            "stages": stages,
            "cost": total,
            "cost_last_stage_alone": alone,
            "saved": None if alone is None else alone - total,
        }
        decision = f"answered by stage {len(stages)} ({answered_by}): {stages[-1]['decision']}"
        return finish(self.kind, self.name, answer, spans, decision, elapsed, data=data)

    async def _run_stage(self, stage: str, request: ChatRequest, k: int, spans: list):
        """One call, or k samples (for an agreement test) whose first success is the answer."""
        model = self.resolve(stage)
        if k <= 1:
            answer = await model.complete(request)
            if answer.trace is not None:
                spans.append(answer.trace)
            return answer, (answer,) if k == 1 else ()
        results = await asyncio.gather(
            *(model.complete(request.with_changes(seed=sample_seed(request.seed, j))) for j in range(k)),
            return_exceptions=True,
        )
        ok = []
        for result in results:
            if isinstance(result, OrchestrayError):
                spans.append(failed_span(result, stage))
            elif isinstance(result, BaseException):
                raise result
            else:
                spans.append(result.trace) if result.trace is not None else None
                ok.append(result)
        if not ok:
            raise AllFailedError(f"stage {stage}", [r for r in results if isinstance(r, BaseException)])
        return ok[0], tuple(ok)

    async def _judge(self, request: ChatRequest, answer: Completion, spans: list) -> str | None:
        reply = candidate_text(answer.content, answer.tool_calls)
        asked = own_question(request, judge_score_prompt(request.last_user_text(), reply))
        try:
            reply = await self.resolve(self.judge).complete(asked)
        except OrchestrayError as err:
            spans.append(failed_span(err, self.judge))
            return None
        if reply.trace is not None:
            spans.append(reply.trace)
        return reply.content

    def _last_stage_alone(self, request: ChatRequest, answer: Completion, stages: list[dict]) -> float | None:
        last = self.stages[-1]
        for stage in stages:
            if stage["stage"] == last and not str(stage["decision"]).startswith("failed"):
                return stage["cost"]  # it ran: its real cost
        price = self.price_of(last)
        if price is None:
            return None
        # It did not run: what it would have cost for this prompt and an answer of this length.
        return price.cost(request.prompt_tokens(), answer.output_tokens)


def _extract_of(test: AcceptanceTest):
    """The extractor an agreement test compares samples with (None: `reply_answer`'s default)."""
    for part in (test, *getattr(test, "parts", ())):
        if getattr(part, "samples", 0) and hasattr(part, "extract"):
            return part.extract
    return None


def _cost(spans) -> float:
    return sum(s.total_cost() for s in spans)
