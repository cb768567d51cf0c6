"""The Responses API's stream: the wire's chunks as Responses events, each with its sequence number.

    response.created, response.in_progress
    per output item:  response.output_item.added
                      message:       response.content_part.added, response.output_text.delta ... .done
                                     (or response.refusal.delta ... .done), response.content_part.done
                      function_call: response.function_call_arguments.delta ... .done
                      response.output_item.done
    response.completed (or response.incomplete)      or, when the call fails midway, response.failed

Items open as their first piece arrives and close when the next item opens or the answer ends.
The finished Response is built from the final completion with the streamed items' ids, so what a
client accumulated and what `response.completed` (and the store) hold agree; an item the stream
never showed (a coordinator that only hands over the final answer) is announced whole at the end.
"""

from __future__ import annotations

import time
from typing import Any

from orchestray.messages import Chunk, Completion
from orchestray.responses_format import new_item_id, output_items, response_body, status_of

__all__ = ["ResponseStream", "failure_code"]


def failure_code(status: int) -> str:
    """An HTTP status as one of the Response error codes the schema allows."""
    if status == 429:
        return "rate_limit_exceeded"
    if 400 <= status < 500:
        return "invalid_prompt"
    return "server_error"


class _Item:
    __slots__ = ("id", "kind", "index", "text", "refusal", "call_id", "name", "arguments", "part")

    def __init__(self, kind: str, index: int, call_id: str = "", name: str = ""):
        self.id = new_item_id("msg" if kind == "message" else "fc")
        self.kind = kind
        self.index = index
        self.text = ""
        self.refusal = ""
        self.call_id = call_id
        self.name = name
        self.arguments = ""
        self.part: str | None = None  # the message's open content part: output_text | refusal


