"""The workflow scheduler: a DAG from inputs, parallel branches by call order, conditions, retries, timeouts, refusals."""

from __future__ import annotations

import asyncio

import pytest

from orchestray.errors import ConfigError
from orchestray.messages import Completion, Span
from orchestray.workflow import COMPLETED, FAILED, SKIPPED, Workflow


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self):
        return self.now

    async def sleep(self, s):
        self.slept.append(s)
        self.now += s


class Model:
    """A model answering `reply(prompt)`; records prompts in the order asked."""

    def __init__(self, reply, log):
        self.reply, self.log = reply, log

    async def complete(self, request):
        prompt = request.messages[-1].text()
        self.log.append(("ask", prompt))
        await asyncio.sleep(0)
        text = self.reply(prompt)
        return Completion(content=text, model="m", provider="p", trace=Span(name="p"))


def run(wf, value, models=None, **kw):
    return asyncio.run(wf.run(value, models, **kw))


def test_independent_steps_run_at_once_and_dependents_wait():
    log, both = [], asyncio.Event()
    arrived = []

    async def branch(text, name):
        log.append(f"start {name}")
        arrived.append(name)
        if len(arrived) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # returns only when the other branch has started too
        log.append(f"end {name}")
        return f"{name}:{text}"

    wf = Workflow("w")
    wf.step("extract", fn=lambda doc: doc.upper())
    wf.step("left", fn=lambda text: branch(text, "left"), inputs={"text": "extract"})
    wf.step("right", fn=lambda text: branch(text, "right"), inputs={"text": "extract"})
    wf.step("join", fn=lambda a, b: log.append("join") or a + "|" + b, inputs={"a": "left", "b": "right"})
    assert wf.build() == [["extract"], ["left", "right"], ["join"]]
    result = run(wf, "doc")
    assert log[:2] == ["start left", "start right"] and log[-1] == "join"
    assert result.status == COMPLETED and result["join"] == "left:DOC|right:DOC"
    assert result.order == ["extract", "left", "right", "join"]


def test_model_steps_read_earlier_outputs_by_name_and_path():
    log = []
    model = Model(lambda p: "Answer: invoice" if p.startswith("Classify") else f"echo({p})", log)
    wf = Workflow("w")
    wf.step("parts", fn=lambda doc: {"text": doc, "pages": [1, 2]})
    wf.step("classify", model="m", prompt="Classify: {parts.text}", parse="choice", choices=["invoice", "spam"])
    wf.step("pages", model="m", prompt="Pages {parts.pages.1} of {{braces}}")
    result = run(wf, "hello", {"m": model})
    assert result["classify"] == "invoice" and result.steps["classify"].trace is not None
    assert ("ask", "Pages 2 of {braces}") in log


def test_conditions_skip_a_step_and_the_steps_that_need_it():
    wf = Workflow("w")
    wf.step("classify", fn=lambda doc: "spam")
    wf.step("summary", fn=lambda doc: "s", when=lambda ctx: ctx["classify"] != "spam")  # needs classify
    wf.step("validate", fn=lambda s: s, inputs={"s": "summary"})
    wf.step("audit", fn=lambda doc: "audited")
    result = run(wf, "doc")
    assert [result.steps[n].status for n in ("classify", "summary", "validate", "audit")] == [
        COMPLETED, SKIPPED, SKIPPED, COMPLETED]
    assert result.steps["summary"].error == "condition false" and result.status == COMPLETED
    assert wf.dependencies()["summary"] == ["classify"]


def test_retries_then_success_and_backoff_on_the_injected_clock():
    clock, calls = FakeClock(), []

    def flaky(doc):
        calls.append(doc)
        if len(calls) < 3:
            raise RuntimeError("try again")
        return "ok"

    wf = Workflow("w").step("a", fn=flaky, retries=3, retry_delay_s=1.0)
    result = run(wf, "d", clock=clock, sleep=clock.sleep)
    step = result.steps["a"]
    assert step.status == COMPLETED and step.attempts == 3 and clock.slept == [1.0, 2.0]
    assert step.duration_s == 3.0  # measured on the fake clock


def test_fail_fast_cancels_running_steps_and_skips_the_rest():
    started = []

    async def slow(doc):
        started.append("slow")
        await asyncio.Event().wait()

    def broken(doc):
        raise ValueError("bad input")

    wf = Workflow("w").step("slow", fn=slow).step("broken", fn=broken, retries=1)
    wf.step("later", fn=lambda x: x, inputs={"x": "slow"})
    result = run(wf, "d")
    assert result.status == FAILED
    assert result.steps["broken"].status == FAILED and result.steps["broken"].error == "ValueError: bad input"
    assert result.steps["broken"].attempts == 2
    assert result.steps["slow"].status == SKIPPED and "cancelled" in result.steps["slow"].error
    assert result.steps["later"].status == SKIPPED


