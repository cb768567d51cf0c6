"""First-come first-served admission of a provider's calls through its rate limiter."""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

from orchestray.policies.ratelimit import Permit, RateLimiter

__all__ = ["AdmissionGate"]


class AdmissionGate:
    """Lets calls through a `RateLimiter` in the order they arrived.

    asyncio.Lock wakes its waiters first-in first-out, so only the head of the line consults
    the limiter, sleeping until its turn; everyone behind it keeps their place.
    """

    def __init__(self, limiter: RateLimiter, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]):
        self.limiter = limiter
        self._clock = clock
        self._sleep = sleep
        self._line = asyncio.Lock()
        self._released = asyncio.Event()
        self.waiting = 0

    async def acquire(self, tokens: int, at_send: bool = False) -> Permit:
        self.waiting += 1
        joined = self._clock()
        try:
            async with self._line:
                while True:
                    now = self._clock()
                    wait = self.limiter.delay(tokens, now)
                    if wait <= 0:
                        return self.limiter.admit(tokens, now, waiting_since=joined, at_send=at_send)
                    if math.isinf(wait):
                        self._released.clear()
                        await self._released.wait()
                    else:
                        await self._sleep(wait)
        finally:
            self.waiting -= 1

    def release(self, permit: Permit, used_tokens: int | None) -> None:
        self.limiter.release(permit, used_tokens, self._clock())
        self._released.set()

    def sent(self, permit: Permit) -> None:
        """The call's request went out now: its window entry takes this time (see `at_send`)."""
        self.limiter.sent(permit, self._clock())
