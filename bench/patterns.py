"""Benchmark of the orchestration patterns on simulated providers with known truth.

    python bench/patterns.py            # 4000 arithmetic questions (10000 for the latency rows)
    python bench/patterns.py --quick    # 500 (2000), about a minute
    python bench/patterns.py --virtual-time   # the same on a virtual clock, in well under a minute
    # and always the 100 Game of 24 test puzzles (ranks 901-1000), 100 reach-a-target puzzles
    # (the general tree-of-thought task) and word problems answered in mixed phrasings

In-process, no Ray: `Provider` objects with simulated backends, the coordinators calling them
through a `resolve` table, many questions in flight at once (bounded). Everything is seeded:
the simulated models draw answers and latencies from their name, the prompt and the request's
seed, so a rerun gives the same answers and latency draws (measured times still carry the event
loop's jitter). Latencies are scaled down (medians of 20-40 ms) so the run takes a few minutes;
their shapes (lognormal, sigma 1 for the race pair) are what the targets are about. A p99 from n
draws is itself noisy (at 500 draws it rests on the 5 slowest), so the latency rows use more
questions, and each latency target also shows the ratio the same draws give with no overhead.
Measured latencies are wall-clock and so carry whatever else the machine runs (the load average
is recorded); `--virtual-time` runs the same code on a virtual clock, where a latency is exactly
the simulated draws as the coordinators combined them, with no overhead and no interference.

For each pattern: accuracy against the known truth, mean cost per question, p50/p99 latency,
model calls per question and extra calls against one call, beside single-model baselines, with
the issue's targets marked PASS or FAIL. Prints one table; writes `bench/results/patterns.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import selectors
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from orchestray.backends import make_backend
from orchestray.config import ProviderConfig
from orchestray.coordinators import (
    CascadeCoordinator,
    EnsembleCoordinator,
    RaceCoordinator,
    TreeOfThoughtCoordinator,
)
from orchestray.messages import ChatRequest, Completion, Message
from orchestray.policies.confidence import escalate_if_below
from orchestray.policies.extraction import extractor
from orchestray.provider import Provider
from orchestray.simulated import Question, arithmetic_questions, word_questions
from orchestray.tasks import reach
from orchestray.tasks.game24 import Puzzle, check_answer, load_puzzles, parse_solution, solve_prompt

RESULTS = Path(__file__).resolve().parent / "results" / "patterns.json"
RESULTS_VIRTUAL = RESULTS.with_name("patterns-virtual-time.json")

# The bench's own providers. Prices: the large model costs 25 times the small one per token,
# a realistic ratio (a mini model against a frontier one). `twin-a`/`twin-b` are the race pair:
# the same lognormal latency (median 40 ms, sigma 1), drawing independently (their names differ).
PROVIDERS: dict[str, dict[str, Any]] = {
    "small": {"simulated": {"accuracy": 0.65, "latency_ms": 20, "latency_sigma": 0.5, "seed": 1},
              "price": {"input_per_1k": 0.0001, "output_per_1k": 0.0004}},
    "large": {"simulated": {"accuracy": 0.95, "latency_ms": 40, "latency_sigma": 0.5, "seed": 2},
              "price": {"input_per_1k": 0.0025, "output_per_1k": 0.01}},
    "medium": {"simulated": {"accuracy": 0.80, "latency_ms": 30, "latency_sigma": 0.5, "seed": 3},
               "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}},
    "twin-a": {"simulated": {"accuracy": 0.80, "latency_ms": 40, "latency_sigma": 1.0, "seed": 4},
               "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}},
    "twin-b": {"simulated": {"accuracy": 0.80, "latency_ms": 40, "latency_sigma": 1.0, "seed": 4},
               "price": {"input_per_1k": 0.0005, "output_per_1k": 0.0015}},
}
RACE_MEDIAN_MS = 40.0
RACE_SIGMA = 1.0
Z95 = 1.6448536269514722  # the standard normal's 95th percentile
ANALYTIC_P95_MS = RACE_MEDIAN_MS * math.exp(RACE_SIGMA * Z95)  # about 207 ms

ARITHMETIC_CONCURRENCY = 16
PUZZLE_CONCURRENCY = 4


def make_providers(clock: Callable[[], float] = time.monotonic) -> dict[str, Provider]:
    """Fresh providers (empty latency history), one per configured name."""
    table = {}
    for name, spec in PROVIDERS.items():
        config = ProviderConfig(name=name, kind="simulated", **spec)
        table[name] = Provider(config, make_backend(config, None), clock=clock)
    return table


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: when nothing is ready, the loop's virtual clock jumps to its next timer."""

    def __init__(self, loop: VirtualTimeLoop):
        super().__init__()
        self._loop = loop

    def select(self, timeout=None):
        if timeout is None:
            return super().select(None)
        events = super().select(0)
        if not events and timeout > 0:
            self._loop.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock (`--virtual-time`): sleeps take no wall time and work
    takes no virtual time, so latencies are exactly the simulated draws as the coordinators
    combine them (hedge delays, cancellations), whatever else the machine is doing."""

    def __init__(self):
        self.now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Row:
    pattern: str
    workload: str
    n: int
    accuracy: float
    mean_cost: float
    p50_ms: float
    p99_ms: float
    calls_per_q: float
    extra_calls: float  # calls beyond one per question, as a fraction of the questions
    failed: int = 0
    target: str = ""
    result: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    # Per item, in order: the answer (None when the call failed) and whether it was right.
    items: list[tuple[Completion | None, bool]] = field(default_factory=list, repr=False)


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile, the same for every row."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


Item = tuple[ChatRequest, Callable[[Completion], bool]]


async def measure(pattern: str, workload: str, model, items: list[Item], concurrency: int) -> Row:
    """Ask every item through `model`, at most `concurrency` at once; time each from its start."""
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()  # its clock: the real monotonic one, or a virtual one
    latencies: list[float] = []
    costs: list[float] = []
    calls: list[int] = []
    right = 0
    failed = 0
    per_item: list[tuple[Completion | None, bool]] = [(None, False)] * len(items)

    async def one(i: int, request: ChatRequest, check: Callable[[Completion], bool]) -> None:
        nonlocal right, failed
        async with gate:
            started = loop.time()
            try:
                answer = await model.complete(request)
            except Exception as err:  # counted, and shown in the table
                failed += 1
                span = getattr(err, "span", None)
                calls.append(span.provider_calls() if span is not None else 1)
                costs.append(span.total_cost() if span is not None else 0.0)
                return
            latencies.append(loop.time() - started)
        ok = bool(check(answer))
        per_item[i] = (answer, ok)
        right += ok
        costs.append(answer.cost)
        calls.append(answer.trace.provider_calls() if answer.trace is not None else 1)

    await asyncio.gather(*(one(i, r, c) for i, (r, c) in enumerate(items)))
    n = len(items)
    mean_calls = sum(calls) / n
    return Row(
        pattern=pattern,
        workload=workload,
        n=n,
        accuracy=right / n,
        mean_cost=sum(costs) / n,
        p50_ms=quantile(latencies, 0.50) * 1000 if latencies else float("nan"),
        p99_ms=quantile(latencies, 0.99) * 1000 if latencies else float("nan"),
        calls_per_q=mean_calls,
        extra_calls=mean_calls - 1.0,
        failed=failed,
        items=per_item,
    )


# --- workloads ---------------------------------------------------------------------------------

NUMBER = extractor("number")


def arithmetic_items(questions: list[Question]) -> list[Item]:
    def check(truth: str) -> Callable[[Completion], bool]:
        return lambda answer: NUMBER(answer.content) == truth

    return [(q.request(), check(q.truth)) for q in questions]


def puzzle_items(puzzles: list[Puzzle], prompt: Callable[[Puzzle], str], seed: int | None = None) -> list[Item]:
    def check(numbers: tuple[int, ...]) -> Callable[[Completion], bool]:
        return lambda answer: check_answer(parse_solution(answer.content), numbers)

    return [
        (ChatRequest(messages=(Message("user", prompt(p)),), seed=seed), check(p.numbers))
        for p in puzzles
    ]


async def warm(provider: Provider, questions: list[Question]) -> None:
    """Fill a provider's latency history (what a `p95` hedge reads) from questions not measured."""
    gate = asyncio.Semaphore(ARITHMETIC_CONCURRENCY)

    async def one(q: Question) -> None:
        async with gate:
            await provider.complete(q.request())

    await asyncio.gather(*(one(q) for q in questions))


