import random

import pytest

from orchestray.errors import ConfigError
from orchestray.policies.voting import (
    Answer,
    aggregator_prompt,
    judge_prompt,
    judged_vote,
    majority_vote,
    parse_best,
    weighted_vote,
)


def test_majority_counts_votes_and_ignores_missing_answers():
    result = majority_vote(["4", "4", "5", None])
    assert result.winner == "4"
    assert result.counts == {"4": 2, "5": 1}
    assert result.valid == 3
    assert result.agreement == pytest.approx(2 / 3)
    assert result.confidence == pytest.approx(2 / 3)
    assert len(result.answers) == 4 and result.answers[3].value is None
    assert result.quorum_met and result.tied == ()
    assert "2/3" in result.reason


def test_tie_first_picks_the_earliest_answer():
    result = majority_vote(["b", "a", "a", "b"], tie="first")
    assert result.winner == "b"
    assert set(result.tied) == {"a", "b"}
    assert result.agreement == pytest.approx(0.5)
    assert result.winner_answer.value == "b"


def test_tie_lowest_cost_picks_the_cheaper_answer():
    answers = [
        Answer("a", provider="large", cost=0.02),
        Answer("b", provider="small", cost=0.001),
        Answer("a", provider="large", cost=0.02),
        Answer("b", provider="small", cost=0.001),
    ]
    assert majority_vote(answers, tie="lowest_cost").winner == "b"


def test_tie_lowest_cost_falls_back_to_first_on_equal_cost():
    assert majority_vote(["x", "y"], tie="lowest_cost").winner == "x"


def test_tie_abstain_gives_no_winner():
    result = majority_vote(["a", "b"], tie="abstain")
    assert result.winner is None
    assert result.confidence == 0.0
    assert "abstain" in result.reason


def test_tie_random_is_reproducible_with_an_rng():
    picks = {majority_vote(["a", "b"], tie="random", rng=random.Random(s)).winner for s in range(20)}
    assert picks == {"a", "b"}
    assert majority_vote(["a", "b"], tie="random", rng=random.Random(1)).winner == majority_vote(
        ["a", "b"], tie="random", rng=random.Random(1)
    ).winner


def test_no_tie_rule_applies_without_a_tie():
    assert majority_vote(["a", "b", "b"], tie="abstain").winner == "b"


@pytest.mark.parametrize("kwargs", [{"tie": "coin"}, {"tie": "random"}, {"quorum": 0}])
def test_bad_vote_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        majority_vote(["a"], **kwargs)


def test_quorum_counts_only_valid_answers():
    answers = ["7", None, "7", None, None]
    assert majority_vote(answers, quorum=2).quorum_met
    result = majority_vote(answers, quorum=3)
    assert not result.quorum_met and result.winner is None
    assert result.counts == {"7": 2}
    assert "quorum" in result.reason


def test_no_valid_answer_means_no_winner():
    result = majority_vote([None, None])
    assert result.winner is None and not result.quorum_met and result.valid == 0


def test_weighted_vote_weighs_by_provider():
    answers = [Answer("a", "small"), Answer("a", "small"), Answer("b", "large")]
    result = weighted_vote(answers, {"large": 3.0, "small": 1.0})
    assert result.winner == "b"
    assert result.scores == {"a": 2.0, "b": 3.0}
    assert result.counts == {"a": 2, "b": 1}
    assert result.agreement == pytest.approx(3 / 5)


def test_weighted_vote_default_weight_and_ties():
    answers = [Answer("a", "x"), Answer("b", "unlisted")]
    assert weighted_vote(answers, {"x": 2.0}, default_weight=2.0).tied == ("a", "b")
    assert weighted_vote(answers, {"x": 2.0}).winner == "a"


def test_weighted_vote_rejects_negative_weights():
    with pytest.raises(ConfigError):
        weighted_vote(["a"], {"p": -1.0})


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Candidate 2 is sloppy.\nBest: 3", 2),
        ("The best answer is candidate #1.", 0),
        ("I prefer Candidate 2", 1),
        ("2", 1),
        ("Best: 9", None),
        ("They are all fine.", None),
    ],
)
def test_parse_best(reply, expected):
    assert parse_best(reply, 3) == expected


def test_judged_vote_follows_the_judge():
    answers = ["4", "4", "5"]
    result = judged_vote(answers, parse_best("Best: 3", 3))
    assert result.winner == "5"
    assert result.agreement == pytest.approx(1 / 3)
    assert "judge picked candidate 3" in result.reason


def test_judged_vote_falls_back_to_majority_when_unreadable():
    result = judged_vote(["4", "4", "5"], None)
    assert result.winner == "4"
    assert "fell back" in result.reason


def test_judge_and_aggregator_prompts_show_every_candidate():
    prompt = judge_prompt("What is 2+2?", ["It is 4.", "It is 5."])
    assert "Candidate 1:\nIt is 4." in prompt and "Candidate 2:\nIt is 5." in prompt
    assert "Best: <number>" in prompt and "1 to 2" in prompt
    merged = aggregator_prompt("What is 2+2?", ["It is 4.", "It is 5."])
    assert "What is 2+2?" in merged and "It is 4." in merged and "It is 5." in merged
    assert "Answer:" in merged


def test_judges_and_aggregators_see_tool_calls_and_the_asked_form():
    from orchestray.messages import ToolCall
    from orchestray.policies.voting import candidate_text

    call = ToolCall("x", "get_weather", '{"city": "Paris"}')
    assert candidate_text("", [call]) == 'Calls the tool get_weather({"city":"Paris"})'
    assert candidate_text("Let me check. ", [call]) == 'Let me check.\nCalls the tool get_weather({"city":"Paris"})'
    prompt = judge_prompt("Weather in Paris?", [candidate_text("", [call]), "Sunny"])
    assert "Candidate 1:\nCalls the tool get_weather" in prompt
    assert "Answer:" in aggregator_prompt("q", ["a"]) and "tool call" not in aggregator_prompt("q", ["a"])
    structured = aggregator_prompt("q", ["a"], structured=True)
    assert "the JSON it asks for, or the tool call" in structured and "`Answer:" not in structured
