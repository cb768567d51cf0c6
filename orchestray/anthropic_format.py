"""The Anthropic Messages wire: `ChatRequest` to Messages API bodies and back, both directions.

One translation for both doors: the Anthropic backend sends `request_body` and decodes answers
with `reply_from_message` / `StreamDecoder`; the gateway's `POST /v1/messages` parses bodies with
`parse_messages_body` and answers with `message_body` / `StreamEncoder` / `error_body`.

    ChatRequest ─ request_body ─▶ {system, messages: [tool_use, tool_result, image...], tools...}
    Reply       ◀ reply_from_message, StreamDecoder ─ message / SSE events
    ChatRequest ◀ parse_messages_body ─ an Anthropic request body        (gateway ingress)
    Completion  ─ message_body, StreamEncoder ─▶ a message / SSE events  (gateway ingress)

JSON output (`response_format` json_object / json_schema) is asked for with a forced tool, not
with a prefilled assistant turn: the tool's `input_schema` hands the model the whole schema
(a prefill of "{" only steers the first character and says nothing of the fields), the API
returns the tool's input as an already-parsed JSON object, so the answer cannot trail off into
prose after the object, it works on every model that has tool use and every SDK version the
package allows (the newest models refuse assistant prefill, older ones refuse the native
`output_config.format`), and its streamed `input_json` deltas pass on as content deltas. The
tool's input is returned as the answer's content; its call is never shown as a tool call.

Usage: Anthropic's `input_tokens` counts only the uncached part of the prompt, OpenAI's
`prompt_tokens` all of it; so input tokens here are input + cache writes + cache reads, and
`cached_tokens` the cache reads.

The client side (what the backend sends and decodes) is in `_anthropic_client_side`, the
server side (the gateway's ingress) in `_anthropic_server_side`; this module gathers them.
"""

from orchestray._anthropic_client_side import (
    DEFAULT_MAX_TOKENS, SAMPLING_FIELDS, StreamDecoder, json_tool_name, reply_from_message, request_body
)
from orchestray._anthropic_server_side import (
    MessagesBody, StreamEncoder, error_body, error_type, message_body, new_message_id, parse_messages_body
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "SAMPLING_FIELDS",
    "json_tool_name",
    "request_body",
    "reply_from_message",
    "StreamDecoder",
    "MessagesBody",
    "parse_messages_body",
    "message_body",
    "StreamEncoder",
    "error_body",
    "error_type",
    "new_message_id",
]
