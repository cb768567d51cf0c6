"""Routing rules and pipeline steps are typed: a bad one fails at load_config, naming its path."""

import pytest

from orchestray.config import load_config, parse_config
from orchestray.errors import ConfigError
from orchestray.patterns import PATTERNS, StepConfig
from orchestray.coordinators.pipeline import STEP_KEYS

PROVIDERS = [{"name": "a", "kind": "simulated"}, {"name": "b", "kind": "simulated"}]


def routed(*rules, default="a"):
    return {"providers": PROVIDERS, "routes": {"auto": {"pattern": "route", "rules": list(rules), "default": default}}}


def piped(*steps, **route):
    return {"providers": PROVIDERS, "routes": {"p": {"pattern": "pipeline", "steps": list(steps), **route}}}


@pytest.mark.parametrize("config, says", [
    (routed({"keywords": ["x"], "to": "a"}, {"colour": "red", "to": "b"}), r"routes\.auto\.rules\[1\]\.colour: unknown field"),
    (routed({"keywords": ["x"], "to": "a"}, {"regex": "(", "to": "b"}), r"routes\.auto\.rules\[1\]\.regex: .*bad regex '\('"),
    (routed({"min_chars": -1, "to": "a"}), r"routes\.auto\.rules\[0\]\.min_chars: .*greater than or equal to 0"),
    (routed({"task": "poetry", "to": "a"}), r"routes\.auto\.rules\[0\]\.task\[0\]: Input should be 'code'"),
    (routed({"to": "a"}), r"routes\.auto\.rules\[0\]: .*has no condition; use the router's default"),
    (routed({"keywords": ["x"]}), r"routes\.auto\.rules\[0\]\.to: Field required"),
    (routed({"keywords": ["x"], "to": "ghost"}), r"routes\.auto\.rules\[0\]\.to: 'ghost' names no provider or route"),
    (routed({"max_cost": 0.1, "to": "p2"}), r"routes\.auto\.rules\[0\]\.max_cost: .*needs the price of 'p2'"),
    (piped({"model": "a"}, {"model": "b", "when": {"step": "step0", "smells": "x"}}),
     r"routes\.p\.steps\[1\]\.when: unknown key 'smells'; use step with contains/equals/matches"),
    (piped({"model": "a", "when": {"step": "ghost", "equals": "x"}}), r"routes\.p\.steps\[0\]\.when: no earlier step named 'ghost'"),
    (piped({"model": "a"}, {"model": "a", "prompt": "{steps.later.output}"}),
     r"routes\.p\.steps\[1\]\.prompt: .*no earlier step named 'later'"),
    (piped({"model": "a", "parse": "telepathy"}), r"routes\.p\.steps\[0\]\.parse: .*unknown extractor"),
    (piped({"model": "a", "retries": 11}), r"routes\.p\.steps\[0\]\.retries: .*less than or equal to 10"),
    (piped({"model": "a", "name": "has space"}), r"routes\.p\.steps\[0\]: `name` must be letters"),
    (piped({"name": "x", "model": "a"}, {"name": "x", "model": "b"}), r"routes\.p\.steps\[1\]\.name: duplicate step name 'x'"),
    (piped({"model": "ghost"}), r"routes\.p\.steps\[0\]\.model: 'ghost' names no provider or route"),
    (piped({"model": "a"}, on_error="shrug"), r"routes\.p\.on_error: Input should be 'fail_fast' or 'continue'"),
])
def test_a_bad_rule_or_step_fails_at_load_with_its_path(config, says):
    if "p2" in str(config):
        config["routes"]["p2"] = {"pattern": "fallback", "providers": ["a"]}
    with pytest.raises(ConfigError, match=r"^<config>: " + says):
        parse_config(config)


def test_load_config_reports_the_file_and_the_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("providers: [{name: a, kind: simulated}]\n"
                    "routes:\n  p:\n    pattern: pipeline\n    steps:\n      - {model: a}\n"
                    "      - {model: a, when: {step: nope, equals: x}}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: routes\.p\.steps\[1\]\.when: no earlier step named 'nope'"):
        load_config(path)


def test_a_route_named_after_a_pattern_keeps_its_name_in_errors():
    with pytest.raises(ConfigError, match=r"routes\.race\.providers\[0\]: 'ghost' names no provider"):
        parse_config({"providers": PROVIDERS, "routes": {"race": {"pattern": "race", "providers": ["ghost"]}}})


def test_good_rules_and_steps_load_typed_and_survive_the_round_trip_to_the_actors():
    config = parse_config({**routed({"keywords": "refund", "to": "b"}, {"task": ["code"], "max_chars": 300, "to": "a"}),
                           "routes": {**routed({"keywords": "refund", "to": "b"})["routes"],
                                      **piped({"model": "a"}, {"model": "b", "when": {"step": "step0", "contains": "x"}})["routes"]}})
    rule = config.routes["auto"].rules[0]
    assert rule.keywords == ["refund"] and rule.rule(0).label() == "rules[0]"
    assert config.routes["p"].steps[1].when == {"step": "step0", "contains": "x"}
    again = type(config).model_validate_json(config.model_dump_json())
    assert again == config


def test_every_pipeline_step_key_is_a_typed_field_and_every_pattern_is_in_the_union():
    assert set(StepConfig.model_fields) == set(STEP_KEYS)
    unknown = {"providers": PROVIDERS, "routes": {"x": {"pattern": "telepathy"}}}
    with pytest.raises(ConfigError, match="unknown pattern 'telepathy'; use " + ", ".join(PATTERNS)):
        parse_config(unknown)
