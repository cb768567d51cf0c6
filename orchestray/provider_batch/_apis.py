"""The two providers' batch APIs behind one shape, over the official SDKs (max_retries=0).

    OpenAI:    files.create(purpose=batch) -> batches.create(metadata) -> batches.retrieve -> files.content
    Anthropic: messages.batches.create -> retrieve -> results

A request's body is the one the provider's live backend would post (`backend.params`), and an
answer is read by the live backend's own parser, so a batch answer is a live answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

import msgspec

from orchestray.backends._reply import Reply
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest

__all__ = ["BatchState", "Outcome", "QueueFull", "BatchAPI", "open_api", "caps", "DEFAULT_CAPS", "ENDED"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
# The providers' caps per batch: (requests, bytes).
DEFAULT_CAPS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}
ENDED = {"completed", "expired", "failed", "cancelled", "ended"}
# How far a provider's clock may stand from ours when a batch is matched to its intent by time.
_CLOCK_SKEW_S = 300.0
_ANTHROPIC_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                     "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                     "api_error": 500, "overloaded_error": 529}


class Intent(Protocol):
    """What the journal recorded before a batch was created (a `JournalBatch`)."""

    tag: str
    keys: list[str]
    created: float  # wall clock, before the create call


class QueueFull(Exception):
    """The provider's batch queue has no room now: submit again later (no request is spent)."""


@dataclass
class BatchState:
    id: str
    provider: str
    status: str  # validating | in_progress | finalizing | completed | expired | failed | cancelling | cancelled | ended
    counts: dict[str, int] = field(default_factory=dict)
    errors: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass
class Outcome:
    """One request's result: `ok` with the body, `retry` (expired, cancelled, 5xx, 429, queue
    full), or `error` (the provider refused it: a 4xx)."""

    kind: str
    status: int = 200
    body: Any = None
    message: str = ""


def _status_outcome(status: int, message: str) -> Outcome:
    kind = "retry" if status >= 500 or status in (408, 409, 429) else "error"
    return Outcome(kind, status, message=message)


def _openai_outcome(record: dict) -> Outcome:
    response, error = record.get("response"), record.get("error")
    if response is not None and response.get("status_code") == 200:
        return Outcome("ok", 200, response["body"])
    if response is not None:
        message = ((response.get("body") or {}).get("error") or {}).get("message") or "error"
        return _status_outcome(response["status_code"], message)
    return Outcome("retry", 0, message=(error or {}).get("code") or "not run")


