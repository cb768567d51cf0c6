"""Self-reported confidence and judge scores read from text, and the cascade's acceptance tests.

`parse_confidence` reads "Confidence: 0.87", "confidence 87%", "Confidence: 8/10", "I am 90% sure",
a JSON answer's `"confidence": 0.87` field, or a word ("Confidence: high", "confidence level:
very low"; `CONFIDENCE_WORDS` gives the values); the last statement wins, clamped to [0, 1], None
when there is none. A bare number above 1 is a percentage ("Confidence: 87" is 0.87).
`logprob_confidence` reads a provider's token logprobs (`Completion.logprobs`) instead: the
geometric mean probability of the answer's tokens (all tokens without an answer to look for).

An acceptance test looks at what a cascade stage produced (`StageAnswer`) and returns a `Decision`
(accept or escalate, with a reason for the trace). Tests compose like tenacity's strategies:

    escalate_if_below(0.8)                      self-reported confidence >= 0.8 (else, the reply's
                                                token logprobs when it has them)
    escalate_if_agreement_below(0.6, k=5)       the most common of k sampled answers has >= 60%
    escalate_if_judge_below(0.7)                a judge's "Score: 7/10" or better
    accept_if(lambda stage: "sorry" not in stage.text, name="no apology")
    escalate_if_below(0.8) & escalate_if_judge_below(0.7)    both must accept
    escalate_if_below(0.9) | escalate_if_agreement_below(0.8, k=3)   either may accept

A test says what the stage must supply: `samples` (k replies for the agreement test) and
`needs_judge` (call a judge with `judge_score_prompt` and put its reply in `judge_reply`).

Tool calls and JSON answers: the agreement test compares what each sample answers by
`reply_answer` (tool calls by name and canonical arguments, JSON in canonical form or by the
extractor's field); a tool call states no confidence, so over tools use agreement or a judge.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestray.errors import ConfigError
from orchestray.messages import ToolCall
from orchestray.policies.extraction import Extractor, extractor, reply_answer
from orchestray.policies.voting import majority_vote

__all__ = [
    "parse_confidence",
    "logprob_confidence",
    "CONFIDENCE_WORDS",
    "parse_score",
    "judge_score_prompt",
    "StageAnswer",
    "Decision",
    "AcceptanceTest",
    "escalate_if_below",
    "escalate_if_agreement_below",
    "escalate_if_judge_below",
    "accept_if",
    "acceptance_from_config",
]

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCALE = r"(?:\s*(%)|\s*/\s*(\d+(?:\.\d+)?)|\s+out\s+of\s+(\d+(?:\.\d+)?))?"
# "Confidence: 0.87", "confidence level is 87%", "Confidence - 8/10", "confident: 9 out of 10"
_AFTER_WORD = re.compile(
    r"(?i)\bconfiden(?:ce|t)\b(?:\s+(?:level|score))?\"?\s*(?:is\b|[:=\-])?\s*(?:of\s+|about\s+|at\s+)?"
    + _NUM + _SCALE
)
# "90% confident", "8/10 confidence", "I'm 90% sure"
_BEFORE_WORD = re.compile(
    r"(?i)" + _NUM + r"(?:\s*(%)|\s*/\s*(\d+(?:\.\d+)?)|\s+out\s+of\s+(\d+(?:\.\d+)?))\s+"
    r"(?:confiden(?:ce|t)|sure|certain)\b"
)
# What a model means by a confidence word, as a probability.
CONFIDENCE_WORDS = {
    "very high": 0.95, "certain": 0.95, "high": 0.85, "medium": 0.6, "moderate": 0.6,
    "low": 0.3, "very low": 0.1,
}
_WORD = re.compile(
    r"(?i)\bconfiden(?:ce|t)\b(?:\s+(?:level|score))?\"?\s*(?:is\b|[:=\-])?\s*\"?"
    r"(very\s+high|very\s+low|high|medium|moderate|low|certain)\b"
)
_SCORE = re.compile(
    r"(?i)\b(?:score|rating|grade)\b\s*(?:is\b|[:=\-])?\s*(?:of\s+)?" + _NUM + _SCALE
)


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _scaled(number: str, percent: str | None, over: str | None, out_of: str | None, bare_scale) -> float | None:
    value = float(number)
    denominator = over or out_of or None  # findall gives '' for a group that did not match
    if percent:
        return _clamp(value / 100.0)
    if denominator is not None:
        d = float(denominator)
        return _clamp(value / d) if d > 0 else None
    return _clamp(bare_scale(value))


def _percent_if_above_one(value: float) -> float:
    return value if value <= 1.0 else value / 100.0


def parse_confidence(text: str | None) -> float | None:
    """The last confidence the text states, within [0, 1]; None when it states none."""
    if not text:
        return None
    found = [(m.start(), m.groups()) for m in _AFTER_WORD.finditer(text)]
    found += [(m.start(), m.groups()) for m in _BEFORE_WORD.finditer(text)]
    found += [(m.start(), (m.group(1),)) for m in _WORD.finditer(text)]
    if not found:
        return None
    _, groups = max(found, key=lambda f: f[0])
    if len(groups) == 1:
        return CONFIDENCE_WORDS[" ".join(groups[0].lower().split())]
    return _scaled(*groups, bare_scale=_percent_if_above_one)


def logprob_confidence(logprobs: dict | None, answer: str | None = None) -> float | None:
    """The geometric mean probability of the tokens that spell `answer` (its last occurrence in
    the text the tokens make), or of every token without an answer or when it is not found;
    None without token logprobs. `logprobs` is OpenAI's shape, `{"content": [{"token",
    "logprob"}, ...]}`, as `Completion.logprobs` holds it."""
    tokens = (logprobs or {}).get("content") or []
    if not tokens:
        return None
    chosen = tokens
    if answer:
        text = "".join(t.get("token", "") for t in tokens)
        at = text.lower().rfind(answer.lower())
        if at != -1:
            end, position, chosen = at + len(answer), 0, []
            for t in tokens:
                start, position = position, position + len(t.get("token", ""))
                if position > at and start < end:
                    chosen.append(t)
    mean = sum(float(t["logprob"]) for t in chosen) / len(chosen)
    return _clamp(math.exp(mean))


def _ten_or_hundred(value: float) -> float:
    if value <= 1.0:
        return value
    return value / 10.0 if value <= 10.0 else value / 100.0


def parse_score(text: str | None) -> float | None:
    """A judge's last "Score: 8/10" (also "Rating: 4/5", "score 80%") within [0, 1]; None without one.

    A bare number is read on the scale it fits: up to 1 as is, up to 10 as tenths, else percent.
    """
    if not text:
        return None
    found = _SCORE.findall(text)
    if not found:
        return None
    return _scaled(*found[-1], bare_scale=_ten_or_hundred)


def judge_score_prompt(question: str, answer: str) -> str:
    """Ask a judge model to grade one reply, ending with "Score: <0-10>" for `parse_score`."""
    return (
        "Grade the reply below to the question for correctness. Check the reasoning and the final "
        "answer; a wrong final answer scores low however well it is written.\n\n"
        f"Question:\n{question.strip()}\n\nReply:\n{answer.strip()}\n\n"
        "Finish with a line `Score: <0-10>`, where 10 means certainly correct and 0 certainly wrong."
    )


# --- acceptance tests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageAnswer:
    """What a cascade stage produced: its reply, and what the acceptance test asked for."""

    text: str
    samples: tuple[str, ...] = ()  # k sampled replies, when the test has samples > 0
    judge_reply: str | None = None  # the judge's reply, when the test needs a judge
    stage: str = ""
    tool_calls: tuple[ToolCall, ...] = ()  # the reply's tool calls
    sample_calls: tuple[tuple[ToolCall, ...], ...] = ()  # each sample's tool calls, beside `samples`
    wants_json: bool = False  # the request asked for a JSON answer
    logprobs: dict | None = None  # the reply's token logprobs, when the provider returned them


@dataclass(frozen=True, slots=True)
class Decision:
    """Accept the stage's answer or escalate to the next stage, and why."""

    accept: bool
    reason: str
    score: float | None = None  # the measured confidence, agreement or judge score
    answer: str | None = None  # the answer the test settled on (the majority, for agreement)

    @property
    def escalate(self) -> bool:
        return not self.accept


class AcceptanceTest:
    """Base of the acceptance tests; `a & b` needs both to accept, `a | b` either."""

    samples: int = 0
    needs_judge: bool = False

    def __call__(self, stage: StageAnswer) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    def __and__(self, other: AcceptanceTest) -> AcceptanceTest:
        return _AllOf((self, other))

    def __or__(self, other: AcceptanceTest) -> AcceptanceTest:
        return _AnyOf((self, other))


def _check_threshold(threshold: float, what: str) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"{what} threshold must be within 0..1, got {threshold!r}")
    return float(threshold)


class _Confidence(AcceptanceTest):
    __slots__ = ("threshold", "if_missing")

    def __init__(self, threshold: float, if_missing: str):
        self.threshold = _check_threshold(threshold, "confidence")
        if if_missing not in ("escalate", "accept"):
            raise ConfigError(f'if_missing must be "escalate" or "accept", got {if_missing!r}')
        self.if_missing = if_missing

    def __repr__(self) -> str:
        return f"escalate_if_below({self.threshold})"

    def __call__(self, stage: StageAnswer) -> Decision:
        c = parse_confidence(stage.text)
        if c is None and stage.logprobs:  # no stated confidence: how sure the tokens were
            c = logprob_confidence(stage.logprobs)
        if c is None:
            ok = self.if_missing == "accept"
            return Decision(ok, f"no confidence stated; {'accepted' if ok else 'escalated'}")
        if c >= self.threshold:
            return Decision(True, f"confidence {c:.2f} >= {self.threshold:.2f}", score=c)
        return Decision(False, f"confidence {c:.2f} < {self.threshold:.2f}", score=c)


class _Agreement(AcceptanceTest):
    __slots__ = ("threshold", "samples", "extract")

    def __init__(self, threshold: float, k: int, extract: Extractor | None):
        self.threshold = _check_threshold(threshold, "agreement")
        if not isinstance(k, int) or k < 2:
            raise ConfigError(f"agreement needs k >= 2 samples, got {k!r}")
        self.samples = k
        self.extract = extract

    def __repr__(self) -> str:
        return f"escalate_if_agreement_below({self.threshold}, k={self.samples})"

    def __call__(self, stage: StageAnswer) -> Decision:
        if not stage.samples:
            return Decision(False, f"no samples to compare (needs {self.samples})")
        calls = stage.sample_calls or ((),) * len(stage.samples)
        vote = majority_vote([reply_answer(self.extract, s, c, wants_json=stage.wants_json)
                              for s, c in zip(stage.samples, calls)])
        # Failed or unreadable samples count against agreement: they were drawn and did not agree.
        drawn = max(self.samples, len(stage.samples))
        top = vote.counts.get(vote.winner, 0) if vote.winner is not None else 0
        share = top / drawn
        detail = f"agreement {top}/{drawn} = {share:.2f}"
        if vote.winner is not None and share >= self.threshold:
            return Decision(True, f"{detail} >= {self.threshold:.2f} on {vote.winner!r}", share, vote.winner)
        return Decision(False, f"{detail} < {self.threshold:.2f}", share, vote.winner)


class _Judge(AcceptanceTest):
    __slots__ = ("threshold",)
    needs_judge = True

    def __init__(self, threshold: float):
        self.threshold = _check_threshold(threshold, "judge score")

    def __repr__(self) -> str:
        return f"escalate_if_judge_below({self.threshold})"

    def __call__(self, stage: StageAnswer) -> Decision:
        s = parse_score(stage.judge_reply)
        if s is None:
            return Decision(False, "judge gave no readable score; escalated")
        if s >= self.threshold:
            return Decision(True, f"judge score {s:.2f} >= {self.threshold:.2f}", score=s)
        return Decision(False, f"judge score {s:.2f} < {self.threshold:.2f}", score=s)


class _Predicate(AcceptanceTest):
    __slots__ = ("predicate", "name")

    def __init__(self, predicate: Callable[[StageAnswer], bool | Decision], name: str | None):
        if not callable(predicate):
            raise ConfigError("accept_if needs a callable StageAnswer -> bool | Decision")
        self.predicate = predicate
        self.name = name or getattr(predicate, "__name__", "predicate")

    def __repr__(self) -> str:
        return f"accept_if({self.name})"

    def __call__(self, stage: StageAnswer) -> Decision:
        verdict = self.predicate(stage)
        if isinstance(verdict, Decision):
            return verdict
        return Decision(bool(verdict), f"{self.name}: {'passed' if verdict else 'failed'}")


class _Combined(AcceptanceTest):
    __slots__ = ("parts",)
    word = ""

    def __init__(self, parts: Sequence[AcceptanceTest]):
        flat: list[AcceptanceTest] = []
        for p in parts:
            if not isinstance(p, AcceptanceTest):
                raise ConfigError(f"cannot combine an acceptance test with {p!r}")
            flat.extend(p.parts if type(p) is type(self) else [p])
        self.parts = tuple(flat)

    @property
    def samples(self) -> int:  # type: ignore[override]
        return max(p.samples for p in self.parts)

    @property
    def needs_judge(self) -> bool:  # type: ignore[override]
        return any(p.needs_judge for p in self.parts)

    def __repr__(self) -> str:
        return f" {self.word} ".join(map(repr, self.parts))

    def _decide(self, decisions: list[Decision]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, stage: StageAnswer) -> Decision:
        decisions = [p(stage) for p in self.parts]
        ok = self._decide(decisions)
        reason = f" {self.word} ".join(d.reason for d in decisions)
        answer = next((d.answer for d in decisions if d.answer is not None and d.accept == ok), None)
        score = next((d.score for d in decisions if d.score is not None), None)
        return Decision(ok, reason, score, answer)


class _AllOf(_Combined):
    word = "and"

    def _decide(self, decisions: list[Decision]) -> bool:
        return all(d.accept for d in decisions)


class _AnyOf(_Combined):
    word = "or"

    def _decide(self, decisions: list[Decision]) -> bool:
        return any(d.accept for d in decisions)


def escalate_if_below(threshold: float, *, if_missing: str = "escalate") -> AcceptanceTest:
    """Accept when the reply's self-reported confidence is at least `threshold`.

    A reply stating no confidence escalates (or is accepted with `if_missing="accept"`).
    """
    return _Confidence(threshold, if_missing)


def escalate_if_agreement_below(
    threshold: float, k: int = 3, *, extract: str | Extractor | Callable[[str], str | None] | None = None
) -> AcceptanceTest:
    """Accept when the most common of `k` sampled answers has at least `threshold` of the k draws.

    Samples that failed or had no extractable answer count as disagreeing. The decision's `answer`
    is the majority answer, which the cascade should return instead of the first reply. Without
    `extract`, answers compare as `reply_answer` reads them (`answer`, or canonical JSON).
    """
    return _Agreement(threshold, k, None if extract is None else extractor(extract))


def escalate_if_judge_below(threshold: float) -> AcceptanceTest:
    """Accept when a judge model's score (`parse_score`, 0..1) is at least `threshold`."""
    return _Judge(threshold)


def accept_if(predicate: Callable[[StageAnswer], bool | Decision], name: str | None = None) -> AcceptanceTest:
    """Accept when `predicate(stage)` is true; it may also return a full `Decision`."""
    return _Predicate(predicate, name)


def acceptance_from_config(
    accept: str = "confidence", threshold: float = 0.8, samples: int = 3, extract: str | Extractor | None = None
) -> AcceptanceTest:
    """The test a cascade route's config names: `accept: confidence | agreement | judge`."""
    if accept == "confidence":
        return escalate_if_below(threshold)
    if accept == "agreement":
        return escalate_if_agreement_below(threshold, samples, extract=extract)
    if accept == "judge":
        return escalate_if_judge_below(threshold)
    raise ConfigError(f"unknown cascade acceptance {accept!r}; use confidence, agreement or judge")
