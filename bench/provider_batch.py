"""The same job live and through the providers' batch APIs, side by side: cost, provider calls
(live and batched), wall time at a short turnaround, and the driver's memory at a large line count.

    python bench/provider_batch.py [--lines 2000] [--memory-lines 100000] [--turnaround-s 1]

The emulator runs in its own process. The live run is the Python API's batch on the local
runtime (providers in this process, no Ray); the provider-batch run is the same engine with
`provider_batch=True`. Memory is the driver's peak RSS (a run in a process of its own) and its
Python heap's peak (tracemalloc, in a second such run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import busy_neighbours, question, render_table, run_header  # noqa: E402

from orchestray import AsyncClient, LocalRuntime  # noqa: E402
from orchestray.config import parse_config  # noqa: E402
from orchestray.emulator import EmulatorOptions, run_in_process  # noqa: E402
from orchestray.provider_batch import ProviderBatchOptions, run_provider_batch  # noqa: E402

PRICE = {"input_per_1k": 0.00015, "output_per_1k": 0.0006}


def config(emu) -> dict:
    os.environ["BENCH_KEY"] = "bench"
    common = {"api_key_env": "BENCH_KEY", "price": PRICE, "limits": {"max_concurrency": 64}}
    return {"providers": [
        {"name": "gpt-mini", "kind": "openai", "model": "sim-small", "base_url": emu.openai_base_url, **common},
        {"name": "claude", "kind": "anthropic", "model": "sim-medium", "base_url": emu.anthropic_base_url, **common},
    ]}


def write_input(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"model": ("gpt-mini", "claude")[i % 2], "messages": [{"role": "user", "content": question(i)}]}
            f.write(json.dumps({"custom_id": f"q{i}", "body": body}) + "\n")


async def live_run(cfg, source: Path, out: Path) -> float:
    cost = 0.0
    async with AsyncClient(cfg, runtime=LocalRuntime()) as client:
        async for record in client.batch(source, out, max_in_flight=128):
            usage = record.response.body["usage"]
            cost += (usage["prompt_tokens"] * PRICE["input_per_1k"] + usage["completion_tokens"] * PRICE["output_per_1k"]) / 1000
    return cost


async def batch_run(cfg, source: Path, out: Path, poll_s: float):
    async def no_live():
        raise AssertionError("nothing here runs live")

    return await run_provider_batch(source, out, cfg, no_live, ProviderBatchOptions(poll_s=poll_s, progress=False))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(lines: int, turnaround_s: float, trace: bool = False, live: bool = False) -> dict:
    flags = ["--memory-child", str(lines), "--turnaround-s", str(turnaround_s)]
    flags += (["--trace"] if trace else []) + (["--live"] if live else [])
    done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def memory_child(lines: int, turnaround_s: float, trace: bool, live: bool) -> dict:
    """One run of `lines` lines (provider batch, or `live`) in this fresh process: its figures."""
    with tempfile.TemporaryDirectory() as scratch, run_in_process(EmulatorOptions(batch_turnaround_s=turnaround_s)) as emu:
        scratch = Path(scratch)
        cfg = parse_config(config(emu))
        big = scratch / "big.jsonl"
        write_input(big, lines)
        before = rss_mb()
        if trace:
            tracemalloc.start()
        started = time.monotonic()
        if live:
            cost = asyncio.run(live_run(cfg, big, scratch / "big-out.jsonl"))
            answered = sum(1 for _ in (scratch / "big-out.jsonl").open())
        else:
            result = asyncio.run(batch_run(cfg, big, scratch / "big-out.jsonl", poll_s=0.5))
            cost, answered = result.cost, result.succeeded
        wall = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
        stats = emu.stats()
    return {"cost": cost, "live_calls": stats["requests"], "batch_requests": stats["batches"]["requests"],
            "batches": stats["batches"]["batches"], "wall_s": wall, "answered": answered,
            "rss_before_mb": before, "rss_peak_mb": rss_mb(), "heap_peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--memory-lines", type=int, default=100_000)
    parser.add_argument("--turnaround-s", type=float, default=1.0)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "provider_batch.json"))
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--live", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.turnaround_s, args.trace, args.live)))
        return
    report = run_header("provider_batch") | {"neighbours": busy_neighbours()}
    rows = [("run", "lines", "cost $", "live calls", "batch requests", "batches", "wall s")]
    with tempfile.TemporaryDirectory() as scratch, run_in_process(EmulatorOptions(batch_turnaround_s=args.turnaround_s)) as emu:
        scratch = Path(scratch)
        cfg = parse_config(config(emu))
        source = scratch / "in.jsonl"
        write_input(source, args.lines)

        emu.reset()
        started = time.monotonic()
        live_cost = asyncio.run(live_run(cfg, source, scratch / "live.jsonl"))
        live_wall = time.monotonic() - started
        stats = emu.stats()
        rows.append(("live", str(args.lines), f"{live_cost:.5f}", str(stats["requests"]), "0", "0", f"{live_wall:.2f}"))
        report["live"] = {"cost": live_cost, "live_calls": stats["requests"], "wall_s": live_wall}

        emu.reset()
        started = time.monotonic()
        result = asyncio.run(batch_run(cfg, source, scratch / "batch.jsonl", poll_s=0.2))
        wall = time.monotonic() - started
        stats = emu.stats()
        rows.append(("provider batch", str(args.lines), f"{result.cost:.5f}", str(stats["requests"]),
                     str(stats["batches"]["requests"]), str(stats["batches"]["batches"]), f"{wall:.2f}"))
        report["provider_batch"] = {"cost": result.cost, "live_calls": stats["requests"],
                                    "batch_requests": stats["batches"]["requests"], "batches": stats["batches"]["batches"],
                                    "wall_s": wall, "rounds": result.rounds}

    if args.memory_lines:
        # Each memory run in a process of its own, so its peak RSS is its own: one plain, for RSS
        # and wall time, one under tracemalloc, for the Python heap's peak (and several times slower).
        report["memory"] = {"lines": args.memory_lines}
        for label, live in (("live", True), ("provider_batch", False)):
            plain = _memory_child(args.memory_lines, args.turnaround_s, live=live)
            traced = _memory_child(args.memory_lines, args.turnaround_s, trace=True, live=live)
            rows.append((f"{label.replace('_', ' ')} (memory runs)", str(args.memory_lines), f"{plain['cost']:.5f}",
                         str(plain["live_calls"]), str(plain["batch_requests"]), str(plain["batches"]),
                         f"{plain['wall_s']:.2f}"))
            report["memory"][label] = {"heap_peak_mb": traced["heap_peak_mb"], "rss_before_mb": plain["rss_before_mb"],
                                       "rss_peak_mb": plain["rss_peak_mb"], "wall_s": plain["wall_s"],
                                       "traced_wall_s": traced["wall_s"], "answered": plain["answered"]}
    print(render_table(rows))
    for label, m in report.get("memory", {}).items():
        if isinstance(m, dict):
            print(f"{label} driver at {report['memory']['lines']} lines: RSS {m['rss_before_mb']:.0f} MB before the run, "
                  f"{m['rss_peak_mb']:.0f} MB at its peak; Python heap peak {m['heap_peak_mb']:.0f} MB (tracemalloc "
                  f"run); {m['answered']} answered")
    print(f"cost ratio batch/live: {report['provider_batch']['cost'] / report['live']['cost']:.3f}")
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
