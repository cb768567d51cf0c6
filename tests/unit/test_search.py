import asyncio

import pytest

from orchestray.policies.search import BeamSearch, Reply, run_search, run_search_async


class Letters:
    """States are strings; a reply to "propose S" lists letters to append; "value S" is a number."""

    def __init__(self, goal=None, key=lambda s: s):
        self.goal, self.key = goal, key

    def propose_prompt(self, s):
        return f"propose {s}"

    def parse_proposals(self, text, s):
        return [s + c for c in text.split()]

    def value_prompt(self, s):
        return f"value {s}"

    def parse_value(self, text):
        return float(text)

    def is_solution(self, s):
        return s == self.goal

    def state_key(self, s):
        return self.key(s)


class FakeModel:
    def __init__(self, children, values, cost=0.0, tokens=0, fail=()):
        self.children, self.values = children, values
        self.cost, self.tokens, self.fail = cost, tokens, set(fail)
        self.calls = []

    def __call__(self, call):
        self.calls.append(call)
        if call.prompt in self.fail:
            raise RuntimeError("provider down")
        kind, _, state = call.prompt.partition(" ")
        text = self.children.get(state, "") if kind == "propose" else str(self.values.get(state, 0.0) + call.sample)
        return Reply(text, input_tokens=self.tokens, output_tokens=self.tokens, cost=self.cost)

    def prompts(self, kind):
        return [c.prompt for c in self.calls if c.kind == kind]


WIDE = {"": "a b c d e", "a": "x", "b": "y z", "c": "w", "d": "v", "e": "u"}
VALUES = {"a": 1, "b": 5, "c": 3, "d": 4, "e": 2, "by": 1, "bz": 9, "dv": 2}


def test_beam_keeps_the_top_breadth_states_per_level():
    model = FakeModel(WIDE, VALUES)
    search = BeamSearch(Letters(), "", breadth=2, depth=2, evaluations=1)
    first = search.next_batch()
    assert first.kind == "propose" and [c.prompt for c in first.calls] == ["propose "]
    search.submit(first, [model(c) for c in first.calls])
    values = search.next_batch()
    assert values.kind == "value" and len(values.calls) == 5
    search.submit(values, [model(c) for c in values.calls])
    second = search.next_batch()
    # only the two best of level 1 (b = 5, d = 4) are expanded, best first
    assert [c.prompt for c in second.calls] == ["propose b", "propose d"]
    search.submit(second, [model(c) for c in second.calls])
    result = run_search(search, model)
    status = {n.state: n.status for n in result.nodes}
    assert status["b"] == status["d"] == "kept"
    assert status["a"] == status["c"] == status["e"] == "dropped"
    assert result.best.state == "bz" and result.states == ["", "b", "bz"]
    assert result.stopped_by == "depth" and result.levels == 2


def test_a_state_is_valued_by_the_sum_of_its_n_evaluations():
    model = FakeModel({"": "a"}, {"a": 1.0})
    result = run_search(BeamSearch(Letters(), "", depth=1, evaluations=3), model)
    node = result.nodes[1]
    assert node.value == pytest.approx(1 + 2 + 3)  # value + sample 0, 1, 2
    assert [c.sample for c in model.calls if c.kind == "value"] == [0, 1, 2]
    assert result.value_calls == 3 and result.propose_calls == 1


ANAGRAMS = {"": "a b", "a": "b", "b": "a c"}


def test_duplicate_states_are_pruned():
    model = FakeModel(ANAGRAMS, {"a": 1, "b": 2, "ba": 3, "bc": 4})
    search = BeamSearch(Letters(key=lambda s: "".join(sorted(s))), "", breadth=5, depth=2, evaluations=2)
    result = run_search(search, model)
    assert result.duplicates == 1
    duplicate = next(n for n in result.nodes if n.status == "duplicate")
    # b (valued higher) was expanded first, so "ba" came first and "ab" is its duplicate
    assert duplicate.state == "ab" and duplicate.value is None
    assert "value ab" not in model.prompts("value")
    assert result.value_calls == 2 * 4  # a, b, ba, bc: two evaluations each


def test_a_state_seen_twice_is_valued_once():
    model = FakeModel(ANAGRAMS, {"a": 1, "b": 2, "ab": 3, "ba": 3, "bc": 4})
    search = BeamSearch(Letters(key=lambda s: "".join(sorted(s))), "", depth=2, evaluations=2, dedupe=False)
    result = run_search(search, model)
    twins = [n for n in result.nodes if n.state in ("ab", "ba")]
    assert [n.value for n in twins] == [3 + 4, 3 + 4]
    assert result.cache_hits == 1
    assert result.value_calls == 2 * 4


