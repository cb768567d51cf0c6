"""The Anthropic Messages wire, both directions, against golden dicts."""

from __future__ import annotations

import json

import pytest

from orchestray.anthropic_format import (
    StreamDecoder,
    StreamEncoder,
    error_body,
    json_tool_name,
    message_body,
    parse_messages_body,
    reply_from_message,
    request_body,
)
from orchestray.errors import RequestError
from orchestray.messages import (
    AudioPart,
    ChatRequest,
    Chunk,
    Completion,
    FilePart,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
)

WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
WEATHER_PARAM = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = "iVBORw0KGgo="


# ChatRequest -> Messages API body ─────────────────────────────────────────────────────────


def test_system_and_developer_go_to_system_and_text_turns_stay_strings():
    request = ChatRequest(
        messages=(Message("system", "Be brief."), Message("developer", "Answer in French."), Message("user", "Hi")),
        max_tokens=50,
        stop=("END",),
        user="u-1",
    )
    assert request_body(request, "claude-x") == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 50,
        "system": "Be brief.\n\nAnswer in French.",
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }


def test_max_tokens_defaults_because_the_api_requires_it():
    assert request_body(ChatRequest(messages=(Message("user", "Hi"),)), "m")["max_tokens"] == 1024


def test_tool_round_trip_history_becomes_tool_use_and_merged_tool_results():
    request = ChatRequest(
        messages=(
            Message("user", "Weather in Paris and Rome?"),
            Message("assistant", None, tool_calls=(
                ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
                ToolCall("call_2", "get_weather", '{"city": "Rome"}'),
            )),
            Message("tool", "18C", tool_call_id="call_1"),
            Message("tool", "24C", tool_call_id="call_2"),
            Message("user", "Which is warmer?"),
        ),
        tools=(WEATHER,),
        tool_choice="auto",
    )
    body = request_body(request, "m")
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
            {"type": "text", "text": "Which is warmer?"},
        ]},
    ]
    assert body["tools"] == [WEATHER_PARAM]
    assert body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice, parallel, expected):
    request = ChatRequest(messages=(Message("user", "x"),), tools=(WEATHER,), tool_choice=choice,
                          parallel_tool_calls=parallel)
    assert request_body(request, "m")["tool_choice"] == expected


def test_a_tool_without_parameters_gets_an_empty_object_schema():
    request = ChatRequest(messages=(Message("user", "x"),), tools=(Tool("now"),))
    assert request_body(request, "m")["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


def test_images_as_base64_and_url_sources_and_pdfs_as_documents():
    request = ChatRequest(messages=(Message("user", (
        TextPart("What is in these?"),
        ImagePart(f"data:image/png;base64,{PNG}", detail="low"),
        ImagePart("https://example.com/cat.jpg"),
        FilePart(file_data="data:application/pdf;base64,JVBERi0=", filename="a.pdf"),
    )),))
    assert request_body(request, "m")["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
         "title": "a.pdf"},
    ]}]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (Message("user", (AudioPart("AAAA", "wav"),)), "messages[0].content[0]"),
        (Message("user", (FilePart(file_id="file-1"),)), "messages[0].content[0]"),
        (Message("user", "hi", name="bob"), "messages[0].name"),
        (Message("assistant", None, tool_calls=(ToolCall("c", "f", "[1]"),)), "messages[0].tool_calls[0]"),
    ],
)
def test_what_the_messages_api_cannot_carry_is_refused_by_name(message, param):
    with pytest.raises(RequestError) as caught:
        request_body(ChatRequest(messages=(message,)), "m")
    assert caught.value.param == param


def test_sampling_fields_are_sent_only_when_set_and_left_out_on_request():
    plain = ChatRequest(messages=(Message("user", "x"),))
    assert not {"temperature", "top_p", "top_k"} & request_body(plain, "m").keys()
    sampled = plain.with_changes(temperature=0.0, top_p=0.9, top_k=40)
    body = request_body(sampled, "m")
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.0, 0.9, 40)
    assert not {"temperature", "top_p", "top_k"} & request_body(sampled, "m", sampling=False).keys()


def test_temperature_above_anthropics_range_is_refused_not_clamped():
    with pytest.raises(RequestError, match="temperature"):
        request_body(ChatRequest(messages=(Message("user", "x"),), temperature=1.5), "m")


def test_extra_body_goes_in_last():
    request = ChatRequest(messages=(Message("user", "x"),), extra_body={"thinking": {"type": "adaptive"}})
    assert request_body(request, "m")["thinking"] == {"type": "adaptive"}


SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


