"""Calls shared over few Ray calls (`actors/multiplex.py`), against an in-process stand-in for an
actor: each `.remote()` runs the method as a task on the test's own loop. No Ray."""

import asyncio
from collections import Counter

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from orchestray.actors import multiplex
from orchestray.actors.multiplex import Channel, Multiplexed
from orchestray.actors.provider import ModelHandle
from orchestray.errors import BadRequestError, ProviderUnavailableError
from orchestray.messages import ChatRequest, Completion, Message


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),))


class Echo(Multiplexed):
    """Answers a prompt in capitals. "slow…" prompts wait for `release`; "fail" raises."""

    def __init__(self):
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    async def complete(self, request: ChatRequest) -> Completion:
        text = request.last_user_text()
        self.started.append(text)
        try:
            if text.startswith("slow"):
                await self.release.wait()
            if text == "fail":
                raise BadRequestError("refused", provider="echo")
            return Completion(content=text.upper(), model="m", provider="echo")
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise


class FakeActor:
    """`actor.method.remote(*args)` runs `method` on the current instance as a task. As with Ray,
    a crash fails every call in flight with ActorDiedError; a dead actor fails every new call;
    `restart()` crashes it and starts a new instance (a new incarnation)."""

    def __init__(self):
        self.instance = Echo()
        self.calls: Counter[str] = Counter()
        self.dead = False
        self._running: list[tuple[asyncio.Task, asyncio.Future]] = []

    def crash(self) -> None:
        for task, future in self._running:
            if not future.done():
                future.set_exception(ActorDiedError())
            task.cancel()
        self._running.clear()

    def restart(self) -> None:
        self.crash()
        self.instance = Echo()

    def __getattr__(self, method: str):
        actor = self

        class Remote:
            @staticmethod
            def remote(*args):
                actor.calls[method] += 1
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                if actor.dead:
                    future.set_exception(ActorDiedError())
                    return future

                async def run():
                    result = getattr(actor.instance, method)(*args)
                    return await result if asyncio.iscoroutine(result) else result

                def settle(task: asyncio.Task) -> None:
                    if future.done() or task.cancelled():
                        return
                    error = task.exception()
                    future.set_exception(error) if error is not None else future.set_result(task.result())

                task = loop.create_task(run())
                task.add_done_callback(settle)
                actor._running.append((task, future))
                return future

        return Remote


