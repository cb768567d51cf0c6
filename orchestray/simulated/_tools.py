"""How the simulated model uses tools: which tool a turn calls, the call's arguments from the tool's
schema and the question, and the answer it gives from tool results."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchestray._schema_values import NO_VALUE, SchemaFiller, property_words, schema_types
from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Message, Tool, ToolCall
from orchestray.simulated._arithmetic import _ANY_EXPR, evaluate, find_expression
from orchestray.simulated._skills import _OPTION, Attempt, _near_miss

# A tool whose name or description says it does arithmetic gets the arithmetic questions.
_ARITHMETIC_TOOL = re.compile(
    r"(?i)\b(?:calc\w*|math\w*|arithmetic\w*|evaluat\w*|comput\w*|expressions?|add(?:s|ed|ing|ition)?|sum|"
    r"plus|multipl\w*|subtract\w*|minus|product|equations?|numbers?|operations?|operands?)\b"
)
_STOP_WORDS = frozenset(
    "what which when where that this with from your have about there their would could should "
    "please tell give using tool tools function call answer question value result return"
    " some many much into like then than them they".split()
)
_EXPRESSION_NAMES = frozenset(
    {"expression", "expr", "formula", "equation", "calculation", "math", "problem", "input", "query", "question", "q", "text"}
)
_TEXT_NAMES = frozenset(
    {"query", "question", "q", "text", "prompt", "input", "search", "message", "content", "topic", "keywords",
     "term", "terms", "request", "instruction"}
)
_OPERATION_NAMES = frozenset({"operation", "op", "operator", "action", "method", "kind"})
_OPERATOR_WORDS = {
    "+": ("add", "addition", "plus", "sum", "+"),
    "-": ("subtract", "subtraction", "minus", "difference", "sub", "-"),
    "*": ("multiply", "multiplication", "times", "product", "mul", "*", "x"),
}


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]{4,}", text.lower())} - _STOP_WORDS


def _tool_results(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """(tool name, result text) of the tool messages after the last user turn."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    names: dict[str, str] = {}
    results = []
    for m in messages[last_user + 1 :]:
        if m.role == "assistant":
            for call in m.tool_calls:
                names[call.id] = call.name
        elif m.role == "tool":
            results.append((names.get(m.tool_call_id or "") or m.name or "tool", m.text()))
    return results


def _tool_to_call(request: ChatRequest, question: str, answered: bool) -> tuple[Tool, bool] | None:
    """The tool this turn calls per `tool_choice`, and whether the call carries the answer;
    None to answer in text.

    A tool that fits the question (by name and description, arithmetic to a calculator) is an
    action: "auto" calls it while no tool has answered this turn. A tool whose input is the
    answer itself (`_is_answer_tool`: pydantic-ai's final_result, instructor's and LangChain's
    structured-output tools, a JSON-output tool) is called with the answer when no action is
    due. "required" always calls one, as the APIs force it; a named tool is called either way,
    with the answer when it does not fit the question.
    """
    choice, tools = request.tool_choice, request.tools
    if not tools or choice == "none":
        return None
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        # OpenAI's allowed_tools: the choice among a subset, in mode auto or required.
        allowed = choice.get("allowed_tools") or {}
        names = {(t.get("function") or {}).get("name") for t in allowed.get("tools") or ()}
        tools = tuple(t for t in tools if t.name in names)
        choice = "required" if allowed.get("mode") == "required" else "auto"
        if not tools:
            return None
    arithmetic = find_expression(question) is not None
    asked = _words(question)
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        for tool in tools:
            if tool.name == name:
                return tool, _is_answer_tool(tool) or _fit(tool, asked, arithmetic) == 0
        raise RequestError(f"tool_choice: names {name!r}, which is not one of the tools", param="tool_choice")
    answering = [t for t in tools if _is_answer_tool(t)]
    actions = [t for t in tools if t not in answering]
    best, best_score = (actions[0] if actions else None), 0
    for tool in actions:
        score = _fit(tool, asked, arithmetic)
        if score > best_score:
            best, best_score = tool, score
    if best is not None and best_score > 0 and not answered:
        return best, False
    if answering:
        return answering[0], True
    if choice == "required" and best is not None:
        return best, False
    return None


def _fit(tool: Tool, asked: set[str], arithmetic: bool) -> int:
    """How well a tool fits the question: shared words, and arithmetic to a calculator."""
    about = f"{property_words(tool.name)} {tool.description or ''}"
    return len(asked & _words(about)) + (10 if arithmetic and _ARITHMETIC_TOOL.search(about) else 0)


_ANSWER_TOOL_NAME = frozenset(
    {"answer", "final", "result", "response", "output", "extract", "extraction", "structured", "respond", "reply",
     "format", "json"}
)
_ANSWER_TOOL_ABOUT = frozenset({"final", "answer", "extracted", "extract", "structured"})


def _is_answer_tool(tool: Tool) -> bool:
    """Whether a tool's input is the answer itself rather than an action: its name or
    description says so ("final_result", "Correctly extracted `Person`...", "Give your final
    answer as this tool's input"), or its schema has an answer field. Never a calculator.

    What the description and the schema say outweighs the name: a structured-output tool takes
    the schema's name, and `Sum`, `Product` or `Total` sound like calculators while their input
    is the answer."""
    description = tool.description or ""
    if _ARITHMETIC_TOOL.search(description):
        return False
    properties = (tool.parameters or {}).get("properties") or {}
    if any("answer" in property_words(name).split() for name in properties):
        return True
    if set(re.findall(r"[a-z]+", description.lower())) & _ANSWER_TOOL_ABOUT:
        return True
    if _ARITHMETIC_TOOL.search(tool.name):
        return False
    return bool(set(property_words(tool.name).split()) & _ANSWER_TOOL_NAME)


