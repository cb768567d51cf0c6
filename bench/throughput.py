"""Requests per second through one provider actor, beside the SDKs and a raw HTTP client.

The emulator runs in its own process with no latency and no limit, so what is measured is each
client's own cost per request. The clients send the same N requests, C at a time:

  actor        one provider actor (`ProviderHandle.complete` from this driver, through Ray; with
               64 in flight, calls share Ray calls through `actors/multiplex.py`)
  client       `orchestray.AsyncClient(runtime="ray").complete(name, text, max_tokens=32)`: the
               public API over the same kind of provider actor (the request built from the
               text and fields as the HTTP door builds it); the target is within 5% of `actor`
  sdk-httpx    `openai.AsyncOpenAI` as it comes (default httpx transport), no Ray
  sdk-aiohttp  `openai.AsyncOpenAI(http_client=openai.DefaultAioHttpClient())`, no Ray
  raw-aiohttp  an aiohttp session posting the JSON body, no SDK
  backend      orchestray's OpenAI backend called in this driver: the SDK's client posting the
               body, the answer decoded with msgspec; no Ray, no limiter. The most any provider
               whose calls go through the SDK can reach on one core (a reference, not a client)
  ray-noop     an async Ray actor answering a canned Completion with no HTTP at all: Ray's own
               per-call cost alone, the most `actor` could reach here (a reference, not a client)
  backend-before  with `--before REV`: `backend` as the OpenAI backend was at git revision REV
               (its openai_wire.py loaded beside today's package), to compare a change side by side

Every client first sends an untimed warm-up. The clients take turns, round after round, and the
table shows each one's best round (the one least disturbed by anything else on the machine);
the JSON keeps every round. The emulator, the actor's process and this driver share the
machine's cores, so beside the rate the table gives the CPU each process spent per request
(from /proc), which shows where the time goes.

    python bench/throughput.py            # N=5000, C=64, 2 rounds
    python bench/throughput.py --quick    # N=1000, 1 round
    python bench/throughput.py --clients backend,backend-before --before b3e1c1a --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import openai
import ray

import orchestray
from orchestray.actors.provider import NAMESPACE, provider_handle
from orchestray.backends.openai_wire import OpenAIBackend
from orchestray.config import ProviderConfig
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.messages import ChatRequest, Completion, Message, Span

from _common import busy_neighbours, question, render_table, run_header, write_report

RESULTS = Path(__file__).parent / "results" / "throughput.json"
MODEL = "sim-small"
MAX_TOKENS = 32
# A bound on each timed run: a stuck client fails the benchmark instead of hanging it.
CLIENT_TIMEOUT_S = 300.0
_TICKS = os.sysconf("SC_CLK_TCK")

Send = Callable[[int], Awaitable[None]]


@dataclass
class Result:
    client: str
    requests: int
    errors: int
    seconds: float
    rps: float
    # CPU seconds per request, in microseconds, of each process over the timed run.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    round: int = 1


def body(i: int) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question(i)}], "max_tokens": MAX_TOKENS}


def chat_requests(count: int) -> list[ChatRequest]:
    return [ChatRequest(messages=(Message("user", question(i)),), max_tokens=MAX_TOKENS) for i in range(count)]


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def drive(send: Send, n: int, concurrency: int, warmup: int, pids: dict[str, int]) -> tuple[int, float, dict]:
    """Send `warmup` untimed requests, then `n` timed ones, `concurrency` at a time.

    Workers pull the next index from a shared iterator, so exactly `concurrency` are in flight
    until the end. Returns (errors, seconds, CPU microseconds per request of each process).
    """

    async def run(count: int) -> int:
        next_index = iter(range(count))
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for i in next_index:
                try:
                    await send(i)
                except Exception:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return errors

    await asyncio.wait_for(run(warmup), CLIENT_TIMEOUT_S)
    pids = {"driver": os.getpid(), **pids}
    cpu_before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    errors = await asyncio.wait_for(run(n), CLIENT_TIMEOUT_S)
    seconds = time.perf_counter() - started
    cpu = {name: round((process_cpu_s(pid) - cpu_before[name]) / n * 1e6) for name, pid in pids.items()}
    return errors, seconds, cpu


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()))


async def bench_actor(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int):
    config = ProviderConfig(name=f"bench-throughput-{uuid.uuid4().hex[:8]}", kind="openai", model=MODEL, base_url=base_url)
    handle = provider_handle(config)
    try:
        requests = chat_requests(max(n, warmup))

        async def send(i: int) -> None:
            await handle.complete(requests[i])

        pids = {"actor": actor_pid(handle.actor), "emulator": emulator_pid}
        return await drive(send, n, concurrency, warmup, pids)
    finally:
        ray.kill(handle.actor, no_restart=True)


async def bench_client(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int):
    name = f"bench-client-{uuid.uuid4().hex[:8]}"
    config = {"providers": [{"name": name, "kind": "openai", "model": MODEL, "base_url": base_url}]}
    client = orchestray.AsyncClient(config, runtime="ray")
    try:
        await client.complete(name, question(0), max_tokens=MAX_TOKENS)  # finds the provider actor
        actor = ray.get_actor(name, namespace=NAMESPACE)

        async def send(i: int) -> None:
            await client.complete(name, question(i), max_tokens=MAX_TOKENS)

        return await drive(send, n, concurrency, warmup, {"actor": actor_pid(actor), "emulator": emulator_pid})
    finally:
        await client.close()
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


async def bench_sdk(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int, *, aiohttp_transport: bool):
    kwargs = {"http_client": openai.DefaultAioHttpClient()} if aiohttp_transport else {}
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", **kwargs)
    try:

        async def send(i: int) -> None:
            await client.chat.completions.create(**body(i))

        return await drive(send, n, concurrency, warmup, {"emulator": emulator_pid})
    finally:
        await client.close()


async def bench_raw(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int):
    url = f"{base_url}/chat/completions"
    headers = {"Authorization": "Bearer bench"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int) -> None:
            async with session.post(url, json=body(i), headers=headers) as response:
                response.raise_for_status()
                await response.json()

        return await drive(send, n, concurrency, warmup, {"emulator": emulator_pid})


# The OpenAI backend class `backend-before` runs: set by --before.
BEFORE: dict[str, type] = {}


def backend_at(revision: str) -> type:
    """OpenAIBackend as orchestray/backends/openai_wire.py was at a git revision, imported under
    its own module name so it runs beside today's (it imports today's orchestray)."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{revision}:orchestray/backends/openai_wire.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="orchestray-bench-")) / f"openai_wire_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"openai_wire_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the view structs' annotations through it
    spec.loader.exec_module(module)
    return module.OpenAIBackend


