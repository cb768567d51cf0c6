"""Routing rules: choose a provider or route for a request by keywords, regex, length, task type or cost.

A router holds rules in priority order and a default; the first rule whose conditions all hold
chooses the target. In the YAML a rule is a flat mapping of conditions plus `to` (and an optional
`name` for the trace):

    auto:
      pattern: route
      default: gpt-mini
      rules:
        - {name: code, task: code, to: claude-sonnet}          # detected task type (or a list)
        - {keywords: [refund, invoice], to: support-bot}       # any keyword, whole words, any case
        - {regex: "(?i)\\bprove\\b", to: think}                # re.search on the prompt
        - {min_tokens: 2000, to: long-context}                 # also max_tokens, min_chars, max_chars
        - {task: arithmetic, max_chars: 300, to: cheap}        # several conditions: all must hold
        - {max_cost: 0.002, to: gpt-large}                     # the target's estimated cost fits

Task types (`detect_task`): "code", "multiple_choice", "arithmetic", "general", tried in that order
by simple heuristics. Tokens are estimated (about four characters a token). A target's estimated
cost is `input_tokens * input_per_1k / 1000 + output_tokens * output_per_1k / 1000`, with the
request's `max_tokens` (else the router's `output_tokens`) as the output; a `max_cost` rule needs
the target's price. `choose(..., budget=x)` further skips every rule whose target is known to cost
more than `x`. The decision (`RouteDecision`) names the target, the rule and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestray.errors import ConfigError
from orchestray.messages import ChatRequest, estimate_tokens

__all__ = [
    "TASKS",
    "RULE_KEYS",
    "detect_task",
    "estimate_cost",
    "Rule",
    "RouteDecision",
    "Router",
    "rules_from_config",
]

TASKS = ("code", "multiple_choice", "arithmetic", "general")
_CONDITIONS = ("keywords", "regex", "min_chars", "max_chars", "min_tokens", "max_tokens", "task", "max_cost")
RULE_KEYS = _CONDITIONS + ("to", "name")

# --- task detection --------------------------------------------------------------------------

_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(
    r"(?m)^\s*(?:def\s+\w+\s*\(|class\s+\w+|import\s+\w+|from\s+[\w.]+\s+import\b|#include\b"
    r"|function\s+\w+\s*\(|(?:const|let|var)\s+\w+\s*=|public\s+(?:static\s+)?\w+|SELECT\s.+\sFROM\s)"
)
_CODE_WORDS = re.compile(
    r"(?i)\b(?:python|javascript|typescript|java|rust|golang|c\+\+|sql|bash|regex|code|coding"
    r"|compile[rd]?|traceback|stack trace|refactor|debug|unit test|source file)\b"
)
_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-E])[).:]\s*\S")
_EXPRESSION = re.compile(r"\d(?:\.\d+)?\s*[-+*/×÷^]\s*\(?\s*-?\d")
_MATH_WORDS = re.compile(
    r"(?i)\b(?:plus|minus|times|divided by|multiplied by|sum of|product of|square root|percent of)\b"
)


def detect_task(text: str) -> str:
    """The kind of request by simple heuristics: "code", "multiple_choice", "arithmetic" or "general"."""
    if _FENCE.search(text) or _CODE_LINE.search(text) or _CODE_WORDS.search(text):
        return "code"
    letters = set(_OPTION.findall(text))
    if {"A", "B"} <= letters:
        return "multiple_choice"
    if _EXPRESSION.search(text) or (_MATH_WORDS.search(text) and re.search(r"\d", text)):
        return "arithmetic"
    return "general"


# --- cost ------------------------------------------------------------------------------------


def _price_part(price: Any, name: str) -> float:
    value = price.get(name, 0.0) if isinstance(price, Mapping) else getattr(price, name, 0.0)
    return float(value or 0.0)


def estimate_cost(price: Any, input_tokens: int, output_tokens: int) -> float:
    """The cost of a call at `price` (a mapping or object with input_per_1k and output_per_1k)."""
    return (
        input_tokens * _price_part(price, "input_per_1k") + output_tokens * _price_part(price, "output_per_1k")
    ) / 1000.0


# --- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    text: str
    chars: int
    tokens: int
    output_tokens: int
    task: str
    costs: Mapping[str, float]


def _whole_word(keyword: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(keyword) + r"(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """Send to `to` when every given condition holds. Fields are the YAML keys (see the module doc)."""

    to: str
    keywords: tuple[str, ...] | None = None
    regex: str | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    task: tuple[str, ...] | None = None
    max_cost: float | None = None
    name: str | None = None
    _compiled: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}" if self.name else "rule"
        if not isinstance(self.to, str) or not self.to:
            raise ConfigError(f"{where}: `to` must name a provider or route")
        if isinstance(self.keywords, str):
            object.__setattr__(self, "keywords", (self.keywords,))
        if isinstance(self.task, str):
            object.__setattr__(self, "task", (self.task,))
        if all(getattr(self, c) is None for c in _CONDITIONS):
            raise ConfigError(f"{where} (to {self.to!r}) has no condition; use the router's default instead")
        compiled: list[Any] = []
        if self.keywords is not None:
            words = tuple(self.keywords)
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise ConfigError(f"{where}: `keywords` must be a non-empty list of words")
            object.__setattr__(self, "keywords", words)
            compiled.append(("keywords", [(_whole_word(w.strip()), w) for w in words]))
        if self.regex is not None:
            try:
                compiled.append(("regex", re.compile(self.regex)))
            except (re.error, TypeError) as err:
                raise ConfigError(f"{where}: bad `regex` {self.regex!r}: {err}") from None
        for key in ("min_chars", "max_chars", "min_tokens", "max_tokens"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"{where}: `{key}` must be a whole number >= 0, got {value!r}")
        if self.task is not None:
            tasks = tuple(self.task)
            unknown = [t for t in tasks if t not in TASKS]
            if not tasks or unknown:
                raise ConfigError(f"{where}: unknown task {unknown or tasks!r}; use {', '.join(TASKS)}")
            object.__setattr__(self, "task", tasks)
        if self.max_cost is not None and (
            not isinstance(self.max_cost, (int, float)) or isinstance(self.max_cost, bool) or self.max_cost < 0
        ):
            raise ConfigError(f"{where}: `max_cost` must be a number >= 0, got {self.max_cost!r}")
        object.__setattr__(self, "_compiled", tuple(compiled))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], index: int | None = None) -> Rule:
        where = f"rules[{index}]" if index is not None else "rule"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: a rule is a mapping like {{keywords: [...], to: target}}, got {spec!r}")
        unknown = sorted(set(spec) - set(RULE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))}; use {', '.join(RULE_KEYS)}")
        if "to" not in spec:
            raise ConfigError(f"{where}: missing `to` (the provider or route to send to)")
        values = dict(spec)
        values.setdefault("name", where)
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err.message}") from None

    def label(self) -> str:
        return self.name or f"to {self.to}"

    def check(self, ctx: _Context) -> str | None:
        """Why this rule matches the request, or None when it does not."""
        why: list[str] = []
        for kind, compiled in self._compiled:
            if kind == "keywords":
                hit = next((w for pattern, w in compiled if pattern.search(ctx.text)), None)
                if hit is None:
                    return None
                why.append(f"keyword {hit!r}")
            else:
                m = compiled.search(ctx.text)
                if m is None:
                    return None
                why.append(f"regex {self.regex!r} matched {m.group(0)[:40]!r}")
        for key, size, unit in (
            ("min_chars", ctx.chars, "chars"), ("max_chars", ctx.chars, "chars"),
            ("min_tokens", ctx.tokens, "tokens"), ("max_tokens", ctx.tokens, "tokens"),
        ):
            bound = getattr(self, key)
            if bound is None:
                continue
            if (size < bound) if key.startswith("min") else (size > bound):
                return None
            why.append(f"{size} {unit} {'>=' if key.startswith('min') else '<='} {bound}")
        if self.task is not None:
            if ctx.task not in self.task:
                return None
            why.append(f"task is {ctx.task}")
        if self.max_cost is not None:
            cost = ctx.costs[self.to]
            if cost > self.max_cost:
                return None
            why.append(f"estimated cost {cost:.6g} <= {self.max_cost:g}")
        return ", ".join(why)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a request goes and why; `rule` is None when the default applied."""

    target: str
    rule: str | None
    reason: str
    task: str = "general"
    tokens: int = 0

    def describe(self) -> str:
        return f"route -> {self.target}: {self.reason}"


