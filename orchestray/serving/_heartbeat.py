"""Streams that speak before their answer begins, so that a client who leaves is noticed.

A stream's first chunk is awaited for a short grace before the status line is sent: a request the
provider refuses at once (a field it cannot honour, an oversized prompt) still gets its 4xx. When
the first chunk takes longer (the provider thinking, the limiter queueing), the 200 and the SSE
headers go out and an SSE comment (`: keepalive`), which every SSE client skips, follows every
`interval_s` until the answer begins.

Why: an ingress can miss a client's hang-up while it waits on the replica (HAProxy 2.8 does, for
some connections: issue 14). Nothing reaches the replica then, and the provider call runs to its
end, paid for. Once bytes flow, the ingress must write to the client; a gone client makes that
write fail, the ingress closes its side, the stream's generator is closed here, and the provider
call is cancelled (its unused token budget returned). A failure after the 200 travels as the
door's own error event.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

from starlette.responses import StreamingResponse

__all__ = ["HEARTBEAT", "Opening", "EventStream", "open_stream", "DEFAULT_GRACE_S", "DEFAULT_INTERVAL_S"]

T = TypeVar("T")

HEARTBEAT = b": keepalive\n\n"
# Refusals come back within milliseconds; a model's first token takes longer than this.
DEFAULT_GRACE_S = 0.25
# How long a gone client can go unnoticed while the answer has not begun.
DEFAULT_INTERVAL_S = 1.0


class Opening(Generic[T]):
    """A stream whose first item is awaited in a task of its own."""

    def __init__(self, items: AsyncIterator[T], first: asyncio.Future) -> None:
        self.items = items
        self._first = first

    @property
    def ready(self) -> bool:
        """The first item (or the error instead of it) has come."""
        return self._first.done()

    def first(self) -> T:
        """The first item; raises what the stream raised (StopAsyncIteration if it was empty)."""
        return self._first.result()

    async def close(self) -> None:
        """Stop waiting and close the stream: the provider call under it is cancelled."""
        if not self._first.done():
            self._first.cancel()
            with contextlib.suppress(BaseException):
                await self._first
        closer = getattr(self.items, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()

    async def heartbeats(self, interval_s: float = DEFAULT_INTERVAL_S) -> AsyncIterator[bytes]:
        """A comment every `interval_s` until the first item has come (or failed)."""
        while not self._first.done():
            done, _ = await asyncio.wait({self._first}, timeout=interval_s)
            if not done:
                yield HEARTBEAT

    async def then(self, rest: Callable[[T], AsyncIterator[bytes]], failed: Callable[[BaseException], list[bytes]],
                   interval_s: float = DEFAULT_INTERVAL_S) -> AsyncIterator[bytes]:
        """The body of a stream whose 200 is already sent: heartbeats while the first item is
        awaited, then `rest(first)`; if the first item fails, `failed(error)`'s events. When the
        client leaves (this generator closed or cancelled), the stream is closed."""
        try:
            async for beat in self.heartbeats(interval_s):
                yield beat
            try:
                first = self.first()
            except asyncio.CancelledError:
                raise
            except BaseException as err:  # the door's error event, never a broken connection
                for event in failed(err):
                    yield event
                return
            async with contextlib.aclosing(rest(first)) as pieces:
                async for piece in pieces:
                    yield piece
        finally:
            await self.close()


async def open_stream(items: AsyncIterator[T], grace_s: float = DEFAULT_GRACE_S) -> Opening[T]:
    """Start awaiting the first item and wait up to `grace_s` for it."""
    first = asyncio.ensure_future(anext(items))
    opening = Opening(items, first)
    try:
        await asyncio.wait({first}, timeout=grace_s)
    except BaseException:  # the handler itself cancelled: the client is gone already
        await opening.close()
        raise
    return opening


class EventStream(StreamingResponse):
    """A `text/event-stream` response that closes its opening however it ends: finished, the
    client gone mid-stream, or gone before the body was begun (a generator never started runs
    no `finally`)."""

    def __init__(self, opening: Opening[Any], content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._opening = opening

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._opening.close()
