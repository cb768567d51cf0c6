"""The OpenAI chat-completions wire format, for OpenAI and any OpenAI-compatible server."""

from __future__ import annotations

from typing import Any, AsyncIterator

import msgspec
import openai

from orchestray.backends import refuse_unsupported
from orchestray.backends._reply import Reply, parse_quota
from orchestray.backends._sdk_errors import from_sdk_error
from orchestray.backends._send_stamp import stamp_sends
from orchestray.config import ProviderConfig
from orchestray.errors import ProviderUnavailableError
from orchestray.messages import ChatRequest, Choice, Chunk, ToolCall, ToolCallDelta
from orchestray.openai_format import request_params

__all__ = ["OpenAIBackend", "reply_from_completion"]

_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls",
           "function_call": "tool_calls"}

# The wire carries every request field as it is; unmodelled ones travel in extra_body. Only
# top_k has no meaning on OpenAI's own API (vLLM, Ollama and llama.cpp take it).
_EVERY_FIELD = frozenset(ChatRequest.__struct_fields__) | {"extra_body.*"}
_HOSTED_FIELDS = _EVERY_FIELD - {"top_k"}


# A view of a chat completion: only what a Reply needs. msgspec skips the rest of the body,
# which is several times cheaper than the SDK building its pydantic models for every answer.
class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None


class _ChatCompletion(msgspec.Struct):
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


_decode_completion = msgspec.json.Decoder(_ChatCompletion).decode
# What `client.post` hands back: the HTTP response, headers and body, unparsed.
_RAW = openai.AsyncAPIResponse[object]
# A stream of chunks as plain dicts: no pydantic model built per chunk, and no typed create()
# call that would refuse the fields it does not know (extra_body is merged into the body).
_RAW_STREAM = openai.AsyncStream[object]


def _usage_counts(usage: Any) -> tuple[int, int, int, int]:
    """(prompt, completion, cached, reasoning) tokens from a usage view or dict."""
    if usage is None:
        return 0, 0, 0, 0
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        return (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                prompt.get("cached_tokens") or 0, completion.get("reasoning_tokens") or 0)
    prompt_details, completion_details = usage.prompt_tokens_details, usage.completion_tokens_details
    return (usage.prompt_tokens or 0, usage.completion_tokens or 0,
            (prompt_details.cached_tokens or 0) if prompt_details else 0,
            (completion_details.reasoning_tokens or 0) if completion_details else 0)


def _choice(view: _Choice, position: int) -> Choice:
    message = view.message or _Message()
    calls = tuple(
        ToolCall(c.id or f"call_{position}_{i}", (c.function.name or "") if c.function else "",
                 (c.function.arguments or "") if c.function else "")
        for i, c in enumerate(message.tool_calls or ())
    )
    return Choice(
        index=view.index,
        content=message.content or "",
        refusal=message.refusal,
        tool_calls=calls,
        logprobs=view.logprobs,
        finish_reason=_FINISH.get(view.finish_reason or "", "stop"),
    )


class _StreamedChoice:
    """One choice of a stream as its pieces arrive: text, refusal, tool calls by index, logprobs."""

    __slots__ = ("text", "refusal", "calls", "logprobs", "finish_reason")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, list] = {}  # index -> [id, name, argument pieces]
        self.logprobs: dict[str, list] | None = None
        self.finish_reason = "stop"

    def add_logprobs(self, logprobs: dict[str, Any]) -> None:
        merged = self.logprobs if self.logprobs is not None else {}
        for key, values in logprobs.items():
            if values:
                merged.setdefault(key, []).extend(values)
        self.logprobs = merged

    def choice(self, index: int) -> Choice:
        calls = tuple(
            ToolCall(call_id or f"call_{index}_{i}", name or "", "".join(pieces))
            for i, (call_id, name, pieces) in sorted(self.calls.items())
        )
        logprobs = None
        if self.logprobs is not None:
            logprobs = {"content": self.logprobs.get("content"), "refusal": self.logprobs.get("refusal")}
        return Choice(index=index, content="".join(self.text), refusal="".join(self.refusal) or None,
                      tool_calls=calls, logprobs=logprobs, finish_reason=self.finish_reason)


