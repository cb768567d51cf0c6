"""Provider actors on the shared Ray instance, talking to the emulator through the real SDKs."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestray.actors.provider import provider_handle
from orchestray.errors import ProviderTimeoutError, ProviderUnavailableError
from orchestray.messages import ChatRequest, Message, estimate_tokens

pytestmark = pytest.mark.integration


def ask(text: str = "What is 6 * 7?", **fields) -> ChatRequest:
    return ChatRequest(messages=(Message("system", "Be brief."), Message("user", text)), max_tokens=64, **fields)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_complete_and_stream_in_both_wire_formats(kind, provider_config, emulator, kill_actors):
    handle = provider_handle(provider_config(kind, price={"input_per_1k": 1, "output_per_1k": 1}))
    kill_actors(handle)
    completion = await handle.complete(ask())
    assert completion.content.rstrip().endswith(("Answer: 42",)) or "Answer:" in completion.content
    assert completion.input_tokens > 0 and completion.output_tokens > 0
    assert completion.cost == pytest.approx((completion.input_tokens + completion.output_tokens) / 1000)
    chunks = [chunk async for chunk in handle.stream(ask())]
    text = "".join(c.delta for c in chunks)
    assert len(chunks) > 2 and chunks[-1].done
    assert chunks[-1].completion.content == text and chunks[-1].completion.output_tokens > 0
    assert emulator.stats()["served"] == 2


async def test_a_429_storm_is_absorbed_without_losing_a_request(provider_config, emulator, kill_actors):
    # The provider believes it may send 3000 a minute; the emulator allows 300 (5 a second).
    emulator.configure(rpm=300)
    handle = provider_handle(provider_config(limits={"rpm": 3000}, max_retries=12))
    kill_actors(handle)
    results = await asyncio.gather(*(handle.complete(ask(f"What is {i} + 1?")) for i in range(30)))
    assert len(results) == 30
    stats = emulator.stats()
    assert stats["served"] == 30
    actor_stats = await handle.stats()
    assert actor_stats.rate_limited == stats["rate_limited"] and actor_stats.failed == 0
    assert actor_stats.limit_rpm == 300  # the headers said lower than configured: it paces at theirs


async def test_a_limit_is_learned_and_keys_are_balanced(ray_session, kill_actors):
    """A provider with two deployments of their own limits, one unconfigured: one balance route."""
    from orchestray.actors.directory import ModelDirectory
    from orchestray.config import parse_config
    from orchestray.emulator import EmulatorOptions, run_in_thread

    with run_in_thread(EmulatorOptions(rpm=1200)) as big, run_in_thread(EmulatorOptions(rpm=600)) as small:
        name = f"pool-{time.monotonic_ns()}"
        config = parse_config({"providers": [{
            "name": name, "kind": "openai", "model": "sim-small",
            "deployments": [{"base_url": big.openai_base_url, "limits": {"rpm": 1200}}, {"base_url": small.openai_base_url}],
        }]})  # fmt: skip
        directory = ModelDirectory(config)
        members = [directory.get(f"{name}:1"), directory.get(f"{name}:2"), directory.get(name)]
        for handle in members:
            kill_actors(handle)
        await members[1].complete(ask())  # the unconfigured key learns its limit from the headers
        assert (await members[1].stats()).limit_rpm == 600
        await members[2].complete(ask())  # the route reads its members' limits in the background
        await asyncio.sleep(0.5)
        big.reset()
        small.reset()
        results = await asyncio.gather(*(members[2].complete(ask(f"What is {i} + 2?")) for i in range(60)))
        served = [big.stats()["served"], small.stats()["served"]]
        rate_limited = big.stats()["rate_limited"] + small.stats()["rate_limited"]
    assert len(results) == 60 and {r.trace.kind for r in results} == {"balance"}
    assert sum(served) == 60 and 36 <= served[0] <= 44  # two to one, as the limits are
    assert rate_limited == 0


async def test_injected_faults_are_retried_until_answered(provider_config, emulator, kill_actors):
    emulator.configure(fault_rate=0.3, seed=5)
    handle = provider_handle(provider_config(max_retries=8))
    kill_actors(handle)
    results = await asyncio.gather(*(handle.complete(ask(f"What is {i} * 2?")) for i in range(30)))
    assert len(results) == 30
    assert emulator.stats()["faults"] > 0
    assert sum(r.trace.retries for r in results) == emulator.stats()["faults"]


async def test_a_hang_times_out_and_repeated_failures_open_the_circuit(provider_config, emulator, kill_actors):
    emulator.configure(hang_rate=1.0)
    handle = provider_handle(provider_config(timeout_s=0.3, max_retries=0, circuit={"min_calls": 2, "cooldown_s": 30}))
    kill_actors(handle)
    for _ in range(2):
        with pytest.raises(ProviderTimeoutError):
            await handle.complete(ask())
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="cooling down"):
        await handle.complete(ask())
    assert time.monotonic() - started < 0.25  # said at once, no call made


async def test_two_callers_share_one_limit(ray_session, provider_config, emulator, kill_actors):
    """Two Ray tasks find the same named actor; together they stay under the emulator's limit."""
    emulator.configure(rpm=1200)  # 20 a second, enforced per second
    config = provider_config(limits={"rpm": 1200})
    kill_actors(provider_handle(config))

    @ray_session.remote(num_cpus=0)
    def caller(config_json: str, n: int) -> int:
        # Everything imported here: the test module itself is not importable on a worker.
        from orchestray.actors.provider import provider_handle as find
        from orchestray.config import ProviderConfig
        from orchestray.messages import ChatRequest, Message

        handle = find(ProviderConfig.model_validate_json(config_json))

        def question(i):
            return ChatRequest(messages=(Message("user", f"What is {i} - 3?"),), max_tokens=64, max_retries=0)

        async def run():
            return await asyncio.gather(*(handle.complete(question(i)) for i in range(n)))

        return len(asyncio.run(run()))

    done = await asyncio.gather(*(caller.remote(config.model_dump_json(), 40) for _ in range(2)))
    assert done == [40, 40]
    stats = emulator.stats()
    assert stats["served"] == 80 and stats["rate_limited"] == 0


