"""Coordinators: the orchestration patterns, each presenting the same interface as a provider.

A coordinator has `complete(request) -> Completion` and `stream(request)`, and calls the models
it coordinates through `resolve(name)`, so patterns nest: a cascade whose second stage is an
ensemble, a race inside a tree-of-thought step. These classes know nothing of Ray; the actors
in `orchestray.actors.coordinators` host them, and tests drive them with in-process models.
"""

from __future__ import annotations

from typing import Callable

from orchestray.config import Config, PriceConfig
from orchestray.errors import ConfigError
from orchestray.policies.confidence import acceptance_from_config
from orchestray.policies.extraction import Extractor, extractor
from orchestray.policies.routing import Router

from orchestray.coordinators._base import Coordinator, Model, Resolve
from orchestray.coordinators.balance import BalanceCoordinator
from orchestray.coordinators.cascade import CascadeCoordinator
from orchestray.coordinators.ensemble import EnsembleCoordinator
from orchestray.coordinators.fallback import FallbackCoordinator
from orchestray.coordinators.pipeline import PipelineCoordinator, PipelineStep
from orchestray.coordinators.race import RaceCoordinator
from orchestray.coordinators.router import RouterCoordinator
from orchestray.coordinators.tree import TreeOfThoughtCoordinator

__all__ = [
    "Coordinator",
    "Model",
    "Resolve",
    "RaceCoordinator",
    "EnsembleCoordinator",
    "CascadeCoordinator",
    "FallbackCoordinator",
    "BalanceCoordinator",
    "TreeOfThoughtCoordinator",
    "RouterCoordinator",
    "PipelineCoordinator",
    "PipelineStep",
    "build_coordinator",
]


def _price_lookup(config: Config) -> Callable[[str], PriceConfig | None]:
    def price_of(name: str) -> PriceConfig | None:
        return config.provider(name).price if any(p.name == name for p in config.providers) else None

    return price_of


def _extractor_of(route) -> Extractor | None:
    if route.extract is None:
        return None  # reply_answer's default: the `Answer:` line, or canonical JSON
    if route.extract == "regex":
        return extractor("regex", pattern=route.pattern_regex or r"(.+)")
    if route.extract == "json":
        return extractor("json", path=route.path or "")
    return extractor(route.extract)


def build_coordinator(name: str, config: Config, resolve: Resolve) -> Coordinator:
    """The coordinator for the route `name` of `config`, calling its members through `resolve`."""
    route = config.routes[name]
    pattern = route.pattern
    if pattern == "race":
        return RaceCoordinator(name, resolve, route.providers, route.hedge_after_ms)
    if pattern == "fallback":
        return FallbackCoordinator(name, resolve, route.providers)
    if pattern == "balance":
        rpm = {p.name: p.limits.rpm for p in config.providers if p.name in route.providers}
        return BalanceCoordinator(name, resolve, route.providers, rpm=rpm)
    if pattern == "ensemble":
        return EnsembleCoordinator(
            name, resolve, route.providers, samples=route.samples, temperature=route.temperature,
            vote=route.vote, tie=route.tie, weights=route.weights, judge=route.judge,
            extract=_extractor_of(route), quorum=route.quorum,
        )
    if pattern == "cascade":
        accept = acceptance_from_config(route.accept, route.threshold, route.samples, _extractor_of(route))
        return CascadeCoordinator(
            name, resolve, route.providers, accept, judge=route.judge,
            ask_confidence=route.accept == "confidence", price_of=_price_lookup(config),
        )
    if pattern == "tree_of_thought":
        return TreeOfThoughtCoordinator(
            name, resolve, route.providers, task=route.task, breadth=route.breadth, depth=route.depth,
            evaluations=route.evaluations, max_calls=route.max_calls, max_tokens=route.max_tokens,
            max_cost=route.max_cost,
        )
    if pattern == "route":
        try:
            router = Router.from_config(route, prices={p.name: p.price for p in config.providers})
        except ConfigError as err:
            where = "." if err.message.startswith("rules[") else ": "
            raise ConfigError(f"routes.{name}{where}{err.message}") from None
        return RouterCoordinator(name, resolve, router)
    if pattern == "pipeline":
        return PipelineCoordinator(name, resolve, route.steps, on_error=route.on_error)
    raise ConfigError(f"routes.{name}: pattern {pattern!r} has no coordinator")
