"""Who may use the gateway: bearer keys, the body-size cap, and per-key caps, checked before routing.

The settings are per replica, set by the Gateway's constructor (`secure`). Only functions of this
module touch them: Serve pickles the ingress class by value, and a global it referenced directly
would be a copy in the replica.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from fastapi import Request

from orchestray.config import Config
from orchestray.serving._errors import openai_error_response, retry_after_header
from orchestray.serving._messages import anthropic_shaped

__all__ = ["Guard", "secure", "gateway_keys", "open_gateway_refusal", "record_spend", "key_id"]

_SECURITY: dict[str, Any] = {"keys": (), "max_body_bytes": 1_000_000, "quota": None}
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


def secure(keys: tuple[str, ...], max_body_bytes: int, quota) -> None:
    """This replica's keys, body cap and quota actor (None: no per-key caps)."""
    _SECURITY.update(keys=keys, max_body_bytes=max_body_bytes, quota=quota)


def gateway_keys(env_var: str | None, environ=os.environ) -> tuple[str, ...]:
    """The bearer keys in `env_var` (comma-separated), or none."""
    if not env_var:
        return ()
    return tuple(k.strip() for k in environ.get(env_var, "").split(",") if k.strip())


def key_id(key: str) -> str:
    """A key's id in logs and quotas: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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


def record_spend(http: Request, cost: float) -> None:
    """Count an answer's cost against the key that asked for it (when spend is capped)."""
    quota = _SECURITY["quota"]
    key = getattr(http.state, "key_id", None)
    if quota is not None and key is not None:
        quota.spend.remote(key, cost)


def _presented(request: Request) -> tuple[str, str, str]:
    """(header, scheme, key) as the client sent them: `Authorization: Bearer`, or Anthropic's
    clients' `x-api-key`."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header and "x-api-key" in request.headers:
        return "x-api-key", "bearer", request.headers["x-api-key"].strip()
    return header, scheme, presented.strip()


async def _refusal(scope) -> Any:
    """The answer for a request the gateway turns away before routing (size, key, quota), or None."""
    request = Request(scope)
    limit = _SECURITY["max_body_bytes"]
    length = request.headers.get("content-length")
    if length is not None:
        try:
            too_big = int(length) > limit
        except ValueError:
            return openai_error_response(400, "invalid Content-Length header", "invalid_request")
        if too_big:
            return openai_error_response(413, f"body larger than {limit} bytes", "body_too_large")
    keys = _SECURITY["keys"]
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]  # under a route prefix (/capped/healthz) the endpoint is /healthz
    if not keys or path in PUBLIC_PATHS:
        return None
    header, scheme, presented = _presented(request)
    # Compare against every key in constant time, whatever matches first.
    matched = None
    for key in keys:
        if hmac.compare_digest(presented.encode(), key.encode()) and scheme.lower() == "bearer":
            matched = key
    if matched is None:
        message = "missing bearer key" if not header else "invalid API key"
        return openai_error_response(401, message, "invalid_api_key", {"www-authenticate": "Bearer"})
    request.state.key_id = key_id(matched)  # scope["state"]: the handlers' `http.state`
    quota = _SECURITY["quota"]
    if quota is not None:
        retry_after = await quota.admit.remote(request.state.key_id)
        if retry_after > 0:
            return openai_error_response(429, "this key is over its request-rate or spend cap",
                                         "key_quota_exceeded", retry_after_header(retry_after))
    return None


def _continue_trace(scope) -> None:
    """A W3C `traceparent` from the caller becomes the parent of this request's exported spans."""
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            from orchestray.telemetry import continue_trace

            continue_trace(value.decode("latin-1"))
            return


class Guard:
    """Body size, bearer keys and per-key caps, checked before routing.

    A plain ASGI middleware rather than `@api.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs every request through an extra task group and memory streams, which py-spy put at about
    a fifth of the gateway replica's busy time under bench/serve.py.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            _continue_trace(scope)
            refusal = await _refusal(scope)
            if refusal is not None:
                if scope.get("path", "").endswith("/v1/messages"):
                    refusal = anthropic_shaped(refusal)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
