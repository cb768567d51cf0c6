"""The whole chat-completions wire through the gateway, driven by the real openai SDK.

One Serve app for the module. Each acceptance case runs via a provider (the OpenAI backend on
the emulator: the SDK's path end to end), a race route and an ensemble route. Then requests
generated from OpenAI's own CreateChatCompletionRequest schema: never a 5xx, every 200 and every
stream chunk a valid OpenAI answer, every 4xx an OpenAI error that names its field.
"""

from __future__ import annotations

import copy
import json

import openai
import pydantic
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_thread
from orchestray.serving import app_for

pytestmark = pytest.mark.integration

MODELS = ["wire-provider", "wire-race", "wire-vote"]
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
QUESTION = "What is 17 * 3?"


@pytest.fixture(scope="module")
def wire_emulator():
    with run_in_thread(EmulatorOptions(latency_ms=0.0, accuracy=1.0)) as emu:
        yield emu


@pytest.fixture(scope="module")
def base_url(deploy, wire_emulator):
    from ray import serve

    exact = {"latency_ms": 1, "latency_sigma": 0.1, "accuracy": 1.0}
    config = parse_config({
        "providers": [
            # The emulator's models by name; `wire-model` is none of its profiles, so it answers
            # at the emulator's accuracy (1.0 here): the tests check wire shapes, not luck.
            {"name": "wire-provider", "kind": "openai", "model": "wire-model", "base_url": wire_emulator.openai_base_url,
             "max_retries": 0},
            {"name": "wire-sim-a", "kind": "simulated", "simulated": exact},
            {"name": "wire-sim-b", "kind": "simulated", "simulated": {**exact, "seed": 1}},
        ],
        "routes": {
            "wire-race": {"pattern": "race", "providers": ["wire-sim-a", "wire-provider"]},
            "wire-vote": {"pattern": "ensemble", "providers": ["wire-sim-a", "wire-sim-b", "wire-provider"]},
        },
        "serve": {"num_replicas": 1, "replica_num_cpus": 0, "allow_unauthenticated": True},  # loopback only
    })
    yield deploy(app_for(config), "wire")
    serve.delete("wire")


@pytest.fixture(scope="module")
def client(base_url):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_round_trip(client, model, openai_schemas):
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[CALCULATOR])
    openai_schemas.check("CreateChatCompletionResponse", first.model_dump(mode="json", exclude_unset=True))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "calculator"
    expression = json.loads(call.function.arguments)["expression"]
    assert eval(expression, {"__builtins__": {}}) == 51  # noqa: S307 - digits and operators only
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "51"}]
    second = client.chat.completions.create(model=model, messages=messages, tools=[CALCULATOR])
    assert second.choices[0].finish_reason == "stop"
    assert "51" in second.choices[0].message.content


class Answer(pydantic.BaseModel):
    answer: int
    reasoning: str


@pytest.mark.parametrize("model", MODELS)
def test_parse_with_a_pydantic_model(client, model):
    parsed = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           response_format=Answer)
    answer = parsed.choices[0].message.parsed
    assert isinstance(answer, Answer) and answer.answer == 51


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_tool_call(client, model, openai_schemas):
    calls: dict[int, dict] = {}
    finish = []
    usage = None
    with client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], tools=[CALCULATOR],
                                        stream=True, stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            openai_schemas.check("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
            usage = chunk.usage or usage
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or ():
                    call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                    call["id"] = call["id"] or delta.id
                    call["name"] += (delta.function.name or "") if delta.function else ""
                    call["arguments"] += (delta.function.arguments or "") if delta.function else ""
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    assert finish == ["tool_calls"]
    (call,) = calls.values()
    assert call["id"] and call["name"] == "calculator" and "17" in json.loads(call["arguments"])["expression"]
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_n_3(client, model):
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all("51" in c.message.content for c in response.choices)


@pytest.mark.parametrize("model", MODELS)
def test_n_2_streamed(client, model, openai_schemas):
    text: dict[int, str] = {}
    roles, finished = set(), {}
    with client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], n=2,
                                        stream=True) as stream:
        for chunk in stream:
            openai_schemas.check("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
            for choice in chunk.choices:
                if choice.delta.role:
                    roles.add(choice.index)
                text[choice.index] = text.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finished[choice.index] = choice.finish_reason
    assert roles == {0, 1} and finished == {0: "stop", 1: "stop"}
    assert all("51" in t for t in text.values())


@pytest.mark.parametrize("model", MODELS)
def test_an_image_data_url(client, model):
    text = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]}])
    assert "51" in response.choices[0].message.content
    # The image is counted: a low-detail image is 85 tokens at OpenAI.
    assert response.usage.prompt_tokens >= text.usage.prompt_tokens + 85


