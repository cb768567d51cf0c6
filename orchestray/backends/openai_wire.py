"""The OpenAI chat-completions wire format, for OpenAI and any OpenAI-compatible server."""

from __future__ import annotations

from typing import Any, AsyncIterator

import openai

from orchestray.backends._reply import Reply, parse_quota
from orchestray.backends._sdk_errors import from_sdk_error
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest

__all__ = ["OpenAIBackend"]

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}


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
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**self._params(request))
            response = raw.parse()
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Reply(
            text=(choice.message.content or "") if choice else "",
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            finish_reason=_FINISH.get(choice.finish_reason if choice else "", "stop"),
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
