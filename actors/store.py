"""The cluster's store actor: one named detached actor holding a `MemoryStore` for every process.

The embedded default of `orchestray.store`: nothing to run beside Ray. Its methods are async with
no await inside, so each runs whole on the actor's loop and concurrent writers never interleave.
Its entries live as long as the actor (a restart after a crash starts it empty).
"""

from __future__ import annotations

import ray

from orchestray.cluster import NAMESPACE
from orchestray.errors import StoreUnavailableError
from orchestray.store import MemoryStore

from orchestray.actors.multiplex import ACTOR_GONE

__all__ = ["StoreActor", "RayStore", "STORE_ACTOR"]

STORE_ACTOR = "orchestray-store"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class StoreActor:
    def __init__(self):
        self._store = MemoryStore()

    async def get(self, namespace: str, key: str) -> bytes | None:
        return self._store.get_now(namespace, key)

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        self._store.set_now(namespace, key, value, ttl_s, max_entries)

    async def delete(self, namespace: str, key: str) -> bool:
        return self._store.delete_now(namespace, key)

    async def entries(self, namespace: str) -> int:
        return self._store.entries(namespace)


class RayStore:
    """The store actor's client: finds the actor (or creates it) when made; needs `ray.init`."""

    def __init__(self, prefix: str = "orchestray:"):
        self.prefix = prefix
        name = STORE_ACTOR if prefix == "orchestray:" else f"{STORE_ACTOR}:{prefix}"
        self.actor = StoreActor.options(
            name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
        ).remote()

    def __reduce__(self):
        return (RayStore, (self.prefix,))

    async def _call(self, what: str, ref):
        try:
            return await ref
        except ACTOR_GONE as err:
            raise StoreUnavailableError(f"the store actor: {what} failed ({type(err).__name__})") from None

    async def get(self, namespace: str, key: str) -> bytes | None:
        return await self._call("get", self.actor.get.remote(namespace, key))

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        await self._call("set", self.actor.set.remote(namespace, key, value, ttl_s, max_entries))

    async def delete(self, namespace: str, key: str) -> bool:
        return await self._call("delete", self.actor.delete.remote(namespace, key))

    async def entries(self, namespace: str) -> int:
        return await self._call("entries", self.actor.entries.remote(namespace))

    async def close(self) -> None:
        return None  # the actor is the cluster's: it stays for every other caller
