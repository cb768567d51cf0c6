"""Guardrails around a provider or route: what its requests may carry out, what its answers may bring back.

    guardrails:
      sets:                                   # named sets of rules
        pii:
          input: {redact: [email, phone, api_key]}
        safe-json:
          input: {max_prompt_tokens: 4000, deny: {jailbreak: "(?i)ignore (all )?previous instructions"}}
          output:
            deny: {apology: "(?i)as an ai language model"}
            json_schema: true                 # answers to response_format json_schema/json_object must fit
            on_failure: retry                 # retry | fallback | error
            retries: 1                        # then the fallback, when one is named
            fallback: sim-large
      apply:                                  # provider or route name (or "*": every provider) -> sets
        "*": [pii]
        cheap: [safe-json]

`GuardedModel` is the one hook (made in `Registry._make`, which every door and pattern gets its
models from). Input: deny patterns see the caller's text, redaction rewrites it before the call
(so it never reaches the provider, nor the cache), and a cap refuses a prompt too long; a broken
rule raises `GuardrailError` (a 400 at HTTP, an error record in a batch). Output: a broken rule
is retried with the reason in a system message, then sent to the fallback, else raised as
`OutputGuardrailError`. The trace's `data["guardrails"]` says what was redacted (kinds and counts,
never the text) and which rule caused a retry; every attempt's cost counts.
A stream whose answer is checked is held back until it has passed (it cannot be retried once sent).
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator, Callable, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestray.errors import GuardrailError, OrchestrayError, OutputGuardrailError
from orchestray.messages import ChatRequest, Chunk, Completion, Message, Span
from orchestray.policies.guardrails import DenyList, InputRules, OutputRules, Redactor, Violation

__all__ = ["GuardrailsConfig", "GuardrailSet", "GuardedModel", "guard_for"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _patterns(value: Any) -> dict[str, str]:
    if isinstance(value, (list, tuple)):
        value = {str(i): p for i, p in enumerate(value)}
    for name, pattern in value.items():
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"deny pattern {name!r} is not a valid regular expression: {err}") from None
    return dict(value)


class InputGuard(_Strict):
    max_prompt_tokens: int | None = Field(default=None, gt=0)
    deny: dict[str, str] = Field(default={}, description="name -> regex (a list is named by index)")
    redact: list[Literal["email", "phone", "api_key"]] = []

    _deny = field_validator("deny", mode="before")(classmethod(lambda cls, v: _patterns(v)))


class OutputGuard(_Strict):
    deny: dict[str, str] = {}
    json_schema: bool = Field(default=False, description="answers to a JSON response_format must parse and fit its schema")
    on_failure: Literal["retry", "fallback", "error"] = "retry"
    retries: int = Field(default=1, ge=0, le=5)
    fallback: str | None = None

    _deny = field_validator("deny", mode="before")(classmethod(lambda cls, v: _patterns(v)))


class GuardrailSet(_Strict):
    input: InputGuard = InputGuard()
    output: OutputGuard = OutputGuard()


class GuardrailsConfig(_Strict):
    sets: dict[str, GuardrailSet] = {}
    apply: dict[str, list[str]] = {}

    def references(self) -> list[tuple[str, str]]:
        """(field, model name) pairs the config must know: applied-to names and fallbacks."""
        found = [(f"guardrails.apply.{name}", name) for name in self.apply if name != "*"]
        found += [(f"guardrails.sets.{s}.output.fallback", g.output.fallback) for s, g in self.sets.items() if g.output.fallback]
        return found

    def unknown_sets(self) -> list[tuple[str, str]]:
        return [(f"guardrails.apply.{name}", s) for name, sets in self.apply.items() for s in sets if s not in self.sets]

    def sets_for(self, name: str, is_provider: bool) -> list[GuardrailSet]:
        names = (self.apply.get("*", []) if is_provider else []) + self.apply.get(name, [])
        return [self.sets[s] for s in dict.fromkeys(names)]


class _Composed:
    """Several sets as one: caps at their lowest, patterns and redaction kinds together, the
    output's failure handling from the last set that checks output."""

    def __init__(self, sets: list[GuardrailSet]):
        caps = [s.input.max_prompt_tokens for s in sets if s.input.max_prompt_tokens]
        deny_in = {k: v for s in sets for k, v in s.input.deny.items()}
        kinds = {k for s in sets for k in s.input.redact}
        self.input = InputRules(
            max_prompt_tokens=min(caps) if caps else None,
            deny=DenyList("input", deny_in) if deny_in else None,
            redactor=Redactor(kinds) if kinds else None,
        )
        deny_out = {k: v for s in sets for k, v in s.output.deny.items()}
        self.output = OutputRules(DenyList("output", deny_out) if deny_out else None, any(s.output.json_schema for s in sets))
        checking = [s.output for s in sets if s.output.deny or s.output.json_schema]
        self.handling = checking[-1] if checking else OutputGuard()

    @property
    def empty(self) -> bool:
        i = self.input
        return i.max_prompt_tokens is None and i.deny is None and i.redactor is None and self.output.deny is None and not self.output.validate_json


def guard_for(name: str, is_provider: bool, config: GuardrailsConfig, model: Any, resolve: Callable[[str], Any]) -> Any:
    """`model` behind the guardrails applied to `name`, or `model` itself when none are."""
    sets = config.sets_for(name, is_provider)
    if not sets:
        return model
    composed = _Composed(sets)
    return model if composed.empty else GuardedModel(name, model, composed, resolve)


