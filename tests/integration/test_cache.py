"""The response cache cluster-wide, on the embedded store actor and on a real redis-server: a hit
through the gateway, the Python API and Ray Data, and a whole batch rerun served from the cache,
each shown by the emulator's request count standing still."""

from __future__ import annotations

import asyncio
import json
import uuid

import openai
import pytest

from orchestray import AsyncClient
from orchestray.actors.batch import run_batch_job
from orchestray.batch import BatchOptions
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_thread
from orchestray.serving import app_for
from orchestray.simulated import arithmetic_questions
from orchestray.testing import redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator():
    with run_in_thread(EmulatorOptions()) as emu:
        yield emu


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture(params=["embedded", "redis"])
def cache_config(request, emulator, ray_session):
    """A config of two emulator providers and a cascade over them, with the cache on the store
    named by the parameter; fresh names and key prefix, so nothing is shared with another test."""
    tag = uuid.uuid4().hex[:6]
    prefix = f"t{tag}:"
    cache = {"ttl_s": 600, "max_entries": 10_000}
    if request.param == "redis":
        cache["redis_url"] = request.getfixturevalue("redis_url")
    data = {
        "providers": [
            {"name": f"c-small-{tag}", "kind": "openai", "model": "sim-small", "base_url": emulator.openai_base_url, "max_retries": 0},
            {"name": f"c-large-{tag}", "kind": "openai", "model": "sim-large", "base_url": emulator.openai_base_url, "max_retries": 0},
        ],
        "routes": {f"c-cheap-{tag}": {"pattern": "cascade", "providers": [f"c-small-{tag}", f"c-large-{tag}"], "threshold": 0.8}},
        "cache": cache,
        "store": {"key_prefix": prefix},
        "serve": {"num_replicas": 2, "replica_num_cpus": 0, "allow_unauthenticated": True},
    }
    yield parse_config(data), tag, request.param
    for p in data["providers"]:
        try:
            ray_session.kill(ray_session.get_actor(p["name"], namespace="orchestray"))
        except ValueError:
            pass
    if request.param == "embedded":
        try:
            ray_session.kill(ray_session.get_actor(f"orchestray-store:{prefix}", namespace="orchestray"))
        except ValueError:
            pass


def _requests(emulator) -> int:
    return emulator.stats()["requests"]


def test_a_hit_through_the_gateway_is_cached_and_never_reaches_the_provider(cache_config, emulator, ray_session, deploy,
                                                                            closing):
    from ray import serve

    config, tag, store = cache_config
    base = deploy(app_for(config), f"cache-{tag}")
    try:
        client = closing(openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0))
        ask = {"model": f"c-small-{tag}", "messages": [{"role": "user", "content": "What is 6 * 7?"}], "temperature": 0}
        before = _requests(emulator)
        first = client.chat.completions.create(**ask)
        assert _requests(emulator) == before + 1
        assert first.model_extra["orchestray"]["trace"].get("cached") is not True
        # Several more, over two replicas: every one a hit, and the emulator never asked again.
        later = [client.chat.completions.create(**ask) for _ in range(4)]
        assert _requests(emulator) == before + 1
        for answer in later:
            extension = answer.model_extra["orchestray"]
            assert extension["trace"]["cached"] is True and extension["cost"] == 0
            assert answer.choices[0].message.content == first.choices[0].message.content
        # Streamed, the same answer replayed; unset temperature (1.0) bypasses.
        streamed = client.chat.completions.create(**ask, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == first.choices[0].message.content
        client.chat.completions.create(model=ask["model"], messages=ask["messages"])
        assert _requests(emulator) == before + 2

        # Cluster-wide: this driver's own client, another process, finds the gateway's entry.
        async def from_the_api():
            async with AsyncClient(config, runtime="ray") as api:
                return await api.complete(f"c-small-{tag}", "What is 6 * 7?", temperature=0)

        answer = asyncio.run(from_the_api())
        assert answer.trace.cached and answer.cost == 0 and _requests(emulator) == before + 2
    finally:
        serve.delete(f"cache-{tag}")


def _write_batch(path, tag: str, n: int) -> None:
    models = [f"c-small-{tag}", f"c-cheap-{tag}"]  # a provider (driver side) and a route (batch workers)
    with open(path, "w") as f:
        for i, q in enumerate(arithmetic_questions(n, seed=11)):
            body = {"model": models[i % 2], "messages": [{"role": "user", "content": q.prompt}], "max_tokens": 48, "temperature": 0}
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def _records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _leaves(span: dict):
    if span["kind"] == "provider":
        yield span
    for child in span.get("children", []):
        yield from _leaves(child)


def test_a_batch_rerun_to_a_new_output_is_served_from_the_cache(cache_config, emulator, ray_session, tmp_path):
    config, tag, store = cache_config
    source = tmp_path / "in.jsonl"
    n = 60
    _write_batch(source, tag, n)
    address = ray_session.get_runtime_context().gcs_address
    options = BatchOptions(progress=False, max_in_flight=32)
    before = _requests(emulator)
    first = run_batch_job(str(source), str(tmp_path / "first.jsonl"), config, options, address=address, workers=2)
    assert first.succeeded == n
    asked = _requests(emulator) - before
    assert asked >= n  # a cascade line may ask both providers

    again = run_batch_job(str(source), str(tmp_path / "again.jsonl"), config, options, address=address, workers=2)
    assert again.succeeded == n and again.cost == 0
    assert _requests(emulator) - before == asked, "the rerun reached the provider"
    kept = {r["custom_id"]: r for r in _records(tmp_path / "first.jsonl")}
    for record in _records(tmp_path / "again.jsonl"):
        body = record["response"]["body"]
        leaves = list(_leaves(body["orchestray"]["trace"]))
        assert leaves and all(leaf.get("cached") for leaf in leaves)
        assert body["choices"][0]["message"]["content"] == kept[record["custom_id"]]["response"]["body"]["choices"][0]["message"]["content"]


# One store is enough for this door: the gateway and batch tests cover Redis.
@pytest.mark.parametrize("cache_config", ["embedded"], indirect=True)
def test_ray_data_rows_hit_the_cache_the_batch_filled(cache_config, emulator, ray_session):
    import ray.data

    import orchestray.data

    config, tag, store = cache_config
    prompts = [q.prompt for q in arithmetic_questions(8, seed=5)]
    rows = ray.data.from_items([{"prompt": p} for p in prompts])
    before = _requests(emulator)
    first = orchestray.data.complete(rows, f"c-small-{tag}", config, temperature=0).take_all()
    assert _requests(emulator) - before == len(prompts) and all(r["error"] is None for r in first)
    again = orchestray.data.complete(rows, f"c-small-{tag}", config, temperature=0).take_all()
    assert _requests(emulator) - before == len(prompts)
    assert all(r["cost"] == 0 and r["error"] is None for r in again)
    assert sorted(r["content"] for r in again) == sorted(r["content"] for r in first)
