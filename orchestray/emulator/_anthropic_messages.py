"""The Anthropic messages wire format for the emulator: the request decoded into a `ChatRequest`,
answers, SSE events, errors and rate-limit headers in Anthropic's shape."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from random import Random
from typing import Any

import msgspec

from orchestray.messages import (
    ChatRequest, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolCall
)
from orchestray.simulated import SimAnswer, stream_pieces

from ._dialect import (
    _STREAM_PIECES, Call, WireError, _check_tool_choice, _decode_error, _encode, _is_url, _unsupported
)
from ._quota import QuotaState


class _AnthropicSource(msgspec.Struct):
    type: str  # base64 | url | file | text
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None


class _AnthropicInnerBlock(msgspec.Struct):
    """A block inside a tool result: text or an image."""

    type: str = "text"
    text: str = ""
    source: _AnthropicSource | None = None


class _AnthropicBlock(msgspec.Struct):
    # One struct for every block type (not a tagged union): lenient, and as fast to decode.
    type: str = "text"
    text: str = ""
    source: _AnthropicSource | None = None  # image, document
    id: str | None = None  # tool_use
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[_AnthropicInnerBlock] | None = None
    is_error: bool | None = None


class _AnthropicMessage(msgspec.Struct):
    role: str
    content: str | list[_AnthropicBlock]


class _AnthropicTool(msgspec.Struct):
    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None  # "custom", or a server tool (web_search_..., bash_..., ...)
    strict: bool | None = None


class _AnthropicToolChoice(msgspec.Struct):
    type: str  # auto | any | tool | none
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _OutputFormat(msgspec.Struct):
    type: str
    schema: dict[str, Any] | None = None


class _OutputConfig(msgspec.Struct):
    effort: str | None = None
    format: _OutputFormat | None = None


class _Thinking(msgspec.Struct):
    type: str
    budget_tokens: int | None = None


class _AnthropicRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The request's top level: a field Anthropic does not know is a 400 naming it, as Anthropic answers."""

    model: str
    messages: list[_AnthropicMessage]
    max_tokens: int
    system: str | list[_AnthropicBlock] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    # Not in Anthropic's API: lets ensembles draw independent samples (SDK: extra_body={"seed": i}).
    seed: int | None = None
    tools: list[_AnthropicTool] | None = None
    tool_choice: _AnthropicToolChoice | None = None
    output_config: _OutputConfig | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    # Bookkeeping and routing a simulated model has no use for: accepted, as they change no answer.
    cache_control: Any = None
    diagnostics: Any = None
    inference_geo: Any = None
    speed: Any = None
    user_profile_id: Any = None
    workspace_id: Any = None
    # Accepted by Anthropic, beyond what a simulated model can do: a 400 naming the field.
    thinking: _Thinking | None = None
    mcp_servers: Any = None
    container: Any = None


