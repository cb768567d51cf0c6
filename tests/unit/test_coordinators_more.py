"""Tree-of-thought, router and pipeline coordinators, driven by in-process fake models (no Ray)."""

import random

import pytest

from orchestray.config import parse_config
from orchestray.coordinators import (
    PipelineCoordinator,
    RaceCoordinator,
    RouterCoordinator,
    TreeOfThoughtCoordinator,
    build_coordinator,
)
from orchestray.errors import AllFailedError, ConfigError, ProviderTimeoutError, ProviderUnavailableError, RequestError
from orchestray.messages import ChatRequest, Message
from orchestray.policies.routing import Router
from orchestray.tasks import game24
from orchestray.testing import ScriptedModel
from orchestray.tasks.game24 import check_answer, parse_solution


def Fake(name, reply="Answer: 1", *, fail=None, cost=1.0, **options):
    """A scripted model named `name` (model `NAME-model`) answering `reply`, or raising `fail`,
    after the answers of `script`."""
    return ScriptedModel(fail if fail is not None else reply, name=name, model=f"{name}-model", cost=cost, **options)


def models(*fakes):
    return {f.name: f for f in fakes}.__getitem__


def ask(text, **fields):
    return ChatRequest(messages=(Message("user", text),), **fields)


def down(name):
    return ProviderUnavailableError("503", provider=name)


# --- tree of thought ---------------------------------------------------------------------------


def game_player(accuracy=1.0):
    """Plays the Game of 24 as the simulated model does; each (prompt, seed) is its own draw."""
    return lambda request: game24.reply(request.last_user_text(), random.Random(f"{request.seed}:{request.prompt_text()}"), accuracy)


PUZZLE = (4, 9, 10, 13)


async def test_tree_of_thought_solves_with_a_perfect_player_across_providers():
    a, b = Fake("a", game_player()), Fake("b", game_player())
    tot = TreeOfThoughtCoordinator("think", models(a, b), ["a", "b"], task="game24", breadth=5, depth=3, evaluations=3)
    answer = await tot.complete(ask("Use 4 9 10 13 to make 24"))
    assert check_answer(parse_solution(answer.content), PUZZLE)
    trace = answer.trace
    assert trace.kind == "tree_of_thought" and trace.decision.startswith("solved")
    totals = trace.data["totals"]
    assert len(trace.children) == totals["calls"] == len(a.calls) + len(b.calls)
    assert abs(len(a.calls) - len(b.calls)) <= totals["levels"]  # round-robin within each level
    assert answer.cost == pytest.approx(totals["calls"]) and answer.confidence == 1.0
    assert trace.data["solved"] and len(trace.data["best_path"]) == 4
    assert {n["status"] for n in trace.data["tree"]} >= {"root", "solution"}
    # The evaluations of one state are independent draws: one seed each.
    values = [r for r in a.calls + b.calls if r.last_user_text().startswith(game24.VALUE_HEADER)]
    by_prompt = {}
    for r in values:
        by_prompt.setdefault(r.last_user_text(), set()).add(r.seed)
    assert values and all(len(seeds) == 3 for seeds in by_prompt.values())
    assert all(r.max_tokens and r.temperature == 0.7 for r in a.calls + b.calls)


async def test_tree_of_thought_stays_within_its_caps():
    player = Fake("p", game_player(), cost=0.5)
    tot = TreeOfThoughtCoordinator("think", models(player), ["p"], task="game24", breadth=5, depth=3, max_calls=10)
    answer = await tot.complete(ask("4 9 10 13"))
    assert len(player.calls) <= 10 and answer.trace.data["stopped_by"] == "max_calls"
    assert "No solution found" in answer.content and answer.trace.decision.startswith("not solved")
    capped = TreeOfThoughtCoordinator("think", models(player), ["p"], task="game24", max_cost=3.0)
    answer = await capped.complete(ask("4 9 10 13"))
    assert answer.cost <= 3.0 and answer.trace.data["stopped_by"] == "max_cost"


