"""Spend caps per provider and route, and a batch's --max-cost."""

from __future__ import annotations

import json

import pytest

from orchestray import AsyncClient
from orchestray.budgets import SpendLedger
from orchestray.errors import SpendCapError
from orchestray.testing import LocalRuntime, ScriptedModel


def test_ledger_refuses_once_a_window_is_full_and_says_when_it_has_room():
    ledger = SpendLedger()
    caps = {"per_hour": 1.0}
    ledger.add("x", caps, 0.6, now=0.0)
    assert ledger.check("x", caps, now=10.0) is None
    ledger.add("x", caps, 0.6, now=20.0)
    window, spent, wait = ledger.check("x", caps, now=30.0)
    assert window == "per_hour" and spent == pytest.approx(1.2) and wait == pytest.approx(3570.0)
    assert ledger.check("x", caps, now=3601.0) is None  # the first spend left the hour


def _config(**extra):
    return {"providers": [{"name": "small", "kind": "simulated"}],
            "routes": {"r": {"pattern": "fallback", "providers": ["small"]}}, **extra}


async def test_a_provider_cap_gives_a_clear_error_once_reached():
    small = ScriptedModel("ok", name="small", cost=0.4)
    async with AsyncClient(_config(spend_caps={"small": {"per_hour": 1.0}}), runtime=LocalRuntime(models={"small": small})) as client:
        for _ in range(3):
            await client.complete("small", "hi")
        with pytest.raises(SpendCapError, match=r"spend cap reached for 'small': \$1.2000 spent of \$1 per hour") as info:
            await client.complete("small", "hi")
    assert info.value.retry_after > 3000 and len(small.calls) == 3


async def test_a_route_cap_counts_what_its_calls_cost():
    small = ScriptedModel("ok", name="small", cost=0.5)
    async with AsyncClient(_config(spend_caps={"r": {"per_day": 1.0}}), runtime=LocalRuntime(models={"small": small})) as client:
        await client.complete("r", "hi")
        await client.complete("r", "hi")
        with pytest.raises(SpendCapError, match="per day"):
            await client.complete("r", "hi")
        await client.complete("small", "hi")  # the provider itself has no cap


def test_a_cap_needs_a_window():
    from orchestray.errors import ConfigError

    with pytest.raises(ConfigError, match="per_hour, per_day"):
        AsyncClient(_config(spend_caps={"small": {}}), runtime="local")
    with pytest.raises(ConfigError, match="spend_caps.nope"):
        AsyncClient(_config(spend_caps={"nope": {"per_hour": 1}}), runtime="local")


async def test_max_cost_stops_a_batch_and_a_rerun_resumes_to_one_record_per_line(tmp_path):
    small = ScriptedModel("ok", name="small", cost=0.1)
    lines = [{"custom_id": f"c{i}", "body": {"model": "small", "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(20)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    async with AsyncClient(_config(), runtime=LocalRuntime(models={"small": small})) as client:
        first = [r async for r in client.batch(source, out, max_cost=0.5, max_in_flight=2)]
        assert 5 <= len(first) <= 6  # in flight when the budget was spent: finished, not cancelled
        second = [r async for r in client.batch(source, out, max_cost=100)]
    ids = [json.loads(line)["custom_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"c{i}" for i in range(20)) and len(first) + len(second) == 20
