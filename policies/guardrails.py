"""Guardrails as pure checks: what a request may carry out of the cluster, and what an answer may bring back.

    InputRules.apply(request) ──▶ (request with PII redacted, {"email": 2, ...})
                              └─▶ raises nothing; returns a Violation instead of a request
    OutputRules.check(completion, request) ──▶ None | Violation

A `Violation` names its rule the way the config spells it (`input.max_prompt_tokens`,
`input.deny.jailbreak`, `output.json_schema`), so the 400, the batch error record and the
exception all say which rule was broken. Redaction counts what it replaced by kind and never keeps
the text it replaced. No Ray, no SDK, no I/O: the guarded model in `orchestray.guardrails` runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from orchestray.messages import ChatRequest, Completion, Message, TextPart

__all__ = ["Violation", "Redactor", "DenyList", "InputRules", "OutputRules", "REDACTION_KINDS"]


@dataclass(frozen=True)
class Violation:
    rule: str  # e.g. "input.deny.jailbreak"
    message: str  # what was wrong, never the matched secret


# What each kind of redaction finds. Emails: RFC-ish local@domain.tld. Phone numbers: an optional
# +country code, then 9 to 15 digits in groups split by spaces, dots, dashes or parentheses (so
# plain arithmetic like "17 * 3" or a year is left alone). API keys: the prefixes providers use
# (sk-, sk-ant-, AKIA, ghp_, xox?-, AIza) or a bearer token.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"),
    "api_key": re.compile(
        r"\b(?:sk-(?:ant-)?[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}"
        r"|xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{30,})\b|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*"
    ),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]\d{2,4}){1,4}(?![\w])"),
}
# Keys first: a key may contain what looks like a phone number; emails before phones likewise.
REDACTION_KINDS = ("api_key", "email", "phone")


def _is_phone(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 9 <= digits <= 15


class Redactor:
    """Replaces each configured kind with `[REDACTED:kind]` and counts the replacements."""

    __slots__ = ("kinds",)

    def __init__(self, kinds: Iterable[str]):
        kinds = set(kinds)
        unknown = kinds - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kind(s) {', '.join(sorted(unknown))}; use {', '.join(REDACTION_KINDS)}")
        self.kinds = tuple(k for k in REDACTION_KINDS if k in kinds)

    def redact(self, text: str, counts: dict[str, int]) -> str:
        for kind in self.kinds:
            pattern = _PATTERNS[kind]

            def replace(m: re.Match[str], kind: str = kind) -> str:
                if kind == "phone" and not _is_phone(m.group(0)):
                    return m.group(0)
                counts[kind] = counts.get(kind, 0) + 1
                return f"[REDACTED:{kind}]"

            text = pattern.sub(replace, text)
        return text


class DenyList:
    """Named regular expressions; the first that matches names the violated rule."""

    __slots__ = ("where", "patterns")

    def __init__(self, where: str, patterns: Mapping[str, str]):
        self.where = where
        self.patterns = {name: re.compile(p) for name, p in patterns.items()}

    def check(self, text: str) -> Violation | None:
        for name, pattern in self.patterns.items():
            if pattern.search(text):
                return Violation(f"{self.where}.deny.{name}", f"the {self.where.replace('input', 'request').replace('output', 'answer')} matches the deny pattern {name!r}")
        return None


def _redact_message(message: Message, redactor: Redactor, counts: dict[str, int]) -> Message:
    content = message.content
    if isinstance(content, str):
        new: str | tuple | None = redactor.redact(content, counts)
    elif content:
        new = tuple(TextPart(redactor.redact(p.text, counts)) if isinstance(p, TextPart) else p for p in content)
    else:
        new = content
    calls = tuple(msgspec.structs.replace(c, arguments=redactor.redact(c.arguments, counts)) for c in message.tool_calls)
    if new == content and calls == message.tool_calls:
        return message
    return msgspec.structs.replace(message, content=new, tool_calls=calls)


@dataclass
class InputRules:
    """What a request must satisfy before it leaves: a token cap, deny patterns, redaction."""

    max_prompt_tokens: int | None = None
    deny: DenyList | None = None
    redactor: Redactor | None = None

    def apply(self, request: ChatRequest) -> tuple[ChatRequest, dict[str, int]] | Violation:
        """The request to send (redacted) and what was redacted by kind, or the rule it breaks.
        Deny patterns see the request as the caller wrote it; the cap counts what is sent."""
        if self.deny is not None:
            violation = self.deny.check(request.prompt_text())
            if violation is not None:
                return violation
        counts: dict[str, int] = {}
        if self.redactor is not None:
            messages = tuple(_redact_message(m, self.redactor, counts) for m in request.messages)
            if counts:
                request = request.with_changes(messages=messages)
        if self.max_prompt_tokens is not None:
            tokens = request.prompt_tokens()
            if tokens > self.max_prompt_tokens:
                return Violation(
                    "input.max_prompt_tokens",
                    f"the prompt is about {tokens} tokens, over this model's cap of {self.max_prompt_tokens}",
                )
        return request, counts


def _schema_errors(value: object, schema: Mapping) -> str | None:
    import jsonschema  # imported on first use: most configs never validate output

    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


@dataclass
class OutputRules:
    """What an answer must satisfy: no deny pattern, and JSON that fits the requested schema."""

    deny: DenyList | None = None
    validate_json: bool = False

    def active_for(self, request: ChatRequest) -> bool:
        return self.deny is not None or (self.validate_json and request.response_format is not None and request.response_format.wants_json)

    def check(self, completion: Completion, request: ChatRequest) -> Violation | None:
        for i, choice in enumerate(completion.choices()):
            if self.deny is not None:
                violation = self.deny.check(choice.content or "")
                if violation is not None:
                    return violation
            fmt = request.response_format
            if self.validate_json and fmt is not None and fmt.wants_json and not choice.tool_calls:
                violation = self._check_json(choice.content or "", fmt, i)
                if violation is not None:
                    return violation
        return None

    def _check_json(self, text: str, fmt, index: int) -> Violation | None:
        which = f"choice {index}: " if index else ""
        try:
            value = json.loads(text)
        except ValueError as err:
            return Violation("output.json_schema", f"{which}the answer is not valid JSON ({err.msg} at char {err.pos})")
        schema = fmt.schema if fmt.type == "json_schema" else None
        if schema is None:
            if not isinstance(value, dict):
                return Violation("output.json_schema", f"{which}the answer is JSON but not an object")
            return None
        problem = _schema_errors(value, schema)
        if problem is not None:
            return Violation("output.json_schema", f"{which}the answer does not match the schema {fmt.name or ''!s}".rstrip() + f" {problem}")
        return None
