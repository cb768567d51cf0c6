"""The HTTP bodies of the pattern endpoints and the OpenAI error shape (pydantic, for the OpenAPI doc)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestray.openai_format import ChatCompletionBody

__all__ = ["RaceBody", "EnsembleBody", "CascadeBody", "TreeOfThoughtBody", "PATTERN_BODIES", "openai_error"]


class _PatternBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1, description="OpenAI-style chat messages")
    providers: list[str] = Field(min_length=1, max_length=32, description="providers or routes to coordinate")
    max_tokens: int | None = Field(default=None, gt=0, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    # The chat request's own options, passed to every member; checked as /v1/chat/completions checks them.
    tools: list[dict[str, Any]] | None = Field(default=None, description="OpenAI-style tools offered to every member")
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(default=None, description="text, json_object or json_schema")
    n: int | None = Field(default=None, ge=1, le=16, description="independent runs of the pattern, one choice each")
    stop: str | list[str] | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)

    def chat_body(self) -> dict[str, Any]:
        body = {"model": "pattern", "messages": self.messages}
        for field in _CHAT_FIELDS:
            if getattr(self, field) is not None:
                body[field] = getattr(self, field)
        return body

    def route(self) -> dict[str, Any]:
        """The route this body describes, in the config's own shape (validated the same way)."""
        raise NotImplementedError


_CHAT_FIELDS = ("max_tokens", "temperature", "seed", "tools", "tool_choice", "parallel_tool_calls",
                "response_format", "n", "stop", "top_p")

Extract = Literal["answer", "number", "choice", "text", "json", "tool_call"]


class RaceBody(_PatternBody):
    hedge_after_ms: float | Literal["p95"] | None = Field(default=None, description="hedge delay; null races all at once")

    def route(self) -> dict[str, Any]:
        return {"pattern": "race", "providers": self.providers, "hedge_after_ms": self.hedge_after_ms}


class EnsembleBody(_PatternBody):
    samples: int = Field(default=1, gt=0, le=16)
    sample_temperature: float | None = Field(default=None, ge=0, le=2)
    vote: Literal["majority", "weighted", "judge", "aggregate"] = "majority"
    tie: Literal["first", "lowest_cost", "abstain", "random"] = "first"
    weights: dict[str, float] = {}
    judge: str | None = None
    extract: Extract | None = Field(default=None, description="unset: the Answer: line, or canonical JSON")
    path: str | None = Field(default=None, description="extract: json: the field that votes, e.g. answer")
    quorum: int | None = Field(default=None, gt=0)

    def route(self) -> dict[str, Any]:
        return {
            "pattern": "ensemble", "providers": self.providers, "samples": self.samples,
            "temperature": self.sample_temperature, "vote": self.vote, "tie": self.tie,
            "weights": self.weights, "judge": self.judge, "extract": self.extract, "path": self.path,
            "quorum": self.quorum,
        }


class CascadeBody(_PatternBody):
    accept: Literal["confidence", "agreement", "judge"] = "confidence"
    threshold: float = Field(default=0.8, ge=0, le=1)
    samples: int = Field(default=3, gt=0, le=16)
    judge: str | None = None
    extract: Extract | None = Field(default=None, description="how agreement compares samples")
    path: str | None = None

    def route(self) -> dict[str, Any]:
        return {"pattern": "cascade", "providers": self.providers, "accept": self.accept,
                "threshold": self.threshold, "samples": self.samples, "judge": self.judge,
                "extract": self.extract, "path": self.path}


class TreeOfThoughtBody(_PatternBody):
    task: Literal["general", "game24"] = "game24"  # the HTTP default stays the benchmark task
    breadth: int = Field(default=5, gt=0, le=16)
    depth: int = Field(default=3, gt=0, le=8)
    evaluations: int = Field(default=3, gt=0, le=8)
    max_calls: int | None = Field(default=200, gt=0, le=2000)
    max_cost: float | None = Field(default=None, gt=0)

    def route(self) -> dict[str, Any]:
        return {"pattern": "tree_of_thought", "providers": self.providers, "task": self.task,
                "breadth": self.breadth, "depth": self.depth, "evaluations": self.evaluations,
                "max_calls": self.max_calls, "max_cost": self.max_cost}


PATTERN_BODIES: dict[str, type[_PatternBody]] = {
    "race": RaceBody,
    "ensemble": EnsembleBody,
    "cascade": CascadeBody,
    "tree_of_thought": TreeOfThoughtBody,
}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error"}


def openai_error(status: int, message: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The error body OpenAI clients parse: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}


__all__.append("ChatCompletionBody")
