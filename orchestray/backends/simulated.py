"""The simulated backend: a `SimulatedModel` answering in-process after its simulated latency."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable

from orchestray.backends._reply import Reply
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest
from orchestray.simulated import SimProfile, SimulatedModel

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
        self._model_name = config.model
        self._sleep = sleep

    async def complete(self, request: ChatRequest) -> Reply:
        answer = self.model.answer(request)
        if answer.latency_s > 0:
            await self._sleep(answer.latency_s)
        return Reply(answer.text, answer.input_tokens, answer.output_tokens, answer.finish_reason, self._model_name)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Reply]:
        answer = self.model.answer(request)
        # Half the latency before the first token, the rest spread over the pieces.
        if answer.latency_s > 0:
            await self._sleep(answer.latency_s / 2)
        text = answer.text
        step = max(1, -(-len(text) // _STREAM_PIECES))
        for start in range(0, len(text), step):
            if answer.latency_s > 0:
                await self._sleep(answer.latency_s / 2 / _STREAM_PIECES)
            yield text[start : start + step]
        yield Reply(text, answer.input_tokens, answer.output_tokens, answer.finish_reason, self._model_name)

    async def close(self) -> None:
        return None
