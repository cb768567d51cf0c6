"""Where a sliding window's 429s come from: when the emulator counted each call, beside when the client let it go.

A sliding window of one second allowing L calls rejects call k+L when it arrives within one
second of call k. A client pacing evenly at a fraction p of the limit leaves call k+L 1/p
seconds after call k: a slack of (1/p - 1) s (5 ms at 99.5%, 10 ms at 99%, 20 ms at 98%). Any
delay between the client's stamp and the emulator's that is larger for call k than for call
k+L by more than that slack is a 429, whoever paces. So this script measures that delay.

The emulator (its own process, sliding window, `--log-arrivals`) records the time each call's
handler began and the time its quota counted it; time.monotonic is one clock for every process
on the host, so the client's stamps compare directly. No Ray: the clients run in this process.

  limiter       orchestray's `Provider` (the provider actor's logic, same SDK on aiohttp), the
                limit configured, N requests C in flight; stamp: the time its window entry
                carries, the send (aiohttp wrote the headers), as the product does
  limiter-at-admission   the same, its window stamped at admission (the product before)
  schedule p    an ideal fixed schedule, no limiter: call k sent at t0 + k / (p x limit) with raw
                aiohttp, no retries; stamp: just before the send
  sdk p         the same schedule through the openai SDK on aiohttp (what the provider pays)

For each: the 429s, the emulator's steady admitted rate (whole seconds 1..last-1) over the limit,
the client-to-emulator delay (median, 99th, 99.9th percentile, max), the emulator's own delay
(handler start to count), and the share of calls k whose delay exceeds that of call k-L by more
than 5, 10 and 20 ms: the 429 rate an ideal pacer at 99.5%, 99% and 98% would draw from the same
delays. Also CPU seconds of this process and of the emulator over each case.

    python bench/ratelimit_offsets.py              # N=2000, 6,000 rpm
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import openai
import psutil

from orchestray.backends import make_backend
from orchestray.config import ProviderConfig
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.messages import ChatRequest, Message
from orchestray.provider import Provider

from _common import question, render_table, run_header, write_report

RESULTS = Path(__file__).parent / "results" / "ratelimit-offsets.json"
MODEL = "sim-small"
MAX_TOKENS = 32
SLACKS_MS = (5.0, 10.0, 20.0)  # the slack of even pacing at 99.5%, 99%, 98% of a 1 s window


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered))))] if ordered else float("nan")


_PERMIT: contextvars.ContextVar = contextvars.ContextVar("permit", default=None)


def _move_entry(log, admitted_at: float, to: float) -> None:
    """Move the window log's entry stamped `admitted_at` to `to` (kept in time order)."""
    times, amounts = log._times, log._amounts
    index = bisect.bisect_left(times, admitted_at)
    if index < len(times) and times[index] == admitted_at:
        amount = amounts[index]
        del times[index], amounts[index]
        where = bisect.bisect_right(times, to)
        times.insert(where, to)
        amounts.insert(where, amount)


async def run_limiter(base_url: str, n: int, rpm: int, concurrency: int, handed: list[float], written: list[float],
                      at_send: bool = True) -> tuple[list[float], list[float]]:  # fmt: skip
    """The provider's stamps: (admitted, window) where window is the time its window entry
    carries: the send (headers written) with `at_send`, as the product does on the SDKs' aiohttp
    transport, else the admission. `handed` gets when the SDK handed each request to its HTTP
    client (the httpx request hook: after the SDK's own work, before the transport's), and
    `written` when aiohttp wrote its headers (a second `on_request_headers_sent` trace beside
    the product's)."""
    config = ProviderConfig(name=f"offsets-{uuid.uuid4().hex[:6]}", kind="openai", model=MODEL, base_url=base_url, limits={"rpm": rpm})
    backend = make_backend(config, "bench")

    async def hook(request) -> None:
        handed.append(time.monotonic())

    backend._client._client.event_hooks = {"request": [hook], "response": []}

    async def on_written(session, context, params) -> None:
        written.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_written)
    trace.freeze()
    transport = backend._client._client._transport  # the SDK's vendored aiohttp transport
    product_session = transport.client  # the product's own hook (backends._send_stamp)

    def session() -> aiohttp.ClientSession:
        built = product_session()
        built.trace_configs.append(trace)
        return built

    transport.client = session
    backend.stamps_sends = at_send
    provider = Provider(config, backend)
    permits = []
    acquire = provider.gate.acquire

    async def recording_acquire(*args, **kwargs):
        permit = await acquire(*args, **kwargs)
        permits.append(permit)
        return permit

    provider.gate.acquire = recording_acquire
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            try:
                await provider.complete(ChatRequest(messages=(Message("user", question(i)),), max_tokens=MAX_TOKENS))
            except Exception:
                pass

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await provider.close()
    return [p.admitted_at for p in permits], [p.logged_at if p.logged_at is not None else p.admitted_at for p in permits]


