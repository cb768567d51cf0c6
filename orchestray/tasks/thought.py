"""General tree-of-thought: a state is a problem and the thoughts taken so far; models propose, value and answer.

A task is a `ThoughtTask`, the default (`task: general`) or one a user writes in Python:

    ThoughtTask(
        propose="...{problem}...{steps}...{k}...",   # a prompt template, or a callable Thoughts -> str
        evaluate="...",                               # the same; the reply's verdict is its value
        answer="...",                                 # the same, for the final answer; None: no call
        is_solved=lambda state: ...,                  # optional: a state that needs no more thought
        parse_proposals=..., parse_value=...,         # optional parsers of the replies
        key=lambda state: ...,                        # optional: states with one key are one state
        k=3,                                          # thoughts asked for per proposal
    )

Templates are `str.format` templates over `problem`, `steps` (the thoughts so far, numbered, or
"(none yet)"), `k`, `depth` and `last` (the latest thought); a literal brace is doubled.
Values read the way models say them (`parse_thought_value`): sure / likely / impossible (1, 0.5,
0), a "Value: 0.7" or "Score: 7/10", a percentage; the n evaluations of a state are averaged.
Duplicates merge: the same thought twice in one reply (case and spacing aside) is proposed once,
and a state whose key (by default its thoughts, normalised) the search has seen is recorded as a
duplicate, neither valued nor expanded again. `ThoughtTask.for_problem(text)` binds a task to a request's text: a `policies.search.Task` whose
`answer_prompt(state)` the coordinator asks a model after the search, from the best path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from orchestray.errors import ConfigError
from orchestray.policies.confidence import parse_confidence, parse_score
from orchestray.policies.extraction import normalize_text

__all__ = [
    "Thoughts",
    "ThoughtTask",
    "BoundThoughtTask",
    "PROPOSE",
    "EVALUATE",
    "ANSWER",
    "VERDICTS",
    "parse_thought_value",
    "parse_thoughts",
]

PROPOSE = (
    "Problem:\n{problem}\n\nSteps so far:\n{steps}\n\n"
    "Propose {k} different possible next steps toward solving the problem, each building on the steps "
    "so far. Write one per line, numbered 1. to {k}., each a single short step."
)
EVALUATE = (
    "Problem:\n{problem}\n\nSteps so far:\n{steps}\n\n"
    "Evaluate whether these steps can still lead to a correct solution. Reason briefly, then end with "
    "one word on its own line: sure, likely or impossible."
)
ANSWER = (
    "Problem:\n{problem}\n\nSteps:\n{steps}\n\n"
    "Using these steps, write the final answer to the problem. End with a line `Answer: <answer>`."
)

# What a verdict word is worth. "impossible" is checked before "possible", "unlikely" before
# "likely", by word boundaries.
VERDICTS = {"sure": 1.0, "certain": 1.0, "likely": 0.5, "possible": 0.4, "maybe": 0.4, "unlikely": 0.2,
            "impossible": 0.0}
_VERDICT = re.compile(r"(?i)\b(" + "|".join(sorted(VERDICTS, key=len, reverse=True)) + r")\b")
_VALUE = re.compile(r"(?i)\bvalue\b\s*(?:is\b|[:=])?\s*(\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?")
# "1. ...", "2) ...", "- ...", "* ...", "Step 3: ...", "Option 2 - ..."
_ITEM = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|(?:step|option|thought)\s*\d*\s*[:.)\-])\s*(.+?)\s*$", re.IGNORECASE)

Prompt = str | Callable[["Thoughts"], str]


@dataclass(frozen=True, slots=True)
class Thoughts:
    """A search state: the problem and the thoughts taken so far, first to last."""

    problem: str
    steps: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " | ".join(self.steps) if self.steps else "(start)"

    def then(self, thought: str) -> Thoughts:
        return Thoughts(self.problem, (*self.steps, thought))


def parse_thought_value(text: str) -> float:
    """A verdict's value within 0..1: the last verdict word (sure 1, likely 0.5, impossible 0),
    else a "Value: 0.7" / "Score: 7/10" / confidence statement, else 0 (a verdict not given)."""
    words = _VERDICT.findall(text)
    if words:
        return VERDICTS[words[-1].lower()]
    found = _VALUE.findall(text)
    if found:
        number, percent, over = found[-1][0], found[-1][1], found[-1][2]
        value = float(number)
        if percent.startswith("%"):
            value /= 100.0
        elif over:
            value = value / float(over) if float(over) > 0 else 0.0
        elif value > 1.0:
            value = value / 10.0 if value <= 10.0 else value / 100.0
        return min(1.0, max(0.0, value))
    for read in (parse_score, parse_confidence):
        value = read(text)
        if value is not None:
            return value
    return 0.0


def parse_thoughts(text: str, k: int) -> list[str]:
    """Up to `k` distinct thoughts of a proposal reply: its numbered or bulleted lines, or, with
    none, its non-empty lines (markdown bold removed)."""
    lines = [line for line in text.splitlines() if line.strip()]
    items = [m.group(1) for m in map(_ITEM.match, lines) if m]
    chosen = items if items else [line.strip() for line in lines]
    seen: dict[str, str] = {}
    for item in chosen:
        item = item.replace("**", "").strip()
        if item and normalize_text(item) not in seen:
            seen[normalize_text(item)] = item
    return list(seen.values())[:k]


def _render(prompt: Prompt, state: Thoughts, k: int) -> str:
    if callable(prompt):
        return str(prompt(state))
    steps = "\n".join(f"{i}. {s}" for i, s in enumerate(state.steps, 1)) or "(none yet)"
    fields = {"problem": state.problem, "steps": steps, "k": k, "depth": len(state.steps),
              "last": state.steps[-1] if state.steps else ""}
    try:
        return prompt.format_map(fields)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"tree-of-thought prompt template {prompt[:40]!r}...: {err!r}; fields are "
                          f"{', '.join(fields)} (double a literal brace)") from None


@dataclass(frozen=True)
class ThoughtTask:
    """A tree-of-thought task: how to ask for thoughts, values and the answer (module docstring)."""

    propose: Prompt = PROPOSE
    evaluate: Prompt = EVALUATE
    answer: Prompt | None = ANSWER
    is_solved: Callable[[Thoughts], bool] | None = None
    parse_proposals: Callable[[str, Thoughts], list[str]] | None = None
    parse_value: Callable[[str], float] | None = None
    known_value: Callable[[Thoughts], float | None] | None = None
    key: Callable[[Thoughts], Hashable] | None = None
    k: int = 3
    name: str = "general"

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"a thought task proposes k >= 1 thoughts, got {self.k!r}")
        for field_name in ("propose", "evaluate"):
            if not (callable(getattr(self, field_name)) or isinstance(getattr(self, field_name), str)):
                raise ConfigError(f"ThoughtTask.{field_name} is a prompt template or a callable Thoughts -> str")

    def for_problem(self, text: str) -> BoundThoughtTask:
        """This task set up for one problem, the request's text."""
        return BoundThoughtTask(self, text.strip())


