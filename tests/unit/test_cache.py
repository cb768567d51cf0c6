"""The response cache without Ray: the key's canonical form, the bypass rules, TTL and the size
bound on a fake clock, and hits through the Python API (cost 0, `cached: true`, no backend call)."""

from __future__ import annotations

import pytest

from orchestray import AsyncClient
from orchestray.cache import CacheConfig, CachePolicy, cache_key, cacheable, canonical_request, provider_identity
from orchestray.config import ProviderConfig, parse_config
from orchestray.messages import ChatRequest, Message, ResponseFormat, TextPart, Tool, ToolCall
from orchestray.testing import LocalRuntime, ScriptedBackend


def request(**fields) -> ChatRequest:
    fields.setdefault("messages", (Message("user", "What is 2 + 2?"),))
    return ChatRequest(**fields)


ID = provider_identity(ProviderConfig(name="p", kind="openai", model="gpt-4o-mini", base_url="http://x"))


def test_the_key_ignores_spelling_key_order_and_defaults():
    schema_a = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}
    schema_b = {"required": ["a"], "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}, "type": "object"}
    one = request(
        temperature=0, model="route-a", user="alice", metadata={"run": "1"}, request_id="r1", max_retries=0,
        tools=(Tool("f", parameters=schema_a),), tool_choice="auto",
        response_format=ResponseFormat("json_schema", name="s", schema=schema_a),
    )
    two = request(
        messages=(Message("user", (TextPart("What is 2 + 2?"),)),),
        temperature=0.0, model="route-b", user="bob", n=1, top_p=1.0, presence_penalty=0.0, stop=(), logprobs=False,
        tools=(Tool("f", parameters=schema_b),), response_format=ResponseFormat("json_schema", name="s", schema=schema_b),
    )
    assert canonical_request(one) == canonical_request(two)
    assert cache_key(ID, one) == cache_key(ID, two)
    assert canonical_request(request(response_format=ResponseFormat("text"))) == canonical_request(request())


def test_tool_call_arguments_compare_as_json():
    def turn(arguments: str) -> ChatRequest:
        call = ToolCall("c1", "add", arguments)
        return request(messages=(
            Message("user", "add 1 and 2"), Message("assistant", None, tool_calls=(call,)),
            Message("tool", "3", tool_call_id="c1"),
        ))

    assert cache_key(ID, turn('{"a": 1, "b": 2}')) == cache_key(ID, turn('{"b":2,"a":1.0}'))
    assert cache_key(ID, turn('{"a": 1, "b": 2}')) != cache_key(ID, turn('{"a": 1, "b": 3}'))


@pytest.mark.parametrize("change", [
    {"messages": (Message("user", "What is 2 + 3?"),)},
    {"messages": (Message("system", "Be brief."), Message("user", "What is 2 + 2?"))},
    {"seed": 8}, {"max_tokens": 10}, {"top_p": 0.5}, {"n": 2}, {"stop": ("\n",)},
    {"response_format": ResponseFormat("json_object")}, {"tools": (Tool("g"),)}, {"extra_body": {"service_tier": "flex"}},
])
def test_the_key_changes_with_what_the_model_sees(change):
    base = request(temperature=0, seed=7)
    assert cache_key(ID, base) != cache_key(ID, base.with_changes(**change))


def test_deployments_of_one_model_share_entries_other_models_do_not():
    a = ProviderConfig(name="gpt:1", kind="openai", model="gpt-4o-mini", api_key_env="K1", limits={"rpm": 10})
    b = ProviderConfig(name="gpt:2", kind="openai", model="gpt-4o-mini", api_key_env="K2", price={"input_per_1k": 1})
    c = ProviderConfig(name="gpt:3", kind="openai", model="gpt-4o", api_key_env="K1")
    d = ProviderConfig(name="gpt:4", kind="anthropic", model="gpt-4o-mini", api_key_env="K1")
    assert provider_identity(a) == provider_identity(b)
    assert len({provider_identity(x) for x in (a, c, d)}) == 3
    s1 = ProviderConfig(name="s1", kind="simulated", simulated={"accuracy": 0.5})
    s2 = ProviderConfig(name="s1", kind="simulated", simulated={"accuracy": 0.9})
    assert provider_identity(s1) != provider_identity(s2)


def test_bypass_rules():
    on = CacheConfig()
    assert cacheable(request(temperature=0), on, None, None)
    assert not cacheable(request(), on, None, None)  # unset is the APIs' default, 1.0
    assert not cacheable(request(temperature=0.2), on, None, None)
    assert cacheable(request(temperature=0.7), CacheConfig(max_temperature=1), None, None)
    warm = CachePolicy(max_temperature=1)
    assert cacheable(request(temperature=0.7), on, warm, None)  # the provider says otherwise
    assert cacheable(request(), on, None, warm)  # so does a route
    assert not cacheable(request(temperature=0.7), on, warm, CachePolicy(max_temperature=0))  # the route wins
    assert not cacheable(request(temperature=0), on, CachePolicy(enabled=False), None)
    assert not cacheable(request(temperature=0), on, None, CachePolicy.model_validate(False))
    assert not cacheable(request(temperature=0), CacheConfig(enabled=False), None, None)


def _config(cache: dict | None = None, small: dict | None = None) -> dict:
    return {
        "providers": [
            {"name": "small", "kind": "openai", "model": "m", "base_url": "http://unused", "price": {"input_per_1k": 1, "output_per_1k": 1}, **(small or {})},
            {"name": "large", "kind": "openai", "model": "big", "base_url": "http://unused", "price": {"input_per_1k": 1, "output_per_1k": 1}},
        ],
        "routes": {
            "both": {"pattern": "fallback", "providers": ["small", "large"]},
            "warm": {"pattern": "fallback", "providers": ["small"], "cache": {"max_temperature": 1}},
        },
        **({"cache": cache} if cache is not None else {}),
    }


@pytest.fixture
def backends():
    return {"small": ScriptedBackend("Answer: 4"), "large": ScriptedBackend("Answer: 5")}


async def test_a_hit_costs_nothing_and_says_cached_without_calling_the_provider(backends):
    async with AsyncClient(_config({}), runtime=LocalRuntime(backends=backends)) as client:
        first = await client.complete("small", "What is 2 + 2?", temperature=0)
        second = await client.complete("small", "What is 2 + 2?", temperature=0, user="someone else")
        assert len(backends["small"].calls) == 1
        assert first.cost > 0 and not first.trace.cached
        assert second.content == first.content and second.cost == 0 and second.trace.cost == 0
        assert second.trace.cached and second.provider == "small" and second.trace.name == "small"
        assert second.trace.provider_calls() == 0
        stats = (await client._models()).get("small").snapshot()  # the limiter saw one call, not two
        assert stats.requests == 1
        # A route's calls are cached too: the route's only member answers from the cache.
        routed = await client.complete("both", "What is 2 + 2?", temperature=0)
        assert routed.cost == 0 and routed.trace.children[0].cached and len(backends["small"].calls) == 1


async def test_bypassed_calls_and_configs_without_a_cache_always_reach_the_provider(backends):
    async with AsyncClient(_config({}), runtime=LocalRuntime(backends=backends)) as client:
        for _ in range(2):
            await client.complete("small", "What is 2 + 2?")  # temperature unset: 1.0
            await client.complete("small", "What is 2 + 2?", temperature=0.5)
        assert len(backends["small"].calls) == 4
        for _ in range(2):
            await client.complete("warm", "What is 2 + 2?", temperature=0.5)  # the route allows it
        assert len(backends["small"].calls) == 5
    fresh = {"small": ScriptedBackend("Answer: 4"), "large": ScriptedBackend()}
    async with AsyncClient(_config(None), runtime=LocalRuntime(backends=fresh)) as client:
        for _ in range(2):
            await client.complete("small", "What is 2 + 2?", temperature=0)
        assert len(fresh["small"].calls) == 2


async def test_a_provider_can_opt_out(backends):
    async with AsyncClient(_config({}, small={"cache": False}), runtime=LocalRuntime(backends=backends)) as client:
        for _ in range(2):
            await client.complete("small", "What is 2 + 2?", temperature=0)
        assert len(backends["small"].calls) == 2


async def test_ttl_and_size_bound_on_a_fake_clock(backends, clock):
    runtime = LocalRuntime(backends=backends, clock=clock)
    async with AsyncClient(_config({"ttl_s": 60, "max_entries": 2}), runtime=runtime) as client:
        async def ask(q: str):
            return await client.complete("small", q, temperature=0)

        await ask("q1")
        clock.advance(59)
        assert (await ask("q1")).trace.cached
        clock.advance(2)
        assert not (await ask("q1")).trace.cached  # expired: asked again, kept again
        await ask("q2")
        await ask("q3")  # the bound of 2 pushes out q1, the least recently used
        assert len(backends["small"].calls) == 4
        assert (await ask("q3")).trace.cached and (await ask("q2")).trace.cached
        assert not (await ask("q1")).trace.cached
        assert len(backends["small"].calls) == 5


async def test_a_stream_is_kept_and_replayed(backends):
    async with AsyncClient(_config({}), runtime=LocalRuntime(backends=backends)) as client:
        first = [c async for c in client.stream("small", "What is 2 + 2?", temperature=0)]
        again = [c async for c in client.stream("small", "What is 2 + 2?", temperature=0)]
        assert len(backends["small"].calls) == 1
        assert "".join(c.delta for c in again) == "".join(c.delta for c in first) == "Answer: 4"
        assert again[-1].done and again[-1].completion.trace.cached and again[-1].completion.cost == 0
        # What a stream kept answers a plain call too.
        assert (await client.complete("small", "What is 2 + 2?", temperature=0)).trace.cached


async def test_an_unreachable_store_makes_every_call_a_miss_not_an_error(backends):
    config = _config({"redis_url": "redis://127.0.0.1:1/0"})
    async with AsyncClient(config, runtime=LocalRuntime(backends=backends)) as client:
        for _ in range(2):
            answer = await client.complete("small", "What is 2 + 2?", temperature=0)
            assert answer.content == "Answer: 4" and not answer.trace.cached
        assert len(backends["small"].calls) == 2
        assert (await client._models()).response_cache().faults >= 2


def test_config_errors_name_the_field():
    with pytest.raises(Exception, match=r"cache.max_temperature"):
        parse_config(_config({"max_temperature": 3}))
    with pytest.raises(Exception, match=r"providers\[0\].cache"):
        parse_config(_config({}, small={"cache": {"max_temprature": 1}}))
