"""What a batch did: counts per model and per provider, the progress line, and the summary.

`run_batch` fills a `BatchResult` as records are written; the `orchestray batch` command prints
`format_summary(result)` and writes `write_summary(result, output)` beside the output.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestray.messages import Span

__all__ = ["Tally", "BatchResult", "Progress", "count_spans", "format_summary", "write_summary", "summary_path"]


@dataclass
class Tally:
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
    # --max-cost: the budget, and the lines left unanswered once it was spent (a rerun resumes them)
    max_cost: float | None = None
    not_started: int = 0
    by_model: dict[str, Tally] = field(default_factory=dict)
    by_provider: dict[str, Tally] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "skipped": self.skipped,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "cost": round(self.cost, 8),
            "wall_s": round(self.wall_s, 3),
            **({"max_cost": self.max_cost, "stopped_at_budget": self.not_started > 0, "not_started": self.not_started}
               if self.max_cost is not None else {}),
            "by_model": {k: v.as_dict() for k, v in sorted(self.by_model.items())},
            "by_provider": {k: v.as_dict() for k, v in sorted(self.by_provider.items())},
        }


def _provider_spans(span: Span | None):
    if span is None:
        return
    if span.kind == "provider":
        yield span
    for child in span.children:
        yield from _provider_spans(child)


def count_spans(result: BatchResult, trace: Span | None) -> None:
    """Every provider call in a trace, a coordinator's samples and losers included."""
    for span in _provider_spans(trace):
        tally = result.by_provider.setdefault(span.name, Tally())
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


class Progress:
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


def format_summary(result: BatchResult) -> str:
    """The end-of-job table: one row per model asked for, then one per provider that answered."""
    head = (f"{'':<22}{'requests':>9}{'ok':>8}{'failed':>8}{'cancel':>8}{'tokens in':>11}{'tokens out':>11}"
            f"{'cost $':>11}{'p50 s':>8}{'p99 s':>8}{'429s':>6}{'retries':>8}")
    rows = [head]

    def row(label: str, t: Tally) -> str:
        d = t.as_dict()
        p50 = f"{d['latency_p50_s']:.3f}" if d["latency_p50_s"] is not None else "-"
        p99 = f"{d['latency_p99_s']:.3f}" if d["latency_p99_s"] is not None else "-"
        return (
            f"{label[:22]:<22}{d['requests']:>9}{d['succeeded']:>8}{d['failed']:>8}{d['cancelled']:>8}"
            f"{d['input_tokens']:>11}{d['output_tokens']:>11}{d['cost']:>11.5f}{p50:>8}{p99:>8}"
            f"{d['rate_limited']:>6}{d['retries']:>8}"
        )

    for name, tally in sorted(result.by_model.items()):
        rows.append(row(f"model {name}", tally))
    for name, tally in sorted(result.by_provider.items()):
        rows.append(row(f"provider {name}", tally))
    rows.append(
        f"{result.lines} lines: {result.succeeded} answered, {result.failed} failed, {result.invalid} invalid, "
        f"{result.skipped} already done · ${result.cost:.5f} · {result.wall_s:.1f}s"
    )
    if result.not_started:
        rows.append(f"budget ${result.max_cost:g} reached: {result.not_started} lines not started; "
                    "run again (with a higher --max-cost) to resume them")
    return "\n".join(rows)


def summary_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".summary.json") if out.suffix == ".jsonl" else out.with_name(out.name + ".summary.json")


def write_summary(result: BatchResult, output_path: str | os.PathLike) -> Path:
    path = summary_path(output_path)
    path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return path
