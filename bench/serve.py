"""Requests per second, latency and CPU per request through the gateway, beside LiteLLM's proxy.

One run against the emulator at zero latency (in its own process) measures, at concurrency 1
and 32, over loopback HTTP with one aiohttp client, every request with a bearer key:

  (a) noop      a FastAPI ingress deployment (defined here) that reads the body and answers a
                fixed small JSON body: the least Serve does with a request on this ingress
  (b) provider  orchestray's Gateway calling one provider actor (openai kind, the emulator)
  (c) race      orchestray racing two such providers (a `race` route, no hedging)
  (l) litellm   LiteLLM's proxy (`--litellm PATH`, from its own virtual environment: its pins
                clash with ours), one worker, no database, the same emulator as its one model

and, at concurrency 1 only,

  (d) sdk       the same emulator call made directly with `openai.AsyncOpenAI` over aiohttp, no Ray

Serve runs on the HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1, as `serve run serve_app:app`
does) unless the environment says otherwise; `RAY_SERVE_ENABLE_HA_PROXY=0 python bench/serve.py`
measures Serve's Python proxy instead.

Every cell first sends an untimed warm-up at its own concurrency, then the same number of
timed requests as the other cells at that concurrency; latency is measured by the client per
request. The cells take turns, round after round (--rounds), and each target is computed within
every round and judged on the median round. Targets (issue 14): (b) at c=32 reaches 5x (l)'s
throughput; (b)'s p50 at c=1 is at most (d)'s p50 + 5 ms; (c) costs at most twice (b)'s server
CPU per request at c=32. Server CPU is what the serving processes used (for orchestray every Ray
process of this run: HAProxy, replicas, provider actors, raylet, GCS; for LiteLLM its process
tree), over the warm-up and timed requests, neither the client nor the emulator.

The emulator, the servers and this driver share the machine's cores, and on a shared machine so
may other people's jobs: every cell records the cores this run used and the cores everything else
used meanwhile, and a cell during which others used more than --max-others cores is measured
again after a pause (at most --attempts times in all).

    python bench/serve.py --litellm /path/to/venv/bin/litellm     # 3 rounds of 200 at c=1, 1000 at c=32
    python bench/serve.py --quick ...                              # 1 round of 100 at c=1 and 500 at c=32
"""


import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterator

# Before Ray starts: its Serve controller reads the ingress setting from the environment it inherits.
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")

import aiohttp
import openai
import ray
from fastapi import FastAPI, Request
from ray import serve

from orchestray.cluster import NAMESPACE
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.serving import app_for

from _common import busy_neighbours, question, render_table, run_header, write_report

RESULTS = Path(__file__).parent / "results" / "serve.json"
MODEL = "sim-small"
MAX_TOKENS = 32
# Bounds: a stuck cell fails the benchmark instead of hanging it.
CELL_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 180.0

# (b)'s throughput at c=32 against LiteLLM's; (b)'s p50 at c=1 over the direct SDK call's;
# (c)'s server CPU per request at c=32 against (b)'s.
THROUGHPUT_VS_LITELLM_TARGET = 5.0
ADDED_P50_TARGET_MS = 5.0
RACE_CPU_TARGET = 2.0
KEY = "bench-key-0123456789"  # both gateways demand a bearer key, as deployed

Send = Callable[[int], Awaitable[None]]


