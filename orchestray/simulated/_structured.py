"""The simulated model's structured answers: its text answer as a JSON object, or as an instance of a
JSON Schema (given in `response_format` or stated in the prompt) with the answer in the field that fits."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchestray._schema_values import NO_VALUE, SchemaFiller, property_words, schema_types
from orchestray.messages import Message

_ANSWER_NAMES = frozenset(
    {"answer", "result", "value", "solution", "output", "response", "choice", "label", "prediction", "verdict",
     "category", "classification", "reply", "final"}
)
_EXPLANATION_NAMES = frozenset(
    {"reasoning", "explanation", "rationale", "steps", "thoughts", "thinking", "justification", "work",
     "analysis", "working", "thought"}
)

_DECODER = json.JSONDecoder()
_MAX_SCHEMA_SCAN = 20_000  # characters of the prompt searched for a stated schema


def _schema_in_prompt(messages: Sequence[Message]) -> dict[str, Any] | None:
    """A JSON Schema the prompt states for a json_object answer (instructor's JSON mode, "reply
    in JSON matching this schema: {...}"), as a real model would read it; None if there is none."""
    for m in messages:
        if m.role not in ("system", "developer", "user"):
            continue
        text = m.text()[:_MAX_SCHEMA_SCAN]
        at = text.find("{")
        while at >= 0:
            try:
                value, end = _DECODER.raw_decode(text, at)
            except ValueError:
                at = text.find("{", at + 1)
                continue
            if isinstance(value, dict) and isinstance(value.get("properties"), dict):
                return value
            at = text.find("{", end)
    return None


def _schema_has(schema: Mapping[str, Any] | None, word: str) -> bool:
    properties = (schema or {}).get("properties") or {}
    return any(word in property_words(name).split() for name in properties)


def _typed(value: str) -> int | float | str:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


def _json_answer(schema: Mapping[str, Any] | None, text: str, confidence: float | None, question: str) -> str:
    """The answer in `text` (its `Answer:` line, or all of it) as JSON: `{"answer": ...}` for
    json_object, an instance of `schema` carrying it for json_schema."""
    head, marker, tail = text.rpartition("\nAnswer:")
    if not marker and text.startswith("Answer:"):
        head, marker, tail = "", "Answer:", text[len("Answer:") :]
    value: Any = _typed(tail.strip()) if marker else text
    explanation = head.strip() if marker else text
    if schema is None:
        out: dict[str, Any] = {"answer": value}
        if marker and explanation:
            out["explanation"] = explanation
        if confidence is not None:
            out["confidence"] = round(confidence, 2)
        return json.dumps(out, separators=(",", ":"))
    filler = SchemaFiller(schema, question)
    root = filler.resolve(schema)
    field = _answer_field(filler, root, value)

    def hint(name: str, sub: Mapping[str, Any]) -> Any:
        words = property_words(name).split()
        if (name == "" and "object" not in schema_types(root)) or (name and name == field):
            return value
        if "confidence" in words and confidence is not None:
            return round(confidence, 2)
        if words and words[-1] in _EXPLANATION_NAMES:
            return explanation
        return NO_VALUE

    filler.hints = (hint,)
    return json.dumps(filler.value(), separators=(",", ":"))


def _answer_field(filler: SchemaFiller, root: Mapping[str, Any], value: Any) -> str | None:
    """The property of an object schema that should hold the answer."""
    properties: Mapping[str, Any] = root.get("properties") or {}
    names = list(properties)
    for name in names:
        words = property_words(name).split()
        if words and (words[-1] in _ANSWER_NAMES or "answer" in words):
            return name
    resolved = {name: filler.resolve(properties[name]) for name in names}
    for name in names:
        enum = resolved[name].get("enum") or ()
        if any(str(member).lower() == str(value).lower() for member in enum):
            return name
    numeric = isinstance(value, (int, float))
    for name in names:
        words = property_words(name).split()
        if words and (words[-1] in _EXPLANATION_NAMES or "confidence" in words):
            continue
        kinds = schema_types(resolved[name])
        if (numeric and {"integer", "number"} & set(kinds)) or (not numeric and "string" in kinds):
            return name
    return None
