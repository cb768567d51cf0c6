"""Agent loops against the emulator with the real openai and anthropic SDKs (no Ray): tool round
trips, streamed tool calls, structured output, n, logprobs and images in each wire format."""

from __future__ import annotations

import contextlib
import json

import anthropic
import openai
import pydantic
import pytest

from orchestray.emulator import Emulator, EmulatorOptions
from orchestray.simulated import evaluate

pytestmark = pytest.mark.integration

QUESTION = "What is 37 + 48?"
SCHEMA = {
    "type": "object",
    "properties": {"expression": {"type": "string", "description": "an arithmetic expression"}},
    "required": ["expression"],
    "additionalProperties": False,
}
OPENAI_TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic", "parameters": SCHEMA}}]
ANTHROPIC_TOOLS = [{"name": "calculator", "description": "Evaluate arithmetic", "input_schema": SCHEMA}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@contextlib.asynccontextmanager
async def clients():
    async with Emulator(EmulatorOptions(accuracy=1.0)) as emu:
        oa = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="k", max_retries=0, timeout=5.0,
                                http_client=openai.DefaultAioHttpClient())
        an = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key="k", max_retries=0, timeout=5.0,
                                      http_client=anthropic.DefaultAioHttpClient())
        async with oa, an:
            yield oa, an


async def test_openai_tool_round_trip_and_streamed_tool_call():
    async with clients() as (client, _):
        messages: list = [{"role": "user", "content": QUESTION}]
        first = await client.chat.completions.create(model="sim-large", messages=messages, tools=OPENAI_TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        arguments = json.loads(call.function.arguments)
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": str(evaluate(arguments["expression"]))},
        ]
        final = await client.chat.completions.create(model="sim-large", messages=messages, tools=OPENAI_TOOLS)
        async with client.chat.completions.stream(model="sim-large", messages=messages[:1], tools=OPENAI_TOOLS) as stream:
            deltas = [e for e in [event async for event in stream] if e.type == "tool_calls.function.arguments.delta"]
            streamed = await stream.get_final_completion()
    assert arguments == {"expression": "37 + 48"}
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content.endswith("Answer: 85")
    assert len(deltas) > 1
    (whole,) = streamed.choices[0].message.tool_calls
    assert (whole.id, whole.function.name, whole.function.arguments) == (call.id, "calculator", call.function.arguments)
    assert streamed.choices[0].finish_reason == "tool_calls"


class Solved(pydantic.BaseModel):
    reasoning: str
    answer: int


async def test_openai_parse_n_logprobs_and_an_image():
    async with clients() as (client, _):
        parsed = await client.chat.completions.parse(
            model="sim-large", messages=[{"role": "user", "content": QUESTION}], response_format=Solved
        )
        many = await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": QUESTION}], n=3, logprobs=True, top_logprobs=2,
            temperature=1.0,
        )
        text = [{"type": "text", "text": QUESTION}]
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
        plain = await client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": text}])
        seen = await client.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": text + [image]}])
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="sim-small", messages=[{"role": "user", "content": QUESTION}], web_search_options={}
            )
    assert parsed.choices[0].message.parsed == Solved(reasoning=parsed.choices[0].message.parsed.reasoning, answer=85)
    assert [c.index for c in many.choices] == [0, 1, 2]
    for c in many.choices:
        assert "".join(t.token for t in c.logprobs.content) == c.message.content
        assert all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
    assert seen.usage.prompt_tokens > plain.usage.prompt_tokens + 85  # an image costs tokens
    assert seen.choices[0].message.content == plain.choices[0].message.content
    assert refused.value.body["param"] == "web_search_options"


async def test_anthropic_tool_round_trip_and_streamed_tool_use():
    async with clients() as (_, client):
        messages: list = [{"role": "user", "content": QUESTION}]
        first = await client.messages.create(model="sim-large", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
        (use,) = first.content
        messages += [
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": str(evaluate(use.input["expression"]))}]},
        ]
        final = await client.messages.create(model="sim-large", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS)
        async with client.messages.stream(
            model="sim-large", max_tokens=200, messages=messages[:1], tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "tool", "name": "calculator"},
        ) as stream:
            pieces = [e.partial_json async for e in stream if e.type == "input_json"]
            streamed = await stream.get_final_message()
    assert first.stop_reason == "tool_use" and use.type == "tool_use" and use.name == "calculator"
    assert use.input == {"expression": "37 + 48"}
    assert final.stop_reason == "end_turn" and final.content[0].text.endswith("Answer: 85")
    assert len(pieces) > 1 and json.loads("".join(pieces)) == use.input
    (block,) = streamed.content
    assert (block.type, block.id, block.input) == ("tool_use", use.id, use.input)
    assert streamed.stop_reason == "tool_use"


async def test_anthropic_image_structured_output_and_refusal():
    async with clients() as (_, client):
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
        text = {"type": "text", "text": QUESTION}
        plain = await client.messages.create(model="sim-large", max_tokens=200, messages=[{"role": "user", "content": [text]}])
        seen = await client.messages.create(model="sim-large", max_tokens=200, messages=[{"role": "user", "content": [image, text]}])
        structured = await client.messages.create(
            model="sim-large", max_tokens=200, messages=[{"role": "user", "content": QUESTION}],
            extra_body={"output_config": {"format": {"type": "json_schema", "schema": Solved.model_json_schema()}}},
        )
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="sim-large", max_tokens=200, messages=[{"role": "user", "content": QUESTION}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
            )
    assert seen.usage.input_tokens > plain.usage.input_tokens + 85
    assert seen.content[0].text == plain.content[0].text
    assert Solved.model_validate_json(structured.content[0].text).answer == 85
    assert "tools.0.type" in refused.value.body["error"]["message"]
