import pytest

from orchestray.errors import ConfigError
from orchestray.messages import ChatRequest, Message
from orchestray.policies.routing import Router, Rule, detect_task, estimate_cost


@pytest.mark.parametrize(
    "text, task",
    [
        ("What is 37 + 48?", "arithmetic"),
        ("Compute (12 * 5) - 3.", "arithmetic"),
        ("What is seven times 6? That is 7 times 6", "arithmetic"),
        ("What is 3 + 4?\nA) 5\nB) 7\nC) 9\nReply with the letter of the correct option.", "multiple_choice"),
        ("Which is a mammal? (A) trout (B) whale (C) eagle", "multiple_choice"),
        ("Write a Python function that reverses a list.", "code"),
        ("Why does this fail?\n```\nx = [1, 2\n```", "code"),
        ("def f(x):\n    return x + 1", "code"),
        ("Tell me about the history of Rome.", "general"),
    ],
)
def test_detect_task(text, task):
    assert detect_task(text) == task


def test_first_matching_rule_wins():
    router = Router(
        [{"keywords": ["invoice"], "to": "billing"}, {"task": "arithmetic", "to": "cheap"}],
        default="general",
    )
    decision = router.choose("What is 3 + 4 on my invoice?")
    assert decision.target == "billing"
    assert decision.rule == "rules[0]"
    assert "keyword 'invoice'" in decision.reason
    assert router.choose("What is 3 + 4?").target == "cheap"


def test_default_when_no_rule_matches():
    decision = Router([{"keywords": ["invoice"], "to": "billing"}], default="general").choose("hello")
    assert decision.target == "general" and decision.rule is None
    assert "no rule matched" in decision.reason


def test_keywords_match_whole_words_in_any_case():
    router = Router([{"keywords": ["refund", "money back"], "to": "support"}], default="d")
    assert router.choose("I want a REFUND now").target == "support"
    assert router.choose("can I get my Money Back?").target == "support"
    assert router.choose("it was refunded").target == "d"


def test_regex_rule():
    router = Router([{"regex": r"(?i)\bprove\b", "to": "think"}], default="d")
    assert router.choose("Prove that 2 is prime").target == "think"
    assert router.choose("improve this").target == "d"


def test_length_rules_in_chars_and_tokens():
    router = Router(
        [{"max_chars": 10, "to": "tiny"}, {"min_tokens": 100, "to": "long"}, {"min_chars": 50, "max_chars": 80, "to": "mid"}],
        default="d",
    )
    assert router.choose("short").target == "tiny"
    assert router.choose("x" * 400).target == "long"  # 100 estimated tokens
    assert router.choose("x" * 60).target == "mid"
    assert router.choose("x" * 30).target == "d"


def test_task_rule_takes_one_or_several_tasks():
    router = Router([{"task": ["code", "multiple_choice"], "to": "strong"}], default="d")
    assert router.choose("Write a Python function").target == "strong"
    assert router.choose("Tell me a story").target == "d"


def test_several_conditions_must_all_hold():
    router = Router([{"task": "arithmetic", "max_chars": 20, "to": "cheap"}], default="d")
    assert router.choose("What is 3 + 4?").target == "cheap"
    assert router.choose("What is 3 + 4? Please explain very carefully.").target == "d"


def test_cost_budget_rule_uses_the_targets_price():
    prices = {"large": {"input_per_1k": 0.01, "output_per_1k": 0.03}}
    router = Router([{"max_cost": 0.01, "to": "large"}], default="small", prices=prices, output_tokens=100)
    # 3 tokens in, 100 out: 0.00003 + 0.003 <= 0.01
    assert router.choose("hi there").target == "large"
    # 2500 tokens in: 0.025 + 0.003 > 0.01
    assert router.choose("x" * 10_000).target == "small"
    # a request's max_tokens is its output estimate
    assert router.choose("hi", max_tokens=1000).target == "small"
    assert estimate_cost(prices["large"], 1000, 1000) == pytest.approx(0.04)


def test_cost_rule_needs_a_price():
    with pytest.raises(ConfigError, match="price"):
        Router([{"max_cost": 0.01, "to": "large"}], default="small")


def test_request_budget_skips_rules_it_cannot_afford():
    prices = {"large": {"input_per_1k": 0.01, "output_per_1k": 0.03}}
    router = Router([{"task": "code", "to": "large"}], default="small", prices=prices)
    assert router.choose("Write Python code").target == "large"
    decision = router.choose("Write Python code", budget=0.001)
    assert decision.target == "small"
    assert "over" not in decision.reason and "skipped" in decision.reason


def test_chat_request_is_routed_on_its_whole_prompt():
    request = ChatRequest(
        messages=(Message("system", "You write code."), Message("user", "Fix my Python bug")), max_tokens=5
    )
    decision = Router([{"task": "code", "to": "coder"}], default="d").choose(request)
    assert decision.target == "coder" and decision.task == "code"


def test_from_config_with_the_yaml_shape():
    router = Router.from_config(
        {"rules": [{"task": "arithmetic", "to": "cheap"}, {"min_tokens": 2000, "to": "sim-large"}], "default": "sim-medium"}
    )
    assert router.targets() == ["cheap", "sim-large", "sim-medium"]
    assert router.choose("What is 2 + 2?").target == "cheap"


def test_rules_can_be_built_in_code_with_names():
    router = Router([Rule("support", keywords=("refund",), name="refunds")], default="d")
    assert router.choose("refund please").rule == "refunds"


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"keyword": ["x"], "to": "a"}, "rules[0]: unknown key 'keyword'"),
        ({"keywords": ["x"]}, "rules[0]: missing `to`"),
        ({"to": "a"}, "no condition"),
        ({"task": "poetry", "to": "a"}, "unknown task"),
        ({"regex": "(", "to": "a"}, "bad `regex`"),
        ({"max_chars": -1, "to": "a"}, "max_chars"),
        ({"keywords": [], "to": "a"}, "keywords"),
        ("to: a", "a rule is a mapping"),
    ],
)
def test_bad_rules_are_config_errors_naming_the_rule(rule, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Router([rule], default="d")
