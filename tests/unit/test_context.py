"""Context between models: history within a budget, summaries by a named model, the shared store."""

from __future__ import annotations

import asyncio

from orchestray.context import History, SharedContext, fit_inputs, message_tokens, trim_history
from orchestray.messages import Completion, Message
from orchestray.workflow import Workflow


class Summarizer:
    def __init__(self):
        self.asked = []

    async def complete(self, request):
        self.asked.append(request.messages[-1].text())
        return Completion(content="short summary", model="s", provider="s")


def turns(n, words=20):
    return [Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "word " * words) for i in range(n)]


def test_trim_keeps_the_system_message_and_the_latest_turns_that_fit():
    messages = [Message("system", "be brief"), *turns(10)]
    budget = message_tokens(messages[0]) + 3 * message_tokens(messages[1])
    kept = trim_history(messages, budget)
    assert kept[0].role == "system" and kept[1:] == messages[-3:]
    assert sum(message_tokens(m) for m in kept) <= budget
    assert trim_history(messages, 1) == [messages[0], messages[-1]]  # the last turn stays whatever the budget


def test_history_over_budget_is_summarized_by_the_named_model():
    summarizer = Summarizer()
    history = History(budget=120, summarizer=summarizer, keep_last=2)
    history.add(Message("system", "be brief"), *turns(8))
    messages = asyncio.run(history.messages())
    assert len(summarizer.asked) == 1 and "turn 0" in summarizer.asked[0] and "turn 5" in summarizer.asked[0]
    assert "turn 6" not in summarizer.asked[0]  # the kept turns are not summarized
    assert [m.role for m in messages] == ["system", "system", "user", "assistant"]
    assert messages[1].text().endswith("short summary") and sum(message_tokens(m) for m in messages) <= 120
    history.add(*turns(1, words=1))
    assert asyncio.run(history.messages())[1].text().endswith("short summary") and len(summarizer.asked) == 1


def test_within_budget_nothing_changes_and_without_a_summarizer_it_trims():
    history = History(budget=10_000)
    history.add(*turns(4))
    assert asyncio.run(history.messages()) == turns(4)
    small = History(budget=60)
    small.add(*turns(6))
    trimmed = asyncio.run(small.messages())
    assert trimmed == trim_history(turns(6), 60, 4) == turns(6)[-4:]  # keep_last=4 outweighs the budget


def test_stage_outputs_over_budget_are_summarized_between_steps():
    summarizer, asked = Summarizer(), []

    class Model:
        async def complete(self, request):
            asked.append(request.messages[-1].text())
            return Completion(content="done", model="m", provider="m")

    wf = Workflow("w", summarize_with="small", input_budget_tokens=50)
    wf.step("extract", fn=lambda doc: doc * 50)
    wf.step("summary", model="large", prompt="Summarize: {extract}")
    result = asyncio.run(wf.run("long text ", {"small": summarizer, "large": Model()}))
    assert result["summary"] == "done" and asked == ["Summarize: short summary"]
    values = asyncio.run(fit_inputs({"a": "x" * 400, "b": "short"}, 60))
    assert values["b"] == "short" and len(values["a"]) <= 30 * 4


def test_shared_context_records_who_wrote_what():
    shared = SharedContext({"seed": 1})
    shared.write("customer", "acme", step="extract")
    shared["note"] = "n"
    assert dict(shared) == {"seed": 1, "customer": "acme", "note": "n"}
    assert shared.history == [("customer", "extract"), ("note", None)]
