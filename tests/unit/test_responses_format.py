"""The Responses translation both ways against golden dicts; every built Response and stream event
validates against OpenAI's published schemas (tests/openai/openai-responses-batch-schemas.json)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from orchestray.backends.simulated import SimulatedBackend
from orchestray.batch import BatchOptions, run_batch
from orchestray.config import load_config
from orchestray.errors import RequestError
from orchestray.messages import Chunk, Completion, ImagePart, Message, ResponseFormat, TextPart, Tool, ToolCall, ToolCallDelta
from orchestray.provider import Provider
from orchestray.responses_format import items_to_messages, parse_responses_body, response_body
from orchestray.responses_stream import ResponseStream

from conftest import OpenAISchemas

SCHEMAS = OpenAISchemas(Path(__file__).parents[1] / "openai" / "openai-responses-batch-schemas.json")

BODY = {
    "model": "sim-small",
    "instructions": "Answer briefly.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "What is in "},
                                     {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"}]},
        {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"at\":\"a\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
    ],
    "tools": [{"type": "function", "name": "look", "description": "Look", "parameters": {"type": "object"}, "strict": True}],
    "tool_choice": {"type": "function", "name": "look"},
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
    "max_output_tokens": 50, "temperature": 0.5, "top_p": 0.9, "reasoning": {"effort": "low"},
    "metadata": {"k": "v"}, "user": "u-1",
}


def test_a_body_becomes_the_wires_request():
    request = parse_responses_body(BODY).request
    assert request.messages == (
        Message("system", "Answer briefly."),
        Message("user", (TextPart("What is in "), ImagePart("https://x.test/a.png", "low"))),
        Message("assistant", None, tool_calls=(ToolCall("call_1", "look", "{\"at\":\"a\"}"),)),
        Message("tool", "a cat", tool_call_id="call_1"),
    )
    assert request.tools == (Tool("look", "Look", {"type": "object"}, True),)
    assert request.tool_choice == {"type": "function", "function": {"name": "look"}}
    assert request.response_format == ResponseFormat("json_schema", "answer", {"type": "object"}, True)
    assert (request.max_tokens, request.temperature, request.top_p, request.reasoning_effort, request.user,
            request.metadata, request.parallel_tool_calls) == (50, 0.5, 0.9, "low", "u-1", {"k": "v"}, False)


def test_an_answer_becomes_a_golden_response():
    call = parse_responses_body(BODY)
    completion = Completion(content="", model="m", provider="sim-small", finish_reason="tool_calls",
                            tool_calls=(ToolCall("call_2", "look", "{}"),), input_tokens=10, output_tokens=3,
                            cached_tokens=4, reasoning_tokens=1)
    body = response_body(call.echo, "resp_1", 1700000000, completion=completion, extension=False)
    SCHEMAS.check("Response", body)
    assert body["status"] == "completed" and body["incomplete_details"] is None
    (item,) = body["output"]
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "function_call", "call_id": "call_2", "name": "look", "arguments": "{}", "status": "completed"}
    assert body["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                             "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13}
    assert body["tool_choice"] == {"type": "function", "name": "look"} and body["metadata"] == {"k": "v"}
    assert body["text"]["format"]["strict"] is True and body["max_output_tokens"] == 50
    cut = response_body(call.echo, "resp_2", 0, completion=Completion(content="par", model="m", provider="p",
                                                                      finish_reason="length"))
    SCHEMAS.check("Response", cut)
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["content"][0] == {"type": "output_text", "text": "par", "annotations": [], "logprobs": []}


def test_assistant_text_and_its_calls_are_one_turn():
    items = parse_responses_body({"model": "m", "input": [
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"}]}).items
    (turn,) = items_to_messages(items)
    assert turn.content == "Let me look." and [c.id for c in turn.tool_calls] == ["a", "b"]


@pytest.mark.parametrize("body, param, words", [
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", ["web_search", "provider 'sim-small'"]),
    ({"input": "x", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type", ["code_interpreter"]),
    ({"input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice", ["file_search"]),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", ["reasoning"]),
    ({"input": "x", "conversation": "conv_1"}, "conversation", ["not supported"]),
    ({"input": "x", "truncation": "auto"}, "truncation", ["disabled"]),
    ({"input": "x", "reasoning": {"summary": "auto"}}, "reasoning.summary", ["summaries"]),
    ({"input": "x", "bogus": 1}, "bogus", ["unknown field"]),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
     "input[0].content[0].image_url", ["data URL"]),
    ({}, "input", ["required"]),
])
def test_what_no_provider_can_honour_is_refused_by_name(body, param, words):
    with pytest.raises(RequestError) as caught:
        parse_responses_body({"model": "sim-small", **body}, lambda m: f"provider {m!r} (simulated)")
    assert caught.value.param == param and all(w in str(caught.value) for w in words)


def events_of(stream: ResponseStream, chunks, completion=None, fail=None):
    events = stream.start()
    for chunk in chunks:
        events += stream.piece(chunk)
    events += stream.fail(*fail) if fail else stream.finish(completion)
    for event in events:
        SCHEMAS.check("ResponseStreamEvent", event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_a_stream_of_text_then_a_call():
    echo = parse_responses_body({"model": "m", "input": "x"}).echo
    completion = Completion(content="Hi.", model="m", provider="p", finish_reason="tool_calls",
                            tool_calls=(ToolCall("call_9", "f", "{\"a\":1}"),))
    events = events_of(ResponseStream(echo, "resp_1"), [
        Chunk(delta="Hi"), Chunk(delta="."), Chunk(tool_calls=(ToolCallDelta(0, "call_9", "f"),)),
        Chunk(tool_calls=(ToolCallDelta(0, arguments="{\"a\":"),)), Chunk(tool_calls=(ToolCallDelta(0, arguments="1}"),))],
        completion)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert [i["id"] for i in final["output"]] == [events[2]["item"]["id"], events[9]["item"]["id"]]
    assert final["output"][1]["arguments"] == "{\"a\":1}" and final["output"][0]["content"][0]["text"] == "Hi."


def test_a_stream_that_fails_midway_ends_in_response_failed():
    echo = parse_responses_body({"model": "m", "input": "x"}).echo
    events = events_of(ResponseStream(echo, "resp_1"), [Chunk(delta="Hal")], fail=(503, "provider down"))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "provider down"}


def test_a_final_answer_never_streamed_is_announced_whole():
    echo = parse_responses_body({"model": "m", "input": "x"}).echo
    events = events_of(ResponseStream(echo, "resp_1"), [], Completion(content="42", model="m", provider="p"))
    assert "response.output_text.delta" in [e["type"] for e in events]


def test_batch_lines_for_v1_responses_answer_with_response_objects(tmp_path):
    config = load_config(None)
    models = {p.name: Provider(p, SimulatedBackend(p)) for p in config.providers}
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": {"model": "sim-small", "input": "What is 2 + 3?"}},
             {"custom_id": "b", "method": "POST", "url": "/v1/responses",
              "body": {"model": "sim-small", "input": "x", "tools": [{"type": "web_search"}]}},
             {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "sim-small", "messages": [{"role": "user", "content": "What is 2 + 3?"}]}}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    asyncio.run(run_batch(source, out, models.__getitem__, models.__contains__, BatchOptions(progress=False)))
    records = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    answer = records["a"]["response"]["body"]
    SCHEMAS.check("Response", answer)
    assert answer["object"] == "response" and answer["output"][0]["content"][0]["text"].strip().endswith("5")
    assert records["b"]["error"]["code"] == "invalid_body" and "web_search" in records["b"]["error"]["message"]
    assert records["c"]["response"]["body"]["object"] == "chat.completion"
