"""The OpenAI chat-completions and Anthropic messages wire formats: requests, answers, SSE, errors.

Each format is a `Dialect`; the server runs one request flow and asks the dialect for the bytes.
Decoders and the encoder are made once (msgspec), since this is the emulator's hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from random import Random
from typing import Protocol

import msgspec

from orchestray.messages import ChatRequest, Message
from orchestray.simulated import SimAnswer

from ._quota import QuotaState

__all__ = ["Call", "Dialect", "OPENAI", "ANTHROPIC", "WireError"]

_encode = msgspec.json.Encoder().encode


class WireError(Exception):
    """The request is malformed: answered 400 in the caller's format."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Call:
    """A decoded request, whatever its format."""

    request: ChatRequest
    stream: bool
    include_usage: bool  # OpenAI streams: send a final usage chunk
    max_output: int  # output tokens reserved at admission
    n: int = 1


def split_pieces(text: str, pieces: int = 4) -> list[str]:
    """Cut text into a few deltas, as a stream would deliver it (mid-word is fine: tokens are)."""
    size = len(text)
    parts = [text[i * size // pieces : (i + 1) * size // pieces] for i in range(pieces)]
    return [p for p in parts if p]


def _decode_error(err: msgspec.MsgspecError) -> WireError:
    if isinstance(err, msgspec.ValidationError):
        return WireError(f"invalid request body: {err}")
    return WireError(f"request body is not valid JSON: {err}")


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

    # A stream is: open (the first events), one event per piece of text, close (usage, end).
    def stream_open(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes: ...

    def stream_piece(self, call: Call, piece: str, response_id: str, created: int) -> bytes: ...

    def stream_close(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes: ...

    def quota_headers(self, quotas: list[QuotaState], wall_now: float) -> dict[str, str]: ...

    def fault_status(self, rng: Random) -> int:
        """The status of an injected fault, when the options name none."""
        ...

    def new_id(self, number: int) -> str: ...


# --- OpenAI -------------------------------------------------------------------------------------


class _OpenAIPart(msgspec.Struct):
    type: str = "text"
    text: str = ""


class _OpenAIMessage(msgspec.Struct):
    role: str
    content: str | list[_OpenAIPart] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _OpenAIRequest(msgspec.Struct):
    model: str
    messages: list[_OpenAIMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: _StreamOptions | None = None


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
        if not 1 <= raw.n <= 16:
            raise WireError("'n' must be between 1 and 16", "n")
        if raw.n > 1 and raw.stream:
            raise WireError("the emulator streams only n=1", "n")
        messages = tuple(
            Message("system" if m.role == "developer" else m.role, _openai_text(m.content))
            for m in raw.messages
        )
        stop = (raw.stop,) if isinstance(raw.stop, str) else tuple(raw.stop) if raw.stop else None
        request = ChatRequest(
            messages=messages,
            model=raw.model,
            max_tokens=max_output,
            temperature=raw.temperature,
            top_p=raw.top_p,
            stop=stop,
            seed=raw.seed,
        )
        include_usage = raw.stream_options is not None and raw.stream_options.include_usage
        reserved = max_output if max_output is not None else _OPENAI_DEFAULT_MAX_TOKENS
        return Call(request, raw.stream, include_usage, reserved * raw.n, raw.n)

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
                        "message": {"role": "assistant", "content": a.text, "refusal": None},
                        "logprobs": None,
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

    def _chunk(self, call: Call, response_id: str, created: int, delta: dict, finish: str | None) -> bytes:
        chunk = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": call.request.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if call.include_usage:
            chunk["usage"] = None
        return b"data: " + _encode(chunk) + b"\n\n"

    def stream_open(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes:
        return self._chunk(call, response_id, created, {"role": "assistant", "content": ""}, None)

    def stream_piece(self, call: Call, piece: str, response_id: str, created: int) -> bytes:
        return self._chunk(call, response_id, created, {"content": piece}, None)

    def stream_close(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes:
        frames = self._chunk(call, response_id, created, {}, answer.finish_reason)
        if call.include_usage:
            usage = {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
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


def _openai_text(content: str | list[_OpenAIPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content if part.type == "text")


# --- Anthropic ----------------------------------------------------------------------------------


class _AnthropicBlock(msgspec.Struct):
    type: str = "text"
    text: str = ""


class _AnthropicMessage(msgspec.Struct):
    role: str
    content: str | list[_AnthropicBlock]


class _AnthropicRequest(msgspec.Struct):
    model: str
    messages: list[_AnthropicMessage]
    max_tokens: int
    system: str | list[_AnthropicBlock] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    # Not in Anthropic's API: lets ensembles draw independent samples (SDK: extra_body={"seed": i}).
    seed: int | None = None


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
        messages = [Message(m.role, _anthropic_text(m.content)) for m in raw.messages]
        if raw.system:
            messages.insert(0, Message("system", _anthropic_text(raw.system)))
        request = ChatRequest(
            messages=tuple(messages),
            model=raw.model,
            max_tokens=raw.max_tokens,
            temperature=raw.temperature,
            top_p=raw.top_p,
            stop=tuple(raw.stop_sequences) if raw.stop_sequences else None,
            seed=raw.seed,
        )
        return Call(request, raw.stream, False, raw.max_tokens)

    def error(self, status: int, message: str, *, kind: str | None = None, param: str | None = None) -> bytes:
        error_type = self._ERROR_TYPES.get(status, "api_error")
        return _encode({"type": "error", "error": {"type": error_type, "message": message}})

    @staticmethod
    def _stop(answer: SimAnswer) -> str:
        if answer.finish_reason == "length":
            return "max_tokens"
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
        content = [{"type": "text", "text": a.text}]
        message = self._message(
            call, response_id, content, self._stop(a), a.stop_sequence, a.input_tokens, a.output_tokens
        )
        return _encode(message)

    def stream_open(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes:
        start = self._message(call, response_id, [], None, None, answer.input_tokens, 1)
        return (
            _sse("message_start", {"type": "message_start", "message": start})
            + _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            + _sse("ping", {"type": "ping"})
        )

    def stream_piece(self, call: Call, piece: str, response_id: str, created: int) -> bytes:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        return _sse("content_block_delta", delta)

    def stream_close(self, call: Call, answer: SimAnswer, response_id: str, created: int) -> bytes:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop(answer), "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.output_tokens},
        }
        return (
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _sse("message_delta", delta)
            + _sse("message_stop", {"type": "message_stop"})
        )

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


def _anthropic_text(content: str | list[_AnthropicBlock]) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.text for block in content if block.type == "text")


OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()
