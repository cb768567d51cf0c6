"""When a request's headers reach the socket: told to whoever waits on it (the rate limiter's window).

A provider counts a call when the call reaches it, not when a limiter lets it go, and the SDK,
httpx and the event loop may hold a call several milliseconds in between: enough for a sliding
window to see one call too many. The openai and anthropic SDKs' aiohttp transport
(`DefaultAioHttpClient`) writes each request through an aiohttp `ClientSession`, whose trace
signal `on_request_headers_sent` fires right after the headers are written: the nearest point
to the provider this process sees. httpx's own `request` event hook fires before the SDK's
transport even takes the request, so it misses the part of the delay that is aiohttp's.

The trace callback runs in the task that sent the request, so a context variable set around the
backend call tells it whose send it is: `sending(callback)` in the provider, `stamp_sends(client)`
once in a backend that built its own SDK client.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import aiohttp

__all__ = ["sending", "stamp_sends"]

_ON_SENT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("orchestray_on_sent", default=None)


async def _headers_sent(session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestHeadersSentParams) -> None:
    callback = _ON_SENT.get()
    if callback is not None:
        callback()


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    trace.freeze()
    return trace


_TRACE = _trace()


@contextmanager
def sending(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` when a request sent by this task, inside the block, has its headers written."""
    token = _ON_SENT.set(callback)
    try:
        yield
    finally:
        _ON_SENT.reset(token)


def stamp_sends(sdk_client: Any) -> bool:
    """Make an openai/anthropic SDK client on the aiohttp transport report its sends; False
    (nothing changed) for any other transport, whose sends then count from admission."""
    transport = getattr(getattr(sdk_client, "_client", None), "_transport", None)
    get_client = getattr(type(transport), "get_client", None)
    if get_client is None or getattr(transport, "client", None) is not None:
        return False  # not the SDK's aiohttp transport, or a session the caller built: leave it

    def session() -> aiohttp.ClientSession:
        # The transport's own session (its connector, limits and TLS), with the trace added. The
        # session reads its trace configs at each request, so appending after it is built works.
        transport.client = None
        built = get_client(transport)
        built.trace_configs.append(_TRACE)
        return built

    transport.client = session
    return True