async def test_tree_of_thought_failed_calls_do_not_end_the_search():
    broken, good = Fake("broken", fail=down("broken")), Fake("good", game_player())
    tot = TreeOfThoughtCoordinator("think", models(broken, good), ["good", "broken"], task="game24")
    answer = await tot.complete(ask("4 9 10 13"))
    outcomes = [c.outcome for c in answer.trace.children]
    assert "error" in outcomes and "ok" in outcomes
    assert answer.trace.data["totals"]["failed_calls"] == outcomes.count("error") == len(broken.calls)
    with pytest.raises(AllFailedError) as caught:
        await TreeOfThoughtCoordinator("think", models(broken), ["broken"], task="game24").complete(ask("4 9 10 13"))
    assert caught.value.span.kind == "tree_of_thought"
    with pytest.raises(RequestError, match="no Game of 24 puzzle"):
        await tot.complete(ask("hello there"))


async def test_a_race_can_answer_each_step_of_the_search():
    table = {"a": Fake("a", game_player(), delay=0.01), "b": Fake("b", game_player())}
    table["fast"] = RaceCoordinator("fast", table.__getitem__, ["a", "b"])
    tot = TreeOfThoughtCoordinator("think", table.__getitem__, ["fast"], task="game24")
    answer = await tot.complete(ask("4 9 10 13"))
    assert check_answer(parse_solution(answer.content), PUZZLE)
    first = answer.trace.children[0]
    assert first.kind == "race" and first.decision.startswith("propose node 0: b answered first")
    assert answer.cost == pytest.approx(answer.trace.data["totals"]["cost"])


# --- router ------------------------------------------------------------------------------------

RULES = [
    {"name": "support", "keywords": ["refund", "invoice"], "to": "support"},
    {"task": "arithmetic", "to": "math"},
]


async def test_router_picks_by_rule_and_records_the_decision():
    support, math, general = Fake("support", "Sorry."), Fake("math", "Answer: 4"), Fake("general", "Hi.")
    router = RouterCoordinator("auto", models(support, math, general), Router(RULES, "general"))
    answer = await router.complete(ask("I want a refund for this invoice"))
    assert answer.provider == "support" and answer.content == "Sorry."
    assert answer.trace.kind == "route" and answer.trace.children[0].name == "support"
    assert answer.trace.data["rule"] == "support" and "keyword 'refund'" in answer.trace.data["reason"]
    assert "route -> support" in answer.trace.decision and answer.cost == 1.0
    answer = await router.complete(ask("What is 2 + 2?"))
    assert answer.provider == "math" and answer.trace.data["rule"] == "rules[1]"
    answer = await router.complete(ask("Tell me a story."))
    assert answer.provider == "general" and answer.trace.data["rule"] is None
    assert [len(f.calls) for f in (support, math, general)] == [1, 1, 1]