class Ticking:
    """A clock whose sleeps pass at once and move it on."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def actor():
    return FakeActor()


@pytest.fixture
def ticking():
    return Ticking()


@pytest.fixture
async def channel(actor, ticking):
    return Channel(actor, "echo", asyncio.get_running_loop(), sleep=ticking.sleep, clock=ticking, restart_window_s=60.0)


async def test_calls_made_together_share_one_submit_and_get_their_own_answers(actor, channel):
    answers = await asyncio.gather(*(channel.call(ask(f"q{i}")) for i in range(20)))
    assert [a.content for a in answers] == [f"Q{i}" for i in range(20)]
    assert actor.calls["submit"] == 1
    assert actor.calls["collect"] <= 3
    assert actor.calls["complete"] == 0


async def test_no_answer_waits_for_a_slow_one(actor, channel):
    slow = asyncio.ensure_future(channel.call(ask("slow one")))
    fast = [asyncio.ensure_future(channel.call(ask(f"fast {i}"))) for i in range(5)]
    done, _ = await asyncio.wait(fast, timeout=5)
    assert len(done) == 5 and not slow.done()
    actor.instance.release.set()
    assert (await asyncio.wait_for(slow, 5)).content == "SLOW ONE"


async def test_an_error_comes_back_as_raised(channel):
    results = await asyncio.gather(channel.call(ask("fail")), channel.call(ask("ok")), return_exceptions=True)
    assert isinstance(results[0], BadRequestError) and results[1].content == "OK"


async def test_cancelling_a_call_cancels_it_in_the_actor_and_nothing_else(actor, channel):
    slow = asyncio.ensure_future(channel.call(ask("slow a")))
    other = asyncio.ensure_future(channel.call(ask("slow b")))
    while len(actor.instance.started) < 2:
        await asyncio.sleep(0)
    slow.cancel()
    while not actor.instance.cancelled:
        await asyncio.sleep(0)
    assert actor.instance.cancelled == ["slow a"]
    actor.instance.release.set()
    assert (await asyncio.wait_for(other, 5)).content == "SLOW B"
    assert actor.calls["cancel_calls"] == 1


async def test_a_call_cancelled_before_it_is_sent_is_never_sent(actor, channel):
    call = asyncio.ensure_future(channel.call(ask("never")))
    # Runs after the call is queued and before the submit that would carry it goes out.
    asyncio.get_running_loop().call_soon(call.cancel)
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.01)
    assert actor.instance.started == [] and actor.calls["cancel_calls"] == 0


async def test_calls_lost_in_a_restart_are_sent_again_to_the_new_incarnation(actor, channel):
    calls = [asyncio.ensure_future(channel.call(ask(f"slow {i}"))) for i in range(3)]
    while len(actor.instance.started) < 3:
        await asyncio.sleep(0)
    actor.restart()  # the old instance's calls are gone; the next collect sees a new incarnation
    actor.instance.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert [a.content for a in answers] == ["SLOW 0", "SLOW 1", "SLOW 2"]
    assert sorted(actor.instance.started) == ["slow 0", "slow 1", "slow 2"]


async def test_an_actor_that_stays_dead_fails_its_calls_clearly(actor, channel, ticking):
    calls = [asyncio.ensure_future(channel.call(ask(f"slow {i}"))) for i in range(3)]
    while len(actor.instance.started) < 3:
        await asyncio.sleep(0)
    actor.dead = True
    actor.crash()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(r, ProviderUnavailableError) for r in results)
    assert "echo" in str(results[0])
    assert 60.0 <= ticking.now <= 63.0  # after the window, and soon after it


async def _revive_after(actor, ticking, seconds: float) -> None:
    while ticking.now < seconds:
        await asyncio.sleep(0)
    actor.dead = False
    actor.restart()


@pytest.mark.parametrize("busy", [False, True], ids=["plain call", "shared calls"])
async def test_calls_outlast_a_node_loss_that_takes_ray_20s_to_notice(actor, channel, ticking, busy):
    """An actor on a lost node restarts elsewhere only once Ray declares the node dead (about
    15 s by default); its calls are sent again until then, within the window."""
    first = actor.instance
    if busy:
        calls = [asyncio.ensure_future(channel.call(ask(f"slow {i}"))) for i in range(3)]
    else:
        calls = [asyncio.ensure_future(channel.call_direct(ask("slow 0")))]
    while len(first.started) < len(calls):
        await asyncio.sleep(0)
    actor.dead = True
    actor.crash()
    reviving = asyncio.ensure_future(_revive_after(actor, ticking, 20.0))
    while not reviving.done():
        await asyncio.sleep(0)
    actor.instance.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert [a.content for a in answers] == [f"SLOW {i}" for i in range(len(calls))]
    assert 20.0 <= ticking.now < 25.0


async def test_an_unreachable_moment_loses_nothing(actor, channel, monkeypatch):
    """A collect whose answer is lost on the way back: the answers come again with the next one."""
    real = actor.instance.collect
    lost = []

    async def collect_losing_the_first_answers(*args):
        answer = await real(*args)
        if not lost and answer[2]:
            lost.append(answer)
            raise ActorUnavailableError("unreachable for a moment", None)
        return answer

    monkeypatch.setattr(actor.instance, "collect", collect_losing_the_first_answers)
    answers = await asyncio.wait_for(asyncio.gather(*(channel.call(ask(f"q{i}")) for i in range(2))), 5)
    assert lost and [a.content for a in answers] == ["Q0", "Q1"]
    assert actor.instance.started == ["q0", "q1"]  # not sent twice


async def test_a_box_whose_caller_is_gone_is_dropped_with_its_calls(actor, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(multiplex.time, "monotonic", lambda: clock[0])
    echo = actor.instance
    await echo.submit("gone", [(1, ask("slow x"))])
    await asyncio.sleep(0)
    clock[0] += multiplex.ORPHAN_AFTER_S + multiplex.COLLECT_WAIT_S + 1
    await echo.submit("other", [(1, ask("y"))])
    await asyncio.sleep(0)
    assert "gone" not in echo._boxes and echo.cancelled == ["slow x"]


async def test_a_handle_uses_a_plain_call_when_idle_and_shares_calls_when_busy(actor):
    handle = ModelHandle("echo", actor)
    assert (await handle.complete(ask("alone"))).content == "ALONE"
    assert actor.calls["complete"] == 1 and actor.calls["submit"] == 0
    answers = await asyncio.gather(*(handle.complete(ask(f"q{i}")) for i in range(10)))
    assert [a.content for a in answers] == [f"Q{i}" for i in range(10)]
    assert actor.calls["complete"] == 2 and actor.calls["submit"] == 1  # the first went plain


def test_a_pickled_handle_leaves_its_channel_behind(actor):
    import pickle

    handle = ModelHandle("echo", "actor-stand-in")
    handle._channel = object()
    copy = pickle.loads(pickle.dumps(handle))
    assert copy.name == "echo" and copy.actor == "actor-stand-in" and copy._channel is None


async def test_a_cancel_that_overtakes_its_submit_still_cancels(actor):
    """Ray does not order an actor's calls, so `cancel_calls` may arrive before `submit`."""
    echo = actor.instance
    echo.cancel_calls("caller", [7])
    await echo.submit("caller", [(7, ask("slow never")), (8, ask("runs"))])
    incarnation, _, answers = await echo.collect("caller", None, 0, 1.0)
    assert echo.started == ["runs"] and [a[0] for a in answers] == [8]
