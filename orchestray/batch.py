"""Batch jobs in the OpenAI Batch file format: read lines, call models, write one record per line.

    batch_format   a line in, a record out (the OpenAI Batch shapes)
    batch_resume   what an earlier run answered, under the output's one lock
    batch_report   the counts, the progress line and the summary the CLI prints and writes
    batch (here)   the run: stream the input, bounded in flight, one record per line

The input is streamed and work in flight is bounded, so memory stays flat however long the
file. Every input line gets exactly one output record, a bad line included. Records are
appended and flushed as they finish, so a crash loses at most the calls in flight, and running
the same command again resumes: lines already answered are skipped. A run cancelled (Ctrl-C)
cancels its calls in flight and leaves only whole records.

This module knows nothing of Ray: it calls models through `resolve(name)`, which returns
anything with `async complete(request) -> Completion` (the batch driver in `actors/` passes
handles to provider actors and batch workers; the Python API passes its registry; tests pass fakes).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Protocol

from orchestray.batch_format import (
    BatchError,
    BatchResponse,
    Line,
    OutputRecord,
    answer_record,
    encode_record,
    error_record,
    parse_line,
)
from orchestray.batch_report import BatchResult, Progress, Tally, count_spans, format_summary, summary_path, write_summary
from orchestray.batch_resume import LineSet, resumed_output
from orchestray.errors import OrchestrayError, RequestError, error_code
from orchestray.messages import ChatRequest, Completion
from orchestray.output_lock import OutputLock

__all__ = [
    "OutputRecord",
    "BatchError",
    "BatchResponse",
    "BatchOptions",
    "BatchResult",
    "Model",
    "run_batch",
    # the summary, for callers that always found it here
    "format_summary",
    "write_summary",
    "summary_path",
]


class Model(Protocol):
    async def complete(self, request: ChatRequest) -> Completion: ...


@dataclass
class BatchOptions:
    route: str | None = None  # overrides every line's body.model
    retry_errors: bool = False  # re-run lines whose earlier record is an error
    max_in_flight: int = 512
    progress: bool = True
    progress_interval_s: float = 0.5
    # Stop starting lines once this run has spent this many US dollars; the calls in flight
    # finish (so it may end a little over), the rest stay unanswered for a rerun to resume.
    max_cost: float | None = None


def _count_lines(path: Path) -> int:
    count = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


async def run_batch(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    resolve: Callable[[str], Model],
    known: Callable[[str], bool],
    options: BatchOptions | None = None,
    on_done: Callable[[BatchResult], Awaitable[None]] | None = None,
    lock: OutputLock | None = None,
    on_record: Callable[[OutputRecord], None] | None = None,
) -> BatchResult:
    """Answer every line of `input_path` into `output_path`; `lock`, when given, is the output's
    lock already held; `on_record` sees each record as it is written (the Python API's batch
    iterator). The summary is the caller's to print or write (`format_summary`, `write_summary`)."""
    options = options or BatchOptions()
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise OrchestrayError(f"{source}: no such input file")
    if options.route and not known(options.route):
        raise RequestError(f"--route {options.route!r} names no provider or route")
    target.parent.mkdir(parents=True, exist_ok=True)
    with resumed_output(target, options.retry_errors, lock) as (held, done):
        result = BatchResult(max_cost=options.max_cost)
        progress = Progress(_count_lines(source), options.progress, options.progress_interval_s)
        started = time.monotonic()
        await _run_lines(source, target, done, held, resolve, known, options, result, progress, on_record)
        result.wall_s = time.monotonic() - started
    if on_done is not None:
        await on_done(result)
    progress.show(result, final=True)
    return result


async def _run_lines(
    source: Path,
    target: Path,
    done: LineSet,
    lock: OutputLock,
    resolve: Callable[[str], Model],
    known: Callable[[str], bool],
    options: BatchOptions,
    result: BatchResult,
    progress: Progress,
    on_record: Callable[[OutputRecord], None] | None = None,
) -> None:
    seen_ids: set[int] = set()
    window = asyncio.Semaphore(options.max_in_flight)
    running: set[asyncio.Task] = set()

    with target.open("ab") as out:

        def write(record: OutputRecord) -> None:
            lock.check()  # a run whose lock was taken over must not write beside the new holder
            out.write(encode_record(record))
            out.flush()
            if on_record is not None:
                on_record(record)

        async def call(line: Line) -> None:
            try:
                write(await _answer(line, resolve, result))
            finally:
                window.release()
                progress.show(result)

        try:
            with source.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    result.lines += 1
                    # Parsed even when answered already: a later duplicate custom_id is still caught.
                    parsed = parse_line(raw, number, seen_ids, options.route, known)
                    if number in done:
                        result.skipped += 1
                        continue
                    if isinstance(parsed, OutputRecord):
                        result.invalid += 1
                        write(parsed)
                        continue
                    if options.max_cost is not None and result.cost >= options.max_cost:
                        result.not_started += 1
                        continue
                    await window.acquire()
                    if options.max_cost is not None and result.cost >= options.max_cost:
                        window.release()  # the budget ran out while this line waited for room
                        result.not_started += 1
                        continue
                    task = asyncio.create_task(call(parsed))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.gather(*list(running))
        except BaseException:
            # Cancelled (Ctrl-C) or failed: stop the calls in flight and wait until they have
            # stopped, so each is either written whole or not at all (and runs on resume), and
            # their cancellations reach the actors before the loop closes.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise


async def _answer(line: Line, resolve: Callable[[str], Model], result: BatchResult,
                  started: float | None = None) -> OutputRecord:
    """The line's record; `started` (monotonic) is when its call began, if not now."""
    model_name = line.request.model
    model_tally = result.by_model.setdefault(model_name, Tally())
    model_tally.requests += 1
    started = time.monotonic() if started is None else started
    try:
        completion = await resolve(model_name).complete(line.request)
    except Exception as err:
        result.failed += 1
        model_tally.failed += 1
        count_spans(result, getattr(err, "span", None))
        message = str(err) if isinstance(err, OrchestrayError) else f"{type(err).__name__}: {err}"
        return error_record(line.number, error_code(err), message, line.custom_id)
    result.succeeded += 1
    result.cost += completion.cost
    model_tally.succeeded += 1
    # Every call the model made counts, a coordinator's samples and losers included.
    spent = completion.trace or completion
    model_tally.input_tokens += spent.input_tokens
    model_tally.output_tokens += spent.output_tokens
    model_tally.cost += completion.cost
    model_tally.add_latency(time.monotonic() - started)
    count_spans(result, completion.trace)
    return answer_record(line.number, line.custom_id, completion, model_name, line.echo)