# (a): the least Serve can do with the same request on the same path, with the same deployment settings.
noop_api = FastAPI()
NOOP_BODY = {
    "id": "chatcmpl-noop",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@serve.deployment(name="Noop")
@serve.ingress(noop_api)
class Noop:
    @noop_api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> dict:
        await request.body()
        return NOOP_BODY


@dataclass
class Cell:
    target: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    emulator_calls_per_request: float | None = None
    server_cpu_ms_per_request: float | None = None
    our_cores: float | None = None
    other_cores: float | None = None
    attempts: int = 1
    round: int = 1


def chat_body(model: str, i: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": question(i)}], "max_tokens": MAX_TOKENS}


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[index]


async def drive(send: Send, n: int, concurrency: int, warmup: int) -> tuple[int, float, list[float]]:
    """`warmup` untimed requests, then `n` timed ones, `concurrency` in flight; (errors, s, latencies)."""

    async def run(count: int, latencies: list[float]) -> int:
        indices = iter(range(count))
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for i in indices:
                started = time.perf_counter()
                try:
                    await send(i)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return errors

    await asyncio.wait_for(run(warmup, []), CELL_TIMEOUT_S)
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.wait_for(run(n, latencies), CELL_TIMEOUT_S)
    return errors, time.perf_counter() - started, latencies


def cell(target: str, concurrency: int, n: int, errors: int, seconds: float, latencies: list[float]) -> Cell:
    latencies = sorted(latencies)
    ok = len(latencies)
    return Cell(
        target=target,
        concurrency=concurrency,
        requests=n,
        errors=errors,
        seconds=round(seconds, 3),
        rps=round(ok / seconds, 1),
        p50_ms=round(quantile(latencies, 0.50) * 1000, 2),
        p99_ms=round(quantile(latencies, 0.99) * 1000, 2),
        mean_ms=round(sum(latencies) / ok * 1000, 2) if ok else float("nan"),
    )


async def bench_http(url: str, model: str, n: int, concurrency: int, warmup: int) -> tuple[int, float, list[float]]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    payloads = [json.dumps(chat_body(model, i)).encode() for i in range(max(n, warmup))]
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(i: int) -> None:
            async with session.post(url, data=payloads[i], headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        return await drive(send, n, concurrency, warmup)


async def bench_sdk(base_url: str, n: int, concurrency: int, warmup: int) -> tuple[int, float, list[float]]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    try:

        async def send(i: int) -> None:
            await client.chat.completions.create(**chat_body(MODEL, i))

        return await drive(send, n, concurrency, warmup)
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpuWatch:
    """Cores used during a cell by this benchmark's processes and by everything else on the machine,
    and the CPU seconds of the processes serving the cell.

    This run's processes are this driver and its descendants (the emulator, LiteLLM, and the Ray
    instance it started: raylet, GCS, HAProxy, replicas, the provider actors). "Others" is the
    machine's busy time less ours: the other engineers' test suites and benchmarks on the shared
    cores. The servers are our processes less the driver (the client), the emulator's tree and,
    for an orchestray cell, LiteLLM's; for a LiteLLM cell, LiteLLM's tree alone.
    """

    _TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, emulator_pid: int, litellm_pid: int | None, litellm_cell: bool):
        self._emulator, self._litellm, self._litellm_cell = emulator_pid, litellm_pid, litellm_cell
        self._start = self._sample()

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / CpuWatch._TICK

    @staticmethod
    def _processes() -> tuple[dict[int, int], dict[int, float]]:
        parents: dict[int, int] = {}
        used: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry)] = int(fields[1])
            used[int(entry)] = (int(fields[11]) + int(fields[12])) / CpuWatch._TICK
        return parents, used

    @staticmethod
    def _tree(root: int | None, parents: dict[int, int]) -> set[int]:
        found, frontier = set(), [] if root is None else [root]
        while frontier:
            pid = frontier.pop()
            found.add(pid)
            frontier += [child for child, parent in parents.items() if parent == pid and child not in found]
        return found

    def _sample(self) -> tuple[float, float, float, float]:
        parents, used = self._processes()
        ours = self._tree(os.getpid(), parents)
        litellm = self._tree(self._litellm, parents)
        servers = litellm if self._litellm_cell else ours - {os.getpid()} - self._tree(self._emulator, parents) - litellm

        def cpu(pids: set[int]) -> float:
            return sum(used[pid] for pid in pids if pid in used)

        return time.perf_counter(), self._busy_s(), cpu(ours), cpu(servers)

    def stop(self) -> tuple[float, float, float]:
        """(our cores, other cores) on average since the watch started, and the servers' CPU seconds."""
        wall0, busy0, ours0, servers0 = self._start
        wall1, busy1, ours1, servers1 = self._sample()
        wall = max(wall1 - wall0, 1e-9)
        ours = (ours1 - ours0) / wall
        return round(ours, 2), round(max(0.0, (busy1 - busy0) / wall - ours), 2), servers1 - servers0


