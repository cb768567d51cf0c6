"""Ray metrics for provider calls: requests, tokens, cost, latency and rate-limit events."""

from __future__ import annotations

from ray.util import metrics

__all__ = ["RayProviderMetrics"]

_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


class RayProviderMetrics:
    """Exported by every Ray node's metrics agent (Prometheus), tagged by provider and outcome."""

    def __init__(self) -> None:
        self._requests = metrics.Counter(
            "orchestray_requests", "Provider calls, by outcome", tag_keys=("provider", "outcome")
        )
        self._tokens = metrics.Counter("orchestray_tokens", "Tokens used", tag_keys=("provider", "direction"))
        self._cost = metrics.Counter("orchestray_cost_usd", "Spend in US dollars", tag_keys=("provider",))
        self._latency = metrics.Histogram(
            "orchestray_latency_seconds", "Call latency", boundaries=_LATENCY_BOUNDARIES, tag_keys=("provider",)
        )
        self._rate_limited = metrics.Counter(
            "orchestray_rate_limited", "429 answers from the provider", tag_keys=("provider",)
        )
        self._retries = metrics.Counter("orchestray_retries", "Retried attempts", tag_keys=("provider",))

    def call(self, provider: str, outcome: str, latency_s: float, input_tokens: int, output_tokens: int, cost: float) -> None:
        self._requests.inc(1, {"provider": provider, "outcome": outcome})
        if outcome == "ok":
            self._latency.observe(latency_s, {"provider": provider})
            if input_tokens:
                self._tokens.inc(input_tokens, {"provider": provider, "direction": "input"})
            if output_tokens:
                self._tokens.inc(output_tokens, {"provider": provider, "direction": "output"})
            if cost:
                self._cost.inc(cost, {"provider": provider})

    def rate_limited(self, provider: str) -> None:
        self._rate_limited.inc(1, {"provider": provider})

    def retried(self, provider: str) -> None:
        self._retries.inc(1, {"provider": provider})