async def bench_backend(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int,
                        backend_class: type = OpenAIBackend):
    backend = backend_class(ProviderConfig(name="bench-backend", kind="openai", model=MODEL, base_url=base_url), "bench")
    try:
        requests = chat_requests(max(n, warmup))

        async def send(i: int) -> None:
            await backend.complete(requests[i])

        return await drive(send, n, concurrency, warmup, {"emulator": emulator_pid})
    finally:
        await backend.close()


@ray.remote(num_cpus=0, max_concurrency=10_000)
class NoopActor:
    """The provider actor's shape (async, a ChatRequest in, a Completion out) with no work inside."""

    async def complete(self, request: ChatRequest) -> Completion:
        span = Span(name="noop", model=MODEL, input_tokens=6, output_tokens=12, latency_s=0.001)
        return Completion(content="Answer: 42", model=MODEL, provider="noop", input_tokens=6, output_tokens=12, trace=span)


async def bench_ray_noop(base_url: str, n: int, concurrency: int, warmup: int, emulator_pid: int):
    actor = NoopActor.remote()
    try:
        requests = chat_requests(max(n, warmup))

        async def send(i: int) -> None:
            await actor.complete.remote(requests[i])

        return await drive(send, n, concurrency, warmup, {"actor": actor_pid(actor)})
    finally:
        ray.kill(actor)


CLIENTS: dict[str, Callable[..., Awaitable[tuple[int, float, dict]]]] = {
    "actor": bench_actor,
    "client": bench_client,
    "sdk-httpx": lambda *a: bench_sdk(*a, aiohttp_transport=False),
    "sdk-aiohttp": lambda *a: bench_sdk(*a, aiohttp_transport=True),
    "raw-aiohttp": bench_raw,
    "backend": bench_backend,
    "ray-noop": bench_ray_noop,
    "backend-before": lambda *a: bench_backend(*a, backend_class=BEFORE["class"]),
}


