"""The OpenAI chat-completions wire format for the emulator: the request decoded into a `ChatRequest`,
answers, SSE chunks, errors and rate-limit headers in OpenAI's shape."""

from __future__ import annotations

from collections.abc import Mapping
from random import Random
from typing import Any

import msgspec

from orchestray.messages import (
    AudioPart, ChatRequest, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolCall
)
from orchestray.simulated import SimAnswer, stream_pieces

from ._dialect import (
    _STREAM_PIECES, Call, WireError, _check_tool_choice, _decode_error, _encode, _is_url, _rounds,
    _unsupported
)
from ._quota import QuotaState


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


OPENAI = OpenAIDialect()
