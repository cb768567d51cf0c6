"""The Anthropic Messages wire as the gateway's `POST /v1/messages` speaks it: a request body to a
`ChatRequest`, and a `Completion` back to a message, SSE events or an error. `anthropic_format`
describes both sides."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestray._anthropic_client_side import _dumps
from orchestray.errors import RequestError
from orchestray.messages import (
    ChatRequest, Chunk, Completion, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool,
    ToolCall
)
from orchestray.openai_format import trace_extension

_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


# An Anthropic request body -> ChatRequest (the gateway's ingress) ──────────────────────────────


class _Block(BaseModel):
    # `cache_control` (a caching hint) and `citations` are accepted on every block and not
    # forwarded: a route may answer from any provider, most of which have no such thing.
    model_config = ConfigDict(extra="forbid")
    cache_control: dict[str, Any] | None = None


class _TextBlock(_Block):
    type: Literal["text"]
    text: str
    citations: list[dict[str, Any]] | None = None


class _Base64Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["base64"]
    media_type: str
    data: str


class _URLSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["url"]
    url: str = Field(pattern=r"^https?://")


_Source = Annotated[Union[_Base64Source, _URLSource], Field(discriminator="type")]


class _ImageBlock(_Block):
    type: Literal["image"]
    source: _Source


class _DocumentBlock(_Block):
    type: Literal["document"]
    source: _Base64Source
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None


class _ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


_ResultPart = Annotated[Union[_TextBlock, _ImageBlock], Field(discriminator="type")]


class _ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[_ResultPart] | None = None
    is_error: bool | None = None


_UserBlock = Annotated[
    Union[_TextBlock, _ImageBlock, _DocumentBlock, _ToolResultBlock], Field(discriminator="type")
]
_AssistantBlock = Annotated[Union[_TextBlock, _ToolUseBlock], Field(discriminator="type")]


class _UserTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user"]
    content: str | list[_UserBlock]


class _AssistantTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["assistant"]
    content: str | list[_AssistantBlock]


_Turn = Annotated[Union[_UserTurn, _AssistantTurn], Field(discriminator="role")]


class _ToolParam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None


class _ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = None


class MessagesBody(BaseModel):
    """`POST /v1/messages`: Anthropic's request. Unknown fields are provider extras
    (`extra_body`), sent on or refused by name by the provider that gets them."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="a provider or a route")
    messages: list[_Turn] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[_TextBlock] | None = None
    tools: list[_ToolParam] | None = None
    tool_choice: _ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: _Metadata | None = None
    stream: bool | None = None
    # Anthropic's structured output: {"format": {"type": "json_schema", "schema": {...}}, ...}
    output_config: dict[str, Any] | None = None

    def to_request(self, request_id: str = "") -> ChatRequest:
        extra = dict(self.model_extra or {})
        response_format = None
        if self.output_config:
            config = dict(self.output_config)
            fmt = config.pop("format", None)
            if fmt is not None:
                schema = fmt.get("schema") if isinstance(fmt, dict) else None
                if not isinstance(schema, dict) or fmt.get("type") != "json_schema":
                    raise RequestError("output_config.format: must be {type: json_schema, schema: {...}}",
                                       param="output_config.format")
                response_format = ResponseFormat("json_schema", "json_answer", schema)
            if config:
                extra["output_config"] = config
        choice = self.tool_choice
        tool_choice: str | dict[str, Any] | None = None
        if choice is not None:
            if choice.type == "tool":
                if not choice.name:
                    raise RequestError("tool_choice.name: required when type is tool", param="tool_choice.name")
                tool_choice = {"type": "function", "function": {"name": choice.name}}
            else:
                tool_choice = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        system = self.system if isinstance(self.system, str) else "".join(b.text for b in self.system or ())
        messages = [Message("system", system)] if system else []
        for turn in self.messages:
            messages += _from_turn(turn)
        return ChatRequest(
            messages=tuple(messages),
            model=self.model,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop_sequences) if self.stop_sequences else None,
            tools=tuple(Tool(t.name, t.description, t.input_schema, t.strict) for t in self.tools or ()),
            tool_choice=tool_choice,
            parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
            response_format=response_format,
            user=self.metadata.user_id if self.metadata else None,
            extra_body=extra or None,
            request_id=request_id,
        )


