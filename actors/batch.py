"""The batch driver: runs `orchestray.batch` on the cluster.

Work is spread with an actor pool, not Ray Data. A call to a plain provider goes from the driver
straight to that provider's actor (the one place its limit is kept, so the limit holds
cluster-wide). A call to a route goes to one of a pool of `BatchWorker` actors, spread over the
nodes, each running the route's pattern in-process against the same provider actors: the
pattern's own work (voting, search, prompts) scales with the pool. Ray Data would add a
scheduler that knows nothing of provider limits and would partition the file into blocks held
in the object store; the pool keeps the driver's bounded, line-ordered stream, which is what
resuming and exactly-one-record-per-line rest on.
"""

from __future__ import annotations

import asyncio
import itertools

import ray

from orchestray.batch import BatchOptions, BatchResult, run_batch
from orchestray.cluster import NAMESPACE, connect
from orchestray.config import Config
from orchestray.messages import ChatRequest, Completion
from orchestray.output_lock import OutputLock

from orchestray.actors.directory import ModelDirectory
from orchestray.actors.multiplex import Multiplexed
from orchestray.actors.provider import ModelHandle

__all__ = ["BatchWorker", "WorkerPool", "run_batch_job"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=10_000)
class BatchWorker(Multiplexed):
    """Runs routes in-process for the batch driver; providers stay the shared actors."""

    def __init__(self, config_json: str):
        config = Config.model_validate_json(config_json)
        self.models = ModelDirectory(config, ensure_config=False)

    async def complete(self, request: ChatRequest) -> Completion:
        return await self.models.get(request.model).complete(request)

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def close(self) -> None:
        """Before the pool kills it: send the spans it still holds (and close its store)."""
        await self.models.close()


class WorkerPool:
    """`size` batch workers spread over the nodes; `get(route)` hands them out in turn."""

    def __init__(self, config: Config, size: int):
        config_json = config.model_dump_json()
        self.workers = [
            BatchWorker.options(scheduling_strategy="SPREAD", namespace=NAMESPACE).remote(config_json)
            for _ in range(size)
        ]
        self._turn = itertools.cycle(range(size))

    def get(self, name: str) -> ModelHandle:
        return ModelHandle(name, self.workers[next(self._turn)])

    def nodes(self) -> list[str]:
        return ray.get([w.ping.remote() for w in self.workers])

    def stop(self) -> None:
        # A worker lost or stuck is killed all the same: its close is bounded, never awaited for ever.
        closing = [worker.close.remote() for worker in self.workers]
        ray.wait(closing, num_returns=len(closing), timeout=15)
        for worker in self.workers:
            ray.kill(worker)


def default_pool_size() -> int:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return max(2, 2 * len(alive))


async def _provider_counters(directory: ModelDirectory) -> dict[str, int]:
    """429s per provider actor; the job reports the difference over its run."""
    names = [p.name for p in directory.config.providers]
    stats = await asyncio.gather(*(directory.get(n).stats() for n in names), return_exceptions=True)
    return {n: s.rate_limited for n, s in zip(names, stats) if not isinstance(s, BaseException)}


def run_batch_job(
    input_path: str,
    output_path: str,
    config: Config,
    options: BatchOptions,
    address: str | None = None,
    workers: int | None = None,
) -> BatchResult:
    # The output's lock first: a second run on it is refused before it starts anything.
    with OutputLock(output_path) as lock:
        return _run_locked(input_path, output_path, config, options, address, workers, lock)


def _run_locked(
    input_path: str,
    output_path: str,
    config: Config,
    options: BatchOptions,
    address: str | None,
    workers: int | None,
    lock: OutputLock,
) -> BatchResult:
    connect(address)
    directory = ModelDirectory(config)
    for provider in config.providers:
        directory.get(provider.name)  # found (and reconfigured if need be) before the loop starts
    pool = WorkerPool(config, workers or config.batch.workers or default_pool_size()) if config.routes else None

    def resolve(name: str):
        return pool.get(name) if name in config.routes else directory.get(name)

    async def job() -> BatchResult:
        before = await _provider_counters(directory)

        async def on_done(result: BatchResult) -> None:
            after = await _provider_counters(directory)
            for name, limited in after.items():
                if name in result.by_provider:
                    result.by_provider[name].rate_limited = limited - before.get(name, 0)

        try:
            return await run_batch(input_path, output_path, resolve, directory.knows, options, on_done, lock)
        finally:
            await directory.close()  # the store's connections belong to this loop

    try:
        result = asyncio.run(job())
    finally:
        if pool is not None:
            pool.stop()
    return result
