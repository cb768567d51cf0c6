"""What the gateway answers when every branch of a pattern failed: a 503 (or 429) with
`retry-after` when they all said to come back later, else a 502."""

from orchestray.actors.multiplex import LOST_RETRY_AFTER_S
from orchestray.errors import (
    AllFailedError,
    AuthenticationError,
    CircuitOpenError,
    ProviderUnavailableError,
    RateLimitedError,
)
from orchestray.serving._errors import http_error


def test_a_pattern_whose_members_are_all_unavailable_is_a_503_with_the_soonest_retry():
    lost = ProviderUnavailableError("provider actor is not answering", provider="a", retry_after=LOST_RETRY_AFTER_S)
    cooling = CircuitOpenError("cooling down", provider="b", retry_after=2.2)
    e = http_error(AllFailedError("fallback f", [lost, cooling]))
    assert (e.status, e.headers) == (503, {"retry-after": "3"})


def test_a_pattern_whose_members_are_all_rate_limited_is_a_429():
    e = http_error(AllFailedError("race r", [RateLimitedError(provider="a", retry_after=1), RateLimitedError(provider="b")]))
    assert e.status == 429 and e.headers is None  # one said nothing of when: no promise made


def test_a_pattern_with_a_member_that_refused_the_key_is_still_a_502():
    e = http_error(AllFailedError("race r", [ProviderUnavailableError("503", provider="a", retry_after=1),
                                             AuthenticationError("401", provider="b")]))
    assert e.status == 502 and e.headers is None


def test_a_lost_provider_actor_is_a_503_with_retry_after():
    e = http_error(ProviderUnavailableError("gone", provider="a", retry_after=LOST_RETRY_AFTER_S))
    assert (e.status, e.headers) == (503, {"retry-after": "5"})


def test_serves_proxy_holds_a_bounded_queue_for_the_gateway_and_answers_503_with_retry_after_past_it():
    # While no gateway replica can take a request (a lone replica lost), Serve's proxy holds it;
    # past serve.max_queued_requests it answers 503 with retry-after, as a lost provider does.
    from orchestray.config import parse_config
    from orchestray.serving import app_for

    providers = [{"name": "q", "kind": "simulated"}]
    default = app_for(parse_config({"providers": providers}))._bound_deployment._deployment_config
    assert default.max_queued_requests == 256
    small = app_for(parse_config({"providers": providers, "serve": {"max_queued_requests": 3}}))
    config = small._bound_deployment._deployment_config
    assert config.max_queued_requests == 3
    assert (config.backpressure_config.status_code, config.backpressure_config.retry_after_s) == (503, LOST_RETRY_AFTER_S)
