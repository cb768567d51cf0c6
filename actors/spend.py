"""The cluster's spend ledger: one named detached actor, so every door and replica caps the same total."""

from __future__ import annotations

import time

import ray

from orchestray.budgets import SpendLedger
from orchestray.cluster import NAMESPACE

__all__ = ["SpendActor", "RaySpendLedger"]

SPEND_ACTOR = "orchestray-spend"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class SpendActor:
    # Async with no await inside: each call runs whole on the actor's loop, so checks and adds
    # never interleave.
    def __init__(self):
        self._ledger = SpendLedger()

    async def check(self, name: str, caps: dict[str, float]):
        return self._ledger.check(name, caps, time.monotonic())

    async def add(self, name: str, caps: dict[str, float], cost: float) -> None:
        self._ledger.add(name, caps, cost, time.monotonic())

    async def spent(self, name: str, window: str) -> float:
        return self._ledger.spent(name, window, time.monotonic())


class RaySpendLedger:
    """The actor's client (found, or created, when made; needs `ray.init`)."""

    def __init__(self):
        self.actor = SpendActor.options(name=SPEND_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached").remote()

    def __reduce__(self):
        return (RaySpendLedger, ())

    async def check(self, name: str, caps: dict[str, float]):
        return await self.actor.check.remote(name, caps)

    async def add(self, name: str, caps: dict[str, float], cost: float) -> None:
        await self.actor.add.remote(name, caps, cost)
