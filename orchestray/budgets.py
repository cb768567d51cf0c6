"""Spend caps per provider and per route, per hour or per day, kept for the whole cluster.

    spend_caps:
      gpt-mini: {per_hour: 2.0}              # US dollars spent through this provider in any hour
      cheap:    {per_hour: 1.0, per_day: 10}  # a route's cap counts everything its calls cost

The arithmetic is `policies.keycaps.SpendWindow` (a sliding window of recorded costs), the same
the gateway's per-key caps use. `SpendLedger` holds the windows: in this process for the local
runtime, in one named actor (`actors/spend.py`) on Ray, so every door and replica spends
from the same total. `SpendCappedModel` asks the ledger before each call and records what the
answer cost after it; a call made while a window is full raises `SpendCapError` (a 429 with
`retry-after` at HTTP, an error record in a batch). Calls admitted together may overshoot the cap
by what they cost: the cap is checked before a call's price is known.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestray.errors import SpendCapError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.policies.keycaps import SpendWindow

__all__ = ["SpendCap", "SpendLedger", "SpendCappedModel", "WINDOWS"]

WINDOWS = {"per_hour": 3600.0, "per_day": 86400.0}


class SpendCap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_hour: float | None = Field(default=None, gt=0, description="US dollars in any sliding hour")
    per_day: float | None = Field(default=None, gt=0, description="US dollars in any sliding 24 hours")

    @model_validator(mode="after")
    def _some(self) -> "SpendCap":
        if self.per_hour is None and self.per_day is None:
            raise ValueError("give per_hour, per_day or both")
        return self

    def caps(self) -> dict[str, float]:
        return {w: v for w in WINDOWS if (v := getattr(self, w)) is not None}


class SpendLedger:
    """The spend windows of every capped name; time is an argument (the actor passes its clock)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], SpendWindow] = {}

    def _window(self, name: str, window: str) -> SpendWindow:
        key = (name, window)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = SpendWindow(WINDOWS[window])
        return found

    def check(self, name: str, caps: dict[str, float], now: float) -> tuple[str, float, float] | None:
        """None when `name` may spend now, else (window, spent, seconds until it may)."""
        for window, cap in caps.items():
            w = self._window(name, window)
            spent = w.total(now)
            if spent >= cap:
                return window, spent, max(w.time_under(cap, now), 1.0)
        return None

    def add(self, name: str, caps: dict[str, float], cost: float, now: float) -> None:
        for window in caps:
            self._window(name, window).add(cost, now)

    def spent(self, name: str, window: str, now: float) -> float:
        return self._window(name, window).total(now)


class LocalLedger:
    """The ledger in this process (the local runtime, tests), with the async face of the actor's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.ledger = SpendLedger()
        self._clock = clock

    async def check(self, name: str, caps: dict[str, float]):
        return self.ledger.check(name, caps, self._clock())

    async def add(self, name: str, caps: dict[str, float], cost: float) -> None:
        self.ledger.add(name, caps, cost, self._clock())


class SpendCappedModel:
    """A provider or route behind its spend cap; everything else passes through to the model."""

    def __init__(self, name: str, model: Any, cap: SpendCap, ledger: Any):
        self.name = name
        self.model = model
        self.caps = cap.caps()
        self.ledger = ledger

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["model"], attr)

    def __repr__(self) -> str:
        return f"SpendCappedModel({self.model!r})"

    async def _admit(self) -> None:
        over = await self.ledger.check(self.name, self.caps)
        if over is not None:
            window, spent, wait = over
            raise SpendCapError(
                f"spend cap reached for {self.name!r}: ${spent:.4f} spent of ${self.caps[window]:g} "
                f"{window.replace('_', ' ')}; room again in {wait:.0f}s",
                name=self.name,
                retry_after=wait,
            )

    async def _spent(self, completion: Completion | None) -> None:
        if completion is not None and completion.cost > 0:
            await self.ledger.add(self.name, self.caps, completion.cost)

    async def complete(self, request: ChatRequest) -> Completion:
        await self._admit()
        completion = await self.model.complete(request)
        await self._spent(completion)
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        await self._admit()
        async for chunk in self.model.stream(request):
            if chunk.done:
                await self._spent(chunk.completion)
            yield chunk
