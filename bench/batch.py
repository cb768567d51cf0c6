"""Batch jobs against a rate-limited provider, beside a plain SDK script and LiteLLM's Router; then raw throughput.

Part 1, the limit. The emulator runs in its own process, limited to R requests a minute enforced
per second (a bucket refilling at R/60 a second and holding one second's worth), with heavy-tailed
latency (lognormal, median 50 ms, sigma 1). The same N requests go through three contenders, each
against the emulator freshly reset:

  orchestray   `orchestray batch IN.jsonl -o OUT.jsonl --config F` as a subprocess (the command a
               user runs, joining this benchmark's Ray instance): one `openai`-kind provider at the
               emulator with `limits: {rpm: R}`, default settings otherwise (512 in flight)
  openai+sem   `openai.AsyncOpenAI` with its defaults (max_retries=2, default transport) behind
               asyncio.Semaphore(C), as a new user would write it
  litellm      `litellm.Router` with the deployment's `rpm` set in `litellm_params` and
               `routing_strategy="usage-based-routing-v2"` (the strategy that filters out a
               deployment over its rpm), other settings default, behind the same semaphore

The two baselines run in their own subprocesses too (this file, `--client`), so no contender shares
a process with Ray or with another's imports. Wall time is the job's own: orchestray's batch loop
(`wall_s` of its summary, the provider actor's start included, Ray's connect not), a baseline's
first request to its last answer. Ideal wall time = N / (R/60); "% of ideal rate" is ideal / wall.
"Steady" is the rate the emulator admitted between the first and last whole second with any
admission, which leaves start-up out. 429s come from the emulator's /stats; a request is lost when
it has no answer at the end (an error record, a missing line, or an exception after the client's
retries).

Part 2, throughput. M lines at zero latency and no limit through `orchestray batch` (one
provider, no limits): requests per second, the driver's peak RSS (the kernel's high-water mark
for the CLI process, from wait4) and the provider actor's (read inside the actor).

    python bench/batch.py            # N=20,000 at 12,000 rpm; M=100,000 -> bench/results/batch.json
    python bench/batch.py --quick    # N=2,000 at 6,000 rpm; M=10,000  -> bench/results/batch-quick.json

Bounded: a contender past its deadline (part 1: 8x the ideal time, at least 300 s; part 2: slower
than 50 lines a second) is killed and the run fails. Files go to a temporary directory that is
removed after; the provider actors it made are killed, and its own Ray instance is shut down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import busy_neighbours, render_table, run_header

RESULTS = Path(__file__).parent / "results" / "batch.json"
QUICK_RESULTS = Path(__file__).parent / "results" / "batch-quick.json"
MODEL = "sim-small"
MAX_TOKENS = 32
BASELINE_MODEL_GROUP = "m"


# --- the baseline clients, each run in its own process ------------------------------------------


def _requests_from(input_path: Path) -> list[dict]:
    with input_path.open("rb") as f:
        return [json.loads(line)["body"] for line in f]


async def _bounded(calls, concurrency: int, timeout_s: float) -> list[str | None]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call) -> str | None:
        async with gate:
            try:
                await call()
            except Exception as err:
                return f"{type(err).__name__}: {str(err)[:160]}"
            return None

    return await asyncio.wait_for(asyncio.gather(*(one(c) for c in calls)), timeout_s)


async def _run_openai(base_url: str, bodies: list[dict], concurrency: int, timeout_s: float) -> tuple[list, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench")  # defaults: max_retries=2
    try:
        started = time.perf_counter()
        errors = await _bounded(
            [
                lambda b=b: client.chat.completions.create(model=MODEL, messages=b["messages"], max_tokens=b["max_tokens"])
                for b in bodies
            ],
            concurrency,
            timeout_s,
        )
        return errors, time.perf_counter() - started
    finally:
        await client.close()


async def _run_litellm(base_url: str, bodies: list[dict], concurrency: int, rpm: int, timeout_s: float) -> tuple[list, float]:
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    router = litellm.Router(
        model_list=[
            {
                "model_name": BASELINE_MODEL_GROUP,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": base_url, "api_key": "bench", "rpm": rpm},
            }
        ],
        routing_strategy="usage-based-routing-v2",
    )
    started = time.perf_counter()
    errors = await _bounded(
        [
            lambda b=b: router.acompletion(model=BASELINE_MODEL_GROUP, messages=b["messages"], max_tokens=b["max_tokens"])
            for b in bodies
        ],
        concurrency,
        timeout_s,
    )
    return errors, time.perf_counter() - started


def client_main(args: argparse.Namespace) -> int:
    """`--client openai|litellm`: send every request of `--input`, print one JSON line."""
    bodies = _requests_from(args.input)
    if args.client == "openai":
        errors, wall = asyncio.run(_run_openai(args.base_url, bodies, args.concurrency, args.timeout))
    else:
        errors, wall = asyncio.run(_run_litellm(args.base_url, bodies, args.concurrency, args.rpm, args.timeout))
    failed = [e for e in errors if e is not None]
    kinds: dict[str, int] = {}
    for e in failed:
        kind = e.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(json.dumps({"wall_s": wall, "lost": len(failed), "errors": kinds, "sample": failed[:3]}), flush=True)
    return 0


# --- the parent: emulator, Ray, contenders --------------------------------------------------------


@dataclass
class Row:
    part: str  # "limit" | "throughput"
    contender: str
    requests: int
    answered: int
    lost: int
    error_records: int | None
    wall_s: float  # the job's own time (orchestray: the batch loop; baselines: first request to last answer)
    process_wall_s: float  # the whole subprocess, start-up included
    rate_limited: int  # 429s the emulator sent
    limit_rps: float | None = None
    ideal_s: float | None = None
    driver_peak_rss_mib: float | None = None
    actor_peak_rss_mib: float | None = None
    actor_rss_mib: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.answered / self.wall_s if self.wall_s else 0.0

    @property
    def ideal_fraction(self) -> float | None:
        return self.ideal_s / self.wall_s if self.ideal_s and self.wall_s else None

    @property
    def answered_fraction_of_limit(self) -> float | None:
        return self.rps / self.limit_rps if self.limit_rps else None

    @property
    def rate_limited_fraction(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "rps": round(self.rps, 1),
            "ideal_fraction": None if self.ideal_fraction is None else round(self.ideal_fraction, 4),
            "answered_fraction_of_limit": None
            if self.answered_fraction_of_limit is None
            else round(self.answered_fraction_of_limit, 4),
            "rate_limited_fraction": round(self.rate_limited_fraction, 5),
        }


def write_input(path: Path, n: int, model: str) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"model": model, "messages": [{"role": "user", "content": f"What is {i % 997} + {i % 89}?"}], "max_tokens": MAX_TOKENS}
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n")


def write_config(path: Path, name: str, base_url: str, rpm: int | None) -> None:
    import yaml

    from orchestray.config import parse_config

    provider: dict = {"name": name, "kind": "openai", "model": MODEL, "base_url": base_url}
    if rpm is not None:
        provider["limits"] = {"rpm": rpm}
    data = {"providers": [provider]}
    parse_config(data, str(path))  # a mistake here fails before any process starts
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def read_output(path: Path, n: int) -> tuple[int, int, int]:
    """(answered, error records, custom_ids answered more than once)."""
    seen: dict[str, int] = {}
    answered = errors = 0
    if path.exists():
        with path.open("rb") as f:
            for raw in f:
                record = json.loads(raw)
                cid = record.get("custom_id")
                seen[cid] = seen.get(cid, 0) + 1
                if record.get("error") is None and (record.get("response") or {}).get("status_code") == 200:
                    answered += 1
                else:
                    errors += 1
    return answered, errors, sum(c - 1 for c in seen.values() if c > 1)


def _memory_in_actor(_instance=None) -> dict:
    """Runs inside the provider actor's process (through `__ray_call__`)."""
    import os

    kib = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split()[:2]
                kib[key] = int(value)
    return {"pid": os.getpid(), "rss_mib": kib.get("VmRSS:", 0) / 1024, "peak_rss_mib": kib.get("VmHWM:", 0) / 1024}