async def test_a_crashed_provider_actor_restarts_and_no_call_hangs(ray_session, provider_config, emulator, kill_actors):
    emulator.configure(latency_ms=400)
    handle = provider_handle(provider_config())
    kill_actors(handle)
    await handle.complete(ask())
    calls = [asyncio.create_task(handle.complete(ask(f"What is {i} + 9?"))) for i in range(8)]
    await asyncio.sleep(0.15)
    ray_session.kill(handle.actor, no_restart=False)  # the process dies; Ray restarts the actor
    done, pending = await asyncio.wait(calls, timeout=30)
    assert not pending
    for task in done:
        error = task.exception()
        # Each call was either retried on the restarted actor or failed clearly.
        assert error is None or isinstance(error, ProviderUnavailableError)
    assert (await handle.complete(ask())).content


async def test_many_calls_in_flight_share_ray_calls_and_each_gets_its_own_answer(provider_config, emulator, kill_actors):
    """Beyond the first, calls made while others are in flight go through `multiplex.Channel`."""
    emulator.configure(latency_ms=30)
    handle = provider_handle(provider_config())
    kill_actors(handle)
    # Prompts of different lengths: each answer's reported input tokens tell whose answer it is.
    requests = [ChatRequest(messages=(Message("user", "word " * (i + 1)),), max_tokens=8) for i in range(60)]
    answers = await asyncio.gather(*(handle.complete(r) for r in requests))
    assert [a.input_tokens for a in answers] == [estimate_tokens(r.prompt_text()) for r in requests]
    assert len({a.input_tokens for a in answers}) > 30
    assert emulator.stats()["served"] == 60
    stats = await handle.stats()
    assert stats.requests == 60 and stats.in_flight == 0
