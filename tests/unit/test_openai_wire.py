"""The OpenAI backend against golden bodies: what it posts, and what it makes of the answers.

The real openai SDK client runs with a scripted HTTP transport (httpx2's MockTransport) in
place of the network, so the bodies and SSE streams are the bytes a server would exchange.
"""

from __future__ import annotations

import json

import httpx2
import openai
import pytest

from orchestray.backends.openai_wire import OpenAIBackend
from orchestray.config import ProviderConfig
from orchestray.errors import BadRequestError, RequestError
from orchestray.messages import (
    ChatRequest,
    Choice,
    Chunk,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
)

WEATHER = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}, strict=True)
PIXEL = "data:image/png;base64,iVBORw0KGgo="


def backend_for(handler, base_url: str | None = "http://server.test/v1") -> OpenAIBackend:
    client = openai.AsyncOpenAI(api_key="test-key-123", base_url=base_url or "https://api.openai.test/v1", max_retries=0,
                                http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))
    config = ProviderConfig(name="oa", kind="openai", model="gpt-test", base_url=base_url,
                            api_key_env=None if base_url else "OA_TEST_KEY")
    return OpenAIBackend(config, "test-key-123", client=client)


def rich_request(**fields) -> ChatRequest:
    return ChatRequest(
        messages=(
            Message("developer", "Answer briefly."),
            Message("user", (TextPart("What is in this image, and the weather in Paris?"), ImagePart(PIXEL, "low"))),
            Message("assistant", None, tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)),
            Message("tool", "18C and sunny", tool_call_id="call_1"),
        ),
        max_tokens=50,
        temperature=0.0,
        n=2,
        tools=(WEATHER,),
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format=ResponseFormat("json_schema", "answer", {"type": "object"}, strict=True),
        logprobs=True,
        top_logprobs=2,
        seed=7,
        stop=("END",),
        user="u-1",
        metadata={"job": "t"},
        extra_body={"service_tier": "flex"},
        **fields,
    )


GOLDEN_MESSAGES = [
    {"role": "user", "content": [{"type": "text", "text": "What is in this image, and the weather in Paris?"},
                                 {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
    {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_1"},
]
GOLDEN_OPTIONS = {
    "temperature": 0.0,
    "seed": 7,
    "parallel_tool_calls": False,
    "logprobs": True,
    "top_logprobs": 2,
    "user": "u-1",
    "metadata": {"job": "t"},
    "tool_choice": "auto",
    "stop": ["END"],
    "n": 2,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                "parameters": WEATHER.parameters, "strict": True}}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}},
    "service_tier": "flex",
}


def test_a_compatible_server_gets_every_field_with_developer_as_system_and_max_tokens():
    params = backend_for(None).params(rich_request(top_k=40))
    assert params == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "Answer briefly."}, *GOLDEN_MESSAGES],
        "max_tokens": 50,
        "top_k": 40,
        **GOLDEN_OPTIONS,
    }


def test_openai_itself_gets_developer_and_max_completion_tokens_and_refuses_top_k():
    backend = backend_for(None, base_url=None)
    assert backend.params(rich_request()) == {
        "model": "gpt-test",
        "messages": [{"role": "developer", "content": "Answer briefly."}, *GOLDEN_MESSAGES],
        "max_completion_tokens": 50,
        **GOLDEN_OPTIONS,
    }
    with pytest.raises(RequestError) as refused:
        backend.params(rich_request(top_k=40))
    assert refused.value.param == "top_k" and "'oa'" in str(refused.value)


def test_a_text_request_sends_only_what_was_set():
    request = ChatRequest(messages=(Message("user", "What is 2 + 2?"),), max_tokens=8)
    assert backend_for(None).params(request) == {
        "model": "gpt-test", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 8,
    }


ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test-2025",
    "choices": [
        {"index": 0, "finish_reason": "tool_calls", "logprobs": None,
         "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
             {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
         ]}},
        {"index": 1, "finish_reason": "stop",
         "logprobs": {"content": [{"token": "No", "logprob": -0.1, "bytes": [78], "top_logprobs": []}], "refusal": None},
         "message": {"role": "assistant", "content": "No.", "refusal": None}},
        {"index": 2, "finish_reason": "content_filter", "logprobs": None,
         "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."}},
    ],
    "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
              "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": 0}},
}


