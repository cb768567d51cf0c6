"""The Python API's tests, one body for both runtimes: tests/unit/test_client.py runs them on
`runtime="local"`, tests/integration/test_client.py on `runtime="ray"`. Each test gets the
`client` fixture (an AsyncClient over `api_config(names)`) and `names`, the providers' names."""

from __future__ import annotations

import json
import pickle

import pytest

import orchestray
from orchestray import ChatRequest, Completion, Message, RequestError, UnknownModelError


def api_config(names: dict[str, str]) -> dict:
    """Three quick simulated providers (named by `names` so Ray tests get fresh actors) and a route per pattern."""
    small, large, flaky = names["small"], names["large"], names["flaky"]

    def sim(name, accuracy, price):
        return {"name": name, "kind": "simulated", "simulated": {"accuracy": accuracy, "latency_ms": 2, "latency_sigma": 0.1},
                "price": {"input_per_1k": price, "output_per_1k": price}}

    return {
        "providers": [sim(small, 0.7, 0.001), sim(large, 1.0, 0.01), sim(flaky, 0.5, 0.001)],
        "routes": {
            "vote": {"pattern": "ensemble", "providers": [small], "samples": 3, "temperature": 0.7},
            "cheap": {"pattern": "cascade", "providers": [small, large], "threshold": 0.8},
            "reliable": {"pattern": "fallback", "providers": [flaky, large]},
        },
    }


async def test_complete_takes_text_messages_or_a_request_and_openai_fields(client, names):
    small = names["small"]
    answer = await client.complete(small, "What is 17 * 3?", max_tokens=64, temperature=0, seed=7)
    assert isinstance(answer, Completion) and answer.provider == small and answer.cost > 0
    assert answer.trace.name == small and answer.trace.kind == "provider"
    typed = await client.complete(names["large"], [Message("system", "Be brief."), Message("user", "What is 2 + 2?")])
    assert typed.content.endswith("Answer: 4")
    dicts = await client.complete(names["large"], [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}])
    assert dicts.content.endswith("Answer: 4")
    request = ChatRequest(messages=(Message("user", "What is 5 + 5?"),), max_tokens=32)
    assert (await client.complete(names["large"], request)).content.endswith("Answer: 10")


async def test_routes_are_called_by_name_and_carry_their_trace(client, names):
    answer = await client.complete("cheap", "What is 12 + 30?")
    assert answer.trace.kind == "cascade" and answer.provider in (names["small"], names["large"])
    vote = await client.complete("vote", "What is 3 + 4?")
    assert vote.trace.kind == "ensemble" and vote.trace.provider_calls() == 3 and vote.confidence is not None


async def test_stream_gives_pieces_then_the_whole_completion(client, names):
    chunks = [c async for c in client.stream(names["large"], "What is 6 * 7?")]
    assert chunks[-1].done and chunks[-1].completion.content.endswith("Answer: 42")
    assert "".join(c.delta for c in chunks) == chunks[-1].completion.content
    route_chunks = [c async for c in client.stream("cheap", "What is 6 * 7?")]
    assert route_chunks[-1].done and route_chunks[-1].completion.trace.kind == "cascade"


async def test_every_ad_hoc_pattern_runs_with_its_routes_options(client, names):
    small, large, flaky = names["small"], names["large"], names["flaky"]
    race = await client.race([small, large], "What is 9 + 9?", hedge_after_ms=1000)
    assert race.trace.kind == "race"
    vote = await client.ensemble([small, large], "What is 9 + 9?", samples=2, vote="majority", max_tokens=64)
    assert vote.trace.kind == "ensemble" and vote.trace.provider_calls() == 4
    cascade = await client.cascade([small, large], "What is 9 + 9?", threshold=0.99)
    assert cascade.trace.kind == "cascade"
    tree = await client.tree_of_thought([large], "4 9 10 13", breadth=2, depth=3, evaluations=1)
    assert tree.trace.kind == "tree_of_thought"
    routed = await client.route([{"keywords": ["urgent"], "to": large}], "urgent: What is 1 + 1?", default=small)
    assert routed.provider == large
    fallback = await client.fallback([flaky, large], "What is 9 + 9?")
    assert fallback.trace.kind == "fallback"
    steps = [{"name": "solve", "model": large, "prompt": "What is {input}?"},
             {"name": "check", "model": large, "prompt": "What is {steps.solve.output} + 0?", "parse": "number"}]
    piped = await client.pipeline(steps, "20 + 1")
    assert piped.trace.kind == "pipeline" and [s.name for s in piped.trace.children] == ["solve", "check"]


