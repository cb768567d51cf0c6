"""Patterns over rich answers and requests: tool calls, JSON, images, history and `n`, with scripted models."""

import asyncio
import json

import pytest

from orchestray.config import parse_config
from orchestray.coordinators import (
    CascadeCoordinator,
    EnsembleCoordinator,
    FallbackCoordinator,
    PipelineCoordinator,
    RaceCoordinator,
    RouterCoordinator,
    TreeOfThoughtCoordinator,
    build_coordinator,
)
from orchestray.errors import AllFailedError, ProviderUnavailableError
from orchestray.messages import (
    ChatRequest,
    Chunk,
    Completion,
    ImagePart,
    Message,
    ResponseFormat,
    Span,
    TextPart,
    Tool,
    ToolCall,
)
from orchestray.policies.confidence import escalate_if_agreement_below, escalate_if_below, escalate_if_judge_below
from orchestray.policies.extraction import extractor
from orchestray.policies.routing import Router
from orchestray.serving._bodies import PATTERN_BODIES

WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
IMAGE = ImagePart("data:image/png;base64,iVBORw0KGgo=")


class Scripted:
    """A model whose replies are Completions (or Completion fields) given in order, or a function of the request."""

    def __init__(self, name, *replies, cost=1.0, fail=None):
        self.name, self.replies, self.cost, self.fail = name, list(replies), cost, fail
        self.calls: list[ChatRequest] = []

    async def complete(self, request):
        self.calls.append(request)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        reply = self.replies[0] if len(self.replies) == 1 else self.replies.pop(0)
        reply = reply(request) if callable(reply) else reply
        fields = {"content": reply} if isinstance(reply, str) else dict(reply)
        fields.setdefault("content", "")
        if fields.get("tool_calls"):
            fields.setdefault("finish_reason", "tool_calls")
        span = Span(name=self.name, cost=self.cost, input_tokens=7, output_tokens=3)
        return Completion(model=self.name, provider=self.name, input_tokens=7, output_tokens=3, cost=self.cost,
                          trace=span, **fields)

    async def stream(self, request):
        completion = await self.complete(request)
        if completion.content:
            yield Chunk(delta=completion.content)
        yield Chunk(done=True, completion=completion)


def models(*fakes):
    return {f.name: f for f in fakes}.__getitem__


def call(name="get_weather", arguments='{"city": "Paris"}', id="call_1"):
    return ToolCall(id, name, arguments)


def rich_request(**fields):
    """A conversation an agent loop sends: a system turn, an image question, a tool round trip, a follow-up."""
    messages = (
        Message("system", "Be brief."),
        Message("user", (TextPart("What is in this picture?"), IMAGE)),
        Message("assistant", None, tool_calls=(call(),)),
        Message("tool", '{"sky": "clear"}', tool_call_id="call_1"),
        Message("user", (TextPart("And the weather there?"), IMAGE)),
    )
    base = dict(tools=(WEATHER,), tool_choice="auto", temperature=0.3, top_p=0.9, seed=5,
                response_format=None, metadata={"who": "test"})
    base.update(fields)
    return ChatRequest(messages=messages, **base)


RICH = {
    "content": "",
    "tool_calls": (call(arguments='{"city":"Paris"}'),),
    "refusal": None,
    "logprobs": {"content": [{"token": "x", "logprob": -0.1, "bytes": None, "top_logprobs": []}], "refusal": None},
    "finish_reason": "tool_calls",
    "cached_tokens": 4,
    "reasoning_tokens": 2,
}


def without_trace(completion):
    return {f: getattr(completion, f) for f in RICH}


# --- race, fallback and route pass the answer through whole -------------------------------------


