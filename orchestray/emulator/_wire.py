"""The OpenAI chat-completions and Anthropic messages wire formats: requests, answers, SSE, errors.

Each format is a `Dialect`; the server runs one request flow and asks the dialect for the bytes.
Decoders and the encoder are made once (msgspec), since this is the emulator's hot path. Both
decode the whole surface their API accepts for chat (content parts and image blocks, tools and
tool results, tool_choice, structured output, n, logprobs) into one `ChatRequest`; a field the
simulated models cannot honour is a 400 naming it, never ignored.

The shared pieces are in `_dialect`, each format in a module of its own; this module gathers them.
"""

from ._anthropic_messages import ANTHROPIC
from ._dialect import Call, Dialect, WireError
from ._openai_chat import OPENAI

__all__ = ["Call", "Dialect", "OPENAI", "ANTHROPIC", "WireError"]
