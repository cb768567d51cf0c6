"""Many `complete` calls carried by few Ray calls, without making any answer wait for another.

A Ray actor call costs about as much CPU as a whole chat completion does in the SDK, so under load
the calls themselves become the ceiling. A caller that already has calls in flight to an actor
therefore sends further requests through a `Channel`: the requests made in one turn of its event
loop go in one `submit`, and a single long-polling `collect` brings back every answer that has
finished since the last one, the moment there is one. Each answer still returns as soon as it is
ready; only the Ray calls are shared. A caller with nothing in flight makes a plain call, which is
one round trip and the lowest latency.

The actor side (`Multiplexed`, a mixin for any actor with an async `complete`) keeps a box per
caller: its running calls, and the answers it has not yet acknowledged. Answers are sent again
until acknowledged, so a lost `collect` loses nothing. An actor that restarts starts a new
incarnation; calls submitted to an earlier one are lost with it and are sent again, as plain
calls are, for as long as `RESTART_WINDOW_S` from when the loss was first seen. A box whose
caller stopped collecting is dropped with its calls cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from orchestray.errors import OrchestrayError, ProviderUnavailableError
from orchestray.messages import ChatRequest, Completion

__all__ = ["Multiplexed", "Channel", "ACTOR_GONE", "RESTART_WINDOW_S", "LOST_RETRY_AFTER_S", "unwrap"]

ACTOR_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)
# A crashed actor restarts by itself, but an actor on a lost node restarts only once Ray has
# declared the node dead: by default after its health checks miss for about 15 s, then the
# restart itself. Calls caught in between are sent again for this long after the loss was first
# seen, then fail as an unavailable provider (so coordinators can fall back). Set
# ORCHESTRAY_RESTART_WINDOW_S where the cluster's health checks are slower (or to fail sooner).
RESTART_WINDOW_S = float(os.environ.get("ORCHESTRAY_RESTART_WINDOW_S", "60"))
# Waits between tries grow from the first to the last, so a restart is noticed soon after it ends.
RESTART_WAIT_S = (0.25, 2.0)
# What a call that outlasted the window tells its caller (a gateway's 503 `retry-after`): Ray may
# still be bringing the actor back, so try again soon, not at once.
LOST_RETRY_AFTER_S = 5.0


def restart_wait_s(tries: int) -> float:
    first, last = RESTART_WAIT_S
    return min(last, first * 2 ** min(16, max(0, tries - 1)))
# How long a `collect` waits in the actor when nothing is ready; the caller then asks again.
COLLECT_WAIT_S = 10.0
# A box not collected from for this long belongs to a caller that is gone.
ORPHAN_AFTER_S = 6 * COLLECT_WAIT_S


def unwrap(err: RayTaskError) -> BaseException:
    """The exception an actor method raised, out of Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else ProviderUnavailableError(str(err))


def _incarnation() -> tuple[int, str]:
    # Ordered by start time, so a caller can tell an older actor instance from a newer one.
    return (time.time_ns(), uuid.uuid4().hex[:8])


def _portable(error: BaseException) -> BaseException:
    """An error fit to cross to the caller: ours as they are, anything else only if it pickles."""
    if isinstance(error, OrchestrayError):
        return error
    try:
        pickle.dumps(error)
        return error
    except Exception:
        return ProviderUnavailableError(f"{type(error).__name__}: {error}")


