"""Batch jobs through the providers' own batch APIs, at their batch price, patterns run as rounds.

    _apis      OpenAI Files + Batches and Anthropic Message Batches behind one shape (the real SDKs)
    _journal   the batches an output has in flight, recorded beside it before any wait
    _rounds    the coordinators' own code over providers whose calls wait for a round's batch
    _driver    the run: input streamed into rounds, one record per line, resumable
    _cli       `orchestray batch --provider-batch`, and listing or cancelling an output's batches

Names are loaded on first use: `orchestray.config` imports nothing from here, and this package
imports the config.
"""

from __future__ import annotations

__all__ = ["ProviderBatchOptions", "ProviderBatchResult", "run_provider_batch", "format_provider_summary"]


def __getattr__(name: str):
    if name in __all__:
        from orchestray.provider_batch import _driver

        return getattr(_driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
