"""The Python API: `AsyncClient` calls providers, routes and ad-hoc patterns; `Client` is its blocking twin.

    AsyncClient(config, runtime) ── Runtime.registry(config) ── Registry ── get(name) / adhoc(route)
                                    RayRuntime: shared provider actors     (providers and routes)
                                    LocalRuntime: providers in-process

Requests are built from OpenAI's chat-completions fields by the same translation the HTTP door
uses (`openai_format.parse_chat_body`), and pattern options are validated by the config's route
models, so a mistake reads the same at every door.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping, Sequence

import yaml

from orchestray.batch import BatchOptions, OutputRecord, run_batch
from orchestray.batch_format import write_request_lines
from orchestray.config import Config, load_config, parse_config
from orchestray.messages import ChatRequest, Chunk, Completion, Message
from orchestray.openai_format import message_dict, parse_chat_body
from orchestray.patterns import PATTERNS, Pattern
from orchestray.registry import Registry

from orchestray._runtime import RayRuntime, Runtime, runtime_for

__all__ = ["AsyncClient", "Client"]

Prompt = str | Sequence[Message | Mapping[str, Any]] | ChatRequest



# Clients unpickled in one process for the same config and cluster: one each, shared. Every Ray
# task a worker process runs then reuses one client (one event loop thread, one set of
# channels to the provider actors) instead of leaving one behind per task.
_UNPICKLED: dict[tuple, Any] = {}
_UNPICKLED_LOCK = threading.Lock()


def _unpickle(cls, config: Config, runtime: Runtime):
    if not isinstance(runtime, RayRuntime):
        return cls(config, runtime)
    key = (cls, config.model_dump_json(), runtime.address)
    with _UNPICKLED_LOCK:
        client = _UNPICKLED.get(key)
        if client is None:
            client = _UNPICKLED[key] = cls(config, runtime)
        return client


def _config(config: str | os.PathLike | Mapping[str, Any] | Config | None) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config), "<config dict>")
    if isinstance(config, str) and "\n" in config:
        return parse_config(yaml.safe_load(config), "<config text>")
    return load_config(config)


def build_request(model: str, prompt: Prompt, fields: Mapping[str, Any]) -> ChatRequest:
    """A request from a prompt (text, OpenAI messages, or `Message`s) and OpenAI request fields."""
    if isinstance(prompt, ChatRequest):
        if fields:
            raise TypeError(f"request fields ({', '.join(fields)}) go in the ChatRequest itself when you pass one")
        return prompt.with_changes(model=model)
    if "stream" in fields:
        raise TypeError("stream= is not a field here: call stream() for a streamed answer")
    if isinstance(prompt, str):
        messages: list[Any] = [{"role": "user", "content": prompt}]
    else:
        messages = [message_dict(m) if isinstance(m, Message) else m for m in prompt]
    return parse_chat_body({**fields, "model": model, "messages": messages})


async def _chunks(model: Any, request: ChatRequest) -> AsyncIterator[Chunk]:
    async for chunk in model.stream(request):
        yield chunk


def _split_options(pattern: Pattern, options: dict[str, Any]) -> dict[str, Any]:
    """Take the pattern's own options out of `options` (what is left are request fields). An
    option goes by its route name (`temperature`: an ensemble's samples') or its HTTP one
    (`sample_temperature`)."""
    names = {**{f: f for f in pattern.options()}, **{http: f for f, http in pattern.renamed.items()}}
    return {names[name]: options.pop(name) for name in list(options) if name in names}


def _adhoc_signature(pattern: Pattern, asynchronous: bool) -> tuple[inspect.Signature, str]:
    """The ad-hoc method's signature and doc, from the pattern's route model."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P(pattern.members, P.POSITIONAL_OR_KEYWORD),
              P("prompt", P.POSITIONAL_OR_KEYWORD, annotation=Prompt)]
    described = []
    for name, info in pattern.options().items():
        default = P.empty if info.is_required() else info.get_default(call_default_factory=True)
        params.append(P(name, P.KEYWORD_ONLY, default=default, annotation=info.annotation))
        described.append(name if default is P.empty else f"{name}={default!r}")
    params.append(P("stream", P.KEYWORD_ONLY, default=False, annotation=bool))
    params.append(P("fields", P.VAR_KEYWORD))
    renamed = "".join(f" `{http}` is another name for `{f}`." for f, http in pattern.renamed.items())
    pieces = "an async iterator of" if asynchronous else "an iterator of"
    doc = (f"{pattern.summary}\n\nRun once over `{pattern.members}` as a `{pattern.name}` route of the config would be, "
           f"with its options: {', '.join(described)}.{renamed} Any other keyword is an OpenAI request field "
           "(`max_tokens=64`, ...). A bad option raises RequestError worded as the config's error. "
           f"`stream=True` gives {pieces} `Chunk`s instead, as `stream()` does for a named route "
           "(the last has `done=True` and the whole `Completion`).")
    returned = AsyncIterator[Chunk] if asynchronous else Iterator[Chunk]
    return inspect.Signature(params, return_annotation=Completion | returned), doc


