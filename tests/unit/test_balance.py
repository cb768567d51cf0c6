"""The balance pattern over in-process members: shares follow free quota, cooling members are skipped."""

import asyncio

import pytest

from orchestray.config import parse_config
from orchestray.coordinators import BalanceCoordinator, build_coordinator
from orchestray.errors import AllFailedError, AuthenticationError, RateLimitedError
from orchestray.messages import ChatRequest, Completion, Message, Span
from orchestray.provider import ProviderStats


class Member:
    """A deployment limited to `rpm`, answering when `gate` opens (or failing with `fail`)."""

    def __init__(self, name, rpm=None, fail=None, gate=None):
        self.name, self.rpm, self.fail, self.gate = name, rpm, fail, gate
        self.calls = 0

    async def stats(self):
        return ProviderStats(name=self.name, limit_rpm=self.rpm)

    async def complete(self, request):
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return Completion(content="ok", model="m", provider=self.name, trace=Span(name=self.name))

    async def stream(self, request):
        from orchestray.messages import Chunk

        completion = await self.complete(request)
        yield Chunk(delta="ok")
        yield Chunk(done=True, completion=completion)


def ask():
    return ChatRequest(messages=(Message("user", "What is 1 + 1?"),))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


async def test_calls_spread_in_proportion_to_each_members_limit():
    gate = asyncio.Event()
    members = {n: Member(n, rpm, gate=gate) for n, rpm in (("a", 3000), ("b", 2000), ("c", 1000))}
    balance = BalanceCoordinator("pool", members.__getitem__, list(members))
    await balance._refresh()
    calls = [asyncio.create_task(balance.complete(ask())) for _ in range(600)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert [members[n].calls for n in "abc"] == [300, 200, 100]
    gate.set()
    answers = await asyncio.gather(*calls)
    assert {a.trace.kind for a in answers} == {"balance"}
    assert answers[0].trace.data["answered_by"] in "abc"


async def test_a_cooling_member_gets_no_calls_until_it_has_cooled():
    clock = Clock()
    limited = Member("a", 6000, fail=RateLimitedError("429", provider="a", retry_after=5.0))
    spare = Member("b", 1000)
    members = {"a": limited, "b": spare}
    balance = BalanceCoordinator("pool", members.__getitem__, ["a", "b"], clock=clock)
    await balance._refresh()
    answer = await balance.complete(ask())  # a is chosen first (more quota), says 429: b answers
    assert answer.provider == "b" and limited.calls == 1
    assert "a: 429" in answer.trace.decision
    for _ in range(5):
        assert (await balance.complete(ask())).provider == "b"
    assert limited.calls == 1  # cooling for the 5 s it asked
    limited.fail = None
    clock.now += 5.0
    assert (await balance.complete(ask())).provider == "a"


async def test_every_member_failing_is_one_error_with_every_cause():
    members = {
        "a": Member("a", fail=AuthenticationError("bad key", provider="a")),
        "b": Member("b", fail=RateLimitedError("429", provider="b")),
    }
    balance = BalanceCoordinator("pool", members.__getitem__, ["a", "b"])
    with pytest.raises(AllFailedError) as caught:
        await balance.complete(ask())
    assert len(caught.value.causes) == 2


async def test_streams_from_the_chosen_member():
    members = {"a": Member("a", 100), "b": Member("b", 900)}
    balance = BalanceCoordinator("pool", members.__getitem__, ["a", "b"])
    await balance._refresh()
    chunks = [c async for c in balance.stream(ask())]
    assert chunks[-1].done and chunks[-1].completion.provider == "b"
    assert chunks[-1].completion.trace.kind == "balance"


def test_a_provider_with_several_keys_is_a_balance_route_over_one_provider_each():
    config = parse_config(
        {
            "providers": [
                {"name": "gpt", "kind": "openai", "model": "gpt-4o-mini", "api_key_env": ["KEY_A", "KEY_B"], "limits": {"rpm": 500}},
                {
                    "name": "local",
                    "kind": "openai",
                    "deployments": [
                        {"base_url": "http://10.0.0.1:8000/v1", "limits": {"rpm": 100}},
                        {"base_url": "http://10.0.0.2:8000/v1", "limits": {"rpm": 300}},
                    ],
                },
            ],
            "routes": {"fast": {"pattern": "fallback", "providers": ["gpt", "local"]}},
        }
    )
    by_name = {p.name: p for p in config.providers}
    assert set(by_name) == {"gpt:1", "gpt:2", "local:1", "local:2"}
    assert (by_name["gpt:2"].api_key_env, by_name["gpt:2"].model, by_name["gpt:2"].limits.rpm) == ("KEY_B", "gpt-4o-mini", 500)
    assert (by_name["local:2"].base_url, by_name["local:2"].model, by_name["local:2"].limits.rpm) == ("http://10.0.0.2:8000/v1", "local", 300)
    assert config.routes["gpt"].pattern == "balance" and config.routes["gpt"].providers == ["gpt:1", "gpt:2"]
    balance = build_coordinator("local", config, lambda name: None)
    assert isinstance(balance, BalanceCoordinator)
    assert [m.rate * 60 for m in balance.members] == [100, 300]  # spread right from the first call


@pytest.mark.parametrize(
    "provider, message",
    [
        ({"api_key_env": ["A", "B"], "base_url": ["http://x/v1"]}, "same length"),
        ({"api_key_env": []}, "empty"),
        ({"deployments": [{"name": "x"}]}, "unknown field"),
        ({"deployments": [{"base_url": "http://x"}], "api_key_env": ["A"]}, "not both"),
    ],
)
def test_bad_deployment_lists_say_what_is_wrong(provider, message):
    from orchestray.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config({"providers": [{"name": "p", "kind": "openai", **provider}]})