async def test_ad_hoc_patterns_stream_as_named_routes_do(client, names):
    small, large = names["small"], names["large"]
    chunks = [c async for c in await client.race([large], "What is 6 * 7?", stream=True, hedge_after_ms=1000)]
    whole = chunks[-1].completion
    assert chunks[-1].done and whole.trace.kind == "race" and whole.content.endswith("Answer: 42")
    assert len(chunks) > 2 and "".join(c.delta for c in chunks) == whole.content  # in pieces, adding up
    voted = [c async for c in await client.ensemble([small], "What is 6 * 7?", stream=True, samples=3)]
    assert voted[-1].done and voted[-1].completion.trace.provider_calls() == 3
    # A bad option is refused when the stream is asked for, before any chunk.
    with pytest.raises(RequestError, match=r"^samples: Input should be less than or equal to 64"):
        await client.ensemble([small], "hi", samples=65, stream=True)


async def test_bad_pattern_options_read_as_the_configs_errors(client, names):
    with pytest.raises(RequestError, match=r"^providers\[1\]: unknown model 'ghost': no provider or route has that name"):
        await client.race([names["small"], "ghost"], "hi")
    with pytest.raises(RequestError, match=r"^samples: Input should be less than or equal to 64"):
        await client.ensemble([names["small"]], "hi", samples=65)
    with pytest.raises(RequestError, match=r"^vote: Input should be"):
        await client.ensemble([names["small"]], "hi", vote="loudest")
    with pytest.raises(RequestError, match=r"temperature"):
        await client.complete(names["small"], "hi", temperature=3)
    with pytest.raises(UnknownModelError):
        await client.complete("ghost", "hi")


async def test_batch_yields_one_record_per_request_a_bad_one_included(client, names, tmp_path):
    small = names["small"]
    requests = [{"model": small, "messages": [{"role": "user", "content": f"What is {i} + 1?"}]} for i in range(20)]
    requests.append({"model": "ghost", "messages": [{"role": "user", "content": "hi"}]})
    records = [r async for r in client.batch(requests)]
    assert sorted(r.custom_id for r in records) == sorted(str(i) for i in range(21))
    errors = {r.custom_id: r.error.code for r in records if r.error is not None}
    assert errors == {"20": "model_not_found"}
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"q{i}", "body": r}) + "\n" for i, r in enumerate(requests[:10])))
    first = [r async for r in client.batch(source, output=out, model="cheap")]
    assert len(first) == 10 and all(r.response.body["model"] == "cheap" for r in first)
    again = [r async for r in client.batch(source, output=out, model="cheap")]
    assert again == [] and len(out.read_text().splitlines()) == 10  # resumed: nothing left to do


async def test_a_pickled_client_calls_the_same_providers(client, names):
    copy = pickle.loads(pickle.dumps(client))
    assert copy.models() == client.models()
    assert (await copy.complete(names["large"], "What is 1 + 2?")).content.endswith("Answer: 3")
    await copy.close()


def test_the_blocking_client_has_the_same_methods(client, names):
    with orchestray.Client(client.config, runtime=client.runtime) as blocking:
        assert blocking.complete(names["large"], "What is 2 * 8?").content.endswith("Answer: 16")
        pieces = list(blocking.stream(names["large"], "What is 2 * 8?"))
        assert pieces[-1].done
        assert blocking.ensemble([names["small"]], "What is 2 * 8?", samples=3).trace.provider_calls() == 3
        streamed = list(blocking.race([names["large"]], "What is 2 * 8?", stream=True))
        assert streamed[-1].done and "".join(c.delta for c in streamed) == streamed[-1].completion.content
        records = list(blocking.batch([ChatRequest(messages=(Message("user", "What is 1 + 1?"),), model=names["small"])]))
        assert len(records) == 1 and records[0].error is None


async def test_run_takes_a_workflow_over_the_clients_models(client, names):
    wf = orchestray.Workflow("check")
    wf.step("ask", model=names["large"], prompt="What is {input}?")
    wf.step("route", model="vote", prompt="What is {input}?")
    wf.step("both", fn=lambda ask, route: (ask, route), inputs=["ask", "route"])
    result = await client.run(wf, "6 * 7")
    assert isinstance(result, orchestray.WorkflowResult)
    assert {name: step.status for name, step in result.steps.items()} == {
        "ask": "completed", "route": "completed", "both": "completed"}
    asked, voted = result.steps["both"].output
    assert "42" in str(asked)
