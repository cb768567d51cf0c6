"""Values that fit a JSON Schema, filled from what a question says: the simulated model's tool
arguments and structured answers.

`SchemaFiller(schema, hints).value()` walks the schema (types, enums, const, `$ref`/`$defs`,
anyOf/oneOf/allOf, arrays, nested objects, the usual bounds) and makes an instance that validates
against it. A property gets, in order: what `hints` gives for its name, what the question states
about it ("name: Alice", "the city is Paris", "weather in Paris"), its default, then a plain value
of its type. Pure: no I/O and no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SchemaFiller", "NO_VALUE", "coerce", "property_words", "schema_types"]


class _NoValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()  # a hint or coercion that has nothing fitting

# A hint maps a property (its name, its resolved schema) to a value, or NO_VALUE to pass.
Hint = Callable[[str, Mapping[str, Any]], Any]

_MAX_DEPTH = 8  # recursive schemas ($ref to itself) stop here with their required minimum
_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "duration": "PT1S",
}
_PLACE_NAMES = frozenset({"location", "city", "place", "country", "where", "destination", "region", "town"})
# "weather in Paris", "flights to New York": the capitalised words after a preposition.
_PLACE = re.compile(r"\b(?:in|for|at|to|from|of|near)\s+([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")


def property_words(name: str) -> str:
    """`firstName`, `first_name`, `first-name` -> "first name"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[\s_\-.]+", spaced)).strip().lower()


def schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a (resolved) schema allows, most specific first; [] when it says nothing."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if k != "null"] + (["null"] if "null" in kind else [])
    if "const" in schema:
        return [_type_of(schema["const"])]
    if schema.get("enum"):
        return [_type_of(schema["enum"][0])]
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """`value` as an instance of the (resolved) schema, or NO_VALUE when it cannot be one."""
    if value is NO_VALUE:
        return NO_VALUE
    if "const" in schema:
        return schema["const"] if value == schema["const"] else NO_VALUE
    if schema.get("enum"):
        for member in schema["enum"]:
            if member == value or (isinstance(member, str) and str(value).strip().lower() == member.lower()):
                return member
        return NO_VALUE
    for kind in schema_types(schema) or ["string"]:
        converted = _as_type(value, kind, schema)
        if converted is not NO_VALUE:
            return converted
    return NO_VALUE


def _as_type(value: Any, kind: str, schema: Mapping[str, Any]) -> Any:
    if kind == "string":
        if isinstance(value, (dict, list)):
            return NO_VALUE
        text = value if isinstance(value, str) else ("true" if value is True else "false" if value is False else str(value))
        limit = schema.get("maxLength")
        return text[:limit] if isinstance(limit, int) else text
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            return NO_VALUE
        number: Any = value
        if isinstance(value, str):
            try:
                number = float(value.strip().replace(",", ""))
            except ValueError:
                return NO_VALUE
        if not isinstance(number, (int, float)):
            return NO_VALUE
        if kind == "integer":
            if float(number) != int(number):
                return NO_VALUE
            number = int(number)
        elif isinstance(number, float) and number.is_integer() and isinstance(value, int):
            number = int(number)
        return number if _within(number, schema) else NO_VALUE
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        return True if lowered in ("true", "yes") else False if lowered in ("false", "no") else NO_VALUE
    if kind == "array":
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
        values = [coerce(v, items) for v in value] if isinstance(value, list) else [coerce(value, items)]
        low, high = schema.get("minItems") or 0, schema.get("maxItems")
        if NO_VALUE in values or len(values) < low or (high is not None and len(values) > high):
            return NO_VALUE
        return values
    if kind == "null":
        return None if value is None else NO_VALUE
    return NO_VALUE


def _within(number: float, schema: Mapping[str, Any]) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    return not (
        (low is not None and number < low)
        or (high is not None and number > high)
        or (isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool) and number <= ex_low)
        or (isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool) and number >= ex_high)
    )


