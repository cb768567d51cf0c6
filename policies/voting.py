"""Vote counting for ensembles: majority and weighted votes with a stated tie rule, quorum, the
judge's pick and the Mixture-of-Agents aggregator prompt.

An `Answer` is one call's extracted answer (None when extraction found nothing: it does not vote)
with the provider and cost of the call. A vote returns a `VoteResult`:

    winner       the chosen answer, or None (no valid vote, quorum not met, or a tie under "abstain")
    counts       votes per answer, in order of first appearance
    scores       weighted votes per answer (equal to counts in a majority vote)
    agreement    the top answer's share of the valid (weighted) votes: the ensemble's confidence
    answers      every individual answer, valid or not, in the order given
    quorum_met   whether at least `quorum` answers were valid (None-extractions and failed calls
                 do not count); without quorum there is no winner

Tie rules (`tie=`), applied when several answers share the top score:

    "first"        the tied answer that appeared first in `answers` (the default)
    "lowest_cost"  the tied answer whose supporting calls cost least on average; then "first"
    "abstain"      no winner
    "random"       one of the tied answers drawn with `rng` (required), so runs are reproducible
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestray.errors import ConfigError
from orchestray.messages import ToolCall

__all__ = [
    "Answer",
    "VoteResult",
    "TIE_RULES",
    "majority_vote",
    "weighted_vote",
    "judged_vote",
    "judge_prompt",
    "parse_best",
    "aggregator_prompt",
    "candidate_text",
]

TIE_RULES = ("first", "lowest_cost", "abstain", "random")


@dataclass(frozen=True, slots=True)
class Answer:
    """One call's answer as it enters a vote."""

    value: str | None
    provider: str = ""
    cost: float = 0.0
    text: str = ""


@dataclass(frozen=True, slots=True)
class VoteResult:
    winner: str | None
    counts: dict[str, int]
    scores: dict[str, float]
    agreement: float
    answers: tuple[Answer, ...]
    valid: int
    quorum: int
    quorum_met: bool
    tied: tuple[str, ...] = ()
    tie_rule: str = "first"
    reason: str = ""
    winner_index: int | None = field(default=None)

    @property
    def confidence(self) -> float:
        """The agreement ratio when there is a winner, 0.0 when there is none."""
        return self.agreement if self.winner is not None else 0.0

    @property
    def winner_answer(self) -> Answer | None:
        """The first individual answer that voted for the winner (its text is a full reply)."""
        return None if self.winner_index is None else self.answers[self.winner_index]


def _as_answers(answers: Iterable[Answer | str | None]) -> tuple[Answer, ...]:
    out = []
    for a in answers:
        out.append(a if isinstance(a, Answer) else Answer(a, text=a or ""))
    return tuple(out)


def _check(tie: str, quorum: int | None, rng: random.Random | None) -> int:
    if tie not in TIE_RULES:
        raise ConfigError(f"unknown tie rule {tie!r}; use one of {', '.join(TIE_RULES)}")
    if tie == "random" and rng is None:
        raise ConfigError('tie rule "random" needs an rng (a random.Random) for reproducible draws')
    quorum = 1 if quorum is None else quorum
    if quorum < 1:
        raise ConfigError(f"quorum must be at least 1, got {quorum}")
    return quorum


def _tally(
    answers: tuple[Answer, ...],
    weight_of,
    *,
    tie: str,
    quorum: int,
    rng: random.Random | None,
    label: str,
) -> VoteResult:
    counts: dict[str, int] = {}
    scores: dict[str, float] = {}
    costs: dict[str, float] = {}
    first_at: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a.value is None:
            continue
        counts[a.value] = counts.get(a.value, 0) + 1
        scores[a.value] = scores.get(a.value, 0.0) + weight_of(a)
        costs[a.value] = costs.get(a.value, 0.0) + a.cost
        first_at.setdefault(a.value, i)
    valid = sum(counts.values())
    total = sum(scores.values())
    base = dict(
        counts=counts, scores=scores, answers=answers, valid=valid, quorum=quorum, tie_rule=tie
    )
    if valid < quorum:
        reason = f"{label}: quorum not met ({valid} valid of {len(answers)}, need {quorum})"
        top_share = max(scores.values()) / total if total > 0 else 0.0
        return VoteResult(winner=None, agreement=top_share, quorum_met=False, reason=reason, **base)

    top = max(scores.values())
    tied = tuple(v for v in scores if math.isclose(scores[v], top, rel_tol=1e-9, abs_tol=1e-12))
    agreement = top / total if total > 0 else 0.0
    if len(tied) == 1:
        winner = tied[0]
        reason = f"{label}: {winner!r} with {_share(scores[winner], total, counts[winner], valid, label)}"
        return VoteResult(
            winner=winner, agreement=agreement, quorum_met=True, reason=reason,
            winner_index=first_at[winner], **base,
        )

    shown = ", ".join(repr(v) for v in tied)
    if tie == "abstain":
        return VoteResult(
            winner=None, agreement=agreement, quorum_met=True, tied=tied,
            reason=f"{label}: tie between {shown}; abstained", **base,
        )
    if tie == "first":
        winner = min(tied, key=first_at.__getitem__)
        why = "earliest answer"
    elif tie == "lowest_cost":
        winner = min(tied, key=lambda v: (costs[v] / counts[v], first_at[v]))
        why = f"lowest cost per call ({costs[winner] / counts[winner]:.6g})"
    else:
        assert rng is not None
        winner = rng.choice(sorted(tied, key=first_at.__getitem__))
        why = "drawn at random"
    return VoteResult(
        winner=winner, agreement=agreement, quorum_met=True, tied=tied,
        reason=f"{label}: tie between {shown}; {winner!r} by {tie} ({why})",
        winner_index=first_at[winner], **base,
    )


