"""The Python API in one script: a provider, a route, a stream, ad-hoc patterns and a batch.

    python examples/python_api.py                   # on Ray (RAY_ADDRESS, else a local instance)
    python examples/python_api.py --runtime local   # in this process, no Ray

Uses the embedded default config (simulated providers, no API key).
"""

from __future__ import annotations

import argparse
import asyncio

import orchestray


async def main(runtime: str) -> None:
    async with orchestray.AsyncClient(runtime=runtime) as client:
        answer = await client.complete("sim-small", "What is 17 * 3?", max_tokens=64)
        print(f"{answer.provider}: {answer.content!r} (${answer.cost:.6f})")

        answer = await client.complete("cheap", "What is 17 * 3?")  # a route: a cascade small -> large
        print(f"cheap answered by {answer.provider}: {answer.trace.decision}")

        async for chunk in client.stream("sim-medium", [{"role": "user", "content": "What is 6 * 7?"}]):
            print(chunk.delta, end="", flush=True)
        print()

        vote = await client.ensemble(["sim-small"], "What is 12 + 30?", samples=5, temperature=0.7)
        print(f"vote: {vote.content.splitlines()[-1]} with confidence {vote.confidence}")
        fast = await client.race(["sim-small", "sim-medium"], "What is 2 + 2?", hedge_after_ms=100)
        print(f"race won by {fast.provider}")
        try:
            await client.ensemble(["sim-small"], "What is 2 + 2?", vote="loudest")
        except orchestray.RequestError as err:
            print(f"refused: {err}")

        requests = [{"model": "sim-small", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(20)]
        answered = 0
        async for record in client.batch(requests):
            answered += record.error is None
        print(f"batch: {answered} of {len(requests)} answered")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["ray", "local"], default="ray")
    asyncio.run(main(parser.parse_args().runtime))
