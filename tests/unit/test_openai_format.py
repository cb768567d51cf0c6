"""The chat-completions wire: request bodies to ChatRequest (golden), and every body built
validates against OpenAI's published schemas (tests/openai/openai-schemas.json)."""

from __future__ import annotations

import pytest

from orchestray.config import parse_config
from orchestray.errors import RequestError
from orchestray.messages import (
    ChatRequest,
    Choice,
    Completion,
    ImagePart,
    Message,
    ResponseFormat,
    Span,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
)
from orchestray.openai_format import chunk_body, completion_body, parse_chat_body
from orchestray.serving._bodies import openai_error

PIXEL = "data:image/png;base64,iVBORw0KGgo="
LOGPROBS = {"content": [{"token": "4", "logprob": -0.01, "bytes": [52], "top_logprobs": [{"token": "4", "logprob": -0.01, "bytes": [52]}]}],
            "refusal": None}


def test_a_body_with_every_field_parses_to_its_golden_request():
    body = {
        "model": "sim-small",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is shown?"},
                                         {"type": "image_url", "image_url": {"url": PIXEL, "detail": "high"}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "a cat"}]},
        ],
        "max_completion_tokens": 20, "max_tokens": 99, "temperature": 0.5, "top_p": 0.9, "stop": "END", "seed": 3,
        "n": 3, "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}}, "parallel_tool_calls": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True}},
        "logprobs": True, "top_logprobs": 1, "presence_penalty": 0.1, "frequency_penalty": -0.1, "logit_bias": {"50256": -100},
        "reasoning_effort": "low", "user": "u", "metadata": {"k": "v"}, "store": False,
        "service_tier": "flex", "prediction": None, "vendor_knob": 7,
    }
    assert parse_chat_body(body, "r1") == ChatRequest(
        messages=(
            Message("developer", "Be brief."),
            Message("user", (TextPart("What is shown?"), ImagePart(PIXEL, "high"))),
            Message("assistant", None, tool_calls=(ToolCall("c1", "look", "{}"),)),
            Message("tool", "a cat", tool_call_id="c1"),
        ),
        model="sim-small", max_tokens=20, temperature=0.5, top_p=0.9, stop=("END",), seed=3, n=3,
        tools=(Tool("look", None, {"type": "object"}),), tool_choice={"type": "function", "function": {"name": "look"}},
        parallel_tool_calls=True, response_format=ResponseFormat("json_schema", "a", {"type": "object"}, True),
        logprobs=True, top_logprobs=1, presence_penalty=0.1, frequency_penalty=-0.1, logit_bias={"50256": -100},
        reasoning_effort="low", user="u", metadata={"k": "v"}, store=False,
        # unmodelled fields travel on for the provider to send or refuse; a null one is not set
        extra_body={"service_tier": "flex", "vendor_knob": 7}, request_id="r1",
    )


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "bogus": 1}]}]},
         "messages[0].content[0].bogus"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        ({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}}]}]}, "messages[0].content[0].image_url.url"),
        ({"model": "m", "messages": []}, "messages"),
    ],
)
def test_an_invalid_body_names_the_field_at_fault(body, param):
    with pytest.raises(RequestError) as refused:
        parse_chat_body(body)
    assert refused.value.param == param, str(refused.value)


def completion(**fields) -> Completion:
    return Completion(content=fields.pop("content", "Answer: 4"), model="sim-small", provider="sim-small",
                      input_tokens=12, output_tokens=4, trace=Span(name="sim-small"), **fields)


@pytest.mark.parametrize(
    "answer",
    [
        completion(),
        completion(content="", tool_calls=(ToolCall("call_1", "add", '{"a": 2, "b": 2}'),), finish_reason="tool_calls"),
        completion(content="", refusal="I can't help with that.", finish_reason="content_filter"),
        completion(logprobs=LOGPROBS, cached_tokens=8, reasoning_tokens=2,
                   more_choices=(Choice(index=1, content="4", logprobs=LOGPROBS, finish_reason="length"),
                                 Choice(index=2, content="", tool_calls=(ToolCall("c", "f", "{}"),), finish_reason="tool_calls"))),
    ],
    ids=["text", "tool-calls", "refusal", "n=3"],
)
def test_completion_bodies_are_valid_chat_completions(openai_schemas, answer):
    body = completion_body(answer, "chatcmpl-1", model="a-route")
    openai_schemas.check("CreateChatCompletionResponse", body)
    assert len(body["choices"]) == len(answer.choices()) and body["model"] == "a-route"


def test_every_kind_of_stream_chunk_is_a_valid_chunk(openai_schemas):
    answer = completion(logprobs=LOGPROBS)
    chunks = [
        chunk_body("c", "m", 1, role=True),
        chunk_body("c", "m", 1, delta="Answer"),
        chunk_body("c", "m", 1, role=True, choice=1, tool_calls=(ToolCallDelta(0, "call_1", "add", ""),)),
        chunk_body("c", "m", 1, choice=1, tool_calls=(ToolCallDelta(0, None, None, '{"a": 2}'),)),
        chunk_body("c", "m", 1, choice=2, refusal="I can't"),
        chunk_body("c", "m", 1, finish_reason="stop", logprobs=LOGPROBS),
        chunk_body("c", "m", 1, finish_reason="tool_calls", choice=1),
        chunk_body("c", "m", 1, completion=answer),
    ]
    for chunk in chunks:
        openai_schemas.check("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 429, 500, 502, 503, 504])
def test_error_bodies_are_valid_errors(openai_schemas, status):
    openai_schemas.check("ErrorResponse", openai_error(status, "what went wrong", "some_code", "messages[0].content"))
    openai_schemas.check("ErrorResponse", openai_error(status, "what went wrong", "some_code"))


def test_the_model_listing_is_a_valid_list_of_models(openai_schemas):
    from orchestray.serving._app import models_body

    config = parse_config({"providers": [{"name": "a", "kind": "simulated"}],
                           "routes": {"r": {"pattern": "race", "providers": ["a"]}}})
    body = models_body(config)
    openai_schemas.check("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == ["a", "r"]
