"""Where a c=1 request through the gateway spends its time: py-spy on the replica and the actor.

Starts what bench/serve.py's (b) cell measures (one Gateway replica on the HAProxy ingress, one
openai-kind provider actor, the emulator at zero latency in its own process), sends requests one
at a time for --seconds from one aiohttp client, and meanwhile records the Gateway replica and the
provider actor with `py-spy record` (py-spy from PyPI; it needs ptrace rights on the processes).
Writes one folded-stack file per process (`--output-dir`) and prints each one's top frames by
own time and the functions on most stacks.

    flock /tmp/orchestray-ray.lock python bench/profile_serve.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")

import aiohttp
import ray
from ray import serve

from orchestray.cluster import NAMESPACE
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.serving import app_for

from _common import question
from hangup import free_port, wait_ready

OUT = Path(__file__).parent / "results" / "profile"


def pid_of(needle: str) -> int:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, args = line.strip().split(None, 1)
        if needle in args and "py-spy" not in args:
            return int(pid)
    raise LookupError(f"no process like {needle!r}")


async def drive(url: str, model: str, seconds: float) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            body = {"model": model, "messages": [{"role": "user", "content": question(i)}], "max_tokens": 32}
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)
            i += 1
    return latencies


def summary(folded: Path, top: int = 25) -> str:
    own: collections.Counter = collections.Counter()
    anywhere: collections.Counter = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    lines = [f"{folded.name}: {total} samples", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f[:150]}" for f, n in own.most_common(top)]
    lines += ["  on the stack:"]
    lines += [f"    {100 * n / total:5.1f}%  {f[:150]}" for f, n in anywhere.most_common(top * 2)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--output-dir", type=Path, default=OUT)
    parser.add_argument("--idle", action="store_true", help="include idle frames (waiting) in the samples")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = "profile-provider"
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING",
             log_to_driver=False)
    try:
        with run_in_process(EmulatorOptions(latency_ms=0.0)) as emulator:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            base = f"http://127.0.0.1:{port}"
            config = parse_config({
                "providers": [{"name": name, "kind": "openai", "model": "sim-small", "base_url": emulator.openai_base_url}],
                "serve": {"num_replicas": 1, "replica_num_cpus": 0, "allow_unauthenticated": True},
            }, "profile")
            try:
                serve.run(app_for(config), name="profile", route_prefix="/", blocking=False)
                wait_ready(f"{base}/readyz")
                url = f"{base}/v1/chat/completions"
                asyncio.run(drive(url, name, 3.0))  # warm-up
                targets = {"replica": pid_of("ServeReplica:profile:Gateway"), "provider": pid_of("ProviderActor")}
                spies = {}
                for label, pid in targets.items():
                    out = args.output_dir / f"{label}.folded"
                    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate",
                           str(args.rate), "--format", "raw", "--output", str(out), "--nonblocking"]
                    if args.idle:
                        cmd.append("--idle")
                    spies[label] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
                time.sleep(1.0)
                latencies = sorted(asyncio.run(drive(url, name, args.seconds - 1.0)))
                for label, (spy, out) in spies.items():
                    _, err = spy.communicate(timeout=60)
                    if spy.returncode != 0:
                        print(f"py-spy on {label} failed: {err.decode()[-500:]}")
                p50 = latencies[len(latencies) // 2] * 1000
                print(f"{len(latencies)} requests at c=1 while profiling: p50 {p50:.2f} ms")
                for label, (_, out) in spies.items():
                    if out.exists():
                        print(summary(out))
            finally:
                serve.shutdown()
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except ValueError:
                    pass
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
