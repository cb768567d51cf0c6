"""The pattern table is the one place a pattern is written: the config, the HTTP bodies and the
Python API's ad-hoc methods all take what its route model takes, no more and no less."""

import inspect

import pytest
from pydantic import ValidationError

from orchestray import AsyncClient, Client
from orchestray.config import Config, parse_config
from orchestray.patterns import PATTERNS
from orchestray.serving._bodies import PATTERN_BODIES, PatternBody

MESSAGES = [{"role": "user", "content": "hi"}]
PROVIDERS = [{"name": "a", "kind": "simulated"}]


def test_every_pattern_is_in_the_config_union_the_http_bodies_and_both_clients():
    union = Config.model_fields["routes"].annotation.__args__[1].__origin__.__args__
    assert [p.route for p in PATTERNS.values()] == list(union)
    assert set(PATTERN_BODIES) == set(PATTERNS)
    for name in PATTERNS:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
        assert callable(getattr(Client, name)) and not inspect.iscoroutinefunction(getattr(Client, name))


@pytest.mark.parametrize("name", list(PATTERNS))
def test_an_http_body_takes_its_routes_fields_with_the_routes_bounds_and_defaults(name):
    pattern, body = PATTERNS[name], PATTERN_BODIES[name]
    chat = set(PatternBody.model_fields)
    http = {pattern.renamed.get(f, f) for f in pattern.route.model_fields} - {"pattern", "description"}
    assert set(body.model_fields) - chat == http
    for field, info in pattern.route.model_fields.items():
        if field in ("pattern", "description", "providers"):
            continue
        mirrored = body.model_fields[pattern.renamed.get(field, field)]
        assert (mirrored.annotation, mirrored.default, mirrored.metadata) == (info.annotation, info.default, info.metadata)


def test_the_drift_the_issue_found_is_gone():
    ensemble = PATTERN_BODIES["ensemble"](messages=MESSAGES, providers=["a"], samples=64, extract="regex",
                                          pattern_regex=r"(\d+)", sample_temperature=0.5, temperature=0.1)
    route = ensemble.route()
    assert route["samples"] == 64 and route["extract"] == "regex" and route["temperature"] == 0.5
    assert ensemble.chat_body()["temperature"] == 0.1  # the request's own, beside the samples'
    with pytest.raises(ValidationError):
        PATTERN_BODIES["ensemble"](messages=MESSAGES, providers=["a"], samples=65)
    tree = PATTERN_BODIES["tree_of_thought"](messages=MESSAGES, providers=["a"])
    assert tree.route()["max_calls"] is None and tree.route()["task"] == "general"
    assert PATTERN_BODIES["tree_of_thought"](messages=MESSAGES, providers=["a"], max_total_tokens=9).route()["max_tokens"] == 9


@pytest.mark.parametrize("name", list(PATTERNS))
def test_a_body_describes_a_route_the_config_accepts(name):
    members = {"providers": {"providers": ["a"]}, "rules": {"rules": [{"keywords": ["x"], "to": "a"}], "default": "a"},
               "steps": {"steps": [{"model": "a"}]}}[PATTERNS[name].members]
    route = PATTERN_BODIES[name](messages=MESSAGES, **members).route()
    config = parse_config({"providers": PROVIDERS, "routes": {"r": route}})
    assert config.routes["r"].pattern == name


def test_http_members_are_capped_and_a_clash_with_a_chat_field_must_be_renamed():
    with pytest.raises(ValidationError, match="at most 32"):
        PATTERN_BODIES["race"](messages=MESSAGES, providers=["a"] * 33)
    with pytest.raises(ValidationError, match="Extra inputs"):
        PATTERN_BODIES["ensemble"](messages=MESSAGES, providers=["a"], colour="red")


def test_the_ad_hoc_methods_show_the_routes_options():
    signature = inspect.signature(AsyncClient.ensemble)
    assert list(signature.parameters)[:3] == ["self", "providers", "prompt"]
    assert signature.parameters["samples"].default == 1 and signature.parameters["samples"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "samples" in AsyncClient.ensemble.__doc__ and "vote" in AsyncClient.ensemble.__doc__
    assert list(inspect.signature(AsyncClient.route).parameters)[:3] == ["self", "rules", "prompt"]
    assert inspect.signature(AsyncClient.route).parameters["default"].default is inspect.Parameter.empty
