"""The gateway's per-key caps as one actor all replicas share, so the caps are exact cluster-wide."""

from __future__ import annotations

import time

import ray

from orchestray.policies.keycaps import KeyCaps

__all__ = ["KeyQuota", "key_quota"]


@ray.remote(num_cpus=0, max_concurrency=1000)
class KeyQuota:
    """A thin shell around `KeyCaps`: the actor only reads the clock."""

    def __init__(self, requests_per_minute: float | None, spend_per_hour: float | None):
        self._caps = KeyCaps(requests_per_minute, spend_per_hour)

    def admit(self, key_id: str) -> float:
        return self._caps.admit(key_id, time.monotonic())

    def spend(self, key_id: str, cost: float) -> None:
        self._caps.spend(key_id, cost, time.monotonic())


def key_quota(requests_per_minute: float | None, spend_per_hour: float | None):
    """The shared quota actor for these caps (found or started), or None when there are none."""
    if not (requests_per_minute or spend_per_hour):
        return None
    return KeyQuota.options(name=f"orchestray-key-quota-{requests_per_minute}-{spend_per_hour}",
                            namespace="orchestray", get_if_exists=True,
                            lifetime="detached").remote(requests_per_minute, spend_per_hour)
