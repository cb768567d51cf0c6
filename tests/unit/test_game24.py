import random
from fractions import Fraction

import pytest

from orchestray.policies.search import run_search
from orchestray.tasks import game24
from orchestray.tasks.game24 import (
    Game24State,
    Game24Task,
    attempt_solution,
    can_reach_24,
    check_answer,
    game24_search,
    judge_state,
    load_puzzles,
    parse_game24_prompt,
    parse_solution,
    parse_step,
    parse_value,
    propose_steps,
    solve,
)


def test_the_test_set_is_100_puzzles_ranked_901_to_1000():
    puzzles = load_puzzles()
    assert len(puzzles) == 100
    assert [p.rank for p in puzzles] == list(range(901, 1001))
    assert puzzles[0].numbers == (4, 5, 6, 10) and puzzles[-1].text == "4 9 10 13"
    assert len(load_puzzles(ranks=None)) == 1362


def test_every_test_puzzle_is_solvable():
    for puzzle in load_puzzles():
        assert check_answer(solve(puzzle.numbers), puzzle.numbers), puzzle


@pytest.mark.parametrize("numbers", [(4, 9, 10, 13), (1, 5, 5, 5), (3, 3, 8, 8), (1, 1, 4, 6)])
def test_solver_finds_an_exact_answer(numbers):
    expression = solve(numbers)
    assert check_answer(expression, numbers)
    assert can_reach_24(numbers)


@pytest.mark.parametrize("numbers", [(1, 1, 1, 1), (1, 1, 1, 2), (5,), ()])
def test_solver_knows_when_there_is_no_answer(numbers):
    assert solve(numbers) is None and not can_reach_24(numbers)


def test_reachability_of_partial_states():
    assert can_reach_24([24]) and can_reach_24([10, 14]) and can_reach_24([Fraction(1, 5), 5, 5])
    assert not can_reach_24([1, 2, 3][:2])


@pytest.mark.parametrize(
    "expression, ok",
    [
        ("(13 - 9) * (10 - 4)", True),
        ("(13 - 9) * (10 - 4) * 1", False),  # a number not in the puzzle
        ("13 * 9 - 10 - 4", False),  # wrong value
        ("(10 - 4) * 4", False),  # 4 used twice, 9 and 13 not at all
        ("__import__('os').getcwd()", False),
        ("24 // 1", False),
        ("", False),
        (None, False),
    ],
)
def test_check_answer(expression, ok):
    assert check_answer(expression, (4, 9, 10, 13)) is ok


START = Game24State.initial((4, 8, 10, 13))


@pytest.mark.parametrize(
    "line",
    [
        "4 + 8 = 12 (left: 10 12 13)",
        "1. 13 - 10 = 3 (left: 3 4 8)",
        "- 8 / 4 = 2 (left: 2 10 13)",
        "10 / 4 = 2.5 (left: 2.5 8 13)",
        "13 / 4 = 13/4 (left: 8 10 13/4)",
        "8*4=32 (left: 32 10 13)",
        "13 x 8 = 104 (left: 10 4 104)",
    ],
)
def test_valid_steps_are_accepted(line):
    child = parse_step(line, START)
    assert child is not None
    assert len(child.numbers) == 3 and len(child.steps) == 1


@pytest.mark.parametrize(
    "line",
    [
        "4 + 8 = 13 (left: 10 13 13)",  # wrong arithmetic
        "4 + 7 = 11 (left: 8 10 11 13)",  # 7 is not available
        "4 + 4 = 8 (left: 8 8 10 13)",  # only one 4
        "4 + 8 = 12 (left: 10 12)",  # the left list forgot 13
        "4 + 8 = 12 (left: 10 12 13 4)",  # the left list kept 4
        "4 + 8 = 12 (left: 10 11 13)",  # the left list miscopied the result
        "13 / 0 = 0 (left: 0 4 8 10)",
        "4 + 8 = 12",  # no left list
        "I think we should add 4 and 8",
    ],
)
def test_invalid_steps_are_dropped(line):
    assert parse_step(line, START) is None


