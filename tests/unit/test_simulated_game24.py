"""The simulated model plays the Game of 24: proposals, verdicts and chains at its profile's accuracy."""

from __future__ import annotations

import pytest

from orchestray.backends import make_backend
from orchestray.config import ProviderConfig
from orchestray.messages import ChatRequest, Message
from orchestray.policies.search import Reply, run_search
from orchestray.provider import Provider
from orchestray.simulated import SKILLS, SimProfile, SimulatedModel, arithmetic_questions, game24_skill
from orchestray.tasks import game24
from orchestray.tasks.game24 import (
    Game24State,
    check_answer,
    game24_search,
    load_puzzles,
    parse_solution,
    parse_step,
    parse_value,
    propose_prompt,
    solve_prompt,
    value_prompt,
)

PUZZLE = (4, 9, 10, 13)


def model(accuracy: float, name: str = "m") -> SimulatedModel:
    return SimulatedModel(name, SimProfile(accuracy=accuracy, latency_ms=0))


def ask(text: str, **fields) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), **fields)


def proposals(text: str, numbers) -> list[Game24State | None]:
    state = Game24State.initial(numbers)
    return [parse_step(line, state) for line in text.splitlines()]


def test_the_game_is_tried_before_the_arithmetic_its_prompts_contain():
    assert SKILLS[0] is game24_skill
    text = model(1.0).answer(ask(propose_prompt(PUZZLE))).text
    assert "Answer:" not in text  # not mistaken for "5 + 7" of the example
    steps = proposals(text, PUZZLE)
    assert len(steps) == 8 and all(steps)


def test_profile_accuracy_reaches_the_proposals():
    def valid_share(accuracy: float) -> float:
        m = model(accuracy)
        lines = [s for seed in range(40) for s in proposals(m.answer(ask(propose_prompt(PUZZLE), seed=seed)).text, PUZZLE)]
        return sum(s is not None for s in lines) / len(lines)

    assert valid_share(1.0) == 1.0
    assert valid_share(0.0) == 0.0
    assert 0.4 < valid_share(0.6) < 0.8


def test_verdicts_follow_the_truth_at_the_profiles_accuracy():
    perfect = model(1.0)
    assert parse_value(perfect.answer(ask(value_prompt((4, 6)))).text) == 20.0  # 4 * 6
    assert parse_value(perfect.answer(ask(value_prompt((1, 1, 1)))).text) == 0.001
    noisy = model(0.7)
    right = sum(parse_value(noisy.answer(ask(value_prompt((4, 6)), seed=s, temperature=0.7)).text) == 20.0
                for s in range(300))
    assert 0.6 < right / 300 < 0.8  # independent draws per seed, right about 70% of the time


def test_chains_use_each_number_once_and_a_perfect_model_never_slips():
    text = model(1.0).answer(ask(solve_prompt(PUZZLE))).text
    expression = parse_solution(text)
    value, used = game24.evaluate_expression(expression)
    assert sorted(used) == sorted(PUZZLE) and text.count("(left:") == 3
    wrong = model(0.0).answer(ask(solve_prompt(PUZZLE))).text
    assert not check_answer(parse_solution(wrong), PUZZLE)


def test_other_questions_still_reach_the_other_skills():
    m = model(1.0)
    question = arithmetic_questions(1, seed=3)[0]
    assert m.answer(question.request()).text.endswith(f"Answer: {question.truth}")
    assert "Simulated reply" in m.answer(ask("Game of 24 is fun, tell me about it")).text


async def test_a_simulated_provider_plays_at_its_configured_accuracy():
    config = ProviderConfig(name="sim", kind="simulated", simulated={"accuracy": 1.0, "latency_ms": 0})
    provider = Provider(config, make_backend(config, None))
    answer = await provider.complete(ask(propose_prompt(PUZZLE)))
    assert all(proposals(answer.content, PUZZLE))


def test_search_with_the_simulated_model_beats_one_chain_of_thought():
    m = model(0.8)
    puzzles = load_puzzles()[::5]  # 20 puzzles across the test set

    def play(call):
        answer = m.answer(ask(call.prompt, seed=call.sample, temperature=0.7))
        return Reply(answer.text, answer.input_tokens, answer.output_tokens)

    chains = sum(check_answer(parse_solution(m.answer(ask(solve_prompt(p.numbers))).text), p.numbers) for p in puzzles)
    searched = sum(run_search(game24_search(p.numbers), play).solved for p in puzzles)
    assert searched >= 3 * max(chains, 1)


@pytest.mark.parametrize("prompt", [propose_prompt(PUZZLE), value_prompt(PUZZLE), solve_prompt(PUZZLE)])
def test_game_replies_are_deterministic_per_request(prompt):
    m = model(0.7)
    assert m.answer(ask(prompt, seed=1)) == m.answer(ask(prompt, seed=1))
