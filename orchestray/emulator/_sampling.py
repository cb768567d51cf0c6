"""Anthropic's newest models as the emulator plays them: sampling fields answered with a 400."""

from __future__ import annotations

import msgspec

__all__ = ["deprecated_sampling"]


class _Sampling(msgspec.Struct):
    """The only fields this check reads; the dialect decodes the rest."""

    model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None


_decode = msgspec.json.Decoder(_Sampling).decode


def deprecated_sampling(body: bytes, rejecting: tuple[str, ...]) -> str | None:
    """The message Anthropic answers (400 invalid_request_error) when `body` asks a model named
    in `rejecting` ("*" for every model) for temperature, top_p or top_k; None otherwise."""
    if not rejecting:
        return None
    try:
        seen = _decode(body)
    except msgspec.MsgspecError:
        return None  # the dialect's decoder says what is wrong with it
    if "*" not in rejecting and seen.model not in rejecting:
        return None
    for field in ("temperature", "top_p", "top_k"):
        if getattr(seen, field) is not None:
            return f"`{field}` is deprecated for this model."
    return None
