"""The Ray Serve application: an OpenAI-compatible gateway over the providers and coordinators.

    HTTP ─▶ HAProxy ─▶ Gateway replica (FastAPI ingress; routes run here) ─▶ provider actors
                                                        (shared, named: limits hold cluster-wide)

A request for a provider goes straight from the gateway to that provider's actor; a request for a
route, or an ad-hoc pattern, runs the pattern in the gateway replica against the same provider
actors. Every hop between processes costs about as much CPU as the provider's HTTP call itself, so
no request takes more than the one to the provider actors, which keep the limits.
"""


import asyncio
import json
import os
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestray.actors.multiplex import LOST_RETRY_AFTER_S
from orchestray.actors.quota import KeyQuota, key_quota
from orchestray.config import Config, load_config
from orchestray.errors import ConfigError, OrchestrayError, ProviderUnavailableError, RequestError, UnknownModelError
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.telemetry import continue_trace
from orchestray.openai_format import ChatCompletionBody, chunk_body, completion_body, describe_errors, validation_message
from orchestray.serving._auth import Guard, gateway_keys, open_gateway_refusal, record_spend, secure
from orchestray.serving._bodies import PATTERN_BODIES, PatternBody, openai_error
from orchestray.serving._errors import error_response, http_error, openai_error_response as _error, status_of
from orchestray.serving._heartbeat import EventStream, open_stream
from orchestray.serving._json import StrictJSONRoute
from orchestray.serving._messages import messages_response
from orchestray.serving._responses import ResponsesDoor
from orchestray.responses_state import ResponseArchive

# KeyQuota and open_gateway_refusal live in actors/quota.py and serving/_auth.py; named here too,
# where callers have always found them.
__all__ = ["build_app", "app_for", "open_gateway_refusal", "Gateway", "KeyQuota", "error_response", "status_of"]

api = FastAPI(
    title="orchestray",
    description="OpenAI-compatible chat completions over providers and orchestration patterns.",
    version="0.1.0",
)
api.router.route_class = StrictJSONRoute  # NaN and Infinity are refused as the other doors refuse them


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = err.errors()
    invalid = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid:
        why = (invalid[0].get("ctx") or {}).get("error")
        return _error(400, f"the body is not valid JSON: {why}" if why else "the body is not valid JSON", "invalid_json")
    # The field at fault goes in OpenAI's `param`, as a path into the body (`messages[0].content`).
    message, param = describe_errors(errors, err.body)
    return _error(400, message, "invalid_request", param=param)


@api.exception_handler(StarletteHTTPException)
async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return _error(err.status_code, str(err.detail), code)


@api.exception_handler(OrchestrayError)
async def _orchestray(request: Request, err: OrchestrayError) -> JSONResponse:
    return error_response(err)


@api.exception_handler(Exception)
async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    # Never a stack trace or a bare 500 page: a short JSON error with an id to find in the logs.
    incident = uuid.uuid4().hex[:12]
    print(f"orchestray gateway: unexpected error {incident}: {type(err).__name__}: {err}")
    return _error(500, f"internal error (incident {incident})", "internal_error")


api.add_middleware(Guard)


def _sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


def _stream_failed(err: BaseException) -> list[bytes]:
    """A stream that failed after its 200 (and heartbeats): the error as an event, then [DONE]."""
    if isinstance(err, StopAsyncIteration):
        err = ProviderUnavailableError("the stream ended before its answer")
    e = http_error(err)
    return [_sse(openai_error(e.status, e.message, e.code, e.param)), _sse(b"[DONE]")]


def models_body(config: Config) -> dict[str, Any]:
    """OpenAI's model list: providers and routes, without secrets."""
    created = 0
    data = [{"id": p.name, "object": "model", "created": created, "owned_by": "orchestray",
             "orchestray": {"kind": "provider", "provider_kind": p.kind, "model": p.model}}
            for p in config.providers]
    data += [{"id": name, "object": "model", "created": created, "owned_by": "orchestray",
              "orchestray": {"kind": "route", "pattern": route.pattern}}
             for name, route in config.routes.items()]
    return {"object": "list", "data": data}


def _pattern_endpoint(name: str, body_model: type[PatternBody]):
    """`POST /v1/patterns/NAME`, as a method of the Gateway (Serve binds routes by qualname)."""

    async def endpoint(self, body, http: Request):
        return await self._pattern(body, http)

    endpoint.__annotations__ = {"body": body_model, "http": Request}
    endpoint.__name__ = f"pattern_{name}"
    endpoint.__qualname__ = f"Gateway.pattern_{name}"
    return api.post(f"/v1/patterns/{name}", summary=body_model.__doc__.splitlines()[0])(endpoint)