def _retry_request(request: ChatRequest, violation: Violation) -> ChatRequest:
    note = (
        f"Your previous answer was rejected ({violation.rule}: {violation.message}). "
        "Answer again, following the requested format exactly."
    )
    return request.with_changes(messages=(Message("system", note),) + request.messages)


class GuardedModel:
    """A provider or route behind its guardrails; stats, latency quantiles and the rest pass through."""

    def __init__(self, name: str, model: Any, rules: _Composed, resolve: Callable[[str], Any]):
        self.name = name
        self.model = model
        self.rules = rules
        self._resolve = resolve

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.__dict__["model"], attr)

    def __repr__(self) -> str:
        return f"GuardedModel({self.model!r})"

    def _admit(self, request: ChatRequest) -> tuple[ChatRequest, dict[str, int]]:
        verdict = self.rules.input.apply(request)
        if isinstance(verdict, Violation):
            raise GuardrailError(verdict.message, verdict.rule)
        return verdict

    async def complete(self, request: ChatRequest) -> Completion:
        request, redacted = self._admit(request)
        if not self.rules.output.active_for(request):
            return _noted(await self.model.complete(request), redacted, None, [])
        return await self._checked(request, redacted, lambda r, m: m.complete(r))

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        request, redacted = self._admit(request)
        if not self.rules.output.active_for(request):
            async for chunk in self.model.stream(request):
                yield _noted_chunk(chunk, redacted, None, [])
            return

        async def held(r: ChatRequest, model: Any) -> tuple[Completion, list[Chunk]]:
            chunks = [c async for c in model.stream(r)]
            final = next((c.completion for c in chunks if c.done and c.completion is not None), None)
            if final is None:
                raise OrchestrayError(f"{self.name}: the stream ended without its final answer")
            return final, chunks

        completion, chunks = await self._checked(request, redacted, held, streamed=True)
        for chunk in chunks:
            yield chunk if not chunk.done else Chunk(done=True, completion=completion)

    async def _checked(self, request: ChatRequest, redacted: dict[str, int], call, streamed: bool = False):
        handling = self.rules.handling
        tries = 1 + (handling.retries if handling.on_failure == "retry" else 0)
        failed: list[Span] = []
        asked = request
        violation: Violation | None = None
        for attempt in range(tries):
            got = await call(asked, self.model)
            completion = got[0] if streamed else got
            violation = self.rules.output.check(completion, request)
            if violation is None:
                done = _noted(completion, redacted, failed[-1].decision if failed else None, failed)
                return (done, got[1]) if streamed else done
            failed.append(_rejected(completion, violation))
            asked = _retry_request(request, violation)
        if handling.on_failure != "error" and handling.fallback:
            got = await call(request, self._resolve(handling.fallback))
            completion = got[0] if streamed else got
            second = self.rules.output.check(completion, request)
            if second is None:
                done = _noted(completion, redacted, f"fallback to {handling.fallback} after {violation.rule}", failed)
                return (done, got[1]) if streamed else done
            failed.append(_rejected(completion, second))
            violation = second
        err = OutputGuardrailError(f"{violation.message} (after {len(failed)} answer(s))", violation.rule)
        err.span = Span(name=self.name, kind="guardrail", outcome="error", error=str(err), children=failed,
                        decision=f"rejected: {violation.rule}")
        raise err


def _rejected(completion: Completion, violation: Violation) -> Span:
    span = completion.trace or Span(name=completion.provider, model=completion.model, cost=completion.cost)
    return msgspec.structs.replace(span, outcome="error", error=f"{violation.rule}: {violation.message}",
                                   decision=f"rejected: {violation.rule}")


def _noted(completion: Completion, redacted: dict[str, int], decision: str | None, failed: list[Span]) -> Completion:
    """The completion with what the guardrails did in its trace; rejected attempts become the
    siblings of the accepted one under a `guardrail` span, and their cost is added."""
    if not redacted and not failed:
        return completion
    note: dict[str, Any] = {}
    if redacted:
        note["redacted"] = dict(sorted(redacted.items()))
    trace = completion.trace or Span(name=completion.provider, model=completion.model, cost=completion.cost,
                                     input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
    cost = completion.cost
    if failed:
        note["rejected"] = [s.decision for s in failed]
        cost += sum(s.total_cost() for s in failed)
        trace = Span(name=trace.name, kind="guardrail", model=trace.model, decision=decision,
                     input_tokens=trace.input_tokens + sum(s.input_tokens for s in failed),
                     output_tokens=trace.output_tokens + sum(s.output_tokens for s in failed),
                     latency_s=trace.latency_s + sum(s.latency_s for s in failed),
                     children=[*failed, trace])
    trace = msgspec.structs.replace(trace, data={**(trace.data or {}), "guardrails": note})
    return msgspec.structs.replace(completion, trace=trace, cost=cost)


def _noted_chunk(chunk: Chunk, redacted: dict[str, int], decision: str | None, failed: list[Span]) -> Chunk:
    if chunk.done and chunk.completion is not None and redacted:
        return msgspec.structs.replace(chunk, completion=_noted(chunk.completion, redacted, decision, failed))
    return chunk
