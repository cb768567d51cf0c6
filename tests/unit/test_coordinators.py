"""Coordinators driven by in-process fake models: no Ray, exact control over who answers when."""


import pytest

from orchestray.config import PriceConfig, parse_config
from orchestray.coordinators import (
    CascadeCoordinator,
    EnsembleCoordinator,
    FallbackCoordinator,
    RaceCoordinator,
    build_coordinator,
)
from orchestray.errors import AllFailedError, ProviderUnavailableError, RateLimitedError
from orchestray.messages import ChatRequest, Message
from orchestray.policies.extraction import extractor
from orchestray.testing import ScriptedModel
from orchestray.policies.confidence import escalate_if_agreement_below, escalate_if_below, escalate_if_judge_below


def Fake(name, reply="Answer: 1", *, fail=None, cost=1.0, **options):
    """A scripted model named `name` answering `reply` (or raising `fail`), a call costing `cost`."""
    return ScriptedModel(fail if fail is not None else reply, name=name, cost=cost, **options)


def models(*fakes):
    table = {f.name: f for f in fakes}
    return table.__getitem__


def ask(text="What is 1 + 0?", **fields):
    return ChatRequest(messages=(Message("user", text),), **fields)


# Race


async def test_race_first_success_wins_and_the_others_are_cancelled():
    fast, slow = Fake("fast", "Answer: 1", delay=0.01), Fake("slow", "Answer: 2", delay=5)
    race = RaceCoordinator("r", models(fast, slow), ["slow", "fast"])
    answer = await race.complete(ask())
    assert answer.provider == "fast" and slow.cancelled == 1 and slow.finished == 0
    assert answer.trace.kind == "race" and "cancelled: slow" in answer.trace.decision
    assert [c.outcome for c in answer.trace.children] == ["ok", "cancelled"]


async def test_race_failures_never_win_and_all_failing_lists_each_cause():
    broken = Fake("broken", fail=ProviderUnavailableError("503", provider="broken"))
    ok = Fake("ok", delay=0.05)
    answer = await RaceCoordinator("r", models(broken, ok), ["broken", "ok"]).complete(ask())
    assert answer.provider == "ok" and "failed: broken" in answer.trace.decision
    limited = Fake("limited", fail=RateLimitedError("slow down", provider="limited"))
    with pytest.raises(AllFailedError, match="broken: 503.*limited: slow down") as caught:
        await RaceCoordinator("r", models(broken, limited), ["broken", "limited"]).complete(ask())
    assert len(caught.value.causes) == 2 and len(caught.value.span.children) == 2


async def test_hedged_race_calls_the_next_only_after_the_delay():
    quick, backup = Fake("quick", delay=0.01), Fake("backup", delay=0.01)
    race = RaceCoordinator("h", models(quick, backup), ["quick", "backup"], hedge_after_ms=200)
    answer = await race.complete(ask())
    assert answer.provider == "quick" and backup.calls == []  # answered before the hedge fired
    assert answer.trace.data["calls"] == 1
    slow, backup = Fake("slow", delay=5), Fake("backup", delay=0.01)
    race = RaceCoordinator("h", models(slow, backup), ["slow", "backup"], hedge_after_ms=30)
    answer = await race.complete(ask())
    assert answer.provider == "backup" and slow.cancelled == 1 and answer.trace.data["calls"] == 2


async def test_hedge_at_p95_uses_the_providers_own_latency():
    class WithLatency(ScriptedModel):
        async def latency_quantile(self, q, min_samples=1):
            return 0.02

    slow, backup = WithLatency(name="slow", delay=5), Fake("backup", delay=0.0)
    race = RaceCoordinator("h", models(slow, backup), ["slow", "backup"], hedge_after_ms="p95")
    assert await race.hedge_delay_s("slow") == 0.02
    assert (await race.complete(ask())).provider == "backup"


async def test_race_streams_from_the_first_to_answer():
    fast, slow = Fake("fast", "one two three", delay=0.01), Fake("slow", delay=5)
    race = RaceCoordinator("r", models(fast, slow), ["slow", "fast"])
    chunks = [c async for c in race.stream(ask())]
    assert "".join(c.delta for c in chunks).split() == ["one", "two", "three"]
    assert chunks[-1].completion.trace.kind == "race" and slow.cancelled == 1


# Fallback


async def test_fallback_moves_on_at_once_without_retries_then_lets_the_last_retry():
    first = Fake("first", fail=RateLimitedError(provider="first", retry_after=30))
    second = Fake("second", fail=ProviderUnavailableError("down", provider="second"))
    third = Fake("third", "Answer: 3")
    answer = await FallbackCoordinator("f", models(first, second, third), ["first", "second", "third"]).complete(ask())
    assert answer.provider == "third" and answer.trace.data["position"] == 2
    assert first.calls[0].max_retries == 0 and second.calls[0].max_retries == 0
    assert third.calls[0].max_retries is None
    assert "first: rate limited" in answer.trace.decision


# Ensemble


def replies(*texts):
    it = iter(texts)
    return lambda request: next(it)


async def test_ensemble_majority_with_agreement_as_confidence():
    sampler = Fake("s", replies("Answer: 4", "Answer: 5", "Answer: 4", "no idea", "Answer: 4"))
    ensemble = EnsembleCoordinator("e", models(sampler), ["s"], samples=5, temperature=0.7, extract=extractor("number"))
    answer = await ensemble.complete(ask())
    assert answer.content == "Answer: 4" and answer.confidence == pytest.approx(3 / 4)
    assert answer.trace.data["counts"] == {"4": 3, "5": 1}
    assert len({r.seed for r in sampler.calls}) == 5 and all(r.temperature == 0.7 for r in sampler.calls)
    assert answer.cost == 5.0


