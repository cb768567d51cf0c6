"""Per-model request and token quotas, enforced the way providers do: per minute, over one second.

Each limit is a token bucket refilling continuously at limit/60 per second and holding one
second's worth (at least 1), so a client bursting a minute's quota at once is turned away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestray.policies.ratelimit import TokenBucket

__all__ = ["Quotas", "QuotaState", "Rejection"]


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One limit as the rate-limit headers report it."""

    kind: str  # "requests" | "tokens"
    limit: int  # per minute
    remaining: int  # what could go out now
    reset_s: float  # until the bucket is full again


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: str  # the limit that said no: "requests" | "tokens"
    retry_after_s: float


def _bucket(per_minute: int | None, now: float) -> TokenBucket | None:
    if per_minute is None:
        return None
    rate = per_minute / 60.0
    return TokenBucket(rate, max(1.0, rate), now)


class _ModelQuota:
    __slots__ = ("requests", "tokens")

    def __init__(self, rpm: int | None, tpm: int | None, now: float):
        self.requests = _bucket(rpm, now)
        self.tokens = _bucket(tpm, now)


class Quotas:
    """The buckets of every model seen, keyed by model name (providers limit per model)."""

    __slots__ = ("rpm", "tpm", "_models")

    def __init__(self, rpm: int | None, tpm: int | None):
        self.rpm = rpm
        self.tpm = tpm
        self._models: dict[str, _ModelQuota] = {}

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None

    def too_large(self, tokens: int) -> bool:
        """A request no amount of waiting admits: more tokens than a whole minute's quota."""
        return self.tpm is not None and tokens > self.tpm

    def _quota(self, model: str, now: float) -> _ModelQuota:
        quota = self._models.get(model)
        if quota is None:
            quota = self._models[model] = _ModelQuota(self.rpm, self.tpm, now)
        return quota

    def admit(self, model: str, tokens: int, now: float) -> Rejection | None:
        """Take one request and `tokens` for `model`; None when admitted, else why and how long."""
        if self.unlimited:
            return None
        quota = self._quota(model, now)
        requests, bucket = quota.requests, quota.tokens
        if requests is not None and not requests.try_take(1, now):
            return Rejection("requests", requests.time_until(1, now))
        if bucket is not None and not bucket.try_take(tokens, now):
            if requests is not None:
                requests.refund(1, now)
            return Rejection("tokens", bucket.time_until(tokens, now))
        return None

    def refund_tokens(self, model: str, tokens: int, now: float) -> None:
        if tokens > 0 and self.tpm is not None:
            bucket = self._quota(model, now).tokens
            if bucket is not None:
                bucket.refund(tokens, now)

    def states(self, model: str, now: float) -> list[QuotaState]:
        if self.unlimited:
            return []
        quota = self._quota(model, now)
        states = []
        limits = (("requests", self.rpm, quota.requests), ("tokens", self.tpm, quota.tokens))
        for kind, limit, bucket in limits:
            if bucket is not None and limit is not None:
                level = bucket.level(now)
                remaining = max(0, math.floor(level))
                states.append(QuotaState(kind, limit, remaining, (bucket.capacity - level) / bucket.rate))
        return states
