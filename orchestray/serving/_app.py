"""The Ray Serve application: an OpenAI-compatible gateway over the providers and coordinators.

    HTTP ─▶ Gateway (FastAPI ingress) ─┬─▶ provider actors (shared, named: limits hold cluster-wide)
                                       └─▶ Coordinators deployment ─▶ provider actors

A request for a provider goes straight from the gateway to that provider's actor (one hop, the
fast path); a request for a route, or an ad-hoc pattern, goes to the Coordinators deployment,
which runs the pattern in-process against the same provider actors.
"""


import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from typing import Any, AsyncIterator

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle
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
from orchestray.openai_format import ChatCompletionBody, chunk_body, completion_body, validation_message
from orchestray.policies.ratelimit import TokenBucket

from orchestray.serving._bodies import (
    CascadeBody,
    EnsembleBody,
    RaceBody,
    TreeOfThoughtBody,
    openai_error,
)

__all__ = ["build_app", "app_for", "Gateway", "Coordinators", "KeyQuota"]

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


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(openai_error(status, message, code), status_code=status, headers=headers)


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
    return _error(status, message, error_code(err), headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        if e.get("type") == "json_invalid":
            return _error(400, "the body is not valid JSON", "invalid_json")
        message = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        problems.append(f"{where}: {message}")
    return _error(400, "; ".join(problems) or "invalid request body", "invalid_request")


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


# A replica lost mid-request (its node or process died): Serve replaces it; the client may try
# again shortly, so it gets a 503 with retry-after instead of a 500 or a hang.
_REPLICA_LOST = RayActorError  # ActorDiedError and ActorUnavailableError among them
_REPLICA_RETRY_AFTER_S = 1.0


def _replica_lost(err: BaseException) -> ProviderUnavailableError:
    return ProviderUnavailableError(f"the replica serving this request was lost ({type(err).__name__}); try again",
                                    retry_after=_REPLICA_RETRY_AFTER_S)


async def _unwrapped(response):
    """Await a deployment call; an orchestray error raised there comes back as itself."""
    try:
        return await response
    except RayTaskError as err:
        cause = getattr(err, "cause", None)
        raise (cause if isinstance(cause, OrchestrayError) else ProviderUnavailableError("coordinator failed")) from None
    except _REPLICA_LOST as err:
        raise _replica_lost(err) from None


def _sse(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


@serve.deployment(name="Coordinators")
class Coordinators:
    """Runs routes and ad-hoc patterns in-process, against the shared provider actors."""

    def __init__(self, config_json: str):
        from orchestray.actors.directory import ModelDirectory

        self.config = Config.model_validate_json(config_json)
        self.models = ModelDirectory(self.config, routes_in_process=True)
        for name in self.config.model_names():
            self.models.get(name)  # every actor found now, not on the event loop later

    async def complete(self, request: ChatRequest) -> Completion:
        return await self.models.get(request.model).complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self.models.get(request.model).stream(request):
            yield chunk

    async def pattern(self, route: dict[str, Any], request: ChatRequest) -> Completion:
        """An ad-hoc pattern: validated as a route of the config would be, then run once."""
        data = self.config.model_dump(mode="json")
        data["routes"] = {**data["routes"], _ADHOC: route}
        try:
            config = parse_config(data, "request")
            coordinator = build_coordinator(_ADHOC, config, self.models.get)
        except ConfigError as err:
            raise RequestError(str(err).replace(f"request: routes.{_ADHOC}.", "")) from None
        return await coordinator.complete(request)


@serve.deployment(name="Gateway")
@serve.ingress(api)
class Gateway:
    def __init__(self, coordinators: DeploymentHandle, config_json: str):
        from orchestray.actors.directory import ModelDirectory

        self.config = Config.model_validate_json(config_json)
        self.coordinators = coordinators
        self.providers = {p.name: ModelDirectory(self.config).get(p.name) for p in self.config.providers}
        serve_config = self.config.serve
        keys_env = serve_config.api_keys_env
        keys = tuple(k.strip() for k in os.environ.get(keys_env, "").split(",") if k.strip()) if keys_env else ()
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
        created = 0
        data = [{"id": p.name, "object": "model", "created": created, "owned_by": "orchestray",
                 "orchestray": {"kind": "provider", "provider_kind": p.kind, "model": p.model}}
                for p in self.config.providers]
        data += [{"id": name, "object": "model", "created": created, "owned_by": "orchestray",
                  "orchestray": {"kind": "route", "pattern": route.pattern}}
                 for name, route in self.config.routes.items()]
        return {"object": "list", "data": data}

    # Chat completions

    @api.post("/v1/chat/completions", summary="OpenAI-compatible chat completion; model is a provider or a route")
    async def chat_completions(self, body: ChatCompletionBody, http: Request):
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        request = body.to_request(request_id)
        if not self.config.has_model(request.model):
            raise UnknownModelError(request.model, self.config.model_names())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self._stream(request, request_id, include_usage, http),
                                     media_type="text/event-stream", headers={"cache-control": "no-cache"})
        if request.model in self.providers:
            completion = await self.providers[request.model].complete(request)
        else:
            completion = await _unwrapped(self.coordinators.complete.remote(request))
        return self._answer(completion, request_id, request.model, http)

    def _answer(self, completion: Completion, request_id: str, model: str, http: Request) -> JSONResponse:
        key_id = getattr(http.state, "key_id", None)
        quota = _security()["quota"]
        if quota is not None and key_id is not None:
            quota.spend.remote(key_id, completion.cost)
        return JSONResponse(completion_body(completion, request_id, model=model),
                            headers={"x-orchestray-cost": f"{completion.cost:.10f}",
                                     "x-orchestray-provider": completion.provider})

    async def _stream(self, request: ChatRequest, request_id: str, include_usage: bool, http: Request):
        created = int(time.time())
        model = request.model
        if model in self.providers:
            chunks = self.providers[model].stream(request)
        else:
            chunks = self.coordinators.options(stream=True).stream.remote(request)
        first = True
        try:
            async for chunk in chunks:
                if chunk.done:
                    completion = chunk.completion
                    yield _sse(chunk_body(request_id, model, created, finish_reason=completion.finish_reason))
                    if include_usage:
                        yield _sse(chunk_body(request_id, model, created, completion=completion))
                    key_id = getattr(http.state, "key_id", None)
                    if _security()["quota"] is not None and key_id is not None:
                        _security()["quota"].spend.remote(key_id, completion.cost)
                    break
                yield _sse(chunk_body(request_id, model, created, delta=chunk.delta, role=first))
                first = False
        except (OrchestrayError, RayTaskError, _REPLICA_LOST) as err:
            # Headers are gone; the error travels as an event, as OpenAI's streams do.
            cause = getattr(err, "cause", err) if isinstance(err, RayTaskError) else err
            if isinstance(err, _REPLICA_LOST):
                cause = _replica_lost(err)
            elif not isinstance(cause, OrchestrayError):
                cause = ProviderUnavailableError("coordinator failed")
            yield _sse(openai_error(_status_of(cause), str(cause), error_code(cause)))
        yield _sse(b"[DONE]")

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
        completion = await _unwrapped(self.coordinators.pattern.remote(route, request))
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
    coordinators = Coordinators.options(**options).bind(config_json)
    gateway_options = dict(options)
    if gateway_actor_options:
        gateway_options["ray_actor_options"] = {**options["ray_actor_options"], **gateway_actor_options}
    return Gateway.options(**gateway_options).bind(coordinators, config_json)