@contextlib.contextmanager
def litellm_proxy(executable: str, emulator_base_url: str) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy on loopback, one worker, no database, the emulator as its one model:
    (its chat completions URL, its pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "litellm.yaml"
        config.write_text(json.dumps({  # JSON is YAML
            "model_list": [{"model_name": MODEL, "litellm_params": {
                "model": f"openai/{MODEL}", "api_base": emulator_base_url, "api_key": "unused"}}],
            "general_settings": {"master_key": KEY},
        }))
        log = open(Path(folder) / "litellm.log", "wb")
        # Its bundled price list instead of fetching the latest one (there is no network here).
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        process = subprocess.Popen([executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                    "--num_workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            wait_ready(url, "POST", json.dumps(chat_body(MODEL, 0)).encode())
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def wait_ready(url: str, method: str = "GET", body: bytes | None = None) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=body, method=method,
                                         headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        try:
            with opener.open(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {READY_TIMEOUT_S:.0f}s")


def table(cells: list[Cell]) -> str:
    rows = [("target", "c", "requests", "errors", "req/s", "p50 ms", "p99 ms", "emulator calls/req",
             "server CPU ms/req", "cores ours", "cores others")]
    for c in cells:
        calls = "-" if c.emulator_calls_per_request is None else f"{c.emulator_calls_per_request:.2f}"
        cpu = "-" if c.server_cpu_ms_per_request is None else f"{c.server_cpu_ms_per_request:.2f}"
        rows.append((c.target, str(c.concurrency), str(c.requests), str(c.errors), f"{c.rps:.0f}",
                     f"{c.p50_ms:.2f}", f"{c.p99_ms:.2f}", calls, cpu, f"{c.our_cores:.2f}", f"{c.other_cores:.2f}"))
    return render_table(rows)


def targets(cells: list[Cell]) -> dict:
    """The three targets of issue 14, each computed within every round and judged on the median
    round: this machine drifts by more than the margins between rounds."""
    by = {(c.target, c.concurrency, c.round): c for c in cells}
    per_round: dict[str, list[float]] = {"throughput_c32_b_over_litellm": [], "added_p50_c1_b_over_sdk_ms": [],
                                          "cpu_per_request_c32_race_over_provider": []}
    for r in sorted({c.round for c in cells}):
        b32, l32, c32 = by.get(("b provider", 32, r)), by.get(("l litellm", 32, r)), by.get(("c race", 32, r))
        b1, d1 = by.get(("b provider", 1, r)), by.get(("d sdk", 1, r))
        if b32 and l32 and l32.rps:
            per_round["throughput_c32_b_over_litellm"].append(round(b32.rps / l32.rps, 2))
        if b1 and d1:
            per_round["added_p50_c1_b_over_sdk_ms"].append(round(b1.p50_ms - d1.p50_ms, 2))
        if b32 and c32 and b32.server_cpu_ms_per_request:
            per_round["cpu_per_request_c32_race_over_provider"].append(
                round(c32.server_cpu_ms_per_request / b32.server_cpu_ms_per_request, 2))
    goals = {"throughput_c32_b_over_litellm": (">=", THROUGHPUT_VS_LITELLM_TARGET),
             "added_p50_c1_b_over_sdk_ms": ("<=", ADDED_P50_TARGET_MS),
             "cpu_per_request_c32_race_over_provider": ("<=", RACE_CPU_TARGET)}
    found = {}
    for name, values in per_round.items():
        if values:
            value = statistics.median(values)
            op, goal = goals[name]
            found[name] = {"value": round(value, 2), "per_round": values, "target": f"{op} {goal}",
                           "passed": value >= goal if op == ">=" else value <= goal}
    return found


def median_cells(cells: list[Cell]) -> list[Cell]:
    """One row per (target, concurrency): the round with the median throughput."""
    rows = []
    for key in dict.fromkeys((c.target, c.concurrency) for c in cells):
        group = sorted((c for c in cells if (c.target, c.concurrency) == key), key=lambda c: c.rps)
        rows.append(group[(len(group) - 1) // 2])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm", metavar="PATH",
                        help="the `litellm` command of a virtual environment with `litellm[proxy]` installed; "
                             "without it the LiteLLM cells and the throughput target are left out")
    parser.add_argument("--quick", action="store_true", help="100 requests at c=1 and 500 at c=32 (smoke run)")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    parser.add_argument("--max-others", type=float, default=0.25,
                        help="cores other processes may use during a cell before it is measured again (default: %(default)s)")
    parser.add_argument("--attempts", type=int, default=3, help="measurements of a cell at most (default: %(default)s)")
    parser.add_argument("--busy-wait-s", type=float, default=30.0,
                        help="pause before measuring a cell again (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every cell is measured, the targets taking turns (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    # (requests, warm-up) per concurrency and round: the same for every target at that concurrency.
    plan = {1: (100, 30), 32: (500, 100)} if args.quick else {1: (200, 50), 32: (1000, 200)}
    ingress = "haproxy" if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "python proxy"

    neighbours_before = busy_neighbours()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores shared by emulator, "
          f"servers and driver; Serve ingress: {ingress}")
    if neighbours_before:
        print("warning: other test, Ray or benchmark processes are running; figures may be polluted:",
              *neighbours_before, sep="\n  ")

    suffix = uuid.uuid4().hex[:6]
    provider_names = [f"serve-bench-{suffix}-a", f"serve-bench-{suffix}-b"]
    route = f"serve-bench-{suffix}-race"
    cells: list[Cell] = []
    # Replicas' per-request access logs stay in their log files: streamed to this driver they
    # would cost the client's core more than some of the cells being measured.
    # address="local": always a new instance of our own, never a cluster another process started.
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING",
             log_to_driver=False)
    try:
        with run_in_process(EmulatorOptions(latency_ms=0.0)) as emulator, contextlib.ExitStack() as stack:
            litellm_url, litellm_pid = (stack.enter_context(litellm_proxy(args.litellm, emulator.openai_base_url))
                                        if args.litellm else (None, None))
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            base = f"http://127.0.0.1:{port}"
            try:
                config = parse_config({
                    "providers": [{"name": name, "kind": "openai", "model": MODEL, "base_url": emulator.openai_base_url}
                                  for name in provider_names],
                    "routes": {route: {"pattern": "race", "providers": provider_names}},
                    "serve": {"num_replicas": 1, "replica_num_cpus": 0, "api_keys_env": "SERVE_BENCH_KEYS"},
                }, "bench")
                settings = config.serve
                noop = Noop.options(num_replicas=1, max_ongoing_requests=settings.max_ongoing_requests,
                                    ray_actor_options={"num_cpus": 0})
                serve.run(noop.bind(), name="noop", route_prefix="/noop", blocking=False)
                keys = {"runtime_env": {"env_vars": {"SERVE_BENCH_KEYS": KEY}}}
                serve.run(app_for(config, keys), name="orchestray", route_prefix="/", blocking=False)
                wait_ready(f"{base}/readyz")
                wait_ready(f"{base}/noop/v1/chat/completions", "POST", b"{}")
                print(f"Serve on {base}; emulator at {emulator.openai_base_url} (pid {emulator.pid})"
                      + (f"; LiteLLM at {litellm_url} (pid {litellm_pid})" if litellm_url else ""), flush=True)

                endpoints = {
                    "a noop": (f"{base}/noop/v1/chat/completions", MODEL),
                    "b provider": (f"{base}/v1/chat/completions", provider_names[0]),
                    "c race": (f"{base}/v1/chat/completions", route),
                }
                if litellm_url:
                    endpoints["l litellm"] = (litellm_url, MODEL)
                # Round after round, each target in turn: a target's figures and its baseline's
                # are measured minutes apart at most, whatever the machine does meanwhile.
                order = [(turn, t, c) for turn in range(1, args.rounds + 1)
                         for t, c in [("d sdk", 1)] + [(t, c) for c in (1, 32) for t in endpoints]]
                for turn, target, concurrency in order:
                    n, warmup = plan[concurrency]
                    for attempt in range(1, args.attempts + 1):
                        if target == "d sdk":
                            coro = bench_sdk(emulator.openai_base_url, n, concurrency, warmup)
                        else:
                            url, model = endpoints[target]
                            coro = bench_http(url, model, n, concurrency, warmup)
                        served_before = emulator.stats()["served"]
                        watch = CpuWatch(emulator.pid, litellm_pid, litellm_cell=target == "l litellm")
                        errors, seconds, latencies = asyncio.run(coro)
                        ours, others, server_s = watch.stop()
                        result = cell(target, concurrency, n, errors, seconds, latencies)
                        result.our_cores, result.other_cores, result.attempts = ours, others, attempt
                        result.round = turn
                        if target != "d sdk":
                            result.server_cpu_ms_per_request = round(server_s * 1000 / (n + warmup), 2)
                        if not target.startswith("a"):
                            calls = emulator.stats()["served"] - served_before
                            result.emulator_calls_per_request = round(calls / (n + warmup), 2)
                        print(f"  round {turn} {target} c={concurrency}: {result.rps:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                              f"p99 {result.p99_ms:.2f} ms, server CPU {result.server_cpu_ms_per_request} ms/req "
                              f"({errors} errors; cores: ours {ours:.2f}, others {others:.2f})", flush=True)
                        if others <= args.max_others or attempt == args.attempts:
                            break
                        print(f"    other processes used {others:.2f} cores (> {args.max_others}); "
                              f"measuring again in {args.busy_wait_s:.0f} s", flush=True)
                        time.sleep(args.busy_wait_s)
                    cells.append(result)
            finally:
                serve.shutdown()
                for name in provider_names:
                    try:
                        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                    except ValueError:
                        pass  # never created
    finally:
        ray.shutdown()

    found = targets(cells)
    print()
    print(f"median round of {args.rounds} per cell (by throughput):")
    print(table(median_cells(cells)))
    print()
    for name, t in found.items():
        rounds_text = ", ".join(str(x) for x in t["per_round"])
        print(f"{name}: {t['value']} median of rounds [{rounds_text}] (target {t['target']}) "
              f"{'PASS' if t['passed'] else 'FAIL'}")

    report = {
        **run_header("serve"),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "other_processes_before": neighbours_before,
        "settings": {
            "quick": args.quick,
            "ingress": ingress,
            "max_other_cores": args.max_others,
            "attempts": args.attempts,
            "rounds": args.rounds,
            "requests_and_warmup_by_concurrency": {str(c): {"requests": n, "warmup": w} for c, (n, w) in plan.items()},
            "replicas": {"Gateway": 1, "Noop": 1, "num_cpus": 0},
            "litellm": {"workers": 1, "database": None, "command": args.litellm} if args.litellm else None,
            "emulator": {"latency_ms": 0, "rpm": None, "process": "own"},
            "client": "aiohttp, one session per cell, pool = concurrency, a bearer key; "
                      "(d) openai.AsyncOpenAI + DefaultAioHttpClient",
            "versions": {"ray": ray.__version__, "openai": openai.__version__, "aiohttp": aiohttp.__version__,
                         "litellm": litellm_version(args.litellm)},
        },
        "results": [asdict(c) for c in median_cells(cells)],
        "rounds": [asdict(c) for c in cells],
        "targets": found,
    }
    write_report(args.output, report)
    return 0


def litellm_version(executable: str | None) -> str | None:
    if not executable:
        return None
    python = Path(executable).with_name("python")
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