class OpenAIBatchAPI:
    kind = "openai"

    def __init__(self, config: ProviderConfig, api_key: str | None):
        import openai

        from orchestray.backends.openai_wire import OpenAIBackend

        self.config = config
        self.client = openai.AsyncOpenAI(api_key=api_key or "no-key", base_url=config.base_url, max_retries=0,
                                         timeout=config.timeout_s, http_client=openai.DefaultAioHttpClient(timeout=config.timeout_s))
        self.backend = OpenAIBackend(config, api_key, client=self.client)

    def line(self, key: str, request: ChatRequest) -> bytes:
        body = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": self.backend.params(request)}
        return _encode(body) + b"\n"

    async def submit(self, lines: list[bytes], tag: str) -> str:
        upload = await self.client.files.create(file=(f"{tag}.jsonl", b"".join(lines)), purpose="batch")
        batch = await self.client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                 completion_window="24h", metadata={"orchestray": tag})
        return batch.id

    def _state(self, batch) -> BatchState:
        counts = batch.request_counts
        shown = {"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts else {}
        errors = None
        if batch.errors and batch.errors.data:
            errors = "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data)
        return BatchState(batch.id, self.config.name, batch.status, shown, errors)

    async def state(self, batch_id: str) -> BatchState:
        return self._state(await self.client.batches.retrieve(batch_id))

    async def find(self, intent: "Intent", known: set[str]) -> str | None:
        """The batch submitted under the intent's tag (its metadata), if the provider has one: a
        driver that died between creating a batch and recording its id finds it here."""
        async for batch in self.client.batches.list(limit=100):
            if batch.created_at < intent.created - _CLOCK_SKEW_S:
                break  # newest first: older than the intent, so none further on is it
            if (batch.metadata or {}).get("orchestray") == intent.tag:
                return batch.id
        return None

    async def results(self, state: BatchState) -> AsyncIterator[tuple[str, Outcome]]:
        """Each request's outcome by custom_id, streamed from the output and error files (never
        held whole); ("*", outcome) alone for a batch that failed as a whole."""
        batch = await self.client.batches.retrieve(state.id)
        if batch.status == "failed":
            queue = bool(batch.errors and any(e.code == "token_limit_exceeded" for e in batch.errors.data or ()))
            yield "*", Outcome("retry" if queue else "error", 429 if queue else 400, message=state.errors or "failed")
            return
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            async with self.client.files.with_streaming_response.content(file_id) as content:
                async for raw in content.iter_lines():
                    if raw.strip():
                        record = _decode(raw)
                        yield record["custom_id"], _openai_outcome(record)

    def reply(self, body: Any, request: ChatRequest) -> Reply:
        from orchestray.backends.openai_wire import reply_from_completion

        return reply_from_completion(_encode(body), self.config.name, self.config.model)

    async def cancel(self, batch_id: str) -> BatchState:
        return self._state(await self.client.batches.cancel(batch_id))

    async def close(self) -> None:
        await self.client.close()


class AnthropicBatchAPI:
    kind = "anthropic"

    def __init__(self, config: ProviderConfig, api_key: str | None):
        import anthropic

        from orchestray.backends.anthropic_wire import AnthropicBackend

        self.config = config
        self.client = anthropic.AsyncAnthropic(api_key=api_key or "no-key", base_url=config.base_url, max_retries=0,
                                               timeout=config.timeout_s,
                                               http_client=anthropic.DefaultAioHttpClient(timeout=config.timeout_s))
        self.backend = AnthropicBackend(config, api_key, client=self.client)

    def line(self, key: str, request: ChatRequest) -> bytes:
        return _encode({"custom_id": key, "params": self.backend.params(request)}) + b"\n"

    async def submit(self, lines: list[bytes], tag: str) -> str:
        """The requests posted as the bytes they already are: `messages.batches.create` would
        take them as dicts, tens of thousands of them decoded only to be encoded again."""
        import anthropic
        from anthropic.types.messages import MessageBatch

        body = b'{"requests":[' + b",".join(line.rstrip(b"\n") for line in lines) + b"]}"
        try:
            batch = await self.client.post("/v1/messages/batches", cast_to=MessageBatch, content=body,
                                           options={"headers": {"content-type": "application/json"}})
        except anthropic.RateLimitError as err:
            raise QueueFull(str(err)) from None
        return batch.id

    def _state(self, batch) -> BatchState:
        counts = batch.request_counts
        shown = {"processing": counts.processing, "succeeded": counts.succeeded, "errored": counts.errored,
                 "canceled": counts.canceled, "expired": counts.expired}
        return BatchState(batch.id, self.config.name, batch.processing_status, shown)

    async def state(self, batch_id: str) -> BatchState:
        return self._state(await self.client.messages.batches.retrieve(batch_id))

    async def find(self, intent: "Intent", known: set[str]) -> str | None:
        """The batch created for `intent` by a driver that died before recording its id. Message
        Batches carry no metadata, so it is the batch, not among the `known` ids, created from
        just before the intent to a while after it, with as many requests as the intent has
        keys, the nearest in time. Its results are read by key, so a batch that turns out not
        to be it answers nothing and its lines ask again."""
        best: tuple[float, str] | None = None
        async for batch in self.client.messages.batches.list(limit=100):
            created = batch.created_at.timestamp()
            if created < intent.created - _CLOCK_SKEW_S:
                break  # newest first
            if batch.id in known or created > intent.created + _CLOCK_SKEW_S + self.config.timeout_s:
                continue
            c = batch.request_counts
            if c.processing + c.succeeded + c.errored + c.canceled + c.expired != len(intent.keys):
                continue
            gap = abs(created - intent.created)
            if best is None or gap < best[0]:
                best = (gap, batch.id)
        return best[1] if best else None

    async def results(self, state: BatchState) -> AsyncIterator[tuple[str, Outcome]]:
        """Each request's outcome by custom_id, as the results stream in."""
        async for item in await self.client.messages.batches.results(state.id):
            result = item.result
            if result.type == "succeeded":
                yield item.custom_id, Outcome("ok", 200, result.message.to_dict())
            elif result.type == "errored":
                error = result.error.error
                yield item.custom_id, _status_outcome(_ANTHROPIC_STATUS.get(error.type, 500), error.message)
            else:
                yield item.custom_id, Outcome("retry", 0, message=result.type)

    def reply(self, body: Any, request: ChatRequest) -> Reply:
        from orchestray.anthropic_format import json_tool_name, reply_from_message

        reply = reply_from_message(body, json_tool_name(request))
        reply.model = reply.model or self.config.model
        reply.dropped = ("seed",) if request.seed is not None else ()
        return reply

    async def cancel(self, batch_id: str) -> BatchState:
        return self._state(await self.client.messages.batches.cancel(batch_id))

    async def close(self) -> None:
        await self.client.close()


BatchAPI = OpenAIBatchAPI | AnthropicBatchAPI


def open_api(config: ProviderConfig, environ=os.environ) -> BatchAPI:
    key = environ.get(config.api_key_env) if config.api_key_env else None
    if config.kind == "openai":
        return OpenAIBatchAPI(config, key)
    if config.kind == "anthropic":
        return AnthropicBatchAPI(config, key)
    raise ValueError(f"provider {config.name!r} ({config.kind}) has no batch API")


def caps(config: ProviderConfig) -> tuple[int, int]:
    requests, size = DEFAULT_CAPS[config.kind]
    return config.batch.max_requests or requests, config.batch.max_bytes or size
