"""The Ray Serve application: an OpenAI-compatible gateway over the providers and coordinators.

    HTTP ─▶ HAProxy ─▶ Gateway replica (FastAPI ingress; routes run here) ─▶ provider actors
                                                        (shared, named: limits hold cluster-wide)

A request for a provider goes straight from the gateway to that provider's actor; a request for a
route, or an ad-hoc pattern, runs the pattern in the gateway replica against the same provider
actors. Every hop between processes costs about as much CPU as the provider's HTTP call itself, so
no request takes more than the one to the provider actors, which keep the limits.
"""


import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestray.config import Config, load_config, parse_config
from orchestray.coordinators import build_coordinator
from orchestray.errors import (
    AllFailedError,
    ConfigError,
    AuthenticationError,
    BadRequestError,
    OrchestrayError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestError,
    UnknownModelError,
    error_code,
)
from orchestray.messages import ChatRequest, Chunk, Completion
from orchestray.openai_format import ChatCompletionBody, chunk_body, completion_body, describe_errors, validation_message
from orchestray.policies.ratelimit import TokenBucket

from orchestray.serving._bodies import (
    CascadeBody,
    EnsembleBody,
    RaceBody,
    TreeOfThoughtBody,
    openai_error,
)
from orchestray.serving._messages import anthropic_shaped, messages_response

__all__ = ["build_app", "app_for", "open_gateway_refusal", "Gateway", "KeyQuota"]

api = FastAPI(
    title="orchestray",
    description="OpenAI-compatible chat completions over providers and orchestration patterns.",
    version="0.1.0",
)

# Set per replica by the Gateway's constructor; the middleware and handlers read them. Only
# functions of this module touch the dict: Serve pickles the ingress class by value, and a
# global it referenced directly would be a copy in the replica.
_SECURITY: dict[str, Any] = {"keys": (), "max_body_bytes": 1_000_000, "quota": None}


def _security() -> dict[str, Any]:
    return _SECURITY
_PUBLIC_PATHS = {"/healthz", "/readyz"}


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None,
           param: str | None = None) -> JSONResponse:
    return JSONResponse(openai_error(status, message, code, param), status_code=status, headers=headers)


def _status_of(err: BaseException) -> int:
    if isinstance(err, UnknownModelError):
        return 404
    if isinstance(err, RequestError):
        return 413 if error_code(err) == "request_too_large" else 400
    if isinstance(err, RateLimitedError):
        return 429
    if isinstance(err, ProviderTimeoutError):
        return 504
    if isinstance(err, ProviderUnavailableError):
        return 503
    if isinstance(err, BadRequestError):
        return 400  # the provider refused the request itself (too long a context, say)
    if isinstance(err, (AuthenticationError, AllFailedError)):
        return 502
    return 502


def error_response(err: BaseException) -> JSONResponse:
    status = _status_of(err)
    headers = None
    retry_after = getattr(err, "retry_after", None)
    if status in (429, 503) and retry_after:
        headers = {"retry-after": str(max(1, int(retry_after + 0.999)))}
    if isinstance(err, AuthenticationError):
        message = f"{err.provider}: the provider rejected orchestray's credentials"
    else:
        message = str(err)
    return _error(status, message, error_code(err), headers, getattr(err, "param", None))


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    errors = err.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, "the body is not valid JSON", "invalid_json")
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


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def _refusal(scope) -> JSONResponse | None:
    """The answer for a request the gateway turns away before routing (size, key, quota), or None."""
    request = Request(scope)
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > _SECURITY["max_body_bytes"]
        except ValueError:
            return _error(400, "invalid Content-Length header", "invalid_request")
        if too_big:
            return _error(413, f"body larger than {_SECURITY['max_body_bytes']} bytes", "body_too_large")
    keys = _SECURITY["keys"]
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]  # under a route prefix (/capped/healthz) the endpoint is /healthz
    if keys and path not in _PUBLIC_PATHS:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        if not header and "x-api-key" in request.headers:
            header, scheme, presented = "x-api-key", "bearer", request.headers["x-api-key"].strip()  # Anthropic's clients
        # Compare against every key in constant time, whatever matches first.
        matched = None
        for key in keys:
            if hmac.compare_digest(presented.encode(), key.encode()) and scheme.lower() == "bearer":
                matched = key
        if matched is None:
            message = "missing bearer key" if not header else "invalid API key"
            return _error(401, message, "invalid_api_key", {"www-authenticate": "Bearer"})
        request.state.key_id = _key_id(matched)  # scope["state"]: the handlers' `http.state`
        quota = _SECURITY["quota"]
        if quota is not None:
            retry_after = await quota.admit.remote(request.state.key_id)
            if retry_after > 0:
                return _error(429, "this key is over its request-rate or spend cap", "key_quota_exceeded",
                              {"retry-after": str(max(1, int(retry_after + 0.999)))})
    return None


