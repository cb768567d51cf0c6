"""The messages that cross actor boundaries and files: requests, completions, chunks and traces.

All are msgspec Structs: cheap to pickle between Ray actors and to encode as JSON lines. They
carry the whole OpenAI chat-completions surface (content parts, tools, structured output, `n`,
logprobs) in one provider-neutral shape; `openai_format` and the backends translate it to and
from each wire.

    ChatRequest ── messages: Message ── content: str | (TextPart | ImagePart | AudioPart | FilePart, ...)
               │                    └─ tool_calls: ToolCall, ...      (assistant)   tool_call_id (tool)
               ├── tools: Tool, ...   tool_choice   response_format: ResponseFormat
               └── sampling, n, logprobs, penalties, user, metadata, store, extra_body

    Completion ── the first choice's content, refusal, tool_calls, logprobs, finish_reason
               ├── more_choices: Choice, ...    (n > 1: choices 1..n-1)
               └── usage (with cached and reasoning tokens), cost, trace: Span
"""

from __future__ import annotations

import json
from typing import Any, Union

import msgspec

__all__ = [
    "TextPart",
    "ImagePart",
    "AudioPart",
    "FilePart",
    "Part",
    "ToolCall",
    "Message",
    "Tool",
    "ResponseFormat",
    "ChatRequest",
    "Choice",
    "Completion",
    "ToolCallDelta",
    "Chunk",
    "Span",
    "estimate_tokens",
    "image_tokens",
    "canonical_json",
]


# Content parts ─────────────────────────────────────────────────────────────────────────────


