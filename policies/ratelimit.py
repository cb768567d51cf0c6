"""Rate limiting as pure arithmetic: a pace, a window log, and a limiter deciding when a call may go.

Time is always an argument (seconds on any monotonic clock); nothing here sleeps. The async
gate that waits on these decisions lives beside the provider (`orchestray.admission`).

Providers state limits per minute, enforce them over short spans, and do not say how: a sliding
one-second window, calendar seconds, or a token bucket refilling continuously ("limits may be
quantized"). A pacer exact on one shape overruns another, so every limit is held two ways:

- a `Pace` at the aimed rate: calls go out evenly spaced, the first at once with no burst; a late
  wake-up is caught up, but an idle spell banks nothing for a burst later;
- a `WindowLog` of what went out over the enforcement span (one second): never more than the
  span's allowance in any span, whichever way the provider counts. Even pacing below the rate
  keeps every sliding window, every calendar window and every bucket within its limit.

A call is counted by the provider when its request reaches it, not when this limiter lets it go:
whatever delays a call in between (the event loop, the SDK, the HTTP client) would let the
provider see more than the limit in its window although this limiter did not. So a call can be
admitted `at_send`: it holds its place in the window as if sent at every moment until its
transport reports the headers written (`RateLimiter.sent`), and only then takes its real time.

A 429 while pacing within the limit means the provider counted some calls later than this
limiter did (a stalled network, client or server): it widens the window kept by 1% and shrinks
the catch-up burst, rather than cutting the rate. Only 429s that keep coming slow the rate, and
it recovers within seconds. The rate-limit
headers of every answer teach an unconfigured limit, lower a configured one the provider says is
lower, and show what other clients of the same key use, which this limiter then leaves to them.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from orchestray.errors import RequestTooLargeError

__all__ = ["TokenBucket", "Pace", "WindowLog", "Limits", "Permit", "RateLimiter"]

_EPSILON = 1e-9


class TokenBucket:
    """A bucket of `capacity` refilling at `rate_per_s`, starting full.

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


class Pace:
    """Calls evenly spaced at `rate` (amounts per second): each admitted amount books the next
    amount/rate seconds of the schedule.

    A caller already waiting when its slot came due takes that slot even if it wakes late, so a
    late wake-up is caught up (by at most `catch_up_s`); a caller who finds no one waiting
    starts the schedule afresh, so an idle spell banks no burst for later.
    """

    __slots__ = ("rate", "catch_up_s", "_due")

    def __init__(self, rate_per_s: float, catch_up_s: float, now: float):
        if rate_per_s <= 0:
            raise ValueError("a pace needs a positive rate")
        self.rate = float(rate_per_s)
        self.catch_up_s = catch_up_s
        self._due = now  # the first call goes at once

    def time_until(self, now: float) -> float:
        return max(0.0, self._due - now)

    def book(self, amount: float, now: float, waiting_since: float | None = None) -> None:
        waited = waiting_since is not None and waiting_since <= self._due
        start = max(self._due, now - self.catch_up_s) if waited else max(self._due, now)
        self._due = start + amount / self.rate

    def refund(self, amount: float) -> None:
        self._due -= amount / self.rate

    def charge(self, amount: float) -> None:
        self._due += amount / self.rate

    def restart(self, now: float) -> None:
        """After a rejection: nothing owed from before counts as caught up."""
        self._due = max(self._due, now)

    def retune(self, rate_per_s: float, now: float) -> None:
        """Change the rate from `now` on; what is booked ahead stretches or shrinks with it."""
        if self._due > now:
            self._due = now + (self._due - now) * self.rate / rate_per_s
        self.rate = float(rate_per_s)


