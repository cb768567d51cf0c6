"""Answer extraction: turn a completion's text into the short answer that votes and checks compare.

Every extractor is a callable `str -> str | None`; None means "no answer found", and such an answer
does not vote. Build one with `extractor(kind, **options)`:

    kind       options                      returns
    "answer"   -                            the stated answer (`answer_span`, below), else the whole text
    "text"     -                            the whole text, normalised (case, spaces, final period)
    "number"   -                            the stated answer's number ("Answer: 1,234.50" -> "1234.5")
    "choice"   choices="ABCDE"              the option letter ("Answer: B", "(B)", "B)", "**B**")
    "regex"    pattern=, group=1, last=False  a regex group of the first (or last) match
    "json"     path="a.b.0"                 a field of the first JSON object in the text holding it;
                                            path="" (the default): the whole object, canonical
    "tool_call" -                           nothing from text: only a reply's tool calls vote
    "custom"   fn=callable                  whatever `fn(text)` returns (str() of it; None stays None)

Votes and checks read a whole reply with `reply_answer(extract, content, tool_calls)`: a reply
that calls tools answers with its calls (`tool_calls_key`: each call's name and canonical
arguments, in any order), whatever the extractor; otherwise the extractor reads its text, and
with no extractor given, a JSON answer compares in canonical form and any other by `answer`.

`extractor(spec)` also takes a callable (custom) or a config mapping `{"kind": "regex", "pattern":
...}`.

Models write answers in many ways, and `answer`, `number` and `choice` read them all
(`answer_span` finds the stated answer, first found wins):

    a JSON object's answer field       {"answer": 42, "confidence": 0.9}
    a LaTeX box                        ... so $\boxed{42}$
    an answer marker                   The answer is 42. / Final answer: (B) / **Answer:** 42
    a bold span                        ... which gives **1,440**
    the last line after reasoning      Step 1 ... Step 2 ...\n1,440 minutes
                                       (its closing predicate first: "So the total is 1,440.")

A confidence statement (`Confidence: 0.9`, `(90% confident)`, `confidence: high`) is never
mistaken for the answer or part of it; `42.`, `1,440`, `$1,440.00` and `1440 minutes` all read
as the number 1440 (the `answer` extractor also reads a number with a unit word as the number, so
such samples agree). A reply whose tool call carries an `answer`-like argument (a structured-
output tool) is read from that argument by these three extractors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from orchestray.errors import ConfigError
from orchestray.messages import ToolCall, canonical_json

__all__ = [
    "Extractor",
    "extractor",
    "KINDS",
    "normalize_text",
    "answer_segment",
    "answer_span",
    "answer_spans",
    "strip_confidence",
    "ANSWER_FIELDS",
    "extract_answer",
    "extract_text",
    "extract_number",
    "extract_choice",
    "extract_regex",
    "extract_json_field",
    "canonical_number",
    "tool_calls_key",
    "reply_answer",
]

KINDS = ("answer", "text", "number", "choice", "regex", "json", "tool_call", "custom")

# "Answer: 85", "Final answer = 85", "the answer is 85": the rest of that line.
_ANSWER = re.compile(r"(?im)\b(?:final\s+)?answer\b\s*(?:is\b\s*:?|[:=])[ \t]*([^\n]*)")
# A confidence statement, removed before looking for numbers so 0.87 never wins as "the last
# number": "Confidence: 0.87", '"confidence": 0.87', "confidence level is high", "90% confident",
# "I'm 85% sure".
_CONF_WORDS = r"(?:very\s+high|very\s+low|high|medium|moderate|low|certain)"
_CONFIDENCE = re.compile(
    r"(?i)\bconfiden(?:ce|t)\b(?:\s+(?:level|score))?\"?\s*(?:is\b|[:=\-])?\s*(?:of\s+|about\s+|at\s+)?"
    r"(?:-?\d+(?:\.\d+)?\s*(?:%|/\s*\d+(?:\.\d+)?|out\s+of\s+\d+)?|" + _CONF_WORDS + r"\b)"
    r"|(?:\b(?:i\s*'?\s*a?m|i\s+am)\s+)?-?\d+(?:\.\d+)?\s*(?:%|/\s*\d+|\s+out\s+of\s+\d+)\s*"
    r"(?:confiden(?:ce|t)|sure|certain)\b"
)
# Where a confidence statement starts inside an answer line: cut there ("42 (90% confident)").
_CONFIDENCE_TAIL = re.compile(
    r"(?is)[\s,;.(\[\-]*(?:\bwith\s+)?(?:\b(?:i\s*'?\s*a?m|i\s+am)\s+)?"
    r"(?:\bconfiden(?:ce|t)\b|\d+(?:\.\d+)?\s*%\s*(?:confiden|sure|certain)).*$"
)
# `\boxed{42}` (one level of nested braces, as in `\boxed{\frac{1}{2}}`).
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_BOLD = re.compile(r"\*\*([^*\n]{1,80}?)\*\*|__([^_\n]{1,80}?)__")
# A number alone, perhaps with a currency sign and a unit or two: "$1,440.00", "1440 minutes".
_NUMBER_WITH_UNIT = re.compile(
    r"[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)\s*(?:%|[a-z]+(?:\s+[a-z]+)?|[$€£])?\.?",
    re.IGNORECASE,
)
# A closing sentence's predicate: "... is 42.", "... equals 1,440 bolts", "... = 7".
_CLOSING = re.compile(r"(?i)(?:\bis|\bare|\bequals|\bgives|=)\s+((?:[$€£]?-?\d[\d,]*(?:\.\d+)?|[^\s.]+)(?:\s+[^\s.]+){0,2})\.?\s*$")
# The JSON fields and tool arguments that hold an answer, in the order they are looked for.
ANSWER_FIELDS = ("answer", "final_answer", "result", "choice", "value")
# Thousands separators first, so "1,234" is one number; a "-" right after a word or digit is an
# operator ("10-3"), not a sign.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")


def normalize_text(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or trailing period: "  Paris. " -> "paris"."""
    text = " ".join(text.split()).lower()
    text = text.strip("\"'`*")
    return text.rstrip(".!").strip()


