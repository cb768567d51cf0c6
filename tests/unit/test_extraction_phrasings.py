"""Property tests: each extractor reads a known value back from the many ways models phrase it."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestray.messages import ToolCall
from orchestray.policies.confidence import logprob_confidence, parse_confidence
from orchestray.policies.extraction import extract_answer, extract_choice, extract_number, extractor, reply_answer

REASONING = st.sampled_from(["", "Let me work through it. 3 * 4 = 12, then 12 + 7 = 19.\n", "Step 1: read.\nStep 2: add 5 and 6.\n\n"])
UNITS = st.sampled_from(["", " minutes", " apples", " km", " dollars"])
CONFIDENCE = st.floats(min_value=0.0, max_value=1.0, allow_nan=False).map(lambda c: round(c, 2))


def _spell(value: int, commas: bool) -> str:
    return f"{value:,}" if commas else str(value)


CONFIDENCE_STYLES = [
    lambda c: f"Confidence: {c}",
    lambda c: f"(confidence {c:.0%})",
    lambda c: f"I am {c:.0%} sure.",
    lambda c: f"Confidence level: {round(c * 10)}/10",
]
NUMBER_STYLES = [
    lambda v, u: f"The answer is {v}{u}.",
    lambda v, u: f"**{v}**",
    lambda v, u: f"$\\boxed{{{v}}}$",
    lambda v, u: f"Answer: {v}{u}",
    lambda v, u: f"Final answer: {v}.",
    lambda v, u: f"**Answer:** {v}{u}",
    lambda v, u: f"So we get {v}{u}.\n{v}{u}",
    lambda v, u: f"{v}.",
    lambda v, u: f"Step 1: multiply.\nSo the total is {v}{u}.",
]


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(min_value=-10**7, max_value=10**7),
    commas=st.booleans(),
    style=st.sampled_from(NUMBER_STYLES),
    unit=UNITS,
    before=REASONING,
    confidence=st.none() | st.tuples(st.sampled_from(CONFIDENCE_STYLES), CONFIDENCE, st.sampled_from([" ", "\n"])),
)
def test_number_and_answer_read_every_phrasing(value, commas, style, unit, before, confidence):
    text = before + style(_spell(value, commas), unit)
    if confidence is not None:
        say, c, sep = confidence
        text += sep + say(c)
    assert extract_number(text) == str(value), text
    assert extract_answer(text) == str(value), text


@settings(max_examples=150, deadline=None)
@given(value=st.integers(min_value=-10**6, max_value=10**6), c=CONFIDENCE, key=st.sampled_from(["answer", "final_answer", "result"]))
def test_json_answers_and_their_confidence(value, c, key):
    text = "Here it is:\n```json\n" + json.dumps({"reasoning": "12 * 120 = 1440", key: value, "confidence": c}) + "\n```"
    assert extract_number(text) == str(value)
    assert extract_answer(text) == str(value)
    assert parse_confidence(text) == c


@settings(max_examples=200, deadline=None)
@given(
    letter=st.sampled_from("ABCD"),
    style=st.sampled_from([
        lambda x: f"Answer: ({x})", lambda x: f"The answer is {x}.", lambda x: f"**{x}**",
        lambda x: f"\\boxed{{{x}}}", lambda x: f'{{"answer": "{x}"}}', lambda x: f"Final answer: {x}) 56",
        lambda x: f"Comparing the options, the sum is 56.\n{x}", lambda x: f"**Answer:** {x}. Paris",
    ]),
    before=REASONING,
    confidence=st.none() | st.tuples(st.sampled_from(CONFIDENCE_STYLES), CONFIDENCE),
)
def test_choice_reads_every_phrasing(letter, style, before, confidence):
    text = before + style(letter)
    if confidence is not None:
        text += "\n" + confidence[0](confidence[1])
    assert extract_choice(text, "ABCD") == letter, text


@settings(max_examples=200, deadline=None)
@given(c=st.integers(min_value=0, max_value=100), style=st.sampled_from([
    "Confidence: {f}", "confidence: {p}%", "I'm {p}% confident.", "({p}% sure)", "Confidence level is {p}/100",
    '{{"answer": 42, "confidence": {f}}}',
]))
def test_confidence_reads_every_phrasing(c, style):
    text = "The answer is 42.\n" + style.format(f=c / 100, p=c)
    assert abs(parse_confidence(text) - c / 100) < 1e-9, text
    assert extract_number(text) == "42", text


def test_confidence_words_and_logprobs():
    assert parse_confidence("Answer: 4\nConfidence: high") == 0.85
    assert parse_confidence("Answer: 4. My confidence is very low") == 0.1
    assert extract_answer("Answer: 4. Confidence: high") == "4"
    sure = {"content": [{"token": t, "logprob": -0.01} for t in ["The", " answer", " is", " 42"]]}
    unsure = {"content": [{"token": "The", "logprob": -0.01}, {"token": " 4", "logprob": -1.5}, {"token": "2", "logprob": -1.5}]}
    assert logprob_confidence(sure) > 0.98
    assert logprob_confidence(unsure, answer="42") < 0.25 < logprob_confidence(unsure)
    assert logprob_confidence(None) is None


def test_five_agreeing_samples_agree_however_phrased():
    # The case: five samples that all say 1440 must make one candidate, not five.
    samples = ["The answer is 1440. Confidence: 0.99", "The answer is 1,440. Confidence: 0.92", "**1,440 minutes**",
               "So it is $\\boxed{1440}$ (confidence: high)", '{"answer": 1440, "confidence": 0.9}']
    assert {extract_answer(s) for s in samples} == {"1440"}
    assert {extract_number(s) for s in samples} == {"1440"}


def test_a_structured_output_tool_call_is_read_from_its_answer_argument():
    call = ToolCall("c1", "final_answer", json.dumps({"answer": "1,440", "confidence": 0.8}))
    assert reply_answer(extractor("number"), "", [call]) == "1440"
    assert reply_answer(extractor("answer"), "", [call]) == "1440"
    lookup = ToolCall("c2", "get_weather", '{"city": "Paris"}')
    assert reply_answer(extractor("number"), "", [lookup]) == 'get_weather({"city":"Paris"})'


def test_a_cascade_stage_without_a_stated_confidence_is_judged_by_its_logprobs():
    from orchestray.policies.confidence import StageAnswer, escalate_if_below

    sure = {"content": [{"token": "42", "logprob": -0.01}]}
    unsure = {"content": [{"token": "42", "logprob": -2.0}]}
    test = escalate_if_below(0.8)
    assert test(StageAnswer("Answer: 42", logprobs=sure)).accept
    assert not test(StageAnswer("Answer: 42", logprobs=unsure)).accept
    assert not test(StageAnswer("Answer: 42. Confidence: 0.5", logprobs=sure)).accept  # stated wins
