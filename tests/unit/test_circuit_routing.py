"""Race, fallback and route pass over a member whose circuit is open instead of waiting for its
probe, learning it from the member's own answer (no extra call); with nowhere else to go, they
wait for the probe. Real providers with scripted backends, on a fake clock."""

import pytest

from orchestray.config import ProviderConfig
from orchestray.coordinators._circuits import cooling_for
from orchestray.coordinators.fallback import FallbackCoordinator
from orchestray.coordinators.race import RaceCoordinator
from orchestray.coordinators.router import RouterCoordinator
from orchestray.errors import AllFailedError, CircuitOpenError, ProviderUnavailableError
from orchestray.messages import ChatRequest, Message
from orchestray.policies.circuit import CircuitView
from orchestray.policies.routing import Router
from orchestray.provider import Provider
from orchestray.testing import FakeClock, ScriptedBackend

COOLDOWN = 30.0


def provider(name, clock, script=(), reply="Answer: 4"):
    config = ProviderConfig(name=name, kind="simulated", timeout_s=20.0, max_retries=2,  # a deadline of 60 s: past the cool-down
                            circuit={"failure_rate": 1.0, "min_calls": 1, "cooldown_s": COOLDOWN})
    backend = ScriptedBackend(reply, script=script, clock=clock)
    return Provider(config, backend, clock=clock, sleep=clock.sleep), backend


async def opened(name, clock):
    """A provider whose circuit has just opened (its one call failed), healthy again behind it."""
    p, backend = provider(name, clock, script=[ProviderUnavailableError("503", provider=name, status=503)])
    with pytest.raises(ProviderUnavailableError):
        await p.complete(ask(max_retries=0))
    assert p.circuit.state == "open"
    return p, backend


def ask(text="What is 2 + 2?", **fields):
    return ChatRequest(messages=(Message("user", text),), **fields)


async def test_a_hedged_race_skips_an_open_member_at_once_and_then_without_a_call():
    clock = FakeClock()
    down, down_backend = await opened("down", clock)
    up, up_backend = provider("up", clock)
    race = RaceCoordinator("r", {"down": down, "up": up}.__getitem__, ["down", "up"], hedge_after_ms=5000, clock=clock)
    started = clock.now
    answer = await race.complete(ask())
    assert answer.provider == "up"
    assert clock.now - started < 1  # not the hedge delay, nor the cool-down
    assert len(down_backend.calls) == 1 and down.stats.requests == 2  # it said "open" at once
    assert race.circuits.is_open("down", clock.now)
    answer = await race.complete(ask())
    assert answer.provider == "up" and down.stats.requests == 2  # passed over: no call at all
    assert answer.trace.data["calls"] == 1


async def test_a_race_whose_members_are_all_cooling_waits_for_a_probe():
    clock = FakeClock()
    a, a_backend = await opened("a", clock)
    b, _ = await opened("b", clock)
    race = RaceCoordinator("r", {"a": a, "b": b}.__getitem__, ["a", "b"], clock=clock)
    started = clock.now
    answer = await race.complete(ask())  # nowhere else to go: the probes decide
    assert answer.content == "Answer: 4"
    assert clock.now - started >= COOLDOWN - 1
    assert not race.circuits.is_open(answer.provider, clock.now)


async def test_a_race_with_somewhere_else_to_go_says_so_without_waiting():
    clock = FakeClock()
    a, _ = await opened("a", clock)
    b, _ = await opened("b", clock)
    race = RaceCoordinator("r", {"a": a, "b": b}.__getitem__, ["a", "b"], clock=clock)
    started = clock.now
    with pytest.raises(AllFailedError) as failed:
        await race.complete(ask(max_retries=0))  # a fallback's member, say
    assert clock.now - started < 1
    assert cooling_for(failed.value) == pytest.approx(COOLDOWN, abs=1)
    with pytest.raises(AllFailedError) as failed:  # now known: passed over without a call
        await race.complete(ask(max_retries=0))
    assert all(isinstance(c, CircuitOpenError) for c in failed.value.causes) and a.stats.requests == 2


async def test_a_fallback_moves_an_open_member_behind_the_others_and_waits_for_it_only_last():
    clock = FakeClock()
    down, _ = await opened("down", clock)
    broken = []
    up, up_backend = provider("up", clock, reply=lambda request: broken[0] if broken else "Answer: 4")
    chain = FallbackCoordinator("f", {"down": down, "up": up}.__getitem__, ["down", "up"], clock=clock)
    assert (await chain.complete(ask())).provider == "up"
    assert (await chain.complete(ask())).provider == "up" and down.stats.requests == 2  # no second call
    # The healthy member now keeps its retries (it is the last that is not cooling down)...
    assert up_backend.calls[-1].max_retries is None and up_backend.calls[-1].wait_for_circuit is False
    # ...and when it fails too, the cooling member is the last one left: it waits for its probe.
    broken.append(ProviderUnavailableError("503", provider="up", status=503))
    started = clock.now
    answer = await chain.complete(ask())
    assert answer.provider == "down" and clock.now - started >= COOLDOWN - 1
    assert answer.trace.data["position"] == 0


async def test_a_route_chooses_again_around_a_target_whose_circuit_is_open():
    clock = FakeClock()
    down, _ = await opened("down", clock)
    up, _ = provider("up", clock)
    router = Router([{"keywords": ["math"], "to": "down"}], "up")
    route = RouterCoordinator("x", {"down": down, "up": up}.__getitem__, router, clock=clock)
    answer = await route.complete(ask("a math question: 2 + 2?"))
    assert answer.provider == "up" and clock.now < 1000 + 1
    answer = await route.complete(ask("a math question: 2 + 2?"))
    assert answer.provider == "up" and down.stats.requests == 2
    assert "down is cooling down" in answer.trace.decision
    chunks = [c async for c in route.stream(ask("a math question: 3 + 3?"))]
    assert chunks[-1].completion.provider == "up" and down.stats.requests == 2


async def test_a_route_with_no_other_target_waits_for_the_probe():
    clock = FakeClock()
    down, _ = await opened("down", clock)
    route = RouterCoordinator("x", {"down": down}.__getitem__, Router([], "down"), clock=clock)
    assert (await route.complete(ask())).provider == "down"
    assert clock.now >= 1000 + COOLDOWN - 1


def test_the_view_forgets_an_open_member_when_its_time_is_up_or_it_answers():
    view = CircuitView()
    view.saw_open("a", 10.0, now=0.0)
    view.saw_open("b", 5.0, now=0.0)
    assert view.order(["a", "b", "c"], 1.0) == (["c"], ["b", "a"])
    assert view.open_for("a", 4.0) == pytest.approx(6.0)
    assert not view.is_open("b", 5.0)
    view.saw_answer("a")
    assert view.order(["a", "b", "c"], 6.0) == (["a", "b", "c"], [])