async def test_race_fallback_and_route_pass_tool_calls_logprobs_and_usage_details_through():
    model = Scripted("m", RICH)
    down = Scripted("down", fail=ProviderUnavailableError("503", provider="down"))
    request = rich_request()
    for coordinator in (
        RaceCoordinator("r", models(model, down), ["down", "m"]),
        FallbackCoordinator("f", models(model, down), ["down", "m"]),
        RouterCoordinator("a", models(model), Router([{"keywords": ["weather"], "to": "m"}], "m")),
    ):
        answer = await coordinator.complete(request)
        assert without_trace(answer) == RICH, coordinator.kind
        assert answer.trace.kind == coordinator.kind
    refusal = Scripted("m", {"content": "", "refusal": "I can't help with that.", "finish_reason": "content_filter"})
    answer = await RaceCoordinator("r", models(refusal), ["m"]).complete(request)
    assert answer.refusal == "I can't help with that." and answer.finish_reason == "content_filter"
    json_answer = Scripted("m", '{"answer": 4}')
    answer = await FallbackCoordinator("f", models(json_answer), ["m"]).complete(
        rich_request(response_format=ResponseFormat("json_object")))
    assert json.loads(answer.content) == {"answer": 4}


async def test_race_fallback_and_route_forward_the_request_as_the_caller_sent_it():
    a, b, c = Scripted("a", "hi"), Scripted("b", "hi"), Scripted("c", "hi")
    request = rich_request(response_format=ResponseFormat("json_schema", name="w", schema={"type": "object"}))
    await RaceCoordinator("r", models(a), ["a"]).complete(request)
    await FallbackCoordinator("f", models(b), ["b"]).complete(request)
    await RouterCoordinator("x", models(c), Router([], "c")).complete(request)
    assert a.calls == [request] and c.calls == [request]
    assert b.calls == [request]  # the last (only) member of a chain keeps the caller's retries


# --- every coordinator forwards the whole request ------------------------------------------------


async def test_ensemble_members_get_the_whole_request():
    member = Scripted("m", "Answer: 1")
    request = rich_request()
    await EnsembleCoordinator("e", models(member), ["m"], samples=3, temperature=0.7).complete(request)
    for asked in member.calls:
        assert asked.messages == request.messages and asked.tools == request.tools
        assert asked.tool_choice == "auto" and asked.top_p == 0.9 and asked.metadata == {"who": "test"}
        assert asked.temperature == 0.7
    assert len({r.seed for r in member.calls}) == 3


async def test_cascade_adds_its_instruction_to_the_last_user_turn_and_keeps_its_images():
    small = Scripted("small", "Sunny.\nConfidence: 0.3")
    large = Scripted("large", "Sunny.")
    request = rich_request()
    await CascadeCoordinator("c", models(small, large), ["small", "large"], escalate_if_below(0.8)).complete(request)
    asked = small.calls[0]
    assert asked.messages[:-1] == request.messages[:-1] and asked.tools == request.tools and asked.seed == 5
    last = asked.messages[-1]
    assert last.role == "user" and last.images() == (IMAGE,)
    assert last.text().startswith("And the weather there?") and "Confidence:" in last.text()
    assert large.calls == [request]


async def test_judges_and_search_steps_ask_in_text_over_the_conversation():
    a = Scripted("a", {"tool_calls": (call(),)})
    b = Scripted("b", "It is sunny in Paris. Answer: sunny")
    judge = Scripted("judge", "Best: 1")
    request = rich_request(response_format=ResponseFormat("json_object"), logprobs=True)
    answer = await EnsembleCoordinator("e", models(a, b, judge), ["a", "b"], vote="judge", judge="judge").complete(request)
    asked = judge.calls[0]
    assert asked.response_format is None and asked.logprobs is None and asked.tool_choice == "none"
    assert asked.tools == request.tools  # the history's tool turns need their tools declared
    assert asked.messages[:-1] == request.messages[:-1] and asked.messages[-1].images() == (IMAGE,)
    prompt = asked.messages[-1].text()
    assert 'Calls the tool get_weather({"city":"Paris"})' in prompt and "It is sunny in Paris" in prompt
    assert answer.provider == "a" and answer.tool_calls == (call(),) and answer.finish_reason == "tool_calls"

    tree = TreeOfThoughtCoordinator("t", None, ["a"])
    from orchestray.policies.search import Call

    step = tree._call_request(Call(id=3, kind="propose", node=0, prompt="Propose next steps for 4 4 6 8"), request)
    assert step.messages[:-1] == request.messages[:-1] and step.messages[-1].text() == "Propose next steps for 4 4 6 8"
    assert step.messages[-1].images() == (IMAGE,) and step.response_format is None and step.tool_choice == "none"
    assert step.top_p == 0.9 and step.max_tokens is not None


