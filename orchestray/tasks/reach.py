"""Reach a target: a multi-step puzzle with known truth, for the general tree-of-thought and the simulated model.

"Start at 7. Each step applies one of: add 3, subtract 4, double, add 5. Reach 58 in exactly 6
steps." A solution is the operations in order; `check_answer` applies them. The simulated model
answers the general tree-of-thought's prompts for these puzzles (`reply`): proposals (each a good
move, one that keeps the target reachable, at its accuracy, else one that loses it), verdicts (sure / likely /
impossible, right at its accuracy), the final answer from a path, and a whole chain at once, in
which every move must be good, so a chain solves about accuracy^steps of the puzzles.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import lru_cache

import msgspec

__all__ = ["OPERATIONS", "ReachPuzzle", "reach_puzzles", "parse_puzzle", "check_answer", "reachable", "reply"]

OPERATIONS: dict[str, Callable[[int], int]] = {
    "add 3": lambda v: v + 3,
    "subtract 4": lambda v: v - 4,
    "double": lambda v: v * 2,
    "add 5": lambda v: v + 5,
}
_NAMES = tuple(OPERATIONS)
_PUZZLE = re.compile(
    r"Start at (-?\d+)\. Each step applies one of: ([a-z0-9 ,]+)\. Reach (-?\d+) in exactly (\d+) steps\."
)
# A step as the simulated model writes it ("Double: 7 -> 14"), and a step named anywhere.
_OP_NAME = re.compile(r"(?i)\b(" + "|".join(re.escape(n) for n in _NAMES) + r")\b")


class ReachPuzzle(msgspec.Struct, frozen=True):
    start: int
    target: int
    steps: int

    @property
    def text(self) -> str:
        return (f"Start at {self.start}. Each step applies one of: {', '.join(_NAMES)}. "
                f"Reach {self.target} in exactly {self.steps} steps. Give the operations in order.")


def reach_puzzles(n: int, steps: int = 6, seed: int = 0) -> list[ReachPuzzle]:
    """Puzzles whose target a random sequence of `steps` operations reaches from a small start."""
    rng = random.Random(f"reach:{seed}")
    puzzles = []
    for _ in range(n):
        start = rng.randint(1, 20)
        value = start
        for _ in range(steps):
            value = OPERATIONS[rng.choice(_NAMES)](value)
        puzzles.append(ReachPuzzle(start, value, steps))
    return puzzles


def parse_puzzle(text: str) -> ReachPuzzle | None:
    m = _PUZZLE.search(text)
    if m is None or [s.strip() for s in m.group(2).split(",")] != list(_NAMES):
        return None
    return ReachPuzzle(int(m.group(1)), int(m.group(3)), int(m.group(4)))


@lru_cache(maxsize=200_000)
def reachable(value: int, target: int, left: int) -> bool:
    """Whether `target` is exactly `left` operations away from `value`."""
    if left == 0:
        return value == target
    return any(reachable(op(value), target, left - 1) for op in OPERATIONS.values())


def _apply(puzzle: ReachPuzzle, names: list[str]) -> int:
    value = puzzle.start
    for name in names:
        value = OPERATIONS[name](value)
    return value


def check_answer(puzzle: ReachPuzzle, text: str | None) -> bool:
    """Whether the reply's last "Answer:" line names `steps` operations that reach the target."""
    if not text:
        return False
    lines = [line for line in text.splitlines() if line.strip().lower().startswith("answer")]
    if not lines:
        return False
    names = [n.lower() for n in _OP_NAME.findall(lines[-1])]
    return len(names) == puzzle.steps and _apply(puzzle, names) == puzzle.target


def _move(puzzle: ReachPuzzle, value: int, left: int, rng: random.Random, accuracy: float) -> str:
    """A move: at the model's accuracy one that keeps the target reachable, else a mistake, one
    that loses it (when there is such a move)."""
    good = [n for n in _NAMES if reachable(OPERATIONS[n](value), puzzle.target, left - 1)]
    bad = [n for n in _NAMES if n not in good]
    if good and (rng.random() < accuracy or not bad):
        return rng.choice(good)
    return rng.choice(bad or list(_NAMES))


def _step(name: str, value: int) -> str:
    return f"{name.capitalize()}: {value} -> {OPERATIONS[name](value)}"


def reply(question: str, rng: random.Random, accuracy: float) -> str | None:
    """The simulated model's reply to a question about a reach puzzle; None for any other."""
    puzzle = parse_puzzle(question)
    if puzzle is None:
        return None
    head, _, steps_text = question.partition("Steps so far:")
    if not steps_text:
        head, _, steps_text = question.partition("Steps:")
    # The steps listed end at the first blank line; the instructions after it name no operation.
    done = [n.lower() for n in _OP_NAME.findall(steps_text.strip("\n").split("\n\n", 1)[0])]
    value, left = _apply(puzzle, done), puzzle.steps - len(done)
    lowered = question.lower()
    if "propose" in lowered and steps_text:
        k = int(m.group(1)) if (m := re.search(r"(?i)propose (\d+)", question)) else 3
        if left <= 0:
            return "No steps remain."
        moves = [_move(puzzle, value, left, rng, accuracy) for _ in range(k)]
        return "\n".join(f"{i}. {_step(name, value)}" for i, name in enumerate(moves, 1))
    if "sure, likely or impossible" in lowered:
        truth = reachable(value, puzzle.target, left)
        right = rng.random() < accuracy
        hopeful = truth if right else not truth
        verdict = ("sure" if left == 0 else "likely") if hopeful else "impossible"
        reason = (f"From {value} with {left} steps left, {puzzle.target} "
                  f"{'looks reachable' if hopeful else 'is out of reach'}.")
        return f"{reason}\n{verdict}"
    if "final answer" in lowered and steps_text:
        return (f"Following the steps from {puzzle.start}, the value ends at {value}.\n"
                f"Answer: {', '.join(done)}")
    # A whole chain at once: every move must be good.
    names, lines = [], []
    for i in range(puzzle.steps):
        name = _move(puzzle, value, puzzle.steps - i, rng, accuracy)
        lines.append(f"Step {i + 1}: {_step(name, value)}")
        names.append(name)
        value = OPERATIONS[name](value)
    return "\n".join(lines) + f"\nAnswer: {', '.join(names)}"
