"""Names to models on Ray: the registry with the shared provider actors (and route actors) plugged in."""

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
    """Finds or creates the provider actors and route (coordinator) actors on first use.

    With `routes_in_process`, routes run as coordinators in this process (a Serve replica
    hosting them) instead of in their own actors; providers are always the shared actors.
    """

    def __init__(self, config: Config, ensure_config: bool = True, routes_in_process: bool = False):
        self.ensure_config = ensure_config
        self.routes_in_process = routes_in_process
        super().__init__(
            config,
            lambda provider: provider_handle(provider, ensure_config),
            None if routes_in_process else self._route_actor,
            store=lambda: open_store(config.store, cluster=True),  # the cluster's store actor or Redis
            spend_ledger=_cluster_ledger,  # spend caps count the cluster's total
        )

    def _route_actor(self, name: str):
        from orchestray.actors.coordinators import route_handle

        return route_handle(name, self.config, self.ensure_config)
