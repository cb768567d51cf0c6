"""The emulator's two dialects without HTTP: what they decode from each API's request bodies,
and the bodies and events they answer with (OpenAI's validated against the official schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from orchestray.emulator._wire import ANTHROPIC, OPENAI, WireError
from orchestray.messages import ImagePart, Message, ResponseFormat, TextPart, Tool, ToolCall
from orchestray.simulated import SimProfile, SimulatedModel

COMPONENTS = json.loads((Path(__file__).parents[1] / "openai" / "openai-schemas.json").read_text())["components"]
RESPONSE = Draft202012Validator({"$ref": "#/components/schemas/CreateChatCompletionResponse", "components": COMPONENTS})
CHUNK = Draft202012Validator({"$ref": "#/components/schemas/CreateChatCompletionStreamResponse", "components": COMPONENTS})
ERROR = Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse", "components": COMPONENTS})
MODEL = SimulatedModel("sim", SimProfile(accuracy=1.0, latency_ms=0.0))
CALCULATOR = {
    "type": "object",
    "properties": {"expression": {"type": "string"}},
    "required": ["expression"],
    "additionalProperties": False,
}
PNG = "data:image/png;base64,iVBORw0KGgo="


def encode(body: dict) -> bytes:
    return json.dumps(body).encode()


def problems(validator: Draft202012Validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def openai_answer(body: dict) -> tuple[dict, list[dict]]:
    """The completion body and the stream's chunks for one OpenAI request body."""
    call = OPENAI.decode(encode(body))
    answers = MODEL.answers(call.request)
    completion = json.loads(OPENAI.completion(call, answers, "chatcmpl-1", 1700000000))
    frames = (
        OPENAI.stream_open(call, answers, "chatcmpl-1", 1700000000)
        + b"".join(OPENAI.stream_pieces(call, answers, "chatcmpl-1", 1700000000))
        + OPENAI.stream_close(call, answers, "chatcmpl-1", 1700000000)
    )
    events = [line[len(b"data: "):] for line in frames.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    return completion, [json.loads(e) for e in events[:-1]]


# --- OpenAI: decoding ----------------------------------------------------------------------------


def test_openai_decodes_the_whole_chat_surface():
    body = {
        "model": "sim-small",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be exact."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}, {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"2 + 2\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "4"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "calculator", "description": "math", "parameters": CALCULATOR, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "calculator"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}},
        "n": 2, "logprobs": True, "top_logprobs": 2, "max_completion_tokens": 50, "stop": "###", "seed": 3,
        "presence_penalty": 0.5, "frequency_penalty": 0.1, "logit_bias": {"50256": -100}, "reasoning_effort": "low",
        "user": "u1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto", "modalities": ["text"],
        "stream": True, "stream_options": {"include_usage": True},
    }
    call = OPENAI.decode(encode(body))
    r = call.request
    assert call.stream and call.include_usage and call.max_output == 100
    assert r.messages[0] == Message("developer", "Be exact.")
    assert r.messages[1].content == (TextPart("What is 2 + 2?"), ImagePart(PNG, "low"))
    assert r.messages[2].content is None and r.messages[2].tool_calls == (ToolCall("call_1", "calculator", '{"expression":"2 + 2"}'),)
    assert r.messages[3] == Message("tool", "4", tool_call_id="call_1")
    assert r.tools == (Tool("calculator", "math", CALCULATOR, True),)
    assert r.tool_choice == {"type": "function", "function": {"name": "calculator"}}
    assert r.response_format == ResponseFormat("json_schema", "out", {"type": "object"}, True)
    assert (r.n, r.logprobs, r.top_logprobs, r.max_tokens, r.stop, r.seed) == (2, True, 2, 50, ("###",), 3)
    assert (r.presence_penalty, r.frequency_penalty, r.logit_bias, r.reasoning_effort) == (0.5, 0.1, {"50256": -100}, "low")
    assert (r.user, r.metadata, r.store, r.parallel_tool_calls) == ("u1", {"k": "v"}, False, False)
    assert r.extra_body == {"service_tier": "auto"}


