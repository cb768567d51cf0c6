"""`orchestray batch --provider-batch`: the real openai and anthropic SDKs against the emulator's
batch APIs. No Ray starts here: every line goes to a batch-API provider."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from openai.types.responses import Response

from orchestray import AsyncClient, LocalRuntime
from orchestray.config import parse_config
from orchestray.emulator import Emulator, EmulatorOptions, run_in_thread
from orchestray.provider_batch import ProviderBatchOptions, run_provider_batch
from orchestray.provider_batch._journal import journal_path

pytestmark = pytest.mark.integration

PRICE = {"input_per_1k": 0.001, "output_per_1k": 0.002}


def _config(emu, **batch) -> dict:
    batch.setdefault("poll_s", 0.05)
    os.environ["ORCHESTRAY_TEST_KEY"] = "test-key"
    providers = [
        {"name": "gpt-mini", "kind": "openai", "model": "sim-small", "base_url": emu.openai_base_url,
         "api_key_env": "ORCHESTRAY_TEST_KEY", "price": PRICE, "batch": batch, "max_retries": 3},
        {"name": "claude", "kind": "anthropic", "model": "sim-medium", "base_url": emu.anthropic_base_url,
         "api_key_env": "ORCHESTRAY_TEST_KEY", "price": PRICE, "batch": batch, "max_retries": 3},
    ]
    routes = {
        "vote": {"pattern": "ensemble", "providers": ["gpt-mini", "claude"], "samples": 2},
        "cheap": {"pattern": "cascade", "providers": ["gpt-mini", "claude"], "threshold": 0.8},
    }
    return {"providers": providers, "routes": routes}


def _write_input(path: Path, n: int, models: list[str]) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"model": models[i % len(models)], "messages": [{"role": "user", "content": f"What is {i} + {i % 7}?"}]}
            f.write(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _no_live():
    raise AssertionError("no line of this job should run live")


async def test_2000_lines_make_no_live_call_and_cost_half(tmp_path):
    source = tmp_path / "in.jsonl"
    _write_input(source, 2000, ["gpt-mini", "claude"])
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.2)) as emu:
        config = parse_config(_config(emu))
        result = await run_provider_batch(source, tmp_path / "out.jsonl", config, _no_live,
                                          ProviderBatchOptions(poll_s=0.1, progress=False))
        stats = emu.stats()
        assert stats["requests"] == 0  # not one live call
        assert stats["batches"]["requests"] == 2000 and stats["batches"]["paid_twice"] == 0
        records = _records(tmp_path / "out.jsonl")
        assert sorted(r["custom_id"] for r in records) == sorted(f"q{i}" for i in range(2000))
        assert all(r["error"] is None and r["response"]["body"]["object"] == "chat.completion" for r in records)

        # The same job live, on the same emulator: the batch run costs half.
        async with AsyncClient(config, runtime=LocalRuntime()) as client:
            live = [r async for r in client.batch(source, tmp_path / "live.jsonl")]
        assert len(live) == 2000 and emu.stats()["requests"] == 2000
    live_summary = json.loads((tmp_path / "live.jsonl").read_text().splitlines()[0])  # a record, for its shape
    assert set(live_summary) == set(records[0])
    tokens_in = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in records)
    tokens_out = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in records)
    live_price = (tokens_in * PRICE["input_per_1k"] + tokens_out * PRICE["output_per_1k"]) / 1000
    assert result.cost == pytest.approx(live_price * 0.5)
    live_tokens = [r["response"]["body"]["usage"] for r in _records(tmp_path / "live.jsonl")]
    live_cost = sum(u["prompt_tokens"] * 0.001 + u["completion_tokens"] * 0.002 for u in live_tokens) / 1000
    assert 0.4 < result.cost / live_cost < 0.6


async def test_ensemble_in_one_round_and_cascade_in_two(tmp_path):
    source = tmp_path / "in.jsonl"
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.1)) as emu:
        config = parse_config(_config(emu))
        _write_input(source, 20, ["vote"])
        vote = await run_provider_batch(source, tmp_path / "vote.jsonl", config, _no_live,
                                        ProviderBatchOptions(poll_s=0.05, progress=False))
        assert vote.rounds == 1 and vote.batch_requests == 20 * 4  # 2 samples from each of 2 providers
        body = _records(tmp_path / "vote.jsonl")[0]["response"]["body"]
        assert body["choices"][0]["message"]["content"]
        _write_input(source, 40, ["cheap"])
        cheap = await run_provider_batch(source, tmp_path / "cheap.jsonl", config, _no_live,
                                         ProviderBatchOptions(poll_s=0.05, progress=False))
        escalated = cheap.by_provider["claude"].requests
        assert cheap.rounds == 2 and 0 < escalated < 40  # stage one for all, the escalated lines next round
        assert cheap.batch_requests == 40 + escalated
        assert emu.stats()["requests"] == 0
    assert len(_records(tmp_path / "cheap.jsonl")) == 40


async def test_a_fallback_and_a_route_send_what_failed_to_the_next_provider_a_round_later(tmp_path):
    """Every batch request of the fallback's first provider errors (500) and its retry budget is
    0: round one asks it for every line, round two asks the second provider for those lines only.
    A `route` whose rule names the fallback takes the same two rounds."""
    source = tmp_path / "in.jsonl"
    _write_input(source, 20, ["safe", "auto"])
    options = EmulatorOptions(batch_turnaround_s=0.1, batch_error_rate=1.0, batch_fault_models=("sim-small",))
    async with Emulator(options) as emu:
        raw = _config(emu)
        raw["providers"][0]["max_retries"] = 0
        raw["routes"]["safe"] = {"pattern": "fallback", "providers": ["gpt-mini", "claude"]}
        raw["routes"]["auto"] = {"pattern": "route", "rules": [{"task": "arithmetic", "to": "safe"}], "default": "gpt-mini"}
        result = await run_provider_batch(source, tmp_path / "out.jsonl", parse_config(raw), _no_live,
                                          ProviderBatchOptions(poll_s=0.05, progress=False))
        stats = emu.stats()
    assert stats["requests"] == 0  # not one live call
    assert stats["batches"]["by_api"] == {"openai": {"batches": 1, "requests": 20},
                                          "anthropic": {"batches": 1, "requests": 20}}
    assert stats["batches"]["errored"] == 20 and stats["batches"]["paid_twice"] == 0
    assert result.rounds == 2 and result.succeeded == 20
    records = _records(tmp_path / "out.jsonl")
    assert len(records) == 20 and all(r["error"] is None for r in records)
    assert {r["response"]["body"]["model"] for r in records} == {"safe", "auto"}  # the name asked for, as live
    assert result.by_provider["claude"].requests == 20  # claude answered each line


async def test_responses_lines_through_both_batch_apis_come_back_as_responses(tmp_path, openai_schemas):
    """`/v1/responses` lines for an OpenAI and an Anthropic provider go through their batch APIs
    (the real SDKs, the emulator's batch endpoints) and come back as Response objects."""
    source = tmp_path / "in.jsonl"
    with source.open("w") as f:
        for i in range(6):
            body = {"model": ["gpt-mini", "claude"][i % 2], "input": f"What is {i} + 3?", "instructions": "Answer briefly.",
                    "max_output_tokens": 64}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses", "body": body}) + "\n")
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.1)) as emu:
        config = parse_config(_config(emu))
        result = await run_provider_batch(source, tmp_path / "out.jsonl", config, _no_live,
                                          ProviderBatchOptions(poll_s=0.05, progress=False))
        stats = emu.stats()
    assert stats["requests"] == 0 and stats["batches"]["requests"] == 6
    assert result.succeeded == 6 and set(result.by_provider) == {"gpt-mini", "claude"}
    responses_schemas = type(openai_schemas)(Path(__file__).parents[1] / "openai" / "openai-responses-batch-schemas.json")
    for record in _records(tmp_path / "out.jsonl"):
        response = record["response"]["body"]
        assert record["error"] is None and response["object"] == "response" and response["status"] == "completed"
        (message,) = [item for item in response["output"] if item["type"] == "message"]
        assert message["content"][0]["type"] == "output_text" and message["content"][0]["text"]
        assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0
        assert Response.model_validate(response).output_text == message["content"][0]["text"]  # as the openai SDK reads it
        responses_schemas.check("Response", response)  # OpenAI's published schema