class ResponseStream:
    """Events for one streamed Response; `start()`, `piece(chunk)` per chunk, then `finish(completion)`
    or `fail(status, message)`. Each returns a list of event dicts."""

    def __init__(self, echo: dict[str, Any], response_id: str, created_at: int | None = None):
        self.echo = echo
        self.response_id = response_id
        self.created_at = int(time.time()) if created_at is None else created_at
        self.sequence = 0
        self.items: list[_Item] = []
        self.open: _Item | None = None
        self.calls: dict[int, _Item] = {}  # a streamed tool call's index → its item
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _shell(self, status: str = "in_progress", error: dict[str, str] | None = None) -> dict[str, Any]:
        return response_body(self.echo, self.response_id, self.created_at, status=status, error=error,
                             output=[self._item_body(i, done=False) for i in self.items] if status == "failed" else [])

    def start(self) -> list[dict[str, Any]]:
        return [self._event("response.created", response=self._shell()),
                self._event("response.in_progress", response=self._shell())]

    # Items

    def _item_body(self, item: _Item, done: bool) -> dict[str, Any]:
        status = "completed" if done else "in_progress"
        if item.kind == "message":
            content = []
            if item.text or item.part == "output_text" or (done and not item.refusal):
                content.append(self._text_part(item.text))
            if item.refusal:
                content.append({"type": "refusal", "refusal": item.refusal})
            return {"id": item.id, "type": "message", "role": "assistant", "status": status,
                    "content": content if done or item.part else []}
        return {"id": item.id, "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments if done else "", "status": status}

    @staticmethod
    def _text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _add(self, item: _Item) -> list[dict[str, Any]]:
        events = self._close()
        self.items.append(item)
        self.open = item
        return events + [self._event("response.output_item.added", output_index=item.index,
                                     item=self._item_body(item, done=False))]

    def _open_part(self, item: _Item, part: str) -> list[dict[str, Any]]:
        if item.part == part:
            return []
        events = self._close_part(item)
        item.part = part
        body = self._text_part("") if part == "output_text" else {"type": "refusal", "refusal": ""}
        return events + [self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                     content_index=self._content_index(item), part=body)]

    @staticmethod
    def _content_index(item: _Item) -> int:
        return 1 if item.part == "refusal" and item.text else 0

    def _close_part(self, item: _Item) -> list[dict[str, Any]]:
        if item.part is None:
            return []
        where = {"item_id": item.id, "output_index": item.index, "content_index": self._content_index(item)}
        if item.part == "output_text":
            events = [self._event("response.output_text.done", **where, text=item.text, logprobs=[]),
                      self._event("response.content_part.done", **where, part=self._text_part(item.text))]
        else:
            events = [self._event("response.refusal.done", **where, refusal=item.refusal),
                      self._event("response.content_part.done", **where,
                                  part={"type": "refusal", "refusal": item.refusal})]
        item.part = None
        return events

    def _close(self) -> list[dict[str, Any]]:
        item, self.open = self.open, None
        if item is None:
            return []
        if item.kind == "message":
            events = self._close_part(item)
        else:
            events = [self._event("response.function_call_arguments.done", item_id=item.id, output_index=item.index,
                                  name=item.name, arguments=item.arguments)]
        return events + [self._event("response.output_item.done", output_index=item.index,
                                     item=self._item_body(item, done=True))]

    def _message(self) -> tuple[_Item, list[dict[str, Any]]]:
        if self.open is not None and self.open.kind == "message":
            return self.open, []
        item = _Item("message", len(self.items))
        return item, self._add(item)

    # Pieces

    def piece(self, chunk: Chunk) -> list[dict[str, Any]]:
        if chunk.choice != 0:
            return []  # the Responses API has one answer (no `n`)
        events: list[dict[str, Any]] = []
        if chunk.delta:
            item, events = self._message()
            events += self._open_part(item, "output_text")
            item.text += chunk.delta
            events.append(self._event("response.output_text.delta", item_id=item.id, output_index=item.index,
                                      content_index=0, delta=chunk.delta, logprobs=[]))
        if chunk.refusal:
            item, more = self._message()
            events += more + self._open_part(item, "refusal")
            item.refusal += chunk.refusal
            events.append(self._event("response.refusal.delta", item_id=item.id, output_index=item.index,
                                      content_index=self._content_index(item), delta=chunk.refusal))
        for delta in chunk.tool_calls:
            item = self.calls.get(delta.index)
            if item is None:
                item = self.calls[delta.index] = _Item("function_call", len(self.items), delta.id or new_item_id("call"),
                                                       delta.name or "")
                events += self._add(item)
            elif item is not self.open:
                continue  # a piece of a call already closed: providers stream calls one after another
            if delta.arguments:
                item.arguments += delta.arguments
                events.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                          output_index=item.index, delta=delta.arguments))
        return events

    def finish(self, completion: Completion) -> list[dict[str, Any]]:
        """The closing events, the final Response in `response.completed` (kept in `self.final`)."""
        events = []
        final = output_items(completion)
        message = next((i for i in self.items if i.kind == "message"), None)
        by_call = {i.call_id: i for i in self.items if i.kind == "function_call"}
        calls = [i for i in self.items if i.kind == "function_call"]
        ordered: list[dict[str, Any] | None] = [None] * len(self.items)
        unseen = []
        for n, body in enumerate(final):
            streamed = message if body["type"] == "message" else by_call.get(body["call_id"])
            if streamed is None and body["type"] == "function_call" and len(calls) == len(completion.tool_calls):
                streamed = calls[[b for b in final if b["type"] == "function_call"].index(body)]
            if streamed is not None and ordered[streamed.index] is None:
                body["id"] = streamed.id
                ordered[streamed.index] = body
                if body["type"] == "message" and streamed.text != completion.content and self.open is streamed:
                    streamed.text = completion.content  # done events carry the final text
            else:
                unseen.append(body)
        events += self._close()
        output = [b for b in ordered if b is not None]
        for body in unseen:
            index = len(output)
            output.append(body)
            events += self._announce(body, index)
        status, _ = status_of(completion)
        self.final = response_body(self.echo, self.response_id, self.created_at, completion=completion, output=output)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, response=self.final)]

    def _announce(self, body: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """Every event of an item the stream never showed, from its finished body."""
        shell = {**body, "status": "in_progress"}
        if body["type"] == "function_call":
            shell["arguments"] = ""
            return [self._event("response.output_item.added", output_index=index, item=shell),
                    self._event("response.function_call_arguments.delta", item_id=body["id"], output_index=index,
                                delta=body["arguments"]),
                    self._event("response.function_call_arguments.done", item_id=body["id"], output_index=index,
                                name=body["name"], arguments=body["arguments"]),
                    self._event("response.output_item.done", output_index=index, item=body)]
        shell["content"] = []
        events = [self._event("response.output_item.added", output_index=index, item=shell)]
        for n, part in enumerate(body["content"]):
            where = {"item_id": body["id"], "output_index": index, "content_index": n}
            empty = self._text_part("") if part["type"] == "output_text" else {"type": "refusal", "refusal": ""}
            events.append(self._event("response.content_part.added", **where, part=empty))
            if part["type"] == "output_text":
                events += [self._event("response.output_text.delta", **where, delta=part["text"], logprobs=[]),
                           self._event("response.output_text.done", **where, text=part["text"], logprobs=[])]
            else:
                events += [self._event("response.refusal.delta", **where, delta=part["refusal"]),
                           self._event("response.refusal.done", **where, refusal=part["refusal"])]
            events.append(self._event("response.content_part.done", **where, part=part))
        return events + [self._event("response.output_item.done", output_index=index, item=body)]

    def fail(self, status: int, message: str) -> list[dict[str, Any]]:
        """`response.failed`, the partial output in it, for a call that failed midway."""
        self.open = None
        error = {"code": failure_code(status), "message": message}
        return [self._event("response.failed", response=self._shell("failed", error))]
