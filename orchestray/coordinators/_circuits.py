"""How a pattern routes around a member whose circuit is open: it asks members to say so at once,
and remembers what they said (`policies.circuit.CircuitView`), so later calls pass them over
without a call of their own."""

from __future__ import annotations

from orchestray.errors import AllFailedError, CircuitOpenError
from orchestray.messages import ChatRequest
from orchestray.policies.circuit import CircuitView

__all__ = ["CircuitView", "cooling_for", "waits_for_circuit", "told_at_once", "learn"]


def cooling_for(err: BaseException) -> float | None:
    """Seconds until the member that raised `err` is worth a try, if `err` says only that its
    circuit is open (a nested pattern's members all cooling down counts too); else None."""
    if isinstance(err, CircuitOpenError):
        return err.retry_after or 0.0
    if isinstance(err, AllFailedError) and err.causes:
        waits = [cooling_for(cause) for cause in err.causes]
        if all(w is not None for w in waits):
            return min(waits)
    return None


def waits_for_circuit(request: ChatRequest) -> bool:
    """Whether a member asked with `request` waits out an open circuit (the caller has nowhere
    else to go) rather than failing at once."""
    if request.wait_for_circuit is not None:
        return request.wait_for_circuit
    return request.max_retries != 0


def told_at_once(request: ChatRequest) -> ChatRequest:
    """`request` for a member that has alternatives beside it: an open circuit fails it at once."""
    return request.with_changes(wait_for_circuit=False) if waits_for_circuit(request) else request


def learn(view: CircuitView, name: str, err: BaseException | None, now: float) -> None:
    """Note what a member's answer says of its circuit: an answer, or a failure, clears it."""
    wait = cooling_for(err) if err is not None else None
    if wait is None:
        view.saw_answer(name)
    else:
        view.saw_open(name, wait, now)