async def test_a_conversation_ending_in_a_tool_result_gets_the_judge_prompt_as_a_new_turn():
    a, judge = Scripted("a", "Answer: sunny"), Scripted("judge", "Best: 1")
    request = rich_request()
    request = request.with_changes(messages=request.messages[:4])  # ends with the tool result
    await EnsembleCoordinator("e", models(a, judge), ["a"], vote="judge", judge="judge").complete(request)
    asked = judge.calls[0].messages
    assert asked[:4] == request.messages and asked[4].role == "user" and "Candidate 1" in asked[4].text()


async def test_pipeline_steps_run_over_the_conversation_and_the_final_step_gets_the_output_options():
    drafter, finisher = Scripted("drafter", "a draft"), Scripted("finisher", {"tool_calls": (call(),)})
    request = rich_request(response_format=ResponseFormat("json_object"))
    answer = await PipelineCoordinator("p", models(drafter, finisher), [
        {"name": "draft", "model": "drafter", "prompt": "Draft: {input}"},
        {"name": "final", "model": "finisher", "prompt": "Finish {steps.draft}", "system": "You finish."},
    ]).complete(request)
    draft, final = drafter.calls[0], finisher.calls[0]
    assert draft.messages[-1].text() == "Draft: And the weather there?" and draft.messages[-1].images() == (IMAGE,)
    assert draft.response_format is None and draft.tool_choice == "none" and draft.temperature == 0.3
    assert final.messages[0] == Message("system", "You finish.") and final.messages[1:-1] == request.messages[:-1]
    assert final.messages[-1].text() == "Finish a draft" and final.response_format == ResponseFormat("json_object")
    assert final.tools == request.tools and final.tool_choice == "auto"
    assert answer.tool_calls == (call(),) and answer.finish_reason == "tool_calls"


# --- ensembles vote over tool calls and JSON -------------------------------------------------------


async def test_ensemble_votes_over_tool_calls_by_name_and_canonical_arguments():
    paris_spaced = Scripted("a", {"tool_calls": (call(arguments='{"city": "Paris", "unit": "c"}', id="x"),)})
    paris_packed = Scripted("b", {"tool_calls": (call(arguments='{"unit":"c","city":"Paris"}', id="y"),)})
    london = Scripted("c", {"tool_calls": (call(arguments='{"city": "London", "unit": "c"}'),)})
    text = Scripted("d", "Answer: it is sunny")
    answer = await EnsembleCoordinator("e", models(london, paris_spaced, paris_packed, text),
                                       ["c", "a", "b", "d"]).complete(rich_request())
    key = 'get_weather({"city":"Paris","unit":"c"})'
    assert answer.provider == "a" and answer.tool_calls[0].id == "x" and answer.finish_reason == "tool_calls"
    assert answer.content == "" and answer.confidence == pytest.approx(2 / 4)
    data = answer.trace.data
    assert data["counts"] == {'get_weather({"city":"London","unit":"c"})': 1, key: 2, "it is sunny": 1}
    assert data["answers"][1] == {"provider": "a", "answer": key, "cost": 1.0, "tool_calls": [key]}
    assert "tool_calls" not in data["answers"][3]


async def test_parallel_tool_calls_agree_in_any_order_and_tool_call_extract_ignores_text():
    first = Scripted("a", {"tool_calls": (call(arguments='{"city":"Paris"}'), call(arguments='{"city":"Rome"}'))})
    second = Scripted("b", {"tool_calls": (call(arguments='{"city":"Rome"}'), call(arguments='{"city":"Paris"}'))})
    texts = [Scripted(n, "Answer: sunny") for n in ("t1", "t2", "t3")]
    answer = await EnsembleCoordinator("e", models(first, second, *texts), ["t1", "t2", "t3", "a", "b"],
                                       extract=extractor("tool_call")).complete(rich_request())
    assert answer.provider == "a" and len(answer.tool_calls) == 2 and answer.trace.data["valid"] == 2


