"""Per-model request and token quotas, enforced the way providers do: per minute, over one second.

A limit of R per minute allows R/60 in one second, counted one of three ways (`LIMIT_MODES`),
since providers do not say which they use:

  bucket    a token bucket refilling continuously at R/60 a second, holding one second's worth
  sliding   at most R/60 in any one second (a log of what was admitted over the last second)
  fixed     at most R/60 in each calendar second (a counter reset on the second)

Sliding and fixed windows count whole requests, so their per-second allowance is R/60 rounded
down (at least 1). A request larger than a whole window's allowance goes only into an empty
window, and a bucket lets it through as debt: no amount of waiting would admit it otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestray.policies.ratelimit import TokenBucket, WindowLog

__all__ = ["Quotas", "QuotaState", "Rejection", "LIMIT_MODES"]

LIMIT_MODES = ("sliding", "fixed", "bucket")
_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One limit as the rate-limit headers report it."""

    kind: str  # "requests" | "tokens"
    limit: int  # per minute
    remaining: int  # what could go out now
    reset_s: float  # until the quota is whole again


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: str  # the limit that said no: "requests" | "tokens"
    retry_after_s: float


class _Bucket:
    """A one-second token bucket (debt allowed for a take larger than it holds)."""

    __slots__ = ("bucket",)

    def __init__(self, per_second: float, now: float):
        self.bucket = TokenBucket(per_second, max(1.0, per_second), now)

    def try_take(self, amount: int, now: float) -> float:
        """0 when taken, else the seconds until it would be."""
        wait = self.bucket.time_until(amount, now)
        if wait <= 0:
            self.bucket.charge(amount, now)
        return wait

    def refund(self, amount: int, admitted_at: float, now: float) -> None:
        self.bucket.refund(amount, now)

    def state(self, now: float) -> tuple[int, float]:
        level = self.bucket.level(now)
        return max(0, math.floor(level)), max(0.0, (self.bucket.capacity - level) / self.bucket.rate)


class _Sliding:
    """At most `allowance` admitted in any window of one second."""

    __slots__ = ("allowance", "log")

    def __init__(self, per_second: float, now: float):
        self.allowance = max(1, math.floor(per_second))
        self.log = WindowLog(_WINDOW_S)

    def try_take(self, amount: int, now: float) -> float:
        wait = self.log.time_until(amount, self.allowance, now)
        if wait <= 0:
            self.log.add(amount, now)
        return wait

    def refund(self, amount: int, admitted_at: float, now: float) -> None:
        self.log.refund(amount, admitted_at, now)

    def state(self, now: float) -> tuple[int, float]:
        return max(0, math.floor(self.allowance - self.log.used(now))), max(0.0, self.log.empty_in(now))


class _Fixed:
    """At most `allowance` admitted in each calendar second of the clock."""

    __slots__ = ("allowance", "_window", "_used")

    def __init__(self, per_second: float, now: float):
        self.allowance = max(1, math.floor(per_second))
        self._window = math.floor(now / _WINDOW_S)
        self._used = 0

    def _roll(self, now: float) -> None:
        window = math.floor(now / _WINDOW_S)
        if window != self._window:
            self._window, self._used = window, 0

    def try_take(self, amount: int, now: float) -> float:
        self._roll(now)
        if self._used + amount <= self.allowance or self._used == 0:
            self._used += amount
            return 0.0
        return max(1e-6, (self._window + 1) * _WINDOW_S - now)

    def refund(self, amount: int, admitted_at: float, now: float) -> None:
        self._roll(now)
        if math.floor(admitted_at / _WINDOW_S) == self._window:
            self._used = max(0, self._used - amount)

    def state(self, now: float) -> tuple[int, float]:
        self._roll(now)
        reset = (self._window + 1) * _WINDOW_S - now if self._used else 0.0
        return max(0, self.allowance - self._used), reset


_SHAPES = {"bucket": _Bucket, "sliding": _Sliding, "fixed": _Fixed}


class _ModelQuota:
    __slots__ = ("requests", "tokens")

    def __init__(self, mode: str, rpm: int | None, tpm: int | None, now: float):
        shape = _SHAPES[mode]
        self.requests = shape(rpm / 60.0, now) if rpm is not None else None
        self.tokens = shape(tpm / 60.0, now) if tpm is not None else None


class Quotas:
    """The limits of every model seen, keyed by model name (providers limit per model)."""

    __slots__ = ("rpm", "tpm", "mode", "_models")

    def __init__(self, rpm: int | None, tpm: int | None, mode: str = "bucket"):
        if mode not in _SHAPES:
            raise ValueError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, got {mode!r}")
        self.rpm = rpm
        self.tpm = tpm
        self.mode = mode
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
            quota = self._models[model] = _ModelQuota(self.mode, self.rpm, self.tpm, now)
        return quota

    def admit(self, model: str, tokens: int, now: float) -> Rejection | None:
        """Take one request and `tokens` for `model`; None when admitted, else why and how long."""
        if self.unlimited:
            return None
        quota = self._quota(model, now)
        requests, bucket = quota.requests, quota.tokens
        if requests is not None:
            wait = requests.try_take(1, now)
            if wait > 0:
                return Rejection("requests", wait)
        if bucket is not None:
            wait = bucket.try_take(tokens, now)
            if wait > 0:
                if requests is not None:
                    requests.refund(1, now, now)
                return Rejection("tokens", wait)
        return None

    def refund_tokens(self, model: str, tokens: int, admitted_at: float, now: float) -> None:
        """Give back tokens a request admitted at `admitted_at` reserved and did not use."""
        if tokens > 0 and self.tpm is not None:
            bucket = self._quota(model, now).tokens
            if bucket is not None:
                bucket.refund(tokens, admitted_at, now)

    def states(self, model: str, now: float) -> list[QuotaState]:
        if self.unlimited:
            return []
        quota = self._quota(model, now)
        states = []
        limits = (("requests", self.rpm, quota.requests), ("tokens", self.tpm, quota.tokens))
        for kind, limit, shape in limits:
            if shape is not None and limit is not None:
                remaining, reset_s = shape.state(now)
                states.append(QuotaState(kind, limit, remaining, reset_s))
        return states
