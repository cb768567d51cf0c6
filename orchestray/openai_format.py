"""The OpenAI chat-completions wire: request bodies to `ChatRequest` and back, answers to bodies.

One translation for every door: the gateway and batch files parse bodies with it, the OpenAI
backend sends `request_params`, and the emulator answers with `completion_body`/`chunk_body`.
Requests are validated by pydantic (a clear message for every wrong field); fields of OpenAI's
request that orchestray does not model (`service_tier`, `prediction`, ...) and provider-specific
extras (what the SDKs send as `extra_body`) travel in `ChatRequest.extra_body`, for the backend
to send or refuse by name. Responses carry orchestray's trace in the extension field `orchestray`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Union

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestray.errors import RequestError
from orchestray.messages import (
    AudioPart,
    ChatRequest,
    Choice,
    Completion,
    FilePart,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
)

__all__ = [
    "ChatCompletionBody",
    "parse_chat_body",
    "request_params",
    "message_dict",
    "completion_body",
    "chunk_body",
    "usage_body",
    "trace_extension",
    "validation_message",
    "describe_errors",
    "new_id",
]


# Request bodies (pydantic: the gateway's OpenAPI document and clear errors) ─────────────────


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TextPart(_Strict):
    type: Literal["text"]
    text: str


class _ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _http_or_data(cls, url: str) -> str:
        if not (url.startswith(("http://", "https://")) or (url.startswith("data:") and "," in url)):
            raise ValueError("must be an http(s) URL or a data URL (data:image/png;base64,...)")
        return url


class _ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: _ImageURL


class _InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class _AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: _InputAudio


class _File(_Strict):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class _FilePart(_Strict):
    type: Literal["file"]
    file: _File


class _RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


_UserPart = Annotated[Union[_TextPart, _ImagePart, _AudioPart, _FilePart], Field(discriminator="type")]
_AssistantPart = Annotated[Union[_TextPart, _RefusalPart], Field(discriminator="type")]


class _Function(_Strict):
    name: str
    arguments: str


class _ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: _Function


class _SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: str | list[_TextPart]
    name: str | None = None


class _UserMessage(_Strict):
    role: Literal["user"]
    content: str | list[_UserPart]
    name: str | None = None


class _AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: str | list[_AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    # Deprecated by OpenAI; accepted when null, as some clients send them so.
    function_call: None = None
    audio: None = None


class _ToolMessage(_Strict):
    role: Literal["tool"]
    content: str | list[_TextPart]
    tool_call_id: str


_ChatMessage = Annotated[
    Union[_SystemMessage, _UserMessage, _AssistantMessage, _ToolMessage], Field(discriminator="role")
]


class _FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _FunctionTool(_Strict):
    type: Literal["function"]
    function: _FunctionDefinition


class _NamedFunction(_Strict):
    name: str


class _NamedToolChoice(_Strict):
    type: Literal["function"]
    function: _NamedFunction


class _JsonSchema(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _FormatText(_Strict):
    type: Literal["text"]


class _FormatJsonObject(_Strict):
    type: Literal["json_object"]


class _FormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: _JsonSchema


_ResponseFormat = Annotated[Union[_FormatText, _FormatJsonObject, _FormatJsonSchema], Field(discriminator="type")]


class _StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# Fields of OpenAI's request that orchestray passes to the provider as they are, unmodelled.
PASSTHROUGH_FIELDS = (
    "service_tier", "modalities", "verbosity", "web_search_options", "audio", "moderation",
    "prediction", "functions", "function_call", "prompt_cache_key", "safety_identifier",
)


class ChatCompletionBody(BaseModel):
    """`POST /v1/chat/completions`: OpenAI's request. Unknown fields are provider extras
    (`extra_body`); the provider that receives them sends them on or refuses them by name."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="a provider or a route")
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, description="Anthropic-style top-k; OpenAI has none")
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    tools: list[_FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds, orchestray extension")

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop):
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    def to_request(self, request_id: str = "") -> ChatRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) if self.stop else None
        fmt = self.response_format
        if fmt is None or isinstance(fmt, _FormatText):
            response_format = ResponseFormat("text") if fmt is not None else None
        elif isinstance(fmt, _FormatJsonObject):
            response_format = ResponseFormat("json_object")
        else:
            spec = fmt.json_schema
            response_format = ResponseFormat("json_schema", spec.name, spec.schema_, spec.strict, spec.description)
        choice = self.tool_choice
        extra = dict(self.model_extra or {})
        if not self.logprobs and self.top_logprobs is not None:
            raise RequestError("top_logprobs: needs logprobs: true", param="top_logprobs")
        # A null field is a field not set (OpenAI's own reading), not a value to pass on.
        extra = {key: value for key, value in extra.items() if value is not None}
        return ChatRequest(
            messages=tuple(_message(m) for m in self.messages),
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=stop,
            seed=self.seed,
            n=self.n or 1,
            tools=tuple(
                Tool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
                for t in self.tools or ()
            ),
            tool_choice=choice.model_dump() if isinstance(choice, _NamedToolChoice) else choice,
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=response_format,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
            reasoning_effort=self.reasoning_effort,
            user=self.user,
            metadata=self.metadata,
            store=self.store,
            extra_body=extra or None,
            timeout_s=self.timeout,
            request_id=request_id,
        )


