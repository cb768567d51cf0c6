"""The OpenAI chat-completions wire format, for OpenAI and any OpenAI-compatible server."""

from __future__ import annotations

from typing import Any, AsyncIterator

import msgspec
import openai

from orchestray.backends._reply import Reply, parse_quota
from orchestray.backends._sdk_errors import from_sdk_error
from orchestray.config import ProviderConfig
from orchestray.errors import ProviderUnavailableError
from orchestray.messages import ChatRequest

__all__ = ["OpenAIBackend"]

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}


# A view of a chat completion: only what a Reply needs. msgspec skips the rest of the body,
# which is several times cheaper than the SDK building its pydantic models for every answer.
class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None


class _ChatCompletion(msgspec.Struct):
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


_decode_completion = msgspec.json.Decoder(_ChatCompletion).decode
# What `client.post` hands back: the HTTP response, headers and body, unparsed.
_RAW = openai.AsyncAPIResponse[object]


class OpenAIBackend:
    def __init__(self, config: ProviderConfig, api_key: str | None, client: openai.AsyncOpenAI | None = None):
        self.name = config.name
        self.model = config.model
        self._secrets = (api_key,) if api_key else ()
        # OpenAI itself wants max_completion_tokens; many compatible servers know only max_tokens.
        self._max_tokens_field = "max_completion_tokens" if config.base_url is None else "max_tokens"
        self._client = client or openai.AsyncOpenAI(
            api_key=api_key or "no-key",
            base_url=config.base_url,
            max_retries=0,  # the provider's one retry loop decides
            timeout=config.timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=config.timeout_s),
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.max_tokens is not None:
            params[self._max_tokens_field] = request.max_tokens
        for field in ("temperature", "top_p", "seed"):
            value = getattr(request, field)
            if value is not None:
                params[field] = value
        if request.stop:
            params["stop"] = list(request.stop)
        if request.timeout_s is not None:
            params["timeout"] = request.timeout_s
        return params

    async def complete(self, request: ChatRequest) -> Reply:
        params = self._params(request)
        options = {"timeout": params.pop("timeout")} if "timeout" in params else {}
        try:
            # The SDK's own client (auth, base URL, transport, timeouts, status errors), posting
            # the body `chat.completions.create` would send: our params are plain JSON already,
            # so its per-call typed-dict transform and pydantic parse are skipped (see _ChatCompletion).
            raw = await self._client.post("/chat/completions", body=params, cast_to=_RAW, options=options)
            body = await raw.read()
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        try:
            response = _decode_completion(body)
        except msgspec.DecodeError as err:
            raise ProviderUnavailableError(f"the answer is not a chat completion: {err}", provider=self.name) from None
        choice = response.choices[0] if response.choices else None
        message = choice.message if choice else None
        usage = response.usage
        return Reply(
            text=(message.content or "") if message else "",
            input_tokens=(usage.prompt_tokens or 0) if usage else 0,
            output_tokens=(usage.completion_tokens or 0) if usage else 0,
            finish_reason=_FINISH.get((choice.finish_reason or "") if choice else "", "stop"),
            model=response.model or self.model,
            quota=parse_quota(raw.headers),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Reply]:
        params = self._params(request)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        try:
            stream = await self._client.chat.completions.create(**params)
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        parts: list[str] = []
        finish = "stop"
        input_tokens = output_tokens = 0
        model = self.model
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    input_tokens = chunk.usage.prompt_tokens
                    output_tokens = chunk.usage.completion_tokens
                model = chunk.model or model
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        yield choice.delta.content
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, "stop")
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        finally:
            await stream.close()
        yield Reply("".join(parts), input_tokens, output_tokens, finish, model, parse_quota(stream.response.headers))

    async def close(self) -> None:
        await self._client.close()