async def test_ensemble_survives_a_failing_provider_and_enforces_quorum():
    a, b = Fake("a", "Answer: 7"), Fake("b", "Answer: 7")
    down = Fake("down", fail=ProviderUnavailableError("503", provider="down"))
    answer = await EnsembleCoordinator("e", models(a, b, down), ["a", "b", "down"]).complete(ask())
    assert answer.content == "Answer: 7" and answer.trace.data["failed"] == 1
    with pytest.raises(AllFailedError, match="quorum"):
        await EnsembleCoordinator("e", models(a, b, down), ["a", "b", "down"], quorum=3).complete(ask())


async def test_weighted_vote_and_judge_and_aggregator():
    a, b, c = Fake("a", "Answer: 1"), Fake("b", "Answer: 2"), Fake("c", "Answer: 2")
    weighted = EnsembleCoordinator("e", models(a, b, c), ["a", "b", "c"], vote="weighted", weights={"a": 3})
    assert (await weighted.complete(ask())).content == "Answer: 1"
    judge = Fake("judge", "Candidate 1 is right. Best: 1")
    judged = EnsembleCoordinator("e", models(a, b, c, judge), ["a", "b", "c"], vote="judge", judge="judge")
    answer = await judged.complete(ask())
    assert answer.content == "Answer: 1" and len(answer.trace.children) == 4
    merger = Fake("judge", "Merged. Answer: 2")
    merged = EnsembleCoordinator("e", models(a, b, c, merger), ["a", "b", "c"], vote="aggregate", judge="judge")
    assert (await merged.complete(ask())).content == "Merged. Answer: 2"


# Cascade


def confident(value, confidence):
    return f"Answer: {value}\nConfidence: {confidence}"


async def test_cascade_accepts_a_confident_cheap_answer():
    small, large = Fake("small", confident(4, 0.95), cost=1), Fake("large", confident(4, 0.99), cost=10)
    cascade = CascadeCoordinator("c", models(small, large), ["small", "large"], escalate_if_below(0.8),
                                 price_of=lambda n: PriceConfig(input_per_1k=1000, output_per_1k=1000) if n == "large" else None)
    answer = await cascade.complete(ask())
    assert answer.provider == "small" and large.calls == []
    data = answer.trace.data
    assert data["answered_by"] == "small" and data["cost"] == 1
    assert data["cost_last_stage_alone"] == pytest.approx((4 + 3) * 1.0) and data["saved"] == pytest.approx(6.0)
    assert "Confidence" in small.calls[0].messages[-1].content  # the instruction was added


async def test_cascade_escalates_exactly_when_the_test_fails():
    small, large = Fake("small", confident(5, 0.3), cost=1), Fake("large", confident(4, 0.99), cost=10)
    answer = await CascadeCoordinator("c", models(small, large), ["small", "large"], escalate_if_below(0.8)).complete(ask())
    assert answer.provider == "large" and answer.cost == 11
    stages = answer.trace.data["stages"]
    assert [s["stage"] for s in stages] == ["small", "large"] and stages[0]["score"] == 0.3
    assert answer.trace.data["saved"] == -1  # the large model ran: escalating cost the small call
    assert "Confidence" not in large.calls[0].messages[-1].content  # the last stage is not asked


async def test_cascade_agreement_and_judge_tests():
    sampler = Fake("small", replies("Answer: 4", "Answer: 4", "Answer: 9"))
    large = Fake("large", "Answer: 4")
    answer = await CascadeCoordinator("c", models(sampler, large), ["small", "large"],
                                      escalate_if_agreement_below(0.6, k=3), ask_confidence=False).complete(ask())
    assert answer.provider == "small" and len(sampler.calls) == 3
    judge = Fake("judge", "Score: 3/10")
    small = Fake("small", "Answer: 4")
    answer = await CascadeCoordinator("c", models(small, large, judge), ["small", "large"],
                                      escalate_if_judge_below(0.7), judge="judge", ask_confidence=False).complete(ask())
    assert answer.provider == "large" and len(judge.calls) == 1


async def test_a_failing_stage_escalates_and_a_nested_ensemble_is_a_stage():
    down = Fake("down", fail=ProviderUnavailableError("503", provider="down"))
    voters = [Fake(n, confident(4, 0.9)) for n in ("v1", "v2", "v3")]
    table = {f.name: f for f in [down, *voters]}
    ensemble = EnsembleCoordinator("vote", table.__getitem__, ["v1", "v2", "v3"])
    table["vote"] = ensemble
    answer = await CascadeCoordinator("c", table.__getitem__, ["down", "vote"], escalate_if_below(0.8)).complete(ask())
    assert answer.trace.data["answered_by"] == "vote"
    assert answer.trace.children[1].kind == "ensemble" and len(answer.trace.children[1].children) == 3
    assert answer.cost == 3.0


async def test_routes_from_the_default_config_build():
    config = parse_config({
        "providers": [{"name": "a", "kind": "simulated"}, {"name": "b", "kind": "simulated"}],
        "routes": {
            "r": {"pattern": "race", "providers": ["a", "b"], "hedge_after_ms": "p95"},
            "e": {"pattern": "ensemble", "providers": ["a"], "samples": 3},
            "c": {"pattern": "cascade", "providers": ["a", "e"]},
            "f": {"pattern": "fallback", "providers": ["a", "b"]},
        },
    })
    kinds = {name: type(build_coordinator(name, config, lambda n: None)).__name__ for name in config.routes}
    assert kinds == {"r": "RaceCoordinator", "e": "EnsembleCoordinator", "c": "CascadeCoordinator", "f": "FallbackCoordinator"}
