"""The emulator's batch APIs with the real SDKs, in this process: the OpenAI objects validate
against OpenAI's own schemas; caps, the queue limit, expiry and cancelling behave as providers'."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anthropic
import openai
import pytest
from jsonschema import Draft202012Validator

from orchestray.emulator import Emulator, EmulatorOptions

# The repository's copy of ../shared/openai, so a clean checkout (CI) runs this test too.
_SCHEMAS = Path(__file__).parents[1] / "openai" / "openai-responses-batch-schemas.json"


def _validator(name: str) -> Draft202012Validator:
    bundle = json.loads(_SCHEMAS.read_text())
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": bundle["components"]})


def _lines(n: int, model: str = "sim-small") -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}}).encode() + b"\n"
        for i in range(n)
    )


def _clients(emu):
    oc = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="k", max_retries=0)
    ac = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key="k", max_retries=0)
    return oc, ac


async def test_openai_batch_objects_match_the_schema_and_bodies_are_chat_completions():
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.1)) as emu:
        oc, _ = _clients(emu)
        upload = await oc.files.create(file=("in.jsonl", _lines(5)), purpose="batch")
        raw = await oc.files.with_raw_response.retrieve(upload.id)
        assert not list(_validator("OpenAIFile").iter_errors(json.loads(raw.content)))
        batch = await oc.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.status == "validating"
        await asyncio.sleep(0.15)
        raw = await oc.batches.with_raw_response.retrieve(batch.id)
        body = json.loads(raw.content)
        assert not list(_validator("Batch").iter_errors(body))
        assert body["status"] == "completed" and body["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
        output = (await oc.files.content(body["output_file_id"])).text.splitlines()
        first = json.loads(output[0])["response"]["body"]
        assert first["object"] == "chat.completion" and first["usage"]["prompt_tokens"] > 0
        assert emu.stats()["requests"] == 0  # no live call counted
        await oc.close()


async def test_caps_and_the_queue_limit_are_enforced():
    async with Emulator(EmulatorOptions(batch_turnaround_s=5, batch_max_requests=3, batch_queue_requests=4)) as emu:
        oc, ac = _clients(emu)
        upload = await oc.files.create(file=("in.jsonl", _lines(4)), purpose="batch")
        too_many = await oc.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert too_many.status == "failed" and too_many.errors.data[0].code == "too_many_requests"
        params = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "What is 1 + 1?"}]}
        with pytest.raises(anthropic.BadRequestError):
            await ac.messages.batches.create(requests=[{"custom_id": f"a{i}", "params": params} for i in range(4)])
        await ac.messages.batches.create(requests=[{"custom_id": f"a{i}", "params": params} for i in range(3)])
        with pytest.raises(anthropic.RateLimitError):  # 3 wait already; 2 more would pass the queue of 4
            await ac.messages.batches.create(requests=[{"custom_id": f"b{i}", "params": params} for i in range(2)])
        await oc.close()
        await ac.close()


async def test_expired_and_cancelled_requests_come_back_as_such():
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.05, batch_expire_rate=1.0)) as emu:
        _, ac = _clients(emu)
        params = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "What is 1 + 1?"}]}
        batch = await ac.messages.batches.create(requests=[{"custom_id": "x", "params": params}])
        await asyncio.sleep(0.1)
        results = [r async for r in await ac.messages.batches.results(batch.id)]
        assert [r.result.type for r in results] == ["expired"]
        emu.configure(batch_turnaround_s=10, batch_expire_rate=0.0)
        batch = await ac.messages.batches.create(requests=[{"custom_id": "y", "params": params}])
        assert (await ac.messages.batches.cancel(batch.id)).processing_status == "canceling"
        await asyncio.sleep(0.1)
        ended = await ac.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 1
        assert emu.stats()["batches"]["paid_twice"] == 0
        await ac.close()
