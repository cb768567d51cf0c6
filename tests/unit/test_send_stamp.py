"""The SDKs' aiohttp transport reports each request's send, in the sending task, to the provider's limiter."""

from __future__ import annotations

import time

import anthropic
import httpx2
import openai
import pytest
from aiohttp import web

from orchestray.backends import make_backend
from orchestray.backends._send_stamp import sending, stamp_sends
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest, Message
from orchestray.provider import Provider

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


@pytest.fixture
async def server():
    """A loopback server answering chat completions, noting when each request's handler began."""
    arrived: list[float] = []

    async def chat(request: web.Request) -> web.Response:
        arrived.append(time.monotonic())
        await request.read()
        return web.json_response(COMPLETION)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1", arrived
    await runner.cleanup()


async def test_the_openai_sdk_on_aiohttp_reports_each_send_in_the_sending_task(server):
    base_url, arrived = server
    client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=openai.DefaultAioHttpClient())
    assert stamp_sends(client)
    sent: list[float] = []
    try:
        with sending(lambda: sent.append(time.monotonic())):
            before = time.monotonic()
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])  # outside: unseen
    finally:
        await client.close()
    assert len(sent) == 1 and len(arrived) == 2
    assert before <= sent[0] <= arrived[0]


def test_other_transports_are_left_alone():
    assert not stamp_sends(openai.AsyncOpenAI(api_key="k", http_client=httpx2.AsyncClient()))
    assert not stamp_sends(anthropic.AsyncAnthropic(api_key="k", http_client=httpx2.AsyncClient()))
    assert stamp_sends(anthropic.AsyncAnthropic(api_key="k", http_client=anthropic.DefaultAioHttpClient()))


async def test_a_providers_calls_take_their_window_stamp_from_the_send(server):
    base_url, arrived = server
    config = ProviderConfig(name="p", kind="openai", model="m", base_url=base_url, limits={"rpm": 600})
    backend = make_backend(config, "k")
    assert backend.stamps_sends
    provider = Provider(config, backend)
    stamps = []
    acquire = provider.gate.acquire

    async def recording_acquire(*args, **kwargs):
        permit = await acquire(*args, **kwargs)
        stamps.append(permit)
        return permit

    provider.gate.acquire = recording_acquire  # type: ignore[method-assign]
    try:
        for _ in range(3):
            await provider.complete(ChatRequest(messages=(Message("user", "x"),), max_tokens=4))
    finally:
        await provider.close()
    assert len(stamps) == 3
    for permit, handler_began in zip(stamps, arrived):
        assert permit.logged_at is not None and permit.admitted_at <= permit.logged_at <= handler_began
    assert provider.limiter._requests.log.used(time.monotonic()) == 3  # all sent, none still held
