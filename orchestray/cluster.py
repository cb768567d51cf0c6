"""Joining Ray: the cluster in RAY_ADDRESS when there is one, else a local instance."""

from __future__ import annotations

import logging
import os

__all__ = ["connect", "NAMESPACE"]

NAMESPACE = "orchestray"


def connect(address: str | None = None, *, quiet: bool = True) -> None:
    """`ray.init` once per process: `address`, else RAY_ADDRESS, else a new local instance.

    On a fresh machine Ray 2.59+ turns token authentication on for a new local cluster and keeps
    the token in ~/.ray/auth_token; later processes on this machine find it there, so nothing
    needs setting. `RAY_AUTH_MODE=disabled` opts out; on a remote cluster with tokens on, set
    RAY_AUTH_TOKEN (or copy the token file) before running.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"namespace": NAMESPACE, "logging_level": logging.WARNING if quiet else logging.INFO}
    if not address:
        # A local instance for this command only (never a cluster someone else started on this
        # machine with `ray start`: pass --address auto for that); no dashboard to start.
        address = "local"
        kwargs["include_dashboard"] = False
    ray.init(address=address, **kwargs)
