"""General tree-of-thought: user tasks as callables or templates, free-form replies, budgets, the final answer."""

from __future__ import annotations

import asyncio

from orchestray.backends import make_backend
from orchestray.config import ProviderConfig, parse_config
from orchestray.coordinators import TreeOfThoughtCoordinator, build_coordinator
from orchestray.messages import ChatRequest, Completion, Message, Span
from orchestray.provider import Provider
from orchestray.tasks import ThoughtTask, Thoughts
from orchestray.tasks.reach import check_answer, reach_puzzles
from orchestray.tasks.thought import parse_thought_value, parse_thoughts


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),))


class Scripted:
    """A model answering `reply(prompt)`; records every prompt."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    async def complete(self, request):
        prompt = request.messages[-1].text()
        self.prompts.append(prompt)
        return Completion(content=self.reply(prompt), model="m", provider="p", input_tokens=10, output_tokens=5,
                          cost=0.01, trace=Span(name="p", cost=0.01, input_tokens=10, output_tokens=5))


def test_values_read_the_way_models_say_them():
    assert parse_thought_value("It can work.\nsure") == 1.0
    assert parse_thought_value("Hard to say... Likely.") == 0.5
    assert parse_thought_value("This is impossible: 3 is too small.") == 0.0
    assert parse_thought_value("Unlikely to work") == 0.2
    assert parse_thought_value("Value: 0.7") == 0.7
    assert parse_thought_value("**Score: 8/10**") == 0.8
    assert parse_thought_value("value = 75%") == 0.75
    assert parse_thought_value("no verdict at all") == 0.0


def test_thoughts_read_from_numbered_bulleted_or_plain_lines():
    assert parse_thoughts("Here are ideas:\n1. Try x\n2) **Try y**\n- try X\n* Try z", 5) == ["Try x", "Try y", "Try z"]
    assert parse_thoughts("Step 1: a\nStep 2: b\nStep 3: c", 2) == ["a", "b"]
    assert parse_thoughts("first idea\n\nsecond idea", 3) == ["first idea", "second idea"]


# A user task in Python: reach 10 by adding 1, 2 or 3 to a running total; the model's proposals
# and values are scripted; is_solved, the value and the answer are Python callables.
def total(state: Thoughts) -> int:
    return sum(int(s.split()[-1]) for s in state.steps)


def scripted_model(prompt: str) -> str:
    if prompt.startswith("PROPOSE"):
        return "1. add 3\n2. ADD 3\n3. add 2"  # "ADD 3" is a duplicate of "add 3": merged
    if prompt.startswith("VALUE"):
        return f"Score: {prompt.count('add 3')}/4"  # more threes is better
    return "Final: 3 + 3 + 3 + ... \nAnswer: done"


def test_a_user_task_of_callables_searches_merges_duplicates_and_answers_from_the_best_path():
    task = ThoughtTask(
        propose=lambda s: f"PROPOSE after {list(s.steps)}",
        evaluate=lambda s: "VALUE " + " ".join(s.steps),
        answer="ANSWER {problem} via\n{steps}",
        is_solved=lambda s: total(s) >= 9,
        key=lambda s: (total(s), len(s.steps)),  # "add 3, add 2" is "add 2, add 3"
        k=3,
    )
    model = Scripted(scripted_model)
    tot = TreeOfThoughtCoordinator("t", {"m": model}.__getitem__, ["m"], task=task, breadth=2, depth=5, evaluations=2)
    answer = asyncio.run(tot.complete(ask("reach 9")))
    data = answer.trace.data
    assert data["solved"] and data["best_path"][-1] == "add 3 | add 3 | add 3"
    assert data["totals"]["duplicates"] >= 1 and any(n["status"] == "duplicate" for n in data["tree"])
    assert not any("ADD" in n["state"] for n in data["tree"])  # said twice in one reply: proposed once
    assert model.prompts[-1] == "ANSWER reach 9 via\n1. add 3\n2. add 3\n3. add 3"  # the template, from the best path
    assert answer.content.endswith("Answer: done") and data["final_answer"] == "model"
    assert answer.trace.children[-1].decision.startswith("final answer from the best path")
    assert answer.cost == data["totals"]["cost"]


def test_budgets_hold_with_the_final_answer_counted():
    for cap in (1, 4, 9, 17):
        model = Scripted(scripted_model)
        tot = TreeOfThoughtCoordinator("t", {"m": model}.__getitem__, ["m"], task=ThoughtTask(
            propose="PROPOSE {steps}", evaluate="VALUE {steps}"), breadth=3, depth=4, evaluations=2, max_calls=cap)
        answer = asyncio.run(tot.complete(ask("anything")))
        assert len(model.prompts) <= cap and answer.trace.provider_calls() == len(model.prompts)
    model = Scripted(scripted_model)
    tot = TreeOfThoughtCoordinator("t", {"m": model}.__getitem__, ["m"], task=ThoughtTask(
        propose="PROPOSE {steps}", evaluate="VALUE {steps}"), breadth=3, depth=4, max_cost=0.1)
    assert asyncio.run(tot.complete(ask("anything"))).cost <= 0.1 + 0.01  # overshoot at most one call


def simulated(accuracy: float) -> Provider:
    config = ProviderConfig(name="sim", kind="simulated", simulated={"accuracy": accuracy, "latency_ms": 0, "seed": 5})
    return Provider(config, make_backend(config, None))


def test_general_tree_of_thought_solves_many_more_reach_puzzles_than_one_chain():
    sim = simulated(0.8)
    puzzles = reach_puzzles(12, steps=6, seed=9)
    tot = TreeOfThoughtCoordinator("t", {"sim": sim}.__getitem__, ["sim"], breadth=3, depth=6, evaluations=2)

    async def run():
        chains = [await sim.complete(ask(p.text).with_changes(seed=s)) for p in puzzles for s in range(4)]
        trees = [await tot.complete(ask(p.text)) for p in puzzles]
        return chains, trees

    chains, trees = asyncio.run(run())
    chain_rate = sum(check_answer(p, c.content) for p, c in zip([p for p in puzzles for _ in range(4)], chains)) / len(chains)
    tree_rate = sum(check_answer(p, t.content) for p, t in zip(puzzles, trees)) / len(puzzles)
    assert tree_rate >= 0.75 and tree_rate >= 2 * chain_rate, (tree_rate, chain_rate)
    assert trees[0].trace.data["task"] == "general" and trees[0].trace.data["final_answer"] == "model"


def test_the_config_default_task_is_general():
    config = parse_config({"providers": [{"name": "s", "kind": "simulated"}],
                           "routes": {"think": {"pattern": "tree_of_thought", "providers": ["s"]}}})
    assert config.routes["think"].task == "general"
    coordinator = build_coordinator("think", config, lambda name: None)
    assert coordinator.task == "general"


def test_reach_puzzles_have_known_truth():
    from orchestray.tasks.reach import parse_puzzle, reachable

    for p in reach_puzzles(20, steps=5, seed=1):
        assert parse_puzzle(p.text) == p and reachable(p.start, p.target, p.steps)
    p = reach_puzzles(1, steps=2)[0]
    from orchestray.tasks.reach import OPERATIONS
    names = next([a, b] for a in OPERATIONS for b in OPERATIONS if OPERATIONS[b](OPERATIONS[a](p.start)) == p.target)
    assert check_answer(p, f"I did it.\nAnswer: {names[0]}, {names[1]}")
    assert not check_answer(p, f"Answer: {names[0]}")  # too few steps
    assert not check_answer(p, "no answer line")


def test_a_token_cap_holds_and_a_bad_template_is_refused():
    import pytest

    from orchestray.errors import ConfigError

    model = Scripted(scripted_model)
    tot = TreeOfThoughtCoordinator("t", {"m": model}.__getitem__, ["m"], task=ThoughtTask(
        propose="PROPOSE {steps}", evaluate="VALUE {steps}"), breadth=3, depth=4, max_tokens=200)
    answer = asyncio.run(tot.complete(ask("anything")))
    assert answer.input_tokens + answer.output_tokens <= 200 + 15  # one call's worth at most over
    bad = TreeOfThoughtCoordinator("t", {"m": model}.__getitem__, ["m"], task=ThoughtTask(propose="{problme}"))
    with pytest.raises(ConfigError, match="problme"):
        asyncio.run(bad.complete(ask("anything")))
