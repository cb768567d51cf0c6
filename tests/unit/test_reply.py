from datetime import datetime, timezone

import pytest

from orchestray.backends._reply import parse_quota, parse_retry_after
from orchestray.emulator._quota import QuotaState
from orchestray.emulator._wire import ANTHROPIC, OPENAI


def test_openai_headers_with_go_style_durations():
    quota = parse_quota(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-tokens": "20ms",
        }
    )
    assert (quota.limit_requests, quota.remaining_requests, quota.reset_requests_s) == (10000, 9999, 360.0)
    assert (quota.limit_tokens, quota.remaining_tokens) == (2000000, 1999000)
    assert quota.reset_tokens_s == pytest.approx(0.02)
    assert parse_quota({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}).reset_requests_s == 1.0
    assert parse_quota({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1h2m3.5s"}).reset_requests_s == 3723.5


def test_anthropic_headers_with_rfc3339_resets():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    quota = parse_quota(
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": "2026-01-01T12:00:01Z",
            "anthropic-ratelimit-tokens-limit": "400000",
            "anthropic-ratelimit-tokens-remaining": "399000",
            "anthropic-ratelimit-tokens-reset": "2026-01-01T12:00:30.5+00:00",
        },
        now=now,
    )
    assert (quota.limit_requests, quota.remaining_requests, quota.reset_requests_s) == (4000, 3999, 1.0)
    assert (quota.limit_tokens, quota.remaining_tokens, quota.reset_tokens_s) == (400000, 399000, 30.5)


def test_no_headers_or_garbage():
    assert parse_quota({"content-type": "application/json"}) is None
    quota = parse_quota({"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "soon"})
    assert quota.remaining_requests is None and quota.reset_requests_s is None


@pytest.mark.parametrize("dialect", [OPENAI, ANTHROPIC])
def test_the_emulators_headers_read_back_in_both_formats(dialect):
    states = [QuotaState("requests", 6000, 42, 0.25), QuotaState("tokens", 600000, 5000, 61.0)]
    wall = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    quota = parse_quota(dialect.quota_headers(states, wall), now=datetime.fromtimestamp(wall, timezone.utc))
    assert (quota.limit_requests, quota.remaining_requests) == (6000, 42)
    assert (quota.limit_tokens, quota.remaining_tokens) == (600000, 5000)
    # OpenAI writes durations to the millisecond; Anthropic whole-second instants, rounded up.
    assert quota.reset_requests_s == (0.25 if dialect is OPENAI else 1.0)
    assert quota.reset_tokens_s == (61.0 if dialect is OPENAI else 61.0)


def test_retry_after_prefers_milliseconds():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({}) is None
