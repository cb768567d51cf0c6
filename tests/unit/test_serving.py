"""The gateway's own decisions, without Ray: whether it may serve without keys."""

from orchestray.config import default_config, parse_config
from orchestray.serving import open_gateway_refusal

REAL = {"name": "local-llama", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
SIMULATED = {"name": "sim", "kind": "simulated"}


def test_the_embedded_default_and_simulated_only_configs_serve_open():
    assert open_gateway_refusal(default_config(), ()) is None
    assert open_gateway_refusal(parse_config({"providers": [SIMULATED]}), ()) is None


def test_a_real_provider_without_gateway_keys_is_refused_saying_why_and_what_to_set():
    why = open_gateway_refusal(parse_config({"providers": [SIMULATED, REAL]}), ())
    assert why.startswith("refusing to serve without gateway keys: the config has real providers (local-llama (openai))")
    assert "set ORCHESTRAY_API_KEYS=key1,key2" in why and "serve.allow_unauthenticated: true" in why


def test_keys_or_the_explicit_flag_let_it_serve():
    assert open_gateway_refusal(parse_config({"providers": [REAL]}), ("key",)) is None
    flagged = parse_config({"providers": [REAL], "serve": {"allow_unauthenticated": True}})
    assert open_gateway_refusal(flagged, ()) is None


def test_with_keys_switched_off_the_refusal_says_to_name_a_variable():
    why = open_gateway_refusal(parse_config({"providers": [REAL], "serve": {"api_keys_env": None}}), ())
    assert "set serve.api_keys_env" in why
