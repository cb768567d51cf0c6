"""`/v1/responses`: the OpenAI Responses API at the gateway, over any provider or route.

    POST   /v1/responses                    a Response, or its event stream (`stream: true`)
    GET    /v1/responses/{id}               a stored Response
    DELETE /v1/responses/{id}               forget it
    GET    /v1/responses/{id}/input_items   its input, as a ResponseItemList

The translation is `orchestray.responses_format` (and `responses_stream`); stored responses are
`orchestray.responses_state` over the cluster's store, scoped to the gateway key that made them.
Every error is OpenAI's `{"error": ...}` shape.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.exceptions import RayTaskError

from orchestray.config import Config
from orchestray.errors import OrchestrayError, ProviderUnavailableError, StoreUnavailableError, UnknownModelError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.responses_format import ResponsesCall, new_response_id, output_as_items, parse_responses_body, response_body
from orchestray.responses_state import ResponseArchive, item_page
from orchestray.responses_stream import ResponseStream
from orchestray.serving._errors import error_response, http_error, openai_error_response
from orchestray.serving._json import loads

__all__ = ["ResponsesDoor", "describe_model"]

log = logging.getLogger("orchestray.gateway")

Complete = Callable[[ChatRequest], Awaitable[Completion]]
Chunks = Callable[[ChatRequest], AsyncIterator[Chunk]]
Spend = Callable[[Completion, Request], None]


def describe_model(config: Config, name: str) -> str:
    """A model as a refusal names it: "provider 'gpt' (openai)", "route 'fast' (race over a, b)"."""
    if name in config.routes:
        route = config.routes[name]
        members = getattr(route, "providers", None) or []
        over = f" over {', '.join(members)}" if members else ""
        return f"route {name!r} ({route.pattern}{over})"
    for p in config.providers:
        if p.name == name:
            return f"provider {name!r} ({p.kind})"
    return f"model {name!r}"


def _not_found(response_id: str, param: str | None = None) -> JSONResponse:
    what = "Previous response" if param else "Response"
    code = "previous_response_not_found" if param else "not_found"
    return openai_error_response(404, f"{what} with id {response_id!r} not found.", code, param=param)


def _owner(http: Request) -> str | None:
    return getattr(http.state, "key_id", None)


class ResponsesDoor:
    """The endpoints' work, given the gateway's ways to call models and its store."""

    def __init__(self, config: Config, complete: Complete, chunks: Chunks, spend: Spend,
                 archive: Callable[[], ResponseArchive]):
        self.config = config
        self.complete = complete
        self.chunks = chunks
        self.spend = spend
        self._archive = archive

    async def create(self, http: Request) -> Response:
        response_id = new_response_id()
        try:
            try:
                body: Any = loads(await http.body())
            except ValueError as err:
                return openai_error_response(400, f"the body is not valid JSON: {err}", "invalid_json")
            call = parse_responses_body(body, lambda m: describe_model(self.config, m), response_id)
            if not self.config.has_model(call.request.model):
                raise UnknownModelError(call.request.model, self.config.model_names())
            if call.previous_response_id is not None:
                stored = await self._archive().load(call.previous_response_id, _owner(http))
                if stored is None:
                    return _not_found(call.previous_response_id, "previous_response_id")
                call.with_history(stored.history)
            else:
                stored = None
            history = (stored.history if stored else []) + call.items
            if call.stream:
                chunks = aiter(self.chunks(call.request))
                first = await _first(chunks)
                return StreamingResponse(self._events(call, response_id, history, chunks, first, http),
                                         media_type="text/event-stream", headers={"cache-control": "no-cache"})
            completion = await self.complete(call.request)
        except (OrchestrayError, RayTaskError) as err:
            return error_response(err)
        self.spend(completion, http)
        answer = response_body(call.echo, response_id, _now(), completion=completion)
        await self._keep(call, answer, history, http)
        return JSONResponse(answer, headers={"x-orchestray-cost": f"{completion.cost:.10f}",
                                             "x-orchestray-provider": completion.provider})

    async def _events(self, call: ResponsesCall, response_id: str, history: list[dict[str, Any]],
                      chunks, first: Chunk, http: Request) -> AsyncIterator[bytes]:
        stream = ResponseStream(call.echo, response_id)
        for event in stream.start():
            yield _sse(event)
        try:
            chunk = first
            while not chunk.done:
                for event in stream.piece(chunk):
                    yield _sse(event)
                chunk = await anext(chunks)
            for event in stream.finish(chunk.completion):
                yield _sse(event)
            self.spend(chunk.completion, http)
        except (OrchestrayError, RayTaskError, StopAsyncIteration) as err:
            e = http_error(err)
            for event in stream.fail(e.status, e.message):
                yield _sse(event)
            return
        await self._keep(call, stream.final, history, http)

    async def _keep(self, call: ResponsesCall, answer: dict[str, Any], history: list[dict[str, Any]],
                    http: Request) -> None:
        if not call.store:
            return
        try:
            await self._archive().save(_owner(http), answer, call.items, history + output_as_items(answer["output"]))
        except StoreUnavailableError as err:
            # The answer is paid for and given; only its continuation is lost, and said so.
            log.warning("response %s answered but not stored: %s", answer["id"], err)

    async def retrieve(self, response_id: str, http: Request) -> JSONResponse:
        stored = await self._archive().load(response_id, _owner(http))
        if stored is None:
            return _not_found(response_id)
        return JSONResponse(stored.response)

    async def delete(self, response_id: str, http: Request) -> JSONResponse:
        if not await self._archive().delete(response_id, _owner(http)):
            return _not_found(response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(self, response_id: str, http: Request) -> JSONResponse:
        query = http.query_params
        try:
            limit = int(query.get("limit", 20))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return openai_error_response(400, "limit: must be an integer from 1 to 100", "invalid_request", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            return openai_error_response(400, "order: must be asc or desc", "invalid_request", param="order")
        stored = await self._archive().load(response_id, _owner(http))
        if stored is None:
            return _not_found(response_id)
        return JSONResponse(item_page(stored.input_items, limit=limit, order=order, after=query.get("after")))


async def _first(chunks) -> Chunk:
    """The stream's first chunk, before any byte is sent: a refusal gets its 4xx."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise ProviderUnavailableError("the stream ended before its answer") from None


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _now() -> int:
    return int(time.time())

