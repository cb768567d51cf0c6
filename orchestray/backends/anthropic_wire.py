"""The Anthropic messages wire format: system prompts apart, max_tokens required, own events."""

from __future__ import annotations

from typing import Any, AsyncIterator

import anthropic

from orchestray.backends._reply import Reply, parse_quota
from orchestray.backends._sdk_errors import from_sdk_error
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest

__all__ = ["AnthropicBackend", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 1024  # the API requires a value; OpenAI-style callers often send none
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicBackend:
    def __init__(self, config: ProviderConfig, api_key: str | None, client: anthropic.AsyncAnthropic | None = None):
        self.name = config.name
        self.model = config.model
        self._secrets = (api_key,) if api_key else ()
        self._client = client or anthropic.AsyncAnthropic(
            api_key=api_key or "no-key",
            base_url=config.base_url,
            max_retries=0,
            timeout=config.timeout_s,
            http_client=anthropic.DefaultAioHttpClient(timeout=config.timeout_s),
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        turns: list[dict[str, str]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            role = "assistant" if m.role == "assistant" else "user"
            if turns and turns[-1]["role"] == role:
                # The API wants turns to alternate; OpenAI-style histories need not.
                turns[-1]["content"] += "\n\n" + m.content
            else:
                turns.append({"role": role, "content": m.content})
        params: dict[str, Any] = {
            "model": self.model,
            "messages": turns,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        if system:
            params["system"] = system
        if request.temperature is not None:
            params["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.timeout_s is not None:
            params["timeout"] = request.timeout_s
        return params

    async def complete(self, request: ChatRequest) -> Reply:
        try:
            raw = await self._client.messages.with_raw_response.create(**self._params(request))
            message = await raw.parse()
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text")
        return Reply(
            text=text,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            finish_reason=_FINISH.get(message.stop_reason or "", "stop"),
            model=message.model or self.model,
            quota=parse_quota(raw.headers),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Reply]:
        params = self._params(request)
        params["stream"] = True
        try:
            stream = await self._client.messages.create(**params)
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        parts: list[str] = []
        finish = "stop"
        input_tokens = output_tokens = 0
        model = self.model
        try:
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    input_tokens = event.message.usage.input_tokens
                    output_tokens = event.message.usage.output_tokens
                    model = event.message.model or model
                elif kind == "content_block_delta" and event.delta.type == "text_delta":
                    parts.append(event.delta.text)
                    yield event.delta.text
                elif kind == "message_delta":
                    finish = _FINISH.get(event.delta.stop_reason or "", "stop")
                    output_tokens = event.usage.output_tokens
        except anthropic.AnthropicError as err:
            raise from_sdk_error(err, anthropic, self.name, self._secrets) from None
        finally:
            await stream.close()
        yield Reply("".join(parts), input_tokens, output_tokens, finish, model, parse_quota(stream.response.headers))

    async def close(self) -> None:
        await self._client.close()
