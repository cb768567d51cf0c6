"""A simulated LLM with known truth, so orchestration patterns can be judged on correctness and cost.

Pure and deterministic: no sleeping, no I/O. Every draw comes from an RNG derived from the model's
seed and name and the request (prompt, `seed`, `temperature`) plus an optional `sample` index, so
the same request always gets the same answer and latency while `seed=i` gives independent draws.

Whether a draw is right depends on the question's difficulty (shared by every model: hard
questions are hard for all) and on per-draw noise, which dominates so that voting over samples
pays. Answers end with a line `Answer: <value>`, followed by `Confidence: <0..1>` when any message
asks for a confidence; confidence is informative (high when right, low when wrong).

Questions are handled by skills tried in order (`SKILLS`): the Game of 24, the reach-a-target
game of `orchestray.tasks.reach`, word problems, classification into named labels, summaries,
multiple choice, arithmetic, generic. Word
problems (`word_questions`) are answered as real models answer, in one of `PHRASINGS` drawn per
sample (a bold number, a box, JSON, a final line after reasoning, ...), confidence in the same
style, so extraction and voting are tried on free-form text. A task-specific skill is a callable `(Attempt) -> str | None` inserted ahead
of the generic one (ahead of arithmetic, too, when its prompts contain sample arithmetic).

Beyond text the model speaks the rest of the chat surface, so agent loops run end to end:
- offered `tools`, it calls the one that fits the question (by name and description; any tool
  when `tool_choice` is "required", the named one when named, none for "none"), its arguments
  filled from the tool's schema and the question; arithmetic goes to a calculator-like tool
  with the right expression or operands at the model's accuracy;
- after a tool result (a `tool` message after the last user turn) it answers from the result;
- `response_format` json_object gets a JSON object, json_schema an instance of the schema with
  the answer in the field that fits (`answer`, `result`, an enum holding it, ...);
- `n` gives independent choices (`answers`), `logprobs` gives OpenAI-shaped token logprobs,
  and images count in the input tokens as `ChatRequest.prompt_tokens` counts them.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from orchestray._schema_values import NO_VALUE, SchemaFiller, property_words, schema_types
from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Message, ResponseFormat, Tool, ToolCall, estimate_tokens
from orchestray.tasks import game24, reach

__all__ = [
    "SimProfile",
    "SimAnswer",
    "stream_pieces",
    "SimulatedModel",
    "DEFAULT_PROFILES",
    "SUPPORTED_FIELDS",
    "Attempt",
    "Skill",
    "SKILLS",
    "choice_skill",
    "arithmetic_skill",
    "generic_skill",
    "game24_skill",
    "reach_skill",
    "classify_skill",
    "summarize_skill",
    "Question",
    "arithmetic_questions",
    "choice_questions",
    "word_questions",
    "word_problem_skill",
    "PHRASINGS",
    "evaluate",
    "find_expression",
    "difficulty",
]


@dataclass(frozen=True, slots=True)
class SimProfile:
    """How good, how fast and how self-aware a simulated model is.

    `difficulty_weight` (0..1) is the share of the accuracy spread set by the question's
    difficulty; the rest is per-draw noise. `shared_mistake` is the chance that a wrong draw makes
    the question's common mistake (the same wrong answer for every draw and every model) rather
    than a mistake of its own; higher values make voting pay less.

    Confidence is drawn from a Beta distribution with mean `confidence_if_correct` or
    `confidence_if_wrong` and concentration `confidence_concentration` (higher: tighter around
    the mean); equal means make it useless.
    """

    accuracy: float = 0.8
    latency_ms: float = 200.0
    latency_sigma: float = 0.5
    ms_per_output_token: float = 0.0
    difficulty_weight: float = 0.5
    shared_mistake: float = 0.3
    confidence_if_correct: float = 0.9
    confidence_if_wrong: float = 0.4
    confidence_concentration: float = 12.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f"accuracy must be within 0..1, got {self.accuracy}")
        if self.latency_ms < 0 or self.latency_sigma < 0 or self.ms_per_output_token < 0:
            raise ValueError("latency_ms, latency_sigma and ms_per_output_token must be >= 0")
        for name in ("difficulty_weight", "shared_mistake"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        for mean in (self.confidence_if_correct, self.confidence_if_wrong):
            if not 0.0 < mean < 1.0:
                raise ValueError(f"confidence means must be strictly within 0..1, got {mean}")
        if self.confidence_concentration <= 0:
            raise ValueError("confidence_concentration must be > 0")

    def with_latency(
        self, latency_ms: float, latency_sigma: float = 0.0, ms_per_output_token: float = 0.0
    ) -> SimProfile:
        return replace(
            self,
            latency_ms=latency_ms,
            latency_sigma=latency_sigma,
            ms_per_output_token=ms_per_output_token,
        )


DEFAULT_PROFILES: dict[str, SimProfile] = {
    "sim-small": SimProfile(accuracy=0.65, latency_ms=150.0, latency_sigma=0.5),
    "sim-medium": SimProfile(accuracy=0.80, latency_ms=300.0, latency_sigma=0.5),
    "sim-large": SimProfile(accuracy=0.95, latency_ms=600.0, latency_sigma=0.5),
}


# The request options a simulated model honours (`backends.refuse_unsupported` refuses the rest
# by name, and so does the emulator). Sampling options shape its draws as a sampler would
# (`temperature` and `seed` pick the draw); bookkeeping options change nothing of the answer.
SUPPORTED_FIELDS = frozenset(
    {
        "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "presence_penalty",
        "frequency_penalty", "logit_bias", "reasoning_effort", "user", "metadata", "store",
        "extra_body.service_tier", "extra_body.prompt_cache_key", "extra_body.safety_identifier",
    }
)


class SimAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated answer. `latency_s` is how long a real model would have taken; the caller sleeps.

    An answer that calls tools has empty `text`, its `tool_calls` and finish reason "tool_calls".
    """

    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    finish_reason: str = "stop"  # "stop" | "length" | "tool_calls"
    stop_sequence: str | None = None  # the stop sequence that ended the text, if one did
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: dict[str, Any] | None = None  # OpenAI's {"content": [...], "refusal": None}