def _text_of(content: str | list) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def _part(part) -> Part:
    if isinstance(part, _TextPart):
        return TextPart(part.text)
    if isinstance(part, _ImagePart):
        return ImagePart(part.image_url.url, part.image_url.detail)
    if isinstance(part, _AudioPart):
        return AudioPart(part.input_audio.data, part.input_audio.format)
    return FilePart(part.file.file_id, part.file.file_data, part.file.filename)


def _message(m) -> Message:
    if isinstance(m, _UserMessage):
        if isinstance(m.content, str):
            return Message("user", m.content, name=m.name)
        parts = tuple(_part(p) for p in m.content)
        if all(isinstance(p, TextPart) for p in parts):
            return Message("user", "".join(p.text for p in parts), name=m.name)
        return Message("user", parts, name=m.name)
    if isinstance(m, _AssistantMessage):
        content: str | None
        refusal = m.refusal
        if isinstance(m.content, list):
            content = "".join(p.text for p in m.content if isinstance(p, _TextPart))
            refusal = refusal or "".join(p.refusal for p in m.content if isinstance(p, _RefusalPart)) or None
        else:
            content = m.content
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        return Message("assistant", content, name=m.name, tool_calls=calls, refusal=refusal)
    if isinstance(m, _ToolMessage):
        return Message("tool", _text_of(m.content), tool_call_id=m.tool_call_id)
    return Message(m.role, _text_of(m.content), name=m.name)


def _where(loc: tuple, body: Any, missing: bool) -> str:
    """A pydantic error location as a path into the body (`messages[0].content`).

    Pydantic puts union members and discriminator tags in the location (`messages.0.user.content`,
    `stop.str`); only the steps that are keys or indices of the body itself are kept, and the
    last step of a missing field.
    """
    where = ""
    value = body
    tagged = False  # the discriminator's value (a part's type, a message's role) was stepped over
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            where += f"[{part}]"
            value, tagged = value[part], False
        elif isinstance(value, dict) and not tagged and part in (value.get("type"), value.get("role")):
            tagged = True  # {"type": "text", "text": ...}: the first "text" is the tag
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            where += f".{part}" if where else part
            value, tagged = value[part], False
        elif missing and i == len(loc) - 1 and isinstance(part, str):
            where += f".{part}" if where else part
    return where


def describe_errors(errors: list[dict[str, Any]], body: Any) -> tuple[str, str | None]:
    """(One line per problem, the field at fault): `messages[0].role: Input should be ...`.

    The field is the deepest path among the problems: of a union's failed members (`content` as a
    string, or as parts), the one that got furthest says best what was wrong."""
    lines = []
    param = None
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if loc[:1] == ("body",):  # FastAPI's prefix
            loc = loc[1:]
        where = _where(loc, body, e.get("type") == "missing")
        message = "unknown field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        lines.append(f"{where or 'body'}: {message}")
        if where and (param is None or len(where) > len(param)):
            param = where
    return "; ".join(lines) or "invalid request body", param


def validation_message(err: ValidationError, body: Any = None) -> str:
    return describe_errors(err.errors(), body)[0]


def parse_chat_body(body: Any, request_id: str = "") -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError(f"body must be a JSON object, not {type(body).__name__}")
    try:
        return ChatCompletionBody.model_validate(body).to_request(request_id)
    except ValidationError as err:
        raise RequestError(*describe_errors(err.errors(), body)) from None


# Requests as OpenAI bodies (what the OpenAI backend sends) ──────────────────────────────────


def _part_dict(part: Part) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case ImagePart(url=url, detail=detail):
            image: dict[str, Any] = {"url": url}
            if detail is not None:
                image["detail"] = detail
            return {"type": "image_url", "image_url": image}
        case AudioPart(data=data, format=fmt):
            return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
        case FilePart():
            file = {k: v for k, v in (("file_id", part.file_id), ("file_data", part.file_data),
                                      ("filename", part.filename)) if v is not None}
            return {"type": "file", "file": file}
    raise TypeError(f"not a content part: {part!r}")