def answer_segment(text: str) -> str | None:
    """The text after the last "Answer:" (or "the answer is") marker, or None without one."""
    segments = [m.group(1).strip() for m in _ANSWER.finditer(text)]
    segments = [s for s in segments if s]
    return segments[-1] if segments else None


def strip_confidence(text: str) -> str:
    """`text` without its confidence statements, so they are never read as the answer."""
    return _CONFIDENCE.sub(" ", text)


def _clean_span(span: str) -> str:
    """An answer span without markdown, LaTeX math marks, quotes or a confidence tail."""
    span = _CONFIDENCE_TAIL.sub("", span)
    span = span.replace("**", "").replace("__", "").strip()
    span = span.strip("$").strip()
    return span


def _json_answer_field(text: str) -> str | None:
    for obj in _json_objects(text):
        for key in ANSWER_FIELDS:
            if key in obj and obj[key] is not None:
                return _json_to_answer(obj[key])
    return None


def _last_line(text: str) -> str | None:
    """The last line that states something besides confidence, when the text has several lines."""
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line and strip_confidence(line).strip(" .,;:()[]")]
    if len(lines) < 2:
        return None
    return lines[-1]


def answer_spans(text: str):
    """Where the stated answer may be, most explicit first: a JSON answer field, the last
    `\\boxed{}`, the last answer marker's line, the last bold span, the last line."""
    field_ = _json_answer_field(text)
    if field_ is not None:
        yield field_
    boxed = _BOXED.findall(text)
    if boxed:
        yield boxed[-1].strip()
    segment = answer_segment(text)
    if segment is not None:
        yield _clean_span(segment)
    bold = [a or b for a, b in _BOLD.findall(text)]
    # A bold label or heading ("**Answer:**", "**Step 1**", "**Note:**") states no answer.
    bold = [b for b in bold if not re.fullmatch(r"(?is)\s*(?:(?:final\s+)?answer|step|part|note|solution)\b.*|.*:\s*", b)]
    if bold:
        yield _clean_span(bold[-1])
    last = _last_line(text)
    if last is not None:
        # "So the total is 1,440 bolts." -> "1,440 bolts": a closing sentence's short predicate.
        closing = _CLOSING.search(_clean_span(last))
        if closing:
            yield closing.group(1).strip()
        yield _clean_span(last)


def answer_span(text: str) -> str | None:
    """The most explicit place that states the answer (`answer_spans`), or None."""
    return next((span for span in answer_spans(text) if span), None)