def test_openai_accepts_what_the_schema_allows_at_its_edges():
    body = {
        "model": "sim", "n": None, "stream": None, "stream_options": {"include_usage": None},
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}}]},
            {"role": "tool", "tool_call_id": "", "content": ""},
            {"role": "function", "name": "lookup", "content": "4"},
        ],
    }
    call = OPENAI.decode(encode(body))
    assert call.request.n == 1 and not call.stream and not call.include_usage
    assert call.request.messages[2].tool_calls == (ToolCall("c1", "grep", "x"),)
    assert call.request.messages[4] == Message("tool", "4", name="lookup")
    completion, _ = openai_answer(body)
    assert completion["choices"][0]["message"]["content"].endswith("Answer: 4")


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        (OPENAI, {"model": "m", "messages": [{"role": "user", "content": "hi"}], "colour": 1}),
        (ANTHROPIC, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "colour": 1}),
    ],
)
def test_an_unknown_top_level_field_is_refused_by_name_as_the_apis_do(dialect, body):
    with pytest.raises(WireError) as caught:
        dialect.decode(encode(body))
    assert caught.value.param == "colour" and caught.value.message.startswith("colour: unknown field")


def test_openai_names_where_a_body_is_malformed():
    body = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]}
    with pytest.raises(WireError) as caught:
        OPENAI.decode(encode(body))
    assert caught.value.param == "messages[0].tool_calls[0]"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"web_search_options": {}}, "web_search_options"),
        ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [{"type": "function", "function": {"name": "calc"}}]}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "custom", "custom": {"name": "calc"}}, "tools": [{"type": "function", "function": {"name": "calc"}}]}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]}},
          "tools": [{"type": "function", "function": {"name": "calc"}}]}, "tool_choice"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"messages": [{"role": "tool", "content": "4"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///x.png"}}]}]}, "messages[0].content[0]"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_openai_refuses_by_name(change, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(WireError) as caught:
        OPENAI.decode(encode(body))
    assert caught.value.param == param and param.split("[")[0] in caught.value.message
    assert not problems(ERROR, json.loads(OPENAI.error(400, caught.value.message, param=caught.value.param)))


# --- OpenAI: answers -----------------------------------------------------------------------------

QUESTION = [{"role": "user", "content": "What is 37 + 48?"}]
TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic", "parameters": CALCULATOR}}]


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"tools": TOOLS},
        {"tools": TOOLS, "n": 3, "logprobs": True, "stream_options": {"include_usage": True}},
        {"tools": TOOLS, "messages": [{"role": "user", "content": "What is 2 + 3 and 4 * 5?"}]},
        {"n": 3, "logprobs": True, "top_logprobs": 2},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}}}},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": PNG}}]}]},
    ],
    ids=["text", "tool-call", "tool-calls-n3-usage", "parallel-tool-calls", "n3-logprobs", "json-object", "json-schema", "image"],
)
def test_openai_bodies_and_chunks_validate(extra):
    completion, chunks = openai_answer({"model": "sim", "messages": QUESTION, **extra})
    assert not problems(RESPONSE, completion)
    for chunk in chunks:
        assert not problems(CHUNK, chunk), chunk


def test_openai_allowed_tools_choice_is_decoded_and_honoured():
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "calculator"}}]}}
    completion, _ = openai_answer({"model": "sim", "messages": [{"role": "user", "content": "hello"}], "tools": TOOLS, "tool_choice": choice})
    assert not problems(RESPONSE, completion)
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "calculator"


def test_openai_tool_call_answer_and_its_stream():
    completion, chunks = openai_answer({"model": "sim", "messages": QUESTION, "tools": TOOLS})
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and json.loads(call["function"]["arguments"]) == {"expression": "37 + 48"}
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["id"] == call["id"] and deltas[0]["function"]["name"] == "calculator"
    assert all("id" not in d for d in deltas[1:])
    assert "".join(d["function"]["arguments"] for d in deltas) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_streams_n_choices_with_their_logprobs():
    completion, chunks = openai_answer({"model": "sim", "messages": QUESTION, "n": 3, "logprobs": True, "temperature": 1})
    for index in range(3):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        text = "".join(c["delta"].get("content") or "" for c in mine)
        assert text == completion["choices"][index]["message"]["content"]
        streamed = [t for c in mine if c["logprobs"] for t in c["logprobs"]["content"]]
        assert streamed == completion["choices"][index]["logprobs"]["content"]
        assert mine[-1]["finish_reason"] == "stop"


