"""The simulated model's skills: each answers one kind of question or returns None, tried in order (`SKILLS`)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestray.simulated._arithmetic import find_expression
from orchestray.tasks import game24, reach

@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What a skill sees: the question (last user message), whether this draw should be right, and
    its randomness. Skills return the answer body ending in `Answer: <value>`, or None when the
    question is not theirs.

    A wrong draw should draw its mistake from `mistake_rng`: for a shared mistake it is seeded by
    the question alone, so such draws agree with each other across samples and models. A skill
    that grades its own steps (a game's several moves) can use `accuracy` instead of `correct`.
    """

    question: str
    correct: bool
    accuracy: float  # this model's chance of being right on this question (difficulty included)
    rng: random.Random
    mistake_rng: random.Random
    model_name: str
    # When a message asks for a confidence: draws it (once; later calls give the same value), for
    # a skill that states it in its own words. Unused, the model appends `Confidence: <c>`.
    confidence: Callable[[], float] | None = None


Skill = Callable[[Attempt], "str | None"]


# `A) 54`, `B. 56`, `C: 58` at a line start or after whitespace, inline or one per line.
_OPTION = re.compile(r"(?:^|(?<=\s))([A-E])[).:]\s*(-?\d+)\b")


def choice_skill(attempt: Attempt) -> str | None:
    """Multiple choice over an arithmetic stem: the truth is the option equal to its value."""
    text = attempt.question
    options = [(m.group(1), int(m.group(2)), m.start()) for m in _OPTION.finditer(text)]
    letters = [letter for letter, _, _ in options]
    if len(options) < 2 or len(set(letters)) != len(letters):
        return None
    found = find_expression(text[: options[0][2]])
    if found is None:
        return None
    expr, value = found
    right = [letter for letter, option_value, _ in options if option_value == value]
    if not right:
        return None
    wrong = [(letter, v) for letter, v, _ in options if letter != right[0]]
    if attempt.correct or not wrong:
        letter, shown = right[0], value
    else:
        letter, shown = wrong[attempt.mistake_rng.randrange(len(wrong))]
    return f"Working it out, {expr} = {shown}, which is option {letter}.\nAnswer: {letter}"


def arithmetic_skill(attempt: Attempt) -> str | None:
    """Integer arithmetic with + - * and parentheses; a wrong draw is off by a little."""
    found = find_expression(attempt.question)
    if found is None:
        return None
    expr, value = found
    shown = value if attempt.correct else value + _near_miss(attempt.mistake_rng)
    return f"Let me compute it step by step: {expr} = {shown}. The answer is {shown}.\nAnswer: {shown}"


def _near_miss(rng: random.Random) -> int:
    # Spread over ±1..±10 so independent wrong draws rarely agree: plurality voting then pays.
    return rng.choice((-1, 1)) * rng.randint(1, 10)


_GENERIC_SENTENCES = (
    "Here is a considered reply to your message.",
    "The main point is that the answer depends on the details you give.",
    "A careful approach weighs the trade-offs before choosing.",
    "In short, start simple and refine as you learn more.",
    "Several options are reasonable, and the best one depends on your constraints.",
    "It helps to state the goal first, then check each step against it.",
    "Evidence should guide the decision more than habit.",
    "I would begin with the most likely explanation and test it.",
)


def generic_skill(attempt: Attempt) -> str:
    """Anything else: a short deterministic reply of moderate length."""
    topic = " ".join(attempt.question.split())[:60]
    picked = attempt.rng.sample(_GENERIC_SENTENCES, 4)
    return f'Simulated reply from {attempt.model_name}: about "{topic}". ' + " ".join(picked)


# Word problems: (pattern, value from the two numbers, unit). Each has one integer truth.
_WORD_PROBLEMS: tuple[tuple[re.Pattern[str], Callable[[int, int], int], str], ...] = (
    (re.compile(r"A crate holds (\d+) boxes of (\d+) bolts each\. How many bolts"), lambda a, b: a * b, "bolts"),
    (re.compile(r"A train runs at (\d+) km an hour for (\d+) hours\. How far"), lambda a, b: a * b, "km"),
    (re.compile(r"Mia has (\d+) apples and buys (\d+) more\. How many apples"), lambda a, b: a + b, "apples"),
    (re.compile(r"A tank holds (\d+) litres and (\d+) litres leak out\. How many litres"), lambda a, b: a - b,
     "litres"),
)


def _say_confidence(c: float, style: int) -> str:
    if style == 0:
        return f"Confidence: {c:.2f}"
    if style == 1:
        return f"({c:.0%} confident)"
    if style == 2:
        return f"I'm {c:.0%} sure."
    words = "very high" if c >= 0.9 else "high" if c >= 0.75 else "medium" if c >= 0.5 else "low"
    return f"Confidence: {words}"