async def test_router_streams_through_and_keeps_the_trace_of_a_failure():
    math = Fake("math", "the answer is 4")
    router = RouterCoordinator("auto", models(math, Fake("general")), Router(RULES, "general"))
    chunks = [c async for c in router.stream(ask("What is 2 + 2?"))]
    assert "".join(c.delta for c in chunks).split() == ["the", "answer", "is", "4"]
    final = chunks[-1]
    assert final.done and final.completion.trace.kind == "route" and final.completion.trace.children[0].name == "math"
    broken = RouterCoordinator("auto", models(Fake("general", fail=down("general"))), Router([], "general"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await broken.complete(ask("hi"))
    assert caught.value.span.kind == "route" and caught.value.span.children[0].outcome == "error"


def test_router_from_config_knows_provider_prices_and_names_bad_rules():
    providers = [
        {"name": "cheap", "kind": "simulated", "price": {"input_per_1k": 0.0001, "output_per_1k": 0.0001}},
        {"name": "dear", "kind": "simulated", "price": {"input_per_1k": 1.0, "output_per_1k": 1.0}},
    ]
    config = parse_config({"providers": providers, "routes": {
        "auto": {"pattern": "route", "rules": [{"max_cost": 0.01, "to": "dear"}, {"max_cost": 0.01, "to": "cheap"}],
                 "default": "dear"}}})
    router = build_coordinator("auto", config, lambda n: None)
    assert isinstance(router, RouterCoordinator) and router.choose(ask("hello")).target == "cheap"
    with pytest.raises(ConfigError, match=r"routes\.auto\.rules\[0\]\.colour: unknown field"):
        parse_config({"providers": providers, "routes": {
            "auto": {"pattern": "route", "rules": [{"colour": "red", "to": "cheap"}], "default": "dear"}}})


# --- pipeline ----------------------------------------------------------------------------------


def echo(prefix):
    return lambda request: f"{prefix}({request.last_user_text()})"


async def test_pipeline_fills_templates_from_the_input_and_earlier_steps():
    drafter, editor = Fake("drafter", echo("draft")), Fake("editor", echo("edit"))
    pipeline = PipelineCoordinator("p", models(drafter, editor), [
        {"name": "draft", "model": "drafter"},
        {"name": "edit", "model": "editor", "prompt": "Improve: {steps.draft.output} (asked: {input})",
         "system": "You edit {steps.draft}."},
    ])
    answer = await pipeline.complete(ask("a poem", seed=3))
    assert drafter.calls[0].last_user_text() == "a poem"
    assert editor.calls[0].messages == (Message("system", "You edit draft(a poem)."),
                                        Message("user", "Improve: draft(a poem) (asked: a poem)"))
    assert editor.calls[0].model == "editor" and editor.calls[0].seed == 3
    assert answer.content == "edit(Improve: draft(a poem) (asked: a poem))" and answer.provider == "editor"
    assert answer.trace.kind == "pipeline" and [s.name for s in answer.trace.children] == ["draft", "edit"]
    assert answer.cost == 2.0 and answer.trace.data["answered_by"] == "edit"


async def test_pipeline_skips_a_step_by_condition_and_answers_from_the_last_that_ran():
    classify = Fake("classify", "Answer: short")
    expand, final = Fake("expand", "longer"), Fake("final", echo("final"))
    pipeline = PipelineCoordinator("p", models(classify, expand, final), [
        {"name": "kind", "model": "classify", "parse": "answer"},
        {"name": "expand", "model": "expand", "when": {"step": "kind", "equals": "long"}},
        {"name": "polish", "model": "final", "prompt": "{steps.kind.parsed}", "when": {"not": {"step": "kind", "equals": "long"}}},
        {"name": "tail", "model": "expand", "when": {"step": "expand", "contains": "long"}},
    ])
    answer = await pipeline.complete(ask("text"))
    assert answer.content == "final(short)" and expand.calls == []
    outcomes = {s.name: (s.outcome, s.decision) for s in answer.trace.children}
    assert outcomes["expand"][0] == "skipped" and "skipped: not steps.kind equals 'long'" in outcomes["expand"][1]
    assert outcomes["tail"][0] == "skipped" and outcomes["polish"][0] == "ok"
    assert answer.trace.data["answered_by"] == "polish" and "skipped: expand, tail" in answer.trace.decision


async def test_pipeline_retries_a_failing_step_with_a_fresh_seed():
    flaky = Fake("flaky", "Answer: 42", script=[down("flaky"), "no number here"])
    pipeline = PipelineCoordinator("p", models(flaky), [{"name": "n", "model": "flaky", "parse": "number", "retries": 2}])
    answer = await pipeline.complete(ask("x", seed=1))
    assert answer.content == "Answer: 42" and len(flaky.calls) == 3
    assert len({r.seed for r in flaky.calls[1:]}) == 2 and flaky.calls[0].seed == 1
    step = answer.trace.children[0]
    assert step.retries == 2 and [c.outcome for c in step.children] == ["error", "error", "ok"]
    assert "found nothing" in step.children[1].error and answer.trace.data["steps"][0]["parsed"] == "42"
    assert answer.cost == 2.0  # the call that failed cost nothing; the unparsable one was paid for
    once = Fake("once", script=[down("once")])
    with pytest.raises(ProviderUnavailableError):
        await PipelineCoordinator("p", models(once), [{"model": "once"}]).complete(ask("x"))


async def test_pipeline_fail_fast_stops_and_continue_goes_on():
    broken, after = Fake("broken", fail=down("broken")), Fake("after", echo("after"))
    steps = [
        {"name": "first", "model": "after"},
        {"name": "bad", "model": "broken"},
        {"name": "last", "model": "after", "prompt": "{steps.first.output}"},
    ]
    with pytest.raises(ProviderUnavailableError) as caught:
        await PipelineCoordinator("p", models(broken, after), steps).complete(ask("go"))
    span = caught.value.span
    assert span.kind == "pipeline" and [s.outcome for s in span.children] == ["ok", "error"]
    assert len(after.calls) == 1 and "fail_fast" in span.decision
    answer = await PipelineCoordinator("p", models(broken, after), steps, on_error="continue").complete(ask("go"))
    assert answer.content == "after(after(go))" and "failed and continued: bad" in answer.trace.decision
    assert [s.outcome for s in answer.trace.children] == ["ok", "error", "ok"]
    needs_bad = steps[:2] + [{"name": "last", "model": "after", "prompt": "{steps.bad.output}"}]
    answer = await PipelineCoordinator("p", models(broken, after), needs_bad, on_error="continue").complete(ask("go"))
    assert answer.trace.data["answered_by"] == "first"  # `last` could not fill its template
    assert "did not run" in answer.trace.children[2].error


async def test_pipeline_step_timeout_cancels_the_call():
    slow = Fake("slow", delay=5)
    pipeline = PipelineCoordinator("p", models(slow), [{"name": "s", "model": "slow", "timeout_s": 0.02, "retries": 1}])
    with pytest.raises(ProviderTimeoutError, match="no answer within 0.02s"):
        await pipeline.complete(ask("x"))
    assert slow.cancelled == 2 and len(slow.calls) == 2


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"model": "a"}, {"model": "a", "prompt": "{steps.later.output}"}], r"routes\.p\.steps\[1\]\.prompt: .*no earlier step named 'later'"),
        ([{"model": "a", "prompt": "{steps.step0.output}"}], r"routes\.p\.steps\[0\]\.prompt: .*no earlier step"),
        ([{"model": "a", "system": "{nope}"}], r"routes\.p\.steps\[0\]\.system: template field \{nope\}"),
        ([{"model": "a", "when": {"step": "ghost", "equals": "x"}}], r"routes\.p\.steps\[0\]\.when: no earlier step named 'ghost'"),
        ([{"model": "a", "colour": 1}], r"routes\.p\.steps\[0\]: unknown key 'colour'"),
        ([{"prompt": "x"}], r"routes\.p\.steps\[0\]: `model`"),
        ([{"model": "a", "parse": "telepathy"}], r"routes\.p\.steps\[0\]: unknown extractor"),
        ([{"model": "a", "retries": -1}], r"routes\.p\.steps\[0\]: `retries`"),
        ([{"name": "x", "model": "a"}, {"name": "x", "model": "a"}], r"routes\.p\.steps\[1\]\.name: duplicate step name"),
    ],
)
def test_pipeline_checks_its_steps_when_built(steps, message):
    with pytest.raises(ConfigError, match=message):
        PipelineCoordinator("p", lambda n: None, steps)


def test_new_routes_build_from_config():
    config = parse_config({
        "providers": [{"name": "a", "kind": "simulated"}, {"name": "b", "kind": "simulated"}],
        "routes": {
            "t": {"pattern": "tree_of_thought", "providers": ["a", "b"], "breadth": 2, "max_calls": 40},
            "r": {"pattern": "route", "rules": [{"task": "code", "to": "t"}], "default": "a"},
            "p": {"pattern": "pipeline", "steps": [{"name": "x", "model": "a"}, {"model": "r", "prompt": "{steps.x}"}],
                  "on_error": "continue"},
        },
    })
    built = {name: build_coordinator(name, config, lambda n: None) for name in config.routes}
    assert isinstance(built["t"], TreeOfThoughtCoordinator) and built["t"].breadth == 2 and built["t"].max_calls == 40
    assert isinstance(built["r"], RouterCoordinator) and isinstance(built["p"], PipelineCoordinator)
    assert built["p"].on_error == "continue" and [s.name for s in built["p"].steps] == ["x", "step1"]

