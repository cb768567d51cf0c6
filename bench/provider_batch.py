"""The same job live and through the providers' batch APIs, side by side: cost, provider calls
(live and batched), wall time at a short turnaround, and the driver's memory at a large line count.

    python bench/provider_batch.py [--lines 2000] [--memory-lines 100000] [--turnaround-s 1]

The emulator runs in its own process. The live run is the Python API's batch on the local
runtime (providers in this process, no Ray); the provider-batch run is the same engine with
`provider_batch=True`. Memory is the driver's Python heap peak (tracemalloc) and its RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--memory-lines", type=int, default=100_000)
    parser.add_argument("--turnaround-s", type=float, default=1.0)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "provider_batch.json"))
    args = parser.parse_args()
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
            big = scratch / "big.jsonl"
            write_input(big, args.memory_lines)
            emu.reset()
            before = rss_mb()
            tracemalloc.start()
            started = time.monotonic()
            result = asyncio.run(batch_run(cfg, big, scratch / "big-out.jsonl", poll_s=0.5))
            wall = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            stats = emu.stats()
            rows.append(("provider batch (memory)", str(args.memory_lines), f"{result.cost:.5f}", str(stats["requests"]),
                         str(stats["batches"]["requests"]), str(stats["batches"]["batches"]), f"{wall:.2f}"))
            report["memory"] = {"lines": args.memory_lines, "heap_peak_mb": peak / 2**20,
                                "rss_growth_mb": rss_mb() - before, "wall_s": wall, "answered": result.succeeded}
    print(render_table(rows))
    if "memory" in report:
        m = report["memory"]
        print(f"driver at {m['lines']} lines: Python heap peak {m['heap_peak_mb']:.0f} MB (tracemalloc), "
              f"max RSS grew {m['rss_growth_mb']:.0f} MB; {m['answered']} answered")
    print(f"cost ratio batch/live: {report['provider_batch']['cost'] / report['live']['cost']:.3f}")
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