def _adhoc_method(pattern: Pattern, asynchronous: bool):
    if asynchronous:
        async def method(self, members, prompt, *, stream=False, **options):
            return await self._pattern(pattern, members, prompt, options, stream)
    else:
        def method(self, members, prompt, *, stream=False, **options):
            answer = self._run(self._async._pattern(pattern, members, prompt, options, stream))
            return self._iterate(answer) if stream else answer
    method.__signature__, method.__doc__ = _adhoc_signature(pattern, asynchronous)
    method.__name__ = pattern.name
    return method


class AsyncClient:
    """Calls the providers and routes of `config` (a path, YAML text, a dict, a `Config`, or None
    for the embedded default), and runs patterns ad hoc.

    `runtime="ray"` joins `address` (or RAY_ADDRESS), else starts a local Ray instance, and
    calls the cluster's shared provider actors; `runtime="local"` runs everything in this
    process without Ray. Picklable: an unpickled client (in a Ray task or actor, say) connects
    afresh to the same providers (one client per process and config on Ray, however many
    copies arrive).
    """

    def __init__(
        self,
        config: str | os.PathLike | Mapping[str, Any] | Config | None = None,
        runtime: str | Runtime = "ray",
        address: str | None = None,
    ):
        self.config = _config(config)
        self.runtime = runtime_for(runtime, address)
        self._registry: Registry | None = None
        self._starting: asyncio.Future | None = None

    def __reduce__(self):
        return (_unpickle, (AsyncClient, self.config, self.runtime))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(runtime={self.runtime.name!r}, models={self.config.model_names()!r})"

    async def __aenter__(self) -> AsyncClient:
        await self._models()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        registry, self._registry, self._starting = self._registry, None, None
        if registry is not None:
            await registry.close()  # its store's connections (a Redis client), when it opened one
        await self.runtime.close()

    def models(self) -> list[str]:
        """The names callable here: providers, then routes."""
        return self.config.model_names()

    async def _models(self) -> Registry:
        if self._registry is not None:
            return self._registry
        if self._starting is None or self._starting.get_loop() is not asyncio.get_running_loop():
            self._starting = asyncio.ensure_future(self.runtime.registry(self.config))
        registry = await asyncio.shield(self._starting)
        self._registry = registry
        return registry

    # Single calls ──────────────────────────────────────────────────────────────────────────

    async def complete(self, model: str, prompt: Prompt, **fields: Any) -> Completion:
        """One answer from a provider or route. `prompt` is text, OpenAI messages (dicts) or
        `Message`s, or a whole `ChatRequest`; `fields` are OpenAI request fields
        (`max_tokens=64`, `temperature=0`, `tools=[...]`, `response_format={...}`, ...)."""
        request = build_request(model, prompt, fields)
        registry = self._registry or await self._models()
        return await registry.get(model).complete(request)

    async def stream(self, model: str, prompt: Prompt, **fields: Any) -> AsyncIterator[Chunk]:
        """The answer in pieces; the last chunk has `done=True` and the whole `Completion`."""
        request = build_request(model, prompt, fields)
        registry = await self._models()
        async for chunk in registry.get(model).stream(request):
            yield chunk

    # Ad-hoc patterns: the options a route of that pattern takes, then OpenAI request fields ──

    # One method per row of the pattern table (`client.race(providers, prompt, hedge_after_ms=50)`),
    # made below the class by `_adhoc_method`, with the route model's options in its signature.

    async def _pattern(self, pattern: Pattern, members: Sequence[Any], prompt: Prompt, options: dict[str, Any],
                       stream: bool = False) -> Completion | AsyncIterator[Chunk]:
        listed = [dict(m) if isinstance(m, Mapping) else m for m in members]
        route = {"pattern": pattern.name, pattern.members: listed, **_split_options(pattern, options)}
        request = build_request(pattern.name, prompt, options)
        registry = self._registry or await self._models()
        coordinator = registry.adhoc(route)  # a bad option is raised here, before any chunk
        if stream:
            return _chunks(coordinator, request)
        return await coordinator.complete(request)

    # Workflows ─────────────────────────────────────────────────────────────────────────────

    async def run(self, workflow: Any, input: Any, **options: Any) -> Any:
        """Run an `orchestray.Workflow` on `input`; its model steps call this client's models
        (providers and routes). Options are `Workflow.run`'s: shared, on_start, on_finish, events."""
        return await workflow.run(input, self._registry or await self._models(), **options)

    # Batches ───────────────────────────────────────────────────────────────────────────────

    async def batch(
        self,
        requests: str | os.PathLike | Iterable[Mapping[str, Any] | ChatRequest],
        output: str | os.PathLike | None = None,
        progress: bool = False,
        *,
        model: str | None = None,
        max_in_flight: int | None = None,
        retry_errors: bool = False,
        max_cost: float | None = None,
        provider_batch: bool = False,
    ) -> AsyncIterator[OutputRecord]:
        """Run many requests; yield each one's record (OpenAI Batch output) as it finishes.

        `requests` is an OpenAI-Batch JSONL file, or an iterable of batch lines
        (`{"custom_id", "body"}`), chat bodies (`{"model", "messages", ...}`) or `ChatRequest`s,
        numbered from 0 as their custom_id when they have none. With `output` the records are
        also written there, and a second run resumes (yielding only the lines it answers).
        `model` sends every request to that provider or route. The batch command's engine:
        bounded in flight, one record per request, a bad one included. `max_cost` (US dollars)
        stops starting requests once this run has spent it; those left yield nothing and are
        answered by a rerun on the same `output`. `provider_batch=True` sends the calls to
        openai- and anthropic-kind providers through their batch APIs, at their batch price,
        patterns as rounds (`orchestray.provider_batch`); `max_cost` is refused with it, since
        a batch's price is spent when it is submitted, not call by call.
        """
        if provider_batch and max_cost is not None:
            raise ValueError("max_cost= does not apply with provider_batch=True: a provider batch is paid as a whole")
        registry = await self._models()
        options = BatchOptions(
            route=model,
            retry_errors=retry_errors,
            max_in_flight=max_in_flight or self.config.batch.max_in_flight,
            progress=progress,
            max_cost=max_cost,
        )
        with tempfile.TemporaryDirectory(prefix="orchestray-batch-") as scratch:
            if isinstance(requests, (str, os.PathLike)):
                source = Path(requests)
            else:
                source = Path(scratch) / "input.jsonl"
                await asyncio.to_thread(write_request_lines, requests, source)
            target = Path(output) if output is not None else Path(scratch) / "output.jsonl"
            finished: asyncio.Queue = asyncio.Queue()
            if provider_batch:
                from orchestray.provider_batch import ProviderBatchOptions, run_provider_batch

                async def live() -> Registry:
                    return registry

                batch_options = ProviderBatchOptions(route=model, retry_errors=retry_errors, progress=progress)
                running = run_provider_batch(source, target, self.config, live, batch_options,
                                             on_record=finished.put_nowait)
            else:
                running = run_batch(source, target, registry.get, registry.knows, options, on_record=finished.put_nowait)
            job = asyncio.ensure_future(running)
            job.add_done_callback(lambda _: finished.put_nowait(None))
            try:
                while (record := await finished.get()) is not None:
                    yield record
                await job  # its error, if it failed
            finally:
                if not job.done():
                    job.cancel()
                    await asyncio.gather(job, return_exceptions=True)


