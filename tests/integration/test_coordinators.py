"""Coordinator actors on Ray, calling provider actors that talk to emulators over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from orchestray.actors.directory import ModelDirectory
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_thread
from orchestray.messages import ChatRequest, Message
from orchestray.simulated import arithmetic_questions

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def emulators(**named_options):
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(run_in_thread(EmulatorOptions(**opts))) for name, opts in named_options.items()}


def setup(ray_session, emus: dict, routes: dict, **provider_fields):
    """A config whose providers point at the emulators (one each), with unique actor names."""
    suffix = uuid.uuid4().hex[:6]
    providers = []
    for name, emu in emus.items():
        fields = {"model": "sim-small" if "small" in name else "sim-large", **provider_fields.get(name, {})}
        providers.append({"name": f"{name}-{suffix}", "kind": "openai", "base_url": emu.openai_base_url, **fields})

    def rename(value):
        if isinstance(value, list):
            return [rename(v) for v in value]
        return f"{value}-{suffix}" if isinstance(value, str) and (value in emus or value in routes) else value

    renamed = {
        f"{route}-{suffix}": {k: rename(v) if k in ("providers", "judge", "default") else v for k, v in spec.items()}
        for route, spec in routes.items()
    }
    directory = ModelDirectory(parse_config({"providers": providers, "routes": renamed}))
    return directory, suffix


def cleanup(ray_session, directory: ModelDirectory):
    for handle in directory.made().values():
        ray_session.kill(handle.actor, no_restart=True)


def question(text: str, **fields) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), max_tokens=64, **fields)


async def test_race_losers_are_cancelled_at_the_emulator(ray_session):
    with emulators(fast={"latency_ms": 20}, slow={"latency_ms": 3000}) as emus:
        directory, s = setup(ray_session, emus, {"race": {"pattern": "race", "providers": ["slow", "fast"]}})
        try:
            # Both provider actors up first: a loser still starting is cancelled before it sends anything.
            await asyncio.gather(directory.get(f"slow-{s}").stats(), directory.get(f"fast-{s}").stats())
            answers = await asyncio.gather(*(directory.get(f"race-{s}").complete(question(f"What is {i} + 4?")) for i in range(5)))
            assert {a.provider for a in answers} == {f"fast-{s}"}
            assert all("cancelled" in a.trace.decision for a in answers)
            await asyncio.sleep(0.5)
            slow = emus["slow"].stats()
            # The losing HTTP calls were aborted: closed connections, not completed answers.
            assert slow["served"] == 0 and slow["cancelled"] == 5 and slow["in_flight"] == 0
            stats = await directory.get(f"slow-{s}").stats()
            assert stats.cancelled == 5 and stats.in_flight == 0
        finally:
            cleanup(ray_session, directory)


async def test_hedging_adds_no_more_calls_than_expected(ray_session):
    with emulators(primary={"latency_ms": 20}, backup={"latency_ms": 20}, slow={"latency_ms": 2000}) as emus:
        routes = {
            "quick": {"pattern": "race", "providers": ["primary", "backup"], "hedge_after_ms": 500},
            "stuck": {"pattern": "race", "providers": ["slow", "backup"], "hedge_after_ms": 100},
        }
        directory, s = setup(ray_session, emus, routes)
        try:
            # Every provider actor up first: a primary still starting under load loses to its hedge.
            await asyncio.gather(*(directory.get(f"{name}-{s}").stats() for name in emus))
            await asyncio.gather(*(directory.get(f"quick-{s}").complete(question(f"What is {i} * 3?")) for i in range(10)))
            assert emus["primary"].stats()["served"] == 10 and emus["backup"].stats()["served"] == 0
            answers = await asyncio.gather(*(directory.get(f"stuck-{s}").complete(question(f"What is {i} * 5?")) for i in range(10)))
            assert all(a.provider == f"backup-{s}" and a.trace.data["calls"] == 2 for a in answers)
            assert emus["backup"].stats()["served"] == 10
        finally:
            cleanup(ray_session, directory)


async def test_an_ensemble_survives_one_provider_failing(ray_session):
    with emulators(small_a={}, small_b={}, small_down={"fault_rate": 1.0}) as emus:
        routes = {"vote": {"pattern": "ensemble", "providers": ["small_a", "small_b", "small_down"], "extract": "number"}}
        directory, s = setup(ray_session, emus, routes, small_down={"max_retries": 0})
        try:
            answer = await directory.get(f"vote-{s}").complete(question("What is 12 + 30?"))
            data = answer.trace.data
            assert data["failed"] == 1 and data["valid"] == 2
            assert [c.outcome for c in answer.trace.children].count("error") == 1
            assert emus["small_down"].stats()["faults"] == 1
        finally:
            cleanup(ray_session, directory)


async def test_a_cascade_escalates_exactly_when_its_test_fails_and_nests_an_ensemble(ray_session):
    with emulators(small={}, large_a={}, large_b={}, large_c={}) as emus:
        routes = {
            "panel": {"pattern": "ensemble", "providers": ["large_a", "large_b", "large_c"], "extract": "number"},
            "cheap": {"pattern": "cascade", "providers": ["small", "panel"], "accept": "confidence", "threshold": 0.8},
        }
        directory, s = setup(ray_session, emus, routes)
        try:
            questions = arithmetic_questions(30, seed=11)
            answers = await asyncio.gather(*(directory.get(f"cheap-{s}").complete(question(q.prompt)) for q in questions))
            escalated = 0
            for answer in answers:
                first = answer.trace.data["stages"][0]
                went_on = answer.trace.data["answered_by"] == f"panel-{s}"
                assert went_on == (first["score"] is None or first["score"] < 0.8)
                escalated += went_on
                if went_on:
                    assert answer.trace.children[-1].kind == "ensemble" and len(answer.trace.children[-1].children) == 3
            assert 0 < escalated < 30
            # Exactly one call per escalation reached each member of the nested ensemble.
            assert [emus[n].stats()["served"] for n in ("large_a", "large_b", "large_c")] == [escalated] * 3
            assert emus["small"].stats()["served"] == 30
        finally:
            cleanup(ray_session, directory)


async def test_routes_stream_through_their_coordinator(ray_session):
    with emulators(fast={"latency_ms": 10}, slow={"latency_ms": 3000}) as emus:
        directory, s = setup(ray_session, emus, {"race": {"pattern": "race", "providers": ["slow", "fast"]}})
        try:
            chunks = [c async for c in directory.get(f"race-{s}").stream(question("What is 2 + 2?"))]
            assert chunks[-1].done and chunks[-1].completion.trace.kind == "race"
            assert "".join(c.delta for c in chunks) == chunks[-1].completion.content
        finally:
            cleanup(ray_session, directory)
