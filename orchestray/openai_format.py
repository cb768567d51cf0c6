"""The OpenAI chat-completions request and response bodies, as batch files and HTTP use them.

Requests are validated by pydantic (a clear message for every wrong field); responses are built
from a `Completion`, with orchestray's trace in the extension field `orchestray`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Completion, Message

__all__ = [
    "ChatCompletionBody",
    "parse_chat_body",
    "completion_body",
    "chunk_body",
    "validation_message",
]


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content):
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
                texts.append(part["text"])
            return "".join(texts)
        return content


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """`POST /v1/chat/completions`. Fields OpenAI defines but orchestray cannot honour are refused."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a provider or a route")
    messages: list[_ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: _StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds, orchestray extension")

    def to_request(self, request_id: str = "") -> ChatRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) if self.stop else None
        return ChatRequest(
            messages=tuple(Message("system" if m.role == "developer" else m.role, m.content) for m in self.messages),
            model=self.model,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            timeout_s=self.timeout,
            request_id=request_id,
        )


def validation_message(err: ValidationError) -> str:
    """One line per problem: `messages[0].role: Input should be 'system', 'user', ...`."""
    lines = []
    for e in err.errors():
        where = ""
        for part in e["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        message = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where or 'body'}: {message}")
    return "; ".join(lines)


def parse_chat_body(body: Any, request_id: str = "") -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError(f"body must be a JSON object, not {type(body).__name__}")
    try:
        return ChatCompletionBody.model_validate(body).to_request(request_id)
    except ValidationError as err:
        raise RequestError(validation_message(err)) from None


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def completion_body(completion: Completion, request_id: str, model: str | None = None) -> dict[str, Any]:
    """An OpenAI `chat.completion` object; `model` is what the caller asked for (a route, say)."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or completion.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.content},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
        },
        "orchestray": {
            "provider": completion.provider,
            "cost": completion.cost,
            "latency_s": completion.latency_s,
            "trace": msgspec.to_builtins(completion.trace) if completion.trace else None,
        },
    }


def chunk_body(
    request_id: str,
    model: str,
    created: int,
    delta: str | None = None,
    finish_reason: str | None = None,
    completion: Completion | None = None,
    role: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; with `completion`, the closing usage chunk."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if completion is not None:
        body["choices"] = []
        body["usage"] = {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens,
        }
        body["orchestray"] = {
            "provider": completion.provider,
            "cost": completion.cost,
            "trace": msgspec.to_builtins(completion.trace) if completion.trace else None,
        }
        return body
    choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish_reason}
    if role:
        choice["delta"]["role"] = "assistant"
    if delta:
        choice["delta"]["content"] = delta
    body["choices"] = [choice]
    return body
