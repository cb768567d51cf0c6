"""The simulated model: deterministic, as accurate as its profile, honest about its confidence."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter

import pytest

from orchestray.messages import ChatRequest, Message, estimate_tokens
from orchestray.simulated import (
    DEFAULT_PROFILES,
    SKILLS,
    Attempt,
    SimProfile,
    SimulatedModel,
    arithmetic_questions,
    choice_questions,
    evaluate,
    find_expression,
    generic_skill,
)

ANSWER = re.compile(r"Answer:\s*(\S+)")
CONFIDENCE = re.compile(r"Confidence:\s*([0-9.]+)")
FAST = SimProfile(accuracy=0.7, latency_ms=2.0, latency_sigma=0.5)


def ask(text: str, *, system: str | None = None, **fields) -> ChatRequest:
    messages = ((Message("system", system),) if system else ()) + (Message("user", text),)
    return ChatRequest(messages=messages, **fields)


def final_answer(text: str) -> str | None:
    match = ANSWER.search(text)
    return match.group(1) if match else None


def accuracy(model: SimulatedModel, questions, **fields) -> float:
    right = sum(final_answer(model.answer(q.request(**fields)).text) == q.truth for q in questions)
    return right / len(questions)


# --- determinism ---------------------------------------------------------------------------------


def test_same_request_gives_same_answer_and_latency():
    model = SimulatedModel("m", FAST, seed=7)
    request = ask("What is 37 + 48?", temperature=0.7, seed=3)
    assert model.answer(request) == model.answer(request)
    assert SimulatedModel("m", FAST, seed=7).answer(request) == model.answer(request)


def test_greedy_requests_are_deterministic_from_the_prompt():
    model = SimulatedModel("m", FAST)
    assert model.answer(ask("What is 2 + 2?")) == model.answer(ask("What is 2 + 2?", temperature=0))


def test_request_seed_and_sample_give_independent_draws():
    model = SimulatedModel("m", FAST)
    question = arithmetic_questions(1, seed=5)[0]
    by_seed = {model.answer(question.request(seed=i, temperature=1.0)).latency_s for i in range(20)}
    by_sample = {model.answer(question.request(), sample=i).latency_s for i in range(20)}
    assert len(by_seed) == 20
    assert len(by_sample) == 20


def test_models_with_different_names_draw_independent_latencies():
    small = SimulatedModel("a", FAST)
    other = SimulatedModel("b", FAST)
    questions = arithmetic_questions(200, seed=1)
    a = [small.answer(q.request()).latency_s for q in questions]
    b = [other.answer(q.request()).latency_s for q in questions]
    a_wins = sum(x < y for x, y in zip(a, b))
    assert 60 < a_wins < 140  # neither model is always first
    assert abs(statistics.correlation(a, b)) < 0.2


# --- latency and tokens --------------------------------------------------------------------------


def test_latency_is_lognormal_around_the_median():
    model = SimulatedModel("m", SimProfile(latency_ms=100.0, latency_sigma=0.5))
    latencies = [model.answer(q.request()).latency_s for q in arithmetic_questions(2000, seed=2)]
    assert statistics.median(latencies) == pytest.approx(0.100, rel=0.08)
    logs = [math.log(x) for x in latencies]
    assert statistics.stdev(logs) == pytest.approx(0.5, rel=0.1)
    assert max(latencies) > 3 * statistics.median(latencies)  # a heavy tail


def test_latency_grows_with_output_tokens_and_zero_means_instant():
    instant = SimulatedModel("m", SimProfile(latency_ms=0.0, latency_sigma=0.5))
    assert instant.answer(ask("What is 1 + 1?")).latency_s == 0.0
    per_token = SimulatedModel("m", SimProfile(latency_ms=0.0, latency_sigma=0.0, ms_per_output_token=10.0))
    answer = per_token.answer(ask("What is 1 + 1?"))
    assert answer.latency_s == pytest.approx(answer.output_tokens * 0.010)


def test_token_counts_follow_estimate_tokens():
    model = SimulatedModel("m", FAST)
    request = ask("What is 12 * 12?", system="You are terse.")
    answer = model.answer(request)
    assert answer.input_tokens == estimate_tokens("You are terse.\nWhat is 12 * 12?")
    assert answer.output_tokens == estimate_tokens(answer.text)


def test_max_tokens_truncates_with_finish_reason_length():
    model = SimulatedModel("m", FAST)
    full = model.answer(ask("Tell me about actors."))
    cut = model.answer(ask("Tell me about actors.", max_tokens=5))
    assert cut.finish_reason == "length"
    assert cut.output_tokens == 5
    assert full.text.startswith(cut.text)
    roomy = model.answer(ask("Tell me about actors.", max_tokens=10_000))
    assert roomy.finish_reason == "stop" and roomy.text == full.text


def test_stop_sequence_ends_the_text():
    model = SimulatedModel("m", SimProfile(accuracy=1.0, latency_ms=0))
    answer = model.answer(ask("What is 2 + 3?", stop=("\nAnswer:",)))
    assert answer.finish_reason == "stop" and answer.stop_sequence == "\nAnswer:"
    assert "Answer:" not in answer.text and answer.text.endswith("5.")


# --- arithmetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("37 + 48", 85),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("(12 * 7) - 5", 79),
        ("3 - 10", -7),
        ("-5 + 2", -3),
        ("2 * -3", -6),
        ("10 - 2 - 3", 5),
        ("((1 + 2) * (3 + 4)) - 30", -9),
        ("- (4 - 6)", 2),
    ],
)
def test_evaluate_respects_precedence_parentheses_and_signs(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("bad", ["2 +", "(1 + 2", "1 + 2)", "2 ** 3", "__import__('os')", "", "1 / 2", "9" * 300])
def test_evaluate_rejects_anything_else(bad):
    with pytest.raises(ValueError):
        evaluate(bad)


def test_find_expression_prefers_the_question_over_other_numbers():
    assert find_expression("Question 3: What is 4 + 5? Give a confidence (0-1).") == ("4 + 5", 9)
    assert find_expression("Compute (12 * 7) - 5.") == ("(12 * 7) - 5", 79)
    assert find_expression("Tell me a story about 3 dogs.") is None


def test_a_perfect_model_answers_arithmetic_in_the_fixed_format():
    model = SimulatedModel("m", SimProfile(accuracy=1.0, latency_ms=0))
    text = model.answer(ask("Compute (12 * 7) - 5.")).text
    assert text.splitlines()[-1] == "Answer: 79"
    assert "The answer is 79." in text
    assert final_answer(model.answer(ask("What is 3 - 10?")).text) == "-7"


def test_wrong_arithmetic_answers_are_near_the_truth():
    model = SimulatedModel("m", SimProfile(accuracy=0.0, latency_ms=0))
    for question in arithmetic_questions(200, seed=4):
        given = int(final_answer(model.answer(question.request()).text))
        assert given != int(question.truth)
        assert abs(given - int(question.truth)) <= 10


def test_generators_truth_is_correct():
    for question in arithmetic_questions(300, seed=9):
        expression, value = find_expression(question.prompt)
        assert str(value) == question.truth
    for question in choice_questions(300, seed=9):
        options = dict(re.findall(r"^([A-E])\) (-?\d+)$", question.prompt, re.M))
        _, value = find_expression(question.prompt.split("\n")[0])
        assert options[question.truth] == str(value)
        assert sorted(options) == ["A", "B", "C", "D"]
        assert len(set(options.values())) == 4
    assert arithmetic_questions(50, seed=1) == arithmetic_questions(50, seed=1)
    assert arithmetic_questions(50, seed=1) != arithmetic_questions(50, seed=2)


# --- multiple choice -----------------------------------------------------------------------------


def test_choice_questions_are_answered_with_a_letter():
    model = SimulatedModel("m", SimProfile(accuracy=1.0, latency_ms=0))
    text = model.answer(ask("What is 7 * 8?\nA) 54\nB) 56\nC) 58\nD) 60")).text
    assert final_answer(text) == "B"
    inline = model.answer(ask("What is 7 * 8? A) 54 B) 58 C) 56")).text
    assert final_answer(inline) == "C"


def test_wrong_choices_pick_another_letter():
    model = SimulatedModel("m", SimProfile(accuracy=0.0, latency_ms=0))
    letters = Counter()
    for question in choice_questions(200, seed=3):
        letter = final_answer(model.answer(question.request()).text)
        assert letter in "ABCD" and letter != question.truth
        letters[letter] += 1
    assert len(letters) == 4


# --- accuracy, difficulty, voting ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_PROFILES))
def test_accuracy_matches_the_profile(name):
    model = SimulatedModel(name, DEFAULT_PROFILES[name], seed=1)
    measured = accuracy(model, arithmetic_questions(2000, seed=11))
    assert measured == pytest.approx(DEFAULT_PROFILES[name].accuracy, abs=0.035)
    measured = accuracy(model, choice_questions(2000, seed=12))
    assert measured == pytest.approx(DEFAULT_PROFILES[name].accuracy, abs=0.035)


def test_majority_of_five_samples_beats_one_by_ten_points():
    model = SimulatedModel("sim-small", DEFAULT_PROFILES["sim-small"])
    questions = arithmetic_questions(500, seed=13)
    single = accuracy(model, questions)
    voted = 0
    for q in questions:
        votes = Counter(final_answer(model.answer(q.request(seed=i, temperature=0.7)).text) for i in range(5))
        voted += votes.most_common(1)[0][0] == q.truth
    assert voted / len(questions) >= single + 0.10


def test_shared_mistakes_agree_across_samples_and_models():
    always = SimProfile(accuracy=0.0, latency_ms=0, shared_mistake=1.0)
    never = SimProfile(accuracy=0.0, latency_ms=0, shared_mistake=0.0)
    question = arithmetic_questions(1, seed=17)[0]
    shared = {
        final_answer(SimulatedModel(name, always).answer(question.request(seed=i)).text)
        for name in ("a", "b")
        for i in range(10)
    }
    own = {final_answer(SimulatedModel("a", never).answer(question.request(seed=i)).text) for i in range(10)}
    assert len(shared) == 1 and question.truth not in shared
    assert len(own) > 3


def test_difficulty_makes_some_questions_harder_for_every_model():
    questions = arithmetic_questions(400, seed=14)
    small = SimulatedModel("sim-small", DEFAULT_PROFILES["sim-small"])
    medium = SimulatedModel("sim-medium", DEFAULT_PROFILES["sim-medium"])
    hardness = [small.p_correct(q.prompt) for q in questions]
    assert max(hardness) - min(hardness) > 0.2
    assert statistics.correlation(hardness, [medium.p_correct(q.prompt) for q in questions]) > 0.99


# --- confidence ----------------------------------------------------------------------------------


def test_confidence_is_reported_only_when_asked():
    model = SimulatedModel("m", FAST)
    assert "Confidence" not in model.answer(ask("What is 1 + 2?")).text
    text = model.answer(ask("What is 1 + 2?", system="State your confidence from 0 to 1.")).text
    assert CONFIDENCE.search(text)
    assert final_answer(text) is not None


def test_confidence_separates_right_from_wrong_at_threshold_08():
    model = SimulatedModel("m", SimProfile(accuracy=0.7, latency_ms=0))
    accepted = {True: 0, False: 0}
    seen = {True: 0, False: 0}
    for q in arithmetic_questions(2000, seed=15):
        text = model.answer(ask(q.prompt, system="Answer, then give your confidence.")).text
        right = final_answer(text) == q.truth
        seen[right] += 1
        accepted[right] += float(CONFIDENCE.search(text).group(1)) >= 0.8
    assert accepted[True] / seen[True] > 0.75  # most right answers pass a 0.8 cascade
    assert accepted[False] / seen[False] < 0.1  # most wrong ones escalate


def test_uninformative_confidence_is_a_profile_setting():
    blind = SimProfile(accuracy=0.7, latency_ms=0, confidence_if_correct=0.6, confidence_if_wrong=0.6)
    model = SimulatedModel("m", blind)
    by_outcome: dict[bool, list[float]] = {True: [], False: []}
    for q in arithmetic_questions(1000, seed=16):
        text = model.answer(ask(q.prompt + " Give a confidence.")).text
        by_outcome[final_answer(text) == q.truth].append(float(CONFIDENCE.search(text).group(1)))
    assert abs(statistics.mean(by_outcome[True]) - statistics.mean(by_outcome[False])) < 0.05


# --- everything else -----------------------------------------------------------------------------


def test_other_prompts_get_a_generic_reply_of_moderate_length():
    model = SimulatedModel("sim-medium", FAST)
    answer = model.answer(ask("Explain the actor model."))
    assert answer.text.startswith("Simulated reply from sim-medium:")
    assert 20 <= answer.output_tokens <= 200
    assert answer.finish_reason == "stop"


def test_a_skill_can_be_inserted_ahead_of_the_defaults():
    def shout(attempt: Attempt) -> str | None:
        if attempt.question.startswith("SHOUT"):
            return f"{attempt.question.upper()}!\nAnswer: {'yes' if attempt.correct else 'no'}"
        return None

    model = SimulatedModel("m", SimProfile(accuracy=1.0, latency_ms=0), skills=[shout, *SKILLS])
    assert model.answer(ask("SHOUT hello")).text == "SHOUT HELLO!\nAnswer: yes"
    assert final_answer(model.answer(ask("What is 1 + 1?")).text) == "2"
    assert SKILLS[-1] is generic_skill


@pytest.mark.parametrize(
    "field",
    [
        {"accuracy": 1.5},
        {"latency_ms": -1},
        {"difficulty_weight": 2},
        {"confidence_if_correct": 1.0},
        {"confidence_concentration": 0},
    ],
)
def test_profile_rejects_impossible_settings(field):
    with pytest.raises(ValueError):
        SimProfile(**field)
