"""orchestray.data.complete on the three-node test cluster: every row answered once, limits kept."""

from __future__ import annotations

import uuid

import pytest

import orchestray.data
from orchestray.emulator import EmulatorOptions, run_in_process

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_names(ray_session):
    made: list[str] = []

    def name(prefix: str) -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield name
    for actor_name in made:
        try:
            ray_session.kill(ray_session.get_actor(actor_name, namespace="orchestray"), no_restart=True)
        except ValueError:
            pass


def test_columns_are_added_and_a_failing_row_keeps_its_place(ray_session, fresh_names):
    small, large = fresh_names("data-small"), fresh_names("data-large")
    config = {
        "providers": [{"name": n, "kind": "simulated", "simulated": {"accuracy": 1.0, "latency_ms": 2}} for n in (small, large)],
        "routes": {"cheap": {"pattern": "cascade", "providers": [small, large]}},
    }
    rows = [{"id": i, "prompt": f"What is {i} + 1?"} for i in range(300)]
    rows[7]["prompt"] = None  # fails: no prompt
    ds = ray_session.data.from_items(rows)
    out = orchestray.data.complete(ds, model="cheap", config=config, concurrency=2, batch_size=50, max_tokens=64)
    result = sorted(out.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in result] == list(range(300))
    assert set(result[0]) == {"id", "prompt", "content", "provider", "cost", "error"}
    assert result[7]["error"].startswith("internal_error: ValueError: the prompt is null") and result[7]["content"] is None
    good = [r for r in result if r["id"] != 7]
    assert all(r["error"] is None and f"Answer: {r['id'] + 1}" in r["content"] for r in good)
    assert all(r["provider"] in (small, large) and r["cost"] >= 0 for r in good)

    messages = ray_session.data.from_items(
        [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} * 2?"}]}
         for i in range(40)]
    )
    answered = orchestray.data.complete(messages, model=large, config=config, concurrency=(1, 2)).take_all()
    assert len(answered) == 40 and all(r["error"] is None for r in answered)
    assert sorted(int(r["content"].rsplit(" ", 1)[-1]) for r in answered) == [i * 2 for i in range(40)]


def test_ten_thousand_rows_through_a_limited_provider_none_over_the_limit_none_lost(ray_session, fresh_names):
    rpm = 30_000  # 500 a second: 10,000 rows take about 20 s
    with run_in_process(EmulatorOptions(rpm=rpm, latency_ms=20.0, latency_sigma=0.5)) as emulator:
        name = fresh_names("data-limited")
        config = {"providers": [{"name": name, "kind": "openai", "model": "sim-small", "base_url": emulator.openai_base_url,
                                 "limits": {"rpm": rpm}}]}
        n = 10_000
        ds = ray_session.data.range(n).map(lambda row: {"id": row["id"], "prompt": f"What is {row['id'] % 97} + 3?"})
        out = orchestray.data.complete(ds, model=name, config=config, concurrency=4, max_tokens=16)
        ids, errors = [], []
        for batch in out.iter_batches(batch_size=1000, batch_format="pyarrow"):
            ids += batch.column("id").to_pylist()
            errors += [e for e in batch.column("error").to_pylist() if e is not None]
        stats = emulator.stats()
    assert len(ids) == n and sorted(ids) == list(range(n))
    assert errors == []
    assert stats["rate_limited"] == 0 and stats["served"] == n
