"""The Game of 24 for tree-of-thought search: prompts, step parser, value parser, exact solver,
the puzzle set, and the simulated model's skill at the game.

The game: combine four numbers with + - * / (each used exactly once) to make 24. Following the
Tree of Thoughts paper's method (Yao et al. 2023): a state is the numbers still left plus the
steps taken; the model proposes next steps ("4 + 8 = 12 (left: 10 12 13)"), each checked here
(arithmetic right, operands available, "left" list right; anything else is dropped), and judges
whether the numbers left can still reach 24 (sure = 20, likely = 1, impossible = 0.001, summed
over the evaluations). A state is solved when one number is left and the expression built from
its steps uses each puzzle number once and equals 24, checked exactly with fractions. The test
set is ranks 901-1000 of the 4nums.com puzzles (`load_puzzles()`).

Contract for the simulated model (`orchestray/simulated/`). The three prompts this module
sends open with a fixed first line, and their last `Numbers:` line holds the numbers in play
(integers or fractions like 13/4); `parse_game24_prompt(text)` reads both. They never contain
the word "confidence", and they contain sample arithmetic, so the game's skill must be tried
before the arithmetic and choice skills. `reply(text, rng, accuracy)` answers any of them, or
returns None for any other prompt:

    "Game of 24: propose next steps."  -> `propose_steps(numbers, rng, accuracy, k)`: k lines,
        one step each as "a op b = result (left: ...)"; each line is valid with probability
        `accuracy`, else wrong arithmetic or a wrong "left" list
    "Game of 24: judge the numbers."   -> reasoning, then a last line with one word of
        `judge_state(numbers, rng, accuracy)`: the exact solver's truth ("sure" when 24 can be
        reached, "impossible" otherwise), replaced by one of the two other words with
        probability 1 - accuracy
    "Game of 24: solve."               -> `attempt_solution(numbers, rng, accuracy)`: one chain
        of three random valid-looking steps (each step's arithmetic slips with probability
        1 - accuracy) and "Answer: <expression> = 24"; it solves with probability about
        accuracy**3 * P(a random path reaches 24)

The search asks `evaluations` value calls of the same prompt per state; the caller makes them
independent draws by giving each call its `sample` as the request's seed.
"""

from __future__ import annotations

import ast
import csv
import io
import random
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from importlib import resources

from orchestray.errors import RequestError
from orchestray.policies.extraction import answer_segment
from orchestray.policies.search import BeamSearch

__all__ = [
    "TARGET",
    "VALUES",
    "Game24State",
    "Game24Task",
    "Puzzle",
    "load_puzzles",
    "puzzle_from_text",
    "game24_search",
    "solve",
    "can_reach_24",
    "check_answer",
    "evaluate_expression",
    "format_number",
    "parse_number",
    "propose_prompt",
    "value_prompt",
    "solve_prompt",
    "parse_step",
    "parse_value",
    "parse_solution",
    "Game24Prompt",
    "parse_game24_prompt",
    "is_game24_prompt",
    "valid_steps",
    "propose_steps",
    "judge_state",
    "attempt_solution",
    "reply",
]

TARGET = Fraction(24)
VALUES = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}

PROPOSE_HEADER = "Game of 24: propose next steps."
VALUE_HEADER = "Game of 24: judge the numbers."
SOLVE_HEADER = "Game of 24: solve."

# --- numbers -------------------------------------------------------------------------------


def format_number(x: Fraction | int) -> str:
    """12, -5 or 13/4: exact, and one token without spaces."""
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


_NUM = r"[-−]?\d+(?:\.\d+)?(?:/\d+)?"
_NUM_NO_FRACTION = r"[-−]?\d+(?:\.\d+)?"


@dataclass(frozen=True, slots=True)
class _Stated:
    """A number as the model wrote it: decimals are allowed to be rounded to two places."""

    value: Fraction
    rounded: bool

    def matches(self, exact: Fraction) -> bool:
        if self.value == exact:
            return True
        return self.rounded and abs(self.value - exact) < Fraction(1, 100)


