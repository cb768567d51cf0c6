"""`/v1/responses` in-process (no Ray): the real openai SDK over an ASGI transport, a simulated
provider behind the gateway's own Responses door, its key guard and an in-memory store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import openai
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from orchestray.backends.simulated import SimulatedBackend
from orchestray.config import load_config
from orchestray.messages import ChatRequest
from orchestray.provider import Provider
from orchestray.responses_state import ResponseArchive
from orchestray.serving._auth import Guard, secure
from orchestray.serving._responses import ResponsesDoor
from orchestray.store import MemoryStore, Store

from conftest import OpenAISchemas

SCHEMAS = OpenAISchemas(Path(__file__).parents[1] / "openai" / "openai-responses-batch-schemas.json")
CALCULATOR = {"type": "function", "name": "calculator", "description": "Evaluate arithmetic",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"], "additionalProperties": False}, "strict": True}


class Sum(BaseModel):
    answer: int


@pytest.fixture
def gateway():
    config = load_config(None)
    providers = {p.name: Provider(p, SimulatedBackend(p)) for p in config.providers}
    seen: list[ChatRequest] = []

    async def complete(request):
        seen.append(request)
        return await providers[request.model].complete(request)

    def chunks(request):
        seen.append(request)
        return providers[request.model].stream(request)

    archive = ResponseArchive.over(Store(MemoryStore(), "memory"))
    door = ResponsesDoor(config, complete, chunks, lambda c, h: None, lambda: archive)
    app = FastAPI()

    @app.post("/v1/responses")
    async def create(http: Request):
        return await door.create(http)

    @app.get("/v1/responses/{rid}")
    async def get(rid: str, http: Request):
        return await door.retrieve(rid, http)

    @app.delete("/v1/responses/{rid}")
    async def delete(rid: str, http: Request):
        return await door.delete(rid, http)

    @app.get("/v1/responses/{rid}/input_items")
    async def items(rid: str, http: Request):
        return await door.input_items(rid, http)

    app.add_middleware(Guard)
    secure(("key-one", "key-two"), 1_000_000, None)

    def client(key: str = "key-one") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=key, max_retries=0,
                                  http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)))

    yield client, seen
    secure((), 1_000_000, None)


async def test_create_a_tool_round_trip_and_parse(gateway):
    make, seen = gateway
    client = make()
    first = await client.responses.create(model="sim-small", input="What is 2 + 3?", tools=[CALCULATOR],
                                          tool_choice="required")
    raw = await client.responses.with_raw_response.create(model="sim-small", input="What is 2 + 3?")
    SCHEMAS.check("Response", raw.http_response.json())
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert json.loads(call.arguments) == {"expression": "2 + 3"}
    second = await client.responses.create(model="sim-small", tools=[CALCULATOR], input=[
        {"role": "user", "content": "What is 2 + 3?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "5"}])
    assert second.status == "completed" and second.output_text.strip().endswith("5")
    assert [m.role for m in seen[-1].messages] == ["user", "assistant", "tool"]
    parsed = await client.responses.parse(model="sim-large", input="What is 17 + 25?", text_format=Sum)
    assert parsed.output_parsed == Sum(answer=42)


async def test_a_stream_validates_and_ends_completed(gateway):
    make, _ = gateway
    client = make()
    async with client.responses.stream(model="sim-small", input="What is 2 + 3?") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text and final.output_text.strip().endswith("5")
    raw = await client._client.post("http://gateway/v1/responses", headers={"authorization": "Bearer key-one"},
                                    json={"model": "sim-small", "input": "What is 2 + 3?", "stream": True,
                                          "tools": [CALCULATOR], "tool_choice": "required"})
    events = [json.loads(line[6:]) for line in raw.text.splitlines() if line.startswith("data: ")]
    for event in events:
        SCHEMAS.check("ResponseStreamEvent", event)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    SCHEMAS.check("Response", events[-1]["response"])


async def test_previous_response_id_carries_the_history_for_its_key_only(gateway):
    make, seen = gateway
    one, two = make("key-one"), make("key-two")
    first = await one.responses.create(model="sim-small", input="What is 2 + 3?", instructions="Be brief.")
    second = await one.responses.create(model="sim-small", input="And 4 + 4?", previous_response_id=first.id)
    roles = [(m.role, m.text()) for m in seen[-1].messages]
    assert roles[0] == ("user", "What is 2 + 3?") and roles[1][0] == "assistant" and roles[2] == ("user", "And 4 + 4?")
    assert (await one.responses.retrieve(second.id)).id == second.id
    items = await one.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["And 4 + 4?"]
    for attempt in (lambda: two.responses.retrieve(first.id),
                    lambda: two.responses.create(model="sim-small", input="x", previous_response_id=first.id),
                    lambda: two.responses.input_items.list(first.id), lambda: two.responses.delete(first.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            await attempt()
        SCHEMAS.check("ErrorResponse", caught.value.body if "error" in caught.value.body else {"error": caught.value.body})
    await one.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await one.responses.retrieve(first.id)


async def test_built_in_tools_and_bad_fields_get_400s_naming_them(gateway):
    make, _ = gateway
    with pytest.raises(openai.BadRequestError) as caught:
        await make().responses.create(model="sim-small", input="x", tools=[{"type": "web_search"}])
    message = caught.value.body["message"] if "message" in caught.value.body else caught.value.body["error"]["message"]
    assert "web_search" in message and "sim-small" in message and "simulated" in message
    with pytest.raises(openai.BadRequestError):
        await make().responses.create(model="sim-small", input=[{"type": "message", "role": "robot", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        await make().responses.create(model="ghost", input="x")


async def test_a_body_with_a_huge_integer_is_answered_stored_and_continued(gateway):
    # A tool's JSON Schema may hold any JSON number: the stored response once failed to encode
    # (msgpack's integers stop at 64 bits) and the paid answer became a 500.
    make, seen = gateway
    client = make()
    huge = {"type": "function", "name": "lookup", "description": "Find a record",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer", "maximum": 2**70}}}}
    first = await client.responses.create(model="sim-small", input="What is 2 + 3?", tools=[huge])
    assert first.tools[0].parameters["properties"]["id"]["maximum"] == 2**70
    assert (await client.responses.retrieve(first.id)).tools[0].parameters == huge["parameters"]
    follow = await client.responses.create(model="sim-small", input="And 4 + 4?", previous_response_id=first.id)
    assert follow.status == "completed" and [m.role for m in seen[-1].messages] == ["user", "assistant", "user"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_numbers_json_does_not_have_get_a_400_before_any_provider_call(gateway, number):
    # Python's json reads them; echoed in the Response they broke its encoding, after the call.
    make, seen = gateway
    body = ('{"model": "sim-small", "input": "What is 2 + 3?", "tools": [{"type": "function", "name": "f", '
            '"parameters": {"type": "object", "default": %s}}]}' % number)
    answer = await make()._client.post("http://gateway/v1/responses", content=body,
                                       headers={"authorization": "Bearer key-one", "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    assert number.lstrip("-") in answer.json()["error"]["message"] and seen == []
