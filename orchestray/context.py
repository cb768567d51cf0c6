"""Context between models: history trimmed to a token budget, earlier turns or stage outputs summarized, a shared store.

    trim_history(messages, budget)          the system messages and the latest turns that fit
    history = History(budget=2000, summarizer=models["small"], keep_last=4)
    history.add(Message("user", ...)); ...
    messages = await history.messages()     # over budget: the earlier turns become one summary
    values = await fit_inputs({"extract": long_text}, budget=500, summarizer=model)
    shared = SharedContext(); shared["customer"] = ...   # what workflow steps read and write

Tokens are counted as `orchestray.messages.estimate_tokens` counts them (the same estimate the
rate limiters use). A summarizer is anything with `complete(ChatRequest) -> Completion` (a
provider, a coordinator, a directory entry); it is asked with `SUMMARY_PROMPT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from orchestray.messages import ChatRequest, Message, estimate_tokens

__all__ = ["trim_history", "message_tokens", "History", "fit_inputs", "SharedContext", "SUMMARY_PROMPT", "summarize"]

SUMMARY_PROMPT = (
    "Summarize the text below in at most {words} words. Keep every name, number, decision and open "
    "question; drop pleasantries and repetition. Reply with the summary only.\n\n{text}"
)


def message_tokens(message: Message) -> int:
    """A message's tokens: its text, plus a few for its role and framing."""
    return estimate_tokens(message.text()) + 4


def trim_history(messages: Sequence[Message], budget: int, keep_last: int = 1) -> list[Message]:
    """The system and developer messages and as many of the latest other turns as fit in `budget`
    tokens, in their order; the last `keep_last` turns are kept even when they alone exceed it.
    A tool result is never kept without the assistant turn that called it."""
    pinned = [i for i, m in enumerate(messages) if m.role in ("system", "developer")]
    used = sum(message_tokens(messages[i]) for i in pinned)
    turns = [i for i in range(len(messages)) if i not in set(pinned)]
    kept: list[int] = []
    for n, i in enumerate(reversed(turns)):
        cost = message_tokens(messages[i])
        if n >= keep_last and used + cost > budget:
            break
        kept.append(i)
        used += cost
    kept_set = set(kept)
    # A leading tool result whose call was trimmed means nothing to a model: drop it too.
    ordered = sorted(kept_set)
    while ordered and messages[ordered[0]].role == "tool" and len(ordered) > keep_last:
        ordered.pop(0)
    chosen = set(pinned) | set(ordered)
    return [m for i, m in enumerate(messages) if i in chosen]


async def summarize(summarizer: Any, text: str, budget: int) -> str:
    """`text` summarized by `summarizer` into about `budget` tokens."""
    words = max(10, int(budget * 0.7))
    request = ChatRequest(messages=(Message("user", SUMMARY_PROMPT.format(words=words, text=text)),),
                          max_tokens=max(16, budget))
    completion = await summarizer.complete(request)
    return (completion.content or "").strip()


class History:
    """A conversation kept within `budget` tokens: over it, the turns before the last `keep_last`
    are summarized by `summarizer` into one system message (trimmed instead without one)."""

    def __init__(self, budget: int, summarizer: Any = None, keep_last: int = 4, summary_budget: int | None = None):
        if budget <= 0:
            raise ValueError("a history budget is a positive number of tokens")
        self.budget = budget
        self.summarizer = summarizer
        self.keep_last = keep_last
        self.summary_budget = summary_budget or max(32, budget // 4)
        self.turns: list[Message] = []
        self.summaries = 0  # how many times earlier turns were summarized

    def add(self, *messages: Message) -> None:
        self.turns.extend(messages)

    def tokens(self) -> int:
        return sum(message_tokens(m) for m in self.turns)

    async def messages(self) -> list[Message]:
        """The conversation to send: as it is when it fits, else summarized or trimmed to fit."""
        if self.tokens() <= self.budget:
            return list(self.turns)
        if self.summarizer is None:
            return trim_history(self.turns, self.budget, self.keep_last)
        pinned = [m for m in self.turns if m.role in ("system", "developer") and not _is_summary(m)]
        rest = [m for m in self.turns if m not in pinned]
        earlier, recent = rest[: -self.keep_last] if self.keep_last else rest, rest[-self.keep_last:] if self.keep_last else []
        if not earlier:
            return trim_history(self.turns, self.budget, self.keep_last)
        transcript = "\n".join(f"{m.role}: {m.text()}" for m in earlier)
        summary = await summarize(self.summarizer, transcript, self.summary_budget)
        self.summaries += 1
        # The summary replaces the turns it covers, so the next call starts from it.
        self.turns = [*pinned, Message("system", f"{_SUMMARY_HEAD}{summary}"), *recent]
        if self.tokens() > self.budget:
            return trim_history(self.turns, self.budget, self.keep_last)
        return list(self.turns)


_SUMMARY_HEAD = "Summary of the earlier conversation: "


def _is_summary(message: Message) -> bool:
    return message.text().startswith(_SUMMARY_HEAD)


async def fit_inputs(values: Mapping[str, Any], budget: int, summarizer: Any = None) -> dict[str, Any]:
    """`values` (stage outputs a prompt takes) within `budget` tokens together: the longest are
    summarized by `summarizer` (all at once), or cut to their share without one; short ones stay."""
    texts = {k: v if isinstance(v, str) else str(v) for k, v in values.items()}
    total = sum(estimate_tokens(t) for t in texts.values())
    if total <= budget or not texts:
        return dict(values)
    share = max(1, budget // len(texts))
    over = [k for k, t in texts.items() if estimate_tokens(t) > share]
    out: dict[str, Any] = dict(values)
    if summarizer is not None:
        summaries = await asyncio.gather(*(summarize(summarizer, texts[k], share) for k in over))
        out.update(zip(over, summaries))
    else:
        out.update({k: texts[k][: share * 4] for k in over})  # four characters a token, as estimated
    return out


class SharedContext(MutableMapping[str, Any]):
    """A store workflow steps read and write (`ctx.shared`); `history` lists every write, in order,
    as (key, step) when a step wrote it through `write(key, value, step=)`."""

    def __init__(self, initial: Mapping[str, Any] | None = None):
        self._data: dict[str, Any] = dict(initial or {})
        self.history: list[tuple[str, str | None]] = []

    def write(self, key: str, value: Any, step: str | None = None) -> None:
        self._data[key] = value
        self.history.append((key, step))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.write(key, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"SharedContext({self._data!r})"
