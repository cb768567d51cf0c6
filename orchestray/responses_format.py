"""The OpenAI Responses wire: `POST /v1/responses` bodies to `ChatRequest` and answers to Responses.

    body ──parse_responses_body──▶ ResponsesCall ── items: the input as stored items (with ids)
                                               ├── request: ChatRequest (instructions, history, items)
                                               └── echo: the request fields a Response repeats
    Completion ──response_body──▶ Response {output: message / function_call items, usage, status}

The input is first normalised to item resources, the shape `GET /v1/responses/{id}/input_items`
returns and the shape a stored conversation keeps; `items_to_messages` turns any run of items
(a stored history plus the new input) into the wire's messages. A Responses field with no
counterpart on the chat wire is refused with a 400 naming it; a built-in tool is refused naming
the tool and the provider; provider-side extras (`service_tier`, `prompt_cache_key`, ...) travel
in `extra_body` for the backend to send or refuse, as on the chat door.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestray.errors import RequestError
from orchestray.messages import ChatRequest, Completion, FilePart, ImagePart, Message, Part, ResponseFormat, TextPart, Tool, ToolCall
from orchestray.openai_format import trace_extension

__all__ = [
    "ResponsesCall",
    "parse_responses_body",
    "items_to_messages",
    "output_items",
    "response_body",
    "usage_body",
    "new_item_id",
    "new_response_id",
    "BUILTIN_TOOLS",
]

# The hosted tools of OpenAI's Responses API: run by OpenAI's servers, by no provider behind orchestray.
BUILTIN_TOOLS = (
    "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11",
    "file_search", "code_interpreter", "computer_use", "computer_use_preview", "computer",
    "image_generation", "mcp", "local_shell", "shell", "apply_patch", "tool_search", "custom",
)
# Fields the chat wire takes as provider extras: the backend sends them or refuses them by name.
_EXTRA_FIELDS = ("service_tier", "prompt_cache_key", "safety_identifier", "prompt_cache_retention")
# Fields whose only values mean nothing to do here (anything else is refused by name).
_INERT = {"truncation": ("disabled",), "background": (False,)}
# Fields a chat-wire provider cannot honour in any form.
_REFUSED = ("conversation", "prompt", "context_management", "prompt_cache_options", "moderation")
_KNOWN = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
    "max_output_tokens", "temperature", "top_p", "top_logprobs", "reasoning", "metadata", "user",
    "store", "stream", "stream_options", "previous_response_id", "include", "max_tool_calls",
    *_EXTRA_FIELDS, *_INERT, *_REFUSED,
}
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def new_item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass
class ResponsesCall:
    """One parsed `POST /v1/responses`: the chat request to run, the input as items, and what
    the answer repeats of the request. `request.messages` holds only instructions + this input
    until `with_history` puts a stored conversation in front."""

    request: ChatRequest
    items: list[dict[str, Any]]
    echo: dict[str, Any]
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    instructions: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def with_history(self, history: list[dict[str, Any]]) -> "ResponsesCall":
        """The call continued from a stored conversation's items (its inputs and outputs)."""
        messages = self._instructions() + items_to_messages(history + self.items)
        self.request = self.request.with_changes(messages=tuple(messages))
        return self

    def _instructions(self) -> list[Message]:
        return [Message("system", self.instructions)] if self.instructions else []


# Requests ──────────────────────────────────────────────────────────────────────────────────


def _fail(param: str, message: str) -> RequestError:
    return RequestError(f"{param}: {message}", param=param)