def _stated(token: str) -> _Stated | None:
    token = token.strip().replace("−", "-")
    if not re.fullmatch(_NUM, token):
        return None
    if "/" in token:
        top, bottom = token.split("/")
        if "." in top or int(bottom) == 0:
            return None
        return _Stated(Fraction(int(top), int(bottom)), False)
    return _Stated(Fraction(token), "." in token)


def parse_number(token: str) -> Fraction | None:
    """"12", "-5", "2.5" or "13/4" as an exact Fraction; None for anything else."""
    stated = _stated(token)
    return stated.value if stated else None


# --- exact arithmetic -------------------------------------------------------------------------


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def evaluate_expression(expression: str) -> tuple[Fraction, list[Fraction]] | None:
    """The exact value of an expression of numbers, + - * / and parentheses, and the numbers it
    uses; None when it is anything else or divides by zero. Parsed with `ast`, never evaluated."""
    text = expression.replace("×", "*").replace("÷", "/").replace("−", "-").strip()
    if not text or len(text) > 200:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    used: list[Fraction] = []

    def walk(node: ast.AST) -> Fraction | None:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            value = Fraction(str(node.value))
            used.append(value)
            return value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None:
                return None
            return _apply(left, _OPS[type(node.op)], right)
        return None

    value = walk(tree.body)
    return None if value is None else (value, used)


def check_answer(expression: str | None, numbers: Iterable[Fraction | int]) -> bool:
    """True when `expression` uses each of `numbers` exactly once and equals 24 exactly."""
    if not expression:
        return False
    found = evaluate_expression(expression)
    if found is None:
        return False
    value, used = found
    return value == TARGET and Counter(used) == Counter(Fraction(n) for n in numbers)


def _key(numbers: Iterable[Fraction | int]) -> tuple[Fraction, ...]:
    return tuple(sorted(Fraction(n) for n in numbers))


def _pairs(numbers: Sequence[Fraction]) -> Iterable[tuple[Fraction, Fraction, list[Fraction]]]:
    for i in range(len(numbers)):
        for j in range(i + 1, len(numbers)):
            rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
            yield numbers[i], numbers[j], rest


def _results(a: Fraction, b: Fraction) -> set[Fraction]:
    out = {a + b, a - b, b - a, a * b}
    if b != 0:
        out.add(a / b)
    if a != 0:
        out.add(b / a)
    return out


@lru_cache(maxsize=1 << 16)
def _reaches(key: tuple[Fraction, ...]) -> bool:
    if len(key) == 1:
        return key[0] == TARGET
    return any(_reaches(_key(rest + [r])) for a, b, rest in _pairs(key) for r in _results(a, b))


def can_reach_24(numbers: Iterable[Fraction | int]) -> bool:
    """Whether the numbers (one to four of them, or more) can make exactly 24."""
    key = _key(numbers)
    return bool(key) and _reaches(key)


def solve(numbers: Iterable[Fraction | int]) -> str | None:
    """An expression making 24 from the numbers, each once, or None when there is none."""
    items = [(Fraction(n), format_number(n)) for n in numbers]
    if not items or not _reaches(_key(x for x, _ in items)):
        return None

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == TARGET else None
        for i in range(len(items)):
            for j in range(len(items)):
                if i == j:
                    continue
                (a, ea), (b, eb) = items[i], items[j]
                rest = [x for k, x in enumerate(items) if k not in (i, j)]
                for op in "+-*/":
                    if op in "+*" and i > j:
                        continue  # commutative: one order is enough
                    r = _apply(a, op, b)
                    if r is None or not _reaches(_key([x for x, _ in rest] + [r])):
                        continue
                    found = search(rest + [(r, f"({ea} {op} {eb})")])
                    if found is not None:
                        return found
        return None

    found = search(items)
    return _strip_parens(found) if found is not None else None


def _strip_parens(expression: str) -> str:
    if expression.startswith("(") and expression.endswith(")"):
        depth = 0
        for i, ch in enumerate(expression):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(expression) - 1:
                return expression
        return expression[1:-1]
    return expression


# --- puzzles -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Puzzle:
    rank: int
    numbers: tuple[int, ...]

    @property
    def text(self) -> str:
        return " ".join(map(str, self.numbers))


