"""How many abandoned calls through the gateway reach the provider as a cancel (issue 14).

One Serve gateway (one replica) over one openai-kind provider whose emulator answers after
--latency-ms; the client gives up in one of three ways, --n times each, one call at a time:

  plain       a plain request, the connection dropped after --after-s (before any answer)
  stream      a stream (`"stream": true`), dropped after --after-s, before its first chunk
  early-close the openai SDK streams, reads the first chunk and closes the stream; the emulator
              then spreads the rest of the answer over --latency-ms

A hang-up is "cancelled" when the emulator counts it cancelled (its connection from the provider
actor was closed before the answer was complete), "served" when the emulator answered in full.
After each hang-up the probe waits for the emulator to have nothing in flight.

The ingress is the environment's: RAY_SERVE_ENABLE_HA_PROXY=1 (the default here, with the rest of
orchestray/_haproxy.py, as `serve run serve_app:app`) is HAProxy, RAY_SERVE_ENABLE_HA_PROXY=0
Serve's Python proxy. Start it under the
machine's Ray lock:

    flock /tmp/orchestray-ray.lock python bench/hangup.py --n 10
    RAY_SERVE_ENABLE_HA_PROXY=0 flock /tmp/orchestray-ray.lock python bench/hangup.py --n 10
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from orchestray._haproxy import set_haproxy_defaults  # noqa: E402

# Before Ray starts (Serve reads them): the ingress settings `serve run serve_app:app` ships, each
# one the environment does not set already.
set_haproxy_defaults()

import openai
import ray
import requests
from ray import serve

from orchestray.cluster import NAMESPACE
from orchestray.config import parse_config
from orchestray.emulator import EmulatorOptions, run_in_process
from orchestray.serving import app_for

from _common import render_table, run_header, write_report

RESULTS = Path(__file__).parent / "results" / "hangup.json"
KINDS = ("plain", "stream", "early-close")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {timeout_s:.0f}s")


def hang_up(kind: str, base: str, model: str, after_s: float) -> str:
    """One abandoned call; what the client saw, for the record."""
    body = {"model": model, "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 64}
    if kind == "early-close":
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with client.chat.completions.create(**body, stream=True) as stream:
            for _ in stream:
                break  # the first chunk, then the `with` closes the stream
        client.close()
        return "first chunk read, stream closed"
    stream = kind == "stream"
    try:
        with requests.post(f"{base}/v1/chat/completions", json={**body, "stream": stream}, stream=stream,
                           timeout=(5, after_s)) as response:
            seen = f"status {response.status_code}"
            for _ in response.iter_content(None):
                seen += ", bytes"
            return seen + ", answered before the hang-up"
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as err:
        return f"hung up ({type(err).__name__})"


def settle(emulator, before: dict, timeout_s: float) -> dict:
    """The emulator's counts once this call has ended there (answered or cancelled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = emulator.stats()
        done = (now["served"] + now["cancelled"]) - (before["served"] + before["cancelled"])
        if (done >= 1 and now["in_flight"] == 0) or time.monotonic() > deadline:
            return {k: now[k] - before[k] for k in ("served", "cancelled")}
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="hang-ups of each kind (default: %(default)s)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of: " + ", ".join(KINDS))
    parser.add_argument("--latency-ms", type=float, default=3000.0, help="the emulator's answer time")
    parser.add_argument("--after-s", type=float, default=0.5, help="when the client hangs up (plain, stream)")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    ingress = "haproxy" if os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1" else "python proxy"
    model = "hangup-probe"
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING",
             log_to_driver=False)
    try:
        # The per-token time spreads the streamed pieces over the latency (the early close leaves
        # the rest unsent); a plain answer comes whole after the latency either way.
        options = EmulatorOptions(latency_ms=args.latency_ms, ms_per_output_token=args.latency_ms / 8)
        with run_in_process(options) as emulator:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            base = f"http://127.0.0.1:{port}"
            config = parse_config({
                "providers": [{"name": model, "kind": "openai", "model": "sim-small",
                               "base_url": emulator.openai_base_url, "max_retries": 0}],
                "serve": {"num_replicas": 1, "replica_num_cpus": 0, "allow_unauthenticated": True},
            }, "hangup")
            try:
                serve.run(app_for(config), name="hangup", route_prefix="/", blocking=False)
                wait_ready(f"{base}/readyz")
                print(f"ingress: {ingress}; Serve on {base}; emulator latency {args.latency_ms:.0f} ms", flush=True)
                for kind in kinds:
                    for i in range(args.n):
                        before = emulator.stats()
                        started = time.monotonic()
                        seen = hang_up(kind, base, model, args.after_s)
                        counted = settle(emulator, before, timeout_s=args.latency_ms / 1000 + 10)
                        outcome = ("cancelled" if counted["cancelled"] == 1 and counted["served"] == 0 else
                                   "served" if counted["served"] == 1 and counted["cancelled"] == 0 else f"other {counted}")
                        row = {"kind": kind, "i": i, "client": seen, "outcome": outcome,
                               "ended_after_s": round(time.monotonic() - started, 2)}
                        rows[kind].append(row)
                        print(f"  {kind} #{i}: {seen}; at the emulator: {outcome} ({row['ended_after_s']} s)", flush=True)
            finally:
                serve.shutdown()
                try:
                    ray.kill(ray.get_actor(model, namespace=NAMESPACE), no_restart=True)
                except ValueError:
                    pass
    finally:
        ray.shutdown()

    summary = {k: {"n": len(v), "cancelled": sum(r["outcome"] == "cancelled" for r in v)} for k, v in rows.items()}
    print()
    print(f"ingress: {ingress}")
    print(render_table([("kind", "hang-ups", "cancelled at the emulator")]
                       + [(k, str(s["n"]), f"{s['cancelled']}/{s['n']}") for k, s in summary.items()]))
    write_report(args.output, {**run_header("hangup"), "ingress": ingress,
                               "settings": {"latency_ms": args.latency_ms, "after_s": args.after_s, "n": args.n},
                               "summary": summary, "calls": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
