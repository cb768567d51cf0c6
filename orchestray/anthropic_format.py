"""The Anthropic Messages wire: `ChatRequest` to Messages API bodies and back, both directions.

One translation for both doors: the Anthropic backend sends `request_body` and decodes answers
with `reply_from_message` / `StreamDecoder`; the gateway's `POST /v1/messages` parses bodies with
`parse_messages_body` and answers with `message_body` / `StreamEncoder` / `error_body`.

    ChatRequest ─ request_body ─▶ {system, messages: [tool_use, tool_result, image...], tools...}
    Reply       ◀ reply_from_message, StreamDecoder ─ message / SSE events
    ChatRequest ◀ parse_messages_body ─ an Anthropic request body        (gateway ingress)
    Completion  ─ message_body, StreamEncoder ─▶ a message / SSE events  (gateway ingress)

JSON output (`response_format` json_object / json_schema) is asked for with a forced tool, not
with a prefilled assistant turn: the tool's `input_schema` hands the model the whole schema
(a prefill of "{" only steers the first character and says nothing of the fields), the API
returns the tool's input as an already-parsed JSON object, so the answer cannot trail off into
prose after the object, it works on every model that has tool use and every SDK version the
package allows (the newest models refuse assistant prefill, older ones refuse the native
`output_config.format`), and its streamed `input_json` deltas pass on as content deltas. The
tool's input is returned as the answer's content; its call is never shown as a tool call.

Usage: Anthropic's `input_tokens` counts only the uncached part of the prompt, OpenAI's
`prompt_tokens` all of it; so input tokens here are input + cache writes + cache reads, and
`cached_tokens` the cache reads.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Iterable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestray.backends._reply import Quota, Reply
from orchestray.errors import RequestError
from orchestray.messages import (
    AudioPart,
    ChatRequest,
    Chunk,
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
from orchestray.openai_format import trace_extension

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "SAMPLING_FIELDS",
    "json_tool_name",
    "request_body",
    "reply_from_message",
    "StreamDecoder",
    "MessagesBody",
    "parse_messages_body",
    "message_body",
    "StreamEncoder",
    "error_body",
    "error_type",
    "new_message_id",
]

DEFAULT_MAX_TOKENS = 1024  # the API requires a value; OpenAI-style callers often send none
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")  # what Anthropic's newest models refuse

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ChatRequest -> a Messages API body (what the backend sends) ─────────────────────────────────


def json_tool_name(request: ChatRequest) -> str | None:
    """The name of the forced tool that carries a JSON answer, or None when no JSON is asked."""
    fmt = request.response_format
    if fmt is None or not fmt.wants_json:
        return None
    name = fmt.name or "json_answer"
    taken = {t.name for t in request.tools}
    while name in taken:
        name += "_answer"
    return name


def _part_block(part: Part, where: str) -> dict[str, Any]:
    match part:
        case TextPart(text=text):
            return {"type": "text", "text": text}
        case ImagePart():
            # `detail` is OpenAI's cost hint; Anthropic takes the image whole either way.
            data = part.data()
            if data is None:
                return {"type": "image", "source": {"type": "url", "url": part.url}}
            media, payload = data
            return {"type": "image", "source": {"type": "base64", "media_type": media, "data": payload}}
        case FilePart(file_data=file_data) if file_data:
            # OpenAI's file parts are PDFs, as Anthropic's base64 documents are.
            media, payload = "application/pdf", file_data
            if file_data.startswith("data:"):
                header, _, payload = file_data.partition(",")
                media = header[len("data:"):].split(";", 1)[0] or media
            block: dict[str, Any] = {"type": "document", "source": {"type": "base64", "media_type": media, "data": payload}}
            if part.filename:
                block["title"] = part.filename
            return block
        case FilePart():
            raise RequestError(f"{where}: a file by file_id is not supported by the Anthropic Messages API", param=where)
        case AudioPart():
            raise RequestError(f"{where}: audio input is not supported by the Anthropic Messages API", param=where)
    raise TypeError(f"not a content part: {part!r}")


def _tool_input(call: ToolCall, where: str) -> Any:
    arguments = call.parsed_arguments()
    if not isinstance(arguments, dict):
        raise RequestError(f"{where}: arguments must be a JSON object for the Anthropic Messages API", param=where)
    return arguments


def _turns(messages: Iterable[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, alternating user/assistant turns). Tool results become `tool_result`
    blocks of a user turn, and turns of one role in a row merge: the API wants them to alternate."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.name is not None:
            raise RequestError(f"messages[{i}].name: not supported by the Anthropic Messages API", param=f"messages[{i}].name")
        if m.role in ("system", "developer"):
            system.append(m.text())
            continue
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            if isinstance(m.content, tuple) and any(not isinstance(p, TextPart) for p in m.content):
                result["content"] = [_part_block(p, f"messages[{i}].content[{j}]") for j, p in enumerate(m.content)]
            else:
                result["content"] = m.text()
            blocks = [result]
        elif m.role == "assistant":
            blocks = [{"type": "text", "text": text} for text in (m.text(), m.refusal or "") if text]
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c, f"messages[{i}].tool_calls[{j}]")}
                for j, c in enumerate(m.tool_calls)
            ]
        else:
            blocks = [_part_block(p, f"messages[{i}].content[{j}]") for j, p in enumerate(m.parts())]
            blocks = [b for b in blocks if b.get("type") != "text" or b["text"]]
        if not blocks:
            continue  # the API refuses empty turns and empty text blocks
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return system, turns


def _tool_param(tool: Tool) -> dict[str, Any]:
    param: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        param["description"] = tool.description
    param["input_schema"] = tool.parameters or {"type": "object", "properties": {}}
    if tool.strict is not None:
        param["strict"] = tool.strict
    return param


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    raise RequestError(f"tool_choice: {choice!r} is not auto, none, required or a named function", param="tool_choice")


def _json_tool(fmt: ResponseFormat, name: str) -> dict[str, Any]:
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
    description = fmt.description or "Give your final answer as this tool's input, a JSON object."
    return {"name": name, "description": description, "input_schema": schema}


def request_body(
    request: ChatRequest, model: str, *, sampling: bool = True, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The JSON body of `POST /v1/messages` for a request: only what the caller set, provider
    extras merged in last. `sampling=False` leaves out temperature, top_p and top_k."""
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": request.max_tokens or default_max_tokens}
    if system:
        body["system"] = "\n\n".join(system)
    tools = [_tool_param(t) for t in request.tools]
    choice = _tool_choice(request.tool_choice) if tools else None
    json_tool = json_tool_name(request)
    if json_tool is not None and (choice is None or choice["type"] in ("auto", "none")):
        # With tools on offer the model must call one: a real tool, or the answer tool.
        tools.append(_json_tool(request.response_format, json_tool))
        forced = choice is None or choice["type"] == "none"
        choice = {"type": "tool", "name": json_tool} if forced else {"type": "any"}
    if tools:
        body["tools"] = tools
    if choice is not None:
        if request.parallel_tool_calls is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if sampling:
        if request.temperature is not None and request.temperature > 1:
            raise RequestError(
                f"temperature: the Anthropic Messages API takes 0 to 1, not {request.temperature}", param="temperature"
            )
        for field in SAMPLING_FIELDS:
            value = getattr(request, field)
            if value is not None:
                body[field] = value
    if request.extra_body:
        body.update(request.extra_body)
    return body


