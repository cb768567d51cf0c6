"""A circuit breaker: a provider failing most of its recent calls cools down, then is probed."""

from __future__ import annotations

from collections import deque

__all__ = ["CircuitBreaker", "CircuitView"]


class CircuitBreaker:
    """Opens when at least `failure_rate` of the calls that ended in the last `window_s` failed,
    counted only once `min_calls` have ended there; then open for `cooldown_s`.

    A failure rate over a sliding window with a minimum number of calls is what resilience4j's
    time-based window and Envoy's success-rate outlier detection use. "N failures in a row" is
    not: concurrent calls that hang together time out together, so a provider answering nine
    calls in ten would still string together enough failures to open.

    After the cool-down one probe call goes through (half-open): success closes the circuit and
    forgets the window, failure opens it for another cool-down. A probe that never reports (its
    caller was cancelled) frees the way for another after `cooldown_s`. Outcomes of calls let
    through before the circuit opened are ignored until it closes again: they say nothing of
    the provider since. Only failures that say the provider is unwell are recorded here
    (timeouts, 5xx, refused connections); a rate limit or a bad request is not.
    """

    __slots__ = (
        "failure_rate",
        "min_calls",
        "window_s",
        "cooldown_s",
        "opened_at",
        "opened_after",
        "_probe_at",
        "_buckets",
        "_bucket_s",
        "_calls",
        "_failures",
    )

    def __init__(self, failure_rate: float = 0.5, min_calls: int = 20, window_s: float = 30.0, cooldown_s: float = 10.0):
        if not 0.0 < failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within (0, 1], got {failure_rate}")
        if min_calls < 1 or window_s <= 0 or cooldown_s < 0:
            raise ValueError("min_calls must be >= 1, window_s > 0 and cooldown_s >= 0")
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.opened_at: float | None = None
        self.opened_after: tuple[int, int] = (0, 0)  # (failures, calls) in the window that opened it
        self._probe_at: float | None = None
        # Ten buckets a window: counts stay O(1) memory however many calls a second end.
        self._bucket_s = window_s / 10
        self._buckets: deque[list] = deque()  # [bucket start, calls, failures]
        self._calls = 0
        self._failures = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._probe_at is not None else "open"

    def counts(self, now: float) -> tuple[int, int]:
        """(failures, calls) that ended within the window."""
        self._expire(now)
        return self._failures, self._calls

    def retry_after(self, now: float) -> float:
        """0 when a call may go now (and, when open, it is the probe); else seconds to wait.

        While a probe is out the answer is how long until another may go; its verdict may come
        sooner, and a caller that waits should look again when it does.
        """
        if self.opened_at is None:
            return 0.0
        remaining = self.opened_at + self.cooldown_s - now
        if remaining > 0:
            return remaining
        if self._probe_at is not None and now - self._probe_at < self.cooldown_s:
            return self._probe_at + self.cooldown_s - now
        self._probe_at = now
        return 0.0

    def record_success(self, now: float, admitted_at: float) -> bool:
        """A call admitted at `admitted_at` succeeded; True if that closed the circuit."""
        if self.opened_at is not None:
            if admitted_at < self.opened_at:
                return False  # let through before it opened
            self._close()
            return True
        self._add(now, failed=False)
        return False

    def record_failure(self, now: float, admitted_at: float) -> bool:
        """A call admitted at `admitted_at` failed as an unwell provider fails; True if that
        opened (or reopened) the circuit."""
        if self.opened_at is not None:
            if admitted_at < self.opened_at:
                return False
            self._open(now, self.opened_after)  # the probe failed
            return True
        self._add(now, failed=True)
        if self._calls >= self.min_calls and self._failures >= self.failure_rate * self._calls:
            self._open(now, (self._failures, self._calls))
            return True
        return False

    def _add(self, now: float, failed: bool) -> None:
        self._expire(now)
        if not self._buckets or now >= self._buckets[-1][0] + self._bucket_s:
            self._buckets.append([now, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        self._calls += 1
        if failed:
            bucket[2] += 1
            self._failures += 1

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] + self._bucket_s <= now - self.window_s:
            _, calls, failures = buckets.popleft()
            self._calls -= calls
            self._failures -= failures

    def _open(self, now: float, after: tuple[int, int]) -> None:
        self.opened_at = now
        self.opened_after = after
        self._probe_at = None
        self._forget()

    def _close(self) -> None:
        self.opened_at = None
        self._probe_at = None
        self._forget()

    def _forget(self) -> None:
        self._buckets.clear()
        self._calls = self._failures = 0


class CircuitView:
    """What a caller (a race, a fallback, a route) knows of its members' circuits, learned from
    their answers alone, so routing around an open circuit costs no call of its own.

    A member that answered "circuit open, next try in N s" is passed over for N s; any other
    answer from it, or the end of those N s, makes it a candidate again. Time comes in as an
    argument, as everywhere in `policies/`.
    """

    __slots__ = ("_open_until",)

    def __init__(self) -> None:
        self._open_until: dict[str, float] = {}

    def saw_open(self, name: str, retry_after: float, now: float) -> None:
        self._open_until[name] = now + max(0.0, retry_after)

    def saw_answer(self, name: str) -> None:
        self._open_until.pop(name, None)

    def open_for(self, name: str, now: float) -> float:
        """Seconds until `name` is worth a try again; 0 if it is now (or nothing is known)."""
        until = self._open_until.get(name)
        if until is None:
            return 0.0
        if until <= now:
            del self._open_until[name]
            return 0.0
        return until - now

    def is_open(self, name: str, now: float) -> bool:
        return self.open_for(name, now) > 0

    def order(self, names: list[str], now: float) -> tuple[list[str], list[str]]:
        """(members to try first, in their own order; members cooling down, soonest back first)."""
        cooling = sorted((n for n in names if self.is_open(n, now)), key=lambda n: self._open_until[n])
        return [n for n in names if n not in cooling], cooling
