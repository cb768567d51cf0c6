"""Pipeline: steps run in order, each a prompt template over the input and earlier steps' outputs.

A step (one mapping of a pipeline route's `steps`):

    name        how later templates and conditions refer to it (default "step<i>")
    model       the provider or route that answers it
    prompt      template, default "{input}"; system: an optional system-message template
    when        a condition over earlier steps; false skips the step
    parse       an output parser; a reply it finds nothing in counts as a failed attempt
    retries     extra attempts after a failure (0 by default); a retry asks with a fresh seed
    timeout_s   per attempt of a live call; the call is cancelled when it runs out (a call a
                provider batch answers waits for its batch)
    max_tokens  for the step's reply (default: the request's)

Templates, conditions and parsers are `orchestray.policies.templates`. The input is the request's
last user message. `on_error: fail_fast` raises the first step that fails for good, with the trace
so far; `continue` records it and goes on (a later template naming it then fails that step too).
The answer is the last step that ran; the trace has one span per step, skipped steps included.

A step is asked over the caller's conversation: its filled prompt replaces the text of the last
user turn (images kept) and its system template comes first, with the caller's sampling fields.
The caller's output options (tools, tool choice, response format, logprobs) go to the final step
of the list, whose answer is the pipeline's; earlier steps answer in text for the templates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import msgspec

from orchestray.errors import AllFailedError, ConfigError, OrchestrayError, ProviderTimeoutError, RequestError
from orchestray.messages import ChatRequest, Completion, Message, Span
from orchestray.policies.extraction import Extractor
from orchestray.policies.templates import Condition, StepOutput, check_template, condition, fill, output_parser, should_run

from orchestray.coordinators._base import (
    Coordinator,
    Resolve,
    ask_in_turn,
    fail_with,
    failed_span,
    finish,
    own_question,
    sample_seed,
)

__all__ = ["PipelineStep", "PipelineCoordinator", "STEP_KEYS", "ON_ERROR", "check_steps"]

STEP_KEYS = ("name", "model", "prompt", "system", "when", "parse", "retries", "timeout_s", "max_tokens")
ON_ERROR = ("fail_fast", "continue")


@dataclass(frozen=True)
class PipelineStep:
    name: str
    model: str
    prompt: str = "{input}"
    system: str | None = None
    when: Condition | None = None
    parse: Extractor | None = None
    retries: int = 0
    timeout_s: float | None = None
    max_tokens: int | None = None

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], index: int) -> PipelineStep:
        """A step from its config mapping; errors say what is wrong but not where (the caller does)."""
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a step is a mapping with at least `model`, got {spec!r}")
        unknown = sorted(set(spec) - set(STEP_KEYS))
        if unknown:
            raise ConfigError(f"unknown key {', '.join(map(repr, unknown))}; use {', '.join(STEP_KEYS)}")
        model = spec.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError("`model` must name the provider or route that answers the step")
        name = spec.get("name", f"step{index}")
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"`name` must be letters, digits, - and _ (templates refer to it), got {name!r}")
        for key in ("prompt", "system"):
            if key in spec and spec[key] is not None and not isinstance(spec[key], str):
                raise ConfigError(f"`{key}` must be a template string, got {spec[key]!r}")
        retries = spec.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
            raise ConfigError(f"`retries` must be a whole number from 0 to 10, got {retries!r}")
        timeout = spec.get("timeout_s")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ConfigError(f"`timeout_s` must be a number of seconds > 0, got {timeout!r}")
        max_tokens = spec.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0):
            raise ConfigError(f"`max_tokens` must be a whole number > 0, got {max_tokens!r}")
        when = spec.get("when")
        parse = spec.get("parse")
        return cls(
            name=name,
            model=model,
            prompt=spec.get("prompt") or "{input}",
            system=spec.get("system"),
            when=condition(when) if when is not None else None,
            parse=output_parser(parse) if parse is not None else None,
            retries=retries,
            timeout_s=float(timeout) if timeout is not None else None,
            max_tokens=max_tokens,
        )


def check_steps(steps: list[PipelineStep | Mapping[str, Any]]) -> list[PipelineStep]:
    """The steps, each checked against those before it: a template or condition naming a step
    that does not come earlier is a ConfigError naming the field (`steps[2].when: ...`)."""
    checked: list[PipelineStep] = []
    for i, spec in enumerate(steps):
        where = f"steps[{i}]"
        try:
            step = spec if isinstance(spec, PipelineStep) else PipelineStep.from_dict(spec, i)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err.message}") from None
        earlier = [s.name for s in checked]
        if step.name in earlier:
            raise ConfigError(f"{where}.name: duplicate step name {step.name!r}")
        for field in ("prompt", "system"):
            try:
                if getattr(step, field) is not None:
                    check_template(getattr(step, field), earlier)
            except ConfigError as err:
                raise ConfigError(f"{where}.{field}: {err.message}") from None
        if step.when is not None:
            unknown = sorted(step.when.steps_used() - set(earlier))
            if unknown:
                raise ConfigError(f"{where}.when: no earlier step named {', '.join(map(repr, unknown))} "
                                  f"(earlier: {', '.join(earlier) or 'none'})")
        checked.append(step)
    return checked


class _StepFailed(Exception):
    """A step's final failure, with the spans of its attempts."""

    def __init__(self, cause: OrchestrayError, attempts: list[Span]):
        super().__init__(str(cause))
        self.cause = cause
        self.attempts = attempts