async def test_ensemble_votes_over_json_in_canonical_form_or_by_field():
    fmt = rich_request(response_format=ResponseFormat("json_object"))
    a = Scripted("a", '{"answer": 4, "why": "two twos"}')
    b = Scripted("b", '{"why": "four ones", "answer": 4.0}')
    c = Scripted("c", '{"answer": 5, "why": "two twos"}')
    d = Scripted("d", '{"why":"two twos","answer":5}')
    whole = await EnsembleCoordinator("e", models(a, b, c, d), ["a", "b", "c", "d"]).complete(fmt)
    assert whole.trace.data["counts"] == {'{"answer":4,"why":"two twos"}': 1, '{"answer":4,"why":"four ones"}': 1,
                                          '{"answer":5,"why":"two twos"}': 2}
    assert whole.provider == "c"
    by_field = await EnsembleCoordinator("e", models(a, b, c), ["a", "b", "c"],
                                         extract=extractor("json", path="answer")).complete(fmt)
    assert by_field.trace.data["counts"] == {"4": 2, "5": 1} and by_field.content == a.replies[0]


async def test_aggregate_answers_as_the_caller_asked_and_sees_tool_calls():
    a = Scripted("a", {"tool_calls": (call(),)})
    b = Scripted("b", "Answer: sunny")
    merger = Scripted("m", {"tool_calls": (call(arguments='{"city": "Paris"}', id="agg"),)})
    answer = await EnsembleCoordinator("e", models(a, b, merger), ["a", "b"], vote="aggregate",
                                       judge="m").complete(rich_request())
    asked = merger.calls[0]
    assert asked.tools == (WEATHER,) and asked.tool_choice == "auto"
    assert "Calls the tool get_weather" in asked.messages[-1].text() and "the tool call" in asked.messages[-1].text()
    assert answer.provider == "m" and answer.tool_calls[0].id == "agg" and answer.finish_reason == "tool_calls"
    assert answer.trace.data["aggregate"]["tool_calls"] == ['get_weather({"city":"Paris"})']
    assert answer.cost == 3.0


# --- cascade acceptance over tool calls and JSON ----------------------------------------------------


async def test_cascade_agreement_over_tool_calls_accepts_and_answers_with_the_majority_call():
    small = Scripted("small", {"tool_calls": (call(arguments='{"city":"Rome"}', id="r"),)},
                     {"tool_calls": (call(arguments='{"city": "Paris"}', id="p1"),)},
                     {"tool_calls": (call(arguments='{"city":"Paris"}', id="p2"),)})
    large = Scripted("large", "Answer: sunny")
    answer = await CascadeCoordinator("c", models(small, large), ["small", "large"],
                                      escalate_if_agreement_below(0.6, k=3), ask_confidence=False).complete(rich_request())
    assert answer.provider == "small" and large.calls == []
    assert answer.tool_calls[0].id == "p1" and answer.finish_reason == "tool_calls"
    stage = answer.trace.data["stages"][0]
    assert stage["answer"] == 'get_weather({"city":"Paris"})' and stage["score"] == pytest.approx(2 / 3)
    disagree = Scripted("small", {"tool_calls": (call(arguments='{"city":"Rome"}'),)}, {"tool_calls": (call(),)},
                        "Answer: sunny")
    answer = await CascadeCoordinator("c", models(disagree, large), ["small", "large"],
                                      escalate_if_agreement_below(0.6, k=3), ask_confidence=False).complete(rich_request())
    assert answer.provider == "large"


