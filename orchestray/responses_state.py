"""Stored Responses: what `store: true` keeps, in the cluster's store, for `previous_response_id`,
`GET`/`DELETE /v1/responses/{id}` and `/input_items`.

    StoredResponse ── owner: the gateway key's id (None on an open gateway)
                   ├── response: the Response body as answered
                   ├── input_items: this turn's input, as item resources
                   └── history: every item of the conversation up to and with this answer

Each response keeps its whole history, so continuing a conversation is one read however old its
first turn (and a turn outlives an expired ancestor). A response is visible only to the key that
made it: for any other key it does not exist, the same 404 as an unknown or expired id.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from orchestray.store import Namespace

__all__ = ["ResponsesConfig", "StoredResponse", "ResponseArchive", "NAMESPACE"]

NAMESPACE = "responses"


class ResponsesConfig(BaseModel):
    """The YAML's `responses:` section: how long stored responses live, how many are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_s: float = Field(default=30 * 86400, gt=0, description="seconds a stored response lives (OpenAI: 30 days)")
    max_entries: int = Field(default=100_000, ge=1, description="stored responses kept, oldest dropped first")


class StoredResponse(msgspec.Struct):
    owner: str | None
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    history: list[dict[str, Any]]


class ResponseArchive:
    """Stored responses in one store namespace, each readable only by its owner."""

    def __init__(self, namespace: Namespace):
        # JSON: a stored body is the client's JSON, whose numbers msgpack cannot always hold.
        self.typed = namespace.typed(StoredResponse, codec="json")

    @classmethod
    def over(cls, store, config: ResponsesConfig | None = None) -> "ResponseArchive":
        config = config or ResponsesConfig()
        return cls(store.namespace(NAMESPACE, max_entries=config.max_entries, ttl_s=config.ttl_s))

    async def save(self, owner: str | None, response: dict[str, Any], input_items: list[dict[str, Any]],
                   history: list[dict[str, Any]]) -> None:
        await self.typed.set(response["id"], StoredResponse(owner, response, input_items, history))

    async def load(self, response_id: str, owner: str | None) -> StoredResponse | None:
        stored = await self.typed.get(response_id)
        if stored is None or stored.owner != owner:
            return None
        return stored

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if await self.load(response_id, owner) is None:
            return False
        return await self.typed.delete(response_id)


def item_page(items: list[dict[str, Any]], *, limit: int = 20, order: str = "desc",
              after: str | None = None) -> dict[str, Any]:
    """A `ResponseItemList` page of input items: newest first unless `order=asc`, after an item id."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [i["id"] for i in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    page = ordered[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "", "has_more": len(ordered) > limit}


__all__.append("item_page")
