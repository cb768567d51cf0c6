"""The Anthropic Messages API backend: `anthropic_format` over the official SDK, per provider."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, AsyncIterator

import anthropic

from orchestray.anthropic_format import SAMPLING_FIELDS, StreamDecoder, json_tool_name, reply_from_message, request_body
from orchestray.backends import refuse_unsupported
from orchestray.backends._reply import Reply, parse_quota
from orchestray.backends._sdk_errors import from_sdk_error
from orchestray.backends._send_stamp import stamp_sends
from orchestray.config import ProviderConfig
from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Chunk, Choice

__all__ = ["AnthropicBackend"]

log = logging.getLogger(__name__)

# What the Messages API can honour. `seed` is taken and not sent: the API has no such field
# (it answers 400 to one), OpenAI's own is best-effort, and patterns ask each sample with its
# own seed only so that samples differ, which Anthropic's always do; the trace lists it as
# dropped. `n` > 1 is n calls. The rest (logprobs, penalties, logit_bias, ...) is refused.
_SUPPORTED = frozenset({
    "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "user", "extra_body.*",
})
# Body fields sent as the SDK's own arguments: those every SDK version the package allows takes.
# Everything else (temperature, top_p, top_k since anthropic 1.0, provider extras) goes in
# `extra_body`, which the SDK merges into the JSON as it is.
_SDK_ARGUMENTS = ("model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences", "metadata")
_DEPRECATED = re.compile(r"`?(temperature|top_p|top_k)`? (?:is|are) deprecated for this model")


def _sampling_set(request: ChatRequest) -> tuple[str, ...]:
    return tuple(f for f in SAMPLING_FIELDS if getattr(request, f) is not None)


class AnthropicBackend:
    def __init__(self, config: ProviderConfig, api_key: str | None, client: anthropic.AsyncAnthropic | None = None):
        self.name = config.name
        self.model = config.model
        self.drop_deprecated_sampling = config.drop_deprecated_sampling
        self._secrets = (api_key,) if api_key else ()
        # Models that said sampling fields are deprecated for them: asked without from then on.
        self._without_sampling: set[str] = set()
        self._client = client or anthropic.AsyncAnthropic(
            api_key=api_key or "no-key",
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout_s,
            http_client=anthropic.DefaultAioHttpClient(timeout=config.timeout_s),
        )
        # Calls count in the limiter's window from when their headers are written (see _send_stamp).
        self.stamps_sends = client is None and stamp_sends(self._client)

    def _arguments(self, request: ChatRequest, sampling: bool, stream: bool) -> dict[str, Any]:
        body = request_body(request, self.model, sampling=sampling)
        arguments = {k: body.pop(k) for k in _SDK_ARGUMENTS if k in body}
        if body:
            arguments["extra_body"] = body
        if stream:
            arguments["stream"] = True
        if request.timeout_s is not None:
            arguments["timeout"] = request.timeout_s
        return arguments

    def _dropped(self, request: ChatRequest, sampling: bool) -> tuple[str, ...]:
        dropped = () if sampling else _sampling_set(request)
        return dropped + (("seed",) if request.seed is not None else ())

    def _retry_without_sampling(self, err: anthropic.AnthropicError, request: ChatRequest, sampling: bool) -> bool:
        """Whether `err` is the model refusing sampling fields, to be asked again without them."""
        if not (sampling and self.drop_deprecated_sampling and _sampling_set(request)):
            return False
        if not isinstance(err, anthropic.BadRequestError) or not _DEPRECATED.search(str(err)):
            return False
        if self.model not in self._without_sampling:
            self._without_sampling.add(self.model)
            log.warning(
                "provider %r: model %r refuses sampling fields (%s); sending it none from now on "
                "(drop_deprecated_sampling: false turns this off)",
                self.name, self.model, ", ".join(SAMPLING_FIELDS),
            )
        return True

    def _check(self, request: ChatRequest) -> None:
        refuse_unsupported(request, self.name, "anthropic", _SUPPORTED)

    def params(self, request: ChatRequest) -> dict[str, Any]:
        """The Messages API body this backend sends for a request (a batch request's `params`)."""
        self._check(request)
        if request.n != 1:
            raise RequestError(f"n: more than one choice is not supported in batches by provider {self.name!r} "
                               "(anthropic)", param="n")
        return request_body(request, self.model, sampling=self.model not in self._without_sampling)

    async def complete(self, request: ChatRequest) -> Reply:
        self._check(request)
        if request.n == 1:
            return await self._complete_one(request)
        # The API has no `n`: n independent calls, their usage summed as it is billed.
        replies = await asyncio.gather(*(self._complete_one(request) for _ in range(request.n)))
        first = replies[0]
        first.more_choices = tuple(
            Choice(index=i, content=r.text, tool_calls=r.tool_calls, finish_reason=r.finish_reason)
            for i, r in enumerate(replies[1:], start=1)
        )
        first.input_tokens = sum(r.input_tokens for r in replies)
        first.output_tokens = sum(r.output_tokens for r in replies)
        first.cached_tokens = sum(r.cached_tokens for r in replies)
        return first

    async def _complete_one(self, request: ChatRequest) -> Reply:
        sampling = self.model not in self._without_sampling
        try:
            return await self._create(request, sampling)
        except anthropic.AnthropicError as err:
            if not self._retry_without_sampling(err, request, sampling):
                raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        try:
            return await self._create(request, False)
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None

    async def _create(self, request: ChatRequest, sampling: bool) -> Reply:
        arguments = self._arguments(request, sampling, stream=False)
        raw = await self._client.messages.with_raw_response.create(**arguments)
        reply = reply_from_message(await raw.json(), json_tool_name(request), parse_quota(raw.headers))
        reply.model = reply.model or self.model
        reply.dropped = self._dropped(request, sampling)
        return reply

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Chunk | Reply]:
        self._check(request)
        if request.n != 1:
            raise RequestError(f"n: streams more than one choice are not supported by provider {self.name!r} "
                               "(anthropic)", param="n")
        sampling = self.model not in self._without_sampling
        try:
            try:
                stream = await self._client.messages.create(**self._arguments(request, sampling, stream=True))
            except anthropic.AnthropicError as err:
                if not self._retry_without_sampling(err, request, sampling):
                    raise
                sampling = False
                stream = await self._client.messages.create(**self._arguments(request, sampling, stream=True))
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        decoder = StreamDecoder(json_tool_name(request), self.model)
        try:
            async for event in stream:
                for piece in decoder.feed(event.to_dict()):
                    yield piece
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        finally:
            await stream.close()
        reply = decoder.reply(parse_quota(stream.response.headers))
        reply.dropped = self._dropped(request, sampling)
        yield reply

    async def close(self) -> None:
        await self._client.close()
