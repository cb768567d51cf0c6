"""The simulated model beyond text: tool calls and answers from tool results, JSON answers,
n choices, logprobs and images, through the model and the simulated backend."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Literal, Optional

import pydantic
import pytest
from jsonschema import Draft202012Validator

from orchestray.backends import Reply
from orchestray.backends.simulated import SimulatedBackend
from orchestray.config import ProviderConfig
from orchestray.errors import RequestError
from orchestray.messages import (
    ChatRequest,
    Chunk,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    image_tokens,
)
from orchestray.simulated import SimProfile, SimulatedModel, arithmetic_questions, choice_questions, evaluate

OPENAI_SCHEMAS = json.loads((Path(__file__).parents[1] / "openai" / "openai-schemas.json").read_text())
TOKEN_LOGPROB = Draft202012Validator(
    {"$ref": "#/components/schemas/ChatCompletionTokenLogprob", "components": OPENAI_SCHEMAS["components"]}
)
PERFECT = SimProfile(accuracy=1.0, latency_ms=0.0)
CALCULATOR = Tool(
    "calculator",
    "Evaluate an arithmetic expression",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)
BINARY = Tool(
    "binary_op",
    "Apply an operation to two numbers",
    {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "integer"},
            "op": {"type": "string", "enum": ["add", "subtract", "multiply"]},
        },
        "required": ["a", "b", "op"],
        "additionalProperties": False,
    },
)
WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"],
    },
)


def ask(text: str, **fields) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), **fields)


def after_call(request: ChatRequest, call: ToolCall, result: str) -> ChatRequest:
    turns = (Message("assistant", None, tool_calls=(call,)), Message("tool", result, tool_call_id=call.id))
    return request.with_changes(messages=request.messages + turns)


# --- tool calls ----------------------------------------------------------------------------------


def test_an_arithmetic_question_calls_the_calculator_with_the_expression():
    model = SimulatedModel("m", PERFECT)
    answer = model.answer(ask("What is 37 + 48?", tools=(WEATHER, CALCULATOR)))
    assert answer.text == "" and answer.finish_reason == "tool_calls"
    (call,) = answer.tool_calls
    assert call.name == "calculator" and call.parsed_arguments() == {"expression": "37 + 48"}
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert answer.output_tokens > 0


def test_tool_arguments_are_right_at_the_models_accuracy():
    model = SimulatedModel("m", SimProfile(accuracy=0.7, latency_ms=0.0))
    questions = arithmetic_questions(400, seed=3)
    right = 0
    for q in questions:
        (call,) = model.answer(q.request(tools=(CALCULATOR,))).tool_calls
        right += str(evaluate(call.parsed_arguments()["expression"])) == q.truth
    assert right / len(questions) == pytest.approx(0.7, abs=0.06)


def test_operand_tools_get_the_operands_and_the_operator():
    model = SimulatedModel("m", PERFECT)
    (call,) = model.answer(ask("Compute 12 * 7.", tools=(BINARY,))).tool_calls
    assert call.parsed_arguments() == {"a": 12, "b": 7, "op": "multiply"}


def test_arguments_come_from_what_the_question_says():
    model = SimulatedModel("m", PERFECT)
    (call,) = model.answer(ask("What's the weather in New York, in fahrenheit?", tools=(CALCULATOR, WEATHER))).tool_calls
    assert call.name == "get_weather"
    assert call.parsed_arguments() == {"location": "New York", "unit": "fahrenheit"}


def test_tool_choice_is_respected():
    model = SimulatedModel("m", PERFECT)
    question = "What is 37 + 48?"
    assert not model.answer(ask(question, tools=(CALCULATOR,), tool_choice="none")).tool_calls
    # auto with no tool that fits: a text answer, the same as with no tools at all.
    unfit = model.answer(ask("Tell me about actors.", tools=(CALCULATOR,), tool_choice="auto"))
    assert not unfit.tool_calls and unfit.text == model.answer(ask("Tell me about actors.")).text
    forced = model.answer(ask("Tell me about actors.", tools=(CALCULATOR,), tool_choice="required"))
    assert [c.name for c in forced.tool_calls] == ["calculator"]
    named = model.answer(ask(question, tools=(CALCULATOR, WEATHER), tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert [c.name for c in named.tool_calls] == ["get_weather"]
    with pytest.raises(RequestError, match="tool_choice"):
        model.answer(ask(question, tools=(CALCULATOR,), tool_choice={"type": "function", "function": {"name": "nope"}}))


def test_the_answer_after_a_tool_result_uses_the_result():
    model = SimulatedModel("m", SimProfile(accuracy=0.5, latency_ms=0.0))
    request = ask("What is 37 + 48?", tools=(CALCULATOR,))
    (call,) = model.answer(request).tool_calls
    # Whatever the tool says, the answer is what it said: the model trusts its tool.
    for result, value in (("85", "85"), ('{"result": 86}', "86"), ("The value is 84.", "84")):
        answer = model.answer(after_call(request, call, result))
        assert not answer.tool_calls and answer.finish_reason == "stop"
        assert answer.text.splitlines()[-1] == f"Answer: {value}"
        assert "calculator" in answer.text


def test_a_choice_question_answers_the_option_the_tool_computed():
    model = SimulatedModel("m", PERFECT)
    q = choice_questions(1, seed=4)[0]
    request = q.request(tools=(CALCULATOR,))
    (call,) = model.answer(request).tool_calls
    value = evaluate(call.parsed_arguments()["expression"])
    assert model.answer(after_call(request, call, str(value))).text.endswith(f"Answer: {q.truth}")


def test_an_agent_loop_runs_to_the_answer():
    """call -> tool result -> answer, executing the calls the model makes."""
    model = SimulatedModel("m", SimProfile(accuracy=0.8, latency_ms=0.0))
    right = 0
    questions = arithmetic_questions(60, seed=9)
    for q in questions:
        request = q.request(tools=(CALCULATOR,))
        for _ in range(3):
            answer = model.answer(request)
            if not answer.tool_calls:
                break
            (call,) = answer.tool_calls
            request = after_call(request, call, str(evaluate(call.parsed_arguments()["expression"])))
        right += answer.text.endswith(f"Answer: {q.truth}")
    assert 0.65 < right / len(questions) < 0.95


# --- JSON answers --------------------------------------------------------------------------------


def test_json_object_gets_a_json_answer():
    model = SimulatedModel("m", PERFECT)
    answer = model.answer(ask("What is 37 + 48? Give your confidence.", response_format=ResponseFormat("json_object")))
    data = json.loads(answer.text)
    assert data["answer"] == 85 and 0 <= data["confidence"] <= 1 and "37 + 48" in data["explanation"]


class Person(pydantic.BaseModel):
    name: str
    age: int
    email: Optional[str] = None


class Extraction(pydantic.BaseModel):
    people: list[Person] = pydantic.Field(min_length=1)
    mood: Literal["happy", "sad", "neutral"]
    score: float = pydantic.Field(ge=1, le=5)


class Solved(pydantic.BaseModel):
    reasoning: str
    final_answer: int
    confidence: float


@pytest.mark.parametrize(
    "schema",
    [
        Solved.model_json_schema(),
        Extraction.model_json_schema(),
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}}, "required": ["tags"]},
        {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}, "ok": {"type": ["boolean", "null"]}}},
        {"type": "object", "properties": {"node": {"$ref": "#"}}, "required": []},
        {"type": "integer"},
    ],
    ids=["solved", "nested-defs", "min-items", "formats", "recursive", "scalar-root"],
)
def test_json_schema_answers_validate(schema):
    model = SimulatedModel("m", PERFECT)
    fmt = ResponseFormat("json_schema", "out", schema, True)
    answer = model.answer(ask("What is 6 * 7? Alice is happy; name: Alice, age: 30.", response_format=fmt))
    value = json.loads(answer.text)
    assert not list(Draft202012Validator(schema).iter_errors(value))


def test_json_schema_answer_carries_the_answer():
    model = SimulatedModel("m", PERFECT)
    fmt = ResponseFormat("json_schema", "solved", Solved.model_json_schema(), True)
    solved = Solved.model_validate_json(model.answer(ask("What is 6 * 7?", response_format=fmt)).text)
    assert solved.final_answer == 42 and "6 * 7" in solved.reasoning and 0 < solved.confidence < 1
    extracted = Extraction.model_validate_json(
        model.answer(ask("Extract: name: Alice, age: 30. She is happy.", response_format=ResponseFormat("json_schema", "x", Extraction.model_json_schema()))).text
    )
    assert extracted.people[0] == Person(name="Alice", age=30) and extracted.mood == "happy"


def test_json_object_follows_a_schema_the_prompt_states():
    # instructor's JSON mode: the schema travels in the system message.
    model = SimulatedModel("m", PERFECT)
    system = f"Return JSON that matches the following json_schema:\n\n{json.dumps(Solved.model_json_schema(), indent=2)}\n\nOnly JSON."
    request = ChatRequest(messages=(Message("system", system), Message("user", "What is 6 * 7?")), response_format=ResponseFormat("json_object"))
    assert Solved.model_validate_json(model.answer(request).text).final_answer == 42


def test_an_enum_field_takes_the_letter_of_a_choice_question():
    schema = {"type": "object", "properties": {"letter": {"enum": ["A", "B", "C", "D"]}}, "required": ["letter"]}
    model = SimulatedModel("m", PERFECT)
    for q in choice_questions(10, seed=2):
        answer = model.answer(q.request(response_format=ResponseFormat("json_schema", "c", schema)))
        assert json.loads(answer.text) == {"letter": q.truth}


def test_json_answers_are_right_at_the_models_accuracy():
    model = SimulatedModel("m", SimProfile(accuracy=0.7, latency_ms=0.0))
    questions = arithmetic_questions(400, seed=8)
    fmt = ResponseFormat("json_object")
    right = sum(str(json.loads(model.answer(q.request(response_format=fmt)).text)["answer"]) == q.truth for q in questions)
    assert right / len(questions) == pytest.approx(0.7, abs=0.06)


# --- n, logprobs, images -------------------------------------------------------------------------


def test_n_gives_independent_choices_the_first_being_the_single_answer():
    model = SimulatedModel("m", SimProfile(accuracy=0.5, latency_ms=0.0))
    request = ask("What is 17 * 23?", n=8)
    answers = model.answers(request)
    assert len(answers) == 8
    assert answers[0] == model.answer(request)
    assert len({a.text for a in answers}) > 2


@pytest.mark.parametrize("top", [0, 3])
def test_logprobs_are_openai_shaped_one_per_token(top):
    model = SimulatedModel("m", PERFECT)
    answer = model.answer(ask("What is 37 + 48?", logprobs=True, top_logprobs=top or None))
    content = answer.logprobs["content"]
    assert answer.logprobs["refusal"] is None
    assert len(content) == answer.output_tokens
    assert "".join(t["token"] for t in content) == answer.text
    for token in content:
        assert not list(TOKEN_LOGPROB.iter_errors(token))
        assert token["logprob"] <= 0 and bytes(token["bytes"]).decode() == token["token"]
        assert len(token["top_logprobs"]) == top
        if top:
            assert token["top_logprobs"][0]["token"] == token["token"]
            assert sum(math.exp(t["logprob"]) for t in token["top_logprobs"]) <= 1.0 + 1e-9
    assert model.answer(ask("What is 37 + 48?")).logprobs is None


def test_logprobs_are_surer_when_right():
    def mean_logprob(accuracy):
        model = SimulatedModel("m", SimProfile(accuracy=accuracy, latency_ms=0.0))
        values = [
            t["logprob"]
            for q in arithmetic_questions(30, seed=1)
            for t in model.answer(q.request(logprobs=True)).logprobs["content"]
        ]
        return sum(values) / len(values)

    assert mean_logprob(1.0) > mean_logprob(0.0)


def test_an_image_part_is_accepted_and_counted():
    model = SimulatedModel("m", PERFECT)
    image = ImagePart("data:image/png;base64,iVBORw0KGgo=", detail="low")
    plain = model.answer(ask("What is 2 + 2?"))
    seen = model.answer(ChatRequest(messages=(Message("user", (TextPart("What is 2 + 2?"), image)),)))
    assert seen.input_tokens == plain.input_tokens + image_tokens(image)
    assert seen.text.endswith("Answer: 4")


# --- the simulated backend -----------------------------------------------------------------------


def backend(**simulated) -> SimulatedBackend:
    config = ProviderConfig(name="sim", kind="simulated", model="sim-model", simulated={"latency_ms": 0, **simulated})
    return SimulatedBackend(config)


async def test_backend_completes_with_tool_calls_n_and_logprobs():
    sim = backend(accuracy=1.0)
    reply = await sim.complete(ask("What is 37 + 48?", tools=(CALCULATOR,), n=2, logprobs=True))
    assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].name == "calculator"
    assert [c.index for c in reply.more_choices] == [1]
    assert reply.more_choices[0].tool_calls and reply.more_choices[0].finish_reason == "tool_calls"
    assert reply.logprobs == {"content": [], "refusal": None}


async def test_backend_streams_tool_call_deltas_that_add_up_to_the_call():
    sim = backend(accuracy=1.0)
    request = ask("What is 37 + 48?", tools=(CALCULATOR,))
    items = [item async for item in sim.stream(request)]
    assert isinstance(items[-1], Reply)
    deltas = [d for item in items[:-1] for d in item.tool_calls]
    assert all(isinstance(item, Chunk) for item in items[:-1]) and len(deltas) > 2
    assert deltas[0].id and deltas[0].name == "calculator"
    assert "".join(d.arguments for d in deltas) == items[-1].tool_calls[0].arguments
    assert items[-1].tool_calls == (await sim.complete(request)).tool_calls


async def test_backend_streams_n_choices_as_chunks_of_their_choice():
    sim = backend(accuracy=0.5)
    request = ask("What is 17 * 23?", n=3)
    items = [item async for item in sim.stream(request)]
    reply = items[-1]
    first = "".join(i for i in items[:-1] if isinstance(i, str))
    assert first == reply.text
    for choice in reply.more_choices:
        text = "".join(i.delta for i in items[:-1] if isinstance(i, Chunk) and i.choice == choice.index)
        assert text == choice.content


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"extra_body": {"web_search_options": {}}}, "extra_body.web_search_options"), ({"extra_body": {"audio": {"voice": "x"}}}, "extra_body.audio")],
)
async def test_backend_refuses_what_it_cannot_honour_by_name(fields, named):
    with pytest.raises(RequestError, match=re.escape(named)) as caught:
        await backend().complete(ask("hi", **fields))
    assert caught.value.param == named.removeprefix("extra_body.") and "'sim'" in caught.value.message
    # What it can honour passes: every option of the chat surface but provider extras.
    await backend().complete(
        ask("hi", temperature=0.5, top_p=0.9, seed=1, stop=("x",), presence_penalty=0.1, logit_bias={"1": 1.0},
            user="u", metadata={"k": "v"}, store=False, reasoning_effort="low", parallel_tool_calls=False,
            response_format=ResponseFormat("text"))
    )


def test_allowed_tools_limits_the_choice_in_its_mode():
    model = SimulatedModel("m", PERFECT)
    def allowed(mode, *names):
        return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": [{"type": "function", "function": {"name": n}} for n in names]}}
    tools = (CALCULATOR, WEATHER)
    assert not model.answer(ask("What is 37 + 48?", tools=tools, tool_choice=allowed("auto", "get_weather"))).tool_calls
    forced = model.answer(ask("What is 37 + 48?", tools=tools, tool_choice=allowed("required", "get_weather")))
    assert [c.name for c in forced.tool_calls] == ["get_weather"]
    fits = model.answer(ask("What is 37 + 48?", tools=tools, tool_choice=allowed("auto", "calculator", "get_weather")))
    assert [c.name for c in fits.tool_calls] == ["calculator"]


def test_a_question_of_several_parts_gets_parallel_calls_unless_they_are_off():
    model = SimulatedModel("m", PERFECT)
    request = ask("What is 2 + 3, and what is 4 * 5?", tools=(CALCULATOR,))
    calls = model.answer(request).tool_calls
    assert [c.parsed_arguments()["expression"] for c in calls] == ["2 + 3", "4 * 5"]
    assert len({c.id for c in calls}) == 2
    assert len(model.answer(request.with_changes(parallel_tool_calls=False)).tool_calls) == 1
    turns = (Message("assistant", None, tool_calls=calls),) + tuple(
        Message("tool", str(evaluate(c.parsed_arguments()["expression"])), tool_call_id=c.id) for c in calls
    )
    answer = model.answer(request.with_changes(messages=request.messages + turns))
    assert answer.text.endswith("Answer: 5, 20")


# --- structured output through a tool ------------------------------------------------------------

FINAL_RESULT = Tool("final_result", "The final response which ends this conversation", Solved.model_json_schema())


@pytest.mark.parametrize(
    "tool",
    [
        FINAL_RESULT,  # pydantic-ai's output tool
        Tool("Solved", "Correctly extracted `Solved` with all the required parameters with correct types", Solved.model_json_schema()),  # instructor
        Tool("json_answer", "Give your final answer as this tool's input, a JSON object.", Solved.model_json_schema()),
    ],
    ids=["pydantic-ai", "instructor", "json-tool"],
)
def test_a_structured_output_tool_gets_the_answer_as_its_input(tool):
    model = SimulatedModel("m", PERFECT)
    for choice in (None, "required", {"type": "function", "function": {"name": tool.name}}):
        (call,) = model.answer(ask("What is 6 * 7?", tools=(tool,), tool_choice=choice)).tool_calls
        assert call.name == tool.name
        solved = Solved.model_validate_json(call.arguments)
        assert solved.final_answer == 42 and "6 * 7" in solved.reasoning


def test_a_named_tool_that_fits_nothing_carries_the_answer():
    # LangChain's with_structured_output: a tool named after the schema, forced by name.
    model = SimulatedModel("m", PERFECT)
    tool = Tool("Result", None, {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]})
    (call,) = model.answer(ask("What is 6 * 7?", tools=(tool,), tool_choice={"type": "function", "function": {"name": "Result"}})).tool_calls
    assert call.parsed_arguments() == {"value": 42}


def test_an_agent_calls_its_calculator_then_its_output_tool():
    model = SimulatedModel("m", PERFECT)
    request = ask("What is 37 + 48?", tools=(CALCULATOR, FINAL_RESULT))
    (first,) = model.answer(request).tool_calls
    assert first.name == "calculator"
    request = after_call(request, first, "85")
    (second,) = model.answer(request.with_changes(tool_choice="required")).tool_calls
    assert second.name == "final_result" and Solved.model_validate_json(second.arguments).final_answer == 85
    assert model.answer(request).tool_calls[0].name == "final_result"  # auto as well
