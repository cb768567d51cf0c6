import pytest

from orchestray.errors import ConfigError
from orchestray.policies.extraction import canonical_number, extractor


def test_answer_kind_takes_the_answer_line_not_the_confidence():
    text = "Paris is the capital.\nAnswer: Paris.\nConfidence: 0.9"
    assert extractor("answer")(text) == "paris"


def test_answer_kind_falls_back_to_the_whole_text():
    assert extractor("answer")("  Blue  ") == "blue"


def test_text_kind_normalises_case_spaces_and_final_period():
    assert extractor("text")("  Hello   World. ") == "hello world"
    assert extractor("text")("   ") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Let me compute: 40 + 45 = 85.\nAnswer: 85", "85"),
        ("Answer: 85\nConfidence: 0.87", "85"),
        ("I got 42.\nConfidence: 0.87", "42"),
        ("The total is 1,234.50 dollars", "1234.5"),
        ("It drops to -3 degrees", "-3"),
        ("x = 10-3 = 7", "7"),
        ("Answer: 85.0", "85"),
        ("Answer: $1,000,000", "1000000"),
        ("The answer is 12 + 3 = 15", "15"),
        ("no digits here", None),
    ],
)
def test_number_kind(text, expected):
    assert extractor("number")(text) == expected


def test_numbers_that_are_equal_vote_alike():
    assert canonical_number("85.00") == canonical_number("85") == "85"
    assert canonical_number("-0") == "0"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("It is option B.\nAnswer: B", "B"),
        ("Answer: (A) Paris", "A"),
        ("I pick (C) because it fits.", "C"),
        ("D) is right", "D"),
        ("b", "B"),
        ("The answer is option c", "C"),
        ("I have no idea", None),
    ],
)
def test_choice_kind(text, expected):
    assert extractor("choice")(text) == expected


def test_choice_kind_only_knows_its_letters():
    assert extractor("choice", choices="ABCD")("Answer: E") is None


def test_regex_kind_uses_the_group_or_the_whole_match():
    assert extractor("regex", pattern=r"Result: (\w+)")("Result: done. Result: again") == "done"
    assert extractor("regex", pattern=r"Result: (\w+)", last=True)("Result: done. Result: again") == "again"
    assert extractor("regex", pattern=r"\d+")("abc 123 def") == "123"
    assert extractor("regex", pattern=r"(?P<v>\d+)", group="v")("n=5") == "5"
    assert extractor("regex", pattern=r"Result: (\w+)")("nothing") is None


def test_json_kind_finds_the_object_and_follows_the_path():
    text = 'Here you go: ```json\n{"answer": {"value": 42}, "items": [{"name": "x"}]}\n```'
    assert extractor("json", path="answer.value")(text) == "42"
    assert extractor("json", path="items.0.name")(text) == "x"
    assert extractor("json", path="answer.missing")(text) is None


def test_json_kind_skips_braces_that_are_not_json():
    assert extractor("json", path="k")('a set {a, b} then {"k": "v"}') == "v"
    assert extractor("json", path="k")('{"k": null}') is None
    assert extractor("json", path="k")("no json") is None


def test_custom_kind_and_callables():
    assert extractor("custom", fn=lambda t: t.split()[0])("hello world") == "hello"
    assert extractor(lambda t: None)("anything") is None
    assert extractor(lambda t: 7)("anything") == "7"


def test_config_mapping():
    ex = extractor({"kind": "regex", "pattern": r"= (\d+)"})
    assert ex("2 + 2 = 4") == "4"
    assert ex.describe().startswith("regex(")


@pytest.mark.parametrize(
    "kind, options",
    [
        ("bogus", {}),
        ("regex", {}),
        ("regex", {"pattern": "("}),
        ("regex", {"pattern": r"(\d)", "group": 2}),
        ("json", {"path": 3}),
        ("tool_call", {"path": "x"}),
        ("number", {"path": "x"}),
        ("custom", {"fn": 3}),
        ("choice", {"choices": "1"}),
    ],
)
def test_bad_extractor_config_is_a_config_error(kind, options):
    with pytest.raises(ConfigError):
        extractor(kind, **options)


def test_a_reply_with_tool_calls_answers_with_its_calls_in_canonical_form():
    from orchestray.messages import ToolCall
    from orchestray.policies.extraction import reply_answer, tool_calls_key

    paris = ToolCall("a", "get_weather", '{"unit": "c",  "city": "Paris"}')
    rome = ToolCall("b", "get_weather", '{"city":"Rome"}')
    assert tool_calls_key([paris]) == 'get_weather({"city":"Paris","unit":"c"})'
    assert tool_calls_key([paris, rome]) == tool_calls_key([rome, paris])
    assert tool_calls_key([]) is None
    assert tool_calls_key([ToolCall("c", "f", "{not json")]) == "f({not json)"  # kept as written
    for kind in ("answer", "number", "tool_call", "json"):
        assert reply_answer(extractor(kind), "Answer: 4", [paris]) == tool_calls_key([paris])
    assert reply_answer(extractor("tool_call"), "Answer: 4") is None
    assert reply_answer(extractor("number"), "Answer: 4") == "4"


def test_json_answers_compare_canonically_by_default_and_by_field_with_a_path():
    from orchestray.policies.extraction import reply_answer

    a, b = '{"b": [1, 2], "a": 1.0}', '```json\n{"a": 1, "b": [1,2]}\n```'
    assert reply_answer(None, a, wants_json=True) == reply_answer(None, b, wants_json=True) == '{"a":1,"b":[1,2]}'
    assert reply_answer(None, "Answer: Paris.") == "paris"  # no JSON asked for: the Answer: line
    assert extractor("json")(a) == '{"a":1,"b":[1,2]}' and extractor("json", path="b.1")(b) == "2"
    assert reply_answer(extractor("json", path="a"), a, wants_json=True) == "1"
    assert reply_answer(None, "not json at all", wants_json=True) is None
