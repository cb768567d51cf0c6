import pytest

from orchestray.errors import ConfigError
from orchestray.policies.templates import (
    StepOutput,
    check_template,
    condition,
    fill,
    output_parser,
    should_run,
    template_fields,
)

STEPS = {
    "draft": StepOutput("A long draft about cats.", parsed=None),
    "classify": StepOutput("This is about CODE.\nAnswer: code", parsed="code"),
    "count": "There are 3 of them",
    "skipped": None,
}


def test_fill_from_input_steps_and_variables():
    text = fill(
        "Summarise for {audience}: {steps.draft.output} / {steps.draft} / {steps.classify.parsed} / {input}",
        STEPS,
        input="the question",
        audience="kids",
    )
    assert text == (
        "Summarise for kids: A long draft about cats. / A long draft about cats. / code / the question"
    )


def test_literal_braces_and_format_specs():
    assert fill("{{json}} {input:>5}", input="x") == "{json}     x"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{steps.nope.output}", "no step named 'nope'"),
        ("{steps.skipped.output}", "did not run"),
        ("{steps.draft.parsed}", "no parsed value"),
        ("{steps.draft.text}", "only .output and .parsed"),
        ("{steps}", "name a step"),
        ("{input.__class__}", "unknown field"),
        ("{steps[draft]}", "indexing"),
        ("{}", "positional"),
        ("{audience}", "unknown field"),
        ("{unclosed", "template"),
    ],
)
def test_missing_or_unsafe_fields_are_named(template, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as err:
        fill(template, STEPS, input="q")
    available = str(err.value).partition("(available: ")[2]
    if available:
        assert "steps.draft" in available and "steps.skipped" not in available


def test_template_fields_and_config_time_check():
    assert template_fields("{input} {steps.a.output} {steps.a.output} {x}") == ["input", "steps.a.output", "x"]
    check_template("{input} {steps.a.output}", known_steps=["a"])
    with pytest.raises(ConfigError, match="no earlier step named 'b'"):
        check_template("{steps.b.output}", known_steps=["a"])
    with pytest.raises(ConfigError):
        check_template("{tone}", known_steps=[])
    check_template("{tone}", known_steps=[], variables=["tone"])


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"step": "draft", "contains": "cats"}, True),
        ({"step": "draft", "contains": "CATS"}, False),
        ({"step": "draft", "contains": "CATS", "ignore_case": True}, True),
        ({"step": "classify", "equals": "code"}, True),  # the parsed value
        ({"step": "classify", "field": "output", "equals": "code"}, False),
        ({"step": "count", "matches": r"\d+ of them"}, True),
        ({"step": "input", "contains": "urgent"}, True),
        ({"not": {"step": "draft", "contains": "dogs"}}, True),
        ({"all": [{"step": "draft", "contains": "cats"}, {"step": "count", "contains": "3"}]}, True),
        ({"any": [{"step": "draft", "contains": "dogs"}, {"step": "count", "contains": "9"}]}, False),
        ({"step": "skipped", "contains": ""}, False),
        ({"step": "never_ran", "contains": ""}, False),
        ({"not": {"step": "skipped", "contains": "x"}}, True),
    ],
)
def test_conditions(spec, expected):
    assert condition(spec)(STEPS, "an urgent request") is expected


def test_should_run_gives_a_reason():
    run, why = should_run({"step": "classify", "equals": "code"}, STEPS)
    assert run and "steps.classify equals 'code'" in why
    run, why = should_run({"step": "classify", "equals": "prose"}, STEPS)
    assert not run and why.startswith("skipped")
    assert should_run(None, STEPS) == (True, "no condition")


@pytest.mark.parametrize(
    "spec",
    [
        {"step": "a"},
        {"step": "a", "contains": "x", "equals": "y"},
        {"contains": "x"},
        {"step": "a", "startswith": "x"},
        {"step": "a", "matches": "("},
        {"all": []},
        {"step": "a", "contains": "x", "field": "text"},
        "step a contains x",
    ],
)
def test_bad_conditions_are_config_errors(spec):
    with pytest.raises(ConfigError):
        condition(spec)


def test_output_parsers_reuse_extraction():
    assert output_parser("number")("so 3 + 4 = 7\nAnswer: 7") == "7"
    assert output_parser({"kind": "json", "path": "label"})('{"label": "spam"}') == "spam"