def test_task_parses_only_the_valid_proposals():
    text = "4 + 8 = 12 (left: 10 12 13)\n4 + 8 = 13 (left: 10 13 13)\nrubbish\n13 - 10 = 3 (left: 3 4 8)"
    children = Game24Task((4, 8, 10, 13)).parse_proposals(text, START)
    assert [c.left for c in children] == ["10 12 13", "3 4 8"]


def test_a_path_of_three_steps_solves_the_puzzle():
    state = Game24State.initial((4, 9, 10, 13))
    for line in ("13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 4 6)", "4 * 6 = 24 (left: 24)"):
        state = parse_step(line, state)
        assert state is not None
    task = Game24Task((4, 9, 10, 13))
    assert task.is_solution(state)
    assert check_answer(state.expression, (4, 9, 10, 13))
    assert task.state_key(state) == (Fraction(24),)


def test_one_number_that_is_not_24_is_a_dead_end():
    task = Game24Task((1, 2, 3, 4))
    dead = Game24State((Fraction(1),) * 4, (Fraction(23),), ("23",))
    assert not task.is_solution(dead) and task.known_value(dead) == 0.0
    assert task.known_value(START) is None


@pytest.mark.parametrize(
    "reply, value",
    [("10 + 14 = 24\nsure", 20.0), ("maybe\nlikely", 1.0), ("too small\nimpossible", 0.001),
     ("sure? no: impossible", 0.001), ("no idea", 0.0)],
)
def test_value_parser(reply, value):
    assert parse_value(reply) == value


def test_the_three_prompts_are_recognised():
    task = Game24Task((4, 9, 10, 13))
    propose = parse_game24_prompt(task.propose_prompt(task.root()))
    value = parse_game24_prompt(task.value_prompt(parse_step("13 - 9 = 4 (left: 4 4 10)", task.root())))
    solve_ = parse_game24_prompt(game24.solve_prompt((4, 9, 10, 13)))
    assert propose.kind == "propose" and propose.numbers == (4, 9, 10, 13)
    assert value.kind == "value" and value.numbers == (4, 4, 10)
    assert solve_.kind == "solve"
    assert parse_game24_prompt("What is 4 + 8?") is None
    assert not game24.is_game24_prompt("Numbers: 1 2 3 4")
    for prompt in (task.propose_prompt(task.root()), task.value_prompt(task.root()), game24.solve_prompt((1, 2, 3, 4))):
        assert "confidence" not in prompt.lower()  # the simulated model would append one


def test_fractions_survive_the_prompt_round_trip():
    state = parse_step("13 / 4 = 13/4 (left: 8 10 13/4)", START)
    assert parse_game24_prompt(game24.value_prompt(state.numbers)).numbers == (8, 10, Fraction(13, 4))


def test_an_accurate_model_proposes_only_valid_steps():
    rng = random.Random(0)
    lines = propose_steps((4, 9, 10, 13), rng, accuracy=1.0, k=8)
    assert len(lines) == 8 and len(set(lines)) == 8
    assert all(parse_step(line, Game24State.initial((4, 9, 10, 13))) for line in lines)


def test_an_inaccurate_model_proposes_invalid_steps():
    rng = random.Random(0)
    lines = propose_steps((4, 9, 10, 13), rng, accuracy=0.0, k=8)
    assert len(lines) == 8
    assert not any(parse_step(line, Game24State.initial((4, 9, 10, 13))) for line in lines)


def test_proposals_stop_when_steps_run_out():
    assert len(propose_steps((4, 6), random.Random(0), 1.0, k=8)) == 5  # 10, 24, 2, 3/2, 2/3


def test_judging_follows_the_truth_at_full_accuracy_and_errs_otherwise():
    rng = random.Random(0)
    assert judge_state((4, 6), rng, 1.0) == "sure"
    assert judge_state((1, 1, 1), rng, 1.0) == "impossible"
    assert all(judge_state((4, 6), rng, 0.0) != "sure" for _ in range(20))
    verdicts = [judge_state((4, 6), rng, 0.7) for _ in range(1000)]
    assert 0.6 < verdicts.count("sure") / 1000 < 0.8