def _share(score: float, total: float, count: int, valid: int, label: str) -> str:
    if label == "majority":
        return f"{count}/{valid} votes"
    return f"weight {score:.3g}/{total:.3g} ({count}/{valid} votes)"


def majority_vote(
    answers: Iterable[Answer | str | None],
    *,
    tie: str = "first",
    quorum: int | None = 1,
    rng: random.Random | None = None,
) -> VoteResult:
    """The most common answer. Plain strings (or None) are accepted as answers of unnamed providers."""
    quorum = _check(tie, quorum, rng)
    return _tally(_as_answers(answers), lambda a: 1.0, tie=tie, quorum=quorum, rng=rng, label="majority")


def weighted_vote(
    answers: Iterable[Answer | str | None],
    weights: Mapping[str, float],
    *,
    default_weight: float = 1.0,
    tie: str = "first",
    quorum: int | None = 1,
    rng: random.Random | None = None,
) -> VoteResult:
    """Each answer votes with its provider's weight (`default_weight` for a provider not listed).

    `agreement` is then the winner's share of the total weight of valid answers.
    """
    quorum = _check(tie, quorum, rng)
    for name, w in {**weights, "<default>": default_weight}.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ConfigError(f"weight for {name!r} must be a finite number >= 0, got {w!r}")
    return _tally(
        _as_answers(answers),
        lambda a: float(weights.get(a.provider, default_weight)),
        tie=tie, quorum=quorum, rng=rng, label="weighted",
    )


# --- a judge model picks the best candidate --------------------------------------------------


def candidate_text(content: str, tool_calls: Sequence[ToolCall] = ()) -> str:
    """A reply as a judge or an aggregator reads it: its text, then each tool call it made with
    canonical arguments, so a reply that only called a tool is not an empty candidate."""
    calls = [f"Calls the tool {call.canonical()}" for call in tool_calls]
    return "\n".join(([content.strip()] if content.strip() else []) + calls)



def judge_prompt(question: str, candidates: Sequence[str]) -> str:
    """Ask a judge model to pick the best of numbered candidate replies, as "Best: <number>"."""
    listed = "\n\n".join(f"Candidate {i}:\n{c.strip()}" for i, c in enumerate(candidates, 1))
    return (
        "Several replies were written to the question below. Decide which one is the most correct "
        "and complete. Check their reasoning rather than counting how many agree.\n\n"
        f"Question:\n{question.strip()}\n\n{listed}\n\n"
        f"Finish with a line of the form `Best: <number>`, a number from 1 to {len(candidates)}."
    )


_BEST = re.compile(r"(?i)\bbest\b[^\d\n]{0,40}?#?(\d+)")
_CANDIDATE = re.compile(r"(?i)\bcandidate\s*#?\s*(\d+)")


def parse_best(text: str, n: int) -> int | None:
    """The judge's pick as a 0-based index into the candidates, or None when unreadable or out of range.

    Reads the last "Best: 3" (also "the best is candidate #3"), else the last "Candidate 3", else a
    reply that is only a number.
    """
    for pattern in (_BEST, _CANDIDATE):
        found = pattern.findall(text)
        if found:
            pick = int(found[-1])
            return pick - 1 if 1 <= pick <= n else None
    alone = re.fullmatch(r"\s*#?(\d+)\.?\s*", text)
    if alone and 1 <= int(alone.group(1)) <= n:
        return int(alone.group(1)) - 1
    return None


def judged_vote(
    answers: Iterable[Answer | str | None],
    best: int | None,
    *,
    tie: str = "first",
    quorum: int | None = 1,
    rng: random.Random | None = None,
) -> VoteResult:
    """The judge's pick (`best`, from `parse_best` over the same answers in the same order) wins.

    Counts and agreement are those of the answers themselves. When the judge's reply was unreadable
    (`best` is None) or picked an answer with nothing extracted, the majority vote decides instead.
    """
    answers = _as_answers(answers)
    result = majority_vote(answers, tie=tie, quorum=quorum, rng=rng)
    if not result.quorum_met:
        return result
    picked = answers[best].value if best is not None and 0 <= best < len(answers) else None
    if picked is None:
        why = "unreadable" if best is None else f"candidate {best + 1} has no answer"
        return replace(result, reason=f"judge reply {why}; fell back to {result.reason}")
    total = sum(result.scores.values())
    return replace(
        result,
        winner=picked,
        agreement=result.scores[picked] / total if total > 0 else 0.0,
        tied=(),
        winner_index=best,
        reason=f"judge picked candidate {best + 1}: {picked!r} ({result.counts[picked]}/{result.valid} votes)",
    )


# --- Mixture-of-Agents: an aggregator merges every reply ------------------------------------


def aggregator_prompt(question: str, responses: Sequence[str], *, structured: bool = False) -> str:
    """Ask an aggregator model to merge several replies into one better reply (Mixture-of-Agents).

    The final reply keeps the project's convention of ending with `Answer: <value>`, so the same
    extractor reads the aggregate as it reads each reply; when the request asked for JSON or
    offered tools (`structured`), it answers in that form instead: the JSON, or the tool call.
    """
    listed = "\n\n".join(f"Reply {i}:\n{r.strip()}" for i, r in enumerate(responses, 1))
    return (
        "Below are replies from several models to the same question. They may disagree, and any "
        "of them may contain mistakes. Weigh them critically and write a single reply of your own "
        "that keeps what is right and corrects what is wrong; do not merely copy one of them or "
        "list them.\n\n"
        f"Question:\n{question.strip()}\n\n{listed}\n\n"
        + ("Give your reply in the form the question asks for: the JSON it asks for, or the tool call "
           "to make if the best reply is a tool call."
           if structured else "End your reply with a line `Answer: <your final answer>`.")
    )
