"""Balance: spread calls over members (keys, deployments) in proportion to their free quota.

Each call goes to the member whose line would clear soonest: the calls this coordinator has
out with it, plus one, over its rate limit, plus however long it is still cooling down (after
a 429, an open circuit). So members get calls in proportion to their limits, a member that is
cooling down gets none, and one that fails hands the call on to the next best at once. The
members' limits (configured, or learned from their providers' headers) and cool-downs come
from their stats, refreshed in the background; what this coordinator sends fills the gaps.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Callable

from orchestray.errors import (
    AllFailedError,
    AuthenticationError,
    OrchestrayError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from orchestray.messages import ChatRequest, Chunk, Completion

from orchestray.coordinators._base import Coordinator, Resolve, fail_with, failed_span, finish

__all__ = ["BalanceCoordinator"]

# A member's own fault (its key, its quota, its deployment): another member may well answer.
_MEMBER_FAULTS = (RateLimitedError, ProviderUnavailableError, ProviderTimeoutError, AuthenticationError)
_COOL_S = 1.0  # how long a member that failed without saying how long gets no calls
_BAD_KEY_COOL_S = 60.0  # a refused key stays refused: try it again only now and then
_STATS_TIMEOUT_S = 2.0


class _Member:
    __slots__ = ("name", "rate", "outstanding", "cool_until")

    def __init__(self, name: str):
        self.name = name
        self.rate: float | None = None  # requests per second it is limited to; None: not known
        self.outstanding = 0
        self.cool_until = 0.0

    def clears_in(self, now: float, default_rate: float) -> float:
        """Seconds until one more call from here would go out, as far as this coordinator knows."""
        return (self.outstanding + 1) / (self.rate or default_rate) + max(0.0, self.cool_until - now)


class BalanceCoordinator(Coordinator):
    kind = "balance"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        providers: list[str],
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float = 1.0,
        rpm: dict[str, float | None] | None = None,
    ):
        super().__init__(name, resolve, clock)
        if not providers:
            raise ValueError("a balance needs at least one member")
        self.members = [_Member(p) for p in providers]
        # The configured limits, so the first calls already spread right (before any stats come).
        for member in self.members:
            limit = (rpm or {}).get(member.name)
            member.rate = limit / 60.0 if limit else None
        self.refresh_s = refresh_s
        self._refreshed_at = -float("inf")
        self._refreshing: asyncio.Task | None = None

    # --- choosing ------------------------------------------------------------------------------

    def choose(self, exclude: set[str]) -> _Member | None:
        """The member whose line clears soonest, of those not yet tried for this call."""
        now = self.clock()
        known = [m.rate for m in self.members if m.rate]
        default_rate = max(known) if known else 1.0  # unknown limits: treated as the largest known
        candidates = [m for m in self.members if m.name not in exclude]
        if not candidates:
            return None
        return min(candidates, key=lambda m: m.clears_in(now, default_rate))

    def _cool(self, member: _Member, err: OrchestrayError) -> None:
        wait = getattr(err, "retry_after", None) or (_BAD_KEY_COOL_S if isinstance(err, AuthenticationError) else _COOL_S)
        member.cool_until = max(member.cool_until, self.clock() + wait)

    def _refresh_soon(self) -> None:
        """Read the members' limits and cool-downs again, in the background, at most every refresh_s."""
        now = self.clock()
        if now - self._refreshed_at < self.refresh_s or (self._refreshing and not self._refreshing.done()):
            return
        self._refreshed_at = now
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        async def one(member: _Member) -> None:
            model = self.resolve(member.name)
            try:
                if hasattr(model, "stats"):  # a provider actor's handle
                    stats = await asyncio.wait_for(model.stats(), _STATS_TIMEOUT_S)
                elif hasattr(model, "snapshot"):  # a provider in this process
                    stats = model.snapshot()
                else:
                    return  # a member that is itself a route: only what this coordinator sees
            except Exception:
                return  # stale figures are better than none; the calls themselves report failure
            rpm = getattr(stats, "limit_rpm", None)
            member.rate = rpm / 60.0 if rpm else None
            cooling = getattr(stats, "paused_s", 0.0) or 0.0
            if getattr(stats, "circuit", "closed") == "open":
                cooling = max(cooling, _COOL_S)
            if cooling:
                member.cool_until = max(member.cool_until, self.clock() + cooling)

        await asyncio.gather(*(one(m) for m in self.members))

    # --- calling -------------------------------------------------------------------------------

    def _tries(self, request: ChatRequest):
        """(member, the request to send it), best first, each member once."""
        self._refresh_soon()
        tried: set[str] = set()
        while (member := self.choose(tried)) is not None:
            # Every member but the last fails fast, so a 429 moves on instead of backing off.
            last = len(tried) == len(self.members) - 1
            tried.add(member.name)
            yield member, request if last or request.max_retries is not None else request.with_changes(max_retries=0)

    def _failed(self, member: _Member, err: OrchestrayError, spans: list, causes: list) -> None:
        self._cool(member, err)
        causes.append(err)
        spans.append(failed_span(err, member.name))

    def _exhausted(self, spans: list, causes: list, started: float) -> OrchestrayError:
        return fail_with(AllFailedError(f"balance {self.name}", causes), self.kind, self.name, spans,
                         "every member failed", self.clock() - started)

    async def complete(self, request: ChatRequest) -> Completion:
        started, spans, causes = self.clock(), [], []
        for member, asked in self._tries(request):
            member.outstanding += 1
            try:
                answer = await self.resolve(member.name).complete(asked)
            except _MEMBER_FAULTS as err:
                self._failed(member, err, spans, causes)
                continue
            finally:
                member.outstanding -= 1
            return self._finish(answer, member.name, spans, started)
        raise self._exhausted(spans, causes, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The chosen member's stream; a member failing before its first chunk hands it on."""
        started, spans, causes = self.clock(), [], []
        for member, asked in self._tries(request):
            member.outstanding += 1
            sent = False
            try:
                async for chunk in self.resolve(member.name).stream(asked):
                    if chunk.done and chunk.completion is not None:
                        chunk = Chunk(done=True, completion=self._finish(chunk.completion, member.name, spans, started))
                    sent = True
                    yield chunk
                return
            except _MEMBER_FAULTS as err:
                if sent:
                    raise
                self._failed(member, err, spans, causes)
            finally:
                member.outstanding -= 1
        raise self._exhausted(spans, causes, started)

    def _finish(self, answer: Completion, name: str, spans: list, started: float) -> Completion:
        decision = f"{name} had the most free quota" + (
            f" after {len(spans)} failed: " + "; ".join(f"{s.name}: {s.error}" for s in spans) if spans else ""
        )
        trace = [answer.trace] if answer.trace is not None else []
        return finish(self.kind, self.name, answer, spans + trace, decision, self.clock() - started,
                      data={"answered_by": name})