def _str(value: Any, param: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(param, f"must be a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(name, f"must be a number from {low:g} to {high:g}")
    return value


def _int(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(name, f"must be an integer from {low} to {high}")
    return value


def _input_part(part: Any, param: str, role: str) -> dict[str, Any]:
    """A content part as stored: input_text, input_image, input_file; output_text and refusal
    for assistant turns."""
    if not isinstance(part, dict):
        raise _fail(param, f"a content part must be an object, not {_kind(part)}")
    kind = part.get("type")
    allowed = ("output_text", "refusal", "input_text") if role == "assistant" else ("input_text", "input_image", "input_file")
    if kind not in allowed:
        raise _fail(f"{param}.type", f"{kind!r} is not a content part of a {role} message (one of {', '.join(allowed)})")
    if kind in ("input_text", "output_text"):
        text = _str(part.get("text"), f"{param}.text")
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []} if kind == "output_text" and role == "assistant" else {"type": "input_text", "text": text}
    if kind == "refusal":
        return {"type": "refusal", "refusal": _str(part.get("refusal"), f"{param}.refusal")}
    if kind == "input_image":
        url = _str(part.get("image_url"), f"{param}.image_url", optional=True)
        if part.get("file_id") is not None:
            raise _fail(f"{param}.file_id", "images by file id need OpenAI's Files API; give image_url (an http(s) or data URL)")
        if url is None:
            raise _fail(f"{param}.image_url", "is required")
        if not (url.startswith(("http://", "https://")) or (url.startswith("data:") and "," in url)):
            raise _fail(f"{param}.image_url", "must be an http(s) URL or a data URL (data:image/png;base64,...)")
        detail = part.get("detail") or "auto"
        if detail not in ("auto", "low", "high"):
            raise _fail(f"{param}.detail", "must be auto, low or high")
        return {"type": "input_image", "image_url": url, "detail": detail}
    out: dict[str, Any] = {"type": "input_file"}
    for key in ("file_id", "file_data", "filename"):
        if part.get(key) is not None:
            out[key] = _str(part[key], f"{param}.{key}")
    if part.get("file_url") is not None:
        raise _fail(f"{param}.file_url", "files by URL are not supported; give file_data")
    if "file_id" not in out and "file_data" not in out:
        raise _fail(param, "an input_file needs file_id or file_data")
    return out


def _message_item(item: dict, param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise _fail(f"{param}.role", "must be user, assistant, system or developer")
    content = item.get("content")
    if isinstance(content, str):
        parts = [{"type": "output_text", "text": content, "annotations": [], "logprobs": []} if role == "assistant"
                 else {"type": "input_text", "text": content}]
    elif isinstance(content, list):
        parts = [_input_part(p, f"{param}.content[{i}]", role) for i, p in enumerate(content)]
    else:
        raise _fail(f"{param}.content", f"must be a string or an array of content parts, not {_kind(content)}")
    if role in ("system", "developer") and any(p["type"] != "input_text" for p in parts):
        raise _fail(f"{param}.content", f"a {role} message holds text only")
    prefix = "msg"
    return {"id": item.get("id") or new_item_id(prefix), "type": "message", "role": role, "content": parts,
            "status": "completed"}


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"id": new_item_id("msg"), "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}], "status": "completed"}]
    if not isinstance(value, list):
        raise _fail("input", f"must be a string or an array of items, not {_kind(value)}")
    items = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _fail(param, f"an item must be an object, not {_kind(item)}")
        kind = item.get("type", "message")
        if kind == "message":
            items.append(_message_item(item, param))
        elif kind == "function_call":
            items.append({"id": item.get("id") or new_item_id("fc"), "type": "function_call",
                          "call_id": _str(item.get("call_id"), f"{param}.call_id"),
                          "name": _str(item.get("name"), f"{param}.name"),
                          "arguments": _str(item.get("arguments"), f"{param}.arguments"), "status": "completed"})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(_str(p.get("text") if isinstance(p, dict) and p.get("type") == "input_text" else None,
                                      f"{param}.output[{j}].text") for j, p in enumerate(output))
            items.append({"id": item.get("id") or new_item_id("fco"), "type": "function_call_output",
                          "call_id": _str(item.get("call_id"), f"{param}.call_id"),
                          "output": _str(output, f"{param}.output"), "status": "completed"})
        elif kind == "reasoning":
            raise _fail(f"{param}.type", "reasoning items are a reasoning model's own hidden state; the providers "
                        "behind orchestray neither return nor take them (leave them out of the input)")
        elif kind == "item_reference":
            raise _fail(f"{param}.type", "item references are not supported; use previous_response_id or send the item")
        else:
            raise _fail(f"{param}.type", f"{kind!r} items are not supported here (message, function_call and "
                        "function_call_output are)")
    return items


def _part(p: dict[str, Any]) -> Part | None:
    kind = p["type"]
    if kind in ("input_text", "output_text"):
        return TextPart(p["text"])
    if kind == "input_image":
        return ImagePart(p["image_url"], None if p.get("detail") == "auto" else p.get("detail"))
    if kind == "input_file":
        return FilePart(p.get("file_id"), p.get("file_data"), p.get("filename"))
    return None


def items_to_messages(items: list[dict[str, Any]]) -> list[Message]:
    """Stored items as the wire's messages: an assistant message and the function calls after it
    become one assistant turn with tool calls; each function_call_output a tool turn."""
    messages: list[Message] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            parts = [_part(p) for p in item["content"]]
            refusal = "".join(p["refusal"] for p in item["content"] if p["type"] == "refusal") or None
            kept = [p for p in parts if p is not None]
            if all(isinstance(p, TextPart) for p in kept):
                content: str | tuple[Part, ...] = "".join(p.text for p in kept)
            else:
                content = tuple(kept)
            messages.append(Message(item["role"], content, refusal=refusal))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = Message("assistant", last.content or None, tool_calls=last.tool_calls + (call,),
                                       refusal=last.refusal)
            else:
                messages.append(Message("assistant", None, tool_calls=(call,)))
        elif kind == "function_call_output":
            messages.append(Message("tool", item["output"], tool_call_id=item["call_id"]))
    return messages


def _tools(body: dict, describe: Callable[[], str]) -> tuple[list[Tool], list[dict[str, Any]]]:
    value = body.get("tools")
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _fail("tools", f"must be an array, not {_kind(value)}")
    tools, echoed = [], []
    for i, t in enumerate(value):
        param = f"tools[{i}]"
        if not isinstance(t, dict):
            raise _fail(param, f"a tool must be an object, not {_kind(t)}")
        kind = t.get("type")
        if kind != "function":
            if isinstance(kind, str) and (kind in BUILTIN_TOOLS or kind.startswith(("web_search", "computer"))):
                raise RequestError(f"{param}: {kind!r} is a built-in tool of OpenAI's Responses API, which "
                                   f"{describe()} cannot run; offer it as a function tool instead", param=f"{param}.type")
            raise _fail(f"{param}.type", f"{kind!r} is not a tool type (function, or a built-in tool)")
        name = _str(t.get("name"), f"{param}.name")
        if not name or len(name) > 64 or not all(c.isalnum() or c in "_-" for c in name):
            raise _fail(f"{param}.name", "must be 1-64 letters, digits, underscores or dashes")
        parameters = t.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _fail(f"{param}.parameters", "must be a JSON Schema object")
        strict = t.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _fail(f"{param}.strict", "must be a boolean")
        description = _str(t.get("description"), f"{param}.description", optional=True)
        for extra in set(t) - {"type", "name", "description", "parameters", "strict"}:
            if t[extra] is not None:
                raise _fail(f"{param}.{extra}", "is not supported on function tools here")
        tools.append(Tool(name, description, parameters, strict))
        echoed.append({"type": "function", "name": name, "description": description, "parameters": parameters,
                       "strict": True if strict is None else strict})
    return tools, echoed


def _tool_choice(value: Any, describe: Callable[[], str]) -> tuple[Any, Any]:
    """(the chat wire's tool_choice, the Response's echo)."""
    if value is None:
        return None, "auto"
    if value in ("auto", "none", "required"):
        return value, value
    if isinstance(value, dict) and value.get("type") == "function":
        name = _str(value.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}, {"type": "function", "name": name}
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(kind, str) and (kind in BUILTIN_TOOLS or kind.startswith(("web_search", "computer"))):
        raise RequestError(f"tool_choice: {kind!r} is a built-in tool of OpenAI's Responses API, which {describe()} "
                           "cannot run", param="tool_choice")
    raise _fail("tool_choice", "must be auto, none, required or {\"type\": \"function\", \"name\": ...}")


def _text_format(value: Any) -> tuple[ResponseFormat | None, dict[str, Any], str | None]:
    """(the wire's response_format, the Response's `text` echo, verbosity)."""
    if value is None:
        return None, {"format": {"type": "text"}}, None
    if not isinstance(value, dict):
        raise _fail("text", f"must be an object, not {_kind(value)}")
    verbosity = value.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise _fail("text.verbosity", "must be low, medium or high")
    fmt = value.get("format")
    echo: dict[str, Any] = {"format": {"type": "text"}}
    if verbosity is not None:
        echo["verbosity"] = verbosity
    if fmt is None:
        return None, echo, verbosity
    if not isinstance(fmt, dict):
        raise _fail("text.format", f"must be an object, not {_kind(fmt)}")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        echo["format"] = {"type": kind}
        return ResponseFormat(kind), echo, verbosity
    if kind != "json_schema":
        raise _fail("text.format.type", "must be text, json_object or json_schema")
    name = _str(fmt.get("name"), "text.format.name")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "_-" for c in name):
        raise _fail("text.format.name", "must be 1-64 letters, digits, underscores or dashes")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _fail("text.format.schema", "must be a JSON Schema object")
    strict = fmt.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _fail("text.format.strict", "must be a boolean")
    description = _str(fmt.get("description"), "text.format.description", optional=True)
    echo["format"] = {"type": "json_schema", "name": name, "schema": schema, "strict": strict,
                      **({"description": description} if description is not None else {})}
    return ResponseFormat("json_schema", name, schema, strict, description), echo, verbosity


def _checked_fields(body: dict) -> dict[str, Any]:
    """The provider extras of the body, after refusing what no chat-wire provider can honour."""
    for name in sorted(set(body) - _KNOWN):
        raise _fail(name, "unknown field")
    for name in _REFUSED:
        if body.get(name) is not None:
            raise _fail(name, "is not supported by orchestray's Responses endpoint")
    for name, fine in _INERT.items():
        if body.get(name) is not None and body[name] not in fine:
            raise _fail(name, f"only {fine[0]!r} is supported")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise _fail("include", "must be an array of strings")
    max_tool_calls = body.get("max_tool_calls")
    if max_tool_calls is not None and (isinstance(max_tool_calls, bool) or not isinstance(max_tool_calls, int)):
        raise _fail("max_tool_calls", "must be an integer")  # it bounds built-in tools, of which there are none
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _fail("stream_options", "must be an object")
    return {name: body[name] for name in _EXTRA_FIELDS if body.get(name) is not None}


def parse_responses_body(body: Any, describe: Callable[[str], str] | None = None,
                         request_id: str = "") -> ResponsesCall:
    """A `POST /v1/responses` body as a call; `describe(model)` names the model in a refusal
    ("provider 'gpt' (openai)"). A RequestError names the field at fault."""
    if not isinstance(body, dict):
        raise RequestError(f"body must be a JSON object, not {_kind(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("model", "must be a non-empty string naming a provider or a route")
    who = (lambda: describe(model)) if describe else (lambda: f"model {model!r}")
    extras = _checked_fields(body)
    if body.get("input") is None:
        raise _fail("input", "is required")
    items = _input_items(body["input"])
    instructions = _str(body.get("instructions"), "instructions", optional=True)
    tools, tools_echo = _tools(body, who)
    choice, choice_echo = _tool_choice(body.get("tool_choice"), who)
    response_format, text_echo, verbosity = _text_format(body.get("text"))
    if verbosity is not None:
        extras["verbosity"] = verbosity
    reasoning = body.get("reasoning")
    effort = None
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _fail("reasoning", "must be an object")
        effort = reasoning.get("effort")
        if effort is not None and effort not in _EFFORTS:
            raise _fail("reasoning.effort", f"must be one of {', '.join(_EFFORTS)}")
        for key in set(reasoning) - {"effort"}:
            if reasoning[key] is not None:
                raise _fail(f"reasoning.{key}", "is not supported: orchestray's providers return no reasoning summaries")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items())):
        raise _fail("metadata", "must be at most 16 string keys (64 chars) to string values (512 chars)")
    parallel = body.get("parallel_tool_calls")
    for flag in ("parallel_tool_calls", "store", "stream"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise _fail(flag, "must be a boolean")
    previous = _str(body.get("previous_response_id"), "previous_response_id", optional=True)
    top_logprobs = _int(body, "top_logprobs", 0, 20)
    request = ChatRequest(
        messages=(),
        model=model,
        max_tokens=_int(body, "max_output_tokens", 1, 10_000_000),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        tools=tuple(tools),
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        logprobs=True if top_logprobs is not None else None,
        top_logprobs=top_logprobs,
        reasoning_effort=effort,
        user=_str(body.get("user"), "user", optional=True),
        metadata=metadata,
        extra_body=extras or None,
        request_id=request_id,
    )
    echo = {
        "model": model, "instructions": instructions, "tools": tools_echo, "tool_choice": choice_echo,
        "parallel_tool_calls": True if parallel is None else parallel, "metadata": metadata or {},
        "temperature": request.temperature, "top_p": request.top_p, "max_output_tokens": request.max_tokens,
        "previous_response_id": previous, "reasoning": {"effort": effort, "summary": None}, "text": text_echo,
        "truncation": "disabled", "top_logprobs": top_logprobs,
        "store": True if body.get("store") is None else body["store"],
    }
    if request.user is not None:
        echo["user"] = request.user  # the schema's `user` is a string, never null
    call = ResponsesCall(request, items, echo, stream=bool(body.get("stream")), store=echo["store"],
                         previous_response_id=previous, instructions=instructions)
    return call.with_history([])


# Answers ───────────────────────────────────────────────────────────────────────────────────


def usage_body(completion: Completion) -> dict[str, Any]:
    return {
        "input_tokens": completion.input_tokens,
        "input_tokens_details": {"cached_tokens": completion.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion.output_tokens,
        "output_tokens_details": {"reasoning_tokens": completion.reasoning_tokens},
        "total_tokens": completion.input_tokens + completion.output_tokens,
    }


def logprobs_of(chat_logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The chat wire's `{"content": [...]}` logprobs as an output_text part's list."""
    out = []
    for entry in (chat_logprobs or {}).get("content") or ():
        out.append({"token": entry.get("token", ""), "logprob": entry.get("logprob", 0.0),
                    "bytes": entry.get("bytes") or [],
                    "top_logprobs": [{"token": t.get("token", ""), "logprob": t.get("logprob", 0.0),
                                      "bytes": t.get("bytes") or []} for t in entry.get("top_logprobs") or ()]})
    return out


def status_of(completion: Completion) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) from the finish reason."""
    if completion.finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if completion.finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def output_items(completion: Completion, message_id: str | None = None,
                 call_ids: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """The answer as output items: a message (its text or refusal), then one function_call per
    tool call. Item ids may be given (the ones a stream already announced)."""
    status, _ = status_of(completion)
    item_status = "incomplete" if status == "incomplete" else "completed"
    items: list[dict[str, Any]] = []
    if completion.content or completion.refusal or not completion.tool_calls:
        content: list[dict[str, Any]] = []
        if completion.content or not completion.refusal:
            content.append({"type": "output_text", "text": completion.content, "annotations": [],
                            "logprobs": logprobs_of(completion.logprobs)})
        if completion.refusal:
            content.append({"type": "refusal", "refusal": completion.refusal})
        items.append({"id": message_id or new_item_id("msg"), "type": "message", "role": "assistant",
                      "status": item_status, "content": content})
    for i, call in enumerate(completion.tool_calls):
        items.append({"id": (call_ids or {}).get(i) or new_item_id("fc"), "type": "function_call",
                      "call_id": call.id, "name": call.name, "arguments": call.arguments, "status": "completed"})
    return items


def response_body(call_echo: dict[str, Any], response_id: str, created_at: int, *,
                  completion: Completion | None = None, output: list[dict[str, Any]] | None = None,
                  status: str | None = None, error: dict[str, str] | None = None,
                  extension: bool = True) -> dict[str, Any]:
    """A Response object. With a completion, the finished answer; without, the in-progress (or
    failed, with `error`) shell a stream starts from."""
    incomplete = None
    if completion is not None:
        status, incomplete = status_of(completion) if status is None else (status, None)
        output = output if output is not None else output_items(completion)
    body: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": status or "in_progress",
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": incomplete,
        "output": output or [],
        **call_echo,
        "background": False, "service_tier": "default",
    }
    if completion is not None:
        body["usage"] = usage_body(completion)  # the schema's usage is an object, never null
    if extension and completion is not None:
        body["orchestray"] = trace_extension(completion)
    return body


def output_as_items(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Response's output as conversation items for the next turn (refusal parts kept)."""
    return [item for item in output if item["type"] in ("message", "function_call")]