# How a word problem's answer is written: (value with commas, plain value, unit, reasoning) -> text.
PHRASINGS: tuple[Callable[[str, str, str, str], str], ...] = (
    lambda v, p, u, r: f"{r} The answer is {p}.",
    lambda v, p, u, r: f"{r}\n\n**{v} {u}**",
    lambda v, p, u, r: f"{r} So the total is $\\boxed{{{p}}}$.",
    lambda v, p, u, r: f"{r}\n{v} {u}",
    lambda v, p, u, r: f"Final answer: {v} {u}",
    lambda v, p, u, r: f"**Answer:** {v}",
    lambda v, p, u, r: f"{r}\nAnswer: {p}",
)


def word_problem_skill(attempt: Attempt) -> str | None:
    """The word problems of `word_questions`, answered in a phrasing drawn for this sample (one of
    `PHRASINGS`, or a JSON object), the confidence (when asked) said in one of four styles."""
    for pattern, solve, unit in _WORD_PROBLEMS:
        m = pattern.search(attempt.question)
        if m is None:
            continue
        a, b = int(m.group(1)), int(m.group(2))
        value = solve(a, b)
        shown = value if attempt.correct else value + _near_miss(attempt.mistake_rng)
        reasoning = f"From {a:,} and {b:,} {unit} the count works out to {shown:,} {unit}."
        style = attempt.rng.randrange(len(PHRASINGS) + 1)
        c = attempt.confidence() if attempt.confidence is not None else None
        if style == len(PHRASINGS):
            body: dict[str, Any] = {"reasoning": reasoning, "answer": shown}
            if c is not None:
                body["confidence"] = round(c, 2)
            return json.dumps(body)
        text = PHRASINGS[style](f"{shown:,}", str(shown), unit, reasoning)
        if c is not None:
            text += ("\n" if attempt.rng.random() < 0.5 else " ") + _say_confidence(c, attempt.rng.randrange(4))
        return text
    return None


_CLASSIFY = re.compile(r"(?is)\bclassify\b.*?\b(?:labels|categories|one of)\s*:?\s*([a-z][\w -]*(?:\s*,\s*[a-z][\w -]*)+)")


def classify_skill(attempt: Attempt) -> str | None:
    """"Classify ... one of: invoice, contract, spam" with a text: the truth is the label the text
    names most often (the first label on a tie); a wrong draw names another label."""
    m = _CLASSIFY.search(attempt.question)
    if m is None:
        return None
    labels = [label.strip().rstrip(".") for label in m.group(1).split(",") if label.strip()]
    labels = [label for label in labels if label]
    if len(labels) < 2:
        return None
    text = attempt.question[: m.start()] + attempt.question[m.end():]
    counts = [len(re.findall(rf"(?i)\b{re.escape(label)}\b", text)) for label in labels]
    truth = labels[max(range(len(labels)), key=lambda i: (counts[i], -i))]
    others = [label for label in labels if label != truth]
    label = truth if attempt.correct else others[attempt.mistake_rng.randrange(len(others))]
    return f"The document reads as a {label}.\nAnswer: {label}"


_SUMMARIZE = re.compile(r"(?im)^\s*summari[sz]e\b[^\n]*?(?:at most (\d+) words)?[^\n]*(?:\n|$)")


def summarize_skill(attempt: Attempt) -> str | None:
    """A prompt that starts with "Summarize ...": the text after that line (or after its colon),
    cut to the words asked for ("at most 30 words"; 40 without)."""
    m = _SUMMARIZE.search(attempt.question)
    if m is None:
        return None
    line = m.group(0)
    body = attempt.question[m.end():]
    if ":" in line and line.split(":", 1)[1].strip():
        body = line.split(":", 1)[1] + "\n" + body
    words = body.split()
    if not words:
        return None
    limit = int(m.group(1)) if m.group(1) else 40
    return " ".join(words[: max(5, limit)]) + ("..." if len(words) > limit else "")


def game24_skill(attempt: Attempt) -> str | None:
    """The Game of 24 prompts of `orchestray.tasks.game24`: proposals, verdicts and whole chains.

    A game reply is several moves (eight proposals, three steps of a chain), each right or wrong
    on its own, so the skill grades them with the draw's `accuracy`, not its single `correct`.
    """
    return game24.reply(attempt.question, attempt.rng, attempt.accuracy)


def reach_skill(attempt: Attempt) -> str | None:
    """The reach-a-target puzzles of `orchestray.tasks.reach`: the general tree-of-thought's
    proposals, verdicts and final answer, and whole chains; each move graded by `accuracy`."""
    return reach.reply(attempt.question, attempt.rng, attempt.accuracy)


# Tried in order; the first that returns text answers. The game comes first because its prompts
# hold sample arithmetic; choice comes before arithmetic because a choice question contains an
# arithmetic stem. Insert task skills before `generic_skill`.
SKILLS: list[Skill] = [game24_skill, reach_skill, word_problem_skill, classify_skill, summarize_skill, choice_skill, arithmetic_skill, generic_skill]
