"""Backends: the one seam between a provider and the model behind it.

A backend has `complete(request) -> Reply` and `stream(request)`, an async iterator of text
deltas (str) and richer pieces (`Chunk`: tool-call deltas, refusals, other choices) ending with
one `Reply`. A request field the backend's provider cannot honour raises `RequestError` naming
the field and the provider before any call: nothing is dropped silently. The OpenAI wire format serves OpenAI and every
OpenAI-compatible server (by `base_url`); Anthropic has its own; the simulated backend answers
in-process. Backends raise only `orchestray.errors` exceptions and never retry: the provider's
single retry loop does.
"""

from __future__ import annotations

from typing import AsyncIterator, Protocol

from orchestray.backends._reply import Quota, Reply
from orchestray.config import ProviderConfig
from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Chunk

__all__ = ["Backend", "Reply", "Quota", "make_backend", "refuse_unsupported"]


def refuse_unsupported(request: ChatRequest, provider: str, kind: str, supported: frozenset[str]) -> None:
    """Raise a `RequestError` (a 400 at the gateway) naming the first field of `request` that
    this provider cannot honour. `supported` holds field names, `extra_body.KEY` entries, or
    `extra_body.*` for a provider that takes any extra as it is."""
    for field in request.set_fields():
        if field in supported or (field.startswith("extra_body.") and "extra_body.*" in supported):
            continue
        # OpenAI's `param` names the body's own field: `audio`, not `extra_body.audio`.
        raise RequestError(f"{field}: not supported by provider {provider!r} ({kind})",
                           param=field.removeprefix("extra_body."))


class Backend(Protocol):
    async def complete(self, request: ChatRequest) -> Reply: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[str | Chunk | Reply]: ...

    async def close(self) -> None: ...


def make_backend(config: ProviderConfig, api_key: str | None) -> Backend:
    if config.kind == "openai":
        from orchestray.backends.openai_wire import OpenAIBackend

        return OpenAIBackend(config, api_key)
    if config.kind == "anthropic":
        from orchestray.backends.anthropic_wire import AnthropicBackend

        return AnthropicBackend(config, api_key)
    from orchestray.backends.simulated import SimulatedBackend

    return SimulatedBackend(config)
