"""Ensemble: parallel calls (samples of one provider, or several providers) and a vote.

Votes: majority (with a stated tie rule), weighted by provider, a judge model picking the best
reply, or an aggregator model merging all replies (Mixture-of-Agents). The agreement ratio is
the ensemble's confidence. Failed calls do not vote; below `quorum` valid answers it fails.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable, Mapping

from orchestray.errors import AllFailedError, OrchestrayError
from orchestray.messages import ChatRequest, Completion
from orchestray.policies.extraction import Extractor, reply_answer
from orchestray.policies.voting import (
    Answer,
    aggregator_prompt,
    candidate_text,
    judge_prompt,
    judged_vote,
    majority_vote,
    parse_best,
    weighted_vote,
)

from orchestray.coordinators._base import (
    Coordinator,
    Resolve,
    ask_in_turn,
    fail_with,
    failed_span,
    finish,
    own_question,
    sample_seed,
)

__all__ = ["EnsembleCoordinator", "sample_seed"]

VOTES = ("majority", "weighted", "judge", "aggregate")


class EnsembleCoordinator(Coordinator):
    kind = "ensemble"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        providers: list[str],
        *,
        samples: int = 1,
        temperature: float | None = None,
        vote: str = "majority",
        tie: str = "first",
        weights: Mapping[str, float] | None = None,
        judge: str | None = None,
        extract: Extractor | None = None,  # None: the reply's answer, or its canonical JSON
        quorum: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(name, resolve, clock)
        if vote not in VOTES:
            raise ValueError(f"unknown vote {vote!r}; use {', '.join(VOTES)}")
        if vote in ("judge", "aggregate") and not judge:
            raise ValueError(f"vote: {vote} needs a `judge` model")
        self.providers = list(providers)
        self.samples = samples
        self.temperature = temperature
        self.vote = vote
        self.tie = tie
        self.weights = dict(weights or {})
        self.judge = judge
        self.extract = extract
        self.quorum = quorum

    def _requests(self, request: ChatRequest) -> list[tuple[str, ChatRequest]]:
        calls = []
        for provider in self.providers:
            for i in range(self.samples):
                changes = {}
                if self.temperature is not None:
                    changes["temperature"] = self.temperature
                if self.samples > 1:
                    changes["seed"] = sample_seed(request.seed, i)
                calls.append((provider, request.with_changes(**changes) if changes else request))
        return calls

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        calls = self._requests(request)
        results = await asyncio.gather(*(self.resolve(p).complete(r) for p, r in calls), return_exceptions=True)
        spans, causes, answers, completions = [], [], [], []
        wants_json = request.response_format is not None and request.response_format.wants_json
        for (provider, _), result in zip(calls, results):
            if isinstance(result, BaseException):
                if not isinstance(result, (OrchestrayError, asyncio.CancelledError)):
                    raise result
                causes.append(result)
                spans.append(failed_span(result, provider))
                continue
            if result.trace is not None:
                spans.append(result.trace)
            key = reply_answer(self.extract, result.content, result.tool_calls, wants_json=wants_json)
            answers.append(Answer(key, provider, result.cost, candidate_text(result.content, result.tool_calls)))
            completions.append(result)
        if not completions:
            raise fail_with(AllFailedError(f"ensemble {self.name}", causes), self.kind, self.name, spans,
                            "every call failed", self.clock() - started)
        quorum = self.quorum or 1
        rng = random.Random(request.seed or 0) if self.tie == "random" else None
        question = request.last_user_text()
        merged = None
        if self.vote == "weighted":
            result = weighted_vote(answers, self.weights, tie=self.tie, quorum=quorum, rng=rng)
        elif self.vote == "judge":
            # The judge answers "Best: N" in text, whatever the caller asked the members for.
            asked = own_question(request, judge_prompt(question, [a.text for a in answers]))
            reply = await self._ask_model(self.judge, asked, spans)
            result = judged_vote(answers, parse_best(reply.content, len(answers)) if reply else None, tie=self.tie, quorum=quorum, rng=rng)
        else:
            result = majority_vote(answers, tie=self.tie, quorum=quorum, rng=rng)
            if self.vote == "aggregate":
                # The aggregate is the answer: it is asked as the caller asked (tools, JSON).
                structured = wants_json or bool(request.tools)
                prompt = aggregator_prompt(question, [a.text for a in answers], structured=structured)
                merged = await self._ask_model(self.judge, ask_in_turn(request, prompt), spans)
        data = {
            "vote": self.vote,
            "counts": dict(result.counts),
            "agreement": round(result.agreement, 4),
            "valid": result.valid,
            "failed": len(causes),
            "answers": [_answer_record(a, c) for a, c in zip(answers, completions)],
        }
        if result.winner is None and merged is None:
            why = result.reason or ("quorum not met" if not result.quorum_met else "no winner")
            err = AllFailedError(f"ensemble {self.name}: {why}", causes)
            raise fail_with(err, self.kind, self.name, spans, why, self.clock() - started)
        winner = completions[answers.index(result.winner_answer)] if result.winner_answer is not None else completions[0]
        decision = result.reason or f"{self.vote}: {result.winner!r}"
        if merged is not None:
            winner = merged
            key = reply_answer(self.extract, merged.content, merged.tool_calls, wants_json=wants_json)
            data["aggregate"] = _answer_record(Answer(key, self.judge or "", merged.cost), merged)
            decision = f"aggregate by {self.judge} over {result.reason or 'the replies'}"
        return finish(self.kind, self.name, winner, spans, decision, self.clock() - started,
                      data=data, confidence=result.agreement)

    async def _ask_model(self, name: str | None, asked: ChatRequest, spans: list) -> Completion | None:
        """Call the judge or aggregator; its failure degrades to the plain majority."""
        assert name is not None
        try:
            reply = await self.resolve(name).complete(asked)
        except OrchestrayError as err:
            spans.append(failed_span(err, name))
            return None
        if reply.trace is not None:
            spans.append(reply.trace)
        return reply


def _answer_record(answer: Answer, reply: Completion) -> dict:
    """One reply in the trace: its vote key, and its tool calls in canonical form when it made any."""
    record = {"provider": answer.provider, "answer": answer.value, "cost": answer.cost}
    if reply.tool_calls:
        record["tool_calls"] = [c.canonical() for c in reply.tool_calls]
    return record
