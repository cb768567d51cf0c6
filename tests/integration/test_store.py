"""The embedded store is one for the cluster: what a task on one node writes, a task on another reads."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from orchestray.store import StoreConfig, open_store

pytestmark = pytest.mark.integration


def test_the_store_actor_is_shared_across_nodes_with_ttl_and_bound(ray_session):
    ray = ray_session
    space = f"t{uuid.uuid4().hex[:8]}"

    @ray.remote(num_cpus=0, resources={"worker": 0.01})
    def write(node_key: str) -> str:
        async def go():
            ns = open_store(StoreConfig(), cluster=True).namespace(space, max_entries=3)
            await ns.set(node_key, node_key.encode())
            await ns.set("brief", b"x", ttl_s=0.2)
        asyncio.run(go())
        return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=0)
    def read(keys: list[str]) -> list[bytes | None]:
        async def go():
            ns = open_store(StoreConfig(), cluster=True).namespace(space, max_entries=3)
            return [await ns.get(k) for k in keys]
        return asyncio.run(go())

    writer_node = ray.get(write.remote("from-worker"))
    assert ray.get(read.remote(["from-worker"])) == [b"from-worker"]
    assert writer_node != ray.get_runtime_context().get_node_id()

    async def here():
        store = open_store(StoreConfig(), cluster=True)
        assert store.name == "ray"
        ns = store.namespace(space, max_entries=3)
        await asyncio.sleep(0.3)
        assert await ns.get("brief") is None
        for k in ("a", "b", "c"):
            await ns.set(k, b"v")
        assert await ns.get("from-worker") is None  # pushed out by the bound of 3
        assert await ns.delete("a") is True
    asyncio.run(here())