class SchemaFiller:
    """Makes instances of one root schema (whose `$defs` its `$ref`s point into)."""

    __slots__ = ("root", "question", "hints")

    def __init__(self, root: Mapping[str, Any] | None, question: str = "", hints: tuple[Hint, ...] = ()):
        self.root = root or {}
        self.question = question
        self.hints = hints

    def value(self) -> Any:
        return self.fill(self.root, "", 0)

    def resolve(self, schema: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any]:
        """The schema with `$ref`, `allOf` and a nullable `anyOf`/`oneOf` folded in."""
        for _ in range(_MAX_DEPTH):
            ref = schema.get("$ref")
            if isinstance(ref, str):
                target = self._lookup(ref)
                schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
                continue
            if "allOf" in schema:
                merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    part = self.resolve(part, depth)
                    for key, value in part.items():
                        if key == "properties":
                            merged["properties"] = {**merged.get("properties", {}), **value}
                        elif key == "required":
                            merged["required"] = list(merged.get("required", [])) + list(value)
                        else:
                            merged.setdefault(key, value)
                schema = merged
                continue
            branches = schema.get("anyOf") or schema.get("oneOf")
            if branches:
                # The first branch that is not just null: an Optional[X] becomes X.
                chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                schema = {**rest, **self.resolve(chosen, depth)}
                continue
            break
        return schema

    def _lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for key in ref[1:].split("/"):
            if not key:
                continue
            key = key.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                return {}
            node = node[key]
        return node if isinstance(node, Mapping) else {}

    def fill(self, schema: Mapping[str, Any], name: str, depth: int) -> Any:
        schema = self.resolve(schema)
        for hint in self.hints:
            value = coerce(hint(name, schema), schema)
            if value is not NO_VALUE:
                return value
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._enum(schema["enum"])
        if name:
            stated = coerce(self.stated(name), schema)
            if stated is not NO_VALUE:
                return stated
        if "default" in schema and coerce(schema["default"], schema) is not NO_VALUE:
            return schema["default"]
        kinds = schema_types(schema)
        kind = kinds[0] if kinds else "string"
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return self._number(schema, kind)
        if kind == "boolean":
            return False
        return None

    def _enum(self, members: list) -> Any:
        """The member the question mentions, else the first."""
        lowered = self.question.lower()
        for member in members:
            if isinstance(member, str) and member and re.search(rf"\b{re.escape(member.lower())}\b", lowered):
                return member
        return members[0]

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            # Deep inside a recursive schema only what is required, so the walk ends.
            if depth >= _MAX_DEPTH and key not in required:
                continue
            out[key] = self.fill(sub, key, depth + 1)
        for key in required - out.keys():  # required but undeclared: any value passes
            out[key] = ""
        return out

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list:
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
        count = max(int(schema.get("minItems") or 0), 0)
        if count == 0 or depth >= _MAX_DEPTH:
            return []
        return [self.fill(items, name, depth + 1) for _ in range(count)]

    def _string(self, schema: Mapping[str, Any]) -> str:
        text = _FORMATS.get(schema.get("format", ""), "")
        low = int(schema.get("minLength") or 0)
        if len(text) < low:
            text += "x" * (low - len(text))
        high = schema.get("maxLength")
        return text[:high] if isinstance(high, int) else text

    @staticmethod
    def _number(schema: Mapping[str, Any], kind: str) -> int | float:
        value: float = 0
        for bound, step in (("minimum", 0), ("exclusiveMinimum", 1)):
            low = schema.get(bound)
            if isinstance(low, (int, float)) and not isinstance(low, bool) and value < low + step:
                value = low + step
        high = schema.get("maximum")
        if isinstance(high, (int, float)) and value > high:
            value = high
        return int(value) if kind == "integer" else value

    def stated(self, name: str) -> Any:
        """What the question says of the property `name`, or NO_VALUE."""
        words = property_words(name)
        if not words or not self.question:
            return NO_VALUE
        said = re.search(
            rf"(?i)\b{re.escape(words)}\b\s*(?:is|was|are|:|=)\s*(\"[^\"]*\"|-?\d+(?:\.\d+)?|[^,;\n.?!\"]+)",
            self.question,
        )
        if said:
            return said.group(1).strip().strip('"').strip()
        if words.split()[-1] in _PLACE_NAMES:
            place = _PLACE.search(self.question)
            if place:
                return place.group(1)
        return NO_VALUE