async def test_a_pipeline_steps_timeout_bounds_live_calls_not_the_wait_for_its_batch(tmp_path):
    """A step with `timeout_s` shorter than the batch's turnaround: its call waits for the batch
    and is answered once, instead of timing out, being asked again and paid for twice."""
    source = tmp_path / "in.jsonl"
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.5)) as emu:
        data = _config(emu)
        data["routes"]["steps"] = {"pattern": "pipeline", "steps": [
            {"name": "draft", "model": "gpt-mini", "prompt": "{input}", "timeout_s": 0.1, "retries": 1},
            {"name": "check", "model": "vote", "prompt": "Check: {steps.draft.output}", "timeout_s": 0.1}]}
        _write_input(source, 3, ["steps"])
        async with AsyncClient(data, runtime=LocalRuntime()) as client:
            records = [r async for r in client.batch(source, tmp_path / "out.jsonl", provider_batch=True)]
        stats = emu.stats()
    assert [r.error for r in records] == [None] * 3
    assert stats["requests"] == 0 and stats["batches"]["requests"] == 3 + 3 * 4  # the draft once; the vote's 4 samples


async def test_a_tree_of_thought_takes_its_levels_as_rounds_with_no_live_call(tmp_path):
    """Each level's proposals, then its evaluations, go out as one round's batch for every line at
    once; the answer prompt is the last round."""
    source = tmp_path / "in.jsonl"
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.05)) as emu:
        data = _config(emu)
        data["routes"]["think"] = {"pattern": "tree_of_thought", "providers": ["gpt-mini"], "breadth": 2, "depth": 2}
        _write_input(source, 4, ["think"])
        result = await run_provider_batch(source, tmp_path / "out.jsonl", parse_config(data), _no_live,
                                          ProviderBatchOptions(poll_s=0.02, progress=False))
        stats = emu.stats()
    assert stats["requests"] == 0 and result.succeeded == 4
    assert 2 < result.rounds <= 2 * 2 + 1  # propose and evaluate per level, then the answer
    assert stats["batches"]["batches"] == result.rounds  # one batch per round, every line's calls together
    assert result.batch_requests == stats["batches"]["requests"] > 4 * result.rounds
    assert all(r["response"]["body"]["choices"][0]["message"]["content"] for r in _records(tmp_path / "out.jsonl"))


