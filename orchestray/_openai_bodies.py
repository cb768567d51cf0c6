"""OpenAI chat-completion request bodies to `ChatRequest`: the pydantic models behind the gateway's
OpenAPI document and batch lines, and the clear message for every wrong field."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestray.errors import RequestError
from orchestray.messages import (
    AudioPart, ChatRequest, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolCall
)


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