async def test_cascade_reads_confidence_from_a_json_field_and_asks_for_it_in_the_json():
    small = Scripted("small", '{"answer": "sunny", "confidence": 0.95}')
    large = Scripted("large", '{"answer": "cloudy"}')
    request = rich_request(response_format=ResponseFormat("json_object"))
    answer = await CascadeCoordinator("c", models(small, large), ["small", "large"], escalate_if_below(0.8)).complete(request)
    assert answer.provider == "small" and json.loads(answer.content)["answer"] == "sunny"
    assert '"confidence"' in small.calls[0].messages[-1].text() and "Confidence:" not in small.calls[0].messages[-1].text()
    assert answer.trace.data["stages"][0]["score"] == 0.95
    # A strict schema without the field is not fought: no instruction, no confidence, escalated.
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    strict = rich_request(response_format=ResponseFormat("json_schema", name="a", schema=schema, strict=True))
    quiet = Scripted("small", '{"answer": "sunny"}')
    answer = await CascadeCoordinator("c", models(quiet, large), ["small", "large"], escalate_if_below(0.8)).complete(strict)
    assert quiet.calls[0].messages == strict.messages and answer.provider == "large"
    agreed = Scripted("small", '{"answer": "sunny", "n": 1}', '{"n": 1, "answer": "sunny"}', '{"answer": "rain", "n": 1}')
    answer = await CascadeCoordinator("c", models(agreed, large), ["small", "large"],
                                      escalate_if_agreement_below(0.6, k=3), ask_confidence=False).complete(strict)
    assert answer.provider == "small" and answer.trace.data["stages"][0]["answer"] == '{"answer":"sunny","n":1}'


async def test_a_cascade_judge_grades_a_tool_call_in_text():
    small = Scripted("small", {"tool_calls": (call(),)})
    judge = Scripted("judge", "Score: 9/10")
    large = Scripted("large", "Answer: sunny")
    request = rich_request()
    answer = await CascadeCoordinator("c", models(small, large, judge), ["small", "large"],
                                      escalate_if_judge_below(0.7), judge="judge", ask_confidence=False).complete(request)
    assert answer.provider == "small" and answer.tool_calls == (call(),) and large.calls == []
    asked = judge.calls[0]
    assert 'Calls the tool get_weather({"city":"Paris"})' in asked.messages[-1].text()
    assert asked.tool_choice == "none" and asked.messages[-1].images() == (IMAGE,)
    assert answer.trace.data["stages"][0]["tool_calls"] == ['get_weather({"city":"Paris"})']


# --- n: independent runs of the pattern --------------------------------------------------------------


async def test_n_on_a_pattern_is_n_independent_runs_assembled_as_choices():
    answers = iter(["Answer: 1", "Answer: 1", "Answer: 2", "Answer: 2", "Answer: 3", "Answer: 3"])
    member = Scripted("m", lambda request: next(answers))
    ensemble = EnsembleCoordinator("e", models(member), ["m"], samples=2)
    answer = await ensemble.complete(rich_request(n=3, seed=11))
    assert [c.content for c in answer.choices()] == ["Answer: 1", "Answer: 2", "Answer: 3"]
    assert [c.index for c in answer.more_choices] == [1, 2]
    assert all(r.n == 1 for r in member.calls) and len({r.seed for r in member.calls}) == 6
    # Each run reports its winner's usage (as an n=1 ensemble does); the runs' usage and cost add up.
    assert answer.cost == 6.0 and answer.input_tokens == 3 * 7 and answer.output_tokens == 3 * 3
    assert answer.trace.input_tokens == 6 * 7
    trace = answer.trace
    assert trace.kind == "ensemble" and trace.data["n"] == 3 and "3 independent runs" in trace.decision
    assert [s.data["choice"] for s in trace.children] == [0, 1, 2]
    assert all(s.kind == "ensemble" and len(s.children) == 2 for s in trace.children)
    assert [c["choice"] for c in trace.data["choices"]] == [0, 1, 2]
    assert trace.total_cost() == 6.0
    # Run 0 is asked exactly as an n=1 request would be.
    single = Scripted("m", "Answer: 1")
    await EnsembleCoordinator("e", models(single), ["m"], samples=2).complete(rich_request(seed=11))
    assert [r.seed for r in single.calls] == [r.seed for r in member.calls[:2]]