class WindowLog:
    """What was admitted over the last `span_s` seconds: times and amounts, oldest first.

    An amount larger than the whole cap goes only into an empty window (no amount of waiting
    would admit it otherwise), as providers let a request larger than a second's quota through.
    """

    __slots__ = ("span", "_times", "_amounts", "_used", "_held")

    def __init__(self, span_s: float):
        if span_s <= 0:
            raise ValueError("a window needs a positive span")
        self.span = float(span_s)
        self._times: deque[float] = deque()
        self._amounts: deque[float] = deque()
        self._used = 0.0
        self._held = 0.0  # admitted, not yet sent: inside every window until it is

    def used(self, now: float) -> float:
        times, amounts = self._times, self._amounts
        while times and times[0] <= now - self.span:
            times.popleft()
            self._used -= amounts.popleft()
        if not times:
            self._used = 0.0  # no rounding drift survives an empty window
        return self._used + self._held

    def time_until(self, amount: float, cap: float, now: float) -> float:
        """Seconds until `amount` more keeps the window within `cap` (0 when it does now)."""
        used = self.used(now)
        needed = used + amount - cap
        if needed <= _EPSILON or used <= _EPSILON:
            return 0.0
        freed = 0.0
        for when, taken in zip(self._times, self._amounts):
            freed += taken
            if freed >= needed - _EPSILON:
                return max(_EPSILON, when + self.span - now)
        if self._held > _EPSILON:
            return _HELD_POLL_S  # what would free it has not even gone out yet
        return max(_EPSILON, self._times[-1] + self.span - now)

    def empty_in(self, now: float) -> float:
        """Seconds until everything in the window has left it."""
        self.used(now)
        return self._times[-1] + self.span - now if self._times else 0.0

    def add(self, amount: float, now: float) -> None:
        self.used(now)
        self._times.append(now)
        self._amounts.append(amount)
        self._used += amount

    def hold(self, amount: float) -> None:
        """Count `amount` admitted but not yet sent: in every window from now until `sent`."""
        self._held += amount

    def sent(self, amount: float, now: float) -> None:
        """What `hold` counted went out at `now`: from here on it leaves the window like any other."""
        self._held = max(0.0, self._held - amount)
        self.add(amount, now)

    def unhold(self, amount: float) -> None:
        """What `hold` counted never went out (failed or cancelled before the send)."""
        self._held = max(0.0, self._held - amount)

    def refund(self, amount: float, admitted_at: float, now: float) -> None:
        """Take back part of what was admitted at `admitted_at` (when it is still in the window)."""
        self.used(now)
        index = bisect.bisect_left(self._times, admitted_at)
        if index < len(self._times) and self._times[index] == admitted_at:
            give = min(amount, self._amounts[index])
            self._amounts[index] -= give
            self._used -= give

    def charge(self, amount: float, admitted_at: float, now: float) -> None:
        """Add to what was admitted at `admitted_at` (usage above the estimate)."""
        self.used(now)
        index = bisect.bisect_left(self._times, admitted_at)
        if index < len(self._times) and self._times[index] == admitted_at:
            self._amounts[index] += amount
            self._used += amount


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's limits. None means unlimited (until the provider's headers say otherwise).

    `window_s` is the span the provider enforces over: never more than its share of the limit
    goes out in any such span. `headroom` is the fraction of the limit to pace at. `burst_s` is
    how far behind its schedule the pace may catch up at once (a busy event loop waking late);
    the window log bounds what that catch-up sends.
    """

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    burst_s: float = 0.1
    headroom: float = 0.995
    window_s: float = 1.0
    max_pause_s: float = 60.0


class Permit:
    """What one admitted call holds: its token estimate and when it went, reconciled on release.

    `admitted_at` is when the limiter let it go; `logged_at` the time its window entry carries
    (the admission, or for a call admitted `at_send` the send, None until then).

    `window_requests` and `window_tokens` are what this limiter had sent over the window as it
    admitted the call (the call included): what the provider's headers on its answer are
    compared with, to see another client's share.
    """

    __slots__ = ("tokens", "released", "admitted_at", "logged_at", "window_requests", "window_tokens")

    def __init__(self, tokens: int, admitted_at: float = 0.0, window_requests: float = 0.0, window_tokens: float = 0.0,
                 *, held: bool = False):  # fmt: skip
        self.tokens = tokens
        self.released = False
        self.admitted_at = admitted_at
        self.logged_at: float | None = None if held else admitted_at
        self.window_requests = window_requests
        self.window_tokens = window_tokens


# How the limiter reacts to 429s; named so the arithmetic below reads as a policy.
# A 429 within the limit means the provider counted some calls later than this limiter did (a
# stalled server stamps a bunch at once; a stalled client sends a bunch late): each such event
# widens the window this limiter keeps by this fraction of it, so that much lateness fits.
_TIGHTEN_STEP = 0.01
_TIGHTEST = 0.05
_TIGHTEN_FORGET_S = 15.0  # one step of tightening is given back after this long without a 429
_ONE_EVENT_S = 2.0  # 429s this close together are one event (one stall of the network): one step
_PERSIST_COUNT = 3  # this many 429s ...
_PERSIST_S = 5.0  # ... within this long slow the rate
_SLOWDOWN = 0.85  # by this factor each time
_SLOWEST = 0.25
_RECOVERY_PER_S = 0.1  # and it recovers this much of the limit per second without a 429
_OTHERS_WEIGHT = 0.2  # smoothing of another client's share seen in the headers
_OTHERS_DEADBAND = 0.02  # below this fraction of the window, the difference is clock skew
_HELD_POLL_S = 0.001  # a window full of calls not yet sent is looked at again this soon


class _Quota:
    """One limit (requests or tokens): its per-minute value, pace and window, and what others use."""

    __slots__ = ("configured", "per_minute", "pace", "log", "others", "_ever_in_window_units")

    def __init__(self, per_minute: float | None, window_s: float):
        self.configured = per_minute
        self.per_minute = per_minute
        self.pace: Pace | None = None
        self.log = WindowLog(window_s)
        self.others = 0.0  # another client's use of each window, smoothed
        self._ever_in_window_units = True

    def allowance(self, window_s: float) -> float:
        """What the provider allows in one window."""
        return self.per_minute / 60.0 * window_s


class RateLimiter:
    """Requests- and tokens-per-minute limits, a concurrency cap, and reactions to 429s and headers.

    The caller asks `delay(tokens, now)`: 0 means `admit` now, a positive number means wait that
    long and ask again, `math.inf` means wait until a call is released. Waiters are served in
    order by the caller asking only for the head of its queue.
    """

    __slots__ = (
        "limits",
        "_requests",
        "_tokens",
        "in_flight",
        "paused_until",
        "_slowdown",
        "_slow_at",
        "_tightened",
        "_tightened_at",
        "_recent_429s",
    )

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self._requests = _Quota(limits.rpm, limits.window_s)
        self._tokens = _Quota(limits.tpm, limits.window_s)
        self.in_flight = 0
        self.paused_until = -math.inf
        self._slowdown = 1.0  # the pace's factor after persistent 429s, recovering over time
        self._slow_at = now
        self._tightened = 0  # steps the kept window is widened by (429s within the limit)
        self._tightened_at = now
        self._recent_429s: deque[float] = deque()
        for quota in (self._requests, self._tokens):
            self._retune(quota, now)

    # --- the arithmetic of one limit --------------------------------------------------------------

    def span(self) -> float:
        """The window this limiter keeps: the provider's, widened after 429s within the limit."""
        return self.limits.window_s * (1.0 + min(self._tightened * _TIGHTEN_STEP, _TIGHTEST))

    def cap(self, quota: _Quota) -> float:
        """What this limiter lets out in one window: the allowance less others' use (and slowed)."""
        allowance = quota.allowance(self.limits.window_s)
        deadband = _OTHERS_DEADBAND * allowance
        if quota is self._requests:
            deadband = max(2.0, deadband)  # the window's edges alone differ by a call or two
        others = quota.others if quota.others > deadband else 0.0
        cap = (allowance - others) * self._slowdown
        # Whole requests: a window allowing 99.5 allows 99.
        return max(1.0, math.floor(cap + _EPSILON)) if quota is self._requests else max(1.0, cap)

    def _retune(self, quota: _Quota, now: float) -> None:
        if quota.per_minute is None:
            quota.pace = None
            return
        cap, span = self.cap(quota), self.span()
        quota.log.span = span
        rate = min(quota.per_minute / 60.0 * self.limits.headroom * self._slowdown, cap / span)
        if quota.pace is None:
            quota.pace = Pace(rate, self.limits.burst_s, now)
        else:
            quota.pace.retune(rate, now)
        # Tightened after a 429: smaller catch-up bursts too.
        quota.pace.catch_up_s = self.limits.burst_s * 0.5**self._tightened

    # --- admission ---------------------------------------------------------------------------------

    def validate(self, tokens: int) -> None:
        """Fail at once for a call that can never fit, rather than let it wait forever."""
        tpm = self._tokens.per_minute
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
        self._recover(now)
        wait = 0.0
        for quota, amount in ((self._requests, 1), (self._tokens, tokens)):
            if quota.pace is not None:
                wait = max(wait, quota.pace.time_until(now), quota.log.time_until(amount, self.cap(quota), now))
        return wait

    def admit(self, tokens: int, now: float, waiting_since: float | None = None, at_send: bool = False) -> Permit:
        """Let a call go. `waiting_since` is when it joined the line (None: just now). With
        `at_send`, its window entry waits for `sent` to stamp it with the real send time."""
        for quota, amount in ((self._requests, 1), (self._tokens, tokens)):
            if quota.pace is not None:
                quota.pace.book(amount, now, waiting_since)
            # Kept unconfigured too: a limit learned later knows the past.
            if at_send:
                quota.log.hold(amount)
            else:
                quota.log.add(amount, now)
        self.in_flight += 1
        return Permit(tokens, now, self._requests.log.used(now), self._tokens.log.used(now), held=at_send)

    def sent(self, permit: Permit, now: float) -> None:
        """The request of a call admitted `at_send` went out at `now` (its headers written)."""
        if permit.logged_at is not None or permit.released:
            return  # stamped already (a redirect writes headers twice), or not held
        permit.logged_at = now
        self._requests.log.sent(1, now)
        self._tokens.log.sent(permit.tokens, now)

    def release(self, permit: Permit, used_tokens: int | None, now: float) -> None:
        """End a call. `used_tokens` is the reported usage; None when unknown (keep the estimate)."""
        if permit.released:
            return
        permit.released = True
        self.in_flight -= 1
        if permit.logged_at is None:
            # Never sent: the provider never counted it, so neither does the window.
            self._requests.log.unhold(1)
            self._tokens.log.unhold(permit.tokens)
        if used_tokens is None:
            return
        quota, difference = self._tokens, permit.tokens - used_tokens
        if difference > 0:
            if permit.logged_at is not None:
                quota.log.refund(difference, permit.logged_at, now)
            if quota.pace is not None:
                quota.pace.refund(difference)
        elif difference < 0:
            if permit.logged_at is not None:
                quota.log.charge(-difference, permit.logged_at, now)
            if quota.pace is not None:
                quota.pace.charge(-difference)

    # --- what the provider says ----------------------------------------------------------------

    def on_rate_limited(self, retry_after: float | None, now: float) -> None:
        """A 429 came back: pause for what the provider asked, tighten the window, and when
        429s keep coming, slow the pace."""
        pause = min(retry_after if retry_after is not None else 1.0, self.limits.max_pause_s)
        self.paused_until = max(self.paused_until, now + pause)
        recent = self._recent_429s
        recent.append(now)
        while recent and recent[0] < now - _PERSIST_S:
            recent.popleft()
        self._recover(now)
        if len(recent) >= _PERSIST_COUNT:
            self._slowdown = max(_SLOWEST, self._slowdown * _SLOWDOWN)
            recent.clear()
        if not self._tightened or now - self._tightened_at >= _ONE_EVENT_S:
            self._tightened += 1
        self._tightened_at = self._slow_at = now
        for quota in (self._requests, self._tokens):
            self._retune(quota, now)
            if quota.pace is not None:
                quota.pace.restart(now)

    def observe(
        self, kind: str, limit: float | None, remaining: float | None, reset_s: float | None, permit: Permit | None, now: float
    ) -> str | None:
        """Rate-limit headers on an answer, for `kind` "requests" or "tokens".

        `limit` is per minute; `remaining` and `reset_s` as the provider reports them. Learns an
        unconfigured limit, lowers a configured one the provider says is lower (returning a
        warning to log), and takes another client's use of the key out of this one's share.
        """
        quota = self._requests if kind == "requests" else self._tokens
        warning = None
        if limit is not None and limit > 0 and limit != quota.per_minute:
            if quota.configured is not None and limit < quota.configured and quota.per_minute == quota.configured:
                warning = (
                    f"the provider reports a limit of {limit:g} {kind} per minute, lower than the "
                    f"configured {quota.configured:g}; pacing at the provider's"
                )
            if quota.configured is None or limit < quota.configured:
                quota.per_minute = float(limit)
                self._retune(quota, now)
        if quota.per_minute is None or remaining is None:
            return warning
        allowance = quota.allowance(self.limits.window_s)
        if remaining > allowance + 1:
            quota._ever_in_window_units = False  # counted over the minute, not the window
        if remaining <= 0 and reset_s is not None and reset_s > 0:
            # Spent: nothing more goes until a share of it comes back.
            slot_s = reset_s if not quota._ever_in_window_units else min(reset_s, self.limits.window_s / max(1.0, allowance))
            self.paused_until = max(self.paused_until, now + min(slot_s, self.limits.max_pause_s))
        if quota._ever_in_window_units and permit is not None:
            ours = permit.window_requests if kind == "requests" else permit.window_tokens
            seen = max(0.0, allowance - remaining - ours)
            before = quota.others
            quota.others += _OTHERS_WEIGHT * (seen - quota.others)
            if abs(quota.others - before) > _EPSILON:
                self._retune(quota, now)
        return warning

    def learned(self) -> dict[str, float | None]:
        """The per-minute limits in force (configured, lowered or learned)."""
        return {"rpm": self._requests.per_minute, "tpm": self._tokens.per_minute}

    def _recover(self, now: float) -> None:
        changed = False
        if self._slowdown < 1.0 and now > self._slow_at:
            self._slowdown = min(1.0, self._slowdown + _RECOVERY_PER_S * (now - self._slow_at))
            self._slow_at = now
            changed = True
        if self._tightened and now - self._tightened_at >= _TIGHTEN_FORGET_S:
            self._tightened -= 1
            self._tightened_at = now
            changed = True
        if changed:
            for quota in (self._requests, self._tokens):
                self._retune(quota, now)