def load_puzzles(ranks: Iterable[int] | None = range(901, 1001)) -> list[Puzzle]:
    """Puzzles of the 4nums.com set by rank (1-1362, easiest first); the test set by default,
    every puzzle with `ranks=None`. Shipped as package data `orchestray/data/game24.csv`."""
    text = resources.files("orchestray").joinpath("data/game24.csv").read_text(encoding="utf-8")
    wanted = None if ranks is None else set(ranks)
    puzzles = []
    for row in csv.DictReader(io.StringIO(text)):
        rank = int(row["Rank"])
        if wanted is None or rank in wanted:
            puzzles.append(Puzzle(rank, tuple(int(x) for x in row["Puzzles"].split())))
    return sorted(puzzles, key=lambda p: p.rank)


def puzzle_from_text(text: str) -> tuple[int, ...] | None:
    """The four numbers of a puzzle as a user might ask it: a `Numbers:` line, a line of only
    numbers, or the first four whole numbers of the text ("24" right after "game of" excluded)."""
    found = re.findall(r"(?m)^\s*Numbers:[ \t]*([\d \t]+)$", text)
    if not found:
        found = re.findall(r"(?m)^[ \t]*(\d+(?:[ \t,]+\d+){3})[ \t]*$", text)
    if found:
        numbers = [int(n) for n in re.findall(r"\d+", found[-1])]
    else:
        cleaned = re.sub(r"(?i)\bgame\s+of\s+24\b", " ", text)
        numbers = [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.])", cleaned)][:4]
    return tuple(numbers) if len(numbers) == 4 else None


# --- states and steps ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Game24State:
    """The numbers left (with the expression each came from) and the steps taken so far."""

    start: tuple[Fraction, ...]
    numbers: tuple[Fraction, ...]
    expressions: tuple[str, ...]
    steps: tuple[str, ...] = ()

    @classmethod
    def initial(cls, numbers: Iterable[Fraction | int]) -> Game24State:
        start = tuple(Fraction(n) for n in numbers)
        return cls(start, start, tuple(format_number(n) for n in start))

    @property
    def left(self) -> str:
        return " ".join(format_number(n) for n in self.numbers)

    @property
    def expression(self) -> str | None:
        """The whole expression once one number is left."""
        return _strip_parens(self.expressions[0]) if len(self.numbers) == 1 else None

    def __str__(self) -> str:
        taken = "; ".join(self.steps) if self.steps else "start"
        return f"{taken} | left: {self.left}"


_STEP_SPACED = re.compile(
    rf"(?P<a>{_NUM})\s+(?P<op>[-+*/×÷x−])\s+(?P<b>{_NUM})\s*=\s*(?P<c>{_NUM})\s*"
    r"\(\s*left\s*:\s*(?P<left>[^)]*)\)",
    re.IGNORECASE,
)
_STEP_TIGHT = re.compile(
    rf"(?P<a>{_NUM_NO_FRACTION})\s*(?P<op>[-+*/×÷x−])\s*(?P<b>{_NUM_NO_FRACTION})\s*=\s*(?P<c>{_NUM})\s*"
    r"\(\s*left\s*:\s*(?P<left>[^)]*)\)",
    re.IGNORECASE,
)
_OP_NAMES = {"+": "+", "-": "-", "−": "-", "*": "*", "x": "*", "X": "*", "×": "*", "/": "/", "÷": "/"}


def _take(pool: list[tuple[Fraction, str]], stated: _Stated) -> tuple[Fraction, str] | None:
    for i, (value, expr) in enumerate(pool):
        if stated.matches(value):
            return pool.pop(i)
    return None


