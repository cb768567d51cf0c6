"""Pipeline prompt templates over earlier steps' outputs, the conditions that skip a step, and output parsers.

A pipeline step in the YAML, with the parts this module reads:

    - name: summary
      model: sim-large
      prompt: "Summarise for a {audience}:\\n{steps.draft.output}"   # template (below)
      when: {step: classify, equals: "long"}                          # condition (below)
      parse: number                                                   # or {kind: regex, pattern: ...}

Template fields (Python `str.format` syntax, `{{` and `}}` for literal braces):

    {input}                 the pipeline's input text
    {steps.NAME.output}     an earlier step's reply; `{steps.NAME}` is the same
    {steps.NAME.parsed}     that reply through the step's parser
    {anything_else}         a variable passed to `fill(..., name=value)`

Only these names resolve (no attribute or index access), and a missing one raises ConfigError
naming the field and what is available. Conditions are mappings, not an expression language:

    {step: NAME, contains: "text"}     the step's value contains the text
    {step: NAME, equals: "text"}       the step's value, stripped, equals the text
    {step: NAME, matches: "regex"}     re.search finds the pattern in the step's value
    {not: CONDITION}   {all: [CONDITION, ...]}   {any: [CONDITION, ...]}

`ignore_case: true` applies to contains, equals and matches. The step's value is its parsed value
when it has one, else its output; `field: output` or `field: parsed` picks explicitly. `step: input`
tests the pipeline's input. A condition on a step that did not run (skipped or failed) is false.
Parsers are the extractors of `orchestray.policies.extraction`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestray.errors import ConfigError
from orchestray.policies.extraction import Extractor, extractor

__all__ = [
    "StepOutput",
    "fill",
    "template_fields",
    "check_template",
    "Condition",
    "condition",
    "should_run",
    "output_parser",
]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What an earlier step produced; steps that did not run are absent or None."""

    output: str
    parsed: str | None = None


Steps = Mapping[str, "StepOutput | str | None"]


def _as_output(value: StepOutput | str) -> StepOutput:
    return value if isinstance(value, StepOutput) else StepOutput(str(value))


class _TemplateFormatter(string.Formatter):
    """str.format with lookups restricted to `input`, `steps.NAME[.output|.parsed]` and variables."""

    def __init__(self, steps: Steps, input: str, variables: Mapping[str, Any], template: str):
        super().__init__()
        self.steps = steps
        self.input = input
        self.variables = variables
        self.template = template

    def _available(self) -> str:
        names = ["input"] + [f"steps.{n}" for n, v in self.steps.items() if v is not None]
        return ", ".join(names + sorted(self.variables))

    def _missing(self, field: str, why: str) -> ConfigError:
        return ConfigError(f"template field {{{field}}}: {why} (available: {self._available()})")

    def get_field(self, field_name: str, args, kwargs):
        return _resolve_field(field_name, self), field_name

    def check_unused_args(self, used_args, args, kwargs) -> None:
        return None


def _resolve_field(field_name: str, fmt: _TemplateFormatter) -> Any:
    if not field_name or field_name.isdigit():
        raise fmt._missing(field_name, "positional fields are not supported; name the value")
    if "[" in field_name or "]" in field_name:
        raise fmt._missing(field_name, "indexing is not supported; use steps.NAME.output")
    parts = field_name.split(".")
    head = parts[0]
    if head == "input" and len(parts) == 1:
        return fmt.input
    if head == "steps":
        if len(parts) == 1:
            raise fmt._missing(field_name, "name a step, as in steps.NAME.output")
        name = parts[1]
        if name not in fmt.steps:
            raise fmt._missing(field_name, f"no step named {name!r} has run")
        value = fmt.steps[name]
        if value is None:
            raise fmt._missing(field_name, f"step {name!r} did not run (skipped or failed)")
        out = _as_output(value)
        attr = parts[2] if len(parts) > 2 else "output"
        if len(parts) > 3 or attr not in ("output", "parsed"):
            raise fmt._missing(field_name, "a step has only .output and .parsed")
        if attr == "parsed" and out.parsed is None:
            raise fmt._missing(field_name, f"step {name!r} has no parsed value (no parser, or it found nothing)")
        return out.output if attr == "output" else out.parsed
    if len(parts) == 1 and head in fmt.variables:
        return fmt.variables[head]
    raise fmt._missing(field_name, "unknown field")


def fill(template: str, steps: Steps | None = None, input: str = "", **variables: Any) -> str:
    """The template with its fields filled from the input, earlier steps and variables."""
    fmt = _TemplateFormatter(steps or {}, input, variables, template)
    try:
        return fmt.vformat(template, (), {})
    except ConfigError:
        raise
    except (ValueError, IndexError, KeyError) as err:
        raise ConfigError(f"template {template[:60]!r}: {err}") from None


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order, each once; ConfigError for a malformed template."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(f"template {template[:60]!r}: {err}") from None
    return list(dict.fromkeys(names))


def check_template(template: str, known_steps: Iterable[str], variables: Iterable[str] = ()) -> None:
    """Raise ConfigError when the template names a step not in `known_steps` (the earlier steps)."""
    known = set(known_steps)
    allowed_vars = set(variables)
    for name in template_fields(template):
        parts = name.split(".")
        if name == "input" or (len(parts) == 1 and name in allowed_vars):
            continue
        if parts[0] == "steps" and len(parts) in (2, 3) and (len(parts) == 2 or parts[2] in ("output", "parsed")):
            if parts[1] in known:
                continue
            listed = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"template field {{{name}}}: no earlier step named {parts[1]!r} (earlier: {listed})")
        raise ConfigError(
            f"template field {{{name}}}: use {{input}}, {{steps.NAME.output}}, {{steps.NAME.parsed}}"
            + (f" or a variable ({', '.join(sorted(allowed_vars))})" if allowed_vars else "")
        )


