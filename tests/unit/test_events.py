"""The event bus: handler chains, completed and failed events, failures isolated, backpressure."""

from __future__ import annotations

import asyncio

from orchestray.events import EventBus, HandlerResult


def test_a_document_flow_runs_as_a_chain_of_events():
    bus, seen = EventBus(), []

    @bus.on("uploaded")
    async def extract(doc):
        await bus.emit("extracted", doc.strip())
        return "extracted"

    @bus.on("extracted")
    async def classify(text):
        await bus.emit("classified", (text, "invoice"))
        return "invoice"

    @bus.on("classified")
    async def summarize(item):
        text, label = item
        await bus.emit("summarized", f"{label}: {text[:5]}")

    bus.on("summarized", seen.append)  # a sync handler
    bus.on("classified.completed", lambda r: seen.append(r))

    async def main():
        async with bus:
            await bus.emit("uploaded", "  hello world  ")
            await bus.join()

    asyncio.run(main())
    assert "invoice: hello" in seen
    assert HandlerResult("classified", "summarize", None) in seen
    order = list(bus.log)
    assert order.index("uploaded") < order.index("extracted") < order.index("classified") < order.index("summarized")
    assert "uploaded.completed" in order and "summarized.completed" in order


def test_a_failing_handler_never_stops_the_others():
    bus, outcomes = EventBus(), []

    def broken(data):
        raise ValueError("no")

    async def fine(data):
        await asyncio.sleep(0)
        return data * 2

    bus.on("job", broken)
    bus.on("job", fine)
    bus.on("job.failed", outcomes.append)
    bus.on("job.completed", outcomes.append)

    async def main():
        async with bus:
            for i in range(3):
                await bus.emit("job", i)
            await bus.join()

    asyncio.run(main())
    failed = [o for o in outcomes if o.error is not None]
    done = sorted(o.result for o in outcomes if o.error is None)
    assert len(failed) == 3 and all(isinstance(o.error, ValueError) and o.handler == "broken" for o in failed)
    assert done == [0, 2, 4]


def test_emits_wait_while_the_bound_is_full_and_a_chain_never_deadlocks():
    bus, gate, handled = EventBus(max_pending=2), asyncio.Event(), []

    @bus.on("work")
    async def slow(i):
        await gate.wait()
        await bus.emit("more", i)  # from inside a handler: never waits
        handled.append(i)

    async def main():
        async with bus:
            await bus.emit("work", 0)
            await bus.emit("work", 1)
            third = asyncio.ensure_future(bus.emit("work", 2))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not third.done() and bus.open == 2  # backpressure: the producer waits
            gate.set()
            await third
            await bus.join()

    asyncio.run(main())
    assert sorted(handled) == [0, 1, 2] and bus.waited == 1 and bus.open == 0