def stream_pieces(text: str, count: int = 4) -> list[str]:
    """`text` cut into about `count` deltas at token boundaries (every four characters, as
    `estimate_tokens` counts), so each piece's logprobs are whole tokens."""
    tokens = -(-len(text) // 4)
    bounds = [min(len(text), 4 * (tokens * i // count)) for i in range(count + 1)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# --- skills -------------------------------------------------------------------------------------


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
_KEYWORD_EXPR = re.compile(r"(?i)\b(?:what\s+is|compute|calculate|evaluate|solve)\s*:?\s*([-+*()\d\s]+)")
_ANY_EXPR = re.compile(r"[-+*()\d\s]+")
_HAS_OPERATOR = re.compile(r"\d\s*[-+*]|[-+*]\s*[\d(]")


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


# --- the model ----------------------------------------------------------------------------------


class SimulatedModel:
    """A fake LLM: `answer(request)` returns text, token counts and a latency to sleep."""

    __slots__ = ("name", "profile", "seed", "skills", "_key")

    def __init__(
        self,
        name: str,
        profile: SimProfile,
        seed: int = 0,
        skills: Sequence[Skill] | None = None,
    ):
        self.name = name
        self.profile = profile
        self.seed = seed
        # None follows the module's SKILLS, so a skill registered later is seen too.
        self.skills = skills
        self._key = f"{seed}\x00{name}\x00".encode()

    def __repr__(self) -> str:
        return f"SimulatedModel({self.name!r}, {self.profile!r}, seed={self.seed})"

    def answers(self, request: ChatRequest) -> list[SimAnswer]:
        """The request's `n` choices: the first is `answer(request)`, the others further samples."""
        if request.n <= 1:
            return [self.answer(request)]
        return [self.answer(request, sample=None if i == 0 else i) for i in range(request.n)]

    def answer(self, request: ChatRequest, sample: int | None = None) -> SimAnswer:
        prompt = request.prompt_text()
        rng = self._rng(request, prompt, sample)
        profile = self.profile
        # Latency and correctness are drawn first, so they do not shift with what a skill draws.
        latency_noise = rng.gauss(0.0, 1.0)
        question = request.last_user_text()
        p_correct = self.p_correct(question)
        correct = rng.random() < p_correct
        shared = rng.random() < profile.shared_mistake
        stated: list[float] = []  # a confidence the skill drew and stated in its own words

        def state_confidence() -> float:
            if not stated:
                stated.append(self._confidence(rng, correct))
            return stated[0]

        asks_confidence = _asks_confidence(request.messages)
        attempt = Attempt(
            confidence=state_confidence if asks_confidence else None,
            question=question,
            correct=correct,
            accuracy=p_correct,
            rng=rng,
            mistake_rng=_question_rng(question) if shared else rng,
            model_name=self.name,
        )
        tool_calls: tuple[ToolCall, ...] = ()
        # A conversation that ends with the user's turn has no tool results yet (the common case).
        results = _tool_results(request.messages) if request.messages[-1].role != "user" else []
        plan = _tool_to_call(request, question, bool(results)) if request.tools else None
        finish_reason, stop_sequence = "stop", None
        if plan is not None and not plan[1]:
            tool_calls = _calls(plan[0], attempt, parallel=request.parallel_tool_calls is not False)
            text, finish_reason = "", "tool_calls"
            output_tokens = sum(estimate_tokens(c.name + c.arguments) for c in tool_calls)
        else:
            if results:
                text = _answer_from_results(question, results)
            else:
                text = ""
                for skill in SKILLS if self.skills is None else self.skills:
                    reply = skill(attempt)
                    if reply is not None:
                        text = reply
                        break
            fmt = request.response_format
            if plan is not None:  # the answer is the input of a structured-output tool
                fmt = ResponseFormat("json_schema", plan[0].name, plan[0].parameters or {"type": "object"})
            wants_json = fmt is not None and fmt.wants_json
            confidence = None
            if asks_confidence or (wants_json and _schema_has(fmt.schema, "confidence")):
                confidence = stated[0] if stated else self._confidence(rng, correct)
            if wants_json:
                schema = fmt.schema if fmt.type == "json_schema" else _schema_in_prompt(request.messages)
                text = _json_answer(schema, text, confidence, question)
            elif confidence is not None and not stated:
                text = f"{text}\nConfidence: {confidence:.2f}"
            if plan is not None:
                call_id = f"call_{rng.getrandbits(96):024x}"
                tool_calls = (ToolCall(call_id, plan[0].name, text),)
                text, finish_reason = "", "tool_calls"
                output_tokens = estimate_tokens(plan[0].name + tool_calls[0].arguments)
            else:
                text, finish_reason, stop_sequence = _cut(text, request.max_tokens, request.stop)
                output_tokens = estimate_tokens(text)
        latency_ms = profile.latency_ms * math.exp(profile.latency_sigma * latency_noise)
        latency_ms += output_tokens * profile.ms_per_output_token
        logprobs = _token_logprobs(text, rng, correct, request.top_logprobs or 0) if request.logprobs else None
        return SimAnswer(
            text=text,
            input_tokens=request.prompt_tokens(),
            output_tokens=output_tokens,
            latency_s=latency_ms / 1000.0,
            finish_reason=finish_reason,
            stop_sequence=stop_sequence,
            tool_calls=tool_calls,
            logprobs=logprobs,
        )

    def p_correct(self, question: str) -> float:
        """This model's chance of answering `question` right: accuracy shifted by difficulty.

        Uniform difficulty moves it linearly around `accuracy`, so the mean over questions stays
        exactly `accuracy`; the spread is bounded to keep it within 0..1.
        """
        accuracy = self.profile.accuracy
        spread = self.profile.difficulty_weight * min(accuracy, 1.0 - accuracy)
        return accuracy + spread * (1.0 - 2.0 * difficulty(question))

    def _rng(self, request: ChatRequest, prompt: str, sample: int | None) -> random.Random:
        h = hashlib.blake2b(self._key, digest_size=16)
        h.update(prompt.encode("utf-8", "surrogatepass"))
        # None and 0 are both greedy decoding: the same draw.
        temperature = float(request.temperature or 0.0)
        h.update(f"\x00{request.seed}\x00{temperature}\x00{sample}".encode())
        return random.Random(int.from_bytes(h.digest(), "little"))

    def _confidence(self, rng: random.Random, correct: bool) -> float:
        profile = self.profile
        mean = profile.confidence_if_correct if correct else profile.confidence_if_wrong
        k = profile.confidence_concentration
        return rng.betavariate(mean * k, (1.0 - mean) * k)


def difficulty(question: str) -> float:
    """A question's difficulty in [0, 1), the same for every model and every draw."""
    data = question.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8, person=b"difficulty").digest()
    return struct.unpack("<Q", digest)[0] / 2.0**64


def _question_rng(question: str) -> random.Random:
    data = question.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=16, person=b"mistake").digest()
    return random.Random(int.from_bytes(digest, "little"))


def _asks_confidence(messages: Sequence[Message]) -> bool:
    return any("confidence" in m.text().lower() for m in messages)


def _cut(text: str, max_tokens: int | None, stop: Sequence[str] | None) -> tuple[str, str, str | None]:
    """Apply stop sequences, then the token budget, as a provider would."""
    hit: str | None = None
    if stop:
        first = len(text)
        for sequence in stop:
            at = text.find(sequence) if sequence else -1
            if 0 <= at < first:
                first, hit = at, sequence
        text = text[:first]
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        # estimate_tokens counts four characters a token, so this cut is exactly max_tokens.
        return text[: max(0, max_tokens) * 4], "length", None
    return text, "stop", hit


# --- tools, structured answers and logprobs -----------------------------------------------------

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
_ANSWER_NAMES = frozenset(
    {"answer", "result", "value", "solution", "output", "response", "choice", "label", "prediction", "verdict",
     "category", "classification", "reply", "final"}
)
_EXPLANATION_NAMES = frozenset(
    {"reasoning", "explanation", "rationale", "steps", "thoughts", "thinking", "justification", "work",
     "analysis", "working", "thought"}
)


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


_DECODER = json.JSONDecoder()
_MAX_SCHEMA_SCAN = 20_000  # characters of the prompt searched for a stated schema


def _schema_in_prompt(messages: Sequence[Message]) -> dict[str, Any] | None:
    """A JSON Schema the prompt states for a json_object answer (instructor's JSON mode, "reply
    in JSON matching this schema: {...}"), as a real model would read it; None if there is none."""
    for m in messages:
        if m.role not in ("system", "developer", "user"):
            continue
        text = m.text()[:_MAX_SCHEMA_SCAN]
        at = text.find("{")
        while at >= 0:
            try:
                value, end = _DECODER.raw_decode(text, at)
            except ValueError:
                at = text.find("{", at + 1)
                continue
            if isinstance(value, dict) and isinstance(value.get("properties"), dict):
                return value
            at = text.find("{", end)
    return None


def _schema_has(schema: Mapping[str, Any] | None, word: str) -> bool:
    properties = (schema or {}).get("properties") or {}
    return any(word in property_words(name).split() for name in properties)


def _typed(value: str) -> int | float | str:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


def _json_answer(schema: Mapping[str, Any] | None, text: str, confidence: float | None, question: str) -> str:
    """The answer in `text` (its `Answer:` line, or all of it) as JSON: `{"answer": ...}` for
    json_object, an instance of `schema` carrying it for json_schema."""
    head, marker, tail = text.rpartition("\nAnswer:")
    if not marker and text.startswith("Answer:"):
        head, marker, tail = "", "Answer:", text[len("Answer:") :]
    value: Any = _typed(tail.strip()) if marker else text
    explanation = head.strip() if marker else text
    if schema is None:
        out: dict[str, Any] = {"answer": value}
        if marker and explanation:
            out["explanation"] = explanation
        if confidence is not None:
            out["confidence"] = round(confidence, 2)
        return json.dumps(out, separators=(",", ":"))
    filler = SchemaFiller(schema, question)
    root = filler.resolve(schema)
    field = _answer_field(filler, root, value)

    def hint(name: str, sub: Mapping[str, Any]) -> Any:
        words = property_words(name).split()
        if (name == "" and "object" not in schema_types(root)) or (name and name == field):
            return value
        if "confidence" in words and confidence is not None:
            return round(confidence, 2)
        if words and words[-1] in _EXPLANATION_NAMES:
            return explanation
        return NO_VALUE

    filler.hints = (hint,)
    return json.dumps(filler.value(), separators=(",", ":"))


def _answer_field(filler: SchemaFiller, root: Mapping[str, Any], value: Any) -> str | None:
    """The property of an object schema that should hold the answer."""
    properties: Mapping[str, Any] = root.get("properties") or {}
    names = list(properties)
    for name in names:
        words = property_words(name).split()
        if words and (words[-1] in _ANSWER_NAMES or "answer" in words):
            return name
    resolved = {name: filler.resolve(properties[name]) for name in names}
    for name in names:
        enum = resolved[name].get("enum") or ()
        if any(str(member).lower() == str(value).lower() for member in enum):
            return name
    numeric = isinstance(value, (int, float))
    for name in names:
        words = property_words(name).split()
        if words and (words[-1] in _EXPLANATION_NAMES or "confidence" in words):
            continue
        kinds = schema_types(resolved[name])
        if (numeric and {"integer", "number"} & set(kinds)) or (not numeric and "string" in kinds):
            return name
    return None


# What a model might have said instead: the alternatives of a token's top_logprobs.
_ALTERNATIVES = (" the", " a", ",", ".", " and", " of", " to", " is", "\n", " it", " in", " that", ":", " =", " 1", " 2")


def _token_logprobs(text: str, rng: random.Random, correct: bool, top: int) -> dict[str, Any]:
    """OpenAI-shaped logprobs of `text`, one token per four characters (as `estimate_tokens`
    counts them). A right answer is said with more certainty than a wrong one."""
    content = []
    doubt = 0.06 if correct else 0.3
    for start in range(0, len(text), 4):
        token = text[start : start + 4]
        p = 1.0 - rng.random() * doubt
        entry: dict[str, Any] = {"token": token, "logprob": math.log(p), "bytes": list(token.encode()), "top_logprobs": []}
        if top:
            rest = 1.0 - p
            others = []
            for alt in rng.sample(_ALTERNATIVES, min(top, len(_ALTERNATIVES))):
                if alt == token or len(others) == top - 1:
                    continue
                share = rest * rng.random()
                rest -= share
                others.append({"token": alt, "logprob": math.log(max(share, 1e-12)), "bytes": list(alt.encode())})
            others.sort(key=lambda o: -o["logprob"])
            entry["top_logprobs"] = [{"token": token, "logprob": entry["logprob"], "bytes": entry["bytes"]}, *others]
        content.append(entry)
    return {"content": content, "refusal": None}


# --- arithmetic ---------------------------------------------------------------------------------

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


# --- question generators ------------------------------------------------------------------------


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
