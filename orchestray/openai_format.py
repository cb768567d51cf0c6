"""The OpenAI chat-completions wire: request bodies to `ChatRequest` and back, answers to bodies.

One translation for every door: the gateway and batch files parse bodies with it, the OpenAI
backend sends `request_params`, and the emulator answers with `completion_body`/`chunk_body`.
Requests are validated by pydantic (a clear message for every wrong field); fields of OpenAI's
request that orchestray does not model (`service_tier`, `prediction`, ...) and provider-specific
extras (what the SDKs send as `extra_body`) travel in `ChatRequest.extra_body`, for the backend
to send or refuse by name. Responses carry orchestray's trace in the extension field `orchestray`.

Request bodies to `ChatRequest` are in `_openai_bodies`, `ChatRequest` to the SDK's parameters in
`_openai_requests`, answers to bodies in `_openai_answers`; this module gathers them.
"""

from orchestray._openai_answers import chunk_body, completion_body, new_id, trace_extension, usage_body
from orchestray._openai_bodies import ChatCompletionBody, describe_errors, parse_chat_body, validation_message
from orchestray._openai_requests import message_dict, request_params

__all__ = [
    "ChatCompletionBody",
    "parse_chat_body",
    "request_params",
    "message_dict",
    "completion_body",
    "chunk_body",
    "usage_body",
    "trace_extension",
    "validation_message",
    "describe_errors",
    "new_id",
]
