"""The OpenAI chat-completions and Anthropic messages wire formats: requests, answers, SSE, errors.

Each format is a `Dialect`; the server runs one request flow and asks the dialect for the bytes.
Decoders and the encoder are made once (msgspec), since this is the emulator's hot path. Both
decode the whole surface their API accepts for chat (content parts and image blocks, tools and
tool results, tool_choice, structured output, n, logprobs) into one `ChatRequest`; a field the
simulated models cannot honour is a 400 naming it, never ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from random import Random
from typing import Any, Protocol

import msgspec

from orchestray.messages import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)
from orchestray.simulated import SimAnswer, stream_pieces

from ._quota import QuotaState

__all__ = ["Call", "Dialect", "OPENAI", "ANTHROPIC", "WireError"]

_encode = msgspec.json.Encoder().encode
_STREAM_PIECES = 4


class WireError(Exception):
    """The request is malformed: answered 400 in the caller's format."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Call:
    """A decoded request, whatever its format; `request.n` is the number of choices."""

    request: ChatRequest
    stream: bool
    include_usage: bool  # OpenAI streams: send a final usage chunk
    max_output: int  # output tokens reserved at admission


def _decode_error(err: msgspec.MsgspecError) -> WireError:
    unknown = _UNKNOWN_FIELD.match(str(err))
    if unknown and unknown.group(2) in (None, ""):  # a top-level field the API does not have
        return WireError(f"{unknown.group(1)}: unknown field (not a parameter of this API)", unknown.group(1))
    if isinstance(err, msgspec.ValidationError):
        # msgspec says where: "... - at `$.messages[1].tool_calls[0]`"; that path is the param.
        where = re.search(r"at `\$\.?([^`]*)`", str(err))
        return WireError(f"invalid request body: {err}", where.group(1) or None if where else None)
    return WireError(f"request body is not valid JSON: {err}")


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`(?: - at `\$\.?([^`]*)`)?")


def _unsupported(field: str) -> WireError:
    return WireError(f"{field}: not supported by the emulator's simulated models", field)


def _is_url(url: str) -> bool:
    return url.startswith(("http://", "https://")) or (url.startswith("data:") and "," in url)


def _check_tool_choice(choice: str | dict | None, tools: tuple[Tool, ...], param: str) -> None:
    """The checks the APIs make: a named tool must be offered, and a choice needs tools."""
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict) or allowed.get("mode") not in ("auto", "required"):
            raise WireError(f"{param}.allowed_tools: needs mode auto or required, and tools", param)
        for entry in allowed.get("tools") or ():
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise _unsupported(f"{param}.allowed_tools.tools")
            _check_tool_choice(entry, tools, param)
    elif isinstance(choice, dict):
        if choice.get("type") == "custom":
            raise _unsupported(param)
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not any(t.name == name for t in tools):
            raise WireError(f"{param}: names tool {name!r}, which is not in tools", param)
    elif choice not in (None, "none", "auto") and not tools:
        raise WireError(f"{param}: {choice!r} needs tools", param)