async def test_complete_decodes_tool_calls_refusals_logprobs_every_choice_and_usage_details():
    sent = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=ANSWER, headers={"x-ratelimit-remaining-requests": "9"})

    backend = backend_for(handler)
    reply = await backend.complete(rich_request())
    assert sent[0]["tools"] == GOLDEN_OPTIONS["tools"] and sent[0]["service_tier"] == "flex"
    assert reply.text == "" and reply.finish_reason == "tool_calls" and reply.model == "gpt-test-2025"
    assert reply.tool_calls == (ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
                                ToolCall("call_b", "get_weather", '{"city": "Rome"}'))
    assert reply.more_choices == (
        Choice(index=1, content="No.", logprobs=ANSWER["choices"][1]["logprobs"], finish_reason="stop"),
        Choice(index=2, content="", refusal="I can't help with that.", finish_reason="content_filter"),
    )
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens, reply.reasoning_tokens) == (120, 30, 64, 12)
    assert reply.quota.remaining_requests == 9
    await backend.close()


async def test_a_provider_400_stays_a_bad_request():
    def handler(request):
        return httpx2.Response(400, json={"error": {"message": "Unrecognized request argument: top_k", "type": "invalid_request_error",
                                                    "param": "top_k", "code": None}})

    with pytest.raises(BadRequestError, match="top_k"):
        await backend_for(handler).complete(rich_request(top_k=3))


def sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def chunk(choices, **fields):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": choices, **fields}


STREAM = sse(
    chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None},
           {"index": 1, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"content": "Let me "}, "finish_reason": None,
            "logprobs": {"content": [{"token": "Let", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}}]),
    chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                                                 "function": {"name": "get_weather", "arguments": ""}}]},
            "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}, "finish_reason": None}]),
    chunk([{"index": 1, "delta": {"content": "Paris"}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}, "finish_reason": None}]),
    chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}, {"index": 1, "delta": {}, "finish_reason": "length"}]),
    chunk([], usage={"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
                     "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 0}}),
)


async def test_stream_yields_text_tool_call_deltas_and_other_choices_then_the_assembled_reply():
    sent = []

    def handler(request):
        sent.append(json.loads(request.content))
        return httpx2.Response(200, content=STREAM, headers={"content-type": "text/event-stream"})

    backend = backend_for(handler)
    items = [item async for item in backend.stream(rich_request())]
    assert sent[0]["stream"] is True and sent[0]["stream_options"] == {"include_usage": True}
    assert sent[0]["n"] == 2 and sent[0]["service_tier"] == "flex"
    *pieces, reply = items
    assert pieces == [
        "Let me ",
        Chunk(tool_calls=(ToolCallDelta(0, "call_x", "get_weather", ""),)),
        Chunk(tool_calls=(ToolCallDelta(0, None, None, '{"city": '),)),
        Chunk(delta="Paris", choice=1),
        Chunk(tool_calls=(ToolCallDelta(0, None, None, '"Paris"}'),)),
    ]
    assert reply.text == "Let me " and reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (ToolCall("call_x", "get_weather", '{"city": "Paris"}'),)
    assert reply.logprobs == {"content": [{"token": "Let", "logprob": -0.5, "bytes": None, "top_logprobs": []}], "refusal": None}
    assert reply.more_choices == (Choice(index=1, content="Paris", finish_reason="length"),)
    assert (reply.input_tokens, reply.output_tokens, reply.cached_tokens) == (40, 9, 8)


async def test_a_plain_text_stream_yields_only_strings():
    body = sse(chunk([{"index": 0, "delta": {"role": "assistant", "content": "Answer"}, "finish_reason": None}]),
               chunk([{"index": 0, "delta": {"content": ": 4"}, "finish_reason": "stop"}]),
               chunk([], usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}))
    backend = backend_for(lambda request: httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    items = [item async for item in backend.stream(ChatRequest(messages=(Message("user", "2+2?"),)))]
    assert items[:-1] == ["Answer", ": 4"]
    assert (items[-1].text, items[-1].input_tokens, items[-1].output_tokens, items[-1].more_choices) == ("Answer: 4", 5, 3, ())
