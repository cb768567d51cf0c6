"""Testing your own orchestration with orchestray.testing: scripted models, no Ray, no network.

    pytest examples/test_custom_orchestration.py
"""

from __future__ import annotations

import orchestray
from orchestray.testing import FakeClock, LocalRuntime, ScriptedBackend, ScriptedModel

from custom_orchestration import draft_and_review

CONFIG = {"providers": [{"name": "drafter", "kind": "simulated"}, {"name": "reviewer", "kind": "simulated"}]}


def client_with(**models) -> orchestray.AsyncClient:
    return orchestray.AsyncClient(CONFIG, runtime=LocalRuntime(models=models))


async def test_an_approved_draft_is_kept_and_both_calls_are_paid_for():
    drafter = ScriptedModel("51", name="drafter", cost=0.001)
    reviewer = ScriptedModel("OK", name="reviewer", cost=0.01)
    async with client_with(drafter=drafter, reviewer=reviewer) as client:
        result = await draft_and_review(client, "What is 17 * 3?", "drafter", "reviewer")
    assert result.answer == "51" and not result.revised and result.cost == 0.011
    assert "Draft answer: 51" in reviewer.calls[0].last_user_text()
    assert reviewer.calls[0].temperature == 0


async def test_the_reviewers_correction_wins():
    # A reply may be a function of the request: this reviewer corrects any draft but 51.
    def review(request):
        return "OK" if "Draft answer: 51" in request.last_user_text() else "51"

    async with client_with(drafter=ScriptedModel("50", name="drafter"), reviewer=ScriptedModel(review, name="reviewer")) as client:
        result = await draft_and_review(client, "What is 17 * 3?", "drafter", "reviewer")
    assert result.answer == "51" and result.revised


async def test_a_reviewer_that_is_down_leaves_the_draft():
    down = orchestray.ProviderUnavailableError("503", provider="reviewer")
    async with client_with(drafter=ScriptedModel("51", name="drafter"), reviewer=ScriptedModel(down, name="reviewer")) as client:
        result = await draft_and_review(client, "What is 17 * 3?", "drafter", "reviewer")
    assert result.answer == "51" and not result.revised


async def test_a_rate_limited_reviewer_is_retried_by_its_provider_on_a_fake_clock():
    # A scripted backend keeps the real provider around it: its limiter and retry loop run, and
    # the fake clock makes the 2 s retry-after pass at once.
    clock = FakeClock()
    reviewer = ScriptedBackend("OK", script=[orchestray.RateLimitedError(provider="reviewer", retry_after=2.0)], clock=clock)
    runtime = LocalRuntime(models={"drafter": ScriptedModel("51", name="drafter")}, backends={"reviewer": reviewer}, clock=clock)
    async with orchestray.AsyncClient(CONFIG, runtime=runtime) as client:
        result = await draft_and_review(client, "What is 17 * 3?", "drafter", "reviewer")
    assert result.answer == "51" and len(reviewer.calls) == 2
    assert reviewer.call_times[1] - reviewer.call_times[0] >= 2.0