def test_continue_skips_only_what_needs_the_failed_step():
    wf = Workflow("w", on_error="continue")
    wf.step("broken", fn=lambda d: 1 / 0)
    wf.step("needs_it", fn=lambda x: x, inputs={"x": "broken"})
    wf.step("other", fn=lambda d: "fine")
    result = run(wf, "d")
    assert result.steps["other"].status == COMPLETED and result.steps["needs_it"].status == SKIPPED
    assert "ZeroDivisionError" in result.steps["broken"].error


def test_a_timeout_fails_the_step():
    async def hang(doc):
        await asyncio.Event().wait()

    result = run(Workflow("w").step("hang", fn=hang, timeout_s=0.01, retries=1), "d")
    assert result.steps["hang"].status == FAILED and "timed out" in result.steps["hang"].error
    assert result.steps["hang"].attempts == 2


def test_cycles_and_unknown_inputs_are_refused_at_build():
    wf = Workflow("w")
    wf.step("a", fn=lambda x: x, inputs={"x": "c"})
    wf.step("b", fn=lambda x: x, inputs={"x": "a"})
    wf.step("c", fn=lambda x: x, inputs={"x": "b.text"})
    with pytest.raises(ConfigError, match="cycle: a -> c -> b -> a|cycle: .* -> .* -> .*"):
        wf.build()
    unknown = Workflow("w").step("a", model="m", prompt="Summarize {extrct}")
    with pytest.raises(ConfigError, match="'extrct', which is no step"):
        unknown.build()
    with pytest.raises(ConfigError, match="either `model`"):
        Workflow("w").step("a")
    with pytest.raises(ConfigError, match="already has"):
        Workflow("w").step("a", fn=len).step("a", fn=len)


def test_callbacks_async_and_sync_see_every_step_and_the_shared_context():
    seen = []

    async def on_finish(result):
        seen.append((result.name, result.status))

    def remember(doc, ctx):
        ctx.shared.write("length", len(doc), step="remember")
        return "ok"

    wf = Workflow("w").step("remember", fn=remember).step(
        "read", fn=lambda ctx, x: ctx.shared["length"] * 2, inputs={"x": "remember"})
    result = run(wf, "abcd", on_start=lambda name: seen.append(("start", name)), on_finish=on_finish,
                 shared={"seeded": True})
    assert result["read"] == 8
    assert seen == [("start", "remember"), ("remember", COMPLETED), ("start", "read"), ("read", COMPLETED)]


def test_remote_steps_run_off_the_event_loop_without_ray(monkeypatch):
    import sys
    import threading

    # A whole-suite run has the integration session's Ray connected in this process.
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    wf = Workflow("w").step("heavy", fn=lambda doc: threading.current_thread().name, remote=True)
    assert run(wf, "d")["heavy"] != threading.main_thread().name


def test_models_come_from_a_directory_with_get_and_steps_read_the_input_by_name():
    log = []

    class Directory:
        def get(self, name):
            log.append(name)
            return Model(lambda p: f"{name} says {p}", log)

    wf = Workflow("w").step("ask", model="small", prompt="hi {input}", temperature=0.2)
    wf.step("count", fn=lambda n, said: len(said) + n, inputs={"n": "input.size", "said": "ask"})
    result = run(wf, {"size": 1, "__str__": "x"}, Directory())
    assert result["ask"].startswith("small says hi") and log[0] == "small"
    assert result["count"] == len(result["ask"]) + 1


def test_a_broken_condition_fails_its_step_and_stops_the_run_at_once():
    async def hang(doc):
        await asyncio.Event().wait()

    wf = Workflow("w").step("hang", fn=hang).step("odd", fn=len, when=lambda ctx: ctx["nothing"])
    result = run(wf, "d")
    assert result.steps["odd"].status == FAILED and result.steps["odd"].error.startswith("when: KeyError")
    assert result.steps["hang"].status == SKIPPED  # cancelled without waiting for it


def test_steps_emit_completed_and_failed_events_on_a_bus():
    from orchestray.events import EventBus

    bus, seen = EventBus(), []
    bus.on("extract.completed", lambda r: seen.append((r.name, r.output)))
    bus.on("check.failed", lambda r: seen.append((r.name, r.error)))

    async def main():
        async with bus:
            wf = Workflow("w", on_error="continue").step("extract", fn=str.upper).step("check", fn=lambda d: 1 / 0)
            await wf.run("doc", events=bus)
            await bus.join()

    asyncio.run(main())
    assert sorted(seen) == [("check", "ZeroDivisionError: division by zero"), ("extract", "DOC")]


def test_a_misspelt_option_is_refused_when_the_step_is_added():
    with pytest.raises(ConfigError, match="retry is no step option"):
        Workflow("w").step("a", model="m", prompt="x", retry=3)
    with pytest.raises(ConfigError, match="model steps only"):
        Workflow("w").step("a", fn=len, temperature=0.5)