# A Messages API answer -> Reply (what the backend hands back) ─────────────────────────────────


def _usage(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(input tokens including cached ones, output tokens, cache reads)."""
    usage = usage or {}
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cached
    return prompt, usage.get("output_tokens") or 0, cached


def _finish(stop_reason: str | None, tool_calls: int) -> str:
    finish = _FINISH.get(stop_reason or "", "stop")
    # The answer tool ended the turn with tool_use, but the caller asked for an answer, not a call.
    return "stop" if finish == "tool_calls" and not tool_calls else finish


def reply_from_message(message: dict[str, Any], json_tool: str | None = None, quota: Quota | None = None) -> Reply:
    """A Messages API `message` object as a Reply; the `json_tool`'s input becomes the text."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = _dumps(block.get("input") or {})
            if json_tool is not None and block.get("name") == json_tool:
                texts.append(arguments)
            else:
                calls.append(ToolCall(block.get("id", ""), block.get("name", ""), arguments))
        # thinking and server-tool blocks are the model's working, not its answer
    prompt, output, cached = _usage(message.get("usage"))
    return Reply(
        text="".join(texts),
        input_tokens=prompt,
        output_tokens=output,
        finish_reason=_finish(message.get("stop_reason"), len(calls)),
        model=message.get("model") or "",
        quota=quota,
        tool_calls=tuple(calls),
        cached_tokens=cached,
    )


class StreamDecoder:
    """Messages API stream events (as dicts) to the backend's pieces: text as str, tool-call
    pieces as Chunks; `reply()` once the stream has ended."""

    __slots__ = ("json_tool", "_texts", "_calls", "_blocks", "_usage", "_stop", "_model")

    def __init__(self, json_tool: str | None = None, model: str = ""):
        self.json_tool = json_tool
        self._texts: list[str] = []
        self._calls: list[list[str]] = []  # [id, name, argument pieces...]
        self._blocks: dict[int, int] = {}  # content block index -> tool call index (-1: the answer tool)
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._model = model

    def feed(self, event: dict[str, Any]) -> list[str | Chunk]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                self._texts.append(delta.get("text", ""))
                return [delta.get("text", "")]
            if delta.get("type") == "input_json_delta":
                call = self._blocks.get(event.get("index", 0))
                piece = delta.get("partial_json", "")
                if call is None or not piece:
                    return []
                if call < 0:
                    self._texts.append(piece)
                    return [piece]
                self._calls[call].append(piece)
                return [Chunk(tool_calls=(ToolCallDelta(call, arguments=piece),))]
            return []  # thinking, signatures, citations
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                self._texts.append(block["text"])
                return [block["text"]]
            if block.get("type") != "tool_use":
                return []
            # The start carries `input: {}`; the arguments follow as input_json deltas.
            start = _dumps(block["input"]) if block.get("input") else ""
            if self.json_tool is not None and block.get("name") == self.json_tool:
                self._blocks[event.get("index", 0)] = -1
                if start:
                    self._texts.append(start)
                    return [start]
                return []
            index = len(self._calls)
            self._blocks[event.get("index", 0)] = index
            self._calls.append([block.get("id", ""), block.get("name", ""), start])
            return [Chunk(tool_calls=(ToolCallDelta(index, block.get("id", ""), block.get("name", ""), start),))]
        if kind == "message_start":
            message = event.get("message") or {}
            self._usage.update(message.get("usage") or {})
            self._model = message.get("model") or self._model
        elif kind == "message_delta":
            self._stop = (event.get("delta") or {}).get("stop_reason") or self._stop
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        return []

    def reply(self, quota: Quota | None = None) -> Reply:
        calls = tuple(ToolCall(c[0], c[1], "".join(c[2:]) or "{}") for c in self._calls)
        prompt, output, cached = _usage(self._usage)
        return Reply(
            text="".join(self._texts),
            input_tokens=prompt,
            output_tokens=output,
            finish_reason=_finish(self._stop, len(calls)),
            model=self._model,
            quota=quota,
            tool_calls=calls,
            cached_tokens=cached,
        )


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
                if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
                    raise RequestError("output_config.format: must be {type: json_schema, schema: {...}}",
                                       param="output_config.format")
                response_format = ResponseFormat("json_schema", "json_answer", fmt["schema"])
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