async def test_split_at_a_small_cap_and_expired_requests_resubmitted(tmp_path):
    source = tmp_path / "in.jsonl"
    _write_input(source, 95, ["gpt-mini", "claude"])
    options = EmulatorOptions(batch_turnaround_s=0.1, batch_max_requests=10, batch_expire_rate=0.3, seed=3)
    async with Emulator(options) as emu:
        config = parse_config(_config(emu, max_requests=10))
        result = await run_provider_batch(source, tmp_path / "out.jsonl", config, _no_live,
                                          ProviderBatchOptions(poll_s=0.05, progress=False))
        stats = emu.stats()["batches"]
    assert stats["largest_batch"] <= 10 and stats["refused"] == 0  # split below the provider's cap
    assert stats["expired"] > 0 and result.resubmitted == stats["expired"] - result.failed
    assert stats["paid_twice"] == 0
    records = _records(tmp_path / "out.jsonl")
    assert len(records) == 95 and len({r["custom_id"] for r in records}) == 95
    assert result.succeeded + result.failed == 95 and result.rounds > 1


def _cli(tmp_path: Path, source: Path, output: Path, config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestray.cli", "batch", str(source), "-o", str(output), "--config", str(config),
         "--provider-batch", "--poll-s", "0.2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "ORCHESTRAY_TEST_KEY": "test-key"},
    )


