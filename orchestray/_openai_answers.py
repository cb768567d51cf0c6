"""Answers as OpenAI bodies: completions, stream chunks and usage, with orchestray's trace in the
extension field `orchestray` (the gateway, batch output, the emulator)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from orchestray._openai_requests import tool_call_dict
from orchestray.messages import Choice, Completion, ToolCallDelta


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