class _Guard:
    """Body size, bearer keys and per-key caps, checked before routing.

    A plain ASGI middleware rather than `@api.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs every request through an extra task group and memory streams, which py-spy put at about
    a fifth of the gateway replica's busy time under bench/serve.py.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = await _refusal(scope)
            if refusal is not None:
                if scope.get("path", "").endswith("/v1/messages"):
                    refusal = anthropic_shaped(refusal)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(_Guard)


@ray.remote(num_cpus=0, max_concurrency=1000)
class KeyQuota:
    """Per-key request rate and spend caps, one actor for all gateway replicas (exact caps)."""

    def __init__(self, requests_per_minute: float | None, spend_per_hour: float | None):
        self.rpm = requests_per_minute
        self.spend_per_hour = spend_per_hour
        self._buckets: dict[str, TokenBucket] = {}
        self._spend: dict[str, list[tuple[float, float]]] = {}

    def admit(self, key_id: str) -> float:
        now = time.monotonic()
        if self.spend_per_hour is not None:
            window = [(t, c) for t, c in self._spend.get(key_id, []) if now - t < 3600]
            self._spend[key_id] = window
            if sum(c for _, c in window) >= self.spend_per_hour:
                return 3600 - (now - window[0][0])
        if self.rpm is not None:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = TokenBucket(self.rpm / 60.0, max(1.0, self.rpm / 60.0), now)
            if not bucket.try_take(1, now):
                return bucket.time_until(1, now)
        return 0.0

    def spend(self, key_id: str, cost: float) -> None:
        if self.spend_per_hour is not None and cost > 0:
            self._spend.setdefault(key_id, []).append((time.monotonic(), cost))


_ADHOC = "adhoc:request"


def _sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


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


def open_gateway_refusal(config: Config, keys: tuple[str, ...]) -> str | None:
    """Why this gateway must not serve without keys, or None when it may: keys are set, every
    provider is simulated (a local trial spends nothing), or the config says so on purpose."""
    settings = config.serve
    real = [f"{p.name} ({p.kind})" for p in config.providers if p.kind != "simulated"]
    if keys or not real or settings.allow_unauthenticated:
        return None
    how = (f"set {settings.api_keys_env}=key1,key2 in the environment of the nodes that run the gateway"
           if settings.api_keys_env else "set serve.api_keys_env to a variable holding bearer keys, and set it")
    return (f"refusing to serve without gateway keys: the config has real providers ({', '.join(real)}), and "
            f"anyone who reaches the gateway could spend their keys. To require bearer keys, {how}; to serve open "
            "on purpose, set serve.allow_unauthenticated: true in the config.")


@serve.deployment(name="Gateway")
@serve.ingress(api)
class Gateway:
    def __init__(self, config_json: str):
        from orchestray.actors.directory import ModelDirectory

        self.config = Config.model_validate_json(config_json)
        self.models = ModelDirectory(self.config, routes_in_process=True)
        for name in self.config.model_names():
            self.models.get(name)  # every actor found now, not on the event loop later
        self.providers = {p.name: self.models.get(p.name) for p in self.config.providers}
        serve_config = self.config.serve
        keys_env = serve_config.api_keys_env
        keys = tuple(k.strip() for k in os.environ.get(keys_env, "").split(",") if k.strip()) if keys_env else ()
        refusal = open_gateway_refusal(self.config, keys)
        if refusal is not None:
            raise ConfigError(refusal)
        quota = None
        if keys and (serve_config.requests_per_minute_per_key or serve_config.spend_per_hour_per_key):
            caps = f"{serve_config.requests_per_minute_per_key}-{serve_config.spend_per_hour_per_key}"
            quota = KeyQuota.options(name=f"orchestray-key-quota-{caps}", namespace="orchestray", get_if_exists=True,
                                     lifetime="detached").remote(serve_config.requests_per_minute_per_key,
                                                                 serve_config.spend_per_hour_per_key)
        _security().update(keys=keys, max_body_bytes=serve_config.max_body_bytes, quota=quota)

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
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        request = body.to_request(request_id)
        if not self.config.has_model(request.model):
            raise UnknownModelError(request.model, self.config.model_names())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = self._chunks(request)
            first = await self._first_chunk(chunks)
            return StreamingResponse(self._stream(request, request_id, include_usage, http, chunks, first),
                                     media_type="text/event-stream", headers={"cache-control": "no-cache"})
        completion = await self._complete(request)
        return self._answer(completion, request_id, request.model, http)

    async def _complete(self, request: ChatRequest) -> Completion:
        """A provider's actor straight from this replica; a route run in this replica against them."""
        return await self.models.get(request.model).complete(request)

    @staticmethod
    def _spend(completion: Completion, http: Request) -> None:
        key_id = getattr(http.state, "key_id", None)
        quota = _security()["quota"]
        if quota is not None and key_id is not None:
            quota.spend.remote(key_id, completion.cost)

    def _answer(self, completion: Completion, request_id: str, model: str, http: Request) -> JSONResponse:
        self._spend(completion, http)
        return JSONResponse(completion_body(completion, request_id, model=model),
                            headers={"x-orchestray-cost": f"{completion.cost:.10f}",
                                     "x-orchestray-provider": completion.provider})

    def _chunks(self, request: ChatRequest):
        return aiter(self.models.get(request.model).stream(request))

    async def _first_chunk(self, chunks) -> Chunk:
        """The stream's first chunk, before any byte is sent: a request refused before the
        answer began (a field the provider cannot honour, an unknown model) gets its 4xx."""
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            raise ProviderUnavailableError("the stream ended before its answer") from None

    async def _stream(self, request: ChatRequest, request_id: str, include_usage: bool, http: Request,
                      chunks, first: Chunk):
        """OpenAI's chunk sequence: per choice a role chunk, then its content, refusal and
        tool-call deltas; at the end one finish chunk per choice (with its logprobs), then the
        usage chunk when asked for, then [DONE]."""
        created = int(time.time())
        model = request.model
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
            cause = err if isinstance(err, OrchestrayError) else ProviderUnavailableError("the stream ended early")
            yield _sse(openai_error(_status_of(cause), str(cause), error_code(cause), getattr(cause, "param", None)))
        yield _sse(b"[DONE]")

    # Anthropic messages

    @api.post("/v1/messages", summary="Anthropic-compatible messages (JSON or SSE); model is a provider or a route")
    async def messages(self, http: Request):
        return await messages_response(http, self.config.has_model, self.config.model_names, self._complete,
                                       self._chunks, self._spend, _status_of)

    # Ad-hoc patterns

    async def _pattern(self, body, http: Request) -> JSONResponse:
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        try:
            chat = ChatCompletionBody.model_validate(body.chat_body())
        except Exception as err:
            raise RequestError(validation_message(err) if hasattr(err, "errors") else str(err)) from None
        request = chat.to_request(request_id)
        route = body.route()
        for name in route["providers"] + ([route["judge"]] if route.get("judge") else []):
            if not self.config.has_model(name):
                raise UnknownModelError(name, self.config.model_names())
        # Validated as a route of the config would be, then run once in this replica.
        data = self.config.model_dump(mode="json")
        data["routes"] = {**data["routes"], _ADHOC: route}
        try:
            coordinator = build_coordinator(_ADHOC, parse_config(data, "request"), self.models.get)
        except ConfigError as err:
            raise RequestError(str(err).replace(f"request: routes.{_ADHOC}.", "")) from None
        completion = await coordinator.complete(request)
        return self._answer(completion, request_id, f"pattern:{route['pattern']}", http)

    @api.post("/v1/patterns/race", summary="Race providers: first success wins, optionally hedged")
    async def race(self, body: RaceBody, http: Request):
        return await self._pattern(body, http)

    @api.post("/v1/patterns/ensemble", summary="Parallel calls and a vote")
    async def ensemble(self, body: EnsembleBody, http: Request):
        return await self._pattern(body, http)

    @api.post("/v1/patterns/cascade", summary="Cheap first, escalate on low confidence")
    async def cascade(self, body: CascadeBody, http: Request):
        return await self._pattern(body, http)

    @api.post("/v1/patterns/tree_of_thought", summary="Tree-of-thought beam search (Game of 24)")
    async def tree_of_thought(self, body: TreeOfThoughtBody, http: Request):
        return await self._pattern(body, http)


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
        "ray_actor_options": {"num_cpus": settings.replica_num_cpus},
    }
    if settings.autoscaling_config is not None:
        options["autoscaling_config"] = settings.autoscaling_config
    else:
        options["num_replicas"] = settings.num_replicas
    if gateway_actor_options:
        options["ray_actor_options"] = {**options["ray_actor_options"], **gateway_actor_options}
    return Gateway.options(**options).bind(config_json)
