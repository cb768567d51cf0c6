"""Per-key caps at the gateway: a request rate and a spend over a sliding hour, as pure arithmetic.

    admit(key, now) ──▶ 0.0               the request may go (one request token taken)
                    └─▶ seconds > 0       over the spend cap or the request rate: retry after

Time comes in as an argument, so tests move a fake clock; the gateway's `KeyQuota` actor is a
thin shell that passes `time.monotonic()` and is shared by every replica (exact caps).
"""

from __future__ import annotations

from collections import deque

from orchestray.policies.ratelimit import TokenBucket

__all__ = ["SpendWindow", "KeyCaps"]


class SpendWindow:
    """What one key spent in the last `window_s` seconds, kept as (time, cost) in time order."""

    __slots__ = ("window_s", "_entries", "_total")

    def __init__(self, window_s: float = 3600.0):
        if window_s <= 0:
            raise ValueError("a spend window needs a positive length")
        self.window_s = float(window_s)
        self._entries: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def _expire(self, now: float) -> None:
        while self._entries and now - self._entries[0][0] >= self.window_s:
            self._total -= self._entries.popleft()[1]
        if not self._entries:
            self._total = 0.0  # no float residue from the subtractions

    def total(self, now: float) -> float:
        self._expire(now)
        return self._total

    def add(self, cost: float, now: float) -> None:
        if cost > 0:
            self._entries.append((now, cost))
            self._total += cost

    def time_under(self, cap: float, now: float) -> float:
        """Seconds until the spend in the window falls below `cap` (0 when it is below now)."""
        remaining = self.total(now)
        for stamp, cost in self._entries:
            if remaining < cap:
                break
            remaining -= cost
            until = self.window_s - (now - stamp)
            if remaining < cap:
                return until
        return 0.0

    def __len__(self) -> int:
        return len(self._entries)


class KeyCaps:
    """The caps of every key: `requests_per_minute` (a token bucket, one minute's share as burst)
    and `spend_per_hour` (a sliding hour of recorded costs). Either may be None: no such cap."""

    __slots__ = ("requests_per_minute", "spend_per_hour", "_buckets", "_spend")

    def __init__(self, requests_per_minute: float | None, spend_per_hour: float | None):
        for name, value in (("requests_per_minute", requests_per_minute), ("spend_per_hour", spend_per_hour)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, or None for no cap")
        self.requests_per_minute = requests_per_minute
        self.spend_per_hour = spend_per_hour
        self._buckets: dict[str, TokenBucket] = {}
        self._spend: dict[str, SpendWindow] = {}

    def admit(self, key_id: str, now: float) -> float:
        """0.0 when this key's request may go now (it takes one request), else seconds to wait.
        A key over its spend is refused before its request rate is touched."""
        if self.spend_per_hour is not None:
            window = self._spend.get(key_id)
            if window is not None:
                wait = window.time_under(self.spend_per_hour, now)
                if not window:
                    del self._spend[key_id]  # idle keys leave nothing behind
                if wait > 0:
                    return wait
        if self.requests_per_minute is not None:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                rate = self.requests_per_minute / 60.0
                bucket = self._buckets[key_id] = TokenBucket(rate, max(1.0, rate), now)
            if not bucket.try_take(1, now):
                return bucket.time_until(1, now)
        return 0.0

    def spend(self, key_id: str, cost: float, now: float) -> None:
        """Record what an answer for this key cost (after the answer: a request is admitted on
        what was spent before it)."""
        if self.spend_per_hour is not None and cost > 0:
            self._spend.setdefault(key_id, SpendWindow()).add(cost, now)
