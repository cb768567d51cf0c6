"""What a provider reports: the metrics sink it calls, its stats snapshot, and its recent latencies."""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import msgspec

__all__ = ["ProviderMetrics", "ProviderStats"]


class ProviderMetrics(Protocol):
    """Where a provider reports each call; the actor plugs Ray metrics in, tests a recorder."""

    def call(self, provider: str, outcome: str, latency_s: float, input_tokens: int, output_tokens: int, cost: float) -> None: ...

    def rate_limited(self, provider: str) -> None: ...

    def retried(self, provider: str) -> None: ...


class _NoMetrics:
    def call(self, *args) -> None:
        pass

    def rate_limited(self, provider: str) -> None:
        pass

    def retried(self, provider: str) -> None:
        pass


class ProviderStats(msgspec.Struct, kw_only=True):
    name: str
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    rate_limited: int = 0
    retries: int = 0
    timeouts: int = 0
    in_flight: int = 0
    waiting: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    circuit: str = "closed"
    limit_rpm: float | None = None  # the limits in force: configured, lowered or learned from headers
    limit_tpm: float | None = None
    paused_s: float = 0.0  # how long admissions are held back still (after a 429 or an empty quota)



class _Latencies:
    """The latest call latencies, for percentiles (stats, and the hedging delay of a race)."""

    def __init__(self, keep: int = 4096):
        self._values: deque[float] = deque(maxlen=keep)
        self._sorted: list[float] | None = None

    def add(self, value: float) -> None:
        self._values.append(value)
        self._sorted = None

    def quantile(self, q: float, min_samples: int = 1) -> float | None:
        if len(self._values) < max(1, min_samples):
            return None
        if self._sorted is None:
            self._sorted = sorted(self._values)
        index = min(len(self._sorted) - 1, max(0, math.ceil(q * len(self._sorted)) - 1))
        return self._sorted[index]
