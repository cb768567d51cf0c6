"""The cluster's store actor: one named detached actor holding a `MemoryStore` for every process.

The embedded default of `orchestray.store`: nothing to run beside Ray. Its methods are async with
no await inside, so each runs whole on the actor's loop and concurrent writers never interleave.
Its entries live as long as the actor (a restart after a crash starts it empty).

A Ray call costs far more than a dictionary look-up, so the client sends the operations its
callers start together as one call (`StoreActor.run`): a batch of hits pays for one round trip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from orchestray.cluster import NAMESPACE
from orchestray.errors import StoreUnavailableError
from orchestray.store import MemoryStore

from orchestray.actors.multiplex import ACTOR_GONE

__all__ = ["StoreActor", "RayStore", "STORE_ACTOR"]

STORE_ACTOR = "orchestray-store"
# Batches on their way at once from one caller's loop; operations started meanwhile wait to go
# together in the next one.
_BATCHES_IN_FLIGHT = 4


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class StoreActor:
    def __init__(self):
        self._store = MemoryStore()

    async def run(self, ops: list[tuple]) -> list[Any]:
        """Each operation in order: ("get", ns, key), ("set", ns, key, value, ttl_s, max_entries),
        ("delete", ns, key), ("entries", ns)."""
        store = self._store
        results: list[Any] = []
        for op in ops:
            kind = op[0]
            if kind == "get":
                results.append(store.get_now(op[1], op[2]))
            elif kind == "set":
                results.append(store.set_now(*op[1:]))
            elif kind == "delete":
                results.append(store.delete_now(op[1], op[2]))
            else:
                results.append(store.entries(op[1]))
        return results


class _Batches:
    """One event loop's operations to the actor, sent together."""

    def __init__(self, actor, loop: asyncio.AbstractEventLoop):
        self.actor = actor
        self.loop = loop
        self.pending: list[tuple[tuple, asyncio.Future]] = []
        self.in_flight = 0
        self.scheduled = False

    def submit(self, op: tuple) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((op, future))
        if not self.scheduled and self.in_flight < _BATCHES_IN_FLIGHT:
            self.scheduled = True
            self.loop.call_soon(self._flush)  # after the callers started in this turn of the loop
        return future

    def _flush(self) -> None:
        self.scheduled = False
        if not self.pending or self.in_flight >= _BATCHES_IN_FLIGHT:
            return
        batch, self.pending = self.pending, []
        self.in_flight += 1
        self.loop.create_task(self._send(batch))

    async def _send(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        try:
            results = await self.actor.run.remote([op for op, _ in batch])
        except ACTOR_GONE as err:
            error = StoreUnavailableError(f"the store actor is unavailable ({type(err).__name__})")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        except BaseException as err:  # noqa: BLE001 - every waiting caller must hear of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(err if isinstance(err, Exception) else StoreUnavailableError(repr(err)))
        else:
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        finally:
            self.in_flight -= 1
            if self.pending and not self.scheduled:
                self._flush()


class RayStore:
    """The store actor's client: finds the actor (or creates it) when made; needs `ray.init`."""

    def __init__(self, prefix: str = "orchestray:"):
        self.prefix = prefix
        name = STORE_ACTOR if prefix == "orchestray:" else f"{STORE_ACTOR}:{prefix}"
        self.actor = StoreActor.options(
            name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
        ).remote()
        self._batches: _Batches | None = None

    def __reduce__(self):
        return (RayStore, (self.prefix,))

    def _submit(self, op: tuple) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self._batches is None or self._batches.loop is not loop:
            self._batches = _Batches(self.actor, loop)
        return self._batches.submit(op)

    async def get(self, namespace: str, key: str) -> bytes | None:
        return await self._submit(("get", namespace, key))

    async def set(self, namespace: str, key: str, value: bytes, ttl_s: float | None, max_entries: int) -> None:
        await self._submit(("set", namespace, key, value, ttl_s, max_entries))

    async def delete(self, namespace: str, key: str) -> bool:
        return await self._submit(("delete", namespace, key))

    async def entries(self, namespace: str) -> int:
        return await self._submit(("entries", namespace))

    async def close(self) -> None:
        return None  # the actor is the cluster's: it stays for every other caller