class Dialect(Protocol):
    """One provider's wire format: what the server's single request flow asks of it."""

    name: str

    def authorized(self, headers: Mapping[str, str], key: str) -> bool: ...

    def decode(self, body: bytes) -> Call:
        """The request, or WireError saying what is wrong with it."""
        ...

    def error(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> bytes:
        """An error body in this provider's shape; `kind` overrides the type (OpenAI 429s)."""
        ...

    def completion(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    # A stream is: open (the first events), pieces (the server paces them: text deltas, tool-call
    # deltas, every choice's), close (finish reasons, usage, end).
    def stream_open(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    def stream_pieces(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> list[bytes]: ...

    def stream_close(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes: ...

    def quota_headers(self, quotas: list[QuotaState], wall_now: float) -> dict[str, str]: ...

    def fault_status(self, rng: Random) -> int:
        """The status of an injected fault, when the options name none."""
        ...

    def new_id(self, number: int) -> str: ...


def _rounds(per_choice: list[list[bytes]]) -> list[bytes]:
    """Interleave the choices' pieces, one of each choice per round, as n streams arrive."""
    out = []
    for i in range(max((len(p) for p in per_choice), default=0)):
        out.append(b"".join(p[i] for p in per_choice if i < len(p)))
    return [frame for frame in out if frame]


# --- OpenAI -------------------------------------------------------------------------------------


class _ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class _InputAudio(msgspec.Struct):
    data: str
    format: str


class _FileRef(msgspec.Struct):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class _OpenAIPart(msgspec.Struct):
    # One struct for every part type (not a tagged union): lenient, and as fast to decode.
    type: str = "text"
    text: str = ""
    image_url: _ImageURL | None = None
    input_audio: _InputAudio | None = None
    file: _FileRef | None = None
    refusal: str | None = None


class _Function(msgspec.Struct):
    name: str
    arguments: str = ""


class _CustomCall(msgspec.Struct):
    name: str
    input: str = ""


class _OpenAIToolCall(msgspec.Struct):
    id: str
    function: _Function | None = None
    custom: _CustomCall | None = None  # a custom tool's call, in the history
    type: str = "function"


class _OpenAIMessage(msgspec.Struct):
    role: str
    content: str | list[_OpenAIPart] | None = None
    name: str | None = None
    tool_calls: list[_OpenAIToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class _FunctionDefinition(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _OpenAITool(msgspec.Struct):
    type: str = "function"
    function: _FunctionDefinition | None = None


class _JsonSchemaSpec(msgspec.Struct):
    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class _OpenAIResponseFormat(msgspec.Struct):
    type: str
    json_schema: _JsonSchemaSpec | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class _OpenAIRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The request's top level: a field OpenAI does not know is a 400 naming it, as OpenAI answers."""

    model: str
    messages: list[_OpenAIMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    tools: list[_OpenAITool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: _OpenAIResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: Any = None
    # Accepted by OpenAI, beyond what a simulated model can do: a 400 naming the field.
    modalities: list[str] | None = None
    audio: Any = None
    web_search_options: Any = None
    prediction: Any = None
    verbosity: Any = None
    functions: Any = None
    function_call: Any = None
    moderation: Any = None


_OPENAI_REFUSED = ("audio", "web_search_options", "prediction", "verbosity", "functions", "function_call", "moderation")
_NOT_SET = (None,) * len(_OPENAI_REFUSED)
_NO_OPTIONS = (None,) * 12
_OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TEXT_ROLES = frozenset({"system", "developer", "user", "assistant"})
_OPENAI_DEFAULT_MAX_TOKENS = 256  # what admission reserves when the request names no budget


def _reset_text(seconds: float) -> str:
    """A duration the way OpenAI's x-ratelimit-reset-* headers write it: "0.25s", "1s", "1m30s"."""
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class OpenAIDialect:
    name = "openai"
    # (type, code) by status; anything else is a "server_error".
    _ERROR_TYPES = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "not_found"),
        413: ("invalid_request_error", "request_too_large"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_OpenAIRequest)

    def authorized(self, headers: Mapping[str, str], key: str) -> bool:
        return headers.get("Authorization", "") == f"Bearer {key}"

    def decode(self, body: bytes) -> Call:
        try:
            raw = self._decoder.decode(body)
        except msgspec.MsgspecError as err:
            raise _decode_error(err) from None
        if not raw.messages:
            raise WireError("'messages' must contain at least one message", "messages")
        max_output = raw.max_completion_tokens if raw.max_completion_tokens is not None else raw.max_tokens
        if max_output is not None and max_output < 1:
            raise WireError("'max_tokens' must be at least 1", "max_tokens")
        if raw.temperature is not None and not 0.0 <= raw.temperature <= 2.0:
            raise WireError("'temperature' must be between 0 and 2", "temperature")
        n = 1 if raw.n is None else raw.n
        if not 1 <= n <= 128:
            raise WireError("'n' must be between 1 and 128", "n")
        refused = (
            raw.audio, raw.web_search_options, raw.prediction, raw.verbosity, raw.functions, raw.function_call,
            raw.moderation,
        )
        if refused != _NOT_SET:
            raise _unsupported(next(f for f, v in zip(_OPENAI_REFUSED, refused) if v is not None))
        if raw.modalities is not None and raw.modalities != ["text"]:
            raise _unsupported("modalities")
        if raw.top_logprobs is not None and not (raw.logprobs and 0 <= raw.top_logprobs <= 20):
            raise WireError("'top_logprobs' must be within 0..20 and needs 'logprobs': true", "top_logprobs")
        messages = tuple(
            # The hot path inline: a plain text turn.
            Message(m.role, m.content, name=m.name)
            if type(m.content) is str and m.role in _TEXT_ROLES and m.tool_calls is None and m.refusal is None
            else _openai_message(m, i)
            for i, m in enumerate(raw.messages)
        )
        tools = tuple(_openai_tool(t, i) for i, t in enumerate(raw.tools)) if raw.tools else ()
        choice = raw.tool_choice
        if choice is not None:
            if isinstance(choice, str) and choice not in ("none", "auto", "required"):
                raise WireError("'tool_choice' must be none, auto, required or a named function", "tool_choice")
            _check_tool_choice(choice, tools, "tool_choice")
        stop = (raw.stop,) if isinstance(raw.stop, str) else tuple(raw.stop) if raw.stop else None
        extra = None
        if raw.service_tier is not None or raw.prompt_cache_key is not None or raw.safety_identifier is not None:
            extra = {
                k: v for k in ("service_tier", "prompt_cache_key", "safety_identifier") if (v := getattr(raw, k)) is not None
            }
        request = ChatRequest(
            messages=messages,
            model=raw.model,
            max_tokens=max_output,
            temperature=raw.temperature,
            top_p=raw.top_p,
            stop=stop,
            seed=raw.seed,
            n=n,
        )
        options = (
            raw.parallel_tool_calls, raw.logprobs, raw.top_logprobs, raw.presence_penalty, raw.frequency_penalty,
            raw.logit_bias, raw.reasoning_effort, raw.user, raw.metadata, raw.store, raw.response_format, extra,
        )
        # Building the request with the options only when some is set keeps the text path as fast as before.
        if tools or choice is not None or options != _NO_OPTIONS:
            request = request.with_changes(
                tools=tools,
                tool_choice=choice,
                parallel_tool_calls=raw.parallel_tool_calls,
                response_format=_openai_format(raw.response_format) if raw.response_format is not None else None,
                logprobs=raw.logprobs,
                top_logprobs=raw.top_logprobs,
                presence_penalty=raw.presence_penalty,
                frequency_penalty=raw.frequency_penalty,
                logit_bias=raw.logit_bias,
                reasoning_effort=raw.reasoning_effort,
                user=raw.user,
                metadata=raw.metadata,
                store=raw.store,
                extra_body=extra,
            )
        include_usage = raw.stream_options is not None and bool(raw.stream_options.include_usage)
        reserved = max_output if max_output is not None else _OPENAI_DEFAULT_MAX_TOKENS
        return Call(request, bool(raw.stream), include_usage, reserved * n)

    def error(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> bytes:
        error_type, code = self._ERROR_TYPES.get(status, ("server_error", None))
        if kind is not None:
            error_type = kind
        return _encode({"error": {"message": message, "type": error_type, "param": param, "code": code}})

    def completion(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        prompt_tokens = answers[0].input_tokens
        completion_tokens = sum(a.output_tokens for a in answers)
        return _encode(
            {
                "id": response_id,
                "object": "chat.completion",
                "created": created,
                "model": call.request.model,
                "choices": [
                    {
                        "index": i,
                        "message": _openai_answer(a),
                        "logprobs": a.logprobs,
                        "finish_reason": a.finish_reason,
                    }
                    for i, a in enumerate(answers)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_orchestray_emulator",
            }
        )

    def _chunk(
        self, call: Call, response_id: str, created: int, delta: dict, finish: str | None, index: int = 0,
        logprobs: dict | None = None,
    ) -> bytes:
        chunk = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.request.model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if call.include_usage:
            chunk["usage"] = None
        return b"data: " + _encode(chunk) + b"\n\n"

    def stream_open(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        return b"".join(
            self._chunk(call, response_id, created, {"role": "assistant", "content": ""}, None, i)
            for i in range(len(answers))
        )

    def stream_pieces(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> list[bytes]:
        return _rounds([self._choice_pieces(call, a, i, response_id, created) for i, a in enumerate(answers)])

    def _choice_pieces(self, call: Call, answer: SimAnswer, index: int, response_id: str, created: int) -> list[bytes]:
        frames = []
        for k, tool_call in enumerate(answer.tool_calls):
            # The first piece of a call names it; the rest carry its arguments, as OpenAI streams them.
            opening = {"index": k, "id": tool_call.id, "type": "function", "function": {"name": tool_call.name, "arguments": ""}}
            frames.append(self._chunk(call, response_id, created, {"tool_calls": [opening]}, None, index))
            for part in stream_pieces(tool_call.arguments, _STREAM_PIECES - 1):
                delta = {"tool_calls": [{"index": k, "function": {"arguments": part}}]}
                frames.append(self._chunk(call, response_id, created, delta, None, index))
        offset = 0
        tokens = answer.logprobs["content"] if answer.logprobs is not None else None
        for piece in stream_pieces(answer.text, _STREAM_PIECES):
            logprobs = None
            if tokens is not None:
                # Pieces are cut at token boundaries (four characters), so each has whole tokens.
                logprobs = {"content": tokens[offset // 4 : (offset + len(piece) + 3) // 4], "refusal": None}
            offset += len(piece)
            frames.append(self._chunk(call, response_id, created, {"content": piece}, None, index, logprobs))
        return frames

    def stream_close(self, call: Call, answers: list[SimAnswer], response_id: str, created: int) -> bytes:
        frames = b"".join(
            self._chunk(call, response_id, created, {}, a.finish_reason, i) for i, a in enumerate(answers)
        )
        if call.include_usage:
            prompt_tokens = answers[0].input_tokens
            completion_tokens = sum(a.output_tokens for a in answers)
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            final = {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": call.request.model,
                "choices": [],
                "usage": usage,
            }
            frames += b"data: " + _encode(final) + b"\n\n"
        return frames + b"data: [DONE]\n\n"

    def quota_headers(self, quotas: list[QuotaState], wall_now: float) -> dict[str, str]:
        headers = {}
        for q in quotas:
            headers[f"x-ratelimit-limit-{q.kind}"] = str(q.limit)
            headers[f"x-ratelimit-remaining-{q.kind}"] = str(q.remaining)
            headers[f"x-ratelimit-reset-{q.kind}"] = _reset_text(q.reset_s)
        return headers

    def fault_status(self, rng: Random) -> int:
        return rng.choice((500, 502, 503))

    def new_id(self, number: int) -> str:
        return f"chatcmpl-emu{number:012x}"


def _openai_answer(answer: SimAnswer) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI's null content: an answer that only calls tools.
        "content": answer.text if answer.text or not answer.tool_calls else None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    return message


def _openai_part(part: _OpenAIPart, where: str) -> Part:
    kind = part.type
    if kind == "text":
        return TextPart(part.text)
    if kind == "image_url" and part.image_url is not None:
        if not _is_url(part.image_url.url):
            raise WireError(f"{where}.image_url.url: must be an http(s) URL or a data URL", where)
        return ImagePart(part.image_url.url, part.image_url.detail)
    if kind == "input_audio" and part.input_audio is not None:
        return AudioPart(part.input_audio.data, part.input_audio.format)
    if kind == "file" and part.file is not None:
        return FilePart(part.file.file_id, part.file.file_data, part.file.filename)
    raise WireError(f"{where}: a content part of type {kind!r} needs its {kind!r} member", where)


def _openai_message(m: _OpenAIMessage, i: int) -> Message:
    where = f"messages[{i}]"
    if m.role not in _OPENAI_ROLES:
        raise WireError(f"{where}.role: must be system, developer, user, assistant or tool", f"{where}.role")
    content: str | tuple[Part, ...] | None
    refusal = m.refusal
    if isinstance(m.content, list):
        refusal = refusal or "".join(p.refusal or "" for p in m.content if p.type == "refusal") or None
        parts = tuple(_openai_part(p, f"{where}.content[{j}]") for j, p in enumerate(m.content) if p.type != "refusal")
        if all(type(p) is TextPart for p in parts):
            content = "".join(p.text for p in parts)  # type: ignore[union-attr]
        else:
            content = parts
    else:
        content = m.content
    if m.role == "tool" and m.tool_call_id is None:
        raise WireError(f"{where}.tool_call_id: a tool message answers a call by its id", f"{where}.tool_call_id")
    if m.role == "function":
        # OpenAI's deprecated function result: a tool result named by its function.
        return Message("tool", content or "", name=m.name)
    if content is None and m.role != "assistant":
        raise WireError(f"{where}.content: required", f"{where}.content")
    calls = tuple(_openai_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(m.tool_calls or ()))
    return Message(m.role, content, name=m.name, tool_calls=calls, tool_call_id=m.tool_call_id, refusal=refusal)


def _openai_call(call: _OpenAIToolCall, where: str) -> ToolCall:
    if call.function is not None:
        return ToolCall(call.id, call.function.name, call.function.arguments)
    if call.custom is not None:
        return ToolCall(call.id, call.custom.name, call.custom.input)
    raise WireError(f"{where}: a tool call needs its function (or custom) member", where)


def _openai_tool(tool: _OpenAITool, i: int) -> Tool:
    if tool.type != "function" or tool.function is None:
        raise _unsupported(f"tools[{i}].type")
    f = tool.function
    return Tool(f.name, f.description, f.parameters, f.strict)


def _openai_format(fmt: _OpenAIResponseFormat | None) -> ResponseFormat | None:
    if fmt is None:
        return None
    if fmt.type in ("text", "json_object"):
        return ResponseFormat(fmt.type)
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        spec = fmt.json_schema
        return ResponseFormat("json_schema", spec.name, spec.schema, spec.strict, spec.description)
    raise WireError("'response_format' must be text, json_object or json_schema (with its json_schema)", "response_format")


# --- Anthropic ----------------------------------------------------------------------------------


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


OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()