class BoundThoughtTask:
    """A `ThoughtTask` for one problem: the `policies.search.Task` the beam search drives."""

    average_values = True  # n evaluations are averaged (a failed one costs no value)

    __slots__ = ("spec", "problem")

    def __init__(self, spec: ThoughtTask, problem: str):
        self.spec = spec
        self.problem = problem

    def root(self) -> Thoughts:
        return Thoughts(self.problem)

    def propose_prompt(self, state: Thoughts) -> str:
        return _render(self.spec.propose, state, self.spec.k)

    def parse_proposals(self, text: str, state: Thoughts) -> list[Thoughts]:
        parse = self.spec.parse_proposals
        thoughts = parse(text, state) if parse is not None else parse_thoughts(text, self.spec.k)
        return [state.then(t) for t in thoughts[: self.spec.k]]

    def value_prompt(self, state: Thoughts) -> str:
        return _render(self.spec.evaluate, state, self.spec.k)

    def parse_value(self, text: str) -> float:
        parse = self.spec.parse_value
        return float(parse(text)) if parse is not None else parse_thought_value(text)

    def known_value(self, state: Thoughts) -> float | None:
        return self.spec.known_value(state) if self.spec.known_value is not None else None

    def is_solution(self, state: Thoughts) -> bool:
        return bool(self.spec.is_solved(state)) if self.spec.is_solved is not None else False

    def state_key(self, state: Thoughts) -> Hashable:
        if self.spec.key is not None:
            return self.spec.key(state)
        # The same thoughts said with other case or spacing are one state: merged, valued once.
        return tuple(normalize_text(s) for s in state.steps)

    def answer_prompt(self, state: Thoughts) -> str | None:
        """The final-answer question from the best path, or None when the task asks no model."""
        return None if self.spec.answer is None else _render(self.spec.answer, state, self.spec.k)

    def answer(self, state: Thoughts) -> str:
        """The answer without a model: the best path's thoughts, the last as the answer."""
        if not state.steps:
            return "No thoughts were proposed."
        return "\n".join(state.steps[:-1] + (f"Answer: {state.steps[-1]}",))
