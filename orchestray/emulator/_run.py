"""Ways to run the emulator: blocking (the CLI), in a background thread (sync tests), in a process
(benchmarks, so the server does not share the client's core and GIL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from ._options import API_KEY_ENV, EmulatorOptions, options_to_args
from ._server import Emulator

__all__ = ["EmulatorHandle", "serve", "run_in_thread", "run_in_process"]

_STARTUP_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_URL = re.compile(r"http://\S+")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve(options: EmulatorOptions, *, announce: Callable[[str], None] | None = None) -> None:
    """Run the emulator until SIGINT or SIGTERM. Prints the base URLs once it listens."""
    announce = announce or (lambda line: print(line, flush=True))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(options, announce))


async def _serve(options: EmulatorOptions, announce: Callable[[str], None]) -> None:
    emulator = Emulator(options)
    url = await emulator.start()
    # The first line carries the URL: run_in_process reads it from there.
    announce(f"orchestray emulator listening on {url}")
    announce(f"  OpenAI SDK:    base_url={emulator.openai_base_url}")
    announce(f"  Anthropic SDK: base_url={emulator.anthropic_base_url}")
    announce(f"  stats: GET {url}/stats   reset: POST {url}/reset   config: POST {url}/config")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


class EmulatorHandle:
    """A running emulator seen from outside: its URLs, and its control endpoints over HTTP."""

    def __init__(self, base_url: str, *, pid: int | None = None):
        self.base_url = base_url
        self.pid = pid  # the server's process when it runs in one
        # Loopback only: never through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"EmulatorHandle({self.base_url!r})"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with self._opener.open(request, timeout=10) as response:
            return json.load(response)

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def arrivals(self) -> dict:
        """Every call since the last reset, when started with `log_arrivals` (see `_keys`)."""
        return self._call("GET", "/arrivals")

    def reset(self) -> dict:
        return self._call("POST", "/reset", {})

    def configure(self, **changes) -> dict:
        """Change rpm, tpm, latency_ms, fault_rate, hang_rate, ... while it runs."""
        return self._call("POST", "/config", changes)


@contextlib.contextmanager
def run_in_thread(options: EmulatorOptions | None = None) -> Iterator[EmulatorHandle]:
    """Run an emulator on its own event loop in a daemon thread, for synchronous tests."""
    emulator = Emulator(options)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[str] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                started.set_result(loop.run_until_complete(emulator.start()))
            except BaseException as err:
                started.set_exception(err)
                return
            loop.run_forever()
        finally:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="orchestray-emulator", daemon=True)
    thread.start()
    try:
        url = started.result(timeout=_STARTUP_TIMEOUT_S)
    except BaseException:
        thread.join(_STOP_TIMEOUT_S)
        raise
    try:
        yield EmulatorHandle(url)
    finally:
        with contextlib.suppress(concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(_STOP_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)


@contextlib.contextmanager
def run_in_process(options: EmulatorOptions | None = None) -> Iterator[EmulatorHandle]:
    """Run an emulator in a child process (`python -m orchestray.emulator`) and stop it after."""
    options = options or EmulatorOptions()
    env = dict(os.environ)
    env.pop(API_KEY_ENV, None)
    if options.api_key:
        env[API_KEY_ENV] = options.api_key
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestray.emulator", *options_to_args(options)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        url = _read_url(process, _STARTUP_TIMEOUT_S)
        yield EmulatorHandle(url, pid=process.pid)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()


def _read_url(process: subprocess.Popen, timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            line = process.stdout.readline()
            if not line:
                status = process.wait()
                raise RuntimeError(f"the emulator process exited with status {status} before listening")
            if match := _URL.search(line):
                return match.group(0)
    raise TimeoutError(f"the emulator process did not start listening within {timeout_s:.0f}s")
