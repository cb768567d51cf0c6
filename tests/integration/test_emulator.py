"""The provider emulator, driven by the real openai and anthropic SDKs over loopback HTTP (no Ray)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import aiohttp
import anthropic
import openai
import pytest

from orchestray.emulator import (
    Emulator,
    EmulatorOptions,
    add_arguments,
    options_from_args,
    options_to_args,
    run_in_process,
    run_in_thread,
)

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is 37 + 48?"}]


@contextlib.asynccontextmanager
async def running(**options):
    async with Emulator(EmulatorOptions(**options)) as emu:
        yield emu


def openai_client(emu, *, api_key: str = "test", timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=emu.openai_base_url,
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultAioHttpClient(),
    )


def anthropic_client(emu, *, api_key: str = "test", timeout: float = 5.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=emu.anthropic_base_url,
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        http_client=anthropic.DefaultAioHttpClient(),
    )


async def eventually(condition, timeout_s: float = 1.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- answering -----------------------------------------------------------------------------------


async def test_openai_completion_with_usage():
    async with running() as emu, openai_client(emu) as client:
        response = await client.chat.completions.create(model="sim-large", messages=QUESTION)
    assert response.object == "chat.completion"
    assert response.model == "sim-large"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content.splitlines()[-1].startswith("Answer: ")
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens == 4  # estimate_tokens("What is 37 + 48?")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 4


async def test_openai_stream_with_include_usage():
    async with running() as emu, openai_client(emu) as client:
        stream = await client.chat.completions.create(
            model="sim-small",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(model="sim-small", messages=QUESTION)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # same request, same answer
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


async def test_openai_max_tokens_and_n():
    async with running() as emu, openai_client(emu) as client:
        short = await client.chat.completions.create(model="sim-small", messages=QUESTION, max_completion_tokens=3)
        many = await client.chat.completions.create(model="x", messages=QUESTION, n=3, temperature=1.0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert [c.index for c in many.choices] == [0, 1, 2]


async def test_anthropic_message_with_system_blocks():
    async with running() as emu, anthropic_client(emu) as client:
        message = await client.messages.create(
            model="sim-medium",
            max_tokens=200,
            system=[{"type": "text", "text": "Be brief."}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is (2 + 3) * 4?"}]}],
        )
        cut = await client.messages.create(model="sim-medium", max_tokens=2, messages=QUESTION)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and "Answer:" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 8  # estimate_tokens("Be brief.\nWhat is (2 + 3) * 4?")
    assert message.usage.output_tokens > 0
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


async def test_anthropic_stream_parses_with_the_sdk_helpers():
    async with running() as emu, anthropic_client(emu) as client:
        async with client.messages.stream(model="sim-small", max_tokens=200, messages=QUESTION) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        whole = await client.messages.create(model="sim-small", max_tokens=200, messages=QUESTION)
    assert len(pieces) > 1
    assert "".join(pieces) == final.content[0].text == whole.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


async def test_request_seed_gives_independent_samples():
    async with running() as emu, openai_client(emu) as client:
        texts = {
            (await client.chat.completions.create(model="sim-small", messages=QUESTION, seed=i)).choices[0].message.content
            for i in range(12)
        }
    assert len(texts) > 1


async def test_latency_is_slept_and_counted():
    async with running(latency_ms=150.0) as emu, openai_client(emu) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client.chat.completions.create(model="m", messages=QUESTION) for _ in range(4)))
        elapsed = time.perf_counter() - started
        stats = emu.stats()
    assert 0.15 <= elapsed < 0.6  # slept once, concurrently
    assert stats["served"] == 4 and stats["peak_concurrency"] == 4
    assert stats["by_model"]["m"]["served"] == 4


# --- rate limits ---------------------------------------------------------------------------------


async def test_openai_429_with_retry_after_and_rate_limit_headers():
    async with running(rpm=60) as emu, openai_client(emu) as client:
        ok = await client.chat.completions.with_raw_response.create(model="sim-small", messages=QUESTION)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="sim-small", messages=QUESTION)
        other_model = await client.chat.completions.create(model="sim-large", messages=QUESTION)
        stats = emu.stats()
    assert ok.headers["x-ratelimit-limit-requests"] == "60"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"[0-9.]+s", ok.headers["x-ratelimit-reset-requests"])
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.body["code"] == "rate_limit_exceeded" and caught.value.body["type"] == "requests"
    assert other_model.choices  # limits are per model
    assert stats["rate_limited"] == 1 and stats["served"] == 2


async def test_anthropic_429_with_rate_limit_headers():
    async with running(rpm=60, tpm=60_000) as emu, anthropic_client(emu) as client:
        ok = await client.messages.with_raw_response.create(model="sim-small", max_tokens=50, messages=QUESTION)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model="sim-small", max_tokens=50, messages=QUESTION)
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "60"
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "60000"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ok.headers["anthropic-ratelimit-requests-reset"])
    error = caught.value
    assert error.body["error"]["type"] == "rate_limit_error"
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert int(error.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("mode", ["sliding", "fixed", "bucket"])
async def test_every_limit_mode_allows_a_second_of_quota_and_heads_every_answer(mode):
    from orchestray.backends._reply import parse_quota

    async with running(rpm=600, limit_mode=mode) as emu, openai_client(emu) as client:  # 10 a second
        results = await asyncio.gather(
            *(client.chat.completions.with_raw_response.create(model="m", messages=QUESTION) for _ in range(12)),
            return_exceptions=True,
        )
    answered = [r for r in results if not isinstance(r, Exception)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(answered), len(limited)) == (10, 2)
    # Read back as the provider reads them: the limit per minute, what remains, when it resets.
    quotas = [parse_quota(r.headers) for r in answered] + [parse_quota(e.response.headers) for e in limited]
    assert {q.limit_requests for q in quotas} == {600}
    assert sorted(q.remaining_requests for q in quotas[:10]) == list(range(10))
    assert all(0 < q.reset_requests_s <= 1.0 for q in quotas)


async def test_rate_limit_refills_within_a_second():
    async with running(rpm=120) as emu, openai_client(emu) as client:  # 2 a second, burst of 2
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=QUESTION) for _ in range(5)),
            return_exceptions=True,
        )
        limited = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(limited) == 3
        wait_ms = int(limited[-1].response.headers["retry-after-ms"])
        assert wait_ms <= 500
        await asyncio.sleep(wait_ms / 1000 + 0.01)
        assert (await client.chat.completions.create(model="m", messages=QUESTION)).choices


async def test_token_limit_counts_max_tokens_and_refunds_the_unused_part():
    async with running(tpm=60_000) as emu, openai_client(emu) as client:  # 1000 tokens a second
        for _ in range(3):  # each reserves ~905 tokens but uses ~25: the rest comes back
            await client.chat.completions.create(model="m", messages=QUESTION, max_tokens=900)
        await client.chat.completions.create(model="m", messages=QUESTION)  # default 256 reserved
        emu.configure(latency_ms=200.0)  # hold the first reservation while the second arrives
        results = await asyncio.gather(
            *(client.chat.completions.create(model="m", messages=QUESTION, max_tokens=900) for _ in range(2)),
            return_exceptions=True,
        )
        limited = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(limited) == 1 and limited[0].body["type"] == "tokens"
        with pytest.raises(openai.APIStatusError) as too_large:
            await client.chat.completions.create(model="m", messages=QUESTION, max_tokens=70_000)
    assert too_large.value.status_code == 413
    assert "tokens per minute" in too_large.value.message


# --- faults, hangs, cancels ----------------------------------------------------------------------


async def test_faults_are_5xx_in_each_provider_shape():
    async with running(fault_rate=1.0, seed=3) as emu:
        async with openai_client(emu) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="m", messages=QUESTION)
            assert caught.value.status_code in (500, 502, 503)
            assert caught.value.body["type"] == "server_error"
        async with anthropic_client(emu) as client:
            statuses = set()
            for _ in range(12):
                with pytest.raises(anthropic.InternalServerError) as caught:
                    await client.messages.create(model="m", max_tokens=10, messages=QUESTION)
                statuses.add(caught.value.status_code)
            assert statuses == {500, 529}
            assert isinstance(caught.value, anthropic.APIStatusError)
        emu.configure(error_status=503)
        async with openai_client(emu) as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="m", messages=QUESTION)
            assert caught.value.status_code == 503
        assert emu.stats()["faults"] == 14 and emu.stats()["served"] == 0


async def test_faults_can_be_switched_on_and_off_while_running():
    async with running() as emu, openai_client(emu) as client, aiohttp.ClientSession() as http:
        await client.chat.completions.create(model="m", messages=QUESTION)
        async with http.post(f"{emu.base_url}/config", json={"fault_rate": 1.0}) as response:
            assert response.status == 200 and (await response.json())["fault_rate"] == 1.0
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=QUESTION)
        async with http.post(f"{emu.base_url}/config", json={"fault_rate": 0.0}) as response:
            assert response.status == 200
        await client.chat.completions.create(model="m", messages=QUESTION)
        async with http.post(f"{emu.base_url}/config", json={"fault_rate": 2}) as response:
            assert response.status == 400
        async with http.get(f"{emu.base_url}/stats") as response:
            stats = await response.json()
    assert (stats["served"], stats["faults"]) == (2, 1)


async def test_a_cancelled_client_call_is_counted_as_cancelled():
    async with running(latency_ms=5_000.0) as emu, openai_client(emu) as client:
        task = asyncio.create_task(client.chat.completions.create(model="m", messages=QUESTION))
        await eventually(lambda: emu.stats()["in_flight"] == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: emu.stats()["cancelled"] == 1)
        stats = emu.stats()
    assert stats["served"] == 0 and stats["in_flight"] == 0
    assert stats["by_model"]["m"]["cancelled"] == 1


async def test_a_cancelled_stream_refunds_its_output_tokens():
    async with running(latency_ms=5_000.0, tpm=60_000) as emu, anthropic_client(emu) as client:

        async def read_stream() -> None:
            stream = await client.messages.create(model="m", max_tokens=900, messages=QUESTION, stream=True)
            async for _ in stream:
                pass

        task = asyncio.create_task(read_stream())
        await eventually(lambda: emu.stats()["in_flight"] == 1)
        await asyncio.sleep(0.05)  # the stream is open and waiting for its first event
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: emu.stats()["cancelled"] == 1)
        emu.configure(latency_ms=0.0)
        # Without the refund the bucket would hold ~95 tokens and this would be a 429.
        assert (await client.messages.create(model="m", max_tokens=900, messages=QUESTION)).content


async def test_leaving_a_stream_midway_counts_as_cancelled(caplog):
    async with running(latency_ms=0.0, ms_per_output_token=40.0) as emu, openai_client(emu) as client:
        stream = await client.chat.completions.create(model="m", messages=QUESTION, stream=True)
        async for _ in stream:
            break  # the first chunk came at once; the rest trickle in over ~1s
        await stream.close()
        await eventually(lambda: emu.stats()["cancelled"] == 1)
        assert emu.stats()["served"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_hang_lasts_until_the_client_gives_up():
    async with running(hang_rate=1.0) as emu, openai_client(emu, timeout=0.2) as client:
        started = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=QUESTION)
        assert time.perf_counter() - started < 1.0
        await eventually(lambda: emu.stats()["cancelled"] == 1)
        stats = emu.stats()
    assert stats["hangs"] == 1 and stats["served"] == 0


# --- auth and bad input --------------------------------------------------------------------------


async def test_api_key_is_required_when_configured():
    async with running(api_key="sekret") as emu:
        async with openai_client(emu, api_key="wrong") as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="m", messages=QUESTION)
            assert caught.value.body["code"] == "invalid_api_key"
        async with anthropic_client(emu, api_key="wrong") as client:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                await client.messages.create(model="m", max_tokens=10, messages=QUESTION)
            assert caught.value.body["error"]["type"] == "authentication_error"
        async with openai_client(emu, api_key="sekret") as client:
            assert (await client.chat.completions.create(model="m", messages=QUESTION)).choices
        async with anthropic_client(emu, api_key="sekret") as client:
            assert (await client.messages.create(model="m", max_tokens=10, messages=QUESTION)).content
        assert emu.stats()["unauthorized"] == 2


@pytest.mark.parametrize(
    ("path", "body", "mentions"),
    [
        ("/v1/chat/completions", b"{not json", "JSON"),
        ("/v1/chat/completions", b'{"model": "m"}', "messages"),
        ("/v1/chat/completions", b'{"model": "m", "messages": []}', "messages"),
        ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "content"),
        ("/v1/messages", b"[]", "object"),
        ("/v1/messages", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', "max_tokens"),
    ],
)
async def test_bad_requests_get_400_in_the_provider_shape(path, body, mentions):
    async with running() as emu, aiohttp.ClientSession() as http:
        async with http.post(emu.base_url + path, data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            payload = await r.json()
        assert emu.stats()["bad_requests"] == 1
    if path == "/v1/messages":
        assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
        assert mentions in payload["error"]["message"]
    else:
        assert payload["error"]["type"] == "invalid_request_error"
        assert mentions in payload["error"]["message"]


async def test_bad_request_surfaces_as_the_sdk_error():
    async with running() as emu, openai_client(emu) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="m", messages=[])


# --- control endpoints and runners ---------------------------------------------------------------


async def test_models_health_stats_and_reset():
    async with running() as emu, openai_client(emu) as client, aiohttp.ClientSession() as http:
        models = await client.models.list()
        assert {m.id for m in models.data} >= {"sim-small", "sim-medium", "sim-large"}
        async with http.get(f"{emu.base_url}/health") as response:
            assert response.status == 200
        await client.chat.completions.create(model="sim-small", messages=QUESTION)
        assert emu.stats()["served"] == 1
        async with http.post(f"{emu.base_url}/reset") as response:
            assert (await response.json())["served"] == 0
        assert emu.stats()["by_model"] == {}


def test_run_in_thread_for_sync_code():
    with run_in_thread(EmulatorOptions(rpm=60)) as emu:
        client = openai.OpenAI(base_url=emu.openai_base_url, api_key="test", max_retries=0, timeout=5)
        with client:
            assert client.chat.completions.create(model="m", messages=QUESTION).choices
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="m", messages=QUESTION)
            assert emu.stats()["rate_limited"] == 1
            emu.configure(rpm=None)
            emu.reset()
            assert client.chat.completions.create(model="m", messages=QUESTION).choices
            assert emu.stats()["served"] == 1


def test_run_in_process_serves_from_a_child_process():
    with run_in_process(EmulatorOptions(api_key="k", latency_ms=1.0)) as emu:
        assert emu.pid is not None
        client = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="k", max_retries=0, timeout=5)
        with client:
            assert client.messages.create(model="sim-small", max_tokens=50, messages=QUESTION).content
        assert emu.stats()["served"] == 1


def test_command_line_round_trip():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = EmulatorOptions(port=0, rpm=100, latency_ms=None, fault_rate=0.1, error_status=503, seed=4)
    assert options_from_args(parser.parse_args(options_to_args(options))) == options
    with pytest.raises(ValueError):
        EmulatorOptions(fault_rate=0.7, hang_rate=0.7)
