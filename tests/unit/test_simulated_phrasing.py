"""The simulated model's free-form word-problem answers: many phrasings, all readable."""

from __future__ import annotations

import re

from orchestray.policies.confidence import parse_confidence
from orchestray.policies.extraction import extract_answer, extract_number
from orchestray.simulated import DEFAULT_PROFILES, SimulatedModel, word_questions


def _style(text: str) -> str:
    for name, pattern in [("json", r"^\{"), ("boxed", r"\\boxed"), ("bold", r"^\*\*|\n\*\*"),
                          ("final", r"^Final answer"), ("is", r"The answer is"), ("marker", r"\nAnswer:")]:
        if re.search(pattern, text):
            return name
    return "last line"


def test_word_problems_come_in_many_phrasings_that_all_read_back():
    model = SimulatedModel("sim-large", DEFAULT_PROFILES["sim-large"])
    styles, right, said_confidence = set(), 0, 0
    questions = word_questions(60, seed=3)
    for q in questions:
        for sample in range(4):
            reply = model.answer(q.request(temperature=0.7), sample=sample).text
            styles.add(_style(reply))
            number = extract_number(reply)
            assert extract_answer(reply) == number, reply  # the answer extractor reads the same number
            right += number == q.truth
            said_confidence += parse_confidence(reply) is not None
    assert len(styles) >= 6
    assert said_confidence == 4 * len(questions)  # every reply states it, in its own words
    assert right >= 0.85 * 4 * len(questions)


def test_without_a_request_for_confidence_none_is_stated():
    model = SimulatedModel("sim-small", DEFAULT_PROFILES["sim-small"])
    for q in word_questions(20, ask_confidence=False):
        assert parse_confidence(model.answer(q.request()).text) is None
