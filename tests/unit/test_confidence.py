import pytest

from orchestray.errors import ConfigError
from orchestray.policies.confidence import (
    Decision,
    StageAnswer,
    accept_if,
    acceptance_from_config,
    escalate_if_agreement_below,
    escalate_if_below,
    escalate_if_judge_below,
    judge_score_prompt,
    parse_confidence,
    parse_score,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: 85\nConfidence: 0.87", 0.87),
        ("confidence 87%", 0.87),
        ("Confidence: 8/10", 0.8),
        ("Confidence level: 9 out of 10", 0.9),
        ("I am 90% confident.", 0.9),
        ("I'm 75% sure", 0.75),
        ("Confidence: 87", 0.87),
        ("Confidence: 150%", 1.0),
        ("Confidence: -0.2", 0.0),
        ("Confidence: 0.2 ... on reflection, Confidence: 0.6", 0.6),
        ("Answer: 85", None),
        ("I am confident that 2 + 2 = 4", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_confidence(text, expected):
    got = parse_confidence(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Looks right.\nScore: 8/10", 0.8),
        ("Score: 0.65", 0.65),
        ("Score: 7", 0.7),
        ("Rating: 4/5", 0.8),
        ("score 80%", 0.8),
        ("Score: 85", 0.85),
        ("no grade", None),
    ],
)
def test_parse_score(text, expected):
    got = parse_score(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_escalate_if_below():
    test = escalate_if_below(0.8)
    high = test(StageAnswer("Answer: 4\nConfidence: 0.9"))
    low = test(StageAnswer("Answer: 4\nConfidence: 0.5"))
    assert high.accept and high.score == pytest.approx(0.9) and "0.90 >= 0.80" in high.reason
    assert low.escalate and "0.50 < 0.80" in low.reason
    assert test(StageAnswer("Answer: 4\nConfidence: 0.8")).accept


def test_missing_confidence_escalates_unless_told_otherwise():
    assert escalate_if_below(0.5)(StageAnswer("Answer: 4")).escalate
    assert escalate_if_below(0.5, if_missing="accept")(StageAnswer("Answer: 4")).accept


def test_agreement_among_k_samples():
    test = escalate_if_agreement_below(0.6, k=3)
    assert test.samples == 3
    agree = test(StageAnswer("Answer: 4", samples=("Answer: 4", "Answer: 4", "Answer: 5")))
    assert agree.accept and agree.answer == "4" and agree.score == pytest.approx(2 / 3)
    split = test(StageAnswer("Answer: 4", samples=("Answer: 4", "Answer: 5", "Answer: 6")))
    assert split.escalate and "1/3" in split.reason


def test_failed_samples_count_against_agreement():
    test = escalate_if_agreement_below(0.6, k=3, extract="number")
    # Two samples arrived and agree, the third failed: 2/3 still passes 0.6 ...
    assert test(StageAnswer("x", samples=("Answer: 4", "Answer: 4"))).accept
    # ... but 2 of 4 drawn does not.
    assert escalate_if_agreement_below(0.6, k=4, extract="number")(
        StageAnswer("x", samples=("Answer: 4", "Answer: 4", "no idea"))
    ).escalate
    assert test(StageAnswer("x")).escalate


def test_judge_score():
    test = escalate_if_judge_below(0.7)
    assert test.needs_judge
    assert test(StageAnswer("Answer: 4", judge_reply="Correct.\nScore: 8/10")).accept
    assert test(StageAnswer("Answer: 4", judge_reply="Score: 3/10")).escalate
    assert test(StageAnswer("Answer: 4", judge_reply="hmm")).escalate
    prompt = judge_score_prompt("What is 2+2?", "Answer: 4")
    assert "What is 2+2?" in prompt and "Score: <0-10>" in prompt


def test_custom_predicate():
    test = accept_if(lambda s: "sorry" not in s.text, name="no apology")
    assert test(StageAnswer("Answer: 4")).accept
    refused = test(StageAnswer("sorry, I cannot"))
    assert refused.escalate and "no apology" in refused.reason
    full = accept_if(lambda s: Decision(False, "custom reason"))(StageAnswer("x"))
    assert full.reason == "custom reason"


def test_tests_compose_with_and_or():
    both = escalate_if_below(0.8) & escalate_if_judge_below(0.7)
    either = escalate_if_below(0.8) | escalate_if_agreement_below(0.6, k=3)
    assert both.needs_judge and not either.needs_judge
    assert either.samples == 3 and both.samples == 0
    stage = StageAnswer("Confidence: 0.9", judge_reply="Score: 2/10")
    assert both(stage).escalate and " and " in both(stage).reason
    assert escalate_if_below(0.95) | accept_if(lambda s: True) is not None
    assert (escalate_if_below(0.95) | accept_if(lambda s: True))(stage).accept


def test_from_config():
    assert acceptance_from_config("confidence", 0.8)(StageAnswer("Confidence: 0.85")).accept
    assert acceptance_from_config("agreement", 0.6, samples=5).samples == 5
    assert acceptance_from_config("judge", 0.5).needs_judge
    with pytest.raises(ConfigError):
        acceptance_from_config("vibes")
    with pytest.raises(ConfigError):
        escalate_if_below(1.5)
    with pytest.raises(ConfigError):
        escalate_if_agreement_below(0.5, k=1)


def test_confidence_from_a_json_field_and_agreement_over_tool_calls_and_json():
    from orchestray.messages import ToolCall

    assert parse_confidence('{"answer": "sunny", "confidence": 0.92}') == 0.92
    assert escalate_if_below(0.9)(StageAnswer(text='{"answer": 1, "confidence": 95}')).accept
    paris, rome = ToolCall("a", "f", '{"city":"Paris"}'), ToolCall("b", "f", '{"city": "Rome"}')
    test = escalate_if_agreement_below(0.6, k=3)
    calls = ((paris,), (ToolCall("c", "f", '{ "city" : "Paris" }'),), (rome,))
    decision = test(StageAnswer(text="", samples=("", "", ""), sample_calls=calls))
    assert decision.accept and decision.answer == 'f({"city":"Paris"})'
    json_samples = ('{"a": 1, "b": 2}', '{"b": 2, "a": 1}', '{"a": 2}')
    assert test(StageAnswer(text="", samples=json_samples, wants_json=True)).accept
    assert not test(StageAnswer(text="", samples=json_samples)).accept  # as text they differ