def test_reply_answers_every_game_prompt_and_nothing_else():
    rng = random.Random(1)
    assert game24.reply("What is 2 + 2?", rng, 1.0) is None
    assert parse_value(game24.reply(game24.value_prompt((4, 6)), rng, 1.0)) == 20.0
    assert game24.reply(game24.propose_prompt((4, 6)), rng, 1.0).count("(left:") == 5
    assert parse_solution(game24.reply(game24.solve_prompt((4, 6)), rng, 1.0)) is not None


def test_a_chain_of_thought_is_well_formed_and_slips_break_it():
    numbers = (4, 9, 10, 13)
    text = attempt_solution(numbers, random.Random(3), accuracy=1.0)
    expression = parse_solution(text)
    value, used = game24.evaluate_expression(expression)
    assert sorted(used) == sorted(Fraction(n) for n in numbers)  # each number once, whatever the value
    assert text.count("(left:") == 3
    wrong = attempt_solution(numbers, random.Random(3), accuracy=0.0)
    assert not check_answer(parse_solution(wrong), numbers)


def _simulated(accuracy, seed):
    def ask(call):
        return game24.reply(call.prompt, random.Random(f"{seed}:{call.prompt}:{call.sample}"), accuracy)

    return ask


SAMPLE = load_puzzles()[::8]  # 13 puzzles across the test set


def test_beam_search_with_an_accurate_model_solves_most_puzzles():
    solved = 0
    for puzzle in SAMPLE:
        result = run_search(game24_search(puzzle.numbers), _simulated(1.0, puzzle.rank))
        if result.solved:
            assert check_answer(result.best.state.expression, puzzle.numbers)
            assert len(result.path) == 4
            solved += 1
        assert result.value_calls <= 3 * (8 + 5 * 8)  # values of levels 1 and 2 at most
    assert solved > len(SAMPLE) / 2


def test_one_chain_of_thought_rarely_solves_and_search_does_several_times_better():
    chains = sum(
        check_answer(parse_solution(attempt_solution(p.numbers, random.Random(f"{p.rank}:{i}"), 0.7)), p.numbers)
        for p in SAMPLE
        for i in range(5)
    )
    searched = sum(run_search(game24_search(p.numbers), _simulated(0.7, p.rank)).solved for p in SAMPLE)
    assert chains / (5 * len(SAMPLE)) < 0.05
    assert searched >= 3 * max(chains / 5, 1)


@pytest.mark.parametrize(
    "text, numbers",
    [
        ("4 9 10 13", (4, 9, 10, 13)),
        ("Use 4 9 10 13 to make 24.", (4, 9, 10, 13)),
        ("Game of 24: 1, 5, 5, 5", (1, 5, 5, 5)),
        ("Solve this.\nNumbers: 3 3 8 8", (3, 3, 8, 8)),
        ("Make 24 from 4 and 9", None),
    ],
)
def test_puzzle_from_a_request(text, numbers):
    assert game24.puzzle_from_text(text) == numbers


def test_task_registry_and_answer_text():
    from orchestray.errors import ConfigError, RequestError
    from orchestray.tasks import task_for

    task = task_for("game24", "Use 4 9 10 13 to make 24")
    state = task.root()
    for line in ("13 - 9 = 4 (left: 4 4 10)", "10 - 4 = 6 (left: 4 6)", "4 * 6 = 24 (left: 24)"):
        state = parse_step(line, state)
    assert check_answer(parse_solution(task.answer(state)), (4, 9, 10, 13))
    assert "No solution" in task.answer(parse_step("13 - 9 = 4 (left: 4 4 10)", task.root()))
    with pytest.raises(RequestError):
        task_for("game24", "hello")
    with pytest.raises(ConfigError):
        task_for("sudoku", "1 2 3 4")