def test_a_field_the_provider_cannot_honour_is_a_4xx_naming_it(client):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="wire-sim-a", messages=[{"role": "user", "content": "hi"}],
                                           audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"],
                                           stream=stream)
        assert refused.value.body["param"] in ("audio", "modalities")


# Requests generated from the official schema ────────────────────────────────────────────────


def _named_fields_only(node):
    """The schema with `additionalProperties: false` on every object that lists its properties:
    requests that use the fields OpenAI documents. (A field it does not name gets a 400 naming
    it, as test_unknown_fields_are_named checks; left open, nearly every generated request has one.)
    Arrays hold three items at most, which keeps generation fast and changes no field's meaning."""
    if isinstance(node, dict):
        node = {k: _named_fields_only(v) for k, v in node.items() if k not in ("description", "title", "example")}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if node.get("type") == "array" or "array" in (node.get("type") or ()):
            node["maxItems"] = min(node.get("maxItems", 3), 3)
        return node
    if isinstance(node, list):
        return [_named_fields_only(v) for v in node]
    return node


def _request_schema(openai_schemas, model: str) -> dict:
    schemas = {name: _named_fields_only(schema) for name, schema in copy.deepcopy(openai_schemas.components["schemas"]).items()}
    # The request is an allOf of three open objects; closed one by one they would admit no
    # request at all, so their properties are merged into one closed object first.
    request = openai_schemas.components["schemas"]["CreateChatCompletionRequest"]["allOf"][1]
    parts = [openai_schemas.components["schemas"]["ModelResponseProperties"],
             openai_schemas.components["schemas"]["CreateModelResponseProperties"]["allOf"][1], request]
    properties: dict = {}
    for part in parts:
        for name, schema in _named_fields_only(part["properties"]).items():
            properties[name] = {"allOf": [properties[name], schema]} if name in properties else schema
    schemas["CreateChatCompletionRequest"] = {"type": "object", "properties": properties,
                                              "required": request["required"], "additionalProperties": False}
    schemas["ModelIdsShared"] = {"type": "string", "enum": [model]}  # a model this gateway serves
    return {"$ref": "#/components/schemas/CreateChatCompletionRequest", "components": {"schemas": schemas}}


def _check_answer(openai_schemas, body: dict, response: requests.Response) -> str:
    status = response.status_code
    assert status < 500, f"{status} for {json.dumps(body)[:1500]}: {response.text[:500]}"
    if status >= 400:
        error = response.json()
        openai_schemas.check("ErrorResponse", error)
        assert error["error"]["param"] is not None, f"{status} without a param: {error}"
        return "4xx"
    if body.get("stream"):
        events = [line[len("data: "):] for line in response.text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        for event in events[:-1]:
            data = json.loads(event)
            openai_schemas.check("ErrorResponse" if "error" in data else "CreateChatCompletionStreamResponse", data)
    else:
        openai_schemas.check("CreateChatCompletionResponse", response.json())
    return "200"


def test_requests_from_the_official_schema(base_url, openai_schemas, closing):
    seen: dict[str, int] = {"200": 0, "4xx": 0}
    session = closing(requests.Session())

    @settings(max_examples=50, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(from_schema(_request_schema(openai_schemas, "wire-sim-a")))
    def check(body):
        response = session.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
        seen[_check_answer(openai_schemas, body, response)] += 1

    check()
    # Not a vacuous pass: a good share of what the schema allows is answered, not refused.
    assert seen["200"] >= 10, seen


def test_unknown_fields_are_named(base_url, openai_schemas):
    body = {"model": "wire-sim-a", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache": 1}]}]}
    response = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    openai_schemas.check("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == "messages[0].content[0].cache"


def test_the_model_list_and_error_bodies_are_valid(base_url, openai_schemas):
    openai_schemas.check("ListModelsResponse", requests.get(f"{base_url}/v1/models", timeout=30).json())
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    for body, status, param in [({**ask, "model": "ghost"}, 404, "model"), ({"model": "wire-sim-a", "messages": []}, 400, "messages"),
                                ({**ask, "model": "wire-sim-a", "n": 0}, 400, "n")]:
        response = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == status
        openai_schemas.check("ErrorResponse", response.json())
        assert response.json()["error"]["param"] == param
    response = requests.post(f"{base_url}/v1/chat/completions", data=b"{not json", timeout=30,
                             headers={"content-type": "application/json"})
    assert response.status_code == 400
    openai_schemas.check("ErrorResponse", response.json())