_ANTHROPIC_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class AnthropicDialect:
    name = "anthropic"
    # Error type by status; anything else is an "api_error".
    _ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_AnthropicRequest)

    def authorized(self, headers: Mapping[str, str], key: str) -> bool:
        # The API takes `x-api-key`; recent SDKs send the key as a bearer token instead.
        return headers.get("x-api-key", "") == key or headers.get("Authorization", "") == f"Bearer {key}"

    def decode(self, body: bytes) -> Call:
        try:
            raw = self._decoder.decode(body)
        except msgspec.MsgspecError as err:
            raise _decode_error(err) from None
        if not raw.messages:
            raise WireError("messages: at least one message is required")
        if raw.max_tokens < 1:
            raise WireError("max_tokens: must be at least 1")
        if raw.temperature is not None and not 0.0 <= raw.temperature <= 1.0:
            raise WireError("temperature: must be between 0 and 1")
        if raw.top_k is not None and raw.top_k < 0:
            raise WireError("top_k: must be at least 0")
        for field in ("mcp_servers", "container"):
            if getattr(raw, field) is not None:
                raise _unsupported(field)
        if raw.thinking is not None and raw.thinking.type != "disabled":
            raise _unsupported("thinking")
        messages = _anthropic_messages(raw.messages)
        if raw.system:
            messages.insert(0, Message("system", _anthropic_text(raw.system)))
        tools = tuple(_anthropic_tool(t, i) for i, t in enumerate(raw.tools or ()))
        choice = _anthropic_choice(raw.tool_choice)
        _check_tool_choice(choice, tools, "tool_choice")
        config = raw.output_config
        fmt = None
        if config is not None and config.format is not None:
            if config.format.type != "json_schema" or config.format.schema is None:
                raise WireError("output_config.format: must be {type: json_schema, schema: ...}")
            fmt = ResponseFormat("json_schema", "output", config.format.schema)
        metadata = {k: str(v) for k, v in raw.metadata.items()} if raw.metadata else None
        request = ChatRequest(
            messages=tuple(messages),
            model=raw.model,
            max_tokens=raw.max_tokens,
            temperature=raw.temperature,
            top_p=raw.top_p,
            top_k=raw.top_k,
            stop=tuple(raw.stop_sequences) if raw.stop_sequences else None,
            seed=raw.seed,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=(
                False if raw.tool_choice is not None and raw.tool_choice.disable_parallel_tool_use else None
            ),
            response_format=fmt,
            reasoning_effort=config.effort if config is not None else None,
            metadata=metadata,
            extra_body={"service_tier": raw.service_tier} if raw.service_tier else None,
        )
        return Call(request, raw.stream, False, raw.max_tokens)

    def error(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> bytes:
        error_type = self._ERROR_TYPES.get(status, "api_error")
        return _encode({"type": "error", "error": {"type": error_type, "message": message}})

    @staticmethod
    def _stop(answer: SimAnswer) -> str:
        if answer.finish_reason == "length":
            return "max_tokens"
        if answer.finish_reason == "tool_calls":
            return "tool_use"
        return "stop_sequence" if answer.stop_sequence is not None else "end_turn"

    def _message(
        self,
        call: Call,
        response_id: str,
        content: list,
        stop: str | None,
        stop_seq: str | None,
        input_tokens: int,
        output_tokens: int,
    ) -> dict:
        return {
            "id": response_id,
            "type": "message",
            "role": "assistant",
            "model": call.request.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": stop_seq,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }

    def completion(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        a = answers[0]
        content: list[dict[str, Any]] = [{"type": "text", "text": a.text}] if a.text or not a.tool_calls else []
        content += [
            {"type": "tool_use", "id": _tool_use_id(c.id), "name": c.name, "input": _arguments(c)}
            for c in a.tool_calls
        ]
        message = self._message(
            call, response_id, content, self._stop(a), a.stop_sequence, a.input_tokens, a.output_tokens
        )
        return _encode(message)

    def stream_open(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        start = self._message(call, response_id, [], None, None, answers[0].input_tokens, 1)
        return _sse("message_start", {"type": "message_start", "message": start}) + _sse("ping", {"type": "ping"})

    def stream_pieces(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> list[bytes]:
        answer = answers[0]
        frames: list[bytes] = []
        index = 0
        if answer.text or not answer.tool_calls:
            texts = stream_pieces(answer.text, _STREAM_PIECES) or [""]
            frames = [
                _sse("content_block_delta", {
                    "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece},
                })
                for piece in texts
            ]
            frames[0] = _block_start(0, {"type": "text", "text": ""}) + frames[0]
            frames[-1] += _block_stop(0)
            index = 1
        for call_ in answer.tool_calls:
            # Anthropic streams a tool call as a tool_use block whose input comes as JSON pieces.
            block = {"type": "tool_use", "id": _tool_use_id(call_.id), "name": call_.name, "input": {}}
            frames.append(_block_start(index, block))
            parts = stream_pieces(call_.arguments, _STREAM_PIECES - 1)
            for part in parts:
                delta = {"type": "input_json_delta", "partial_json": part}
                frames.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
            frames[-1] += _block_stop(index)
            index += 1
        return frames

    def stream_close(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        answer = answers[0]
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop(answer), "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.output_tokens},
        }
        return _sse("message_delta", delta) + _sse("message_stop", {"type": "message_stop"})

    def quota_headers(self, quotas: list[QuotaState], wall_now: float) -> dict[str, str]:
        headers = {}
        for q in quotas:
            headers[f"anthropic-ratelimit-{q.kind}-limit"] = str(q.limit)
            headers[f"anthropic-ratelimit-{q.kind}-remaining"] = str(q.remaining)
            headers[f"anthropic-ratelimit-{q.kind}-reset"] = _rfc3339(wall_now + math.ceil(q.reset_s))
        return headers

    def fault_status(self, rng: Random) -> int:
        return rng.choice((500, 529))

    def new_id(self, number: int) -> str:
        return f"msg_emu{number:018x}"


def _anthropic_text(content: str | list[_AnthropicBlock] | list[_AnthropicInnerBlock] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(block.text for block in content if block.type == "text")


def _block_start(index: int, block: dict) -> bytes:
    return _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _block_stop(index: int) -> bytes:
    return _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _tool_use_id(call_id: str) -> str:
    """Anthropic's id shape for the simulated model's call ids."""
    return "toolu_" + call_id.removeprefix("call_")


def _arguments(call: ToolCall) -> Any:
    parsed = call.parsed_arguments()
    return parsed if isinstance(parsed, dict) else {}


def _anthropic_source(source: _AnthropicSource | None, where: str) -> Part:
    if source is None:
        raise WireError(f"{where}.source: required")
    if source.type == "base64" and source.data is not None:
        media = source.media_type or "application/octet-stream"
        if media.startswith("image/"):
            return ImagePart(f"data:{media};base64,{source.data}")
        return FilePart(file_data=f"data:{media};base64,{source.data}")
    if source.type == "url" and source.url and _is_url(source.url):
        return ImagePart(source.url)
    if source.type == "file" and source.file_id:
        return FilePart(file_id=source.file_id)
    if source.type == "text" and source.data is not None:
        return TextPart(source.data)
    raise WireError(f"{where}.source: must be a base64, url, file or text source")


def _anthropic_messages(raw: list[_AnthropicMessage]) -> list[Message]:
    """Anthropic turns as chat messages: a user turn's tool_result blocks become tool messages
    (ahead of its other blocks, where the API puts them), tool_use blocks assistant tool calls."""
    messages: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages.{i}"
        if m.role not in ("user", "assistant"):
            raise WireError(f"{where}.role: must be user or assistant")
        if isinstance(m.content, str):
            messages.append(Message(m.role, m.content))
            continue
        parts: list[Part] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(m.content):
            at = f"{where}.content.{j}"
            kind = block.type
            if kind == "text":
                parts.append(TextPart(block.text))
            elif kind in ("image", "document"):
                parts.append(_anthropic_source(block.source, at))
            elif kind == "tool_use" and m.role == "assistant":
                if not block.id or not block.name:
                    raise WireError(f"{at}: a tool_use block needs its id and name")
                calls.append(ToolCall(block.id, block.name, json.dumps(block.input or {}, separators=(",", ":"))))
            elif kind == "tool_result" and m.role == "user":
                if not block.tool_use_id:
                    raise WireError(f"{at}.tool_use_id: required")
                text = _anthropic_text(block.content)
                messages.append(Message("tool", f"Error: {text}" if block.is_error else text, tool_call_id=block.tool_use_id))
            elif kind in ("thinking", "redacted_thinking") and m.role == "assistant":
                continue  # earlier reasoning sent back: nothing for a simulated model to read
            else:
                raise WireError(f"{at}.type: {kind!r} is not a block a {m.role} turn can hold here")
        if m.role == "assistant":
            messages.append(Message("assistant", "".join(p.text for p in parts if isinstance(p, TextPart)), tool_calls=tuple(calls)))
        elif parts:
            content = "".join(p.text for p in parts) if all(type(p) is TextPart for p in parts) else tuple(parts)
            messages.append(Message("user", content))  # type: ignore[arg-type]
    return messages


def _anthropic_tool(tool: _AnthropicTool, i: int) -> Tool:
    if tool.type not in (None, "custom"):
        raise _unsupported(f"tools.{i}.type")
    return Tool(tool.name, tool.description, tool.input_schema, tool.strict)


def _anthropic_choice(choice: _AnthropicToolChoice | None) -> str | dict | None:
    if choice is None:
        return None
    if choice.type == "tool":
        if not choice.name:
            raise WireError("tool_choice.name: required for type tool")
        return {"type": "function", "function": {"name": choice.name}}
    if choice.type not in _ANTHROPIC_CHOICES:
        raise WireError("tool_choice.type: must be auto, any, tool or none")
    return _ANTHROPIC_CHOICES[choice.type]


ANTHROPIC = AnthropicDialect()
