"""One batch over three keys, each with its own rate limit, through a `balance` route: how close to their summed limits.

Three emulators run in their own processes, each one key's quota: limited to its own R_i
requests a minute, enforced over a sliding one-second window (the strictest shape), with
heavy-tailed latency (lognormal, median 50 ms, sigma 1). The config names one provider with
three deployments, one per emulator with that key's `limits: {rpm: R_i}`:

    providers:
      - name: pool
        kind: openai
        model: sim-small
        deployments:
          - {base_url: http://127.0.0.1:P1/v1, limits: {rpm: R_1}}
          - {base_url: http://127.0.0.1:P2/v1, limits: {rpm: R_2}}
          - {base_url: http://127.0.0.1:P3/v1, limits: {rpm: R_3}}

so `pool` is a balance route over `pool:1..3`, and the N lines of one batch (`body.model:
pool`) go through `orchestray batch` as a user runs it (a subprocess joining this benchmark's
Ray instance, default 512 in flight). Measured: the emulators' admissions per whole second
summed, between the first and last second with any (start-up left out), as a fraction of the
summed limit (steady); answered lines over the batch's own wall time, as the same fraction
(overall); each key's share of the calls beside its share of the limit; the 429s the three
sent; and the lines lost (no answer at the end).

    python bench/balance.py                       # N=12,000 at 6,000 + 4,000 + 2,000 rpm
    python bench/balance.py --quick               # N=3,000
    python bench/balance.py --rpm 10000,10000,10000 -n 30000
    python bench/balance.py --one-emulator        # one emulator process, one quota per API key

With `--one-emulator`, one emulator process stands in for the three keys (`--key-rpm`, each
key its own quota) and the config lists the keys instead of deployments, as the issue has it:

    providers:
      - {name: pool, kind: openai, model: sim-small, base_url: http://127.0.0.1:P/v1,
         api_key_env: [BENCH_KEY_1, BENCH_KEY_2, BENCH_KEY_3], limits: {rpm: R}}

(one `limits` for all, so R is the per-key limit: the keys' limits must be equal there.) Each
key's admissions then come from the emulator's arrival log. Both forms report the CPU seconds
each process used over the batch (the emulators, the batch driver, each Ray worker), from
/proc via psutil, beside the wall time: how close to the two cores' 2 CPU-seconds a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import ray
import yaml

from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_process

from _common import busy_neighbours, render_table, run_header, write_report
from batch import AdmissionLog, kill_actor, read_output, run_measured, write_input

RESULTS = Path(__file__).parent / "results" / "balance.json"
MODEL = "sim-small"


def write_config(path: Path, name: str, emulators: list, rpms: list[int]) -> None:
    deployments = [{"base_url": e.openai_base_url, "limits": {"rpm": rpm}} for e, rpm in zip(emulators, rpms)]
    data = {"providers": [{"name": name, "kind": "openai", "model": MODEL, "deployments": deployments}]}
    parse_config(data, str(path))  # a mistake here fails before any process starts
    path.write_text(yaml.safe_dump(data, sort_keys=False))


KEY_ENV = "BENCH_BALANCE_KEY_{}"


def write_keyed_config(path: Path, name: str, emulator, rpm: int, keys: int) -> None:
    data = {"providers": [{"name": name, "kind": "openai", "model": MODEL, "base_url": emulator.openai_base_url,
                           "api_key_env": [KEY_ENV.format(i + 1) for i in range(keys)], "limits": {"rpm": rpm}}]}  # fmt: skip
    parse_config(data, str(path), environ={KEY_ENV.format(i + 1): "x" for i in range(keys)})
    path.write_text(yaml.safe_dump(data, sort_keys=False))


class KeyLog:
    """One key's admissions per second, from a shared emulator's arrival log (read at the end)."""

    def __init__(self, key: str):
        self.key = key
        self.per_second: dict[int, int] = {}
        self.stats = {"served": 0, "rate_limited": 0, "peak_admitted_per_second": 0}

    @classmethod
    def from_arrivals(cls, log: dict, keys: list[str]) -> list[KeyLog]:
        logs = {key: cls(key) for key in keys}
        names, started = log["keys"], log["started"]
        for _entered, counted, index, admitted in log["rows"]:
            one = logs.get(names[index])
            if one is None:
                continue
            if admitted:
                second = int(counted - started)
                one.per_second[second] = one.per_second.get(second, 0) + 1
                one.stats["served"] += 1
            else:
                one.stats["rate_limited"] += 1
        for one in logs.values():
            one.stats["peak_admitted_per_second"] = max(one.per_second.values(), default=0)
        return list(logs.values())


class CpuMeter:
    """CPU seconds per process over a span: every process of this machine's user but the others'
    benchmarks, grouped by what it is (emulator, batch driver, Ray worker, Ray's own)."""

    def __init__(self) -> None:
        self._before = self._sample()
        self._machine = psutil.cpu_times()  # /proc/stat: the whole machine, processes we cannot see too
        self._started = time.monotonic()

    @staticmethod
    def _sample() -> dict[int, tuple[str, float]]:
        out = {}
        for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            try:
                times, cmd = proc.info["cpu_times"], " ".join(proc.info["cmdline"] or [])[:160]
            except (psutil.Error, TypeError):
                continue
            if times is not None:
                out[proc.info["pid"]] = (cmd, times.user + times.system)
        return out

    def stop(self) -> dict:
        wall, after = time.monotonic() - self._started, self._sample()
        machine = psutil.cpu_times()
        idle = (machine.idle + machine.iowait) - (self._machine.idle + self._machine.iowait)
        machine_busy = (sum(machine) - sum(self._machine) - idle) / wall
        groups: dict[str, float] = {}
        for pid, (cmd, cpu) in after.items():
            used = cpu - self._before.get(pid, (cmd, 0.0))[1]
            if used < 0.05:
                continue
            if "orchestray.emulator" in cmd:
                kind = "emulator"
            elif "orchestray.cli" in cmd:
                kind = "batch driver"
            elif "ray::" in cmd or "default_worker" in cmd:
                kind = "ray worker " + (cmd.split("ray::", 1)[1].split()[0] if "ray::" in cmd else "")
            elif any(word in cmd for word in ("raylet", "gcs_server", "ray/", "dashboard")):
                kind = "ray system"
            elif pid == os.getpid():
                kind = "this benchmark"
            else:
                kind = "other (not this benchmark)"
            groups[kind] = groups.get(kind, 0.0) + used
        total_ours = sum(v for k, v in groups.items() if not k.startswith("other"))
        return {"wall_s": round(wall, 2), "by_process_kind_s": {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
                "ours_cpu_s": round(total_ours, 2), "ours_cores_busy": round(total_ours / wall, 2),
                "all_cores_busy": round(sum(groups.values()) / wall, 2),
                "machine_cores_busy": round(machine_busy, 2)}  # fmt: skip


def steady(logs: list[AdmissionLog]) -> tuple[float, int]:
    """Summed admissions per second over the whole seconds strictly between the first and last
    second any emulator admitted in (their clocks start at their resets, made together)."""
    busy = sorted({s for log in logs for s, c in log.per_second.items() if c})
    if len(busy) < 4:
        return 0.0, 0
    seconds = range(busy[0] + 1, busy[-1])
    return sum(log.per_second.get(s, 0) for log in logs for s in seconds) / len(seconds), len(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=12_000, help="lines in the batch (default: %(default)s)")
    parser.add_argument("--rpm", default="6000,4000,2000", help="each key's limit, comma-separated (default: %(default)s)")
    parser.add_argument("--limit-mode", default="sliding", choices=("sliding", "fixed", "bucket"))
    parser.add_argument("--latency-ms", type=float, default=50.0, help="median latency (default: %(default)s)")
    parser.add_argument("--latency-sigma", type=float, default=1.0, help="lognormal sigma (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="N=3,000")
    parser.add_argument("--one-emulator", action="store_true", help="one emulator process, a quota per API key (equal limits)")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 3_000
    rpms = [int(r) for r in args.rpm.split(",") if r.strip()]
    if args.one_emulator and len(set(rpms)) != 1:
        parser.error("--one-emulator takes equal limits (one `limits` for the listed keys), e.g. --rpm 2400,2400,2400")
    keys = [f"bench-key-{i + 1}" for i in range(len(rpms))]
    for i, key in enumerate(keys):
        os.environ[KEY_ENV.format(i + 1)] = key  # before ray.init: the provider actors read it
    limit_rps = sum(rpms) / 60.0
    ideal_s = args.requests / limit_rps
    timeout_s = max(300.0, 8 * ideal_s)

    load = os.getloadavg()
    neighbours = busy_neighbours()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores shared by 3 emulators, Ray and the batch")
    if neighbours:
        print("warning: other benchmarks, tests or Ray instances are running; figures may be polluted:", *neighbours, sep="\n  ")

    tag = uuid.uuid4().hex[:8]
    name = f"bench-balance-{tag}"
    workdir = Path(tempfile.mkdtemp(prefix="orchestray-bench-balance-"))
    source, output, config = workdir / "in.jsonl", workdir / "out.jsonl", workdir / "config.yaml"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="orchestray", logging_level="WARNING")
        gcs_address = ray.get_runtime_context().gcs_address
        with contextlib.ExitStack() as stack:
            shared = dict(limit_mode=args.limit_mode, latency_ms=args.latency_ms, latency_sigma=args.latency_sigma)
            emulators = [
                stack.enter_context(run_in_process(EmulatorOptions(key_rpm=tuple(zip(keys, rpms)), log_arrivals=True, **shared)))
            ] if args.one_emulator else [
                stack.enter_context(
                    run_in_process(
                        EmulatorOptions(rpm=rpm, limit_mode=args.limit_mode, latency_ms=args.latency_ms,
                                        latency_sigma=args.latency_sigma, seed=i)
                    )
                )
                for i, rpm in enumerate(rpms)
            ]
            write_input(source, args.requests, name)
            if args.one_emulator:
                write_keyed_config(config, name, emulators[0], rpms[0], len(rpms))
            else:
                write_config(config, name, emulators, rpms)
            command = [sys.executable, "-m", "orchestray.cli", "batch", str(source), "-o", str(output), "--config", str(config),
                       "--address", gcs_address, "-q"]  # fmt: skip
            for emulator in emulators:
                emulator.reset()
            logs = [AdmissionLog(e) for e in emulators]
            meter = CpuMeter()
            print(f"{args.requests} lines over {len(rpms)} keys at {' + '.join(map(str, rpms))} rpm, ideal {ideal_s:.1f}s", flush=True)
            try:
                with (workdir / "stdout.txt").open("wb") as out, (workdir / "stderr.txt").open("wb") as err:
                    code, process_wall, _, _ = run_measured(command, timeout_s, out, err, on_tick=lambda: [log.tick() for log in logs])
                cpu = meter.stop()
                stats = [log.tick(final=True) for log in logs]
                if args.one_emulator:
                    logs = KeyLog.from_arrivals(emulators[0].arrivals(), keys)
                    stats = [log.stats for log in logs]
            finally:
                for i in range(len(rpms)):
                    kill_actor(f"{name}:{i + 1}")
                kill_actor(f"route:{name}")
            if code not in (0, 3):
                raise RuntimeError(f"orchestray batch exited with {code}:\n{(workdir / 'stderr.txt').read_text()[-3000:]}")
            summary = json.loads(output.with_name(output.stem + ".summary.json").read_text())
            answered, error_records, duplicates = read_output(output, args.requests)
    finally:
        ray.shutdown()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()

    rate, seconds = steady(logs)
    wall = summary["wall_s"]
    served = sum(s["served"] for s in stats)
    rate_limited = sum(s["rate_limited"] for s in stats)
    key_rows = []
    for i, (rpm, s) in enumerate(zip(rpms, stats)):
        key_rows.append({
            "key": f"{name}:{i + 1}", "rpm": rpm, "limit_share": round(rpm / sum(rpms), 4),
            "served": s["served"], "served_share": round(s["served"] / max(1, served), 4),
            "rate_limited": s["rate_limited"], "peak_admitted_per_second": s["peak_admitted_per_second"],
        })  # fmt: skip
    result = {
        "requests": args.requests,
        "answered": answered,
        "lost": args.requests - answered,
        "error_records": error_records,
        "duplicates": duplicates,
        "wall_s": wall,
        "process_wall_s": round(process_wall, 2),
        "ideal_s": round(ideal_s, 2),
        "summed_limit_rps": round(limit_rps, 2),
        "steady_rps": round(rate, 2),
        "steady_seconds": seconds,
        "steady_fraction": round(rate / limit_rps, 4),
        "overall_fraction": round(answered / wall / limit_rps, 4),
        "rate_limited": rate_limited,
        "rate_limited_fraction": round(rate_limited / args.requests, 5),
        "keys": key_rows,
        "cpu": cpu,
    }

    rows = [("key", "rpm", "share of limit %", "share of calls %", "429s", "peak 1 s")]
    for k in key_rows:
        rows.append((k["key"], str(k["rpm"]), f"{100 * k['limit_share']:.1f}", f"{100 * k['served_share']:.1f}",
                     str(k["rate_limited"]), str(k["peak_admitted_per_second"])))  # fmt: skip
    print()
    print(render_table(rows))
    print()
    print(
        f"{args.requests} lines in {wall:.1f}s (ideal {ideal_s:.1f}s): steady {rate:.1f}/s = {100 * result['steady_fraction']:.1f}% "
        f"of the summed {limit_rps:g}/s, overall {100 * result['overall_fraction']:.1f}%; {rate_limited} 429s "
        f"({100 * result['rate_limited_fraction']:.2f}%), {result['lost']} lost"
    )
    print(f"CPU over the batch ({cpu['wall_s']}s): ours {cpu['ours_cpu_s']}s = {cpu['ours_cores_busy']} cores busy, "
          f"all we can see {cpu['all_cores_busy']}, the machine (/proc/stat) {cpu['machine_cores_busy']} of 2: " + ", ".join(f"{k} {v}s" for k, v in cpu["by_process_kind_s"].items()))
    targets = {
        "steady_fraction": {"value": result["steady_fraction"], "target": ">= 0.97", "passed": result["steady_fraction"] >= 0.97},
        "rate_limited_fraction": {"value": result["rate_limited_fraction"], "target": "<= 0.001", "passed": result["rate_limited_fraction"] <= 0.001},
        "lost": {"value": result["lost"], "target": "== 0", "passed": result["lost"] == 0},
    }
    for key, t in targets.items():
        print(f"balance {key}: {t['value']} (target {t['target']}) {'PASS' if t['passed'] else 'FAIL'}")
    report = {
        **run_header("balance"),
        "load_average_before": [round(x, 2) for x in load],
        "other_processes": neighbours,
        "settings": {
            "requests": args.requests, "rpm": rpms, "limit_mode": args.limit_mode, "one_emulator": args.one_emulator,
            "latency_ms_median": args.latency_ms, "latency_sigma": args.latency_sigma,
            "driver": "orchestray batch CLI subprocess, default 512 in flight",
        },  # fmt: skip
        "result": result,
        "targets": targets,
    }
    write_report(args.output, report)
    return 0 if all(t["passed"] for t in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