def reply_from_completion(body: bytes, provider: str, model: str, quota=None) -> Reply:
    """A chat completion's JSON as a Reply: a live answer's body, or one line of a batch's output."""
    try:
        response = _decode_completion(body)
    except msgspec.DecodeError as err:
        raise ProviderUnavailableError(f"the answer is not a chat completion: {err}", provider=provider) from None
    if not response.choices:
        raise ProviderUnavailableError("the answer has no choices", provider=provider)
    choices = sorted(response.choices, key=lambda c: c.index)
    first = _choice(choices[0], 0)
    input_tokens, output_tokens, cached, reasoning = _usage_counts(response.usage)
    return Reply(
        text=first.content,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason=first.finish_reason,
        model=response.model or model,
        quota=quota,
        tool_calls=first.tool_calls,
        refusal=first.refusal,
        logprobs=first.logprobs,
        more_choices=tuple(_choice(c, i) for i, c in enumerate(choices[1:], start=1)),
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


class OpenAIBackend:
    def __init__(self, config: ProviderConfig, api_key: str | None, client: openai.AsyncOpenAI | None = None):
        self.name = config.name
        self.model = config.model
        self._secrets = (api_key,) if api_key else ()
        compatible = config.base_url is not None
        # OpenAI itself wants max_completion_tokens; many compatible servers know only max_tokens.
        self._max_tokens_field = "max_tokens" if compatible else "max_completion_tokens"
        # A compatible server renders roles through the model's chat template, and most templates
        # (Llama, Qwen, Mistral) know system but not developer: vLLM hands the role through and
        # the template rejects or mis-renders it, Ollama leaves it to the model. OpenAI's own API
        # keeps developer, which its reasoning models rank apart from system.
        self._developer_as_system = compatible
        self._supported = _EVERY_FIELD if compatible else _HOSTED_FIELDS
        self._kind = "openai-compatible" if compatible else "openai"
        self._client = client or openai.AsyncOpenAI(
            api_key=api_key or "no-key",
            base_url=config.base_url,
            max_retries=0,  # the provider's one retry loop decides
            timeout=config.timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=config.timeout_s),
        )
        # Calls count in the limiter's window from when their headers are written (see _send_stamp).
        self.stamps_sends = client is None and stamp_sends(self._client)

    def params(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body this backend posts for a request (after refusing what it cannot send)."""
        refuse_unsupported(request, self.name, self._kind, self._supported)
        return request_params(request, self.model, self._max_tokens_field, self._developer_as_system)

    async def complete(self, request: ChatRequest) -> Reply:
        params = self.params(request)
        options = {"timeout": request.timeout_s} if request.timeout_s is not None else {}
        try:
            # The SDK's own client (auth, base URL, transport, timeouts, status errors), posting
            # the body `chat.completions.create` would send: our params are plain JSON already,
            # so its per-call typed-dict transform and pydantic parse are skipped (see _ChatCompletion).
            raw = await self._client.post("/chat/completions", body=params, cast_to=_RAW, options=options)
            body = await raw.read()
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        return reply_from_completion(body, self.name, self.model, parse_quota(raw.headers))

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Chunk | Reply]:
        """Choice 0's text as str; its tool-call and refusal pieces, and every piece of the other
        choices (n > 1), as Chunks; then one Reply with every choice assembled."""
        params = self.params(request)
        params["stream"] = True
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
        options = {"timeout": request.timeout_s} if request.timeout_s is not None else {}
        try:
            stream = await self._client.post("/chat/completions", body=params, cast_to=object, options=options,
                                             stream=True, stream_cls=_RAW_STREAM)
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        choices: dict[int, _StreamedChoice] = {}
        usage = None
        model = self.model
        try:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]
                model = chunk.get("model") or model
                for entry in chunk.get("choices") or ():
                    index = entry.get("index") or 0
                    state = choices.get(index)
                    if state is None:
                        state = choices[index] = _StreamedChoice()
                    delta = entry.get("delta") or {}
                    text = delta.get("content")
                    refusal = delta.get("refusal")
                    pieces = []
                    for call in delta.get("tool_calls") or ():
                        position = call.get("index") or 0
                        function = call.get("function") or {}
                        slot = state.calls.get(position)
                        if slot is None:
                            slot = state.calls[position] = [None, None, []]
                        slot[0] = slot[0] or call.get("id")
                        slot[1] = slot[1] or function.get("name")
                        arguments = function.get("arguments") or ""
                        slot[2].append(arguments)
                        pieces.append(ToolCallDelta(position, call.get("id"), function.get("name"), arguments))
                    if text:
                        state.text.append(text)
                    if refusal:
                        state.refusal.append(refusal)
                    if entry.get("logprobs"):
                        state.add_logprobs(entry["logprobs"])
                    if entry.get("finish_reason"):
                        state.finish_reason = _FINISH.get(entry["finish_reason"], "stop")
                    if index == 0 and text and not pieces and not refusal:
                        yield text  # the common case: plain text of the only choice
                    elif text or pieces or refusal:
                        yield Chunk(delta=text or "", choice=index, tool_calls=tuple(pieces), refusal=refusal)
        except openai.OpenAIError as err:
            raise from_sdk_error(err, openai, self.name, self._secrets) from None
        finally:
            await stream.close()
        assembled = [state.choice(i) for i, state in sorted(choices.items())] or [Choice()]
        first = assembled[0]
        input_tokens, output_tokens, cached, reasoning = _usage_counts(usage)
        yield Reply(
            text=first.content,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=first.finish_reason,
            model=model,
            quota=parse_quota(stream.response.headers),
            tool_calls=first.tool_calls,
            refusal=first.refusal,
            logprobs=first.logprobs,
            more_choices=tuple(assembled[1:]),
            cached_tokens=cached,
            reasoning_tokens=reasoning,
        )

    async def close(self) -> None:
        await self._client.close()