def _from_block(block) -> Part:
    if isinstance(block, _TextBlock):
        return TextPart(block.text)
    if isinstance(block, _ImageBlock):
        source = block.source
        if isinstance(source, _URLSource):
            return ImagePart(source.url)
        return ImagePart(f"data:{source.media_type};base64,{source.data}")
    if isinstance(block, _DocumentBlock):
        return FilePart(file_data=f"data:{block.source.media_type};base64,{block.source.data}", filename=block.title)
    raise TypeError(f"not a content block: {block!r}")


def _content(parts: list[Part]) -> str | tuple[Part, ...]:
    if all(isinstance(p, TextPart) for p in parts):
        return "".join(p.text for p in parts)
    return tuple(parts)


def _from_turn(turn) -> list[Message]:
    if isinstance(turn, _AssistantTurn):
        if isinstance(turn.content, str):
            return [Message("assistant", turn.content)]
        text = "".join(b.text for b in turn.content if isinstance(b, _TextBlock))
        calls = tuple(ToolCall(b.id, b.name, _dumps(b.input)) for b in turn.content if isinstance(b, _ToolUseBlock))
        return [Message("assistant", text if text or not calls else None, tool_calls=calls)]
    if isinstance(turn.content, str):
        return [Message("user", turn.content)]
    out: list[Message] = []
    pending: list[Part] = []
    for block in turn.content:
        if not isinstance(block, _ToolResultBlock):
            pending.append(_from_block(block))
            continue
        if pending:
            out.append(Message("user", _content(pending)))
            pending = []
        result = block.content
        parts = [TextPart(result)] if isinstance(result, str) else [_from_block(b) for b in result or ()]
        if block.is_error:
            # OpenAI's tool turn has no error flag; the text says it, as Anthropic's docs suggest.
            parts.insert(0, TextPart("Error: "))
        out.append(Message("tool", _content(parts), tool_call_id=block.tool_use_id))
    if pending:
        out.append(Message("user", _content(pending)))
    return out


def _where(loc: tuple) -> str:
    """A pydantic error location without its union labels: `messages[0].content[1].source.url`,
    not `messages[0].user.content.list[tagged-union[...]][1].image.source.url.url`."""
    where = ""
    tagged = False  # the next part after a list index is a discriminator's tag
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
            tagged = tagged or (i == 1 and loc[0] == "messages")
            continue
        if part == "str" or part.startswith(("list[", "tagged-union[")):
            tagged = part.startswith("list[tagged-union[")
            continue
        if tagged or (i > 0 and loc[i - 1] == "source"):
            tagged = False
            continue
        where += f".{part}" if where else part
    return where or "body"


def _problems(err: ValidationError) -> str:
    errors = err.errors()
    # For `str | list[...]` pydantic reports both branches; the string one says nothing when
    # the value was a list.
    lists = {_where(e["loc"]) for e in errors if any(isinstance(p, str) and p.startswith("list[") for p in e["loc"])
             and e["type"] != "list_type"}
    lines = []
    for e in errors:
        where = _where(e["loc"])
        if e["type"] == "string_type" and e["loc"][-1:] == ("str",) and any(w.startswith(where) for w in lists):
            continue
        message = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}: {message}")
    return "; ".join(dict.fromkeys(lines))


