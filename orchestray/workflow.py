"""Workflows: model steps and Python steps wired by their inputs into a DAG, run with conditions, retries and timeouts.

    wf = Workflow("document_analysis")
    wf.step("extract", model="small", prompt="Extract the text of: {input}")
    wf.step("classify", model="small", prompt="Classify: {extract}", parse="choice", choices=["invoice", "spam"])
    wf.step("entities", fn=find_entities, inputs={"text": "extract"})      # sync or async
    wf.step("summary", model="large", prompt="{extract}", when=lambda ctx: ctx["classify"] != "spam",
            retries=3, timeout_s=60)
    result = await wf.run(document, models)     # models: name -> object with `complete(request)`,
                                                # or a ModelDirectory-like `get(name)`

What a step needs comes from its prompt's `{name}` / `{name.path}` fields, its `inputs` (a
mapping of argument name to step name or path like `extract.text`, or a list of names), the step
names its `when` condition mentions as string constants (`ctx["classify"]`), and `after=`.
`input` is the workflow's input. Unknown names and cycles are refused by `build()` (which `run`
calls) with a ConfigError naming them.

Steps whose inputs are ready run at once. A failed step (after its retries; a timeout counts as a
failure) stops the run with `on_error="fail_fast"`: running steps are cancelled and the rest
skipped; with "continue" only the steps that need it are skipped. A false `when` skips its step,
and the steps that need it. `result.steps[name]` has status (completed / failed / skipped),
output, duration, error, attempts and, for a model step, the trace of its last call.

A Python step receives its inputs as keyword arguments (the workflow input, positionally, when it
names none) and `ctx` if it has such a parameter: the run's `WorkflowContext`, whose `shared`
dict steps read and write. `remote=True` runs a Python step as a Ray task when Ray is initialised
in this process (a thread otherwise), so heavy handlers use the cluster. Callbacks `on_start(name)`
and `on_finish(step_result)`, sync or async, see every step. The YAML `pattern: pipeline` routes
remain the config form of model-only workflows.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestray.context import SharedContext, fit_inputs
from orchestray.errors import ConfigError
from orchestray.messages import ChatRequest, Message, Span
from orchestray.policies.extraction import Extractor, answer_span, extractor, normalize_text

__all__ = ["Workflow", "Step", "StepResult", "WorkflowResult", "WorkflowContext", "resolve_path", "COMPLETED",
           "FAILED", "SKIPPED"]

COMPLETED, FAILED, SKIPPED = "completed", "failed", "skipped"
_FIELD = re.compile(r"(?<!\{)\{([A-Za-z_]\w*(?:\.\w+)*)\}(?!\})")
_MISSING = object()


def resolve_path(value: Any, path: Sequence[str]) -> Any:
    """`value` followed down `path`: mapping keys, list indexes, then attributes."""
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit():
            value = value[int(part)]
        elif hasattr(value, part):
            value = getattr(value, part)
        else:
            raise KeyError(f"no {part!r} in {type(value).__name__} {str(value)[:60]!r}")
    return value


@dataclass(frozen=True)
class Step:
    """One step as declared; see the module docstring."""

    name: str
    model: str | None = None
    prompt: str | None = None
    system: str | None = None
    parse: Extractor | Callable[[str], Any] | None = None
    choices: tuple[str, ...] = ()
    fn: Callable[..., Any] | None = None
    inputs: Mapping[str, str] | None = None
    when: Callable[[WorkflowContext], bool] | None = None
    after: tuple[str, ...] = ()
    retries: int = 0
    retry_delay_s: float = 0.0
    timeout_s: float | None = None
    remote: bool = False
    request: Mapping[str, Any] = field(default_factory=dict)

    def needs(self) -> list[str]:
        """The names this step reads (steps, or `input`), in order of first mention."""
        names: list[str] = []
        if self.prompt is not None:
            names += [m.split(".")[0] for m in _FIELD.findall(self.prompt)]
        names += [ref.split(".")[0] for ref in (self.inputs or {}).values()]
        names += list(self.after)
        return list(dict.fromkeys(names))


@dataclass
class StepResult:
    name: str
    status: str
    output: Any = None
    duration_s: float = 0.0
    error: str | None = None
    attempts: int = 0
    trace: Span | None = None


@dataclass
class WorkflowResult:
    name: str
    status: str  # completed (no step failed) | failed
    steps: dict[str, StepResult]
    duration_s: float
    order: list[str]  # the steps in the order they started

    @property
    def output(self) -> Any:
        """The output of the last declared step that completed."""
        done = [r for r in self.steps.values() if r.status == COMPLETED]
        return done[-1].output if done else None

    def __getitem__(self, name: str) -> Any:
        return self.steps[name].output


class WorkflowContext(Mapping[str, Any]):
    """What conditions and Python steps see: `ctx["input"]`, each finished step's output by
    name, `ctx.status(name)`, and `ctx.shared`, a store the steps read and write."""

    def __init__(self, value: Any, shared: SharedContext):
        self.input = value
        self.results: dict[str, StepResult] = {}
        self.shared = shared

    def __getitem__(self, name: str) -> Any:
        if name == "input":
            return self.input
        result = self.results[name]
        return result.output

    def __iter__(self):
        yield "input"
        yield from self.results

    def __len__(self) -> int:
        return 1 + len(self.results)

    def status(self, name: str) -> str | None:
        result = self.results.get(name)
        return result.status if result else None

    def lookup(self, ref: str) -> Any:
        head, *path = ref.split(".")
        return resolve_path(self[head], path)


def _names_in(fn: Callable[..., Any]) -> set[str]:
    """The string constants of a function's code (and its nested code): the names it looks up."""
    code = getattr(fn, "__code__", None)
    found: set[str] = set()
    stack = [code] if code is not None else []
    while stack:
        c = stack.pop()
        for const in c.co_consts:
            if isinstance(const, str):
                found.add(const)
            elif hasattr(const, "co_consts"):
                stack.append(const)
    return found


