"""The simulated model itself: its profile, its answers (text, tool calls, JSON, logprobs) and their latency."""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from orchestray.messages import ChatRequest, Message, ResponseFormat, ToolCall, estimate_tokens
from orchestray.simulated._skills import SKILLS, Attempt, Skill
from orchestray.simulated._structured import _json_answer, _schema_has, _schema_in_prompt
from orchestray.simulated._tools import _answer_from_results, _calls, _tool_results, _tool_to_call

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
