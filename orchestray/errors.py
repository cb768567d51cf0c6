"""The one exception tree of orchestray; callers may catch at any level.

    OrchestrayError
    ├── ConfigError                  a config file or option is wrong (names file and field)
    ├── RequestError                 the request itself is wrong; retrying cannot help
    │   ├── UnknownModelError        `model` names no provider and no route
    │   ├── RequestTooLargeError     more tokens than the provider's per-minute limit
    │   └── GuardrailError           an input guardrail refused the request (carries `rule`)
    ├── ProviderError                a provider call failed (carries `provider`)
    │   ├── RateLimitedError         429; `retry_after` seconds when the provider said
    │   ├── ProviderTimeoutError     no answer within the timeout
    │   ├── ProviderUnavailableError 5xx, connection refused or reset, overloaded
    │   │   └── CircuitOpenError     the provider is cooling down after repeated failures
    │   ├── BadRequestError          400/404/422 from the provider
    │   └── AuthenticationError      401/403: the key is missing, wrong or not allowed
    ├── OutputGuardrailError         the answer broke an output guardrail after retries and fallback (`rule`)
    ├── SpendCapError                a route's or provider's spend cap for the hour or day is reached
    ├── AllFailedError               every branch of a coordinator failed (carries `causes`)
    ├── OutputInUseError             another run is writing the batch output (names its holder)
    └── StoreUnavailableError        the cluster store (Redis, the store actor) cannot be reached

Messages never carry an API key: provider messages pass through `redact` before they are kept.
"""

from __future__ import annotations

import re

__all__ = [
    "OrchestrayError",
    "ConfigError",
    "RequestError",
    "UnknownModelError",
    "RequestTooLargeError",
    "ProviderError",
    "RateLimitedError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "CircuitOpenError",
    "BadRequestError",
    "AuthenticationError",
    "AllFailedError",
    "OutputInUseError",
    "StoreUnavailableError",
    "GuardrailError",
    "OutputGuardrailError",
    "SpendCapError",
    "redact",
    "error_code",
]


class OrchestrayError(Exception):
    """Base of every error orchestray raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Ray pickles exceptions across processes; keep every attribute, not only args.
        return (_rebuild, (type(self), self.__dict__.copy()))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls, state):
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigError(OrchestrayError):
    pass


class RequestError(OrchestrayError):
    """`param` names the request field at fault, when one is (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UnknownModelError(RequestError):
    """`where`: the field that named it, when not the request's `model` (an ad-hoc pattern's `providers[1]`)."""

    def __init__(self, model: str, known: list[str] | tuple[str, ...] = (), where: str | None = None):
        hint = f"; known: {', '.join(sorted(known))}" if known else ""
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}unknown model {model!r}: no provider or route has that name{hint}", param=where or "model")
        self.model = model


class RequestTooLargeError(RequestError):
    pass


class GuardrailError(RequestError):
    """An input guardrail refused the request; `rule` is its name in the config."""

    def __init__(self, message: str, rule: str):
        super().__init__(f"guardrail {rule}: {message}")
        self.rule = rule


class OutputGuardrailError(OrchestrayError):
    """Every answer (retries and fallback included) broke the output guardrail `rule`."""

    def __init__(self, message: str, rule: str):
        super().__init__(f"guardrail {rule}: {message}")
        self.rule = rule


class SpendCapError(OrchestrayError):
    """A spend cap is reached: `retry_after` seconds until its window has room again."""

    def __init__(self, message: str, *, name: str, retry_after: float):
        super().__init__(message)
        self.name = name
        self.retry_after = retry_after


class ProviderError(OrchestrayError):
    """A failed provider call. `status` is the HTTP status when there was one."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None):
        super().__init__(message)
        self.provider = provider
        self.status = status

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}" if self.provider else self.message


class RateLimitedError(ProviderError):
    retryable = True

    def __init__(
        self,
        message: str = "rate limited",
        *,
        provider: str = "",
        status: int | None = 429,
        retry_after: float | None = None,
    ):
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    retryable = True


class ProviderUnavailableError(ProviderError):
    retryable = True

    def __init__(self, message: str, *, provider: str = "", status: int | None = None, retry_after: float | None = None):
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after  # seconds after which trying again makes sense, when known


class CircuitOpenError(ProviderUnavailableError):
    retryable = False

    def __init__(self, message: str, *, provider: str = "", retry_after: float = 0.0):
        super().__init__(message, provider=provider, retry_after=retry_after)


class BadRequestError(ProviderError):
    pass


class AuthenticationError(ProviderError):
    pass


class AllFailedError(OrchestrayError):
    def __init__(self, what: str, causes: list[BaseException]):
        listed = "; ".join(f"{type(c).__name__}: {c}" for c in causes) or "no branch ran"
        super().__init__(f"{what}: all failed ({listed})")
        self.causes = list(causes)


class OutputInUseError(OrchestrayError):
    pass


class StoreUnavailableError(OrchestrayError):
    """The store cannot be reached or is not installed; the response cache treats it as a miss."""


_KEYISH = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+)")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove anything that looks like an API key, and every given secret, from `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYISH.sub("[redacted]", text)


def error_code(err: BaseException) -> str:
    """A short stable code for an error, as batch records and HTTP bodies show it."""
    codes = [
        (UnknownModelError, "model_not_found"),
        (RequestTooLargeError, "request_too_large"),
        (GuardrailError, "guardrail_violation"),
        (OutputGuardrailError, "output_guardrail_failed"),
        (SpendCapError, "spend_cap_reached"),
        (RequestError, "invalid_request"),
        (RateLimitedError, "rate_limited"),
        (ProviderTimeoutError, "timeout"),
        (CircuitOpenError, "circuit_open"),
        (ProviderUnavailableError, "provider_unavailable"),
        (BadRequestError, "provider_bad_request"),
        (AuthenticationError, "authentication_failed"),
        (AllFailedError, "all_failed"),
        (OutputInUseError, "output_in_use"),
        (StoreUnavailableError, "store_unavailable"),
        (ConfigError, "config_error"),
    ]
    for cls, code in codes:
        if isinstance(err, cls):
            return code
    return "internal_error"
