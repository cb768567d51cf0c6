"""The provider-batch run: the input streamed into rounds, one record per line, resumable.

The output format, the resume rules and the one-writer lock are the live batch's
(`batch_format`, `batch_resume`, `output_lock`); what differs is that calls to batch-API
providers wait for rounds (`_rounds`), and that the batches in flight are recorded beside the
output (`_journal`) before the driver waits on them, so a rerun collects them instead of paying
for their requests again.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from orchestray.batch import _answer
from orchestray.batch_format import OutputRecord, encode_record, parse_line
from orchestray.batch_report import BatchResult, format_summary
from orchestray.batch_resume import resumed_output
from orchestray.config import Config
from orchestray.errors import OrchestrayError, RequestError
from orchestray.output_lock import OutputLock
from orchestray.provider_batch._apis import BatchAPI, open_api
from orchestray.provider_batch._journal import Journal, journal_path
from orchestray.provider_batch._plain import PlainLines
from orchestray.provider_batch._rounds import Rounds, line_context, print_board

__all__ = ["ProviderBatchOptions", "ProviderBatchResult", "run_provider_batch", "format_provider_summary", "batch_apis"]


@dataclass
class ProviderBatchOptions:
    route: str | None = None  # overrides every line's body.model
    retry_errors: bool = False
    progress: bool = True
    max_open_lines: int = 100_000  # lines whose pattern is under way at once
    poll_s: float | None = None  # how often to look at a batch (default: each provider's batch.poll_s)


@dataclass
class ProviderBatchResult(BatchResult):
    rounds: int = 0
    live_lines: int = 0  # lines run live (race routes, simulated providers), at the live price
    live_calls: int = 0
    batch_requests: int = 0  # requests submitted in provider batches by this run
    resubmitted: int = 0  # of those, expired or errored ones sent again
    provider_batches: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        summary = super().as_dict()
        summary["provider_batch"] = {
            "rounds": self.rounds, "live_lines": self.live_lines, "live_calls": self.live_calls,
            "batch_requests": self.batch_requests, "resubmitted": self.resubmitted, "batches": self.provider_batches,
        }
        return summary


def format_provider_summary(result: ProviderBatchResult) -> str:
    return format_summary(result) + (
        f"\nprovider batches: {len(result.provider_batches)} in {result.rounds} rounds, {result.batch_requests} "
        f"requests ({result.resubmitted} resubmitted) at the batch price · {result.live_lines} lines and "
        f"{result.live_calls} calls live at the live price"
    )


def batch_apis(config: Config, environ=os.environ) -> dict[str, BatchAPI]:
    return {p.name: open_api(p, environ) for p in config.providers if p.kind in ("openai", "anthropic")}


async def run_provider_batch(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    config: Config,
    live: Callable[[], Awaitable[Any]],
    options: ProviderBatchOptions | None = None,
    lock: OutputLock | None = None,
    on_record: Callable[[OutputRecord], None] | None = None,
    apis: dict[str, BatchAPI] | None = None,
) -> ProviderBatchResult:
    """Answer every line of `input_path` into `output_path` through the providers' batch APIs.
    `live()` gives the registry that answers live calls (race routes, simulated providers)."""
    options = options or ProviderBatchOptions()
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise OrchestrayError(f"{source}: no such input file")
    if options.route and not config.has_model(options.route):
        raise RequestError(f"--route {options.route!r} names no provider or route")
    target.parent.mkdir(parents=True, exist_ok=True)
    owned = apis is None
    apis = batch_apis(config) if apis is None else apis
    journal = Journal(journal_path(target))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with resumed_output(target, options.retry_errors, lock) as (held, done):
            answers = journal.load(done)
            rounds = Rounds(config, apis, journal, answers, live, print_board(options.progress))

            def poll_s(provider: str) -> float:
                return options.poll_s or config.provider(provider).batch.poll_s

            await _collect_recorded(rounds, journal, poll_s)
            result = ProviderBatchResult()
            await _run_lines(source, target, done, held, rounds, config, options, result, poll_s, on_record)
            result.rounds = rounds.round
            result.live_calls = rounds.live_calls
            result.batch_requests = rounds.submitted_requests
            result.resubmitted = rounds.resubmitted
            result.provider_batches = [{"id": s.id, "provider": s.provider, "status": s.status, "counts": s.counts}
                                       for s in rounds.states.values()]
            result.wall_s = loop.time() - started
            return result
    finally:
        journal.close()
        if owned:
            await asyncio.gather(*(api.close() for api in apis.values()), return_exceptions=True)


async def _collect_recorded(rounds: Rounds, journal: Journal, poll_s: Callable[[str], float]) -> None:
    """Batches an earlier run submitted and did not collect: wait for them and keep their answers,
    so the lines that asked for them find them instead of asking the provider again."""
    for batch in list(journal.batches.values()):
        if batch.collected or batch.provider not in rounds.apis:
            continue
        api = rounds.apis[batch.provider]
        if batch.batch_id is None:
            known = {b.batch_id for b in journal.batches.values() if b.batch_id}
            found = await api.find(batch, known)
            if found is None:
                continue  # never created: its lines ask again
            journal.submitted(batch.tag, found)
        while not (state := await api.state(batch.batch_id)).ended:
            rounds.states[state.id] = state
            rounds.board(batch.round, list(rounds.states.values()))
            await asyncio.sleep(poll_s(batch.provider))
        rounds.states[state.id] = state
        keys = set(batch.keys)
        async for key, outcome in api.results(state):
            if key in keys and outcome.kind != "retry":
                journal.answer(key, batch.provider, state.id, outcome)
                rounds.answers[key] = (outcome, state.id)
        journal.collected(state.id)


async def _run_lines(source: Path, target: Path, done, lock: OutputLock, rounds: Rounds, config: Config,
                     options: ProviderBatchOptions, result: ProviderBatchResult, poll_s,
                     on_record: Callable[[OutputRecord], None] | None) -> None:
    seen_ids: set[int] = set()
    running: set[asyncio.Task] = set()
    finished = 0

    with target.open("ab") as out, source.open("rb") as f:
        numbered = enumerate(f, start=1)
        exhausted = False
        offset = 0

        def write(record: OutputRecord) -> None:
            lock.check()
            out.write(encode_record(record))
            out.flush()
            if on_record is not None:
                on_record(record)

        plain = rounds.plain = PlainLines(source, target, rounds, options.route, config.has_model, write, result)

        async def run_line(line) -> None:
            nonlocal finished
            line_context(line.number)
            if rounds.runs_live(line.request.model):
                result.live_lines += 1
            try:
                write(await _answer(line, rounds.resolve, result))
            finally:
                finished += 1

        try:
            while True:
                while not exhausted and len(running) < options.max_open_lines:
                    item = next(numbered, None)
                    if item is None:
                        exhausted = True
                        break
                    number, raw = item
                    at, offset = offset, offset + len(raw)
                    result.lines += 1
                    parsed = parse_line(raw, number, seen_ids, options.route, config.has_model)
                    if number in done:
                        result.skipped += 1
                        continue
                    if isinstance(parsed, OutputRecord):
                        result.invalid += 1
                        write(parsed)
                        continue
                    if plain.offer(parsed, at):
                        continue
                    task = asyncio.create_task(run_line(parsed))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await rounds.settle(lambda: finished)
                if rounds.waiting:
                    await rounds.run_round(poll_s)
                elif running:
                    await asyncio.wait(running, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                elif exhausted:
                    break
            await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        finally:
            plain.close()
