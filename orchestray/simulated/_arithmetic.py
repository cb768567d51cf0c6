"""Integer arithmetic for the simulated model: finding the expression a question asks about, and
evaluating it with a small recursive-descent parser (never `eval`)."""

from __future__ import annotations

import re

_KEYWORD_EXPR = re.compile(r"(?i)\b(?:what\s+is|compute|calculate|evaluate|solve)\s*:?\s*([-+*()\d\s]+)")
_ANY_EXPR = re.compile(r"[-+*()\d\s]+")
_HAS_OPERATOR = re.compile(r"\d\s*[-+*]|[-+*]\s*[\d(]")

_MAX_EXPRESSION = 200  # characters; bounds the work and the size of the integers


def find_expression(text: str) -> tuple[str, int] | None:
    """The arithmetic expression a question asks about, and its value; None if there is none.

    An expression after "what is" / "compute" / ... wins; otherwise the first one in the text.
    Stray numbers ("Question 3:") and ranges in instructions ("(0-1)") come after the question.
    """
    candidates = [m.group(1) for m in _KEYWORD_EXPR.finditer(text)]
    candidates += [m.group(0) for m in _ANY_EXPR.finditer(text)]
    for raw in candidates:
        expr = " ".join(raw.split())
        if not _HAS_OPERATOR.search(expr):
            continue
        try:
            return expr, evaluate(expr)
        except ValueError:
            continue
    return None


_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def evaluate(expression: str) -> int:
    """Evaluate an integer expression with + - * (binary and unary) and parentheses.

    A small recursive-descent parser: never `eval`. Raises ValueError on anything else.
    """
    if len(expression) > _MAX_EXPRESSION:
        raise ValueError("expression too long")
    tokens: list[int | str] = []
    for number, symbol in _TOKEN.findall(expression.replace("×", "*")):
        if number:
            tokens.append(int(number))
        elif symbol in "+-*()":
            tokens.append(symbol)
        elif not symbol.isspace():
            raise ValueError(f"unexpected {symbol!r} in expression")
    parser = _Parser(tokens)
    value = parser.expression()
    if parser.at < len(tokens):
        raise ValueError(f"unexpected {tokens[parser.at]!r} in expression")
    return value


class _Parser:
    """expression := term (("+" | "-") term)*;  term := unary ("*" unary)*;
    unary := ("-" | "+") unary | integer | "(" expression ")"."""

    __slots__ = ("tokens", "at")

    def __init__(self, tokens: list[int | str]):
        self.tokens = tokens
        self.at = 0

    def _peek(self) -> int | str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def expression(self) -> int:
        value = self.term()
        while (op := self._peek()) in ("+", "-"):
            self.at += 1
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> int:
        value = self.unary()
        while self._peek() == "*":
            self.at += 1
            value *= self.unary()
        return value

    def unary(self) -> int:
        token = self._peek()
        self.at += 1
        if token == "-":
            return -self.unary()
        if token == "+":
            return self.unary()
        if token == "(":
            value = self.expression()
            if self._peek() != ")":
                raise ValueError("missing ')'")
            self.at += 1
            return value
        if isinstance(token, int):
            return token
        raise ValueError("expected a number" if token is None else f"unexpected {token!r}")
