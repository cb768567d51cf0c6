import pytest

from orchestray.config import default_config, load_config, parse_config
from orchestray.errors import ConfigError

SIM = {"name": "a", "kind": "simulated"}


def error_for(data, environ=None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "my.yaml", environ)
    return str(caught.value)


def test_the_embedded_default_needs_no_key():
    config = default_config()
    assert [p.name for p in config.providers] == ["sim-small", "sim-medium", "sim-large"]
    assert all(p.kind == "simulated" for p in config.providers)
    patterns = {r.pattern for r in config.routes.values()}
    assert {"race", "ensemble", "cascade", "tree_of_thought", "route", "fallback"} <= patterns


def test_unknown_field_is_named_with_its_path():
    assert error_for({"providers": [{**SIM, "limits": {"rpm": 5, "rps": 1}}]}) == "my.yaml: providers[0].limits.rps: unknown field"


def test_unknown_provider_kind():
    message = error_for({"providers": [{"name": "a", "kind": "cohere"}]})
    assert "providers[0].kind" in message and "'cohere'" in message and "openai, anthropic or simulated" in message


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_concurrency"])
def test_negative_limits(field):
    message = error_for({"providers": [{**SIM, "limits": {field: -1}}]})
    assert message.startswith(f"my.yaml: providers[0].limits.{field}:") and "greater than 0" in message


def test_route_naming_a_missing_provider():
    message = error_for({"providers": [SIM], "routes": {"fast": {"pattern": "race", "providers": ["a", "ghost"]}}})
    assert message == "my.yaml: routes.fast.providers[1]: 'ghost' names no provider or route (providers: a)"


def test_routes_may_nest_but_not_loop():
    config = parse_config(
        {
            "providers": [SIM, {"name": "b", "kind": "simulated"}],
            "routes": {
                "vote": {"pattern": "ensemble", "providers": ["a", "b"]},
                "cheap": {"pattern": "cascade", "providers": ["a", "vote"]},
            },
        }
    )
    assert config.has_model("cheap")
    message = error_for(
        {
            "providers": [SIM],
            "routes": {
                "x": {"pattern": "fallback", "providers": ["y"]},
                "y": {"pattern": "fallback", "providers": ["x"]},
            },
        }
    )
    assert "loop" in message and "x -> y -> x" in message


def test_missing_key_variable_for_a_real_provider():
    data = {"providers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o-mini"}]}
    message = error_for(data, environ={})
    assert message == "my.yaml: providers[0].api_key_env: environment variable OPENAI_API_KEY is not set (provider 'gpt', kind openai)"
    assert parse_config(data, environ={"OPENAI_API_KEY": "sk-x"}).providers[0].api_key_env == "OPENAI_API_KEY"


def test_compatible_servers_need_no_key_by_default():
    data = {"providers": [{"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "llama"}]}
    assert parse_config(data, environ={}).providers[0].api_key_env is None


def test_duplicate_names_and_route_provider_clash():
    assert "duplicate provider name 'a'" in error_for({"providers": [SIM, SIM]})
    assert "cannot share a provider's name" in error_for({"providers": [SIM], "routes": {"a": {"pattern": "fallback", "providers": ["a"]}}})


def test_unknown_pattern():
    message = error_for({"providers": [SIM], "routes": {"r": {"pattern": "lottery", "providers": ["a"]}}})
    assert "routes.r" in message and "'lottery'" in message


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the top level must be a mapping"):
        load_config(top)


def test_a_secret_never_appears_in_config_errors():
    message = error_for({"providers": [{"name": "a", "kind": "openai", "api_key": "sk-live-123456789"}]})
    assert "sk-live" not in message and "api_key: unknown field" in message