class Router:
    """Prioritised rules over a request's text; the first match wins, else `default`."""

    __slots__ = ("rules", "default", "prices", "output_tokens")

    def __init__(
        self,
        rules: Iterable[Rule | Mapping[str, Any]],
        default: str,
        *,
        prices: Mapping[str, Any] | None = None,
        output_tokens: int = 256,
    ):
        if not isinstance(default, str) or not default:
            raise ConfigError("router: `default` must name a provider or route")
        self.rules: tuple[Rule, ...] = tuple(
            r if isinstance(r, Rule) else Rule.from_dict(r, i) for i, r in enumerate(rules)
        )
        self.default = default
        self.prices: dict[str, Any] = dict(prices or {})
        self.output_tokens = output_tokens
        for rule in self.rules:
            if rule.max_cost is not None and rule.to not in self.prices:
                raise ConfigError(
                    f"{rule.label()}: `max_cost` needs the price of {rule.to!r}, and none is known"
                )

    @classmethod
    def from_config(cls, route: Mapping[str, Any] | Any, **kwargs: Any) -> Router:
        """From a route's config: a mapping (or object) with `rules` and `default`."""
        get = route.get if isinstance(route, Mapping) else lambda k, d=None: getattr(route, k, d)
        return cls(get("rules", []) or [], get("default"), **kwargs)

    def targets(self) -> list[str]:
        """Every name this router may send to, for checking them against the configured models."""
        return list(dict.fromkeys([r.to for r in self.rules] + [self.default]))

    def choose(
        self,
        request: str | ChatRequest,
        *,
        max_tokens: int | None = None,
        budget: float | None = None,
        avoid: Collection[str] = (),
    ) -> RouteDecision:
        """The target for `request` (its text, or a ChatRequest: its whole prompt counts).

        A rule whose target is in `avoid` (cooling down: its circuit is open) is passed over
        for the next that matches; the default is the answer when nothing else is left, even
        if it is avoided too.
        """
        if isinstance(request, ChatRequest):
            text = request.prompt_text()
            max_tokens = max_tokens if max_tokens is not None else request.max_tokens
        else:
            text = request
        tokens = estimate_tokens(text)
        output = max_tokens if max_tokens is not None else self.output_tokens
        costs = {name: estimate_cost(price, tokens, output) for name, price in self.prices.items()}
        ctx = _Context(text, len(text), tokens, output, detect_task(text), costs)
        skipped: list[str] = []
        for rule in self.rules:
            why = rule.check(ctx)
            if why is None:
                continue
            if budget is not None and rule.to in costs and costs[rule.to] > budget:
                skipped.append(f"{rule.label()} skipped: {rule.to} costs {costs[rule.to]:.6g} > budget {budget:g}")
                continue
            if rule.to in avoid:
                skipped.append(f"{rule.label()} skipped: {rule.to} is cooling down")
                continue
            reason = "; ".join(skipped + [f"{rule.label()}: {why}"])
            return RouteDecision(rule.to, rule.label(), reason, ctx.task, tokens)
        note = "no rule matched"
        if self.default in avoid:
            note += f" (and {self.default} is cooling down too)"
        if budget is not None and self.default in costs and costs[self.default] > budget:
            note += f" (default {self.default} costs {costs[self.default]:.6g}, over budget {budget:g})"
        return RouteDecision(self.default, None, "; ".join(skipped + [f"default: {note}"]), ctx.task, tokens)


def rules_from_config(specs: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """Validate a config's rule list, naming the rule (`rules[2]: ...`) in any error."""
    return [Rule.from_dict(s, i) for i, s in enumerate(specs)]