class Client:
    """The blocking twin of `AsyncClient`, for scripts and notebooks: the same methods, each
    waiting for its answer. Its async client runs on a private event loop in a thread of its
    own, so it works where a loop is already running (Jupyter) and inside Ray actors."""

    def __init__(
        self,
        config: str | os.PathLike | Mapping[str, Any] | Config | None = None,
        runtime: str | Runtime = "ray",
        address: str | None = None,
    ):
        self._async = AsyncClient(config, runtime, address)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def __reduce__(self):
        return (_unpickle, (Client, self._async.config, self._async.runtime))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(runtime={self._async.runtime.name!r}, models={self.config.model_names()!r})"

    @property
    def config(self) -> Config:
        return self._async.config

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop_running(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                # Joining Ray happens here, in the caller's thread, not on the private loop's.
                self._async.runtime.start()
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="orchestray-client", daemon=True)
                self._thread.start()
            return self._loop

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop_running()).result()

    def _iterate(self, stream: AsyncIterator) -> Iterator:
        loop = self._loop_running()

        async def step():
            return await anext(stream, _END)

        try:
            while (item := asyncio.run_coroutine_threadsafe(step(), loop).result()) is not _END:
                yield item
        finally:
            asyncio.run_coroutine_threadsafe(stream.aclose(), loop).result()

    def close(self) -> None:
        with self._guard:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._async.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def models(self) -> list[str]:
        return self._async.models()

    def complete(self, model: str, prompt: Prompt, **fields: Any) -> Completion:
        return self._run(self._async.complete(model, prompt, **fields))

    def stream(self, model: str, prompt: Prompt, **fields: Any) -> Iterator[Chunk]:
        return self._iterate(self._async.stream(model, prompt, **fields))

    def batch(self, requests, output=None, progress: bool = False, **options: Any) -> Iterator[OutputRecord]:
        return self._iterate(self._async.batch(requests, output, progress, **options))

    def run(self, workflow: Any, input: Any, **options: Any) -> Any:
        return self._run(self._async.run(workflow, input, **options))


_END = object()

for _pattern in PATTERNS.values():
    for _cls in (AsyncClient, Client):
        _method = _adhoc_method(_pattern, _cls is AsyncClient)
        _method.__qualname__ = f"{_cls.__name__}.{_pattern.name}"
        setattr(_cls, _pattern.name, _method)
del _pattern, _cls, _method
