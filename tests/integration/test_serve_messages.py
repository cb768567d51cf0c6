"""The gateway's Anthropic-compatible `POST /v1/messages`, driven by the real anthropic SDK and raw HTTP."""

from __future__ import annotations

import json

import anthropic
import pydantic
import pytest
import requests

from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_thread
from orchestray.serving import app_for

pytestmark = pytest.mark.integration

KEY = "messages-key-0123456789"
CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate arithmetic",
    "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
}


@pytest.fixture(scope="module")
def gateway(ray_session, deploy):
    """One app: a simulated provider, an anthropic-kind provider on the emulator, and two routes."""
    from ray import serve

    with run_in_thread(EmulatorOptions(accuracy=1.0)) as emu:
        providers = [
            {"name": "msg-sim", "kind": "simulated", "simulated": {"latency_ms": 2, "latency_sigma": 0.2, "accuracy": 1.0}},
            {"name": "msg-claude", "kind": "anthropic", "model": "claude-sim", "base_url": emu.anthropic_base_url},
        ]
        routes = {
            "msg-race": {"pattern": "race", "providers": ["msg-claude", "msg-sim"]},
            "msg-vote": {"pattern": "ensemble", "providers": ["msg-sim", "msg-claude"]},
        }
        config = parse_config({"providers": providers, "routes": routes,
                               "serve": {"replica_num_cpus": 0, "api_keys_env": "TEST_MESSAGES_KEYS"}})
        yield deploy(app_for(config, {"runtime_env": {"env_vars": {"TEST_MESSAGES_KEYS": KEY}}}), "messages")
        serve.delete("messages")


@pytest.fixture
def client(gateway):
    with anthropic.Anthropic(base_url=gateway, api_key=KEY, max_retries=0, timeout=30) as sdk:
        yield sdk


QUESTION = [{"role": "user", "content": "What is 17 * 3?"}]


@pytest.mark.parametrize("model", ["msg-sim", "msg-claude", "msg-race", "msg-vote"])
def test_the_anthropic_sdk_gets_messages_from_a_provider_or_a_route(client, model):
    # anthropic >= 1.0 takes sampling fields only as extra_body.
    message = client.messages.create(model=model, max_tokens=128, messages=QUESTION, system="Be brief.",
                                     extra_body={"temperature": 0.0, "top_p": 0.9})
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn"
    assert "Answer: 51" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.model_extra["orchestray"]["trace"]["kind"] in ("provider", "race", "ensemble")


@pytest.mark.parametrize("model", ["msg-sim", "msg-claude", "msg-race"])
def test_the_anthropic_sdk_streams(client, model):
    with client.messages.stream(model=model, max_tokens=128, messages=QUESTION) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Answer: 51" in text and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


# Routes join once the coordinators forward tools (issue-10-patterns): today a race answers in text.
@pytest.mark.parametrize("model", ["msg-sim", "msg-claude"])
def test_a_tool_round_trip(client, model):
    messages = [{"role": "user", "content": "What is 37 + 48?"}]
    first = client.messages.create(model=model, max_tokens=256, messages=messages, tools=[CALCULATOR])
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and call.name == "calculator" and call.input == {"expression": "37 + 48"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "85"}]},
    ]
    final = client.messages.create(model=model, max_tokens=256, messages=messages, tools=[CALCULATOR])
    assert final.stop_reason == "end_turn" and final.content[0].text.endswith("Answer: 85")


@pytest.mark.parametrize("model", ["msg-sim", "msg-claude"])
def test_a_streamed_tool_call_arrives_as_input_json(client, model):
    with client.messages.stream(model=model, max_tokens=256, tools=[CALCULATOR],
                                tool_choice={"type": "tool", "name": "calculator"},
                                messages=[{"role": "user", "content": "What is 37 + 48?"}]) as stream:
        pieces = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    (call,) = final.content
    assert final.stop_reason == "tool_use" and call.type == "tool_use" and call.name == "calculator"
    assert call.input == {"expression": "37 + 48"} and json.loads("".join(pieces)) == call.input


class Solved(pydantic.BaseModel):
    reasoning: str
    answer: int


def test_structured_output_through_an_anthropic_provider(client):
    # output_config.format -> response_format -> the Anthropic backend's forced tool -> JSON text.
    message = client.messages.create(
        model="msg-claude", max_tokens=256, messages=[{"role": "user", "content": "What is 37 + 48?"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": Solved.model_json_schema()}}},
    )
    assert message.stop_reason == "end_turn" and Solved.model_validate_json(message.content[0].text).answer == 85


def test_x_api_key_authenticates_as_well_as_bearer(gateway):
    body = {"model": "msg-sim", "max_tokens": 64, "messages": QUESTION}
    for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}):
        response = requests.post(f"{gateway}/v1/messages", json=body, headers=headers, timeout=30)
        assert response.status_code == 200 and response.json()["type"] == "message"
    for headers in ({}, {"x-api-key": "wrong"}):
        response = requests.post(f"{gateway}/v1/messages", json=body, headers=headers, timeout=30)
        assert response.status_code == 401
        assert response.json()["type"] == "error" and response.json()["error"]["type"] == "authentication_error"
    # The OpenAI endpoint takes the same key the Anthropic way.
    chat = {"model": "msg-sim", "messages": QUESTION}
    assert requests.post(f"{gateway}/v1/chat/completions", json=chat, headers={"x-api-key": KEY}, timeout=30).ok


def test_errors_come_in_anthropics_shape(gateway, client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="ghost", max_tokens=16, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error" and "ghost" in caught.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="msg-claude", max_tokens=16, messages=QUESTION, extra_body={"temperature": 1.5})
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in caught.value.body["error"]["message"]
    for payload, says in ((b"{nope", "not valid JSON"),
                          (json.dumps({"model": "msg-sim", "messages": QUESTION}).encode(), "max_tokens: Field required")):
        response = requests.post(f"{gateway}/v1/messages", data=payload, timeout=30,
                                 headers={"x-api-key": KEY, "content-type": "application/json"})
        assert response.status_code == 400 and says in response.json()["error"]["message"]
        assert response.json()["type"] == "error"