def test_json_schema_is_a_forced_tool_carrying_the_schema():
    request = ChatRequest(messages=(Message("user", "17*3?"),),
                          response_format=ResponseFormat("json_schema", "Result", SCHEMA, strict=True))
    body = request_body(request, "m")
    assert body["tools"] == [{"name": "Result", "description": "Give your final answer as this tool's input, a JSON object.",
                              "input_schema": SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": "Result"}


def test_json_object_with_tools_on_offer_makes_the_model_call_one_of_them_or_answer():
    request = ChatRequest(messages=(Message("user", "x"),), tools=(WEATHER,), response_format=ResponseFormat("json_object"))
    body = request_body(request, "m")
    assert [t["name"] for t in body["tools"]] == ["get_weather", "json_answer"]
    assert body["tools"][1]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "any"}


def test_the_answer_tool_never_takes_a_callers_tool_name():
    request = ChatRequest(messages=(Message("user", "x"),), tools=(Tool("json_answer"),),
                          response_format=ResponseFormat("json_object"))
    assert json_tool_name(request) == "json_answer_answer"
    assert json_tool_name(request.with_changes(response_format=ResponseFormat("text"))) is None


# Messages API answer -> Reply ─────────────────────────────────────────────────────────────


def test_a_text_answer_with_cached_usage():
    reply = reply_from_message({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 5},
    })
    assert (reply.text, reply.finish_reason, reply.model) == ("Hello", "stop", "claude-x")
    # OpenAI's prompt_tokens hold the cached part; Anthropic's input_tokens do not.
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens) == (115, 3, 100)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter")],
)
def test_stop_reasons(stop, finish):
    content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}] if stop == "tool_use" else []
    message = {"content": content, "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert reply_from_message(message).finish_reason == finish


def test_tool_use_blocks_become_tool_calls_with_json_text_arguments():
    reply = reply_from_message({
        "model": "m", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2},
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    })
    assert reply.text == "Let me look."
    assert reply.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    assert reply.finish_reason == "tool_calls"


def test_the_answer_tools_input_is_the_json_content_not_a_tool_call():
    reply = reply_from_message({
        "model": "m", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2},
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "Result", "input": {"answer": 51}}],
    }, json_tool="Result")
    assert (reply.text, reply.tool_calls, reply.finish_reason) == ('{"answer": 51}', (), "stop")


def _events(*events):
    return list(events)


STREAM = _events(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "content": [],
                                          "usage": {"input_tokens": 12, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
)


def test_stream_decoder_yields_text_and_tool_call_deltas():
    decoder = StreamDecoder()
    pieces = [p for e in STREAM for p in decoder.feed(e)]
    assert pieces == [
        "Checking",
        Chunk(tool_calls=(ToolCallDelta(0, "toolu_1", "get_weather", ""),)),
        Chunk(tool_calls=(ToolCallDelta(0, arguments='{"city": '),)),
        Chunk(tool_calls=(ToolCallDelta(0, arguments='"Paris"}'),)),
    ]
    reply = decoder.reply()
    assert reply.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    assert (reply.text, reply.finish_reason, reply.input_tokens, reply.output_tokens, reply.model) == (
        "Checking", "tool_calls", 12, 9, "claude-x")


def test_stream_decoder_streams_the_answer_tool_as_content():
    decoder = StreamDecoder(json_tool="get_weather")
    pieces = [p for e in STREAM for p in decoder.feed(e)]
    assert pieces == ["Checking", '{"city": ', '"Paris"}']
    reply = decoder.reply()
    assert (reply.text, reply.tool_calls, reply.finish_reason) == ('Checking{"city": "Paris"}', (), "stop")


def test_stream_decoder_a_call_without_arguments_has_an_empty_object():
    decoder = StreamDecoder()
    decoder.feed({"type": "content_block_start", "index": 0,
                  "content_block": {"type": "tool_use", "id": "t", "name": "now", "input": {}}})
    assert decoder.reply().tool_calls == (ToolCall("t", "now", "{}"),)


# An Anthropic request body -> ChatRequest (the gateway) ──────────────────────────────────


def test_parse_a_full_body():
    request, stream = parse_messages_body({
        "model": "fast",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        "tools": [WEATHER_PARAM],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.2, "top_p": 0.9, "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "stream": True,
        "thinking": {"type": "adaptive"},
    }, "msg_1")
    assert stream is True
    assert request == ChatRequest(
        messages=(
            Message("system", "Be brief."),
            Message("user", (TextPart("Weather here?"), ImagePart(f"data:image/png;base64,{PNG}"),
                             ImagePart("https://example.com/a.jpg"))),
            Message("assistant", "Looking.", tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)),
            Message("tool", "18C", tool_call_id="toolu_1"),
            Message("user", "Thanks"),
        ),
        model="fast", max_tokens=100, temperature=0.2, top_p=0.9, top_k=5, stop=("END",),
        tools=(WEATHER,), tool_choice="required", parallel_tool_calls=False, user="u-1",
        extra_body={"thinking": {"type": "adaptive"}}, request_id="msg_1",
    )


