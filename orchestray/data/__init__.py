"""Ray Data: answer every row of a Dataset through a provider or route, one output row per input row.

    import ray, orchestray.data
    ds = ray.data.read_json("in.jsonl")                    # a "prompt" (str) or "messages" column
    out = orchestray.data.complete(ds, model="cheap", config="my.yaml", concurrency=4)
    out.write_json("out/")                                 # the input's columns + content, provider, cost, error

Rows are answered by a pool of Ray Data actors (`map_batches` with a callable class), each
holding an `AsyncClient` on the Ray runtime, so every call goes to the cluster's shared provider
actors and a provider's limit holds across the whole pipeline and every other job. Routes run in
those actors. A row that fails keeps its place with `error` set (`code: message`) and null
content; no row is dropped. (Also shipped here: `game24.csv`, the Game of 24 puzzles.)
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Mapping

from orchestray._client import AsyncClient, build_request
from orchestray.config import Config
from orchestray.errors import OrchestrayError, UnknownModelError, error_code

if TYPE_CHECKING:
    import pyarrow
    import ray.data

__all__ = ["complete", "OUTPUT_COLUMNS"]

OUTPUT_COLUMNS = ("content", "provider", "cost", "error")
# A pool that grows with the work but stays a few actors: the providers' limits, not the
# pool's size, bound the rate, and each actor keeps a whole batch of rows in flight at once.
DEFAULT_CONCURRENCY = (1, 4)


def complete(
    ds: "ray.data.Dataset",
    model: str,
    config: str | os.PathLike | Mapping[str, Any] | Config | None = None,
    *,
    prompt_column: str = "prompt",
    messages_column: str = "messages",
    concurrency: int | tuple[int, int] | tuple[int, int, int] | None = None,
    compute: Any = None,
    batch_size: int = 256,
    num_cpus: float = 0.25,
    **fields: Any,
) -> "ray.data.Dataset":
    """`ds` with `content`, `provider`, `cost` and `error` columns added (lazily, as Ray Data does).

    Each row's prompt is its `prompt_column` (text) or, without one, its `messages_column`
    (OpenAI chat messages); `fields` are OpenAI request fields for every row (`max_tokens=64`).
    `concurrency` is Ray Data's: an int for a fixed pool of actors, `(min, max)` or `(min, max,
    initial)` for an autoscaling one (default `(1, 4)`); or pass `compute=ray.data.
    ActorPoolStrategy(...)` itself. `batch_size` rows are in flight per actor at once; each
    actor reserves `num_cpus`.
    """
    from ray.data import ActorPoolStrategy

    client = AsyncClient(config, runtime="ray")
    if not client.config.has_model(model):
        raise UnknownModelError(model, client.config.model_names())
    build_request(model, "check", fields)  # a bad field fails here, not in every row
    if compute is None:
        compute = _pool(concurrency or DEFAULT_CONCURRENCY, ActorPoolStrategy)
    elif concurrency is not None:
        raise TypeError("give concurrency= or compute=, not both")
    return ds.map_batches(
        _Answer,
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=compute,
        num_cpus=num_cpus,
        udf_modifying_row_count=False,
        fn_constructor_kwargs={
            "client": client,
            "model": model,
            "prompt_column": prompt_column,
            "messages_column": messages_column,
            "fields": fields,
        },
    )


def _pool(concurrency, strategy):
    if isinstance(concurrency, int):
        return strategy(size=concurrency)
    if isinstance(concurrency, tuple) and len(concurrency) == 2:
        return strategy(min_size=concurrency[0], max_size=concurrency[1])
    if isinstance(concurrency, tuple) and len(concurrency) == 3:
        return strategy(min_size=concurrency[0], max_size=concurrency[1], initial_size=concurrency[2])
    raise TypeError(f"concurrency must be an int, (min, max) or (min, max, initial), not {concurrency!r}")


def _without_nulls(value: Any) -> Any:
    # Arrow gives every struct in a column every field any of them has, the missing ones null
    # (a "name" on one message puts name: None on all); OpenAI's messages leave them out.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


class _Answer:
    """The Ray Data actor: answers a batch's rows concurrently through its client."""

    def __init__(self, client: AsyncClient, model: str, prompt_column: str, messages_column: str, fields: dict):
        self.client = client
        self.model = model
        self.prompt_column = prompt_column
        self.messages_column = messages_column
        self.fields = fields

    def _prompts(self, table: "pyarrow.Table") -> list[Any]:
        if self.prompt_column in table.column_names:
            return table.column(self.prompt_column).to_pylist()
        if self.messages_column in table.column_names:
            return [_without_nulls(m) for m in table.column(self.messages_column).to_pylist()]
        missing = ValueError(f"the row has no {self.prompt_column!r} or {self.messages_column!r} column")
        return [missing] * table.num_rows

    async def _answer(self, prompt: Any) -> tuple[str | None, str | None, float, str | None]:
        try:
            if isinstance(prompt, BaseException):
                raise prompt
            if prompt is None:
                raise ValueError("the prompt is null")
            answer = await self.client.complete(self.model, prompt, **self.fields)
        except Exception as err:
            message = str(err) if isinstance(err, OrchestrayError) else f"{type(err).__name__}: {err}"
            return None, getattr(err, "provider", None) or None, 0.0, f"{error_code(err)}: {message}"
        return answer.content, answer.provider, answer.cost, None

    async def __call__(self, table: "pyarrow.Table") -> "pyarrow.Table":
        import pyarrow as pa

        rows = await asyncio.gather(*(self._answer(p) for p in self._prompts(table)))
        kinds = (pa.string(), pa.string(), pa.float64(), pa.string())
        for name, kind, values in zip(OUTPUT_COLUMNS, kinds, zip(*rows) if rows else ((),) * 4):
            column = pa.array(list(values), type=kind)
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, column)
            else:
                table = table.append_column(name, column)
        return table
