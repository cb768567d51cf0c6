"""How a failure becomes an HTTP answer at the gateway: one status table and one unwrap.

    any exception ──orchestray_error──▶ OrchestrayError ──http_error──▶ status, message, code,
    (Ray-wrapped too)                                                   headers, param

Both wire shapes (OpenAI's `{"error": ...}` here, Anthropic's in `_messages`) and both places an
error can surface (before the status line, or as an event inside a stream) start from `http_error`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError

from orchestray.actors.multiplex import unwrap
from orchestray.errors import (
    AuthenticationError,
    BadRequestError,
    OrchestrayError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestError,
    SpendCapError,
    UnknownModelError,
    error_code,
)
from orchestray.serving._bodies import openai_error

__all__ = ["HttpError", "orchestray_error", "status_of", "http_error", "retry_after_header", "error_response",
           "openai_error_response"]


def orchestray_error(err: BaseException) -> OrchestrayError:
    """The orchestray error behind a failure: Ray's wrapper taken off (the only place the gateway
    does), anything that is not ours reported as an unavailable provider."""
    if isinstance(err, RayTaskError):
        err = unwrap(err)
    if isinstance(err, OrchestrayError):
        return err
    if isinstance(err, StopAsyncIteration):
        return ProviderUnavailableError("the stream ended early")
    return ProviderUnavailableError(f"the call failed ({type(err).__name__})")  # no internals leak


def status_of(err: BaseException) -> int:
    if isinstance(err, UnknownModelError):
        return 404
    if isinstance(err, RequestError):
        return 413 if error_code(err) == "request_too_large" else 400
    if isinstance(err, (RateLimitedError, SpendCapError)):
        return 429
    if isinstance(err, ProviderTimeoutError):
        return 504
    if isinstance(err, ProviderUnavailableError):
        return 503
    if isinstance(err, BadRequestError):
        return 400  # the provider refused the request itself (too long a context, say)
    return 502  # a provider rejected our credentials, every member failed, or worse


def retry_after_header(seconds: float) -> dict[str, str]:
    """`retry-after` in whole seconds, rounded up, never 0."""
    return {"retry-after": str(max(1, int(seconds + 0.999)))}


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    message: str
    code: str
    headers: dict[str, str] | None = None
    param: str | None = None


def http_error(err: BaseException) -> HttpError:
    err = orchestray_error(err)
    status = status_of(err)
    retry_after = getattr(err, "retry_after", None)
    headers = retry_after_header(retry_after) if status in (429, 503) and retry_after else None
    if isinstance(err, AuthenticationError):
        message = f"{err.provider}: the provider rejected orchestray's credentials"  # never the provider's text
    else:
        message = str(err)
    return HttpError(status, message, error_code(err), headers, getattr(err, "param", None))


def openai_error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None,
                          param: str | None = None) -> JSONResponse:
    return JSONResponse(openai_error(status, message, code, param), status_code=status, headers=headers)


def error_response(err: BaseException) -> JSONResponse:
    """The OpenAI-shaped answer for a failure."""
    e = http_error(err)
    return openai_error_response(e.status, e.message, e.code, e.headers, e.param)
