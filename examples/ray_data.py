"""Ray Data: a Dataset of prompts answered through a route, one output row per input row.

    python examples/ray_data.py        # joins RAY_ADDRESS, else starts a local Ray instance

Uses the embedded default config (simulated providers). Every row goes through the cluster's
shared provider actors, so their limits hold across the pipeline.
"""

from __future__ import annotations

import ray

import orchestray.data
from orchestray.cluster import connect


def main(rows: int = 200) -> None:
    connect()
    ds = ray.data.from_items([{"id": i, "prompt": f"What is {i} + {i % 7}?"} for i in range(rows)])
    out = orchestray.data.complete(ds, model="cheap", concurrency=2, max_tokens=64)
    answered = out.take_all()
    failed = [row for row in answered if row["error"] is not None]
    cost = sum(row["cost"] for row in answered)
    by = {}
    for row in answered:
        by[row["provider"]] = by.get(row["provider"], 0) + 1
    print(f"{len(answered)} rows out of {rows}; {len(failed)} failed; ${cost:.5f}; answered by {by}")
    assert len(answered) == rows


if __name__ == "__main__":
    main()
