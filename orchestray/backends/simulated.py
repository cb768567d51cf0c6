"""The simulated backend: a `SimulatedModel` answering in-process after its simulated latency."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable

from orchestray.backends import refuse_unsupported
from orchestray.backends._reply import Reply
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest, Choice, Chunk, ToolCallDelta
from orchestray.simulated import SUPPORTED_FIELDS, SimAnswer, SimProfile, SimulatedModel, stream_pieces

__all__ = ["SimulatedBackend"]

_STREAM_PIECES = 4


class SimulatedBackend:
    def __init__(self, config: ProviderConfig, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        sim = config.simulated
        assert sim is not None, "ProviderConfig fills `simulated` for kind: simulated"
        profile = SimProfile(
            accuracy=sim.accuracy,
            latency_ms=sim.latency_ms,
            latency_sigma=sim.latency_sigma,
            ms_per_output_token=sim.ms_per_output_token,
        )
        # The provider's name keys the randomness: two providers with one profile draw apart.
        self.model = SimulatedModel(config.name, profile, seed=sim.seed)
        self._provider = config.name
        self._model_name = config.model
        self._sleep = sleep

    def _answers(self, request: ChatRequest) -> list[SimAnswer]:
        refuse_unsupported(request, self._provider, "simulated", SUPPORTED_FIELDS)
        return self.model.answers(request)

    async def complete(self, request: ChatRequest) -> Reply:
        answers = self._answers(request)
        latency_s = max(a.latency_s for a in answers)
        if latency_s > 0:
            await self._sleep(latency_s)
        return self._reply(answers)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Chunk | Reply]:
        """Text of the first choice as str; tool-call pieces and other choices as `Chunk`s."""
        answers = self._answers(request)
        latency_s = max(a.latency_s for a in answers)
        # Half the latency before the first token, the rest spread over the pieces.
        if latency_s > 0:
            await self._sleep(latency_s / 2)
        per_choice = [_pieces(a, i) for i, a in enumerate(answers)]
        for round_ in range(max(len(p) for p in per_choice)):
            if latency_s > 0:
                await self._sleep(latency_s / 2 / _STREAM_PIECES)
            for pieces in per_choice:
                if round_ < len(pieces):
                    yield pieces[round_]
        yield self._reply(answers)

    def _reply(self, answers: list[SimAnswer]) -> Reply:
        first = answers[0]
        more = tuple(
            Choice(index=i, content=a.text, tool_calls=a.tool_calls, logprobs=a.logprobs, finish_reason=a.finish_reason)
            for i, a in enumerate(answers[1:], 1)
        )
        return Reply(
            first.text,
            first.input_tokens,
            sum(a.output_tokens for a in answers),  # as OpenAI counts n choices
            first.finish_reason,
            self._model_name,
            tool_calls=first.tool_calls,
            logprobs=first.logprobs,
            more_choices=more,
        )

    async def close(self) -> None:
        return None


def _pieces(answer: SimAnswer, choice: int) -> list[str | Chunk]:
    """One choice's stream: text deltas, or each tool call's opening piece then its arguments."""
    if answer.tool_calls:
        pieces: list[str | Chunk] = []
        for index, call in enumerate(answer.tool_calls):
            pieces.append(Chunk(choice=choice, tool_calls=(ToolCallDelta(index, call.id, call.name),)))
            pieces += [
                Chunk(choice=choice, tool_calls=(ToolCallDelta(index, arguments=part),))
                for part in stream_pieces(call.arguments, _STREAM_PIECES - 1)
            ]
        return pieces
    texts = stream_pieces(answer.text, _STREAM_PIECES)
    return list(texts) if choice == 0 else [Chunk(choice=choice, delta=t) for t in texts]
