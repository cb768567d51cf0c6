"""Which failed calls to try again, and how long to wait first: the one retry policy.

Retry 408, 409, 429, 5xx, timeouts and broken connections; never a bad request or a bad key.
A provider's `retry-after` is honoured up to a cap; otherwise exponential backoff with jitter.
The tenacity adapters at the bottom let the provider's single retry loop use this policy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import tenacity

from orchestray.errors import ProviderError, RateLimitedError

__all__ = ["RetryPolicy", "RETRYABLE_STATUS", "is_retryable_status"]

RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 4
    base_s: float = 0.25
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0

    def should_retry(self, error: BaseException) -> bool:
        return isinstance(error, ProviderError) and error.retryable

    def wait_s(self, attempt: int, error: BaseException | None, rand: float) -> float:
        """Seconds before attempt `attempt + 1`; `rand` is uniform in [0, 1) (injected for tests)."""
        retry_after = getattr(error, "retry_after", None)
        if isinstance(error, RateLimitedError) and retry_after is not None:
            # A little jitter on top so callers told the same instant do not all return at it.
            return min(retry_after, self.max_retry_after_s) + rand * self.base_s / 4
        ceiling = min(self.max_backoff_s, self.base_s * 2 ** (attempt - 1))
        return ceiling / 2 + rand * ceiling / 2  # "equal jitter": never zero, never above the cap

    def tenacity_kwargs(self, max_retries: int | None = None, rng: random.Random | None = None) -> dict:
        """`stop`, `retry` and `wait` for `tenacity.AsyncRetrying`, following this policy."""
        rng = rng or random.Random()
        retries = self.max_retries if max_retries is None else max_retries
        policy = self

        class _Wait(tenacity.wait.wait_base):
            def __call__(self, state: tenacity.RetryCallState) -> float:
                error = state.outcome.exception() if state.outcome else None
                return policy.wait_s(state.attempt_number, error, rng.random())

        return {
            "stop": tenacity.stop_after_attempt(retries + 1),
            "retry": tenacity.retry_if_exception(self.should_retry),
            "wait": _Wait(),
            "reraise": True,
        }