@pytest.mark.parametrize("ids_recorded", [True, False], ids=["ids-recorded", "killed-before-ids-recorded"])
def test_sigkilled_after_submitting_then_rerun_pays_once(tmp_path, ids_recorded):
    """Killed while it waits on its batches, the driver is run again and collects them. Without
    `ids_recorded`, the journal is cut back to what a driver killed between creating each batch
    and recording its id left (the intents alone): the rerun finds both batches at the providers
    (OpenAI by metadata, Anthropic by creation time and size) instead of paying again."""
    source, output, config_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "c.yaml"
    _write_input(source, 300, ["gpt-mini", "claude"])
    with run_in_thread(EmulatorOptions(batch_turnaround_s=3.0)) as emu:
        config_path.write_text(yaml.safe_dump(_config(emu)))
        first = _cli(tmp_path, source, output, config_path)
        journal = journal_path(output)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = journal.read_text() if journal.exists() else ""
            if text.count('"e":"submitted"') >= 2:
                break
            time.sleep(0.05)
        else:
            first.kill()
            pytest.fail(f"no batches submitted: {first.communicate()}")
        first.send_signal(signal.SIGKILL)
        first.communicate()
        assert not output.exists() or output.read_text() == ""  # killed while waiting: nothing answered yet
        if not ids_recorded:
            kept = [line for line in journal.read_text().splitlines(keepends=True) if '"e":"submitted"' not in line]
            journal.write_text("".join(kept))
        second = _cli(tmp_path, source, output, config_path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()
        stats = emu.stats()
        listing = subprocess.run(
            [sys.executable, "-m", "orchestray.cli", "provider-batches", str(output), "--config", str(config_path)],
            capture_output=True, text=True, env={**os.environ, "ORCHESTRAY_TEST_KEY": "test-key"}, timeout=60)
    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.splitlines()[1:]
    assert len(rows) == 2 and {row.split()[4] for row in rows} == {"completed", "ended"}  # one batch a provider
    assert stats["requests"] == 0
    assert stats["batches"]["requests"] == 300 and stats["batches"]["paid_twice"] == 0  # none submitted twice
    records = _records(output)
    assert sorted(r["custom_id"] for r in records) == sorted(f"q{i}" for i in range(300))
    assert all(r["error"] is None for r in records)


async def test_race_lines_run_live_apart_and_a_pipeline_takes_a_round_per_step(tmp_path):
    source = tmp_path / "in.jsonl"
    async with Emulator(EmulatorOptions(batch_turnaround_s=0.1)) as emu:
        data = _config(emu)
        data["providers"].append({"name": "sim-small", "kind": "simulated", "simulated": {"latency_ms": 1}})
        data["routes"]["fast"] = {"pattern": "race", "providers": ["gpt-mini", "claude"]}
        data["routes"]["steps"] = {"pattern": "pipeline", "steps": [
            {"name": "draft", "model": "gpt-mini", "prompt": "{input}"},
            {"name": "check", "model": "claude", "prompt": "Check this answer: {steps.draft.output}"},
        ]}
        _write_input(source, 12, ["fast", "steps", "sim-small"])
        async with AsyncClient(data, runtime=LocalRuntime()) as client:
            records = [r async for r in client.batch(source, tmp_path / "out.jsonl", provider_batch=True)]
        stats = emu.stats()
    assert len(records) == 12 and all(r.error is None for r in records)
    assert 4 <= stats["requests"] <= 4 * 2  # the race lines only, live (a loser may be stopped before it is sent)
    assert stats["batches"]["requests"] == 4 * 2  # each pipeline line: one request per step
    assert stats["batches"]["by_api"] == {"openai": {"batches": 1, "requests": 4}, "anthropic": {"batches": 1, "requests": 4}}