def _label(reply: str, choices: Sequence[str]) -> str | None:
    """The label a classification reply gives: its stated answer if that is a label, else the
    label it names last."""
    span = answer_span(reply)
    by_name = {normalize_text(c): c for c in choices}
    if span is not None and normalize_text(span) in by_name:
        return by_name[normalize_text(span)]
    best, at = None, -1
    for c in choices:
        for m in re.finditer(rf"(?i)\b{re.escape(c)}\b", reply):
            if m.start() > at:
                best, at = c, m.start()
    return best


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Workflow:
    """A named set of steps; `step(...)` adds one (chainable), `run(input, models)` runs them."""

    def __init__(self, name: str, *, on_error: str = "fail_fast", summarize_with: str | None = None,
                 input_budget_tokens: int | None = None):
        """`input_budget_tokens` bounds what a model step's prompt takes from earlier steps: over
        it, those inputs are summarized by the model `summarize_with` (cut to the budget without
        one) before the prompt is sent (`orchestray.context.fit_inputs`)."""
        if on_error not in ("fail_fast", "continue"):
            raise ConfigError(f'on_error is "fail_fast" or "continue", got {on_error!r}')
        self.name = name
        self.on_error = on_error
        self.summarize_with = summarize_with
        self.input_budget_tokens = input_budget_tokens
        self.steps: dict[str, Step] = {}

    def step(
        self,
        name: str,
        *,
        model: str | None = None,
        prompt: str | None = None,
        system: str | None = None,
        parse: str | Mapping[str, Any] | Callable[[str], Any] | Extractor | None = None,
        choices: Sequence[str] | None = None,
        fn: Callable[..., Any] | None = None,
        inputs: Mapping[str, str] | Sequence[str] | None = None,
        when: Callable[[WorkflowContext], bool] | None = None,
        after: Sequence[str] = (),
        retries: int = 0,
        retry_delay_s: float = 0.0,
        timeout_s: float | None = None,
        remote: bool = False,
        **request: Any,
    ) -> Workflow:
        """Add a model step (`model` and `prompt`; `request` fields such as temperature go into its
        ChatRequest) or a Python step (`fn`)."""
        if not re.fullmatch(r"[A-Za-z_]\w*", name) or name == "input":
            raise ConfigError(f"workflow step name {name!r}: use letters, digits and _ (not 'input')")
        if name in self.steps:
            raise ConfigError(f"workflow {self.name!r} already has a step {name!r}")
        if (fn is None) == (model is None):
            raise ConfigError(f"step {name!r}: give either `model` (with `prompt`) or `fn`")
        if model is not None and not prompt:
            raise ConfigError(f"step {name!r}: a model step needs a `prompt`")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"step {name!r}: retries must be a whole number >= 0")
        if timeout_s is not None and not timeout_s > 0:
            raise ConfigError(f"step {name!r}: timeout_s must be > 0")
        unknown = sorted(set(request) - set(ChatRequest.__struct_fields__) - {"messages"}) if request else []
        if unknown or (request and fn is not None):
            what = ", ".join(unknown or sorted(request))
            raise ConfigError(f"step {name!r}: {what} {'is no step option or request field' if unknown else 'applies to model steps only'}")
        if isinstance(inputs, Sequence) and not isinstance(inputs, str):
            inputs = {ref.replace(".", "_"): ref for ref in inputs}
        parser: Extractor | Callable[[str], Any] | None = None
        if parse is not None:
            if parse == "choice" and choices and not all(len(c) == 1 for c in choices):
                parser = None  # labels: read by `_label`
            elif parse == "choice" and choices:
                parser = extractor("choice", choices="".join(choices))
            elif isinstance(parse, (str, Mapping, Extractor)):
                parser = extractor(parse)
            elif callable(parse):
                parser = parse
            else:
                raise ConfigError(f"step {name!r}: parse is an extractor kind, a mapping or a callable")
        self.steps[name] = Step(
            name=name, model=model, prompt=prompt, system=system, parse=parser, choices=tuple(choices or ()),
            fn=fn, inputs=dict(inputs) if inputs else None, when=when, after=tuple(after), retries=retries,
            retry_delay_s=retry_delay_s, timeout_s=timeout_s, remote=remote, request=request,
        )
        return self

    # --- the graph --------------------------------------------------------------------------

    def dependencies(self) -> dict[str, list[str]]:
        """Each step's predecessors: the steps it reads, and those its `when` names."""
        deps: dict[str, list[str]] = {}
        for name, step in self.steps.items():
            needs = [n for n in step.needs() if n != "input"]
            if step.when is not None:
                needs += sorted(n for n in _names_in(step.when) if n in self.steps and n != name)
            deps[name] = list(dict.fromkeys(needs))
        return deps

    def build(self) -> list[list[str]]:
        """Check the graph and return its levels (each level's steps need only earlier levels).

        Raises ConfigError for a name that is no step, and for a cycle (naming it)."""
        if not self.steps:
            raise ConfigError(f"workflow {self.name!r} has no steps")
        deps = self.dependencies()
        for name, needs in deps.items():
            unknown = [n for n in needs if n not in self.steps]
            if unknown:
                raise ConfigError(f"workflow {self.name!r}: step {name!r} reads {', '.join(map(repr, unknown))}, "
                                  f"which is no step (steps: {', '.join(self.steps)}; the input is 'input')")
        levels: list[list[str]] = []
        placed: set[str] = set()
        while len(placed) < len(deps):
            level = [n for n, needs in deps.items() if n not in placed and all(d in placed for d in needs)]
            if not level:
                raise ConfigError(f"workflow {self.name!r} has a cycle: {' -> '.join(_cycle(deps, placed))}")
            levels.append(level)
            placed.update(level)
        return levels

    # --- running ----------------------------------------------------------------------------

    async def run(
        self,
        value: Any,
        models: Any = None,
        *,
        shared: SharedContext | Mapping[str, Any] | None = None,
        on_start: Callable[[str], Any] | None = None,
        on_finish: Callable[[StepResult], Any] | None = None,
        events: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> WorkflowResult:
        """Run every step on `value`; model steps call `models` (see the module docstring).

        With `events` (an `orchestray.events.EventBus`), each step that ran emits
        `<step>.completed` or `<step>.failed` with its `StepResult`, so handlers can follow a run."""
        self.build()
        deps = self.dependencies()
        resolve = _resolver(models)
        store = shared if isinstance(shared, SharedContext) else SharedContext(shared)
        ctx = WorkflowContext(value, store)
        started = clock()
        order: list[str] = []
        running: dict[asyncio.Task, str] = {}
        stopping = False

        def settle(result: StepResult) -> None:
            ctx.results[result.name] = result

        async def finished(result: StepResult) -> None:
            settle(result)
            if on_finish is not None:
                await _maybe_await(on_finish(result))
            if events is not None and result.status in (COMPLETED, FAILED):
                await events.emit(f"{result.name}.{result.status}", result)

        try:
            while len(ctx.results) < len(self.steps):
                for name, step in self.steps.items():
                    if name in ctx.results or name in running.values():
                        continue
                    states = [ctx.status(d) for d in deps[name]]
                    if stopping:
                        await finished(StepResult(name, SKIPPED, error="the workflow stopped: a step failed"))
                        continue
                    if any(s in (FAILED, SKIPPED) for s in states):
                        bad = [d for d, s in zip(deps[name], states) if s in (FAILED, SKIPPED)]
                        await finished(StepResult(name, SKIPPED, error=f"needs {', '.join(bad)}, which did not complete"))
                        continue
                    if any(s is None for s in states):
                        continue
                    if step.when is not None:
                        try:
                            go = bool(step.when(ctx))
                        except Exception as err:  # a broken condition fails its step, not the run
                            await finished(StepResult(name, FAILED, error=f"when: {type(err).__name__}: {err}"))
                            stopping = stopping or self.on_error == "fail_fast"
                            continue
                        if not go:
                            await finished(StepResult(name, SKIPPED, error="condition false"))
                            continue
                    order.append(name)
                    if on_start is not None:
                        await _maybe_await(on_start(name))
                    running[asyncio.ensure_future(self._attempts(step, ctx, resolve, clock, sleep))] = name
                if stopping and running:
                    await self._cancel(running, finished)
                if not running:
                    continue  # everything left was settled without running; loop to check
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    result = task.result()
                    await finished(result)
                    if result.status == FAILED and self.on_error == "fail_fast":
                        stopping = True
        finally:
            for task in running:
                task.cancel()
        status = FAILED if any(r.status == FAILED for r in ctx.results.values()) else COMPLETED
        steps = {name: ctx.results[name] for name in self.steps}
        return WorkflowResult(self.name, status, steps, clock() - started, order)

    @staticmethod
    async def _cancel(running: dict[asyncio.Task, str], finished) -> None:
        """Cancel the running steps (fail_fast): each ends skipped."""
        for task in running:
            task.cancel()
        for task, name in list(running.items()):
            try:
                await task
            except asyncio.CancelledError:
                pass
            await finished(StepResult(name, SKIPPED, error="cancelled: another step failed"))
        running.clear()

    async def _attempts(self, step: Step, ctx: WorkflowContext, resolve, clock, sleep) -> StepResult:
        started = clock()
        error: str | None = None
        trace: Span | None = None
        for attempt in range(1, step.retries + 2):
            try:
                work = self._once(step, ctx, resolve)
                output, trace = await (asyncio.wait_for(work, step.timeout_s) if step.timeout_s else work)
                return StepResult(step.name, COMPLETED, output, clock() - started, None, attempt, trace)
            except asyncio.TimeoutError:
                error = f"timed out after {step.timeout_s} s"
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
                trace = getattr(err, "span", None) or trace
            if attempt <= step.retries and step.retry_delay_s:
                await sleep(step.retry_delay_s * 2 ** (attempt - 1))
        return StepResult(step.name, FAILED, None, clock() - started, error, step.retries + 1, trace)

    async def _once(self, step: Step, ctx: WorkflowContext, resolve) -> tuple[Any, Span | None]:
        if step.fn is not None:
            return await _call_fn(step, ctx), None
        refs = list(dict.fromkeys(_FIELD.findall(step.prompt or "")))
        values = {ref: ctx.lookup(ref) for ref in refs}
        if self.input_budget_tokens is not None:
            summarizer = resolve(self.summarize_with) if self.summarize_with else None
            values = await fit_inputs(values, self.input_budget_tokens, summarizer)
        prompt = _FIELD.sub(lambda m: _text(values[m.group(1)]), step.prompt or "")
        prompt = prompt.replace("{{", "{").replace("}}", "}")
        messages = ((Message("system", step.system),) if step.system else ()) + (Message("user", prompt),)
        request = ChatRequest(messages=messages, **dict(step.request))
        completion = await resolve(step.model).complete(request)
        text = completion.content or ""
        if step.choices and step.parse is None:
            output = _label(text, step.choices)
            if output is None:
                raise ValueError(f"the reply names none of {', '.join(step.choices)}: {text[:80]!r}")
        elif step.parse is not None:
            output = step.parse(text)
            if output is None:
                raise ValueError(f"could not parse the reply: {text[:80]!r}")
        else:
            output = text.strip()
        return output, completion.trace


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


async def _call_fn(step: Step, ctx: WorkflowContext) -> Any:
    fn = step.fn
    assert fn is not None
    args: tuple[Any, ...] = ()
    kwargs = {arg: ctx.lookup(ref) for arg, ref in (step.inputs or {}).items()}
    if not step.inputs:
        args = (ctx.input,)
    try:
        wants_ctx = "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants_ctx = False
    if wants_ctx:
        kwargs["ctx"] = ctx
    if step.remote:
        ray = sys.modules.get("ray")  # only when the caller runs on Ray: importing it is heavy
        if ray is not None and ray.is_initialized() and not wants_ctx:
            return await ray.remote(fn).remote(*args, **kwargs)
        if not inspect.iscoroutinefunction(fn):
            return await asyncio.to_thread(fn, *args, **kwargs)
    return await _maybe_await(fn(*args, **kwargs))


def _resolver(models: Any) -> Callable[[str], Any]:
    """`models` as a function name -> model: a mapping, a `get(name)` directory, or a function."""
    if models is None:
        def missing(name: str) -> Any:
            raise ConfigError(f"the workflow's model step asks for {name!r}, but run() was given no models")
        return missing
    if isinstance(models, Mapping):
        return models.__getitem__
    if hasattr(models, "get") and callable(models.get):
        return models.get
    if callable(models):
        return models
    raise ConfigError("models is a mapping, an object with get(name), or a function name -> model")


def _cycle(deps: Mapping[str, list[str]], placed: set[str]) -> list[str]:
    """One cycle among the steps not placed, as a path that returns to its start."""
    left = {n: [d for d in ds if d not in placed] for n, ds in deps.items() if n not in placed}
    path: list[str] = []
    node = next(iter(left))
    while node not in path:
        path.append(node)
        node = left[node][0]
    return path[path.index(node):] + [node]