class _Box:
    """One caller's running calls and unacknowledged answers, inside the actor."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task] = {}
        self.sent: list[tuple[int, list]] = []  # (sequence number, answers), until acknowledged
        self.ready: list[tuple[int, bool, Any]] = []  # (call id, ok, completion or error)
        self.seq = 0
        self.wake = asyncio.Event()
        self.seen = time.monotonic()
        # Cancels that arrived before their submit (Ray does not order an actor's calls): the
        # submit then skips them.
        self.cancelled_early: set[int] = set()

    def start(self, call_id: int, request: ChatRequest, complete) -> None:
        if call_id in self.cancelled_early:
            self.cancelled_early.discard(call_id)
            return
        task = asyncio.ensure_future(complete(request))
        self.tasks[call_id] = task
        task.add_done_callback(lambda t, call_id=call_id: self._finished(call_id, t))

    def _finished(self, call_id: int, task: asyncio.Task) -> None:
        if self.tasks.pop(call_id, None) is None or task.cancelled():
            return  # cancelled by its caller, which wants nothing back
        error = task.exception()
        self.ready.append((call_id, False, _portable(error)) if error is not None else (call_id, True, task.result()))
        self.wake.set()

    def cancel(self, call_ids: list[int]) -> None:
        for call_id in call_ids:
            task = self.tasks.pop(call_id, None)
            if task is not None:
                task.cancel()
            else:
                self.cancelled_early.add(call_id)

    async def take(self, ack: int, wait_s: float) -> tuple[int, list]:
        self.seen = time.monotonic()
        self.sent = [(seq, answers) for seq, answers in self.sent if seq > ack]
        if not self.ready and not self.sent:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            self.seen = time.monotonic()
        if self.ready:
            self.seq += 1
            self.sent.append((self.seq, self.ready))
            self.ready = []
        self.wake.clear()
        return self.seq, [answer for _, answers in self.sent for answer in answers]

    def close(self) -> None:
        self.cancel(list(self.tasks))


class Multiplexed:
    """Actor-side `submit`, `collect` and `cancel_calls` for an actor with an async `complete`."""

    _boxes: dict[str, _Box] | None = None
    _incarnation: tuple[int, str] | None = None
    _swept = 0.0

    def _box(self, caller: str) -> _Box:
        if self._boxes is None:
            self._boxes, self._incarnation = {}, _incarnation()
        now = time.monotonic()
        if now - self._swept > COLLECT_WAIT_S:
            self._swept = now
            for name, box in list(self._boxes.items()):
                if now - box.seen > ORPHAN_AFTER_S and name != caller:
                    box.close()
                    del self._boxes[name]
        box = self._boxes.get(caller)
        if box is None:
            box = self._boxes[caller] = _Box()
        return box

    async def submit(self, caller: str, calls: list[tuple[int, ChatRequest]]) -> tuple[int, str]:
        box = self._box(caller)
        for call_id, request in calls:
            box.start(call_id, request, self.complete)  # type: ignore[attr-defined]
        return self._incarnation

    async def collect(
        self, caller: str, incarnation: tuple[int, str] | None, ack: int, wait_s: float = COLLECT_WAIT_S
    ) -> tuple[tuple[int, str], int, list[tuple[int, bool, Any]]]:
        box = self._box(caller)
        if incarnation is not None and incarnation != self._incarnation:
            wait_s = 0.0  # the caller must learn at once that its calls to an earlier one are lost
        seq, answers = await box.take(ack if incarnation == self._incarnation else 0, wait_s)
        return self._incarnation, seq, answers

    def cancel_calls(self, caller: str, call_ids: list[int]) -> None:
        self._box(caller).cancel(call_ids)


@dataclass
class _Call:
    request: ChatRequest
    future: asyncio.Future
    retries: int = 0
    lost_at: float | None = None  # when it was first lost with its actor
    incarnation: tuple[int, str] | None = None  # of the actor it was submitted to; None: not yet
    queued: bool = True  # waiting for the next submit


class Channel:
    """The caller's side, for one actor and one event loop. See the module's text."""

    def __init__(
        self,
        actor,
        name: str,
        loop: asyncio.AbstractEventLoop,
        sleep: Callable = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        restart_window_s: float | None = None,
    ):
        self.actor = actor
        self.name = name
        self.loop = loop
        self._sleep = sleep
        self._clock = clock
        self.restart_window_s = RESTART_WINDOW_S if restart_window_s is None else restart_window_s
        self._caller = uuid.uuid4().hex
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._outgoing: list[int] = []
        self._cancelled: list[int] = []
        self._flush_scheduled = False
        self._collector: asyncio.Task | None = None
        self._incarnation: tuple[int, str] | None = None
        self._ack = 0
        self._direct = 0  # plain calls in flight
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def _spawn(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy(self) -> bool:
        return bool(self._direct or self._calls)

    async def call_direct(self, request: ChatRequest) -> Completion:
        """One plain actor call, sent again across an actor restart within the window."""
        self._direct += 1
        lost_at: float | None = None
        tries = 0
        try:
            while True:
                ref = self.actor.complete.remote(request)
                try:
                    return await ref
                except asyncio.CancelledError:
                    ray.cancel(ref)
                    raise
                except RayTaskError as err:
                    raise unwrap(err) from None
                except ACTOR_GONE as err:
                    now = self._clock()
                    lost_at = now if lost_at is None else lost_at
                    if now - lost_at >= self.restart_window_s:
                        raise self._unavailable(err) from None
                    tries += 1
                    await self._sleep(restart_wait_s(tries))
        finally:
            self._direct -= 1

    async def call(self, request: ChatRequest) -> Completion:
        """The request rides the next `submit`; its answer, the next `collect` after it is done."""
        call_id = next(self._ids)
        call = self._calls[call_id] = _Call(request, self.loop.create_future())
        self._enqueue(call_id)
        if self._collector is None or self._collector.done():
            self._collector = self.loop.create_task(self._collect())
        try:
            return await call.future
        except asyncio.CancelledError:
            if self._calls.pop(call_id, None) is not None and not call.queued:
                self._cancelled.append(call_id)
                self._schedule_flush()
            raise

    # -- sending

    def _enqueue(self, call_id: int) -> None:
        self._calls[call_id].queued = True
        self._outgoing.append(call_id)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._cancelled:
            self.actor.cancel_calls.remote(self._caller, self._cancelled)
            self._cancelled = []
        batch = [
            (call_id, call.request)
            for call_id in self._outgoing
            if (call := self._calls.get(call_id)) is not None and not call.future.done()  # done: cancelled
        ]
        self._outgoing = []
        if batch:
            for call_id, _ in batch:
                self._calls[call_id].queued = False
            ref = self.actor.submit.remote(self._caller, batch)
            self._spawn(self._submitted(ref, [call_id for call_id, _ in batch]))

    async def _submitted(self, ref, call_ids: list[int]) -> None:
        try:
            incarnation = await ref
        except RayTaskError as err:
            self._fail(call_ids, unwrap(err))
        except ACTOR_GONE as err:
            self._send_again(call_ids, err)
        else:
            for call_id in call_ids:
                call = self._calls.get(call_id)
                if call is not None and call.incarnation is None:
                    call.incarnation = incarnation
            self._note(incarnation)

    def _note(self, incarnation: tuple[int, str]) -> None:
        """A newer incarnation means the actor restarted: calls handed to an older one died with it."""
        if self._incarnation is not None and incarnation <= self._incarnation:
            return
        self._incarnation, self._ack = incarnation, 0
        lost = [i for i, c in self._calls.items() if c.incarnation is not None and c.incarnation < incarnation]
        if lost:
            self._send_again(lost, None)

    # -- receiving

    async def _collect(self) -> None:
        failures = 0
        gone_since: float | None = None
        while self._calls:
            try:
                incarnation, seq, answers = await self.actor.collect.remote(
                    self._caller, self._incarnation, self._ack, COLLECT_WAIT_S
                )
            except RayTaskError as err:
                self._fail(list(self._calls), unwrap(err))
                continue
            except ACTOR_GONE as err:
                # Unreachable or restarting: the next collect that succeeds tells which calls
                # were lost (by its incarnation). An actor gone for the whole window fails them.
                now = self._clock()
                gone_since = now if gone_since is None else gone_since
                failures += 1
                if now - gone_since >= self.restart_window_s:
                    self._fail(list(self._calls), self._unavailable(err))
                    failures, gone_since = 0, None
                else:
                    await self._sleep(restart_wait_s(failures))
                continue
            failures, gone_since = 0, None
            self._note(incarnation)
            if incarnation == self._incarnation:
                # A collect an earlier incarnation answered late still brings good answers, but
                # its sequence numbers mean nothing to the current one.
                self._ack = seq
            for call_id, ok, outcome in answers:
                call = self._calls.pop(call_id, None)
                if call is None or call.future.done():
                    continue  # answered already (answers repeat until acknowledged), or cancelled
                if ok:
                    call.future.set_result(outcome)
                else:
                    call.future.set_exception(outcome)

    def _fail(self, call_ids: list[int], error: BaseException) -> None:
        for call_id in call_ids:
            call = self._calls.pop(call_id, None)
            if call is not None and not call.future.done():
                call.future.set_exception(error)

    def _send_again(self, call_ids: list[int], err: BaseException | None) -> None:
        """Calls lost with their actor go again after a pause, until the window since each was
        first lost is over."""
        again = []
        now = self._clock()
        for call_id in call_ids:
            call = self._calls.get(call_id)
            if call is None or call.queued:
                continue
            call.lost_at = now if call.lost_at is None else call.lost_at
            if now - call.lost_at >= self.restart_window_s:
                self._fail([call_id], self._unavailable(err))
                continue
            call.retries += 1
            call.incarnation = None
            call.queued = True  # from now until the resend: counted as not yet sent
            again.append(call_id)
        if again:
            self._spawn(self._resend(again, restart_wait_s(max(self._calls[i].retries for i in again))))

    async def _resend(self, call_ids: list[int], after_s: float) -> None:
        await self._sleep(after_s)
        for call_id in call_ids:
            if call_id in self._calls:
                self._outgoing.append(call_id)
        self._schedule_flush()

    def _unavailable(self, err: BaseException | None) -> ProviderUnavailableError:
        why = type(err).__name__ if err is not None else "it restarted"
        return ProviderUnavailableError(f"provider actor is not answering ({why})", provider=self.name,
                                        retry_after=LOST_RETRY_AFTER_S)
