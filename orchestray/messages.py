"""The messages that cross actor boundaries and files: requests, completions, chunks and traces.

All are msgspec Structs: cheap to pickle between Ray actors and to encode as JSON lines.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Message",
    "ChatRequest",
    "Completion",
    "Chunk",
    "Span",
    "estimate_tokens",
]


class Message(msgspec.Struct, frozen=True):
    role: str  # "system" | "user" | "assistant"
    content: str


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One chat call. `model` names a provider or a route; the actor that receives it decides."""

    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    # None: the provider's configured retries; 0: surface the first failure (fallback, race).
    max_retries: int | None = None
    timeout_s: float | None = None
    request_id: str = ""

    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""

    def with_changes(self, **changes) -> "ChatRequest":
        return msgspec.structs.replace(self, **changes)


class Span(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One node of a call tree: a provider call, or a coordinator with its children.

    `kind` is "provider" for a leaf, the pattern name ("race", "cascade", ...) otherwise. A
    coordinator's own `cost` is 0: its cost is its children's (`total_cost`).
    """

    name: str
    kind: str = "provider"
    model: str = ""
    outcome: str = "ok"  # ok | error | cancelled | skipped
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    retries: int = 0
    error: str | None = None
    decision: str | None = None
    data: dict[str, Any] | None = None  # pattern details: vote counts, stage costs, the search tree
    children: list[Span] = []

    def total_cost(self) -> float:
        return self.cost + sum(c.total_cost() for c in self.children)

    def provider_calls(self) -> int:
        own = 1 if self.kind == "provider" else 0
        return own + sum(c.provider_calls() for c in self.children)


class Completion(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A finished answer with what it cost and how it was reached."""

    content: str
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost: float = 0.0
    finish_reason: str = "stop"
    confidence: float | None = None  # a coordinator's measure (an ensemble's agreement, say)
    trace: Span | None = None


class Chunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A piece of a streamed answer. The last chunk carries `done=True` and the full completion."""

    delta: str = ""
    done: bool = False
    completion: Completion | None = None


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token), used before a call is made."""
    return (len(text) + 3) // 4