async def test_n_runs_of_tool_call_answers_and_a_failed_run_fails_the_call():
    member = Scripted("m", {"tool_calls": (call(),)})
    answer = await RaceCoordinator("r", models(member), ["m"]).complete(rich_request(n=2))
    assert answer.finish_reason == "tool_calls" and answer.more_choices[0].tool_calls == (call(),)
    assert answer.more_choices[0].finish_reason == "tool_calls" and answer.cost == 2.0
    flaky = Scripted("f", "Answer: 1")
    failures = iter([None, ProviderUnavailableError("503", provider="f")])
    answer_once = flaky.complete

    async def second_call_fails(request):
        failure = next(failures)
        if failure is not None:
            raise failure
        return await answer_once(request)

    flaky.complete = second_call_fails
    with pytest.raises(AllFailedError) as caught:
        await FallbackCoordinator("chain", models(flaky), ["f"]).complete(rich_request(n=2))
    span = caught.value.span
    assert span.kind == "fallback" and "2 independent runs; 1 failed" in span.decision
    assert [(s.data["choice"], s.outcome) for s in span.children] == [(0, "ok"), (1, "error")]


async def test_n_streams_every_choice_and_the_tool_calls_as_pieces():
    member = Scripted("m", "sunny", {"tool_calls": (call(),)})
    chunks = [c async for c in RaceCoordinator("r", models(member), ["m"]).stream(rich_request(n=2))]
    pieces = [(c.choice, c.delta, c.tool_calls) for c in chunks if not c.done]
    assert (0, "sunny", ()) in pieces
    assert any(choice == 1 and calls and calls[0].name == "get_weather" and calls[0].arguments == call().arguments
               for choice, _, calls in pieces)
    final = chunks[-1]
    assert final.done and len(final.completion.choices()) == 2 and final.completion.trace.data["n"] == 2
    # n = 1 still streams straight from the winner.
    plain = [c async for c in RaceCoordinator("r", models(Scripted("m", "sunny")), ["m"]).stream(rich_request())]
    assert [c.delta for c in plain if not c.done] == ["sunny"] and plain[-1].completion.trace.kind == "race"


async def test_n_runs_through_a_routes_built_from_config():
    config = parse_config({
        "providers": [{"name": "a", "kind": "simulated"}],
        "routes": {"vote": {"pattern": "ensemble", "providers": ["a"], "samples": 3}},
    })
    member = Scripted("a", "Answer: 9")
    answer = await build_coordinator("vote", config, models(member)).complete(rich_request(n=2))
    assert len(answer.choices()) == 2 and len(member.calls) == 6 and answer.cost == 6.0


# --- the config and the HTTP bodies name the new extract options -------------------------------------


def test_routes_and_pattern_bodies_take_tool_call_and_json_path_extracts():
    body = PATTERN_BODIES["ensemble"](messages=[{"role": "user", "content": "hi"}], providers=["a"], extract="json", path="answer",
                        tools=[{"type": "function", "function": {"name": "f"}}], n=2)
    cascade = PATTERN_BODIES["cascade"](messages=[{"role": "user", "content": "hi"}], providers=["a", "a"], accept="agreement",
                          extract="tool_call")
    config = parse_config({"providers": [{"name": "a", "kind": "simulated"}],
                           "routes": {"e": body.route(), "c": cascade.route()}})
    ensemble = build_coordinator("e", config, models())
    assert ensemble.extract.kind == "json" and ensemble.extract.options == {"path": "answer"}
    assert build_coordinator("c", config, models()).accept.extract.kind == "tool_call"
    assert body.chat_body()["tools"][0]["function"]["name"] == "f" and body.chat_body()["n"] == 2
    with pytest.raises(Exception, match="`path` is for extract: json"):
        parse_config({"providers": [{"name": "a", "kind": "simulated"}],
                      "routes": {"e": {"pattern": "ensemble", "providers": ["a"], "path": "answer"}}})
