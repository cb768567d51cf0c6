"""`POST /v1/messages`: the Anthropic Messages API at the gateway, over any provider or route.

The body is parsed here, not by FastAPI, so that every error (a malformed body included) comes
back in Anthropic's shape, which Anthropic clients read, rather than the gateway's OpenAI one.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray.exceptions import RayTaskError

from orchestray.anthropic_format import StreamEncoder, error_body, message_body, new_message_id, parse_messages_body
from orchestray.errors import OrchestrayError, ProviderUnavailableError, RequestError, UnknownModelError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.serving._errors import http_error
from orchestray.serving._json import loads
from orchestray.serving._heartbeat import DEFAULT_GRACE_S, DEFAULT_INTERVAL_S, EventStream, Opening, open_stream

__all__ = ["messages_response", "anthropic_shaped"]

Complete = Callable[[ChatRequest], Awaitable[Completion]]
Chunks = Callable[[ChatRequest], AsyncIterator[Chunk]]
Spend = Callable[[Completion, Request], None]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _answer_error(err: BaseException) -> JSONResponse:
    e = http_error(err)
    return _error(e.status, e.message, e.headers)


async def messages_response(
    http: Request,
    has_model: Callable[[str], bool],
    model_names: Callable[[], list[str]],
    complete: Complete,
    chunks: Chunks,
    spend: Spend,
    grace_s: float = DEFAULT_GRACE_S,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> Response:
    """Answer one `POST /v1/messages`: a message, or its stream of server-sent events."""
    message_id = new_message_id()
    try:
        try:
            body: Any = loads(await http.body())
        except ValueError as err:
            raise RequestError(f"the body is not valid JSON: {err}") from None
        request, stream = parse_messages_body(body, message_id)
        if not has_model(request.model):
            raise UnknownModelError(request.model, model_names())
        if stream:
            # The first chunk within a short grace, else the 200 and heartbeats (serving/_heartbeat).
            opening = await open_stream(aiter(chunks(request)), grace_s)
            if opening.ready:
                _refused_at_once(opening)
            encoder = StreamEncoder(message_id, request.model)
            return EventStream(opening, _events(encoder, opening, spend, http, interval_s))
        completion = await complete(request)
    except (OrchestrayError, RayTaskError) as err:
        return _answer_error(err)
    spend(completion, http)
    return JSONResponse(message_body(completion, message_id, request.model),
                        headers={"x-orchestray-cost": f"{completion.cost:.10f}",
                                 "x-orchestray-provider": completion.provider})


def _refused_at_once(opening: Opening[Chunk]) -> None:
    """A stream whose first chunk failed before any byte was sent: its 4xx (or 5xx), not a 200."""
    try:
        opening.first()
    except StopAsyncIteration:
        raise ProviderUnavailableError("the stream ended before its answer") from None


async def _events(encoder: StreamEncoder, opening: Opening[Chunk], spend: Spend, http: Request,
                  interval_s: float) -> AsyncIterator[bytes]:
    yield encoder.start()

    async def rest(first: Chunk) -> AsyncIterator[bytes]:
        chunk = first
        try:
            while not chunk.done:
                yield encoder.piece(chunk)
                chunk = await anext(opening.items)
            yield encoder.finish(chunk.completion)
            spend(chunk.completion, http)
        except (OrchestrayError, RayTaskError, StopAsyncIteration) as err:
            for event in failed(err):
                yield event

    def failed(err: BaseException) -> list[bytes]:
        # The status line is gone; the error travels as an `error` event, as Anthropic's do.
        e = http_error(err)
        return [encoder.error(e.status, e.message)]

    async for piece in opening.then(rest, failed, interval_s):
        yield piece


def anthropic_shaped(refusal: JSONResponse) -> JSONResponse:
    """A refusal of the gateway's guard (key, size, quota) in Anthropic's error shape."""
    message = json.loads(refusal.body)["error"]["message"]
    headers = {k: v for k, v in refusal.headers.items() if k in ("retry-after", "www-authenticate")}
    return _error(refusal.status_code, message, headers)