# --- the patterns ------------------------------------------------------------------------------


async def run(n_questions: int, n_latency: int) -> tuple[list[Row], dict[str, Any]]:
    questions = arithmetic_questions(n_questions, seed=2026)
    items = arithmetic_items(questions)
    timed = arithmetic_questions(n_latency, seed=2027)
    timed_items = arithmetic_items(timed)
    puzzles = load_puzzles()
    clock = asyncio.get_running_loop().time
    rows: list[Row] = []
    settings: dict[str, Any] = {"arithmetic_questions": n_questions, "latency_questions": n_latency,
                                "puzzles": len(puzzles), "providers": PROVIDERS,
                                "analytic_p95_ms": round(ANALYTIC_P95_MS, 1),
                                "concurrency": {"arithmetic": ARITHMETIC_CONCURRENCY, "puzzles": PUZZLE_CONCURRENCY}}

    async def row(pattern, workload, build, work, concurrency=ARITHMETIC_CONCURRENCY, before=None) -> Row:
        table = make_providers(clock)  # fresh: no latency history, no stats from another row
        if before is not None:
            await before(table)
        model = build(table, table.__getitem__)
        started = time.perf_counter()
        result = await measure(pattern, workload, model, work, concurrency)
        result.notes["wall_s"] = round(time.perf_counter() - started, 2)
        rows.append(result)
        print(f"  {pattern:<40} {result.notes['wall_s']:6.1f}s", file=sys.stderr, flush=True)
        return result

    workload = f"arithmetic x{n_questions}"
    timed_workload = f"arithmetic x{n_latency}"

    # Single-model baselines.
    small = await row("single: small", workload, lambda t, r: t["small"], items)
    large = await row("single: large", workload, lambda t, r: t["large"], items)
    twin = await row("single: twin-a (sigma 1)", timed_workload, lambda t, r: t["twin-a"], timed_items)

    # Race of two providers with the same latency distribution.
    race = await row("race: twin-a | twin-b", timed_workload,
                     lambda t, r: RaceCoordinator("race", r, ["twin-a", "twin-b"], clock=clock), timed_items)

    # Hedged race: the second call only when the first has not answered by its p95, read from
    # the provider's latency history (warmed on other questions) or fixed at the analytic value.
    warmup = arithmetic_questions(1000, seed=7)

    async def warm_first(table):
        await warm(table["twin-a"], warmup)

    hedged = await row("hedged race: p95 observed", timed_workload,
                       lambda t, r: RaceCoordinator("hedged", r, ["twin-a", "twin-b"], hedge_after_ms="p95",
                                                     clock=clock),
                       timed_items, before=warm_first)
    hedged_fixed = await row(f"hedged race: p95 analytic ({ANALYTIC_P95_MS:.0f} ms)", timed_workload,
                             lambda t, r: RaceCoordinator("hedged", r, ["twin-a", "twin-b"],
                                                          hedge_after_ms=ANALYTIC_P95_MS, clock=clock),
                             timed_items)

    # Ensemble of 5 samples of the small model.
    ensemble = await row("ensemble: 5 x small, t=0.7", workload,
                         lambda t, r: EnsembleCoordinator("vote", r, ["small"], samples=5, temperature=0.7,
                                                          extract=NUMBER, clock=clock), items)

    # The same five-sample vote on word problems the model answers in mixed phrasings (bold, boxed,
    # JSON, a final line, "The answer is 42. Confidence: 0.9", ...), read by the default extractor.
    words = word_questions(n_questions, seed=2028)
    word_items = arithmetic_items(words)
    word_workload = f"word problems x{n_questions}, mixed phrasings"
    small_words = await row("single: small, mixed phrasings", word_workload, lambda t, r: t["small"], word_items)
    ensemble_words = await row("ensemble: 5 x small, mixed phrasings", word_workload,
                               lambda t, r: EnsembleCoordinator("vote", r, ["small"], samples=5, temperature=0.7,
                                                                clock=clock), word_items)

    # Cascade: the small model, escalating to the large one below a stated confidence of 0.8.
    cascade = await row("cascade: small -> large (conf 0.8)", workload,
                        lambda t, r: CascadeCoordinator("cheap", r, ["small", "large"], escalate_if_below(0.8),
                                                           clock=clock),
                        items)

    # Game of 24: one chain of thought against the tree-of-thought search, the same model.
    cot = await row("single: medium, one chain (CoT)", "game24 x100",
                    lambda t, r: t["medium"], puzzle_items(puzzles, lambda p: solve_prompt(p.numbers)),
                    PUZZLE_CONCURRENCY * 4)
    draws = 10
    cot_draws = [i for s in range(draws) for i in puzzle_items(puzzles, lambda p: solve_prompt(p.numbers), seed=s)]
    cot_many = await row(f"single: medium, CoT, {draws} draws each", f"game24 x100 x{draws}",
                         lambda t, r: t["medium"], cot_draws, PUZZLE_CONCURRENCY * 4)
    tot = await row("tree-of-thought: medium, b=5", "game24 x100",
                    lambda t, r: TreeOfThoughtCoordinator("think", r, ["medium"], task="game24", breadth=5, depth=3, evaluations=3,
                                                             clock=clock),
                    puzzle_items(puzzles, lambda p: p.text), PUZZLE_CONCURRENCY)

    # Reach a target in 8 steps: the general tree-of-thought (the default task, its own prompts,
    # free-form replies, a final answer written from the best path) against one chain.
    climbs = reach.reach_puzzles(100, steps=8, seed=2029)

    def climb_items(seed: int | None = None) -> list[Item]:
        return [(ChatRequest(messages=(Message("user", p.text),), seed=seed),
                 (lambda p_: lambda answer: reach.check_answer(p_, answer.content))(p)) for p in climbs]

    climb_chain = await row(f"single: medium, one chain, {draws} draws each", f"reach x100 x{draws}",
                            lambda t, r: t["medium"], [i for s in range(draws) for i in climb_items(s)],
                            PUZZLE_CONCURRENCY * 4)
    climb_tot = await row("tree-of-thought (general): medium, b=5", "reach x100",
                          lambda t, r: TreeOfThoughtCoordinator("think", r, ["medium"], breadth=5, depth=8,
                                                                   evaluations=3, clock=clock),
                          climb_items(), PUZZLE_CONCURRENCY)

    # Targets (issue 3).
    targets = []

    def target(row_: Row, text: str, ok: bool, **figures) -> None:
        row_.target = text
        row_.result = "PASS" if ok else "FAIL"
        row_.notes.update(figures)
        targets.append({"pattern": row_.pattern, "target": text, "result": row_.result, **figures})

    # What the same latency draws give with no overhead at all: measured against ideal tells the
    # coordinator's cost apart from the sample's luck.
    ideal = ideal_latency_ratios(timed, ANALYTIC_P95_MS / 1000.0)
    ratio = race.p99_ms / twin.p99_ms
    target(race, "p99 <= 40% of one provider's", ratio <= 0.40, p99_ratio=round(ratio, 3),
           p99_ratio_of_the_draws=ideal["race"])
    for h in (hedged, hedged_fixed):
        ratio = h.p99_ms / twin.p99_ms
        target(h, "p99 <= 70% of one's, extra calls <= 6%", ratio <= 0.70 and h.extra_calls <= 0.06,
               p99_ratio=round(ratio, 3), extra_calls=round(h.extra_calls, 4),
               p99_ratio_of_the_draws_at_analytic_p95=ideal["hedged"])
    gap = large.accuracy - cascade.accuracy
    cost_ratio = cascade.mean_cost / large.mean_cost
    target(cascade, "within 1 pt of large, cost <= 50% of large", gap <= 0.01 and cost_ratio <= 0.50,
           accuracy_gap_points=round(100 * gap, 2), cost_ratio=round(cost_ratio, 3),
           escalated=round(cascade.extra_calls, 3), **plain_last_stage(cascade, large))
    gain = ensemble.accuracy - small.accuracy
    target(ensemble, ">= 10 pts above one small sample", gain >= 0.10, gain_points=round(100 * gain, 2))
    times = climb_tot.accuracy / max(climb_chain.accuracy, 1e-9)
    target(climb_tot, "solves >= 3x one chain (general task)", times >= 3.0, solved=round(climb_tot.accuracy * 100),
           chain_solve_rate=round(climb_chain.accuracy, 3), times=round(times, 1))
    gain = ensemble_words.accuracy - small_words.accuracy
    target(ensemble_words, ">= 10 pts above one small sample", gain >= 0.10, gain_points=round(100 * gain, 2))
    solved_tot = sum(ok for _, ok in tot.items)
    solved_cot = sum(ok for _, ok in cot.items)
    cot_expected = cot_many.accuracy * len(puzzles)  # puzzles one chain solves, on average
    base = max(solved_cot, cot_expected, 1.0)
    target(tot, "solves >= 3x one chain of thought", solved_tot >= 3 * base, solved=solved_tot,
           cot_solved=solved_cot, cot_expected_solved=round(cot_expected, 2), times=round(solved_tot / base, 1))
    return rows, {"settings": settings, "targets": targets}