def parse_messages_body(body: Any, request_id: str = "") -> tuple[ChatRequest, bool]:
    """(the request, whether it asks for a stream); a RequestError says what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(f"body must be a JSON object, not {type(body).__name__}")
    try:
        parsed = MessagesBody.model_validate(body)
    except ValidationError as err:
        raise RequestError(_problems(err)) from None
    return parsed.to_request(request_id), bool(parsed.stream)


# Completion -> an Anthropic message and SSE events (the gateway's ingress) ───────────────────


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _tool_use_block(call: ToolCall) -> dict[str, Any]:
    arguments = call.parsed_arguments()
    return {"type": "tool_use", "id": call.id, "name": call.name,
            "input": arguments if isinstance(arguments, dict) else {}}


def _usage_body(completion: Completion) -> dict[str, Any]:
    return {
        "input_tokens": max(0, completion.input_tokens - completion.cached_tokens),
        "output_tokens": completion.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": completion.cached_tokens,
    }


def message_body(completion: Completion, message_id: str, model: str, extension: bool = True) -> dict[str, Any]:
    """An Anthropic `message` for a completion (its first choice); `model` is what was asked for."""
    content: list[dict[str, Any]] = []
    text = completion.content or completion.refusal or ""
    if text:
        content.append({"type": "text", "text": text})
    content += [_tool_use_block(c) for c in completion.tool_calls]
    body: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASON.get(completion.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": _usage_body(completion),
    }
    if extension:
        body["orchestray"] = trace_extension(completion)
    return body


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps({"type": kind, **data}).encode() + b"\n\n"


class StreamEncoder:
    """orchestray's stream (Chunks of choice 0, then the done chunk) as Anthropic SSE events.

    Content blocks come one after another: text, then each tool call as a `tool_use` block
    whose input streams as `input_json` deltas (OpenAI-style streams send each call's pieces in
    turn, so a block never needs reopening). What a stream did not send piece by piece (a route
    that answers only at the end) goes out as whole blocks before `message_delta`.
    """

    def __init__(self, message_id: str, model: str, extension: bool = True):
        self.message_id = message_id
        self.model = model
        self.extension = extension
        self._index = -1  # the open content block, -1 for none
        self._open: tuple[str, int] | None = None  # ("text", 0) or ("tool", call index)
        self._streamed_text = False
        self._streamed_calls: set[int] = set()

    def start(self) -> bytes:
        message = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            # The prompt's size is known only at the end; message_delta carries it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message})

    def _switch(self, to: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._stop_block()
        self._index += 1
        self._open = to
        return out + _event("content_block_start", {"index": self._index, "content_block": block})

    def _stop_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"index": self._index})

    def piece(self, chunk: Chunk) -> bytes:
        if chunk.choice != 0:
            return b""  # the Messages API has one choice
        out = b""
        text = chunk.delta or chunk.refusal or ""
        if text:
            if self._open != ("text", 0):
                out += self._switch(("text", 0), {"type": "text", "text": ""})
            self._streamed_text = True
            out += _event("content_block_delta", {"index": self._index, "delta": {"type": "text_delta", "text": text}})
        for call in chunk.tool_calls:
            if call.id is not None and self._open != ("tool", call.index):
                block = {"type": "tool_use", "id": call.id, "name": call.name or "", "input": {}}
                out += self._switch(("tool", call.index), block)
                self._streamed_calls.add(call.index)
            if call.arguments and self._open == ("tool", call.index):
                delta = {"type": "input_json_delta", "partial_json": call.arguments}
                out += _event("content_block_delta", {"index": self._index, "delta": delta})
        return out

    def finish(self, completion: Completion) -> bytes:
        out = b""
        text = completion.content or completion.refusal or ""
        if text and not self._streamed_text:
            out += self._switch(("text", 0), {"type": "text", "text": ""})
            out += _event("content_block_delta", {"index": self._index, "delta": {"type": "text_delta", "text": text}})
        for i, call in enumerate(completion.tool_calls):
            if i not in self._streamed_calls:
                out += self._switch(("tool", i), {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
                delta = {"type": "input_json_delta", "partial_json": _dumps(_tool_use_block(call)["input"])}
                out += _event("content_block_delta", {"index": self._index, "delta": delta})
        out += self._stop_block()
        delta: dict[str, Any] = {
            "delta": {"stop_reason": _STOP_REASON.get(completion.finish_reason, "end_turn"), "stop_sequence": None},
            "usage": _usage_body(completion),
        }
        if self.extension:
            delta["orchestray"] = trace_extension(completion)
        return out + _event("message_delta", delta) + _event("message_stop", {})

    @staticmethod
    def error(status: int, message: str) -> bytes:
        return b"event: error\ndata: " + json.dumps(error_body(status, message)).encode() + b"\n\n"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> dict[str, Any]:
    """An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}
