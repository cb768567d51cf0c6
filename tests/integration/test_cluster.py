"""Multi-node behaviour on the session's cluster (a head and two worker nodes on this machine):
provider actors found from every node, limits held across nodes, a worker node lost mid-batch."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestray.actors.batch import run_batch_job
from orchestray.actors.provider import ProviderActor, provider_handle
from orchestray.batch import BatchOptions
from orchestray.cluster import NAMESPACE
from orchestray.config import Config

pytestmark = pytest.mark.integration


def alive_nodes(ray) -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n["Alive"]]


def on_node(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def write_input(path, model: str, ids: list[str]) -> None:
    with open(path, "w") as f:
        for custom_id in ids:
            body = {"model": model, "messages": [{"role": "user", "content": f"What is {len(custom_id)} + 2?"}], "max_tokens": 32}
            f.write(json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def line_count(path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def node_of(ray, actor) -> str:
    """The node an actor runs on, asked of the actor itself."""

    def where(_instance) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    return ray.get(actor.__ray_call__.remote(where))


async def test_a_provider_actor_is_found_by_name_from_every_node(ray_session, provider_config, emulator, kill_actors):
    config = provider_config()
    handle = provider_handle(config)
    kill_actors(handle)
    nodes = alive_nodes(ray_session)
    assert len(nodes) == 3

    @ray_session.remote(num_cpus=0)
    def ask_from_here(config_json: str) -> tuple[str, str]:
        # Imported here: the test module is not importable on a worker.
        import ray

        from orchestray.actors.provider import provider_handle as find
        from orchestray.config import ProviderConfig
        from orchestray.messages import ChatRequest, Message

        found = find(ProviderConfig.model_validate_json(config_json))
        request = ChatRequest(messages=(Message("user", "What is 5 * 5?"),), max_tokens=32)
        completion = asyncio.run(found.complete(request))
        return ray.get_runtime_context().get_node_id(), completion.content

    answers = await asyncio.gather(
        *(ask_from_here.options(scheduling_strategy=on_node(n)).remote(config.model_dump_json()) for n in nodes)
    )
    assert sorted(node for node, _ in answers) == sorted(nodes)
    assert all("Answer:" in content for _, content in answers)
    # One actor served all three: its own count says so, and so does the emulator's.
    assert (await handle.stats()).requests == 3
    assert emulator.stats()["served"] == 3


async def test_batch_drivers_on_three_nodes_hold_one_providers_limit(ray_session, provider_config, emulator, kill_actors, tmp_path):
    """Three batch drivers, one per node, send through one provider: each alone could go at the
    full rate, so only a limit kept cluster-wide keeps the emulator from answering 429."""
    emulator.configure(rpm=1200)  # 20 a second, enforced per second
    provider = provider_config(limits={"rpm": 1200}, max_retries=0)  # a 429 would be an error record
    kill_actors(provider_handle(provider))
    config = Config(providers=[provider])
    nodes = alive_nodes(ray_session)
    per_node = 30
    shards = []
    for i, _ in enumerate(nodes):
        source, out = tmp_path / f"in{i}.jsonl", tmp_path / f"out{i}.jsonl"
        write_input(source, provider.name, [f"n{i}-{k}" for k in range(per_node)])
        shards.append((source, out))

    @ray_session.remote(num_cpus=0)
    def batch_driver(source: str, out: str, config_json: str) -> tuple[str, int, int]:
        import ray

        from orchestray.actors.batch import run_batch_job as run
        from orchestray.batch import BatchOptions as Options
        from orchestray.config import Config as Cfg

        result = run(source, out, Cfg.model_validate_json(config_json), Options(progress=False))
        return ray.get_runtime_context().get_node_id(), result.succeeded, result.failed

    started = time.monotonic()
    results = await asyncio.gather(
        *(batch_driver.options(scheduling_strategy=on_node(node)).remote(str(s), str(o), config.model_dump_json())
          for node, (s, o) in zip(nodes, shards))
    )
    elapsed = time.monotonic() - started
    assert sorted(node for node, _, _ in results) == sorted(nodes)
    assert [(ok, failed) for _, ok, failed in results] == [(per_node, 0)] * len(nodes)
    stats = emulator.stats()
    total = per_node * len(nodes)
    assert stats["served"] == total and stats["rate_limited"] == 0
    # Paced at one limit (20 a second, a quarter second's burst up front), not three.
    assert elapsed > (total - 5) / 20
    for i, (_, out) in enumerate(shards):
        assert sorted(r["custom_id"] for r in records(out)) == sorted(f"n{i}-{k}" for k in range(per_node))


@pytest.mark.parametrize("graceful", [True, False], ids=["drained", "crashed"])
def test_a_worker_node_lost_mid_batch_still_gives_one_line_per_input(
    graceful, ray_cluster, ray_session, add_worker_node, provider_config, emulator, kill_actors, tmp_path
):
    """The provider's actor sits on a worker node that goes away a quarter into the job. Ray
    restarts the actor on a node still alive once it has declared the node dead; the handle
    sends the calls caught in between again until then, so the one run answers every line."""
    provider = provider_config(limits={"rpm": 1200})  # 20 a second: the job takes about 6s
    # On a worker node, whichever the scheduler picks; after that node is gone, Ray restarts it
    # on the other worker (the `worker` resource keeps it off the head, which hosts this driver).
    ProviderActor.options(
        name=provider.name, namespace=NAMESPACE, lifetime="detached", resources={"worker": 0.001}
    ).remote(provider.model_dump_json())
    handle = provider_handle(provider)  # what every caller does: finds the actor by name
    kill_actors(handle)
    home = node_of(ray_session, handle.actor)
    (victim,) = [node for node in ray_cluster.worker_nodes if node.node_id == home]
    config = Config(providers=[provider])
    n = 120
    ids = [f"c{i}" for i in range(n)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, provider.name, ids)
    removal: dict[str, int] = {}

    def remove_the_victim():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and line_count(out) < n // 4:
            time.sleep(0.02)
        removal["done_before"] = line_count(out)
        ray_cluster.remove_node(victim, allow_graceful=graceful)

    remover = threading.Thread(target=remove_the_victim, daemon=True)
    remover.start()
    try:
        started = time.monotonic()
        first = run_batch_job(str(source), str(out), config, BatchOptions(progress=False))
        print(f"{'drained' if graceful else 'crashed'}: the job took {time.monotonic() - started:.1f}s")
        remover.join(60)
        assert "done_before" in removal and removal["done_before"] < n, "the node went away after the job ended"
        assert first.succeeded == n and first.failed == 0
        final = records(out)
        assert sorted(r["custom_id"] for r in final) == sorted(ids)
        assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in final)
        assert node_of(ray_session, handle.actor) in set(alive_nodes(ray_session)) - {home}
        # A restarted actor counts from zero: had it not moved, it would have seen every line.
        stats = asyncio.run(handle.stats())
        assert stats.requests <= n - removal["done_before"]
        assert emulator.stats()["served"] >= n
    finally:
        remover.join(60)
        if victim in ray_cluster.worker_nodes:
            ray_cluster.remove_node(victim)
        add_worker_node()
    assert len(alive_nodes(ray_session)) == 3
