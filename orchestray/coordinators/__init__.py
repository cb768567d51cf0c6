"""Coordinators: the orchestration patterns, each presenting the same interface as a provider.

A coordinator has `complete(request) -> Completion` and `stream(request)`, and calls the models
it coordinates through `resolve(name)`, so patterns nest: a cascade whose second stage is an
ensemble, a race inside a tree-of-thought step. These classes know nothing of Ray; the Serve
gateway, the batch workers and the Python API run them in-process, and tests drive them with in-process models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestray.coordinators._base import Coordinator, Model, Resolve
from orchestray.coordinators.balance import BalanceCoordinator
from orchestray.coordinators.cascade import CascadeCoordinator
from orchestray.coordinators.ensemble import EnsembleCoordinator
from orchestray.coordinators.fallback import FallbackCoordinator
from orchestray.coordinators.pipeline import PipelineCoordinator, PipelineStep
from orchestray.coordinators.race import RaceCoordinator
from orchestray.coordinators.router import RouterCoordinator
from orchestray.coordinators.tree import TreeOfThoughtCoordinator

if TYPE_CHECKING:  # the config imports the pattern table, which imports the coordinators
    from orchestray.config import Config

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


def build_coordinator(name: str, config: Config, resolve: Resolve) -> Coordinator:
    """The coordinator for the route `name` of `config`, calling its members through `resolve`
    (each route model builds its own: `orchestray.patterns`)."""
    return config.routes[name].build(name, config, resolve)
