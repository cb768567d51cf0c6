"""The HTTP bodies of the pattern endpoints, derived from the pattern table, and OpenAI's error shape.

A body is the chat request's own fields (`messages`, `tools`, `temperature`, ...) beside the
pattern's route fields, with the route model's own types, bounds and defaults: the endpoint
`POST /v1/patterns/NAME` takes exactly the options a route of that pattern takes in the config.
Where a route field shares a chat field's name, the table renames it at this door
(`sample_temperature` for an ensemble's samples).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from orchestray.patterns import PATTERNS, Pattern

__all__ = ["PATTERN_BODIES", "PatternBody", "openai_error"]

# More members than this in one request is a mistake or an attack (each is a call, or more).
MAX_MEMBERS = 32


class PatternBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1, description="OpenAI-style chat messages")
    # The chat request's own options, passed to every member; checked as /v1/chat/completions checks them.
    max_tokens: int | None = Field(default=None, gt=0, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, description="OpenAI-style tools offered to every member")
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(default=None, description="text, json_object or json_schema")
    n: int | None = Field(default=None, ge=1, le=16, description="independent runs of the pattern, one choice each")
    stop: str | list[str] | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = Field(default=None, description="the answer as OpenAI's chat-completion chunks (SSE)")
    stream_options: dict[str, Any] | None = Field(default=None, description="{\"include_usage\": true} for a final usage chunk")

    pattern_of: ClassVar[Pattern]  # the table's row, set on each derived body

    def chat_body(self) -> dict[str, Any]:
        body = {"model": "pattern", "messages": self.messages}
        for name in _CHAT_FIELDS:
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        return body

    def route(self) -> dict[str, Any]:
        """The route this body describes, in the config's own shape (validated the same way)."""
        pattern = type(self).pattern_of
        dumped = self.model_dump(mode="json", exclude=set(_CHAT_FIELDS) | {"messages"})
        names = {pattern.renamed.get(k, k): k for k in pattern.route.model_fields}
        return {"pattern": pattern.name, **{names[k]: v for k, v in dumped.items()}}


_CHAT_FIELDS = tuple(name for name in PatternBody.model_fields if name != "messages")


def _body(pattern: Pattern) -> type[PatternBody]:
    fields: dict[str, Any] = {}
    for name, info in pattern.route.model_fields.items():
        if name in ("pattern", "description"):
            continue
        http_name = pattern.renamed.get(name, name)
        if http_name in PatternBody.model_fields:
            raise TypeError(f"{pattern.name}.{name} shares a chat field's name: rename it in the pattern table")
        if name == pattern.members and name == "providers":
            info = Field(min_length=1, max_length=MAX_MEMBERS, description="providers or routes to coordinate")
            fields[name] = (list[str], info)
            continue
        fields[http_name] = (info.annotation, info)
    title = "".join(part.title() for part in pattern.name.split("_")) + "Body"
    body = create_model(title, __base__=PatternBody, __doc__=pattern.summary, **fields)
    body.pattern_of = pattern
    return body


PATTERN_BODIES: dict[str, type[PatternBody]] = {name: _body(p) for name, p in PATTERNS.items()}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The error body OpenAI clients parse: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}