def table(results: list[Result], spread: dict[str, dict[str, float]]) -> str:
    by_name = {r.client: r for r in results}
    httpx, aio = by_name.get("sdk-httpx"), by_name.get("sdk-aiohttp")
    rows = [("client", "req/s", "rounds' range", "x sdk-httpx", "x sdk-aiohttp", "errors", "CPU us/req: driver", "actor", "emulator")]
    for r in results:
        cpu = r.cpu_us_per_request
        rows.append(
            (
                r.client,
                f"{r.rps:.0f}",
                f"{spread[r.client]['min']:.0f}-{spread[r.client]['max']:.0f}",
                f"{r.rps / httpx.rps:.2f}" if httpx else "-",
                f"{r.rps / aio.rps:.2f}" if aio else "-",
                str(r.errors),
                str(cpu.get("driver", "-")),
                str(cpu.get("actor", "-")),
                str(cpu.get("emulator", "-")),
            )
        )
    return render_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=5000, help="timed requests per client (default: %(default)s)")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="requests in flight (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests per client first (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="turns each client takes; the best counts (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="N=1000, warm-up 200, 1 round")
    parser.add_argument("--clients", default=",".join(c for c in CLIENTS if c != "backend-before"),
                        help="comma-separated subset of: " + ", ".join(CLIENTS))
    parser.add_argument("--before", metavar="REV", help="git revision whose OpenAI backend `backend-before` runs")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.warmup, args.rounds = 1000, 200, 1
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        parser.error(f"unknown client(s): {', '.join(sorted(unknown))}")
    if "backend-before" in clients:
        if not args.before:
            parser.error("backend-before needs --before REV")
        BEFORE["class"] = backend_at(args.before)

    neighbours = busy_neighbours()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores shared by emulator, actor and driver")
    if neighbours:
        print("warning: other pytest/Ray processes are running; figures may be polluted:", *neighbours, sep="\n  ")

    rounds: list[Result] = []
    # address="local": always a fresh instance of our own, never someone else's running cluster.
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING")
    try:
        with run_in_process(EmulatorOptions(latency_ms=0.0)) as emulator:
            for turn in range(1, args.rounds + 1):
                for name in clients:
                    emulator.reset()
                    run = CLIENTS[name](emulator.openai_base_url, args.requests, args.concurrency, args.warmup, emulator.pid)
                    errors, seconds, cpu = asyncio.run(run)
                    rps = args.requests / seconds
                    rounds.append(Result(name, args.requests, errors, round(seconds, 3), round(rps, 1), cpu, turn))
                    served = emulator.stats()["served"]
                    print(f"  round {turn} {name}: {rps:.0f} req/s ({errors} errors, emulator served {served})", flush=True)
    finally:
        ray.shutdown()

    results = [max((r for r in rounds if r.client == name), key=lambda r: r.rps) for name in clients]
    spread = {}
    for name in clients:
        rates = [r.rps for r in rounds if r.client == name]
        spread[name] = {"min": min(rates), "max": max(rates)}

    print()
    print(
        f"N={args.requests} per client after {args.warmup} untimed, {args.concurrency} in flight, emulator: no latency, "
        f"no limit; best of {args.rounds} round(s)"
    )
    print(table(results, spread))
    by_name = {r.client: r for r in results}
    targets = {}
    if {"actor", "sdk-httpx"} <= by_name.keys():
        ratio = by_name["actor"].rps / by_name["sdk-httpx"].rps
        targets["actor_vs_sdk_httpx"] = {"ratio": round(ratio, 2), "target": ">= 3.0", "passed": ratio >= 3.0}
    if {"actor", "sdk-aiohttp"} <= by_name.keys():
        ratio = by_name["actor"].rps / by_name["sdk-aiohttp"].rps
        targets["actor_vs_sdk_aiohttp"] = {"ratio": round(ratio, 2), "target": ">= 0.75", "passed": ratio >= 0.75}
    if {"client", "actor"} <= by_name.keys():
        ratio = by_name["client"].rps / by_name["actor"].rps
        targets["client_vs_actor"] = {"ratio": round(ratio, 2), "target": ">= 0.95", "passed": ratio >= 0.95}
    if {"backend", "sdk-httpx"} <= by_name.keys():
        # Not a target: how far the SDK path alone gets, with no Ray and no limiter at all.
        targets["backend_vs_sdk_httpx"] = {
            "ratio": round(by_name["backend"].rps / by_name["sdk-httpx"].rps, 2), "target": "reference", "passed": None
        }
    # The same ratios within each round, whose clients ran minutes apart at most.
    if {"backend", "backend-before"} <= by_name.keys():
        # A change's cost on the backend's own path: today's against the revision's, same run.
        ratio = by_name["backend"].rps / by_name["backend-before"].rps
        targets["backend_vs_before"] = {"ratio": round(ratio, 3), "target": ">= 0.95", "passed": ratio >= 0.95,
                                        "before": args.before}
    pairs = {"actor_vs_sdk_httpx": ("actor", "sdk-httpx"), "actor_vs_sdk_aiohttp": ("actor", "sdk-aiohttp"),
             "backend_vs_sdk_httpx": ("backend", "sdk-httpx"), "backend_vs_before": ("backend", "backend-before"),
             "client_vs_actor": ("client", "actor")}
    for key, (ours, base) in pairs.items():
        if key in targets:
            per_round = []
            for turn in range(1, args.rounds + 1):
                pair = {r.client: r.rps for r in rounds if r.round == turn}
                per_round.append(round(pair[ours] / pair[base], 3))
            targets[key]["per_round"] = per_round
    for key, t in targets.items():
        rounds_text = ", ".join(f"{x:.2f}" for x in t["per_round"])
        verdict = "(reference)" if t["passed"] is None else "PASS" if t["passed"] else "FAIL"
        print(f"{key}: {t['ratio']:.2f} best to best, per round {rounds_text} (target {t['target']}) {verdict}")

    report = {
        **run_header("throughput"),
        "load_average_before": [round(x, 2) for x in load],
        "other_processes": neighbours,
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "emulator": {"latency_ms": 0, "rpm": None, "process": "own"},
            "driver_event_loop": "asyncio (default); Ray runs the actors' loops on uvloop",
            "versions": {"ray": ray.__version__, "openai": openai.__version__, "aiohttp": aiohttp.__version__},
        },
        "results": [asdict(r) for r in results],
        "rounds": [asdict(r) for r in rounds],
        "spread_rps": spread,
        "targets": targets,
    }
    write_report(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