def actor_memory(name: str) -> dict | None:
    import ray

    try:
        actor = ray.get_actor(name, namespace="orchestray")
        return ray.get(actor.__ray_call__.remote(_memory_in_actor), timeout=30)
    except Exception as err:  # a measurement extra: the run's figures stand without it
        print(f"  (could not read the provider actor's memory: {type(err).__name__}: {err})", flush=True)
        return None


def kill_actor(name: str) -> None:
    import ray

    try:
        ray.kill(ray.get_actor(name, namespace="orchestray"), no_restart=True)
    except ValueError:
        pass


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class AdmissionLog:
    """The emulator's admissions per second since its reset, for the whole run.

    /stats keeps only the last 60 seconds, so the log reads it every 15 s and merges.
    """

    def __init__(self, emulator):
        self.emulator = emulator
        self.per_second: dict[int, int] = {}
        self._next = time.monotonic() + 15.0

    def tick(self, final: bool = False) -> dict | None:
        if not final and time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + 15.0
        stats = self.emulator.stats()
        for window in stats["admitted_per_second"]:
            self.per_second[window["second"]] = window["count"]
        return stats

    def summary(self, limit_rps: float | None) -> dict:
        """First and last second with an admission, and the rate over the whole seconds between.

        The first second after the first admission can hold the emulator's full-bucket burst
        and the last is partial; both are left out of the steady rate.
        """
        busy = sorted(s for s, c in self.per_second.items() if c)
        if len(busy) < 4:
            return {}
        first, last = busy[0], busy[-1]
        seconds = range(first + 1, last)
        steady = sum(self.per_second.get(s, 0) for s in seconds) / len(seconds)
        return {
            "first_admission_second": first,
            "last_admission_second": last,
            "steady_admitted_rps": round(steady, 1),
            "steady_fraction_of_limit": round(steady / limit_rps, 4) if limit_rps else None,
        }