def parse_step(line: str, state: Game24State) -> Game24State | None:
    """The state after one proposed step, or None when the step is wrong in any way: bad
    arithmetic, an operand not among the numbers left, or a "left" list that is not the unused
    numbers plus the result."""
    line = re.sub(r"^\s*(?:[-*•]\s+|\d+[.)]\s+)", "", line)
    m = _STEP_SPACED.search(line) or _STEP_TIGHT.search(line)
    if m is None:
        return None
    a, b, c = _stated(m["a"]), _stated(m["b"]), _stated(m["c"])
    op = _OP_NAMES.get(m["op"])
    if a is None or b is None or c is None or op is None:
        return None
    pool = list(zip(state.numbers, state.expressions))
    first = _take(pool, a)
    second = _take(pool, b) if first is not None else None
    if first is None or second is None:
        return None
    result = _apply(first[0], op, second[0])
    if result is None or not c.matches(result):
        return None
    pool.append((result, f"({first[1]} {op} {second[1]})"))
    stated_left = [_stated(t) for t in m["left"].replace(",", " ").split()]
    if len(stated_left) != len(pool) or any(s is None for s in stated_left):
        return None
    ordered = []
    for s in stated_left:
        taken = _take(pool, s)  # type: ignore[arg-type]
        if taken is None:
            return None
        ordered.append(taken)
    step = f"{format_number(first[0])} {op} {format_number(second[0])} = {format_number(result)} (left: {' '.join(format_number(v) for v, _ in ordered)})"
    return Game24State(
        state.start,
        tuple(v for v, _ in ordered),
        tuple(e for _, e in ordered),
        state.steps + (step,),
    )


def parse_value(text: str) -> float:
    """The last verdict word in a judge's reply: sure 20, likely 1, impossible 0.001; else 0."""
    found = re.findall(r"\b(sure|likely|impossible)\b", text, re.IGNORECASE)
    return VALUES[found[-1].lower()] if found else 0.0


def parse_solution(text: str) -> str | None:
    """The expression on a reply's "Answer:" line, without its "= 24"."""
    segment = answer_segment(text)
    if segment is None:
        return None
    expression = segment.split("=")[0].strip().rstrip(".")
    return expression or None


# --- prompts -----------------------------------------------------------------------------------


def _numbers_text(numbers: Iterable[Fraction | int]) -> str:
    return " ".join(format_number(n) for n in numbers)


def propose_prompt(numbers: Iterable[Fraction | int]) -> str:
    return (
        f"{PROPOSE_HEADER}\n"
        "Pick two of the numbers and combine them with +, -, * or /. List possible next steps, one "
        "per line, each written as `a op b = result (left: numbers remaining)`, where the numbers "
        "remaining are the ones not used plus the result.\n"
        "Example.\n"
        "Numbers: 3 5 7 9\n"
        "5 + 7 = 12 (left: 3 9 12)\n"
        "9 - 3 = 6 (left: 5 6 7)\n"
        "3 * 5 = 15 (left: 7 9 15)\n"
        "9 / 3 = 3 (left: 3 5 7)\n"
        "Now you.\n"
        f"Numbers: {_numbers_text(numbers)}\n"
    )


def value_prompt(numbers: Iterable[Fraction | int]) -> str:
    return (
        f"{VALUE_HEADER}\n"
        "Can these numbers make exactly 24, using each one once with +, -, * and /? Try a few "
        "combinations, then give your verdict as the last line, one word: sure, likely or "
        "impossible.\n"
        "Example.\n"
        "Numbers: 10 14\n"
        "10 + 14 = 24\n"
        "sure\n"
        "Example.\n"
        "Numbers: 1 2 3\n"
        "1 + 2 + 3 = 6 and (1 + 2) * 3 = 9: all three are too small to get to 24\n"
        "impossible\n"
        "Now you.\n"
        f"Numbers: {_numbers_text(numbers)}\n"
    )


def solve_prompt(numbers: Iterable[Fraction | int]) -> str:
    return (
        f"{SOLVE_HEADER}\n"
        "Use each of the numbers exactly once, with +, -, * and / and parentheses, to make 24. "
        "Work one step at a time, each written as `a op b = result (left: numbers remaining)`, "
        "then give the whole expression on a last line `Answer: <expression> = 24`.\n"
        "Example.\n"
        "Numbers: 4 4 6 8\n"
        "4 + 8 = 12 (left: 4 6 12)\n"
        "6 - 4 = 2 (left: 2 12)\n"
        "2 * 12 = 24 (left: 24)\n"
        "Answer: (6 - 4) * (4 + 8) = 24\n"
        "Now you.\n"
        f"Numbers: {_numbers_text(numbers)}\n"
    )


