"""The command line's provider-batch parts: the run, and an output's batches listed or cancelled."""

from __future__ import annotations

import argparse
import asyncio
import os

from orchestray.config import Config
from orchestray.errors import RequestError
from orchestray.output_lock import OutputLock
from orchestray.provider_batch._driver import (
    ProviderBatchOptions,
    ProviderBatchResult,
    batch_apis,
    format_provider_summary,
    run_provider_batch,
)
from orchestray.provider_batch._journal import Journal, journal_path

__all__ = ["run_job", "add_batches_command"]


def run_job(args: argparse.Namespace, config: Config) -> ProviderBatchResult:
    """`orchestray batch IN -o OUT --provider-batch`: live calls (race routes, simulated
    providers) go to the cluster's shared provider actors, joined only if a line needs one."""
    if getattr(args, "max_cost", None) is not None:
        raise RequestError("--max-cost does not apply with --provider-batch: a provider batch is paid as a whole")
    options = ProviderBatchOptions(route=args.route, retry_errors=args.retry_errors, progress=not args.quiet,
                                   poll_s=args.poll_s)

    async def live():
        from orchestray._runtime import RayRuntime

        return await RayRuntime(args.address).registry(config)

    with OutputLock(args.output) as lock:
        result = asyncio.run(run_provider_batch(args.input, args.output, config, live, options, lock))
    print(format_provider_summary(result))
    return result


def add_batches_command(commands) -> None:
    listing = commands.add_parser(
        "provider-batches",
        help="list (or cancel) the provider batches of a --provider-batch output",
        description="The provider batches recorded beside OUTPUT, with their state at the provider now.",
    )
    listing.add_argument("output", help="the output JSONL of an `orchestray batch --provider-batch` run")
    listing.add_argument("--config", help="the YAML config the run used")
    listing.add_argument("--cancel", action="store_true", help="cancel the batches that have not ended")
    listing.set_defaults(run=_list_or_cancel)


def _list_or_cancel(args: argparse.Namespace) -> int:
    from orchestray.config import load_config

    config = load_config(args.config, environ=os.environ)
    journal = Journal(journal_path(args.output))
    journal.load(done=())
    if not journal.batches:
        print(f"no provider batches recorded for {args.output}")
        return 0
    return asyncio.run(_show(config, journal, args.cancel))


async def _show(config: Config, journal: Journal, cancel: bool) -> int:
    apis = batch_apis(config)
    try:
        print(f"{'round':>5}  {'provider':<16} {'batch':<32} {'requests':>8}  {'state':<11} counts")
        for batch in journal.batches.values():
            api = apis.get(batch.provider)
            if batch.batch_id is None or api is None:
                print(f"{batch.round:>5}  {batch.provider:<16} {'(not created here)':<32} {len(batch.keys):>8}")
                continue
            state = await api.state(batch.batch_id)
            if cancel and not state.ended:
                state = await api.cancel(batch.batch_id)
            counts = " ".join(f"{k}={v}" for k, v in state.counts.items())
            print(f"{batch.round:>5}  {batch.provider:<16} {state.id:<32} {len(batch.keys):>8}  {state.status:<11} {counts}")
    finally:
        await asyncio.gather(*(api.close() for api in apis.values()), return_exceptions=True)
    return 0