async def run_schedule(base_url: str, n: int, rate: float, via_sdk: bool) -> list[float]:
    stamps: list[float] = []
    body = {"model": MODEL, "max_tokens": MAX_TOKENS}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) if not via_sdk else None
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, http_client=openai.DefaultAioHttpClient()) if via_sdk else None

    async def one(i: int) -> None:
        stamps.append(time.monotonic())
        try:
            if sdk is not None:
                await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question(i)}], max_tokens=MAX_TOKENS)
            else:
                async with session.post(f"{base_url}/chat/completions", json={**body, "messages": [{"role": "user", "content": question(i)}]},
                                        headers={"Authorization": "Bearer bench"}) as response:  # fmt: skip
                    await response.read()
        except Exception:
            pass

    tasks = []
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    if session is not None:
        await session.close()
    if sdk is not None:
        await sdk.close()
    return stamps


def split(stamps: list[float], later: list[float]) -> dict:
    stamps, later = sorted(stamps), sorted(later)
    ms = [1000 * (b - a) for a, b in zip(stamps, later)]
    return {q: round(quantile(ms, v), 2) for q, v in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))} | {"max": round(max(ms, default=0), 2)}


def analyse(case: str, stamps: list[float], log: dict, limit: int, cpu: dict, handed: list[float], written: list[float],
            admitted: list[float] | None = None) -> dict:  # fmt: skip
    rows = log["rows"]
    counted = sorted(r[1] for r in rows)
    accepted = [r[1] for r in rows if r[3]]  # the emulator's; `admitted` stays the limiter's
    emulator_own = [1000 * (r[1] - r[0]) for r in rows]
    stamps = sorted(stamps)
    matched = min(len(stamps), len(counted))
    delay_ms = [1000 * (counted[i] - stamps[i]) for i in range(matched)]
    # The share of calls whose delay exceeds that of the call `limit` places before by more than a slack.
    pairs = [(delay_ms[i] - delay_ms[i - limit]) for i in range(limit, matched)]
    started = log["started"]
    per_second: dict[int, int] = {}
    for t in accepted:
        per_second[int(t - started)] = per_second.get(int(t - started), 0) + 1
    if per_second:
        first, last = max(1, min(per_second)), max(per_second)
        seconds = range(first, last)
        steady = sum(per_second.get(s, 0) for s in seconds) / max(1, len(seconds))
    else:
        steady = 0.0
    sent_gaps = [stamps[i] - stamps[i - limit] for i in range(limit, len(stamps))]
    return {
        "case": case,
        "calls": len(rows),
        "rate_limited": sum(1 for r in rows if not r[3]),
        "steady_fraction": round(steady / (limit), 4),
        "delay_ms": {q: round(quantile(delay_ms, v), 2) for q, v in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))} | {"max": round(max(delay_ms, default=0), 2)},
        "emulator_own_ms": {"p99": round(quantile(emulator_own, 0.99), 2), "max": round(max(emulator_own, default=0), 2)},
        "client_min_gap_ms": round(1000 * min(sent_gaps, default=float("nan")), 2),  # shortest span of L+1 client stamps
        # Calls that were the (L+1)th within one second: by the client's stamps, by the emulator's.
        "client_overfull": sum(1 for g in sent_gaps if g < 1.0),
        "emulator_overfull": sum(1 for i in range(limit, len(counted)) if counted[i] - counted[i - limit] < 1.0),
        "late_pairs": {f"{s:g}ms": round(sum(1 for d in pairs if d > s) / max(1, len(pairs)), 5) for s in SLACKS_MS},
        "cpu_s": cpu,
        # The limiter's delay in three parts: admitted -> handed to the HTTP client -> headers written -> the emulator's handler.
        "split_ms": {"admitted_to_handed": split(admitted or stamps, handed), "handed_to_written": split(handed, written),
                     "written_to_handler": split(written, [r[0] for r in rows])} if handed else None,  # fmt: skip
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--latency-sigma", type=float, default=1.0)
    parser.add_argument("--limit-mode", default="sliding", choices=("sliding", "fixed", "bucket"), help="the emulator's shape (default: %(default)s)")
    parser.add_argument("--cases", default="limiter,limiter-at-admission,schedule-0.995,schedule-0.99,sdk-0.99")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    limit = args.rpm // 60
    options = EmulatorOptions(rpm=args.rpm, limit_mode=args.limit_mode, latency_ms=args.latency_ms, latency_sigma=args.latency_sigma, log_arrivals=True)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores", flush=True)
    me = psutil.Process()
    results = []
    with run_in_process(options) as emulator:
        server = psutil.Process(emulator.pid)
        for case in args.cases.split(","):
            emulator.reset()
            before = (me.cpu_times(), server.cpu_times(), time.monotonic())
            handed: list[float] = []
            written: list[float] = []
            admitted = None
            if case in ("limiter", "limiter-at-admission"):
                admitted, stamps = asyncio.run(run_limiter(emulator.openai_base_url, args.requests, args.rpm, args.concurrency, handed,
                                                           written, at_send=case == "limiter"))  # fmt: skip
            else:
                kind, fraction = case.split("-")
                stamps = asyncio.run(run_schedule(emulator.openai_base_url, args.requests, limit * float(fraction), kind == "sdk"))
            after = (me.cpu_times(), server.cpu_times(), time.monotonic())
            wall = after[2] - before[2]
            cpu = {
                "wall_s": round(wall, 2),
                "client": round((after[0].user + after[0].system) - (before[0].user + before[0].system), 2),
                "emulator": round((after[1].user + after[1].system) - (before[1].user + before[1].system), 2),
                "load_1m": round(os.getloadavg()[0], 2),
            }
            results.append(analyse(case, stamps, emulator.arrivals(), limit, cpu, handed, written, admitted))
            print(f"  {case}: done in {wall:.1f}s", flush=True)

    rows = [("case", "429s", "over L by client/emu", "min L-gap ms", "steady %", "delay p50", "p99", "p99.9", "max ms", "emulator own p99/max", "late >5/10/20 ms %", "CPU client/emu s", "wall s", "load")]
    for r in results:
        d, e, late, c = r["delay_ms"], r["emulator_own_ms"], r["late_pairs"], r["cpu_s"]
        rows.append((r["case"], str(r["rate_limited"]), f"{r['client_overfull']}/{r['emulator_overfull']}", f"{r['client_min_gap_ms']:.1f}", f"{100 * r['steady_fraction']:.1f}", f"{d['p50']:.1f}", f"{d['p99']:.1f}",
                     f"{d['p999']:.1f}", f"{d['max']:.1f}", f"{e['p99']:.1f}/{e['max']:.1f}",
                     "/".join(f"{100 * v:.2f}" for v in late.values()), f"{c['client']:.1f}/{c['emulator']:.1f}",
                     f"{c['wall_s']:.1f}", f"{c['load_1m']:.1f}"))  # fmt: skip
    print()
    print(render_table(rows))
    print("late >X ms: calls whose client-to-emulator delay exceeds that of the call L places before by more than X ms "
          "(the 429s an ideal pacer at 99.5/99/98% would draw)")  # fmt: skip
    for r in results:
        if r["split_ms"]:
            print(f"{r['case']}, its delay in parts, p50/p99/p99.9/max ms:")
            for part, q in r["split_ms"].items():
                print(f"  {part.replace('_', ' ')}: {q['p50']}/{q['p99']}/{q['p999']}/{q['max']}")
    write_report(args.output, {**run_header("ratelimit-offsets"), "load_average_before": list(load), "settings": vars(args) | {"output": str(args.output)}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
