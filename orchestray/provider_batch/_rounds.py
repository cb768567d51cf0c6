"""Rounds: the coordinators' own code, run against providers whose calls wait for a batch.

Every line runs as a task through the same `complete` a live batch calls: a provider, or a
route's coordinator built by `build_coordinator` over a `resolve` that hands out, for a
batch-API provider, a `DeferredProvider`. Its `complete` parks the call (a future) in the
current round and returns when the round's batch has answered it. Once every line is parked
or done (`settle`), the round's calls go out as provider batches, split at the caps and kept
under the queue limit; their answers resolve the futures, and the coordinators carry on to
their next step, which parks again: an ensemble's samples are one round, a cascade's second
stage the next, a tree-of-thought a round per level. Expired or errored calls go into the
next round until the provider's retry budget is spent. Race routes and simulated providers
run live (`LiveModel`), counted apart. A plain line (its model a batch-API provider itself) has
no coordinator to run: it waits on disk (`_plain`), and its request joins the same round's
batches. Answers stream in (`BatchAPI.results`) and each call is concluded as its answer comes.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import itertools
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, Protocol

import msgspec

from orchestray.backends._sdk_errors import from_status
from orchestray.config import Config
from orchestray.coordinators import build_coordinator
from orchestray.errors import OrchestrayError, ProviderUnavailableError
from orchestray.messages import ChatRequest, Completion, Span
from orchestray.provider_batch._apis import BatchAPI, BatchState, Outcome, QueueFull, caps
from orchestray.provider_batch._journal import Journal

__all__ = ["Rounds", "DeferredProvider", "LiveModel", "line_context", "request_key"]

_encode = msgspec.json.Encoder().encode


@dataclass
class _LineContext:
    number: int
    asked: dict[str, int] = field(default_factory=dict)  # digest -> times asked (identical calls of a line)


_line: contextvars.ContextVar[_LineContext] = contextvars.ContextVar("orchestray_provider_batch_line")


def line_context(number: int) -> None:
    _line.set(_LineContext(number))


@dataclass(eq=False)
class _Ask:
    key: str
    provider: str
    request: ChatRequest
    line: bytes
    future: asyncio.Future
    attempts: int = 0


class _Waiting(Protocol):
    """A call waiting for its batch: an `_Ask` (a parked call) or a plain line's entry (`_plain`)."""

    key: str
    attempts: int


def _digest(provider: str, request: ChatRequest) -> str:
    return hashlib.blake2b(provider.encode() + b"\0" + _encode(request), digest_size=10).hexdigest()


def _key(number: int, digest: str, occurrence: int = 0) -> str:
    return f"l{number}-{digest}" + (f"-{occurrence}" if occurrence else "")


def request_key(provider: str, number: int, request: ChatRequest) -> str:
    """The key of a line's first call of `request` to `provider`: the one `Rounds.ask` gives it."""
    return _key(number, _digest(provider, request))


class DeferredProvider:
    """A batch-API provider as a model: `complete` returns when its round's batch answers."""

    # A pipeline step's `timeout_s` bounds a live call; a call parked here waits for its batch
    # (minutes, hours), which the provider's own completion window bounds.
    answers_from_batches = True

    def __init__(self, name: str, rounds: "Rounds"):
        self.name = name
        self.rounds = rounds

    async def complete(self, request: ChatRequest) -> Completion:
        return await self.rounds.ask(self.name, request)

    async def stream(self, request: ChatRequest):
        completion = await self.complete(request)
        from orchestray.messages import Chunk

        yield Chunk(delta=completion.content)
        yield Chunk(done=True, completion=completion)


class LiveModel:
    """A model called live (a race, a simulated provider), counted apart from the batches."""

    def __init__(self, name: str, rounds: "Rounds"):
        self.name = name
        self.rounds = rounds

    async def complete(self, request: ChatRequest) -> Completion:
        rounds = self.rounds
        registry = await rounds.live_registry()
        rounds.live_begun()
        try:
            return await registry.get(self.name).complete(request)
        finally:
            rounds.live_ended()