def test_a_shared_cache_values_states_once_across_searches():
    cache = {}
    first = run_search(BeamSearch(Letters(), "", depth=2, cache=cache), FakeModel(WIDE, VALUES))
    model = FakeModel(WIDE, VALUES)
    again = run_search(BeamSearch(Letters(), "", depth=2, cache=cache), model)
    assert first.value_calls > 0
    assert again.value_calls == 0 and again.cache_hits == first.value_calls // 3
    assert again.best.state == first.best.state


def test_a_solution_ends_the_search_without_valuing_it():
    model = FakeModel(WIDE, VALUES)
    result = run_search(BeamSearch(Letters(goal="by"), "", breadth=2, depth=3, evaluations=1), model)
    assert result.solved and result.stopped_by == "solution"
    assert result.states == ["", "b", "by"]
    assert result.best.value is None and result.best.status == "solution"
    assert result.value_calls == 5  # level 1 only
    assert result.levels == 2


def test_a_root_that_is_already_solved_needs_no_call():
    result = run_search(BeamSearch(Letters(goal=""), ""), FakeModel({}, {}))
    assert result.solved and result.calls == 0


def test_call_cap_stops_the_search_in_whole_states():
    model = FakeModel(WIDE, VALUES)
    result = run_search(BeamSearch(Letters(), "", depth=3, evaluations=2, max_calls=4), model)
    # 1 proposal, then 3 calls left: one state's 2 evaluations, not half of another's
    assert result.calls == 3 and len(model.calls) == 3
    assert result.stopped_by == "max_calls"
    assert [n.status for n in result.nodes[1:]].count("unvalued") == 4


def test_cost_cap_stops_the_search():
    model = FakeModel(WIDE, VALUES, cost=1.0)
    result = run_search(BeamSearch(Letters(), "", breadth=2, depth=3, evaluations=1, max_cost=7.5), model)
    assert result.cost <= 7.5 and result.stopped_by == "max_cost"
    assert result.calls == 7


def test_token_cap_stops_the_search():
    model = FakeModel(WIDE, VALUES, tokens=50)  # 100 tokens a call
    result = run_search(BeamSearch(Letters(), "", breadth=2, depth=3, evaluations=1, max_tokens=450), model)
    assert result.input_tokens + result.output_tokens <= 450
    assert result.stopped_by == "max_tokens"


def test_failed_calls_do_not_end_the_search():
    model = FakeModel(WIDE, VALUES, fail={"value b"})
    result = run_search(BeamSearch(Letters(), "", breadth=1, depth=2, evaluations=1), model)
    assert result.failed_calls == 1
    assert next(n for n in result.nodes if n.state == "b").status == "unvalued"
    assert result.states == ["", "d", "dv"]  # b failed, d was next best


def test_no_proposals_ends_the_search():
    result = run_search(BeamSearch(Letters(), "", depth=3), FakeModel({}, {}))
    assert result.stopped_by == "no_proposals" and not result.solved
    assert result.best.state == ""


def test_the_tree_links_every_node_to_its_parent():
    result = run_search(BeamSearch(Letters(), "", breadth=2, depth=2, evaluations=1), FakeModel(WIDE, VALUES))
    tree = result.tree()
    assert tree[0]["parent"] is None and tree[0]["status"] == "root"
    for node in tree[1:]:
        assert tree[node["parent"]]["depth"] == node["depth"] - 1


def test_batches_must_be_answered_in_turn():
    search = BeamSearch(Letters(), "")
    batch = search.next_batch()
    with pytest.raises(RuntimeError):
        search.next_batch()
    with pytest.raises(ValueError):
        search.submit(batch, [])
    search.submit(batch, ["a"])
    with pytest.raises(RuntimeError):
        search.submit(batch, ["a"])


@pytest.mark.parametrize("option", [{"breadth": 0}, {"evaluations": 0}, {"max_calls": 0}, {"max_cost": -1.0}])
def test_bad_settings(option):
    with pytest.raises(ValueError):
        BeamSearch(Letters(), "", **option)


async def test_async_driver_sends_each_level_all_at_once():
    model = FakeModel(WIDE, VALUES)
    in_flight, widest = 0, []

    async def ask(call):
        nonlocal in_flight
        in_flight += 1
        await asyncio.sleep(0)
        widest.append(in_flight)
        in_flight -= 1
        if call.prompt == "value e":
            raise RuntimeError("one provider failed")
        return model(call)

    result = await run_search_async(BeamSearch(Letters(), "", breadth=2, depth=2, evaluations=1), ask)
    assert max(widest) == 5  # the five level-1 evaluations were in flight together
    assert result.failed_calls == 1 and result.best.state == "bz"
