"""The batch driver: runs `orchestray.batch` against the cluster's provider and route actors."""

from __future__ import annotations

import asyncio


from orchestray.batch import BatchOptions, BatchResult, format_summary, run_batch, write_summary
from orchestray.cluster import connect
from orchestray.config import Config

from orchestray.actors.directory import ModelDirectory

__all__ = ["run_batch_job"]


async def _provider_counters(directory: ModelDirectory) -> dict[str, tuple[int, int]]:
    """(429s, retries) per provider actor; the job reports the difference over its run."""
    names = [p.name for p in directory.config.providers]
    stats = await asyncio.gather(*(directory.get(n).stats() for n in names), return_exceptions=True)
    return {n: (s.rate_limited, s.retries) for n, s in zip(names, stats) if not isinstance(s, BaseException)}


def run_batch_job(input_path: str, output_path: str, config: Config, options: BatchOptions, address: str | None = None) -> BatchResult:
    connect(address)
    directory = ModelDirectory(config)

    async def job() -> BatchResult:
        before = await _provider_counters(directory)

        async def on_done(result: BatchResult) -> None:
            after = await _provider_counters(directory)
            for name, (limited, _) in after.items():
                if name in result.by_provider:
                    result.by_provider[name].rate_limited = limited - before.get(name, (0, 0))[0]

        return await run_batch(input_path, output_path, directory.get, directory.knows, options, on_done)

    result = asyncio.run(job())
    print(format_summary(result))
    path = write_summary(result, output_path)
    print(f"summary written to {path}")
    return result