# --- conditions --------------------------------------------------------------------------------


class Condition:
    """A test over earlier steps deciding whether a step runs; build with `condition(spec)`."""

    def __call__(self, steps: Steps, input: str = "") -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def steps_used(self) -> set[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class _Compare(Condition):
    __slots__ = ("step", "op", "operand", "ignore_case", "field", "_regex")

    def __init__(self, step: str, op: str, operand: str, ignore_case: bool, field: str | None):
        self.step, self.op, self.operand, self.ignore_case, self.field = step, op, operand, ignore_case, field
        self._regex = None
        if op == "matches":
            try:
                self._regex = re.compile(operand, re.IGNORECASE if ignore_case else 0)
            except re.error as err:
                raise ConfigError(f"when: bad `matches` pattern {operand!r}: {err}") from None

    def _value(self, steps: Steps, input: str) -> str | None:
        if self.step == "input":
            return input
        raw = steps.get(self.step)
        if raw is None:
            return None
        out = _as_output(raw)
        if self.field == "output":
            return out.output
        if self.field == "parsed":
            return out.parsed
        return out.parsed if out.parsed is not None else out.output

    def __call__(self, steps: Steps, input: str = "") -> bool:
        value = self._value(steps, input)
        if value is None:
            return False
        if self.op == "matches":
            assert self._regex is not None
            return self._regex.search(value) is not None
        operand = self.operand
        if self.ignore_case:
            value, operand = value.casefold(), operand.casefold()
        if self.op == "contains":
            return operand in value
        return value.strip() == operand.strip()

    def describe(self) -> str:
        where = "input" if self.step == "input" else f"steps.{self.step}"
        if self.field:
            where += f".{self.field}"
        return f"{where} {self.op} {self.operand!r}" + (" (any case)" if self.ignore_case else "")

    def steps_used(self) -> set[str]:
        return set() if self.step == "input" else {self.step}


class _Not(Condition):
    __slots__ = ("inner",)

    def __init__(self, inner: Condition):
        self.inner = inner

    def __call__(self, steps: Steps, input: str = "") -> bool:
        return not self.inner(steps, input)

    def describe(self) -> str:
        return f"not ({self.inner.describe()})"

    def steps_used(self) -> set[str]:
        return self.inner.steps_used()


class _Group(Condition):
    __slots__ = ("parts", "every")

    def __init__(self, parts: list[Condition], every: bool):
        self.parts, self.every = parts, every

    def __call__(self, steps: Steps, input: str = "") -> bool:
        test = all if self.every else any
        return test(p(steps, input) for p in self.parts)

    def describe(self) -> str:
        word = " and " if self.every else " or "
        return "(" + word.join(p.describe() for p in self.parts) + ")"

    def steps_used(self) -> set[str]:
        return set().union(*(p.steps_used() for p in self.parts))


_OPS = ("contains", "equals", "matches")


def condition(spec: Mapping[str, Any] | Condition) -> Condition:
    """A condition from its mapping (see the module doc); ConfigError says what is wrong."""
    if isinstance(spec, Condition):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"when: a condition is a mapping like {{step: x, contains: '...'}}, got {spec!r}")
    keys = set(spec)
    if keys == {"not"}:
        return _Not(condition(spec["not"]))
    if keys in ({"all"}, {"any"}):
        (key,) = keys
        parts = spec[key]
        if not isinstance(parts, list) or not parts:
            raise ConfigError(f"when: `{key}` takes a non-empty list of conditions")
        return _Group([condition(p) for p in parts], every=key == "all")
    ops = [k for k in _OPS if k in spec]
    unknown = keys - set(_OPS) - {"step", "ignore_case", "field"}
    if unknown:
        raise ConfigError(
            f"when: unknown key {', '.join(map(repr, sorted(unknown)))}; "
            "use step with contains/equals/matches, or not/all/any"
        )
    if "step" not in spec or not isinstance(spec["step"], str) or not spec["step"]:
        raise ConfigError("when: name the `step` to test (or `step: input`)")
    if len(ops) != 1:
        raise ConfigError(f"when: give exactly one of contains, equals, matches for step {spec['step']!r}")
    operand = spec[ops[0]]
    if not isinstance(operand, (str, int, float)) or isinstance(operand, bool):
        raise ConfigError(f"when: `{ops[0]}` takes text, got {operand!r}")
    field = spec.get("field")
    if field not in (None, "output", "parsed"):
        raise ConfigError(f"when: `field` is output or parsed, got {field!r}")
    return _Compare(spec["step"], ops[0], str(operand), bool(spec.get("ignore_case", False)), field)


def should_run(
    when: Mapping[str, Any] | Condition | None, steps: Steps, input: str = ""
) -> tuple[bool, str]:
    """Whether a step runs under its `when` condition, and the reason for the trace."""
    if when is None:
        return True, "no condition"
    cond = condition(when)
    if cond(steps, input):
        return True, f"ran: {cond.describe()}"
    return False, f"skipped: not {cond.describe()}"


def output_parser(spec: str | Mapping[str, Any] | Extractor | Any) -> Extractor:
    """A step's `parse:` setting as an extractor ("number", {kind: json, path: answer}, a callable)."""
    return extractor(spec)