class Rounds:
    def __init__(self, config: Config, apis: dict[str, BatchAPI], journal: Journal,
                 answers: dict[str, tuple[Outcome, str]], live: Callable[[], Awaitable[object]],
                 board: Callable[[int, list[BatchState]], None], run_id: str | None = None):
        self.config = config
        self.apis = apis
        self.journal = journal
        self.answers = answers  # key -> (final outcome, batch id): collected before, by this run or an earlier one
        self._live_factory = live
        self._live = None
        self.board = board
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.pending: dict[str, list[_Ask]] = {}
        self.round = 0
        self.registered = 0
        self.live_calls = 0
        self.live_in_flight = 0
        self._live_idle = asyncio.Event()
        self._live_idle.set()
        self.states: dict[str, BatchState] = {}  # every batch this run waited on, by id
        self._sent_at: dict[str, float] = {}
        self.submitted_requests = 0
        self.resubmitted = 0
        self._models: dict[str, object] = {}
        self.plain = None  # the driver's PlainLines: plain lines' requests, spooled, not parked

    @property
    def waiting(self) -> bool:
        """Calls wait for the next round."""
        return bool(self.pending) or bool(self.plain and self.plain.waiting())

    # --- models -------------------------------------------------------------------------------

    def resolve(self, name: str):
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = self._make(name)
        return model

    def _make(self, name: str):
        route = self.config.routes.get(name)
        if route is not None:
            # A race exists to cut latency, which a batch cannot: it runs live, whole.
            if route.pattern == "race":
                return LiveModel(name, self)
            coordinator = build_coordinator(name, self.config, self.resolve)
            coordinator.answers_from_batches = True  # its members' calls may wait for a batch
            return coordinator
        if name in self.apis:
            return DeferredProvider(name, self)
        return LiveModel(name, self)  # simulated: answered in-process as ever

    def runs_live(self, name: str) -> bool:
        return isinstance(self.resolve(name), LiveModel)

    async def live_registry(self):
        if self._live is None:
            self._live = await self._live_factory()
        return self._live

    def live_begun(self) -> None:
        self.live_calls += 1
        self.live_in_flight += 1
        self._live_idle.clear()

    def live_ended(self) -> None:
        self.live_in_flight -= 1
        if not self.live_in_flight:
            self._live_idle.set()

    # --- asking -------------------------------------------------------------------------------

    async def ask(self, provider: str, request: ChatRequest) -> Completion:
        context = _line.get()
        api = self.apis[provider]
        digest = _digest(provider, request)
        occurrence = context.asked.get(digest, 0)
        context.asked[digest] = occurrence + 1
        key = _key(context.number, digest, occurrence)
        known = self.answers.pop(key, None)
        if known is not None:
            return self._settled(provider, request, known[0], known[1], attempts=0, latency_s=0.0)
        line = api.line(key, request)  # a field the provider cannot take is refused here, as live
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault(provider, []).append(_Ask(key, provider, request, line, future))
        self.registered += 1
        return await future

    def _settled(self, provider: str, request: ChatRequest, outcome: Outcome, batch_id: str, attempts: int,
                 latency_s: float) -> Completion:
        config = self.config.provider(provider)
        data = {"batch": batch_id, "price": "batch"}
        if outcome.kind != "ok":
            err = from_status(outcome.status, outcome.message, {}, provider) if outcome.status else \
                ProviderUnavailableError(outcome.message, provider=provider)
            err.span = Span(name=provider, model=config.model, outcome="error", latency_s=latency_s,
                            retries=attempts, error=str(err), data=data)
            raise err
        reply = self.apis[provider].reply(outcome.body, request)
        cost = config.price.batch_cost(reply.input_tokens, reply.output_tokens)
        model = reply.model or config.model
        span = Span(name=provider, model=model, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                    latency_s=latency_s, cost=cost, retries=attempts, dropped=list(reply.dropped), data=data)
        return Completion(content=reply.text, model=model, provider=provider, tool_calls=reply.tool_calls,
                          refusal=reply.refusal, logprobs=reply.logprobs, finish_reason=reply.finish_reason,
                          more_choices=reply.more_choices, input_tokens=reply.input_tokens,
                          output_tokens=reply.output_tokens, cached_tokens=reply.cached_tokens,
                          reasoning_tokens=reply.reasoning_tokens, latency_s=latency_s, cost=cost, trace=span)

    # --- rounds -------------------------------------------------------------------------------

    async def settle(self, finished: Callable[[], int]) -> None:
        """Return once every open line is parked in this round or done: nothing left runs."""
        quiet, last = 0, None
        while quiet < 32:
            if self.live_in_flight:
                await self._live_idle.wait()
                quiet = 0
                continue
            await asyncio.sleep(0)
            now = (self.registered, finished(), self.live_calls)
            quiet = quiet + 1 if now == last else 0
            last = now

    async def run_round(self, poll_s: Callable[[str], float]) -> None:
        """Send every parked call, and every spooled plain line, as provider batches, and resolve
        them from the answers."""
        self.round += 1
        asked, self.pending = self.pending, {}
        providers = list(asked) + [p for p in (self.plain.waiting() if self.plain else ()) if p not in asked]
        await asyncio.gather(*(self._provider_round(name, asked.get(name, []), poll_s(name)) for name in providers))

    def _chunks(self, provider: str, asks: list[_Ask]) -> Iterator[tuple[list[_Waiting], list[bytes]]]:
        """The round's calls for `provider` in batches at its caps: (calls, request lines), a call
        an `_Ask` or a plain line's entry. Only one batch's lines are held at a time."""
        max_requests, max_bytes = caps(self.config.provider(provider))
        spooled = self.plain.take(provider) if self.plain else iter(())
        items: list[_Waiting] = []
        lines: list[bytes] = []
        size = 0
        for item, line in itertools.chain(spooled, ((ask, ask.line) for ask in asks)):
            if items and (len(items) >= max_requests or size + len(line) > max_bytes):
                yield items, lines
                items, lines, size = [], [], 0
            items.append(item)
            lines.append(line)
            size += len(line)
        if items:
            yield items, lines

    async def _provider_round(self, provider: str, asks: list[_Ask], poll_s: float) -> None:
        api = self.apis[provider]
        queue = self.config.provider(provider).batch.queue_requests
        waiting: dict[str, list[_Waiting]] = {}
        for n, (chunk, lines) in enumerate(self._chunks(provider, asks)):
            while queue and waiting and sum(map(len, waiting.values())) + len(chunk) > queue:
                await self._wait_some(provider, api, waiting, poll_s)
            tag = f"ob-{self.run_id}-r{self.round}-{provider.replace(':', '_')}-{n}"
            self.journal.intent(tag, provider, self.round, [item.key for item in chunk])
            while True:
                try:
                    batch_id = await api.submit(lines, tag)
                    break
                except QueueFull:
                    if waiting:
                        await self._wait_some(provider, api, waiting, poll_s)
                    else:
                        await asyncio.sleep(poll_s)
            del lines
            self.journal.submitted(tag, batch_id)
            self._sent_at[batch_id] = time.time()
            self.submitted_requests += len(chunk)
            self.resubmitted += sum(1 for item in chunk if item.attempts)
            self.states[batch_id] = BatchState(batch_id, provider, "validating", {"total": len(chunk)})
            self.board(self.round, list(self.states.values()))
            waiting[batch_id] = chunk
        while waiting:
            await self._wait_some(provider, api, waiting, poll_s)

    async def _wait_some(self, provider: str, api: BatchAPI, waiting: dict[str, list[_Waiting]],
                         poll_s: float) -> None:
        await asyncio.sleep(poll_s)
        for batch_id in list(waiting):
            state = self.states[batch_id] = await api.state(batch_id)
            if state.ended:
                await self.collect(provider, api, state, waiting.pop(batch_id))
        self.board(self.round, list(self.states.values()))

    async def collect(self, provider: str, api: BatchAPI, state: BatchState, items: list[_Waiting]) -> None:
        """Conclude each of the batch's calls as its outcome streams in; a call the results do
        not name takes the batch's own outcome (a batch failed whole) or is asked again."""
        by_key = {item.key: item for item in items}
        whole = None
        async for key, outcome in api.results(state):
            if key == "*":
                whole = outcome
            elif (item := by_key.pop(key, None)) is not None:
                await self._conclude(provider, item, outcome, state, queue_full=False)
        missing = whole or Outcome("retry", 0, message=f"no result (batch {state.status})")
        queue_full = whole is not None and whole.status == 429
        for item in by_key.values():
            await self._conclude(provider, item, missing, state, queue_full)
        self.journal.collected(state.id)

    async def _conclude(self, provider: str, item: _Waiting, outcome: Outcome, state: BatchState,
                        queue_full: bool) -> None:
        plain = not isinstance(item, _Ask)
        if outcome.kind == "retry" and not queue_full:
            item.attempts += 1  # a batch refused for a full queue spent nothing
        budget = self.config.provider(provider).max_retries
        if outcome.kind == "retry" and item.attempts <= budget:
            if plain:
                self.plain.again(item)  # the next round
            else:
                self.pending.setdefault(provider, []).append(item)
            return
        if outcome.kind == "retry":
            outcome = Outcome("error", outcome.status, message=f"{outcome.message or 'not answered'} "
                              f"in {item.attempts} batches; the retry budget ({budget}) is spent")
        self.journal.answer(item.key, provider, state.id, outcome)
        latency_s = time.time() - self._sent_at.get(state.id, time.time())
        attempts = item.attempts

        def settle(request: ChatRequest) -> Completion:
            return self._settled(provider, request, outcome, state.id, attempts, latency_s)

        if plain:
            await self.plain.answered(item, settle, latency_s)
        elif not item.future.done():
            try:
                item.future.set_result(settle(item.request))
            except OrchestrayError as err:
                item.future.set_exception(err)


def print_board(enabled: bool, interval_s: float = 0.5):
    """The progress display: each provider batch's state and counts, on stderr."""
    last = {"t": 0.0, "text": ""}

    def show(round_: int, states: list[BatchState]) -> None:
        if not enabled:
            return
        rows = [f"round {round_}:"]
        for s in states[-8:]:
            counts = " ".join(f"{k}={v}" for k, v in s.counts.items())
            rows.append(f"  {s.provider:<16} {s.id:<28} {s.status:<11} {counts}")
        if len(states) > 8:
            rows.insert(1, f"  ... {len(states) - 8} earlier batches")
        text = "\n".join(rows)
        now = time.monotonic()
        if text != last["text"] and now - last["t"] >= interval_s or all(s.ended for s in states):
            if text != last["text"]:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
            last.update(t=now, text=text)

    return show
