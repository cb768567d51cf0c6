"""Event-driven orchestration: handlers on event names, `<name>.completed` / `<name>.failed` after each, a bounded queue.

    bus = EventBus(max_pending=100)

    @bus.on("uploaded")
    async def extract(doc):
        text = await model.complete(...)
        await bus.emit("extracted", text)      # handlers may emit further events: a chain
        return text

    async with bus:                            # runs the dispatcher
        await bus.emit("uploaded", document)   # waits while `max_pending` events are open
        await bus.join()                       # until every event and its handlers are done

Backpressure: an event is open from `emit` until its handlers and its outcome events are done;
an emit from outside the handlers waits while `max_pending` are open. Emits from inside a
handler (a chain's next event, the outcome events) never wait, so a chain cannot deadlock on its
own bound; it adds at most its own fan-out above it.

Emitting an event runs each of its handlers (sync or async, concurrently) with the event's data;
each handler's end emits `<name>.completed` with `HandlerResult(event, handler, result)` or
`<name>.failed` with `HandlerResult(event, handler, error=...)`. A handler's failure never stops
the other handlers or the bus. Completion events get no completion events of their own, so a
chain ends. `bus.log` keeps the last `keep` events dispatched, by name, for tracing.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EventBus", "HandlerResult"]


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """What a `.completed` or `.failed` event carries."""

    event: str
    handler: str
    result: Any = None
    error: BaseException | None = None


_IN_HANDLER: contextvars.ContextVar[bool] = contextvars.ContextVar("orchestray_in_handler", default=False)


def _is_outcome(name: str) -> bool:
    return name.endswith(".completed") or name.endswith(".failed")


class EventBus:
    """Handlers by event name, a bounded queue of emitted events and a dispatcher (module docstring)."""

    def __init__(self, max_pending: int = 1000, keep: int = 1000):
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self.handlers: dict[str, list[Callable[[Any], Any]]] = {}
        self.log: deque[str] = deque(maxlen=keep)
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._dispatcher: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._open = 0  # events queued or being handled
        self._idle: asyncio.Event | None = None
        self._room: asyncio.Event | None = None  # set while fewer than max_pending are open
        self.waited = 0  # emits that had to wait for room

    def on(self, name: str, handler: Callable[[Any], Any] | None = None):
        """Register `handler` for `name`; without one, a decorator."""
        def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
            self.handlers.setdefault(name, []).append(fn)
            return fn
        return register(handler) if handler is not None else register

    # --- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._dispatcher is None:
            self._queue = asyncio.Queue()
            self._idle = asyncio.Event()
            self._idle.set()
            self._room = asyncio.Event()
            self._room.set()
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def stop(self) -> None:
        """Finish what was emitted, then stop the dispatcher."""
        if self._dispatcher is None:
            return
        await self.join()
        self._dispatcher.cancel()
        try:
            await self._dispatcher
        except asyncio.CancelledError:
            pass
        self._dispatcher = None

    async def __aenter__(self) -> EventBus:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def emit(self, name: str, data: Any = None) -> None:
        """Queue an event; from outside a handler, waits while `max_pending` are open (backpressure)."""
        if self._queue is None:
            await self.start()
        assert self._queue is not None and self._idle is not None and self._room is not None
        if not _IN_HANDLER.get():
            if self._open >= self.max_pending:
                self.waited += 1
            while self._open >= self.max_pending:
                self._room.clear()
                await self._room.wait()
        self._open += 1
        self._idle.clear()
        self._queue.put_nowait((name, data))

    @property
    def open(self) -> int:
        """Events emitted and not yet fully handled."""
        return self._open

    async def join(self) -> None:
        """Wait until every emitted event, and every event its handlers emitted, is handled."""
        if self._idle is not None:
            await self._idle.wait()

    async def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            name, data = await self._queue.get()
            self.log.append(name)
            handlers = list(self.handlers.get(name, ()))
            # Handlers run as their own tasks, so one that emits into a full queue waits for
            # room while the dispatcher keeps draining it.
            task = asyncio.ensure_future(self._handle(name, data, handlers))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle(self, name: str, data: Any, handlers: list[Callable[[Any], Any]]) -> None:
        _IN_HANDLER.set(True)  # this task's context only: the handlers' emits never wait
        try:
            outcomes = await asyncio.gather(*(self._one(fn, data) for fn in handlers))
            if not _is_outcome(name):
                for fn, (result, error) in zip(handlers, outcomes):
                    handler = getattr(fn, "__name__", repr(fn))
                    if error is None:
                        await self.emit(f"{name}.completed", HandlerResult(name, handler, result))
                    else:
                        await self.emit(f"{name}.failed", HandlerResult(name, handler, error=error))
        finally:
            self._open -= 1
            if self._open < self.max_pending and self._room is not None:
                self._room.set()
            if self._open == 0 and self._idle is not None:
                self._idle.set()

    @staticmethod
    async def _one(fn: Callable[[Any], Any], data: Any) -> tuple[Any, BaseException | None]:
        try:
            result = fn(data)
            if inspect.isawaitable(result):
                result = await result
            return result, None
        except Exception as err:  # a failing handler is reported, never allowed to stop the others
            return None, err