@dataclass(frozen=True, slots=True)
class Game24Prompt:
    kind: str  # "propose" | "value" | "solve"
    numbers: tuple[Fraction, ...]


_HEADERS = {PROPOSE_HEADER: "propose", VALUE_HEADER: "value", SOLVE_HEADER: "solve"}


def parse_game24_prompt(text: str) -> Game24Prompt | None:
    """Which Game of 24 prompt this is and the numbers in play; None for any other text."""
    stripped = text.lstrip()
    kind = next((k for header, k in _HEADERS.items() if stripped.startswith(header)), None)
    if kind is None:
        return None
    lines = re.findall(r"(?m)^Numbers:[ \t]*(.*)$", text)
    if not lines:
        return None
    numbers = [parse_number(t) for t in lines[-1].split()]
    if not numbers or any(n is None for n in numbers):
        return None
    return Game24Prompt(kind, tuple(numbers))  # type: ignore[arg-type]


def is_game24_prompt(text: str) -> bool:
    return parse_game24_prompt(text) is not None


# --- the task for the search -------------------------------------------------------------------


class Game24Task:
    """The Game of 24 as a `policies.search.Task`."""

    __slots__ = ("numbers",)

    def __init__(self, numbers: Iterable[Fraction | int]):
        self.numbers = tuple(Fraction(n) for n in numbers)

    @classmethod
    def from_text(cls, text: str) -> Game24Task:
        """The task for a request's text ("4 9 10 13", "Use 4 9 10 13 to make 24", ...)."""
        numbers = puzzle_from_text(text)
        if numbers is None:
            raise RequestError(f"no Game of 24 puzzle (four whole numbers) found in {text[:80]!r}")
        return cls(numbers)

    def root(self) -> Game24State:
        return Game24State.initial(self.numbers)

    def answer(self, state: Game24State) -> str:
        """The reply for a final state: its steps, then "Answer: <expression> = 24" when solved."""
        lines = list(state.steps)
        if self.is_solution(state):
            lines.append(f"Answer: {state.expression} = 24")
        else:
            lines.append(f"No solution found; got as far as: {state.left}")
        return "\n".join(lines)

    def propose_prompt(self, state: Game24State) -> str:
        return propose_prompt(state.numbers)

    def parse_proposals(self, text: str, state: Game24State) -> list[Game24State]:
        children = []
        for line in text.splitlines():
            child = parse_step(line, state)
            if child is not None:
                children.append(child)
        return children

    def value_prompt(self, state: Game24State) -> str:
        return value_prompt(state.numbers)

    def parse_value(self, text: str) -> float:
        return parse_value(text)

    def known_value(self, state: Game24State) -> float | None:
        # One number that is not 24 is a dead end: no need to ask a model.
        if len(state.numbers) == 1 and state.numbers[0] != TARGET:
            return 0.0
        return None

    def is_solution(self, state: Game24State) -> bool:
        return len(state.numbers) == 1 and check_answer(state.expression, state.start)

    def state_key(self, state: Game24State) -> Hashable:
        # The same numbers left are the same position, whichever steps led there.
        return _key(state.numbers)


def game24_search(
    numbers: Iterable[Fraction | int], *, breadth: int = 5, depth: int = 3, evaluations: int = 3, **options
) -> BeamSearch:
    """A beam search over one puzzle, with the paper's settings by default (b=5, 3 steps, 3 values)."""
    task = Game24Task(numbers)
    return BeamSearch(task, task.root(), breadth=breadth, depth=depth, evaluations=evaluations, **options)


# --- the simulated model's skill -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    a: Fraction
    op: str
    b: Fraction
    result: Fraction
    left: tuple[Fraction, ...]

    def line(self, result: Fraction | None = None, left: Sequence[Fraction] | None = None) -> str:
        shown = self.result if result is None else result
        rest = self.left if left is None else left
        return f"{format_number(self.a)} {self.op} {format_number(self.b)} = {format_number(shown)} (left: {_numbers_text(rest)})"


