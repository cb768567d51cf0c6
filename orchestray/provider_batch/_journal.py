"""What an output's provider batches are, kept beside it: `OUT.provider-batches.jsonl`.

    {"e": "intent",    "tag", "provider", "round", "keys": [...], "t"}   before the batch is created
    {"e": "submitted", "tag", "batch"}                                   its id, before any wait on it
    {"e": "answer",    "key", "provider", "batch", "kind", "status", "body" | "message"}
    {"e": "collected", "batch"}                                          every answer of it is above

Intents and ids are fsynced before the driver waits, so a rerun (or a driver that died) collects
those batches instead of submitting their requests again. A request's key is its input line and
a digest of what it asks, so the same line asking the same thing again (a pattern replayed after
a crash) finds its answer here, not at the provider. A driver killed between creating a batch
and recording its id finds it again (`BatchAPI.find`): by the tag in its metadata (OpenAI), or,
Message Batches having no metadata, by its creation time and request count (Anthropic).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import msgspec

from orchestray.provider_batch._apis import Outcome

__all__ = ["Journal", "JournalBatch", "journal_path", "line_of_key"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def journal_path(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".provider-batches.jsonl")


def line_of_key(key: str) -> int:
    return int(key[1:].split("-", 1)[0])


@dataclass
class JournalBatch:
    tag: str
    provider: str
    round: int
    keys: list[str]
    created: float
    batch_id: str | None = None
    collected: bool = False


@dataclass
class Journal:
    path: Path
    batches: dict[str, JournalBatch] = field(default_factory=dict)  # by tag
    _file: Any = None

    def load(self, done) -> dict[str, tuple[Outcome, str]]:
        """The batches recorded, and the answers of lines not in `done` (by key)."""
        answers: dict[str, tuple[Outcome, str]] = {}
        if not self.path.exists():
            return answers
        by_id: dict[str, JournalBatch] = {}
        for event in self._events():
            kind = event.get("e")
            if kind == "intent":
                self.batches[event["tag"]] = JournalBatch(event["tag"], event["provider"], event["round"],
                                                          event["keys"], event["t"])
            elif kind == "submitted" and event["tag"] in self.batches:
                self.batches[event["tag"]].batch_id = event["batch"]
                by_id[event["batch"]] = self.batches[event["tag"]]
            elif kind == "collected" and event["batch"] in by_id:
                by_id[event["batch"]].collected = True
            elif kind == "answer" and line_of_key(event["key"]) not in done:
                outcome = Outcome(event["kind"], event["status"], event.get("body"), event.get("message", ""))
                answers[event["key"]] = (outcome, event.get("batch", ""))
        return answers

    def _events(self) -> Iterator[dict]:
        with self.path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn by a crash: what it said is not relied on
                try:
                    yield _decode(raw)
                except msgspec.DecodeError:
                    continue

    def _write(self, event: dict, durable: bool = False) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(_encode(event) + b"\n")
        self._file.flush()
        if durable:
            os.fsync(self._file.fileno())

    def intent(self, tag: str, provider: str, round_: int, keys: list[str]) -> None:
        self.batches[tag] = JournalBatch(tag, provider, round_, keys, time.time())
        self._write({"e": "intent", "tag": tag, "provider": provider, "round": round_, "keys": keys,
                     "t": self.batches[tag].created}, durable=True)

    def submitted(self, tag: str, batch_id: str) -> None:
        self.batches[tag].batch_id = batch_id
        self._write({"e": "submitted", "tag": tag, "batch": batch_id}, durable=True)

    def answer(self, key: str, provider: str, batch_id: str, outcome: Outcome) -> None:
        event = {"e": "answer", "key": key, "provider": provider, "batch": batch_id, "kind": outcome.kind,
                 "status": outcome.status}
        if outcome.body is not None:
            event["body"] = outcome.body
        if outcome.message:
            event["message"] = outcome.message
        self._write(event)

    def collected(self, batch_id: str) -> None:
        for batch in self.batches.values():
            if batch.batch_id == batch_id:
                batch.collected = True
        self._write({"e": "collected", "batch": batch_id}, durable=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