def test_parse_tool_choice_tool_and_none_and_error_results_and_structured_output():
    request, stream = parse_messages_body({
        "model": "m", "max_tokens": 10,
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                          "content": [{"type": "text", "text": "boom"}]}]},
        ],
        "tool_choice": {"type": "tool", "name": "f"},
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "low"},
    })
    assert stream is False
    assert request.messages == (
        Message("assistant", None, tool_calls=(ToolCall("t1", "f", "{}"),)),
        Message("tool", "Error: boom", tool_call_id="t1"),
    )
    assert request.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert request.response_format == ResponseFormat("json_schema", "json_answer", SCHEMA)
    assert request.extra_body == {"output_config": {"effort": "low"}}
    none, _ = parse_messages_body({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                                   "tool_choice": {"type": "none"}})
    assert none.tool_choice == "none"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0]"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "messages[0].content"),
        ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
         "temperature"),
        ([1], "JSON object"),
    ],
)
def test_parse_errors_say_what_is_wrong(body, says):
    with pytest.raises(RequestError) as caught:
        parse_messages_body(body)
    assert says in str(caught.value)


def test_what_parses_translates_back_to_the_same_messages_api_body():
    body = {
        "model": "m", "max_tokens": 100, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
        ],
        "tools": [WEATHER_PARAM],
        "tool_choice": {"type": "auto"},
        "temperature": 0.5,
    }
    request, _ = parse_messages_body(body)
    assert request_body(request, "m") == body


# Completion -> Anthropic message and SSE events (the gateway) ──────────────────────────────


def _completion(**fields) -> Completion:
    return Completion(**{"content": "", "model": "sim", "provider": "p", "input_tokens": 20, "output_tokens": 5,
                         "cached_tokens": 8, **fields})


def test_message_body_of_a_tool_call():
    completion = _completion(content="Looking.", tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),),
                             finish_reason="tool_calls")
    assert message_body(completion, "msg_1", "fast", extension=False) == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "fast",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8},
    }


@pytest.mark.parametrize(("finish", "stop"), [("stop", "end_turn"), ("length", "max_tokens"),
                                              ("content_filter", "refusal")])
def test_message_body_stop_reasons(finish, stop):
    assert message_body(_completion(content="x", finish_reason=finish), "m", "m")["stop_reason"] == stop


def _parse_sse(data: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in data.decode().strip().split("\n\n"):
        kind, payload = frame.split("\n")
        events.append((kind.removeprefix("event: "), json.loads(payload.removeprefix("data: "))))
    return events


def test_stream_encoder_text_then_a_streamed_tool_call():
    encoder = StreamEncoder("msg_1", "fast", extension=False)
    completion = _completion(content="Hi", tool_calls=(ToolCall("c1", "get_weather", '{"city":"Paris"}'),),
                             finish_reason="tool_calls")
    data = (encoder.start()
            + encoder.piece(Chunk(delta="Hi"))
            + encoder.piece(Chunk(tool_calls=(ToolCallDelta(0, "c1", "get_weather", ""),)))
            + encoder.piece(Chunk(tool_calls=(ToolCallDelta(0, arguments='{"city":'),)))
            + encoder.piece(Chunk(tool_calls=(ToolCallDelta(0, arguments='"Paris"}'),)))
            + encoder.finish(completion))
    assert _parse_sse(data) == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "fast", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "c1", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"city":'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 8}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_encoder_sends_whole_what_was_not_streamed():
    encoder = StreamEncoder("msg_1", "fast", extension=False)
    completion = _completion(content="51", tool_calls=(ToolCall("c1", "f", '{"a": 1}'),), finish_reason="tool_calls")
    events = _parse_sse(encoder.start() + encoder.finish(completion))
    assert [e for e, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "51"}
    assert events[5][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": 1}'}


def test_stream_encoder_ignores_other_choices():
    encoder = StreamEncoder("msg_1", "fast")
    assert encoder.piece(Chunk(delta="other", choice=1)) == b""


def test_errors_in_anthropics_shape():
    assert error_body(404, "no model 'x'") == {"type": "error", "error": {"type": "not_found_error", "message": "no model 'x'"}}
    assert error_body(429, "slow")["error"]["type"] == "rate_limit_error"
    assert error_body(502, "all failed")["error"]["type"] == "api_error"
    assert error_body(503, "busy")["error"]["type"] == "overloaded_error"
    assert _parse_sse(StreamEncoder.error(400, "bad")) == [
        ("error", {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})]
