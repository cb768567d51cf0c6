"""A circuit breaker: after repeated failures a provider cools down and says so at once."""

from __future__ import annotations

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed until `failure_threshold` failures in a row; then open for `cooldown_s`.

    After the cool-down one probe call goes through (half-open): success closes the circuit,
    failure opens it for another cool-down. Only failures that say the provider is unwell count
    (timeouts, 5xx, refused connections); a rate limit or a bad request does not.
    """

    __slots__ = ("failure_threshold", "cooldown_s", "failures", "opened_at", "_probing")

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 10.0):
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._probing else "open"

    def retry_after(self, now: float) -> float:
        """0 when a call may go now; otherwise seconds until the next probe is allowed."""
        if self.opened_at is None:
            return 0.0
        remaining = self.opened_at + self.cooldown_s - now
        if remaining > 0:
            return remaining
        if self._probing:
            return self.cooldown_s  # one probe is already out; the rest wait for its verdict
        self._probing = True
        return 0.0

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self._probing or self.failures >= self.failure_threshold:
            self.opened_at = now
            self._probing = False
