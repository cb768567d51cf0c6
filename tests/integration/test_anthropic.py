"""The Anthropic backend through the real anthropic SDK against the emulator, and the trace it leaves."""

from __future__ import annotations

import logging

import pytest

from orchestray.actors.provider import provider_handle
from orchestray.backends.anthropic_wire import AnthropicBackend
from orchestray.errors import BadRequestError, RequestError
from orchestray.backends import Reply
from orchestray.messages import ChatRequest, Chunk, ImagePart, Message, TextPart, Tool, ToolCall

pytestmark = pytest.mark.integration

NEWEST = "claude-newest"  # the emulator plays it as refusing sampling fields
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def ask(text: str = "What is 17 * 3?", **fields) -> ChatRequest:
    return ChatRequest(messages=(Message("system", "Be brief."), Message("user", text)), max_tokens=64, **fields)


@pytest.fixture
async def backend(provider_config):
    """Anthropic backends (in-process, no Ray) pointed at the emulator."""
    made = []

    def make(**fields) -> AnthropicBackend:
        made.append(AnthropicBackend(provider_config("anthropic", **fields), "test-key"))
        return made[-1]

    yield make
    for each in made:
        await each.close()


async def _stream(backend: AnthropicBackend, request: ChatRequest) -> tuple[list, Reply]:
    pieces = [piece async for piece in backend.stream(request)]
    assert isinstance(pieces[-1], Reply)
    return pieces[:-1], pieces[-1]


async def test_sampling_fields_reach_an_anthropic_provider(backend, emulator):
    # Before: TypeError from AsyncMessages.create() on anthropic >= 1.0 for any of these.
    plain = backend()
    reply = await plain.complete(ask(temperature=0.0, top_p=0.9, top_k=20))
    assert "Answer: 51" in reply.text and reply.dropped == ()
    pieces, reply = await _stream(plain, ask(temperature=0.0))
    assert "".join(pieces) == reply.text and reply.dropped == ()
    # They really travel: a model that refuses them names the one it got.
    emulator.configure(reject_sampling=[NEWEST])
    strict = backend(model=NEWEST, drop_deprecated_sampling=False)
    for field, value in (("temperature", 0.0), ("top_p", 0.5), ("top_k", 3)):
        with pytest.raises(BadRequestError, match=f"`{field}` is deprecated for this model"):
            await strict.complete(ask(**{field: value}))
    with pytest.raises(BadRequestError, match="deprecated"):
        await _stream(strict, ask(temperature=0.3))
    assert emulator.stats()["bad_requests"] == 4


async def test_a_model_refusing_sampling_is_asked_again_without_it_and_remembered(backend, emulator, caplog):
    emulator.configure(reject_sampling=[NEWEST])
    newest = backend(model=NEWEST)
    with caplog.at_level(logging.WARNING, logger="orchestray.backends.anthropic_wire"):
        first = await newest.complete(ask(temperature=0.0, top_p=0.9))
        second = await newest.complete(ask(temperature=0.7))
        pieces, streamed = await _stream(newest, ask(top_k=5))
        untouched = await newest.complete(ask())
    assert "Answer:" in first.text and "Answer:" in second.text and "Answer:" in streamed.text
    assert first.dropped == ("temperature", "top_p") and second.dropped == ("temperature",)
    assert streamed.dropped == ("top_k",) and untouched.dropped == ()
    # One refusal in all: after it the model is asked without them at once; one warning.
    assert emulator.stats()["bad_requests"] == 1
    assert len([r for r in caplog.records if NEWEST in r.getMessage()]) == 1


async def test_tools_images_and_tool_results_cross_the_wire(backend, emulator):
    anthropic_backend = backend()
    weather = Tool("get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
    history = ChatRequest(
        messages=(
            Message("user", (TextPart("What is in this picture, and what is 2 + 2?"),
                             ImagePart(f"data:image/png;base64,{PNG}"), ImagePart("https://example.com/cat.png"))),
            Message("assistant", None, tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
                                                   ToolCall("toolu_2", "get_weather", '{"city": "Rome"}'))),
            Message("tool", "18C", tool_call_id="toolu_1"),
            Message("tool", "24C", tool_call_id="toolu_2"),
        ),
        tools=(weather,), tool_choice="auto", stop=("STOP",), max_tokens=64,
    )
    reply = await anthropic_backend.complete(history)
    assert reply.finish_reason in ("stop", "tool_calls") and reply.input_tokens > 0
    pieces, streamed = await _stream(anthropic_backend, history)
    assert all(isinstance(p, (str, Chunk)) for p in pieces) and streamed.input_tokens == reply.input_tokens
    assert emulator.stats()["served"] == 2


async def test_fields_anthropic_cannot_honour_are_refused_by_name_before_any_call(backend, emulator):
    anthropic_backend = backend()
    for field, value in (("logprobs", True), ("presence_penalty", 0.5), ("logit_bias", {"1": 2.0}),
                         ("reasoning_effort", "low"), ("store", True)):
        with pytest.raises(RequestError, match=f"^{field}: not supported by provider") as caught:
            await anthropic_backend.complete(ask(**{field: value}))
        assert caught.value.param == field
    with pytest.raises(RequestError, match="temperature: the Anthropic Messages API takes 0 to 1"):
        await anthropic_backend.complete(ask(temperature=1.5))
    assert emulator.stats()["requests"] == 0


async def test_n_is_n_calls_and_their_usage_adds_up(backend, emulator):
    anthropic_backend = backend()
    one = await anthropic_backend.complete(ask())
    three = await anthropic_backend.complete(ask(n=3))
    assert [c.index for c in three.more_choices] == [1, 2]
    assert three.input_tokens == 3 * one.input_tokens and emulator.stats()["served"] == 4


async def test_the_provider_actor_marks_the_trace_with_the_fields_it_dropped(provider_config, emulator, kill_actors):
    emulator.configure(reject_sampling=[NEWEST])
    handle = provider_handle(provider_config("anthropic", model=NEWEST))
    kill_actors(handle)
    completion = await handle.complete(ask(temperature=0.0, top_p=0.5))
    assert "Answer:" in completion.content and completion.trace.dropped == ["temperature", "top_p"]
    chunks = [chunk async for chunk in handle.stream(ask(temperature=0.2))]
    assert chunks[-1].done and chunks[-1].completion.trace.dropped == ["temperature"]
    assert emulator.stats()["bad_requests"] == 1
    # The option off: the caller gets the model's 400.
    strict = provider_handle(provider_config("anthropic", model=NEWEST, drop_deprecated_sampling=False))
    kill_actors(strict)
    with pytest.raises(BadRequestError, match="`temperature` is deprecated for this model"):
        await strict.complete(ask(temperature=0.0))
