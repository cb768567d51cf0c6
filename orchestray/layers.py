"""What the registry puts around each model it hands out: guardrails, then spend caps, then telemetry.

    TracedModel ─▶ SpendCappedModel ─▶ GuardedModel ─▶ the cached provider / the route

Outermost first: telemetry sees the whole call (a spend-cap refusal included), the cap counts what
the guardrails' retries cost, and the guardrails redact before the cache and the provider see the
request. A name with none of them configured gets its model as it is.
"""

from __future__ import annotations

from typing import Any

from orchestray.budgets import SpendCappedModel
from orchestray.guardrails import guard_for
from orchestray.patterns import PATTERNS

# The patterns whose members answer in turn: how an exported trace lays out their calls.
SEQUENTIAL = frozenset(name for name, pattern in PATTERNS.items() if pattern.sequential)

__all__ = ["around"]


def around(registry: Any, name: str, model: Any, route: bool = False) -> Any:
    """`model` (what `name` gives) inside the layers the config asks for; `route` for an ad-hoc
    pattern, which no config names."""
    config = registry.config
    is_provider = not route and name not in config.routes
    model = guard_for(name, is_provider, config.guardrails, model, registry.get)
    cap = config.spend_caps.get(name)
    if cap is not None:
        model = SpendCappedModel(name, model, cap, registry.spend_ledger())
    if config.telemetry is not None:
        from orchestray.telemetry import TracedModel, telemetry_for

        kinds = {p.name: (p.kind, p.model) for p in config.providers}
        model = TracedModel(name, model, registry.telemetry or telemetry_for(config.telemetry), kinds, SEQUENTIAL)
    return model
