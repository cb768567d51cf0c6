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
from orchestray.messages import ChatRequest, Completion, Message
from orchestray.policies.extraction import Extractor, extractor
from orchestray.policies.voting import (
    Answer,
    aggregator_prompt,
    judge_prompt,
    judged_vote,
    majority_vote,
    parse_best,
    weighted_vote,
)

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish

__all__ = ["EnsembleCoordinator", "sample_seed"]

VOTES = ("majority", "weighted", "judge", "aggregate")


def sample_seed(seed: int | None, index: int) -> int:
    """A distinct, reproducible seed per sample, so samples of one prompt differ."""
    return ((seed or 0) * 1_000_003 + index * 7_919 + 1) % (2**31)


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
        extract: Extractor | None = None,
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
        self.extract = extract or extractor("answer")
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
        for (provider, _), result in zip(calls, results):
            if isinstance(result, BaseException):
                if not isinstance(result, (OrchestrayError, asyncio.CancelledError)):
                    raise result
                causes.append(result)
                spans.append(failed_span(result, provider))
                continue
            if result.trace is not None:
                spans.append(result.trace)
            answers.append(Answer(self.extract(result.content), provider, result.cost, result.content))
            completions.append(result)
        if not completions:
            raise fail_with(AllFailedError(f"ensemble {self.name}", causes), self.kind, self.name, spans,
                            "every call failed", self.clock() - started)
        quorum = self.quorum or 1
        rng = random.Random(request.seed or 0) if self.tie == "random" else None
        question = request.last_user_text()
        content = None
        if self.vote == "weighted":
            result = weighted_vote(answers, self.weights, tie=self.tie, quorum=quorum, rng=rng)
        elif self.vote == "judge":
            reply = await self._ask_model(self.judge, judge_prompt(question, [a.text for a in answers]), request, spans)
            result = judged_vote(answers, parse_best(reply.content, len(answers)) if reply else None, tie=self.tie, quorum=quorum, rng=rng)
        else:
            result = majority_vote(answers, tie=self.tie, quorum=quorum, rng=rng)
            if self.vote == "aggregate":
                reply = await self._ask_model(self.judge, aggregator_prompt(question, [a.text for a in answers]), request, spans)
                if reply is not None:
                    content = reply.content
        data = {
            "vote": self.vote,
            "counts": dict(result.counts),
            "agreement": round(result.agreement, 4),
            "valid": result.valid,
            "failed": len(causes),
            "answers": [{"provider": a.provider, "answer": a.value, "cost": a.cost} for a in answers],
        }
        if result.winner is None and content is None:
            why = result.reason or ("quorum not met" if not result.quorum_met else "no winner")
            err = AllFailedError(f"ensemble {self.name}: {why}", causes)
            raise fail_with(err, self.kind, self.name, spans, why, self.clock() - started)
        winner = completions[answers.index(result.winner_answer)] if result.winner_answer is not None else completions[0]
        decision = result.reason or f"{self.vote}: {result.winner!r}"
        return finish(self.kind, self.name, winner, spans, decision, self.clock() - started,
                      data=data, content=content, confidence=result.agreement)

    async def _ask_model(self, name: str | None, prompt: str, request: ChatRequest, spans: list) -> Completion | None:
        """Call the judge or aggregator; its failure degrades to the plain majority."""
        assert name is not None
        asked = ChatRequest(messages=(Message("user", prompt),), max_tokens=request.max_tokens, request_id=request.request_id)
        try:
            reply = await self.resolve(name).complete(asked)
        except OrchestrayError as err:
            spans.append(failed_span(err, name))
            return None
        if reply.trace is not None:
            spans.append(reply.trace)
        return reply
