"""Question sets with known truth for the simulated model: arithmetic, word problems, multiple choice."""

from __future__ import annotations

import random

import msgspec

from orchestray.messages import ChatRequest, Message
from orchestray.simulated._arithmetic import evaluate
from orchestray.simulated._skills import _WORD_PROBLEMS

class Question(msgspec.Struct, frozen=True):
    """A question with its canonical answer: the integer as text, or the option letter."""

    prompt: str
    truth: str

    def request(self, **fields) -> ChatRequest:
        """A one-message ChatRequest asking this question; `fields` set model, seed, ..."""
        return ChatRequest(messages=(Message("user", self.prompt),), **fields)


def _expression(rng: random.Random) -> str:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 20)
    shape = rng.randrange(6)
    if shape == 0:
        return f"{a} + {b}"
    if shape == 1:
        return f"{a} - {b}"
    if shape == 2:
        return f"{rng.randint(2, 30)} * {c}"
    if shape == 3:
        return f"({rng.randint(2, 30)} * {c}) - {b}"
    if shape == 4:
        return f"{a} + {b} * {c}"
    return f"({a} - {b}) * {c}"


def _stem(expr: str, rng: random.Random) -> str:
    return f"What is {expr}?" if rng.random() < 0.5 else f"Compute {expr}."


def arithmetic_questions(n: int, seed: int = 0) -> list[Question]:
    rng = random.Random(f"arithmetic:{seed}")
    questions = []
    for _ in range(n):
        expr = _expression(rng)
        questions.append(Question(_stem(expr, rng), str(evaluate(expr))))
    return questions


_WORD_STEMS = (
    "A crate holds {a} boxes of {b} bolts each. How many bolts are in the crate?",
    "A train runs at {a} km an hour for {b} hours. How far does it go?",
    "Mia has {a} apples and buys {b} more. How many apples does she have now?",
    "A tank holds {a} litres and {b} litres leak out. How many litres are left?",
)


def word_questions(n: int, seed: int = 0, ask_confidence: bool = True) -> list[Question]:
    """Word problems with integer truth, which `word_problem_skill` answers in mixed phrasings."""
    rng = random.Random(f"word:{seed}")
    questions = []
    for _ in range(n):
        kind = rng.randrange(len(_WORD_STEMS))
        a, b = rng.randint(12, 999), rng.randint(2, 60)
        if kind == 3:
            a, b = max(a, b + 1), min(a, b)
        prompt = _WORD_STEMS[kind].format(a=a, b=b)
        if ask_confidence:
            prompt += " State your confidence."
        pattern, solve, _ = _WORD_PROBLEMS[kind]
        questions.append(Question(prompt, str(solve(a, b))))
    return questions


def choice_questions(n: int, seed: int = 0, options: int = 4) -> list[Question]:
    if not 2 <= options <= 5:
        raise ValueError("options must be between 2 and 5 (letters A-E)")
    rng = random.Random(f"choice:{seed}")
    questions = []
    for _ in range(n):
        expr = _expression(rng)
        value = evaluate(expr)
        values = {value}
        while len(values) < options:
            values.add(value + rng.choice((-1, 1)) * rng.randint(1, 12))
        shuffled = sorted(values)
        rng.shuffle(shuffled)
        letters = "ABCDE"[:options]
        lines = "\n".join(f"{letter}) {v}" for letter, v in zip(letters, shuffled))
        prompt = f"{_stem(expr, rng)}\n{lines}\nReply with the letter of the correct option."
        questions.append(Question(prompt, letters[shuffled.index(value)]))
    return questions