class PipelineCoordinator(Coordinator):
    kind = "pipeline"

    def __init__(
        self,
        name: str,
        resolve: Resolve,
        steps: list[PipelineStep | Mapping[str, Any]],
        *,
        on_error: str = "fail_fast",
        clock: Callable[[], float] = time.monotonic,
    ):
        """Steps are checked here (`check_steps`); an error names `routes.NAME.steps[i].FIELD`."""
        super().__init__(name, resolve, clock)
        if on_error not in ON_ERROR:
            raise ConfigError(f"routes.{name}.on_error: use {' or '.join(ON_ERROR)}, got {on_error!r}")
        if not steps:
            raise ConfigError(f"routes.{name}.steps: a pipeline needs at least one step")
        self.on_error = on_error
        try:
            self.steps = check_steps(steps)
        except ConfigError as err:
            raise ConfigError(f"routes.{name}.{err.message}") from None

    async def complete(self, request: ChatRequest) -> Completion:
        started = self.clock()
        text = request.last_user_text()
        outputs: dict[str, StepOutput | None] = {}
        spans: list[Span] = []
        record: list[dict[str, Any]] = []
        causes: list[BaseException] = []
        last: tuple[PipelineStep, Completion] | None = None
        for step in self.steps:
            run, reason = should_run(step.when, outputs, text)
            if not run:
                outputs[step.name] = None
                spans.append(Span(name=step.name, kind="step", model=step.model, outcome="skipped", decision=reason))
                record.append({"step": step.name, "outcome": "skipped", "reason": reason})
                continue
            step_started = self.clock()
            try:
                answer, parsed, attempts = await self._run_step(step, request, outputs, text)
            except _StepFailed as failed:
                outputs[step.name] = None
                causes.append(failed.cause)
                spans.append(self._step_span(step, failed.attempts, step_started, reason, error=str(failed.cause)))
                record.append({"step": step.name, "outcome": "error", "reason": reason, "error": str(failed.cause),
                               "attempts": len(failed.attempts)})
                if self.on_error == "fail_fast":
                    data = {"steps": record, "on_error": self.on_error}
                    err = fail_with(failed.cause, self.kind, self.name, spans,
                                    f"step {step.name} failed; fail_fast", self.clock() - started)
                    err.span.data = data
                    raise err from None
                continue
            outputs[step.name] = StepOutput(answer.content, parsed)
            spans.append(self._step_span(step, attempts, step_started, reason))
            record.append({"step": step.name, "outcome": "ok", "reason": reason, "attempts": len(attempts),
                           "output": answer.content, "parsed": parsed})
            last = (step, answer)
        elapsed = self.clock() - started
        data = {"steps": record, "on_error": self.on_error}
        if last is None:
            why = "every step that ran failed" if causes else "every step was skipped"
            err = fail_with(AllFailedError(f"pipeline {self.name}: {why}", causes), self.kind, self.name, spans,
                            why, elapsed)
            err.span.data = data
            raise err
        step, answer = last
        data["answered_by"] = step.name
        failed = [r["step"] for r in record if r["outcome"] == "error"]
        skipped = [r["step"] for r in record if r["outcome"] == "skipped"]
        decision = f"answer from step {step.name}"
        if skipped:
            decision += f"; skipped: {', '.join(skipped)}"
        if failed:
            decision += f"; failed and continued: {', '.join(failed)}"
        return finish(self.kind, self.name, answer, spans, decision, elapsed, data=data)

    async def _run_step(self, step: PipelineStep, request: ChatRequest, outputs, text: str):
        """The step's answer, its parsed value and its attempts' spans; `_StepFailed` when out of tries."""
        try:
            prompt = fill(step.prompt, outputs, text)
            system = fill(step.system, outputs, text) if step.system is not None else None
        except ConfigError as err:  # names a step that did not run: no retry can help
            raise _StepFailed(RequestError(f"step {step.name}: {err.message}"), []) from None
        final = step is self.steps[-1]
        asked = (ask_in_turn if final else own_question)(request, prompt)
        if system is not None:
            asked = asked.with_changes(messages=(Message("system", system),) + asked.messages)
        asked = asked.with_changes(
            model=step.model,
            max_tokens=step.max_tokens if step.max_tokens is not None else request.max_tokens,
        )
        model = self.resolve(step.model)
        attempts: list[Span] = []
        cause: OrchestrayError | None = None
        for attempt in range(step.retries + 1):
            if attempt:
                asked = asked.with_changes(seed=sample_seed(request.seed, attempt))
            attempt_started = self.clock()
            try:
                # The timeout bounds a live call, not a provider batch's turnaround
                # (orchestray batch --provider-batch), which the batch's own window bounds.
                if step.timeout_s is None or getattr(model, "answers_from_batches", False):
                    answer = await model.complete(asked)
                else:
                    async with asyncio.timeout(step.timeout_s):
                        answer = await model.complete(asked)
            except TimeoutError:
                cause = ProviderTimeoutError(f"step {step.name}: no answer within {step.timeout_s:g}s",
                                             provider=step.model)
                attempts.append(Span(name=step.model, outcome="error", error=str(cause),
                                     latency_s=self.clock() - attempt_started))
                continue
            except RequestError as err:  # the request itself is wrong: retrying cannot help
                attempts.append(failed_span(err, step.model))
                raise _StepFailed(err, attempts) from None
            except OrchestrayError as err:
                cause = err
                attempts.append(failed_span(err, step.model))
                continue
            trace = answer.trace if answer.trace is not None else Span(name=step.model, cost=answer.cost)
            parsed = step.parse(answer.content) if step.parse is not None else None
            if step.parse is not None and parsed is None:
                cause = RequestError(f"step {step.name}: parser {step.parse.describe()} found nothing in the reply")
                attempts.append(msgspec.structs.replace(trace, outcome="error", error=str(cause)))
                continue
            attempts.append(trace)
            return answer, parsed, attempts
        assert cause is not None
        raise _StepFailed(cause, attempts)

    def _step_span(self, step: PipelineStep, attempts: list[Span], started: float, reason: str,
                   error: str | None = None) -> Span:
        tries = len(attempts)
        decision = reason if tries <= 1 else f"{reason}; {tries} attempts"
        return Span(
            name=step.name,
            kind="step",
            model=step.model,
            outcome="error" if error else "ok",
            input_tokens=sum(s.input_tokens for s in attempts),
            output_tokens=sum(s.output_tokens for s in attempts),
            latency_s=self.clock() - started,
            retries=max(0, tries - 1),
            error=error,
            decision=decision,
            children=attempts,
        )
