"""Batch jobs in the OpenAI Batch file format: read lines, call models, write one record per line.

The input is streamed and work in flight is bounded, so memory stays flat however long the
file. Every input line gets exactly one output record, a bad line included. Records are
appended and flushed as they finish, so a crash loses at most the calls in flight, and running
the same command again resumes: lines already answered are skipped. One run at a time writes an
output (`output_lock.OutputLock`): a second run on it while the first lives is refused. A run
cancelled (Ctrl-C) cancels its calls in flight and leaves only whole records.

This module knows nothing of Ray: it calls models through `resolve(name)`, which returns
anything with `async complete(request) -> Completion` (the batch driver in `actors/` passes
handles to provider and coordinator actors; tests pass fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import msgspec

from orchestray.errors import OrchestrayError, RequestError, error_code
from orchestray.messages import ChatRequest, Completion, Span
from orchestray.openai_format import completion_body, parse_chat_body
from orchestray.output_lock import OutputLock

__all__ = [
    "OutputRecord",
    "BatchError",
    "BatchResponse",
    "BatchOptions",
    "BatchResult",
    "Model",
    "run_batch",
    "summary_path",
]


class BatchError(msgspec.Struct):
    code: str
    message: str


class BatchResponse(msgspec.Struct):
    status_code: int
    request_id: str
    body: dict[str, Any]


class OutputRecord(msgspec.Struct):
    """One output line. `custom_id` is null only for a line that had none (invalid JSON, say)."""

    id: str
    custom_id: str | None
    response: BatchResponse | None
    error: BatchError | None


class _RecordView(msgspec.Struct):
    """What resuming needs from an earlier output line."""

    id: str
    error: Any = None


_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(_RecordView).decode
_decode_line = msgspec.json.Decoder().decode
_ID_PREFIX = "batch_req_"


def _record_id(line: int) -> str:
    # The line number is in the id so resuming knows which lines, bad ones included, are done.
    return f"{_ID_PREFIX}{line}_{uuid.uuid4().hex[:12]}"


def _line_of(record_id: str) -> int | None:
    if not record_id.startswith(_ID_PREFIX):
        return None
    number = record_id[len(_ID_PREFIX) :].split("_", 1)[0]
    return int(number) if number.isdigit() else None


def summary_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".summary.json") if out.suffix == ".jsonl" else out.with_name(out.name + ".summary.json")


class Model(Protocol):
    async def complete(self, request: ChatRequest) -> Completion: ...


@dataclass
class BatchOptions:
    route: str | None = None  # overrides every line's body.model
    retry_errors: bool = False  # re-run lines whose earlier record is an error
    max_in_flight: int = 512
    progress: bool = True
    progress_interval_s: float = 0.5


@dataclass
class _Tally:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0  # a race's losers, stopped once another provider answered
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    rate_limited: int = 0
    latencies: list[float] = field(default_factory=list)

    def add_latency(self, value: float) -> None:
        # A bounded sample keeps memory flat on million-line files; percentiles stay accurate.
        if len(self.latencies) < 100_000:
            self.latencies.append(value)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else None

        return {
            "requests": self.requests,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": round(self.cost, 8),
            "latency_p50_s": pct(0.5),
            "latency_p99_s": pct(0.99),
            "retries": self.retries,
            "rate_limited": self.rate_limited,
        }


@dataclass
class BatchResult:
    lines: int = 0  # input lines seen
    skipped: int = 0  # already answered by an earlier run
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0  # bad lines (error records without a call)
    cost: float = 0.0
    wall_s: float = 0.0
    by_model: dict[str, _Tally] = field(default_factory=dict)
    by_provider: dict[str, _Tally] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "skipped": self.skipped,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "cost": round(self.cost, 8),
            "wall_s": round(self.wall_s, 3),
            "by_model": {k: v.as_dict() for k, v in sorted(self.by_model.items())},
            "by_provider": {k: v.as_dict() for k, v in sorted(self.by_provider.items())},
        }


class _LineSet:
    """Line numbers as a bitmap: a million lines cost 125 KB, not a set of a million ints."""

    __slots__ = ("_bits", "count")

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, line: int) -> None:
        byte, bit = divmod(line, 8)
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1 + len(self._bits) // 2))
        if not self._bits[byte] >> bit & 1:
            self._bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, line: int) -> bool:
        byte, bit = divmod(line, 8)
        return byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)


def _prepare_output(path: Path, retry_errors: bool) -> _LineSet:
    """Read what an earlier run wrote, a line at a time; return the line numbers already done.

    A torn last line (a crash mid-write) is cut off. With `retry_errors`, error records are
    dropped from the file so those lines run again. Either way the file is rewritten next to
    itself and swapped in atomically, so a crash here loses nothing either.
    """
    done = _LineSet()
    if not path.exists():
        return done
    rewrite = False
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                rewrite = True  # torn: it will be answered again
                break
            if not raw.strip():
                continue
            try:
                record = _decode_record(raw)
            except msgspec.DecodeError:
                rewrite = True  # not ours or damaged: its line will be answered again
                continue
            line = _line_of(record.id)
            if line is None or (retry_errors and record.error is not None):
                rewrite = True
                continue
            done.add(line)
    if not rewrite:
        return done
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as source, tmp.open("wb") as kept:
        for raw in source:
            if not raw.endswith(b"\n") or not raw.strip():
                continue
            try:
                record = _decode_record(raw)
            except msgspec.DecodeError:
                continue
            line = _line_of(record.id)
            if line is None or (retry_errors and record.error is not None):
                continue
            kept.write(raw)
        kept.flush()
        os.fsync(kept.fileno())
    os.replace(tmp, path)
    return done


def _count_lines(path: Path) -> int:
    count = 0
    last = b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


class _Progress:
    """One line on stderr: done, failed, rate, ETA and cost so far."""

    def __init__(self, total: int, enabled: bool, interval_s: float):
        self.total = total
        self.enabled = enabled
        self.interval_s = interval_s if sys.stderr.isatty() else max(interval_s, 10.0)
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def show(self, result: BatchResult, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        finished = result.succeeded + result.failed + result.invalid
        todo = self.total - result.skipped
        elapsed = max(now - self.started, 1e-9)
        rate = finished / elapsed
        eta = (todo - finished) / rate if rate > 0 else math.inf
        eta_text = "--" if math.isinf(eta) else _duration(eta)
        width = 24
        filled = int(width * finished / todo) if todo else width
        bar = "#" * filled + "." * (width - filled)
        text = (
            f"[{bar}] {finished}/{todo} done · {result.failed + result.invalid} failed · "
            f"{rate:.1f}/s · ETA {eta_text} · ${result.cost:.4f}"
        )
        if self._tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass
class _Line:
    number: int
    custom_id: str
    request: ChatRequest


def _parse_line(raw: bytes, number: int, seen_ids: set[int], route: str | None, known: Callable[[str], bool]) -> _Line | OutputRecord:
    """A valid line, or the error record that answers it."""

    def bad(code: str, message: str, custom_id: str | None = None) -> OutputRecord:
        return OutputRecord(_record_id(number), custom_id, None, BatchError(code, f"line {number}: {message}"))

    try:
        item = _decode_line(raw)
    except msgspec.DecodeError as err:
        return bad("invalid_json", f"not valid JSON ({err})")
    if not isinstance(item, dict):
        return bad("invalid_line", "a line must be a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return bad("missing_custom_id", "`custom_id` must be a non-empty string")
    digest = int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "little")
    if digest in seen_ids:
        return bad("duplicate_custom_id", f"custom_id {custom_id!r} appears on an earlier line", custom_id)
    seen_ids.add(digest)
    if item.get("method", "POST") != "POST":
        return bad("invalid_method", f"method must be POST, not {item.get('method')!r}", custom_id)
    if item.get("url", "/v1/chat/completions") != "/v1/chat/completions":
        return bad("invalid_url", f"url must be /v1/chat/completions, not {item.get('url')!r}", custom_id)
    extra = set(item) - {"custom_id", "method", "url", "body"}
    if extra:
        return bad("invalid_line", f"unknown field(s): {', '.join(sorted(extra))}", custom_id)
    body = item.get("body")
    if isinstance(body, dict) and route:
        body = {**body, "model": route}
    try:
        request = parse_chat_body(body, request_id=custom_id)
    except RequestError as err:
        return bad("invalid_body", str(err), custom_id)
    if body.get("stream"):
        return bad("invalid_body", "stream is not supported in batch jobs", custom_id)
    if not known(request.model):
        return bad("model_not_found", f"unknown model {request.model!r}: no provider or route has that name", custom_id)
    return _Line(number, custom_id, request)


def _leaves(span: Span | None):
    if span is None:
        return
    if span.kind == "provider":
        yield span
    for child in span.children:
        yield from _leaves(child)


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
    iterator)."""
    options = options or BatchOptions()
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise OrchestrayError(f"{source}: no such input file")
    if options.route and not known(options.route):
        raise RequestError(f"--route {options.route!r} names no provider or route")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Taken before the output is read: resuming and rewriting it are the writer's alone.
    with contextlib.nullcontext(lock) if lock is not None else OutputLock(target) as lock:
        done = _prepare_output(target, options.retry_errors)
        total = _count_lines(source)
        result = BatchResult()
        progress = _Progress(total, options.progress, options.progress_interval_s)
        started = time.monotonic()
        await _run_lines(source, target, done, lock, resolve, known, options, result, progress, on_record)
        result.wall_s = time.monotonic() - started
    if on_done is not None:
        await on_done(result)
    progress.show(result, final=True)
    return result


