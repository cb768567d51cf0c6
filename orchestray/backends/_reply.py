"""What a backend hands back: the answer, its usage, and what the provider said of its quota."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from orchestray.messages import Choice, ToolCall

__all__ = ["Reply", "Quota", "parse_quota", "parse_retry_after"]


@dataclass(slots=True)
class Quota:
    """The rate-limit headers of one answer: limits per minute, what remains, seconds to reset."""

    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None


@dataclass(slots=True)
class Reply:
    """The first choice's text, tool calls, refusal and logprobs; with n > 1 the rest in `more_choices`."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str = "stop"
    model: str = ""
    quota: Quota | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    more_choices: tuple[Choice, ...] = ()
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    dropped: tuple[str, ...] = ()  # request fields the provider refused, dropped on a retry


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_s(text: str | None) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "20ms", "0.5s"."""
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def _until_s(timestamp: str | None, now: datetime | None = None) -> float | None:
    """Anthropic's reset instants (RFC 3339) as seconds from `now` (default: the wall clock)."""
    if not timestamp:
        return None
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def parse_quota(headers: Mapping[str, str], now: datetime | None = None) -> Quota | None:
    """The rate-limit headers of either format (OpenAI's x-ratelimit-*, Anthropic's
    anthropic-ratelimit-*), None when there are none. `now` dates Anthropic's reset instants."""
    get = headers.get
    if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
        return Quota(
            remaining_requests=_int(get("x-ratelimit-remaining-requests")),
            reset_requests_s=_duration_s(get("x-ratelimit-reset-requests")),
            remaining_tokens=_int(get("x-ratelimit-remaining-tokens")),
            reset_tokens_s=_duration_s(get("x-ratelimit-reset-tokens")),
            limit_requests=_int(get("x-ratelimit-limit-requests")),
            limit_tokens=_int(get("x-ratelimit-limit-tokens")),
        )
    if "anthropic-ratelimit-requests-remaining" in headers or "anthropic-ratelimit-tokens-remaining" in headers:
        return Quota(
            remaining_requests=_int(get("anthropic-ratelimit-requests-remaining")),
            reset_requests_s=_until_s(get("anthropic-ratelimit-requests-reset"), now),
            remaining_tokens=_int(get("anthropic-ratelimit-tokens-remaining")),
            reset_tokens_s=_until_s(get("anthropic-ratelimit-tokens-reset"), now),
            limit_requests=_int(get("anthropic-ratelimit-requests-limit")),
            limit_tokens=_int(get("anthropic-ratelimit-tokens-limit")),
        )
    return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, then `retry-after` as seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
