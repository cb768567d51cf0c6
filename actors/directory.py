"""Names to models on Ray: the registry with the shared provider actors plugged in."""

from __future__ import annotations

from orchestray.config import Config
from orchestray.registry import Registry
from orchestray.store import open_store

from orchestray.actors.provider import provider_handle

__all__ = ["ModelDirectory"]


def _cluster_ledger():
    from orchestray.actors.spend import RaySpendLedger

    return RaySpendLedger()


class ModelDirectory(Registry):
    """Finds or creates the provider actors on first use; routes run as coordinators in this
    process against them (as in a Serve replica, a batch worker, or a Python client).

    `routes_in_process` is kept for callers that pass it: routes always run in-process now
    (the per-route `route:NAME` actors are gone).
    """

    def __init__(self, config: Config, ensure_config: bool = True, routes_in_process: bool = True):
        if not routes_in_process:
            raise ValueError("route actors were removed: routes run in the calling process")
        self.ensure_config = ensure_config
        super().__init__(
            config,
            lambda provider: provider_handle(provider, ensure_config),
            store=lambda: open_store(config.store, cluster=True),  # the cluster's store actor or Redis
            spend_ledger=_cluster_ledger,  # spend caps count the cluster's total
        )