def valid_steps(numbers: Sequence[Fraction | int]) -> list[_Step]:
    """Every distinct correct next step (subtraction never below zero, no division by zero)."""
    nums = [Fraction(n) for n in numbers]
    steps: dict[str, _Step] = {}
    for a, b, rest in _pairs(nums):
        hi, lo = max(a, b), min(a, b)
        candidates = [(hi, "+", lo), (hi, "*", lo), (hi, "-", lo)]
        if lo != 0:
            candidates.append((hi, "/", lo))
        if hi != 0 and hi != lo:
            candidates.append((lo, "/", hi))
        for x, op, y in candidates:
            r = _apply(x, op, y)
            assert r is not None
            step = _Step(x, op, y, r, tuple(sorted(rest + [r])))
            steps.setdefault(step.line(), step)
    return list(steps.values())


def _corrupt(step: _Step, rng: random.Random) -> str:
    """A wrong version of a step: bad arithmetic, or a "left" list that does not follow."""
    if rng.random() < 0.5:
        wrong = step.result + rng.choice((-3, -2, -1, 1, 2, 3))
        left = list(step.left)
        left.remove(step.result)  # the chain carries its wrong result on, consistently
        return step.line(result=wrong, left=sorted(left + [wrong]))
    left = list(step.left)
    if len(left) > 1 and rng.random() < 0.5:
        left.pop(rng.randrange(len(left)))  # forgets a number
    else:
        i = rng.randrange(len(left))
        left[i] = left[i] + rng.choice((-2, -1, 1, 2))  # miscopies one
    return step.line(left=sorted(left))


def propose_steps(numbers: Sequence[Fraction | int], rng: random.Random, accuracy: float, k: int = 8) -> list[str]:
    """Up to k proposal lines, each a distinct valid step with probability `accuracy`, else a wrong one."""
    steps = valid_steps(numbers)
    rng.shuffle(steps)
    lines = []
    for step in steps[:k]:
        lines.append(step.line() if rng.random() < accuracy else _corrupt(step, rng))
    return lines


def judge_state(numbers: Sequence[Fraction | int], rng: random.Random, accuracy: float) -> str:
    """"sure" when 24 can be reached, "impossible" when not; either other word with probability 1 - accuracy."""
    truth = "sure" if can_reach_24(numbers) else "impossible"
    if rng.random() < accuracy:
        return truth
    return rng.choice([w for w in ("sure", "likely", "impossible") if w != truth])


def attempt_solution(numbers: Sequence[Fraction | int], rng: random.Random, accuracy: float) -> str:
    """One chain of thought: random valid-looking steps to a single number, then "Answer: ... = 24".

    Each step's arithmetic slips with probability 1 - accuracy; the chain carries the wrong number
    on (into the expression too), so a slip always ends in a wrong answer.
    """
    pool = [(Fraction(n), format_number(n)) for n in numbers]
    lines = []
    while len(pool) > 1:
        step = rng.choice(valid_steps([v for v, _ in pool]))
        first = next(p for p in pool if p[0] == step.a)
        pool.remove(first)
        second = next(p for p in pool if p[0] == step.b)
        pool.remove(second)
        if rng.random() < accuracy:
            result, expr = step.result, f"({first[1]} {step.op} {second[1]})"
        else:
            result = step.result + rng.choice((-2, -1, 1, 2))
            expr = format_number(result)
        pool.append((result, expr))
        lines.append(step.line(result=result, left=sorted(v for v, _ in pool)))
    lines.append(f"Answer: {_strip_parens(pool[0][1])} = 24")
    return "\n".join(lines)


def reply(text: str, rng: random.Random, accuracy: float, k: int = 8) -> str | None:
    """The simulated model's whole reply to a Game of 24 prompt; None when `text` is not one."""
    prompt = parse_game24_prompt(text)
    if prompt is None:
        return None
    if prompt.kind == "propose":
        return "\n".join(propose_steps(prompt.numbers, rng, accuracy, k))
    if prompt.kind == "value":
        verdict = judge_state(prompt.numbers, rng, accuracy)
        return f"Trying combinations of {_numbers_text(prompt.numbers)}.\n{verdict}"
    return attempt_solution(prompt.numbers, rng, accuracy)