def ideal_latency_ratios(questions: list[Question], hedge_s: float) -> dict[str, float]:
    """p99 ratios of race and hedged race computed from the simulated latency draws themselves."""
    table = make_providers()
    a, b = table["twin-a"].backend.model, table["twin-b"].backend.model
    first = [a.answer(q.request()).latency_s for q in questions]
    second = [b.answer(q.request()).latency_s for q in questions]
    one = quantile(first, 0.99)
    race = [min(x, y) for x, y in zip(first, second)]
    hedged = [x if x <= hedge_s else min(x, hedge_s + y) for x, y in zip(first, second)]
    return {"race": round(quantile(race, 0.99) / one, 3), "hedged": round(quantile(hedged, 0.99) / one, 3)}


def plain_last_stage(cascade: Row, large: Row) -> dict[str, float]:
    """The cascade's figures had its last stage been asked the plain question, as the large model
    alone is: the escalated questions' large calls swapped for the large baseline's own answers.

    The cascade adds its confidence instruction to every stage, the last included, where nothing
    reads the confidence; on short questions that instruction is most of the prompt."""
    cost = right = 0.0
    for (answer, ok), (alone, alone_ok) in zip(cascade.items, large.items):
        if answer is None or alone is None:
            continue
        data = answer.trace.data
        if data["answered_by"] == "large":
            cost += data["stages"][0]["cost"] + alone.cost
            right += alone_ok
        else:
            cost += answer.cost
            right += ok
    n = len(cascade.items)
    return {
        "if_last_stage_plain_cost_ratio": round(cost / n / large.mean_cost, 3),
        "if_last_stage_plain_accuracy_gap_points": round(100 * (large.accuracy - right / n), 2),
    }


