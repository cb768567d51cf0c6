"""Streams that send their 200 and heartbeats while the answer has not begun (serving/_heartbeat),
in-process: the real anthropic SDK through `/v1/messages`, the real openai SDK over an OpenAI-shaped
stream, and a client that leaves while the first chunk is awaited."""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from orchestray.errors import RateLimitedError, RequestError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.openai_format import chunk_body
from orchestray.serving._heartbeat import HEARTBEAT, EventStream, open_stream
from orchestray.serving._messages import messages_response

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


class SlowModel:
    """Streams "The answer is 5." once `go` is set; records whether its stream was closed early."""

    def __init__(self, fail: BaseException | None = None, fail_at_once: bool = False):
        self.go = asyncio.Event()
        self.fail = fail
        self.fail_at_once = fail_at_once
        self.closed_early = False
        self.finished = False

    async def complete(self, request: ChatRequest) -> Completion:
        raise AssertionError("only streams here")

    async def stream(self, request: ChatRequest):
        try:
            if not self.fail_at_once:
                await self.go.wait()
            if self.fail is not None:
                raise self.fail
            for piece in ("The answer ", "is 5."):
                yield Chunk(delta=piece)
            self.finished = True
            yield Chunk(done=True, completion=Completion(content="The answer is 5.", model="slow", provider="slow",
                                                         input_tokens=9, output_tokens=5))
        except (asyncio.CancelledError, GeneratorExit):
            self.closed_early = True
            raise


def beating(app: FastAPI, model: SlowModel, beats: int = 2):
    """The app, with a watch on what it sends: the model goes on once `beats` heartbeats went out."""
    seen = {"beats": 0}

    async def asgi(scope, receive, send):
        async def watched(message):
            if message["type"] == "http.response.body" and message.get("body") == HEARTBEAT:
                seen["beats"] += 1
                if seen["beats"] >= beats:
                    model.go.set()
            await send(message)

        await app(scope, receive, watched)

    return asgi, seen


def messages_app(model: SlowModel, grace_s: float = 0.0) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/messages")
    async def messages(http: Request):
        return await messages_response(http, lambda m: m == "slow", lambda: ["slow"], model.complete, model.stream,
                                       lambda c, h: None, grace_s=grace_s, interval_s=0.01)

    return app


def test_the_anthropic_sdk_streams_through_heartbeats():
    model = SlowModel()
    asgi, seen = beating(messages_app(model), model)
    with TestClient(asgi, base_url="http://gateway") as http:
        client = anthropic.Anthropic(base_url="http://gateway", api_key="k", http_client=http, max_retries=0)
        with client.messages.stream(model="slow", max_tokens=64, messages=QUESTION) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert seen["beats"] >= 2
    assert text == "The answer is 5." and final.stop_reason == "end_turn" and final.usage.output_tokens == 5


def test_a_refusal_within_the_grace_is_still_a_4xx():
    model = SlowModel(fail=RequestError("temperature is not supported by slow"), fail_at_once=True)
    with TestClient(messages_app(model, grace_s=5.0), base_url="http://gateway") as http:
        client = anthropic.Anthropic(base_url="http://gateway", api_key="k", http_client=http, max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="temperature is not supported"):
            with client.messages.stream(model="slow", max_tokens=64, messages=QUESTION) as stream:
                list(stream)


def test_a_failure_after_the_200_is_the_doors_error_event():
    model = SlowModel(fail=RateLimitedError("slow: rate limited", retry_after=3))
    asgi, _ = beating(messages_app(model), model)
    with TestClient(asgi, base_url="http://gateway") as http:
        with http.stream("POST", "/v1/messages", json={"model": "slow", "max_tokens": 64, "messages": QUESTION,
                                                       "stream": True}) as response:
            assert response.status_code == 200
            body = response.read().decode()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "rate_limit_error" and ": keepalive" in body


def openai_app(model: SlowModel) -> FastAPI:
    """An OpenAI-shaped stream over the heartbeat module, as the gateway's own."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(http: Request):
        opening = await open_stream(aiter(model.stream(ChatRequest(model="slow", messages=()))), 0.0)

        async def rest(first: Chunk):
            chunk = first
            while not chunk.done:
                yield b"data: " + json.dumps(chunk_body("chatcmpl-1", "slow", 0, delta=chunk.delta, role=True)).encode() + b"\n\n"
                chunk = await anext(opening.items)
            yield b"data: " + json.dumps(chunk_body("chatcmpl-1", "slow", 0, finish_reason="stop")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return EventStream(opening, opening.then(rest, lambda err: [], interval_s=0.01))

    return app


def test_the_openai_sdk_streams_through_heartbeats():
    model = SlowModel()
    asgi, seen = beating(openai_app(model), model)
    with TestClient(asgi, base_url="http://gateway") as http:
        client = openai.OpenAI(base_url="http://gateway/v1", api_key="k", http_client=http, max_retries=0)
        stream = client.chat.completions.create(model="slow", messages=QUESTION, stream=True)
        chunks = list(stream)
    assert seen["beats"] >= 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The answer is 5."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_client_gone_while_the_first_chunk_is_awaited_closes_the_provider_stream():
    model = SlowModel()  # never told to go on: its first chunk would never come
    app = messages_app(model)
    body = json.dumps({"model": "slow", "max_tokens": 64, "messages": QUESTION, "stream": True}).encode()
    sent: list[dict] = []

    async def run() -> None:
        beaten = asyncio.Event()
        requested = False

        async def receive():
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": body, "more_body": False}
            await beaten.wait()
            return {"type": "http.disconnect"}  # the client hung up during the heartbeats

        async def send(message):
            sent.append(message)
            if message.get("body") == HEARTBEAT:
                beaten.set()

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "path": "/v1/messages", "raw_path": b"/v1/messages", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"host", b"gateway")],
                 "scheme": "http", "server": ("gateway", 80), "client": ("127.0.0.1", 1), "root_path": ""}
        await asyncio.wait_for(app(scope, receive, send), timeout=30)
        # Closed by the time the response is done, not by asyncio.run cancelling leftovers.
        assert model.closed_early and not model.finished

    asyncio.run(run())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