# --- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_decodes_tools_blocks_and_structured_output():
    body = {
        "model": "sim", "max_tokens": 100,
        "system": [{"type": "text", "text": "Be exact."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is 2 + 2?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me compute."},
                {"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "2 + 2"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4"}]}]},
        ],
        "tools": [{"name": "calculator", "description": "math", "input_schema": CALCULATOR}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}, "effort": "low"},
        "top_k": 5, "metadata": {"user_id": "u"},
    }
    r = ANTHROPIC.decode(encode(body)).request
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "tool"]
    assert r.messages[1].content == (TextPart("What is 2 + 2?"), ImagePart(PNG), ImagePart("https://example.com/a.png"))
    assert r.messages[2] == Message("assistant", "Let me compute.", tool_calls=(ToolCall("toolu_1", "calculator", '{"expression":"2 + 2"}'),))
    assert r.messages[3] == Message("tool", "4", tool_call_id="toolu_1")
    assert r.tools == (Tool("calculator", "math", CALCULATOR),)
    assert (r.tool_choice, r.parallel_tool_calls, r.top_k, r.reasoning_effort) == ("required", False, 5, "low")
    assert r.response_format == ResponseFormat("json_schema", "output", {"type": "object"})
    assert r.metadata == {"user_id": "u"}


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [{"name": "calc", "input_schema": CALCULATOR}]}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}]}, "messages.0.content.0"),
    ],
)
def test_anthropic_refuses_by_name(change, mentions):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(WireError, match=mentions.replace(".", r"\.")):
        ANTHROPIC.decode(encode(body))


def sse(frames: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in frames.split(b"\n\n"):
        if block:
            event, data = block.split(b"\n", 1)
            events.append((event[len(b"event: "):].decode(), json.loads(data[len(b"data: "):])))
    return events


def test_anthropic_tool_use_answer_and_its_stream():
    body = {"model": "sim", "max_tokens": 100, "messages": QUESTION, "tools": [{"name": "calculator", "description": "Evaluate arithmetic", "input_schema": CALCULATOR}]}
    call = ANTHROPIC.decode(encode(body))
    answers = MODEL.answers(call.request)
    message = json.loads(ANTHROPIC.completion(call, answers, "msg_1", 0))
    assert message["stop_reason"] == "tool_use"
    (block,) = message["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_") and block["input"] == {"expression": "37 + 48"}
    frames = ANTHROPIC.stream_open(call, answers, "msg_1", 0) + b"".join(ANTHROPIC.stream_pieces(call, answers, "msg_1", 0))
    events = sse(frames + ANTHROPIC.stream_close(call, answers, "msg_1", 0))
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[2][1]["content_block"]
    assert start == {"type": "tool_use", "id": block["id"], "name": "calculator", "input": {}}
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == block["input"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_answers_from_a_tool_result():
    body = {
        "model": "sim", "max_tokens": 100,
        "tools": [{"name": "calculator", "input_schema": CALCULATOR}],
        "messages": [
            {"role": "user", "content": "What is 37 + 48?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "calculator", "input": {"expression": "37 + 48"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "85"}]},
        ],
    }
    call = ANTHROPIC.decode(encode(body))
    message = json.loads(ANTHROPIC.completion(call, MODEL.answers(call.request), "msg_2", 0))
    assert message["stop_reason"] == "end_turn"
    assert message["content"][0]["text"].endswith("Answer: 85")


def test_anthropic_streams_parallel_tool_use_blocks_in_order():
    body = {"model": "sim", "max_tokens": 100, "messages": [{"role": "user", "content": "What is 2 + 3 and 4 * 5?"}],
            "tools": [{"name": "calculator", "description": "Evaluate arithmetic", "input_schema": CALCULATOR}]}
    call = ANTHROPIC.decode(encode(body))
    answers = MODEL.answers(call.request)
    events = sse(b"".join(ANTHROPIC.stream_pieces(call, answers, "msg_3", 0)))
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    for index, expected in ((0, "2 + 3"), (1, "4 * 5")):
        partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == index)
        assert json.loads(partial) == {"expression": expected}
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1]


@pytest.mark.parametrize("name", ["Sum", "Product", "Total", "Answer"])
def test_the_anthropic_backends_json_tool_gets_the_answer_whatever_the_schema_is_named(name):
    # `responses.parse(text_format=Sum)` through an anthropic-kind provider: the backend asks for
    # the JSON with a forced tool named after the schema; a name that sounds like a calculator
    # once made the model fill `answer` with the question's first operand (17 for "17 + 25").
    from orchestray.anthropic_format import json_tool_name, reply_from_message, request_body
    from orchestray.messages import ChatRequest

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    for question, expected in (("What is 17 + 25?", 42), ("What is 6 * 7?", 42), ("What is 90 - 48?", 42)):
        request = ChatRequest(messages=(Message("user", question),), response_format=ResponseFormat("json_schema", name, schema, True))
        call = ANTHROPIC.decode(encode(request_body(request, "sim")))
        message = json.loads(ANTHROPIC.completion(call, MODEL.answers(call.request), "msg_4", 0))
        assert json.loads(reply_from_message(message, json_tool_name(request)).text) == {"answer": expected}