@serve.deployment(name="Gateway")
@serve.ingress(api)
class Gateway:
    def __init__(self, config_json: str):
        from orchestray.actors.directory import ModelDirectory

        self.config = Config.model_validate_json(config_json)
        self.models = ModelDirectory(self.config)
        for name in self.config.model_names():
            self.models.get(name)  # every actor found now, not on the event loop later
        self.providers = {p.name: self.models.get(p.name) for p in self.config.providers}
        settings = self.config.serve
        keys = gateway_keys(settings.api_keys_env)
        refusal = open_gateway_refusal(self.config, keys)
        if refusal is not None:
            raise ConfigError(refusal)
        quota = key_quota(settings.requests_per_minute_per_key, settings.spend_per_hour_per_key) if keys else None
        secure(keys, settings.max_body_bytes, quota)
        self.responses = ResponsesDoor(self.config, self._complete, self._chunks, self._spend, self._archive)
        self._archived: ResponseArchive | None = None

    def _archive(self) -> ResponseArchive:
        if self._archived is None:
            self._archived = ResponseArchive.over(self.models.store(), self.config.responses)
        return self._archived

    # Health

    @api.get("/healthz", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="Readiness: every provider actor answers")
    async def readyz(self):
        async def ping(name, handle):
            try:
                await asyncio.wait_for(handle.actor.ping.remote(), timeout=5)
                return name, "ready"
            except Exception as err:  # an unready provider is reported, not raised
                return name, f"not ready: {type(err).__name__}"

        results = dict(await asyncio.gather(*(ping(n, h) for n, h in self.providers.items())))
        ready = all(v == "ready" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "providers": results},
                            status_code=200 if ready else 503)

    # Models

    @api.get("/v1/models", summary="Providers and routes (no secrets)")
    async def models(self) -> dict[str, Any]:
        return models_body(self.config)

    # Chat completions

    @api.post("/v1/chat/completions", summary="OpenAI-compatible chat completion; model is a provider or a route")
    async def chat_completions(self, body: ChatCompletionBody, http: Request):
        continue_trace(http.headers.get("traceparent"))  # the caller's W3C trace, when it sent one
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        request = body.to_request(request_id)
        if not self.config.has_model(request.model):
            raise UnknownModelError(request.model, self.config.model_names())
        if body.stream:
            return await self._event_stream(self._chunks(request), request, request_id, body, http)
        completion = await self._complete(request)
        return self._answer(completion, request_id, request.model, http)

    async def _event_stream(self, chunks, request: ChatRequest, request_id: str, body: ChatCompletionBody,
                            http: Request, model: str | None = None) -> EventStream:
        """The first chunk within a short grace, else the 200 and heartbeats (serving/_heartbeat)."""
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        opening = await open_stream(chunks)
        if opening.ready:
            self._first_chunk(opening)  # refused before the answer began: its 4xx

        def rest(first: Chunk):
            return self._stream(request, request_id, include_usage, http, opening.items, first, model)

        return EventStream(opening, opening.then(rest, _stream_failed))

    async def _complete(self, request: ChatRequest) -> Completion:
        """A provider's actor straight from this replica; a route run in this replica against them."""
        return await self.models.get(request.model).complete(request)

    @staticmethod
    def _spend(completion: Completion, http: Request) -> None:
        record_spend(http, completion.cost)

    def _answer(self, completion: Completion, request_id: str, model: str, http: Request) -> JSONResponse:
        self._spend(completion, http)
        return JSONResponse(completion_body(completion, request_id, model=model),
                            headers={"x-orchestray-cost": f"{completion.cost:.10f}",
                                     "x-orchestray-provider": completion.provider})

    def _chunks(self, request: ChatRequest):
        return aiter(self.models.get(request.model).stream(request))

    @staticmethod
    def _first_chunk(opening) -> Chunk:
        """The stream's first chunk, come before any byte was sent: a request refused before the
        answer began (a field the provider cannot honour, an unknown model) gets its 4xx."""
        try:
            return opening.first()
        except StopAsyncIteration:
            raise ProviderUnavailableError("the stream ended before its answer") from None

    async def _stream(self, request: ChatRequest, request_id: str, include_usage: bool, http: Request,
                      chunks, first: Chunk, model: str | None = None):
        """OpenAI's chunk sequence: per choice a role chunk, then its content, refusal and
        tool-call deltas; at the end one finish chunk per choice (with its logprobs), then the
        usage chunk when asked for, then [DONE]. `model` names the answer (default: the request's)."""
        created = int(time.time())
        model = model or request.model
        opened: set[int] = set()

        def piece(chunk: Chunk) -> bytes:
            role = chunk.choice not in opened
            opened.add(chunk.choice)
            return _sse(chunk_body(request_id, model, created, delta=chunk.delta, role=role, choice=chunk.choice,
                                   tool_calls=chunk.tool_calls, refusal=chunk.refusal))

        try:
            chunk = first
            while not chunk.done:
                yield piece(chunk)
                chunk = await anext(chunks)
            completion = chunk.completion
            for choice in completion.choices():
                if choice.index not in opened:
                    yield piece(Chunk(choice=choice.index))
                yield _sse(chunk_body(request_id, model, created, finish_reason=choice.finish_reason,
                                      choice=choice.index, logprobs=choice.logprobs))
            if include_usage:
                yield _sse(chunk_body(request_id, model, created, completion=completion))
            self._spend(completion, http)
        except (OrchestrayError, StopAsyncIteration) as err:
            # Headers are gone; the error travels as an event, as OpenAI's streams do.
            e = http_error(err)
            yield _sse(openai_error(e.status, e.message, e.code, e.param))
        yield _sse(b"[DONE]")

    # Anthropic messages

    @api.post("/v1/messages", summary="Anthropic-compatible messages (JSON or SSE); model is a provider or a route")
    async def messages(self, http: Request):
        continue_trace(http.headers.get("traceparent"))
        return await messages_response(http, self.config.has_model, self.config.model_names, self._complete,
                                       self._chunks, self._spend)

    # OpenAI Responses (orchestray.serving._responses)

    @api.post("/v1/responses", summary="OpenAI Responses API (JSON or SSE); model is a provider or a route")
    async def create_response(self, http: Request):
        return await self.responses.create(http)

    @api.get("/v1/responses/{response_id}", summary="A stored response (the calling key's own)")
    async def get_response(self, response_id: str, http: Request):
        return await self.responses.retrieve(response_id, http)

    @api.delete("/v1/responses/{response_id}", summary="Delete a stored response")
    async def delete_response(self, response_id: str, http: Request):
        return await self.responses.delete(response_id, http)

    @api.get("/v1/responses/{response_id}/input_items", summary="A stored response's input items")
    async def response_input_items(self, response_id: str, http: Request):
        return await self.responses.input_items(response_id, http)

    # Ad-hoc patterns

    async def _pattern(self, body: PatternBody, http: Request) -> JSONResponse:
        continue_trace(http.headers.get("traceparent"))
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        try:
            chat = ChatCompletionBody.model_validate(body.chat_body())
        except Exception as err:
            raise RequestError(validation_message(err) if hasattr(err, "errors") else str(err)) from None
        request = chat.to_request(request_id)
        route = body.route()
        # Validated as a route of the config would be, then run once in this replica.
        pattern = self.models.adhoc(route)
        model = f"pattern:{route['pattern']}"
        if chat.stream:  # streamed as a named route's answer is, under the pattern's name
            return await self._event_stream(aiter(pattern.stream(request)), request, request_id, chat, http, model)
        completion = await pattern.complete(request)
        return self._answer(completion, request_id, model, http)

    # One endpoint per row of the pattern table, each with its typed body (in /docs).
    for _name, _body in PATTERN_BODIES.items():
        vars()[f"pattern_{_name}"] = _pattern_endpoint(_name, _body)
    del _name, _body