_MAX_PARALLEL_CALLS = 4
_BINARY = re.compile(r"\d\s*[-+*]\s*[\d(]")


def _calls(tool: Tool, attempt: Attempt, parallel: bool) -> tuple[ToolCall, ...]:
    """One call, or with parallel calls allowed one per expression of a question that asks
    several ("What is 2 + 3 and 4 * 5?"), each right or wrong on its own."""
    expressions = _binary_expressions(attempt.question) if parallel and tool.parameters else []
    if len(expressions) < 2:
        found = find_expression(attempt.question)
        return (_call(tool, attempt, found[0] if found else None, attempt.correct),)
    rng = attempt.rng
    return tuple(
        _call(tool, attempt, expr, attempt.correct if i == 0 else rng.random() < attempt.accuracy)
        for i, expr in enumerate(expressions[:_MAX_PARALLEL_CALLS])
    )


def _binary_expressions(text: str) -> list[str]:
    found: list[str] = []
    for m in _ANY_EXPR.finditer(text):
        expr = " ".join(m.group(0).split())
        if _BINARY.search(expr) and expr not in found:
            try:
                evaluate(expr)
            except ValueError:
                continue
            found.append(expr)
    return found


def _call(tool: Tool, attempt: Attempt, expr: str | None, correct: bool) -> ToolCall:
    """A call of `tool` with arguments from its schema and the question; an arithmetic
    expression (or its operands) is right when the draw is, and a near miss otherwise."""
    if expr is not None and not correct:
        expr = _miss_a_number(expr, attempt.mistake_rng)
    schema = tool.parameters or {"type": "object", "properties": {}}
    arguments = SchemaFiller(schema, attempt.question, (_argument_hint(expr, attempt.question),)).value()
    if not isinstance(arguments, dict):
        arguments = {}
    call_id = f"call_{attempt.rng.getrandbits(96):024x}"
    return ToolCall(call_id, tool.name, json.dumps(arguments, separators=(",", ":")))


def _miss_a_number(expr: str, rng: random.Random) -> str:
    numbers = list(re.finditer(r"\d+", expr))
    target = numbers[rng.randrange(len(numbers))]
    value = int(target.group())
    missed = value + _near_miss(rng)
    missed = missed if missed >= 0 else value + abs(missed - value)
    return expr[: target.start()] + str(missed) + expr[target.end() :]


def _argument_hint(expr: str | None, question: str):
    """Tool arguments: the expression, its operands in order and its operator for arithmetic;
    the question itself for a query-like text argument."""
    numbers = [int(n) for n in re.findall(r"\d+", expr)] if expr else []
    operator = next((c for c in re.sub(r"^\s*[-+]", "", expr or "") if c in "+-*"), None)
    taken = [0]

    def hint(name: str, schema: Mapping[str, Any]) -> Any:
        words = property_words(name).split()
        last = words[-1] if words else ""
        kinds = schema_types(schema)
        kind = kinds[0] if kinds else "string"
        enum = schema.get("enum")
        if expr is not None:
            if last in _OPERATION_NAMES and operator is not None:
                for word in _OPERATOR_WORDS[operator]:
                    for member in enum or (word,):
                        if isinstance(member, str) and member.lower() == word:
                            return member
            if kind == "string" and not enum and last in _EXPRESSION_NAMES:
                return expr
            if kind in ("integer", "number") and not enum and taken[0] < len(numbers):
                taken[0] += 1
                return numbers[taken[0] - 1]
            if kind == "array" and numbers:
                return numbers
        if kind == "string" and not enum and last in _TEXT_NAMES:
            return question
        return NO_VALUE

    return hint


def _result_value(content: str, arithmetic: bool) -> str:
    """The value a tool result gives: a scalar, the `result`-like field of an object, or its text."""
    try:
        data = json.loads(content)
    except ValueError:
        data = NO_VALUE
    if isinstance(data, dict):
        named = [data[k] for k in ("result", "value", "answer", "output", "content", "text") if k in data]
        scalars = [v for v in data.values() if not isinstance(v, (dict, list))]
        data = named[0] if named else scalars[0] if len(scalars) == 1 else data
    if isinstance(data, float) and data.is_integer():
        data = int(data)
    if data is NO_VALUE:
        numbers = re.findall(r"-?\d+(?:\.\d+)?", content)
        if arithmetic and numbers:
            return numbers[-1]
        return " ".join(content.split())[:200]
    if isinstance(data, (dict, list)):
        return json.dumps(data, separators=(",", ":"))
    return str(data).lower() if isinstance(data, bool) else str(data)


def _answer_from_results(question: str, results: list[tuple[str, str]]) -> str:
    said = " ".join(f"The {name} tool returned {' '.join(text.split())[:200]}." for name, text in results)
    arithmetic = find_expression(question) is not None
    results = [r for r in results if r[1].strip()] or results  # an empty result says nothing
    if len(results) > 1:  # parallel calls, one per part of the question: every part's value
        return f"{said}\nAnswer: {', '.join(_result_value(text, arithmetic) for _, text in results)}"
    value = _result_value(results[-1][1], arithmetic)
    # A choice question: the option whose value the tool computed.
    for m in _OPTION.finditer(question):
        if m.group(2) == value:
            return f"{said} That is option {m.group(1)}.\nAnswer: {m.group(1)}"
    return f"{said}\nAnswer: {value}"