def tool_call_dict(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def message_dict(m: Message, developer_as_system: bool = False) -> dict[str, Any]:
    """A message as OpenAI's request holds it."""
    role = "system" if developer_as_system and m.role == "developer" else m.role
    out: dict[str, Any] = {"role": role}
    content = m.content
    if isinstance(content, tuple):
        out["content"] = [_part_dict(p) for p in content]
    elif content is None or (content == "" and m.tool_calls):
        out["content"] = None
    else:
        out["content"] = content
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [tool_call_dict(c) for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.refusal is not None:
        out["refusal"] = m.refusal
    return out


def tool_dict(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def response_format_dict(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    for key, value in (("description", fmt.description), ("schema", fmt.schema), ("strict", fmt.strict)):
        if value is not None:
            spec[key] = value
    return {"type": "json_schema", "json_schema": spec}


# Fields sent as they are when set.
_SCALAR_FIELDS = (
    "temperature", "top_p", "top_k", "seed", "parallel_tool_calls", "logprobs", "top_logprobs",
    "presence_penalty", "frequency_penalty", "logit_bias", "reasoning_effort", "user", "metadata",
    "store", "tool_choice",
)


def request_params(
    request: ChatRequest,
    model: str,
    max_tokens_field: str = "max_completion_tokens",
    developer_as_system: bool = False,
) -> dict[str, Any]:
    """The JSON body of `POST /chat/completions` for a request: only what the caller set,
    `extra_body` merged in last (the SDKs' own rule)."""
    params: dict[str, Any] = {
        "model": model,
        "messages": [message_dict(m, developer_as_system) for m in request.messages],
    }
    if request.max_tokens is not None:
        params[max_tokens_field] = request.max_tokens
    for field in _SCALAR_FIELDS:
        value = getattr(request, field)
        if value is not None:
            params[field] = value
    if request.stop:
        params["stop"] = list(request.stop)
    if request.n != 1:
        params["n"] = request.n
    if request.tools:
        params["tools"] = [tool_dict(t) for t in request.tools]
    if request.response_format is not None:
        params["response_format"] = response_format_dict(request.response_format)
    if request.extra_body:
        params.update(request.extra_body)
    return params


# Answers as OpenAI bodies (the gateway, batch output, the emulator) ────────────────────────


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_body(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.input_tokens,
        "completion_tokens": completion.output_tokens,
        "total_tokens": completion.input_tokens + completion.output_tokens,
        "prompt_tokens_details": {"cached_tokens": completion.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": completion.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _choice_body(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI's null content: an answer that is only tool calls (or only a refusal).
        "content": choice.content if choice.content or not (choice.tool_calls or choice.refusal) else None,
        "refusal": choice.refusal,
    }
    if choice.tool_calls:
        message["tool_calls"] = [tool_call_dict(c) for c in choice.tool_calls]
    return {
        "index": choice.index,
        "message": message,
        "logprobs": choice.logprobs,
        "finish_reason": choice.finish_reason,
    }


def trace_extension(completion: Completion) -> dict[str, Any]:
    return {
        "provider": completion.provider,
        "cost": completion.cost,
        "latency_s": completion.latency_s,
        "confidence": completion.confidence,
        "trace": msgspec.to_builtins(completion.trace) if completion.trace else None,
    }


def completion_body(
    completion: Completion, request_id: str, model: str | None = None, extension: bool = True
) -> dict[str, Any]:
    """An OpenAI `chat.completion` object; `model` is what the caller asked for (a route, say)."""
    body: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or completion.model,
        "choices": [_choice_body(c) for c in completion.choices()],
        "usage": usage_body(completion),
    }
    if extension:
        body["orchestray"] = trace_extension(completion)
    return body


def chunk_body(
    request_id: str,
    model: str,
    created: int,
    delta: str | None = None,
    finish_reason: str | None = None,
    completion: Completion | None = None,
    role: bool = False,
    choice: int = 0,
    tool_calls: tuple[ToolCallDelta, ...] = (),
    refusal: str | None = None,
    logprobs: dict[str, Any] | None = None,
    extension: bool = True,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `completion`, the closing usage chunk."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if completion is not None:
        body["choices"] = []
        body["usage"] = usage_body(completion)
        if extension:
            body["orchestray"] = trace_extension(completion)
        return body
    piece: dict[str, Any] = {}
    if role:
        piece["role"] = "assistant"
        piece["content"] = ""
        piece["refusal"] = None
    if delta:
        piece["content"] = delta
    if refusal:
        piece["refusal"] = refusal
    if tool_calls:
        calls = []
        for call in tool_calls:
            entry: dict[str, Any] = {"index": call.index}
            function: dict[str, Any] = {"arguments": call.arguments}
            if call.id is not None:
                entry["id"] = call.id
                entry["type"] = "function"
            if call.name is not None:
                function["name"] = call.name
            entry["function"] = function
            calls.append(entry)
        piece["tool_calls"] = calls
    entry = {"index": choice, "delta": piece, "finish_reason": finish_reason}
    if logprobs is not None:
        entry["logprobs"] = logprobs
    body["choices"] = [entry]
    return body