class TextPart(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    text: str


class ImagePart(msgspec.Struct, frozen=True, tag_field="type", tag="image_url"):
    """An image by http(s) URL or `data:image/...;base64,` URL; `detail` is OpenAI's low/high/auto."""

    url: str
    detail: str | None = None

    @property
    def is_data_url(self) -> bool:
        return self.url.startswith("data:")

    def data(self) -> tuple[str, str] | None:
        """(media type, base64 data) of a data URL; None for a web URL."""
        if not self.is_data_url:
            return None
        header, _, payload = self.url.partition(",")
        media = header[len("data:"):].split(";", 1)[0] or "application/octet-stream"
        return media, payload


class AudioPart(msgspec.Struct, frozen=True, tag_field="type", tag="input_audio"):
    data: str  # base64
    format: str  # wav | mp3


class FilePart(msgspec.Struct, frozen=True, tag_field="type", tag="file"):
    file_id: str | None = None
    file_data: str | None = None  # a data URL or base64
    filename: str | None = None


Part = Union[TextPart, ImagePart, AudioPart, FilePart]


# Messages ──────────────────────────────────────────────────────────────────────────────────


class ToolCall(msgspec.Struct, frozen=True):
    """A function call the model made; `arguments` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments decoded, or None when the model wrote invalid JSON."""
        try:
            return json.loads(self.arguments) if self.arguments else {}
        except ValueError:
            return None

    def canonical(self) -> str:
        """Name plus canonical arguments (sorted keys, no spaces): equal calls compare equal."""
        args = self.parsed_arguments()
        text = self.arguments if args is None else canonical_json(args)
        return f"{self.name}({text})"


class Message(msgspec.Struct, frozen=True):
    """One turn. `Message("user", "hi")` for plain text; content parts for images and files.

    role: system | developer | user | assistant | tool. An assistant turn may hold `tool_calls`
    with null content; a tool turn answers the call named by `tool_call_id`.
    """

    role: str
    content: str | tuple[Part, ...] | None = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        """The text of the content: the string itself, or the text parts joined."""
        content = self.content
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(p.text for p in content if isinstance(p, TextPart))

    def parts(self) -> tuple[Part, ...]:
        content = self.content
        if content is None or content == "":
            return ()
        if isinstance(content, str):
            return (TextPart(content),)
        return content

    def images(self) -> tuple[ImagePart, ...]:
        if isinstance(self.content, tuple):
            return tuple(p for p in self.content if isinstance(p, ImagePart))
        return ()


# Request options ───────────────────────────────────────────────────────────────────────────


class Tool(msgspec.Struct, frozen=True):
    """A function the model may call; `parameters` is its JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, frozen=True):
    """OpenAI's response_format: `text`, `json_object`, or `json_schema` (name, schema, strict)."""

    type: str = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None

    @property
    def wants_json(self) -> bool:
        return self.type in ("json_object", "json_schema")


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One chat call. `model` names a provider or a route; the actor that receives it decides.

    Every field but `messages` is optional; None (or empty) means "not set", so a backend sends
    only what the caller set. `tool_choice` keeps OpenAI's shape: "auto" | "none" | "required" |
    {"type": "function", "function": {"name": ...}}.
    """

    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int | None = None  # OpenAI's max_completion_tokens (or the older max_tokens)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # Anthropic's; OpenAI has none
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    n: int = 1
    tools: tuple[Tool, ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # Provider-specific fields, sent as they are (OpenAI's `extra_body`); also the other fields
    # of OpenAI's request that orchestray does not model (service_tier, prediction, ...).
    extra_body: dict[str, Any] | None = None
    # None: the provider's configured retries; 0: surface the first failure (fallback, race).
    max_retries: int | None = None
    # Whether a call waits for its provider's half-open probe when the circuit is open. None:
    # it waits unless max_retries is 0; False: a pattern with somewhere else to go (race,
    # fallback, route) is told at once, and the call fails with circuit_open.
    wait_for_circuit: bool | None = None
    timeout_s: float | None = None
    request_id: str = ""

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        return ""

    def with_changes(self, **changes) -> "ChatRequest":
        return msgspec.structs.replace(self, **changes)

    def set_fields(self) -> list[str]:
        """The request options the caller set (not messages, nor orchestray's own call settings),
        with each `extra_body` key as `extra_body.KEY`: what a backend must honour or refuse."""
        names = [
            f for f in _OPTION_FIELDS
            if (value := getattr(self, f)) is not None and value != () and not (f == "n" and value == 1)
        ]
        names += [f"extra_body.{key}" for key in self.extra_body or ()]
        return names

    def with_last_user_text(self, text: str) -> "ChatRequest":
        """The same request with its last user turn's text replaced (its images kept)."""
        messages = list(self.messages)
        for i in range(len(messages) - 1, -1, -1):
            m = messages[i]
            if m.role == "user":
                others = tuple(p for p in m.parts() if not isinstance(p, TextPart))
                content: str | tuple[Part, ...] = (TextPart(text),) + others if others else text
                messages[i] = msgspec.structs.replace(m, content=content)
                return self.with_changes(messages=tuple(messages))
        return self.with_changes(messages=self.messages + (Message("user", text),))

    def prompt_tokens(self) -> int:
        """The limiter's estimate of the prompt: text, tool calls and results, tool definitions,
        the response schema and images, before any call is made."""
        chars = 0
        images = 0
        for m in self.messages:
            content = m.content
            if isinstance(content, str):
                chars += len(content)
            elif content:
                for p in content:
                    if isinstance(p, TextPart):
                        chars += len(p.text)
                    elif isinstance(p, ImagePart):
                        images += image_tokens(p)
                    elif isinstance(p, AudioPart):
                        chars += len(p.data) // 8  # base64 audio: a rough proportional share
                    elif isinstance(p, FilePart):
                        chars += len(p.file_data or "") // 4
            for call in m.tool_calls:
                chars += len(call.name) + len(call.arguments)
        for tool in self.tools:
            chars += len(tool.name) + len(tool.description or "")
            if tool.parameters:
                chars += len(json.dumps(tool.parameters, separators=(",", ":")))
        fmt = self.response_format
        if fmt is not None and fmt.schema:
            chars += len(json.dumps(fmt.schema, separators=(",", ":")))
        return (chars + 3) // 4 + images


_OPTION_FIELDS = tuple(
    f for f in ChatRequest.__struct_fields__
    if f not in ("messages", "model", "extra_body", "max_retries", "wait_for_circuit", "timeout_s", "request_id")
)


# Answers ───────────────────────────────────────────────────────────────────────────────────


class Choice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One of a completion's choices (OpenAI's `choices[i]`)."""

    index: int = 0
    content: str = ""
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: dict[str, Any] | None = None  # OpenAI's {"content": [...], "refusal": [...]}
    finish_reason: str = "stop"  # stop | length | tool_calls | content_filter


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
    cached: bool = False  # answered from the response cache: cost 0, no provider call made
    error: str | None = None
    decision: str | None = None
    # Request fields the call went without: refused by the model and retried without them, or
    # with no counterpart at the provider (Anthropic has no `seed`).
    dropped: list[str] = []
    data: dict[str, Any] | None = None  # pattern details: vote counts, stage costs, the search tree
    children: list[Span] = []

    def total_cost(self) -> float:
        return self.cost + sum(c.total_cost() for c in self.children)

    def provider_calls(self) -> int:
        own = 1 if self.kind == "provider" and not self.cached else 0
        return own + sum(c.provider_calls() for c in self.children)


class Completion(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A finished answer with what it cost and how it was reached.

    The completion's own content, refusal, tool calls, logprobs and finish reason are its first
    choice; with `n` > 1 the others are in `more_choices`. `content` is "" when the model only
    called tools (OpenAI's null content).
    """

    content: str
    model: str
    provider: str
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    finish_reason: str = "stop"
    more_choices: tuple[Choice, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    reasoning_tokens: int = 0  # of output_tokens, spent on hidden reasoning
    latency_s: float = 0.0
    cost: float = 0.0
    confidence: float | None = None  # a coordinator's measure (an ensemble's agreement, say)
    trace: Span | None = None

    def first_choice(self) -> Choice:
        return Choice(
            index=0,
            content=self.content,
            refusal=self.refusal,
            tool_calls=self.tool_calls,
            logprobs=self.logprobs,
            finish_reason=self.finish_reason,
        )

    def choices(self) -> tuple[Choice, ...]:
        return (self.first_choice(),) + self.more_choices


class ToolCallDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    """A piece of a streamed tool call: `id` and `name` come with its first piece."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Chunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A piece of a streamed answer. The last chunk carries `done=True` and the full completion.

    `choice` is the choice the piece belongs to (n > 1); a piece holds text (`delta`), tool-call
    pieces, or a refusal piece.
    """

    delta: str = ""
    choice: int = 0
    tool_calls: tuple[ToolCallDelta, ...] = ()
    refusal: str | None = None
    done: bool = False
    completion: Completion | None = None


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: sorted keys, no spaces, and 2.0 written as 2 (JSON has one
    number type, so models that write either mean the same)."""
    return json.dumps(_integral(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token), used before a call is made."""
    return (len(text) + 3) // 4


def image_tokens(image: ImagePart) -> int:
    """OpenAI's image cost without decoding the image: 85 tokens at low detail, and at most
    what a 2048x768 high-detail image costs (85 + 170 per 512-pixel tile, six tiles) otherwise."""
    return 85 if image.detail == "low" else 85 + 170 * 6