def extract_answer(text: str) -> str | None:
    """The stated answer (`answer_span`), normalised; the whole text when nothing marks one.

    A span that is a number with at most a unit or two ("1,440 minutes", "$1,440.00") reads as
    the canonical number, so samples that phrase the same number differently agree.
    """
    span = answer_span(text)
    if span is None:
        span = _clean_span(text) if _CONFIDENCE.search(text) else text
    alone = _NUMBER_WITH_UNIT.fullmatch(span.strip())
    if alone:
        number = canonical_number(alone.group(1))
        if number is not None:
            return number
    letter = re.fullmatch(r"\(([A-Za-z])\)\.?", span.strip())
    if letter:
        return letter.group(1).lower()
    return extract_text(span)


def extract_text(text: str) -> str | None:
    """The whole text, normalised; None when nothing is left."""
    normal = normalize_text(text)
    return normal or None


def canonical_number(raw: str) -> str | None:
    """One spelling per value, so votes agree: "1,234.50" -> "1234.5", "85.0" -> "85", "-0" -> "0"."""
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(_CONFIDENCE.sub(" ", text))
    return canonical_number(found[-1]) if found else None


def extract_number(text: str) -> str | None:
    """The last number of the stated answer (`answer_spans`: JSON field, box, "Answer:" line,
    bold, last line), else the last number of the text; confidence statements never count."""
    for span in answer_spans(text):
        number = _last_number(span)
        if number is not None:
            return number
    return _last_number(text)


def extract_choice(text: str, choices: str = "ABCDE") -> str | None:
    """The option letter: from the "Answer:" line, else the last "(B)" / "B)" / "option B", else a
    reply that is only a letter. Lower-case letters count only when they stand alone."""
    letters = "".join(sorted(set(choices.upper())))
    if not letters:
        raise ConfigError("extract choice: `choices` names no letters")
    cls = f"[{re.escape(letters)}]"
    for span in answer_spans(text):
        # "B", "(B)", "B.", "B) 56", "B. Paris", "option B"
        alone = re.fullmatch(rf"\(?({cls})\)?(?:[.:)](?:\s.*)?)?", span.strip(), re.IGNORECASE | re.DOTALL)
        if alone:
            return alone.group(1).upper()
        inside = re.search(rf"(?<![\w])\(?({cls})\b(?![-'])", span)
        if inside:
            return inside.group(1)
    marked = re.findall(
        rf"\(({cls})\)|(?<![\w(])({cls})\)|\b(?:option|choice)\s+({cls})\b", text, re.IGNORECASE
    )
    if marked:
        return next(g for g in marked[-1] if g).upper()
    alone = re.fullmatch(rf"\s*\(?({cls})\)?[.:)]?\s*", text, re.IGNORECASE)
    return alone.group(1).upper() if alone else None


def extract_regex(text: str, pattern: str | re.Pattern[str], group: int | str = 1, last: bool = False) -> str | None:
    """A group of the first (or last) match, stripped; the whole match when the pattern has no group."""
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    matches = list(compiled.finditer(text)) if last else [m for m in [compiled.search(text)] if m]
    if not matches:
        return None
    match = matches[-1]
    if compiled.groups == 0:
        value = match.group(0)
    else:
        value = match.group(group)
    if value is None:
        return None
    return value.strip() or None


def _json_objects(text: str):
    """Every top-level JSON object embedded in `text` (code fences and prose around them are fine)."""
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at != -1:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at = text.find("{", at + 1)
            continue
        if isinstance(value, dict):
            yield value
        at = text.find("{", end)


_MISSING = object()


