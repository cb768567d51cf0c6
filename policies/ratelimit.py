"""Rate limiting as pure arithmetic: token buckets, and a limiter deciding when a call may go.

Time is always an argument (seconds on any monotonic clock); nothing here sleeps. The async
gate that waits on these decisions lives with the provider (`orchestray.provider`).

Providers state limits per minute but enforce them over short windows (a per-minute limit
enforced per second), so a bucket refills continuously at limit/60 per second and holds only a
fraction of a second's worth: a client that bursts a whole minute's quota at once is rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestray.errors import RequestTooLargeError

__all__ = ["TokenBucket", "Limits", "Permit", "RateLimiter"]

_EPSILON = 1e-9


class TokenBucket:
    """A bucket of `capacity` refilling at `rate_per_s`.

    A take succeeds when the level covers `min(amount, capacity)`; the level may then go
    negative (debt). So a request larger than the burst still passes, and the debt holds the
    following ones back: the long-run rate stays exact whatever the sizes.
    """

    __slots__ = ("rate", "capacity", "_level", "_stamp")

    def __init__(self, rate_per_s: float, capacity: float, now: float):
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = float(rate_per_s)
        self.capacity = float(capacity)
        self._level = float(capacity)
        self._stamp = now

    def level(self, now: float) -> float:
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._level

    def time_until(self, amount: float, now: float) -> float:
        """Seconds until `try_take(amount)` would succeed (0 when it would now)."""
        missing = min(amount, self.capacity) - self.level(now)
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def try_take(self, amount: float, now: float) -> bool:
        if self.time_until(amount, now) > 0:
            return False
        self._level -= amount
        return True

    def refund(self, amount: float, now: float) -> None:
        """Give back tokens taken but not used (a shorter answer than budgeted, a cancel)."""
        self._level = min(self.capacity, self.level(now) + amount)

    def charge(self, amount: float, now: float) -> None:
        """Take tokens unconditionally (usage above the estimate)."""
        self._level = self.level(now) - amount

    def drain(self, now: float) -> None:
        """Empty the bucket (not into debt): after a rejection, start again from nothing."""
        self._level = min(self.level(now), 0.0)


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's limits. None means unlimited.

    `burst_s` is how many seconds of quota may go out at once; `headroom` is the fraction of the
    stated limit to aim at, leaving room for clocks and networks that do not agree exactly.
    """

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    burst_s: float = 0.25
    headroom: float = 0.99
    max_pause_s: float = 60.0


class Permit:
    """What one admitted call holds: its token estimate, to be reconciled on release."""

    __slots__ = ("tokens", "released")

    def __init__(self, tokens: int):
        self.tokens = tokens
        self.released = False


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets, a concurrency cap, and back-off.

    The caller asks `delay(tokens, now)`: 0 means `admit` now, a positive number means wait that
    long and ask again, `math.inf` means wait until a call is released. Waiters are served in
    order by the caller asking only for the head of its queue.
    """

    __slots__ = ("limits", "_requests", "_tokens", "in_flight", "paused_until", "_slowdown", "_slow_at")

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self._requests = self._bucket(limits.rpm, now)
        self._tokens = self._bucket(limits.tpm, now)
        self.in_flight = 0
        self.paused_until = -math.inf
        # After 429s the refill slows to this factor of the limit and recovers over time.
        self._slowdown = 1.0
        self._slow_at = now

    def _bucket(self, per_minute: float | None, now: float) -> TokenBucket | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0 * self.limits.headroom
        return TokenBucket(rate, max(1.0, rate * self.limits.burst_s), now)

    def validate(self, tokens: int) -> None:
        """Fail at once for a call that can never fit, rather than let it wait forever."""
        tpm = self.limits.tpm
        if tpm is not None and tokens > tpm:
            raise RequestTooLargeError(
                f"request needs about {tokens} tokens (prompt plus max_tokens), more than the "
                f"provider's limit of {int(tpm)} tokens per minute; lower max_tokens or the prompt"
            )

    def delay(self, tokens: int, now: float) -> float:
        cap = self.limits.max_concurrency
        if cap is not None and self.in_flight >= cap:
            return math.inf
        if now < self.paused_until:
            return self.paused_until - now
        self._apply_slowdown(now)
        wait = 0.0
        if self._requests is not None:
            wait = self._requests.time_until(1, now)
        if self._tokens is not None:
            wait = max(wait, self._tokens.time_until(tokens, now))
        return wait

    def admit(self, tokens: int, now: float) -> Permit:
        if self._requests is not None:
            self._requests.charge(1, now)
        if self._tokens is not None:
            self._tokens.charge(tokens, now)
        self.in_flight += 1
        return Permit(tokens)

    def release(self, permit: Permit, used_tokens: int | None, now: float) -> None:
        """End a call. `used_tokens` is the reported usage; None when unknown (keep the estimate)."""
        if permit.released:
            return
        permit.released = True
        self.in_flight -= 1
        if self._tokens is not None and used_tokens is not None:
            difference = permit.tokens - used_tokens
            if difference > 0:
                self._tokens.refund(difference, now)
            elif difference < 0:
                self._tokens.charge(-difference, now)

    def on_rate_limited(self, retry_after: float | None, now: float) -> None:
        """A 429 came back: pause for what the provider asked, and slow the refill for a while."""
        pause = min(retry_after if retry_after is not None else 1.0, self.limits.max_pause_s)
        self.paused_until = max(self.paused_until, now + pause)
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.drain(now)
        self._apply_slowdown(now)
        self._slowdown = max(0.5, self._slowdown * 0.9)
        self._slow_at = now

    def on_quota(self, remaining: int | None, reset_s: float | None, now: float) -> None:
        """The provider reported a quota (remaining calls or tokens) exhausted until `reset_s`.

        Short resets are the per-second enforcement our own pacing already follows; a long one
        (a daily cap, another client on the same key) pauses admissions until it passes.
        """
        if remaining == 0 and reset_s is not None and reset_s > 1.0:
            self.paused_until = max(self.paused_until, now + min(reset_s, self.limits.max_pause_s))

    def _apply_slowdown(self, now: float) -> None:
        if self._slowdown < 1.0:
            # Recover one percent of the limit per second without a further 429.
            self._slowdown = min(1.0, self._slowdown + 0.01 * (now - self._slow_at))
            self._slow_at = now
        for bucket, per_minute in ((self._requests, self.limits.rpm), (self._tokens, self.limits.tpm)):
            if bucket is not None and per_minute is not None:
                bucket.level(now)  # settle the refill at the old rate before changing it
                bucket.rate = per_minute / 60.0 * self.limits.headroom * self._slowdown