def run_measured(command: list[str], timeout_s: float, stdout, stderr, env: dict | None = None, on_tick=None) -> tuple[int, float, float, list]:
    """Run `command`; (exit code, wall s, peak RSS MiB from wait4, RSS samples (t, MiB)). Killed at the timeout."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env)
    samples: list[tuple[float, float]] = []
    deadline = started + timeout_s
    next_sample = started
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        now = time.perf_counter()
        if now > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"{command[:4]} did not finish within {timeout_s:.0f}s and was killed")
        if now >= next_sample:
            rss = _rss_mib(process.pid)
            if rss is not None:
                samples.append((round(now - started, 2), round(rss, 1)))
            next_sample = now + 0.5
            if on_tick is not None:
                on_tick()
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux: the kernel's high-water mark for that child alone.
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024, samples


def orchestray_job(part: str, emulator, workdir: Path, n: int, rpm: int | None, timeout_s: float, gcs_address: str) -> Row:
    tag = uuid.uuid4().hex[:8]
    name = f"bench-batch-{tag}"
    source, output, config = workdir / f"in-{tag}.jsonl", workdir / f"out-{tag}.jsonl", workdir / f"config-{tag}.yaml"
    write_input(source, n, name)
    write_config(config, name, emulator.openai_base_url, rpm)
    log_out, log_err = workdir / f"stdout-{tag}.txt", workdir / f"stderr-{tag}.txt"
    command = [sys.executable, "-m", "orchestray.cli", "batch", str(source), "-o", str(output), "--config", str(config),
               "--address", gcs_address, "-q"]  # fmt: skip
    conditions = {"load_before": round(os.getloadavg()[0], 2), "neighbours": busy_neighbours()}
    emulator.reset()
    admissions = AdmissionLog(emulator)
    try:
        with log_out.open("wb") as out, log_err.open("wb") as err:
            code, process_wall, peak_rss, samples = run_measured(command, timeout_s, out, err, on_tick=admissions.tick)
        conditions["load_after"] = round(os.getloadavg()[0], 2)
        stats = admissions.tick(final=True)
        memory = actor_memory(name)
    finally:
        kill_actor(name)
    if code not in (0, 3):
        raise RuntimeError(f"orchestray batch exited with {code}:\n{log_err.read_text()[-3000:]}")
    summary = json.loads(output.with_name(output.stem + ".summary.json").read_text())
    answered, error_records, duplicates = read_output(output, n)
    provider = summary["by_provider"].get(name, {})
    limit_rps = rpm / 60.0 if rpm else None
    return Row(
        part=part,
        contender="orchestray",
        requests=n,
        answered=answered,
        lost=n - answered,
        error_records=error_records,
        wall_s=summary["wall_s"],
        process_wall_s=round(process_wall, 2),
        rate_limited=stats["rate_limited"],
        limit_rps=limit_rps,
        ideal_s=n / limit_rps if limit_rps else None,
        driver_peak_rss_mib=round(peak_rss, 1),
        actor_peak_rss_mib=round(memory["peak_rss_mib"], 1) if memory else None,
        actor_rss_mib=round(memory["rss_mib"], 1) if memory else None,
        note="CLI subprocess, default 512 in flight",
        extra={
            **conditions,
            **admissions.summary(limit_rps),
            "duplicates": duplicates,
            "emulator_served": stats["served"],
            "emulator_peak_concurrency": stats["peak_concurrency"],
            "provider_retries": provider.get("retries"),
            "provider_latency_p50_s": provider.get("latency_p50_s"),
            "provider_latency_p99_s": provider.get("latency_p99_s"),
            "driver_rss_samples": samples[:: max(1, len(samples) // 60)],
        },
    )


def baseline_job(kind: str, emulator, workdir: Path, n: int, rpm: int, concurrency: int, timeout_s: float) -> Row:
    tag = uuid.uuid4().hex[:8]
    source = workdir / f"in-{tag}.jsonl"
    write_input(source, n, MODEL)
    env = dict(os.environ)
    # Loopback only: LiteLLM would otherwise fetch its model price map from GitHub at import.
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    command = [sys.executable, str(Path(__file__).resolve()), "--client", kind, "--base-url", emulator.openai_base_url,
               "--input", str(source), "--concurrency", str(concurrency), "--rpm", str(rpm), "--timeout", str(timeout_s)]  # fmt: skip
    log_out, log_err = workdir / f"stdout-{tag}.txt", workdir / f"stderr-{tag}.txt"
    conditions = {"load_before": round(os.getloadavg()[0], 2), "neighbours": busy_neighbours()}
    emulator.reset()
    admissions = AdmissionLog(emulator)
    with log_out.open("wb") as out, log_err.open("wb") as err:
        code, process_wall, peak_rss, _ = run_measured(command, timeout_s + 120, out, err, env, on_tick=admissions.tick)
    conditions["load_after"] = round(os.getloadavg()[0], 2)
    stats = admissions.tick(final=True)
    if code != 0:
        raise RuntimeError(f"the {kind} client exited with {code}:\n{log_err.read_text()[-3000:]}")
    report = json.loads(log_out.read_text().strip().splitlines()[-1])
    limit_rps = rpm / 60.0
    return Row(
        part="limit",
        contender="openai+sem" if kind == "openai" else "litellm Router",
        requests=n,
        answered=n - report["lost"],
        lost=report["lost"],
        error_records=None,
        wall_s=round(report["wall_s"], 2),
        process_wall_s=round(process_wall, 2),
        rate_limited=stats["rate_limited"],
        limit_rps=limit_rps,
        ideal_s=n / limit_rps,
        driver_peak_rss_mib=round(peak_rss, 1),
        note=f"Semaphore({concurrency})" + (", usage-based-routing-v2" if kind == "litellm" else ", max_retries=2"),
        extra={**conditions, **admissions.summary(limit_rps), "errors": report["errors"], "error_sample": report["sample"], "emulator_served": stats["served"],
               "emulator_peak_concurrency": stats["peak_concurrency"]},  # fmt: skip
    )


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    head = ("part", "contender", "requests", "answered", "lost", "wall s", "ideal s", "% ideal rate", "answered/s",
            "answered % of limit", "steady % of limit", "429s", "429s %", "driver peak RSS MiB", "actor RSS MiB (peak)")  # fmt: skip
    lines = [head]
    for r in rows:
        actor = "-" if r.actor_rss_mib is None else f"{r.actor_rss_mib:.0f} ({r.actor_peak_rss_mib:.0f})"
        lines.append(
            (
                r.part,
                r.contender,
                str(r.requests),
                str(r.answered),
                str(r.lost),
                f"{r.wall_s:.1f}",
                _fmt(r.ideal_s, ".1f"),
                _fmt(None if r.ideal_fraction is None else 100 * r.ideal_fraction, ".1f") + ("*" if r.lost and r.ideal_s else ""),
                f"{r.rps:.0f}",
                _fmt(None if r.answered_fraction_of_limit is None else 100 * r.answered_fraction_of_limit, ".1f"),
                _fmt(None if r.extra.get("steady_fraction_of_limit") is None else 100 * r.extra["steady_fraction_of_limit"], ".1f"),
                str(r.rate_limited),
                f"{100 * r.rate_limited_fraction:.2f}",
                _fmt(r.driver_peak_rss_mib, ".0f"),
                actor,
            )
        )
    return render_table(lines, left=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=20_000, help="requests in part 1 (default: %(default)s)")
    parser.add_argument("--rpm", type=int, default=12_000, help="the emulator's and the provider's limit (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="median latency in part 1 (default: %(default)s)")
    parser.add_argument("--latency-sigma", type=float, default=1.0, help="lognormal sigma (default: %(default)s)")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="the baselines' semaphore (default: %(default)s)")
    parser.add_argument("-m", "--lines", type=int, default=100_000, help="lines in part 2 (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=2,000 at 6,000 rpm, M=10,000")
    parser.add_argument("--skip", default="", help="contenders to leave out, comma-separated: orchestray,openai,litellm,throughput")
    parser.add_argument("-o", "--output", type=Path, default=None, help=f"JSON results (default: {RESULTS}, --quick: {QUICK_RESULTS})")
    # The baseline clients: this file run again in a child process.
    parser.add_argument("--client", choices=("openai", "litellm"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=1200.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.quick:
        args.requests, args.rpm, args.lines = 2_000, 6_000, 10_000
    output = args.output or (QUICK_RESULTS if args.quick else RESULTS)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import ray

    from orchestray.emulator import EmulatorOptions, run_in_process

    limit_rps = args.rpm / 60.0
    ideal_s = args.requests / limit_rps
    # Bounded: a contender slower than this is killed and the benchmark fails instead of hanging.
    limit_timeout = max(300.0, 8 * ideal_s)
    throughput_timeout = max(300.0, args.lines / 50)

    load_before = os.getloadavg()
    neighbours = busy_neighbours()
    print(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; {os.cpu_count()} cores shared by emulator, Ray and clients")
    if neighbours:
        print("warning: other benchmarks, tests or Ray instances are running; figures may be polluted:", *neighbours, sep="\n  ")

    rows: list[Row] = []
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="orchestray-bench-batch-"))
    try:
        # address="local": a Ray instance of our own, even when someone on the machine ran `ray start`.
        ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="orchestray", logging_level="WARNING")
        gcs_address = ray.get_runtime_context().gcs_address
        limited = EmulatorOptions(rpm=args.rpm, latency_ms=args.latency_ms, latency_sigma=args.latency_sigma)
        with run_in_process(limited) as emulator:
            print(f"part 1: {args.requests} requests, {args.rpm} rpm, ideal {ideal_s:.1f}s", flush=True)
            if "orchestray" not in skip:
                rows.append(orchestray_job("limit", emulator, workdir, args.requests, args.rpm, limit_timeout, gcs_address))
                print(f"  orchestray: {rows[-1].wall_s:.1f}s, {rows[-1].lost} lost, {rows[-1].rate_limited} 429s", flush=True)
            for kind in ("openai", "litellm"):
                if kind in skip:
                    continue
                rows.append(baseline_job(kind, emulator, workdir, args.requests, args.rpm, args.concurrency, limit_timeout))
                print(f"  {rows[-1].contender}: {rows[-1].wall_s:.1f}s, {rows[-1].lost} lost, {rows[-1].rate_limited} 429s", flush=True)
        if "throughput" not in skip:
            with run_in_process(EmulatorOptions(latency_ms=0.0)) as emulator:
                print(f"part 2: {args.lines} lines, zero latency, no limit", flush=True)
                rows.append(orchestray_job("throughput", emulator, workdir, args.lines, None, throughput_timeout, gcs_address))
                print(f"  orchestray: {rows[-1].wall_s:.1f}s, {rows[-1].rps:.0f} req/s", flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(
        f"part 1 (limit): N={args.requests}, emulator limit {args.rpm} rpm ({limit_rps:g}/s, enforced per second), latency "
        f"lognormal median {args.latency_ms:g} ms sigma {args.latency_sigma:g}, ideal {ideal_s:.1f}s; "
        f"part 2 (throughput): M={args.lines}, zero latency, no limit"
    )
    print(table(rows))
    print(
        "% ideal rate = ideal s / wall s (* = requests were lost, so the run ended early: read answered % of limit); "
        "steady = the emulator's admissions/s between the first and last whole second with any; "
        "lost = no answer in the end; 429s as sent by the emulator"
    )

    ours = next((r for r in rows if r.part == "limit" and r.contender == "orchestray"), None)
    targets = {}
    if ours is not None:
        targets = {
            "ideal_fraction": {"value": round(ours.ideal_fraction, 4), "target": ">= 0.95", "passed": ours.ideal_fraction >= 0.95},
            "lost": {"value": ours.lost, "target": "== 0", "passed": ours.lost == 0},
            "rate_limited_fraction": {"value": round(ours.rate_limited_fraction, 5), "target": "<= 0.01",
                                      "passed": ours.rate_limited_fraction <= 0.01},  # fmt: skip
        }
        for key, t in targets.items():
            print(f"orchestray {key}: {t['value']} (target {t['target']}) {'PASS' if t['passed'] else 'FAIL'}")

    report = {
        **run_header("batch"),
        "command": "python bench/batch.py" + (" --quick" if args.quick else ""),
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "other_processes": neighbours,
        "settings": {
            "requests": args.requests,
            "rpm": args.rpm,
            "limit_rps": limit_rps,
            "ideal_s": ideal_s,
            "latency_ms_median": args.latency_ms,
            "latency_sigma": args.latency_sigma,
            "baseline_concurrency": args.concurrency,
            "throughput_lines": args.lines,
            "emulator": "own process (run_in_process), per-second bucket, reset before each contender",
            "orchestray": "`orchestray batch` CLI subprocess joining this run's Ray instance (num_cpus=2), default options",
            "versions": _versions(),
        },
        "rows": [r.as_dict() for r in rows],
        "targets": targets,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0 if all(t["passed"] for t in targets.values()) else 1


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("ray", "openai", "litellm", "msgspec", "aiohttp"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
