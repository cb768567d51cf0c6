"""The response cache: what a hit costs, and a whole batch rerun from the cache beside the uncached run.

Part 1, cost per hit. One provider at the emulator behind the cache, called from this process as
every door calls it (`registry.get(name).complete(request)`, the same path the gateway, batch
driver and Ray Data take). After one call fills the entry, H hits one after another give the
microseconds a hit costs (mean, p50, p99: the canonical key, the store round trip, decoding and
the `cached` trace), then H hits 64 at a time give hits per second. Stores: this process's memory
(runtime="local", the floor), the embedded store actor, a real redis-server on loopback. Beside
them, the canonical key alone.

Part 2, a batch rerun. N lines (distinct arithmetic questions, temperature 0) through
`run_batch_job` (the driver `orchestray batch` runs) at the emulator (own process, zero latency, no
limit): once with no cache, once filling the cache, then the same input to a new output, which the
cache serves whole; the emulator's request count is read before and after each run and the rerun
must add none. Lines per second are the batch loop's own wall time (the summary's `wall_s`).

    python bench/cache.py            # H=2,000 hits, N=10,000 lines -> bench/results/cache.json
    python bench/cache.py --quick    # H=500, N=2,000               -> bench/results/cache-quick.json

Bounded: each batch run has a deadline (`--max-s`, default 600 s) and the run fails past it. It
starts its own Ray instance, emulator and redis-server and stops them; files go to a temporary
directory that is removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import busy_neighbours, render_table, run_header, write_report

RESULTS = Path(__file__).parent / "results" / "cache.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "cache-quick.json"
MODEL = "sim-small"


def _config(base_url: str, tag: str, store: str | None, redis_url: str | None) -> dict:
    data: dict = {"providers": [{"name": f"bench-cache-{tag}", "kind": "openai", "model": MODEL, "base_url": base_url, "max_retries": 0}],
                  "store": {"key_prefix": f"bench{tag}:"}}
    if store is not None:
        data["cache"] = {"ttl_s": 3600, "max_entries": 1_000_000}
        if store == "redis":
            data["cache"]["redis_url"] = redis_url
        elif store == "memory":
            data["store"]["backend"] = "memory"
    return data


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _hits(config_data: dict, runtime: str, hits: int) -> dict:
    from orchestray import AsyncClient
    from orchestray.messages import ChatRequest, Message

    async with AsyncClient(config_data, runtime=runtime) as client:
        registry = await client._models()
        name = config_data["providers"][0]["name"]
        model = registry.get(name)
        request = ChatRequest(messages=(Message("user", "What is 12 * 12?"),), model=name, temperature=0, max_tokens=32)
        first = await model.complete(request)
        assert not (first.trace and first.trace.cached)
        for _ in range(20):  # warm: connections, the actor's method table
            assert (await model.complete(request)).trace.cached
        times = []
        for _ in range(hits):
            started = time.perf_counter()
            answer = await model.complete(request)
            times.append(time.perf_counter() - started)
            assert answer.trace.cached
        semaphore = asyncio.Semaphore(64)

        async def one() -> None:
            async with semaphore:
                assert (await model.complete(request)).trace.cached

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(hits)))
        concurrent_s = time.perf_counter() - started
        cache = registry.response_cache()
        assert cache.faults == 0
    us = [t * 1e6 for t in times]
    return {"hits": hits, "mean_us": statistics.fmean(us), "p50_us": _quantile(us, 0.5), "p99_us": _quantile(us, 0.99),
            "hits_per_s_at_64": hits / concurrent_s}


def _key_cost(n: int) -> float:
    from orchestray.cache import cache_key
    from orchestray.messages import ChatRequest, Message

    request = ChatRequest(messages=(Message("system", "Be brief."), Message("user", "What is 12 * 12?")), temperature=0, max_tokens=32)
    started = time.perf_counter()
    for _ in range(n):
        cache_key("identity", request)
    return (time.perf_counter() - started) / n * 1e6


def _write_lines(path: Path, model: str, n: int) -> None:
    from orchestray.simulated import arithmetic_questions

    with open(path, "w") as f:
        for i, q in enumerate(arithmetic_questions(n, seed=21)):
            body = {"model": model, "messages": [{"role": "user", "content": f"[{i}] {q.prompt}"}], "max_tokens": 32, "temperature": 0}
            f.write(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def _batch(config_data: dict, source: Path, out: Path, emulator, max_s: float) -> dict:
    import threading

    from orchestray.actors.batch import run_batch_job
    from orchestray.batch import BatchOptions
    from orchestray.config import parse_config

    before = emulator.stats()["requests"]
    timer = threading.Timer(max_s, lambda: os._exit(3))  # a run past its deadline fails the benchmark
    timer.start()
    try:
        result = run_batch_job(str(source), str(out), parse_config(config_data), BatchOptions(progress=False))
    finally:
        timer.cancel()
    asked = emulator.stats()["requests"] - before
    lines = sum(1 for _ in open(out))
    assert result.succeeded == lines == result.lines, (result.succeeded, lines, result.lines)
    return {"lines": result.lines, "wall_s": result.wall_s, "lines_per_s": result.lines / result.wall_s,
            "emulator_requests": asked, "cost": result.cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hits", type=int)
    parser.add_argument("--lines", type=int)
    parser.add_argument("--max-s", type=float, default=600.0)
    args = parser.parse_args()
    hits = args.hits or (500 if args.quick else 2_000)
    lines = args.lines or (2_000 if args.quick else 10_000)

    import ray

    from orchestray.cluster import connect
    from orchestray.emulator import EmulatorOptions, run_in_process
    from orchestray.testing import redis_server

    neighbours = busy_neighbours()
    report = run_header("cache")
    report.update({"hits": hits, "lines": lines, "busy_neighbours": neighbours,
                   "emulator": "own process (run_in_process), zero latency, no limit"})
    connect()
    try:
        with run_in_process(EmulatorOptions(latency_ms=0.0)) as emulator, redis_server() as redis_url, \
                tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
            made: list[str] = []

            def config(store: str | None) -> dict:
                tag = uuid.uuid4().hex[:6]
                data = _config(emulator.openai_base_url, tag, store, redis_url)
                made.append(tag)
                return data

            per_hit = {"key alone": {"mean_us": _key_cost(hits * 5)}}
            per_hit["memory (local)"] = asyncio.run(_hits(config("memory"), "local", hits))
            per_hit["embedded actor"] = asyncio.run(_hits(config("embedded"), "ray", hits))
            per_hit["redis"] = asyncio.run(_hits(config("redis"), "ray", hits))
            report["per_hit"] = per_hit

            runs: dict[str, dict] = {}
            plain = config(None)
            source = Path(tmp) / "in.jsonl"
            _write_lines(source, plain["providers"][0]["name"], lines)
            runs["no cache"] = _batch(plain, source, Path(tmp) / "plain.jsonl", emulator, args.max_s)
            for store in ("embedded", "redis"):
                data = config(store)
                source = Path(tmp) / f"in-{store}.jsonl"
                _write_lines(source, data["providers"][0]["name"], lines)
                runs[f"{store}: filling"] = _batch(data, source, Path(tmp) / f"fill-{store}.jsonl", emulator, args.max_s)
                rerun = runs[f"{store}: rerun"] = _batch(data, source, Path(tmp) / f"rerun-{store}.jsonl", emulator, args.max_s)
                assert rerun["emulator_requests"] == 0 and rerun["cost"] == 0, f"{store}: the rerun reached the provider"
            report["batch"] = runs
            for tag in made:
                for name in (f"bench-cache-{tag}", f"orchestray-store:bench{tag}:"):
                    try:
                        ray.kill(ray.get_actor(name, namespace="orchestray"))
                    except ValueError:
                        pass
    finally:
        ray.shutdown()

    rows = [("cost per hit", "mean µs", "p50 µs", "p99 µs", "hits/s at 64")]
    for name, r in per_hit.items():
        rows.append((name, f"{r['mean_us']:.0f}", *(f"{r[k]:.0f}" if k in r else "-" for k in ("p50_us", "p99_us", "hits_per_s_at_64"))))
    print(render_table(rows))
    print()
    base = runs["no cache"]["lines_per_s"]
    rows = [("batch run", "lines", "wall s", "lines/s", "× no cache", "emulator requests")]
    for name, r in runs.items():
        rows.append((name, str(r["lines"]), f"{r['wall_s']:.1f}", f"{r['lines_per_s']:.0f}", f"{r['lines_per_s'] / base:.2f}", str(r["emulator_requests"])))
    print(render_table(rows))
    if neighbours:
        print(f"\nmeasured under load: {len(neighbours)} other benchmark/test/Ray processes were running")
    write_report(QUICK_RESULTS if args.quick else RESULTS, report)


if __name__ == "__main__":
    sys.exit(main())