async def _run_lines(
    source: Path,
    target: Path,
    done: _LineSet,
    lock: OutputLock,
    resolve: Callable[[str], Model],
    known: Callable[[str], bool],
    options: BatchOptions,
    result: BatchResult,
    progress: _Progress,
    on_record: Callable[[OutputRecord], None] | None = None,
) -> None:
    # One 64-bit digest per custom_id catches duplicates in a fraction of the ids' own memory.
    seen_ids: set[int] = set()
    window = asyncio.Semaphore(options.max_in_flight)
    running: set[asyncio.Task] = set()

    with target.open("ab") as out:

        def write(record: OutputRecord) -> None:
            lock.check()  # a run whose lock was taken over must not write beside the new holder
            out.write(_encode(record) + b"\n")
            out.flush()
            if on_record is not None:
                on_record(record)

        async def call(line: _Line) -> None:
            try:
                record = await _answer(line, resolve, result)
                write(record)
            finally:
                window.release()
                progress.show(result)

        try:
            with source.open("rb") as f:
                for number, raw in enumerate(f, start=1):
                    result.lines += 1
                    if not raw.strip():
                        if number in done:
                            result.skipped += 1
                            continue
                        result.invalid += 1
                        write(OutputRecord(_record_id(number), None, None, BatchError("empty_line", f"line {number}: the line is empty")))
                        continue
                    parsed = _parse_line(raw, number, seen_ids, options.route, known)
                    if number in done:
                        result.skipped += 1
                        continue
                    if isinstance(parsed, OutputRecord):
                        result.invalid += 1
                        write(parsed)
                        continue
                    await window.acquire()
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


