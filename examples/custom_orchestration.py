"""A custom orchestration on the Python API: draft with a cheap model, have a strong one review it.

Tested without Ray or a network in examples/test_custom_orchestration.py, with the scripted
models of `orchestray.testing`.

    python examples/custom_orchestration.py --runtime local
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import orchestray


@dataclass
class Reviewed:
    answer: str
    revised: bool
    cost: float


async def draft_and_review(client: orchestray.AsyncClient, question: str, drafter: str, reviewer: str) -> Reviewed:
    """The drafter answers; the reviewer replies OK or a corrected answer. A failed review keeps the draft."""
    draft = await client.complete(drafter, question, max_tokens=128)
    prompt = (
        f"Question: {question}\nDraft answer: {draft.content}\n"
        "Reply with exactly OK if the draft is right, otherwise with the corrected answer."
    )
    try:
        review = await client.complete(reviewer, prompt, max_tokens=128, temperature=0)
    except orchestray.ProviderError:
        return Reviewed(draft.content, revised=False, cost=draft.cost)
    verdict = review.content.strip()
    if verdict == "OK":
        return Reviewed(draft.content, revised=False, cost=draft.cost + review.cost)
    return Reviewed(verdict, revised=True, cost=draft.cost + review.cost)


async def main(runtime: str) -> None:
    async with orchestray.AsyncClient(runtime=runtime) as client:
        result = await draft_and_review(client, "What is 17 * 3?", "sim-small", "sim-large")
        print(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["ray", "local"], default="ray")
    asyncio.run(main(parser.parse_args().runtime))
