"""Turn the openai and anthropic SDKs' exceptions into orchestray's tree, keys scrubbed."""

from __future__ import annotations

from orchestray.backends._reply import parse_quota, parse_retry_after
from orchestray.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    redact,
)

__all__ = ["from_sdk_error", "from_status"]


def from_status(status: int, message: str, headers, provider: str) -> ProviderError:
    if status == 429:
        err = RateLimitedError(message, provider=provider, status=status, retry_after=parse_retry_after(headers))
        err.quota = parse_quota(headers)  # a 429's headers teach the limit too (before any answer has)
        return err
    if status in (401, 403):
        return AuthenticationError(message, provider=provider, status=status)
    if status == 408:
        return ProviderTimeoutError(message, provider=provider, status=status)
    if status == 409 or status >= 500:
        # 529 is Anthropic's "overloaded"; 409 a conflict the providers ask clients to retry.
        return ProviderUnavailableError(message, provider=provider, status=status)
    return BadRequestError(message, provider=provider, status=status)


def from_sdk_error(err: Exception, sdk, provider: str, secrets: tuple[str, ...]) -> ProviderError:
    """`sdk` is the `openai` or `anthropic` module: both have the same exception shapes."""
    message = redact(getattr(err, "message", None) or str(err) or type(err).__name__, secrets)
    if isinstance(err, sdk.APITimeoutError):
        return ProviderTimeoutError(f"timed out: {message}", provider=provider)
    if isinstance(err, sdk.APIConnectionError):
        cause = redact(str(err.__cause__ or ""), secrets)
        return ProviderUnavailableError(f"connection failed: {message} {cause}".strip(), provider=provider)
    if isinstance(err, sdk.APIStatusError):
        return from_status(err.status_code, message, err.response.headers, provider)
    return ProviderUnavailableError(f"{type(err).__name__}: {message}", provider=provider)