async def _answer(line: _Line, resolve: Callable[[str], Model], result: BatchResult) -> OutputRecord:
    model_name = line.request.model
    model_tally = result.by_model.setdefault(model_name, _Tally())
    model_tally.requests += 1
    started = time.monotonic()
    try:
        completion = await resolve(model_name).complete(line.request)
    except Exception as err:
        result.failed += 1
        model_tally.failed += 1
        span = getattr(err, "span", None)
        for leaf in _leaves(span):
            _count_provider(result, leaf)
        message = str(err) if isinstance(err, OrchestrayError) else f"{type(err).__name__}: {err}"
        return OutputRecord(_record_id(line.number), line.custom_id, None, BatchError(error_code(err), message))
    result.succeeded += 1
    result.cost += completion.cost
    model_tally.succeeded += 1
    # Every call the model made counts, a coordinator's samples and losers included.
    spent = completion.trace or completion
    model_tally.input_tokens += spent.input_tokens
    model_tally.output_tokens += spent.output_tokens
    model_tally.cost += completion.cost
    model_tally.add_latency(time.monotonic() - started)
    for leaf in _leaves(completion.trace):
        _count_provider(result, leaf)
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    body = completion_body(completion, f"chatcmpl-{uuid.uuid4().hex[:24]}", model=model_name)
    return OutputRecord(_record_id(line.number), line.custom_id, BatchResponse(200, request_id, body), None)


def _count_provider(result: BatchResult, span: Span) -> None:
    tally = result.by_provider.setdefault(span.name, _Tally())
    tally.requests += 1
    tally.retries += span.retries
    if span.outcome == "ok":
        tally.succeeded += 1
        tally.input_tokens += span.input_tokens
        tally.output_tokens += span.output_tokens
        tally.cost += span.cost
        tally.add_latency(span.latency_s)
    elif span.outcome == "cancelled":
        tally.cancelled += 1
    else:
        tally.failed += 1


def format_summary(result: BatchResult) -> str:
    """The end-of-job table: one row per model asked for, then one per provider that answered."""
    head = f"{'':<22}{'requests':>9}{'ok':>8}{'failed':>8}{'cancel':>8}{'tokens in':>11}{'tokens out':>11}{'cost $':>11}{'p50 s':>8}{'p99 s':>8}{'429s':>6}{'retries':>8}"
    rows = [head]

    def row(label: str, t: _Tally) -> str:
        d = t.as_dict()
        p50 = f"{d['latency_p50_s']:.3f}" if d["latency_p50_s"] is not None else "-"
        p99 = f"{d['latency_p99_s']:.3f}" if d["latency_p99_s"] is not None else "-"
        return (
            f"{label[:22]:<22}{d['requests']:>9}{d['succeeded']:>8}{d['failed']:>8}{d['cancelled']:>8}{d['input_tokens']:>11}"
            f"{d['output_tokens']:>11}{d['cost']:>11.5f}{p50:>8}{p99:>8}{d['rate_limited']:>6}{d['retries']:>8}"
        )

    for name, tally in sorted(result.by_model.items()):
        rows.append(row(f"model {name}", tally))
    for name, tally in sorted(result.by_provider.items()):
        rows.append(row(f"provider {name}", tally))
    rows.append(
        f"{result.lines} lines: {result.succeeded} answered, {result.failed} failed, {result.invalid} invalid, "
        f"{result.skipped} already done · ${result.cost:.5f} · {result.wall_s:.1f}s"
    )
    return "\n".join(rows)


def write_summary(result: BatchResult, output_path: str | os.PathLike) -> Path:
    path = summary_path(output_path)
    path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return path