def build_app(args: dict[str, str] | None = None):
    """`serve run serve_app:build_app config=path.yaml`; without `config`, the embedded default."""
    args = dict(args or {})
    unknown = set(args) - {"config"}
    if unknown:
        raise ValueError(f"unknown application argument(s): {', '.join(sorted(unknown))}; use config=PATH")
    return app_for(load_config(args.get("config"), environ=os.environ))


def app_for(config: Config, gateway_actor_options: dict[str, Any] | None = None):
    """The application for a config; deployment settings come from its `serve:` section."""
    config_json = config.model_dump_json()
    settings = config.serve
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.max_ongoing_requests,
        # Serve's proxy answers for the gateway while it has no replica (see serve_app.py): past
        # max_queued_requests held, a 503 with retry-after rather than a queue without end.
        "max_queued_requests": settings.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=LOST_RETRY_AFTER_S),
        "ray_actor_options": {"num_cpus": settings.replica_num_cpus},
    }
    if settings.autoscaling_config is not None:
        options["autoscaling_config"] = settings.autoscaling_config
    else:
        options["num_replicas"] = settings.num_replicas
    if gateway_actor_options:
        options["ray_actor_options"] = {**options["ray_actor_options"], **gateway_actor_options}
    return Gateway.options(**options).bind(config_json)