def _lookup(value: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and re.fullmatch(r"-?\d+", part) and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _json_to_answer(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return canonical_number(repr(value))
    if isinstance(value, str):
        return value.strip() or None
    return canonical_json(value)


def extract_json_field(text: str, path: str) -> str | None:
    """The field at dotted `path` ("result.items.0.name") of the first JSON object holding it.

    Strings come back as they are, numbers canonical, objects and lists as compact sorted JSON;
    a null field, or none at all, gives None. An empty path takes the whole object.
    """
    parts = [p for p in path.split(".") if p] if path else []
    for obj in _json_objects(text):
        value = _lookup(obj, parts)
        if value is not _MISSING:
            return _json_to_answer(value)
    return None


@dataclass(frozen=True)
class Extractor:
    """A named extraction strategy; call it with a completion's text."""

    kind: str
    fn: Callable[[str], str | None] = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        value = self.fn(text)
        if value is None:
            return None
        value = value if isinstance(value, str) else str(value)
        return value if value.strip() else None

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "fn")
        return f"{self.kind}({opts})" if opts else self.kind


_ALLOWED = {
    "answer": set(),
    "text": set(),
    "number": set(),
    "choice": {"choices"},
    "regex": {"pattern", "group", "last"},
    "json": {"path"},
    "tool_call": set(),
    "custom": {"fn"},
}


def extractor(kind: str | Callable[[str], Any] | Mapping[str, Any] | Extractor = "answer", **options: Any) -> Extractor:
    """Build an extractor by kind name, from a callable, or from a config mapping with a `kind` key.

    Raises ConfigError for an unknown kind, an unknown option, a missing option or a bad regex.
    """
    if isinstance(kind, Extractor):
        return kind
    if isinstance(kind, Mapping):
        spec = dict(kind)
        name = spec.pop("kind", None)
        if not isinstance(name, str):
            raise ConfigError(f"extractor config needs a `kind` (one of {', '.join(KINDS)})")
        return extractor(name, **spec, **options)
    if callable(kind):
        return Extractor("custom", kind, {"fn": getattr(kind, "__name__", repr(kind))})
    if kind not in _ALLOWED:
        raise ConfigError(f"unknown extractor kind {kind!r}; use one of {', '.join(KINDS)}")
    unknown = set(options) - _ALLOWED[kind]
    if unknown:
        raise ConfigError(f"extractor {kind!r} takes no option {', '.join(sorted(unknown))}")
    if kind == "answer":
        return Extractor(kind, extract_answer)
    if kind == "text":
        return Extractor(kind, extract_text)
    if kind == "number":
        return Extractor(kind, extract_number)
    if kind == "choice":
        choices = options.get("choices", "ABCDE")
        if not isinstance(choices, str) or not re.fullmatch(r"[A-Za-z]+", choices):
            raise ConfigError(f"extract choice: `choices` must be letters like 'ABCD', got {choices!r}")
        return Extractor(kind, lambda text: extract_choice(text, choices), {"choices": choices})
    if kind == "regex":
        pattern = options.get("pattern")
        if not pattern:
            raise ConfigError("extract regex needs a `pattern`")
        try:
            compiled = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"extract regex: bad pattern {pattern!r}: {err}") from None
        group = options.get("group", 1)
        if compiled.groups and isinstance(group, int) and not 0 <= group <= compiled.groups:
            raise ConfigError(f"extract regex: pattern {pattern!r} has no group {group}")
        if isinstance(group, str) and group not in compiled.groupindex:
            raise ConfigError(f"extract regex: pattern {pattern!r} has no group named {group!r}")
        last = bool(options.get("last", False))
        return Extractor(
            kind, lambda text: extract_regex(text, compiled, group, last), {"pattern": pattern, "group": group}
        )
    if kind == "json":
        path = options.get("path", "")
        if not isinstance(path, str):
            raise ConfigError("extract json: `path` names a field such as 'answer' or 'result.value' ('' for the whole object)")
        return Extractor(kind, lambda text: extract_json_field(text, path), {"path": path} if path else {})
    if kind == "tool_call":
        return Extractor(kind, lambda text: None)
    fn = options.get("fn")
    if not callable(fn):
        raise ConfigError("extract custom needs `fn`, a callable str -> str | None")
    return Extractor(kind, fn, {"fn": getattr(fn, "__name__", repr(fn))})


def tool_calls_key(calls: Iterable[ToolCall]) -> str | None:
    """The answer a reply's tool calls give: each call's name and canonical arguments, sorted so
    that the same parallel calls in another order agree; None without calls."""
    keys = sorted(call.canonical() for call in calls)
    return "; ".join(keys) if keys else None


_DEFAULT = Extractor("answer", extract_answer)
_WHOLE_JSON = Extractor("json", lambda text: extract_json_field(text, ""))


def reply_answer(
    extract: Extractor | None, content: str | None, tool_calls: Iterable[ToolCall] = (), *, wants_json: bool = False
) -> str | None:
    """What one reply answers, for a vote or an agreement check. Tool calls answer for the reply
    (a model that calls a tool has not answered in text); else `extract` reads the text, or with
    none given, the canonical JSON object when the request asked for JSON (`wants_json`), else the
    `answer` extractor."""
    tool_calls = tuple(tool_calls)
    calls = tool_calls_key(tool_calls)
    if calls is not None:
        # A structured-output tool's `answer` argument is the answer these three read.
        if extract is not None and extract.kind in ("answer", "number", "choice") and len(tool_calls) == 1:
            argument = _json_answer_field(tool_calls[0].arguments)
            value = extract(argument) if argument is not None else None
            if value is not None:
                return value
        return calls
    if extract is None:
        extract = _WHOLE_JSON if wants_json else _DEFAULT
    return extract(content)