# --- output ------------------------------------------------------------------------------------

COLUMNS = [
    ("pattern", "{:<40}"), ("workload", "{:<20}"), ("accuracy", "{:>8.1%}"), ("mean_cost", "{:>11.3e}"),
    ("p50_ms", "{:>7.1f}"), ("p99_ms", "{:>7.1f}"), ("calls_per_q", "{:>8.2f}"), ("extra_calls", "{:>8.1%}"),
    ("target", "{:<42}"), ("result", "{:<4}"),
]
HEADERS = ["pattern", "workload", "accuracy", "mean cost", "p50 ms", "p99 ms", "calls/q", "extra", "target", ""]


def table(rows: list[Row]) -> str:
    widths = [len(fmt.format(getattr(rows[0], key))) for key, fmt in COLUMNS]
    lines = ["  ".join(h.ljust(w) if i < 2 or i >= 8 else h.rjust(w) for i, (h, w) in enumerate(zip(HEADERS, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(fmt.format(getattr(r, key)) for key, fmt in COLUMNS).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="500 arithmetic questions (2000 for the latency rows) instead of 4000 (10000)")
    parser.add_argument("--questions", type=int, default=None, help="arithmetic questions (at least 500)")
    parser.add_argument("--latency-questions", type=int, default=None,
                        help="questions for the latency rows (race, hedged race and their baseline)")
    parser.add_argument("--virtual-time", action="store_true",
                        help="run on a virtual clock: exact simulated latencies, unaffected by machine load")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON results (default {RESULTS}, or {RESULTS_VIRTUAL.name} with --virtual-time)")
    args = parser.parse_args(argv)
    out = args.out or (RESULTS_VIRTUAL if args.virtual_time else RESULTS)
    n = args.questions or (500 if args.quick else 4000)
    n_latency = args.latency_questions or (2000 if args.quick else 10000)
    if n < 500 or n_latency < 500:
        parser.error("at least 500 questions")
    load_before = os.getloadavg()
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=VirtualTimeLoop if args.virtual_time else None) as runner:
        rows, extra = runner.run(run(n, n_latency))
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(table(rows))
    print()
    for t in extra["targets"]:
        figures = ", ".join(f"{k}={v}" for k, v in t.items() if k not in ("pattern", "target", "result"))
        print(f"{t['result']}  {t['pattern']}: {t['target']} ({figures})")
    # Latencies are wall-clock: other work on the machine shows up in them, so say how busy it was.
    print(f"\n{len(rows)} rows in {elapsed:.0f}s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    report = {
        "command": "python bench/patterns.py" + (" --quick" if args.quick else "")
        + (f" --questions {args.questions}" if args.questions else "")
        + (f" --latency-questions {args.latency_questions}" if args.latency_questions else "")
        + (" --virtual-time" if args.virtual_time else ""),
        "clock": "virtual" if args.virtual_time else "real",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "elapsed_s": round(elapsed, 1),
        "load_average": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        **extra,
        "rows": [{f.name: getattr(r, f.name) for f in fields(r) if f.name != "items"} for r in rows],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if all(t["result"] == "PASS" for t in extra["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
