"""`POST /v1/messages` in-process (no Ray): the real anthropic SDK over an ASGI transport, a
simulated provider behind it."""

from __future__ import annotations

import anthropic
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from orchestray.backends.simulated import SimulatedBackend
from orchestray.config import ProviderConfig
from orchestray.provider import Provider
from orchestray.serving._messages import messages_response

CALCULATOR = {"name": "calculator", "description": "Evaluate arithmetic", "input_schema": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}


@pytest.fixture
def client():
    config = ProviderConfig(name="sim", kind="simulated", simulated={"accuracy": 1.0, "latency_ms": 0, "latency_sigma": 0})
    provider = Provider(config, SimulatedBackend(config))
    spent = []
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(http: Request):
        return await messages_response(http, lambda m: m == "sim", lambda: ["sim"], provider.complete,
                                       provider.stream, lambda c, h: spent.append(c.cost))

    with TestClient(app, base_url="http://gateway") as http:
        yield anthropic.Anthropic(base_url="http://gateway", api_key="k", http_client=http, max_retries=0)


def test_a_tool_round_trip_and_a_streamed_answer(client):
    messages = [{"role": "user", "content": "What is 37 + 48?"}]
    first = client.messages.create(model="sim", max_tokens=200, messages=messages, tools=[CALCULATOR])
    (call,) = first.content
    assert first.stop_reason == "tool_use" and call.input == {"expression": "37 + 48"}
    messages += [{"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "85"}]}]
    with client.messages.stream(model="sim", max_tokens=200, messages=messages, tools=[CALCULATOR]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith("Answer: 85") and final.stop_reason == "end_turn" and final.usage.input_tokens > 0


def test_a_streamed_tool_call(client):
    with client.messages.stream(model="sim", max_tokens=200, tools=[CALCULATOR], tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "What is 37 + 48?"}]) as stream:
        pieces = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"expression": "37 + 48"}
    assert pieces


def test_errors_in_anthropics_shape(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="ghost", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body == {"type": "error", "error": {"type": "not_found_error", "message": caught.value.body["error"]["message"]}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="sim", max_tokens=5, messages=[{"role": "user", "content": [{"type": "video"}]}])
    assert "messages[0].content[0]" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_numbers_json_has_not_are_a_400_in_anthropics_shape(client, number):
    body = '{"model": "sim", "max_tokens": 5, "temperature": %s, "messages": [{"role": "user", "content": "x"}]}' % number
    answer = client._client.post("http://gateway/v1/messages", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert number in answer.json()["error"]["message"]
