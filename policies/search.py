"""Tree-of-thought breadth-first beam search as a pure state machine: it says which prompts to send
next, one whole level at a time, and takes the replies back.

A task (`Task`) supplies the prompts, the parsers, the solution test and a key identifying a state.
Each level has two batches, every call of a batch independent of the others so a caller can send
them all at once:

    propose   one call per state of the beam (times `proposals`); each reply parses into children
    value     `evaluations` calls per new child; a child's value is the sum of its parsed replies
              (their mean, for a task with `average_values = True`: a failed evaluation then
              costs the state no value)

then the `breadth` children of highest value become the next beam. A child whose key was already
seen in this search is a duplicate: recorded in the tree, neither valued nor expanded. Values are
cached by state key; pass the same `cache` mapping to several searches (say, a batch of puzzles)
to value a state once across all of them. A child passing `is_solution` is not valued; with
`stop_at_solution` the search ends at the level that found one.

Caps on calls, tokens (input + output) and cost: the caller reports each call's usage in its
`Reply`. Before a batch the search trims it, in whole states, to what the caps leave, judging
tokens and cost by the mean of earlier calls of the same kind; once a cap is spent it stops
(`stopped_by` names the cap). A cap can be overshot only by as much as calls cost above the mean.

Driving it, with a real model behind `asyncio.gather` or a fake function in a test:

    search = BeamSearch(task, root, breadth=5, depth=3, evaluations=3)
    while (batch := search.next_batch()) is not None:
        replies = await asyncio.gather(*(ask(call) for call in batch.calls))
        search.submit(batch, replies)          # Reply, plain text, or None for a failed call
    result = search.result()                   # best path, tree, totals

`run_search(search, ask)` and `await run_search_async(search, ask)` are that loop. A `Call` carries
`sample` (0..n-1 within its state): use it as the request's seed so the n evaluations of one
state are independent draws.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Hashable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "Task",
    "Call",
    "Reply",
    "Batch",
    "Node",
    "SearchResult",
    "BeamSearch",
    "run_search",
    "run_search_async",
]

S = TypeVar("S")


class Task(Protocol[S]):
    """What a problem supplies to the search.

    Optionally also `known_value(state) -> float | None`: a value known without asking a model
    (a dead end, say); None asks the model as usual. And `answer(state) -> str`, which the search
    does not use: the reply text a coordinator returns for the best state.
    """

    def propose_prompt(self, state: S) -> str: ...

    def parse_proposals(self, text: str, state: S) -> list[S]: ...

    def value_prompt(self, state: S) -> str: ...

    def parse_value(self, text: str) -> float: ...

    def is_solution(self, state: S) -> bool: ...

    def state_key(self, state: S) -> Hashable: ...


@dataclass(frozen=True, slots=True)
class Call:
    """One model call the search wants made."""

    id: int
    kind: str  # "propose" | "value"
    prompt: str
    node: int  # the node the call is about
    sample: int = 0  # 0..n-1 among the calls for the same node and kind


@dataclass(frozen=True, slots=True)
class Reply:
    """A call's reply text (None when it failed) and what it used."""

    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    error: str | None = None

    @classmethod
    def failed(cls, error: str, **usage: Any) -> Reply:
        return cls(None, error=error, **usage)


@dataclass(frozen=True, slots=True)
class Batch:
    """The calls of one step of one level; send them all, then `submit` the replies in order."""

    kind: str
    depth: int  # the depth of the states proposed or valued
    calls: tuple[Call, ...]


@dataclass(slots=True)
class Node:
    """A state in the search tree.

    status: root | kept (in the beam) | dropped (below the beam) | duplicate | solution |
    unvalued (no value: its evaluations failed or were capped) | new (not judged yet)
    """

    id: int
    parent: int | None
    depth: int
    state: Any
    key: Hashable
    value: float | None = None
    status: str = "new"
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "state": str(self.state),
            "value": self.value,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The outcome. `best` is the first solution found; without one, the highest-valued state of
    the deepest level that has values (the furthest the search got)."""

    solved: bool
    best: Node
    path: tuple[Node, ...]  # root first, `best` last
    nodes: tuple[Node, ...]  # the whole tree, by id
    solutions: tuple[Node, ...]
    stopped_by: str  # solution | depth | no_proposals | max_calls | max_tokens | max_cost
    levels: int  # how many levels were proposed
    calls: int
    propose_calls: int
    value_calls: int
    failed_calls: int
    cache_hits: int
    duplicates: int
    input_tokens: int
    output_tokens: int
    cost: float

    @property
    def states(self) -> list[Any]:
        """The states along the best path, root first."""
        return [n.state for n in self.path]

    def tree(self) -> list[dict[str, Any]]:
        """The tree as plain dicts, for a trace or JSON."""
        return [n.to_dict() for n in self.nodes]


@dataclass(slots=True)
class _Usage:
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0


class BeamSearch(Generic[S]):
    """Breadth-first beam search over `task` from `root`; see the module docstring for the loop."""

    def __init__(
        self,
        task: Task[S],
        root: S,
        *,
        breadth: int = 5,
        depth: int = 3,
        evaluations: int = 3,
        proposals: int = 1,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        stop_at_solution: bool = True,
        dedupe: bool = True,
        cache: MutableMapping[Hashable, float] | None = None,
    ):
        for name, value in (("breadth", breadth), ("depth", depth), ("evaluations", evaluations), ("proposals", proposals)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        for name, cap in (("max_calls", max_calls), ("max_tokens", max_tokens), ("max_cost", max_cost)):
            if cap is not None and not cap > 0:
                raise ValueError(f"{name} must be > 0 when set, got {cap!r}")
        self.task = task
        self.breadth = breadth
        self.depth = depth
        self.evaluations = evaluations
        self.proposals = proposals
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self.stop_at_solution = stop_at_solution
        self.dedupe = dedupe
        self.cache: MutableMapping[Hashable, float] = {} if cache is None else cache
        self._known_value = getattr(task, "known_value", None)
        self._average = bool(getattr(task, "average_values", False))

        self._nodes: list[Node] = []
        self._seen: set[Hashable] = set()
        self._solutions: list[int] = []
        self._level = 0  # depth of the beam being expanded
        self._levels = 0
        self._frontier: list[int] = []
        self._children: list[int] = []  # nodes proposed at this level
        self._to_value: dict[Hashable, list[int]] = {}  # key -> nodes sharing one valuation
        self._phase = "propose"
        self._pending: Batch | None = None
        self._stopped_by = ""
        self._next_call = 0
        self._usage = {"propose": _Usage(), "value": _Usage()}
        self._input_tokens = 0
        self._output_tokens = 0
        self._failed = 0
        self._cache_hits = 0
        self._duplicates = 0

        root_node = self._add(None, 0, root)
        root_node.status = "root"
        if task.is_solution(root):
            root_node.status = "solution"
            self._solutions.append(root_node.id)
            self._finish("solution")
        else:
            self._frontier = [root_node.id]

    # --- the loop --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._phase == "done"

    def next_batch(self) -> Batch | None:
        """The next calls to make, or None when the search is over."""
        if self._pending is not None:
            raise RuntimeError("submit the replies of the outstanding batch before asking for the next")
        while self._phase != "done":
            if self._phase == "propose":
                batch = self._propose_batch()
            else:
                batch = self._value_batch()
            if batch is not None:
                self._pending = batch
                return batch
        return None

    def submit(self, batch: Batch, replies: Sequence[Reply | str | None | BaseException]) -> None:
        """Give back the replies of `batch`, in the order of its calls."""
        if batch is not self._pending:
            raise RuntimeError("that batch is not the one outstanding")
        if len(replies) != len(batch.calls):
            raise ValueError(f"expected {len(batch.calls)} replies, got {len(replies)}")
        self._pending = None
        normal = [self._account(batch.kind, _as_reply(r)) for r in replies]
        if batch.kind == "propose":
            self._take_proposals(batch, normal)
        else:
            self._take_values(batch, normal)

    def result(self) -> SearchResult:
        """The outcome so far; final once `next_batch` has returned None."""
        solutions = tuple(self._nodes[i] for i in self._solutions)
        if solutions:
            best = solutions[0]
        else:
            valued = [n for n in self._nodes if n.value is not None and n.status in ("kept", "dropped")]
            best = max(valued, key=lambda n: (n.depth, n.value, -n.id)) if valued else self._nodes[0]
        path: list[Node] = []
        at: Node | None = best
        while at is not None:
            path.append(at)
            at = self._nodes[at.parent] if at.parent is not None else None
        usage = self._usage.values()
        return SearchResult(
            solved=bool(solutions),
            best=best,
            path=tuple(reversed(path)),
            nodes=tuple(self._nodes),
            solutions=solutions,
            stopped_by=self._stopped_by or "running",
            levels=self._levels,
            calls=sum(u.calls for u in usage),
            propose_calls=self._usage["propose"].calls,
            value_calls=self._usage["value"].calls,
            failed_calls=self._failed,
            cache_hits=self._cache_hits,
            duplicates=self._duplicates,
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            cost=sum(u.cost for u in usage),
        )

    # --- levels ----------------------------------------------------------------------------

    def _propose_batch(self) -> Batch | None:
        if self._level >= self.depth:
            self._finish("depth")
            return None
        if not self._frontier:
            self._finish("no_proposals")
            return None
        calls = [
            (node, j, self.task.propose_prompt(self._nodes[node].state))
            for node in self._frontier
            for j in range(self.proposals)
        ]
        fitted = self._fit("propose", calls, self.proposals)
        if not fitted:
            return None
        self._levels += 1
        self._children = []
        return self._batch("propose", self._level, fitted)

    def _take_proposals(self, batch: Batch, replies: list[Reply]) -> None:
        for call, reply in zip(batch.calls, replies):
            if reply.text is None:
                continue
            parent = self._nodes[call.node]
            for state in self.task.parse_proposals(reply.text, parent.state):
                node = self._add(parent.id, parent.depth + 1, state)
                if self.dedupe and node.key in self._seen:
                    node.status = "duplicate"
                    self._duplicates += 1
                    continue
                self._seen.add(node.key)
                self._children.append(node.id)
                if self.task.is_solution(state):
                    node.status = "solution"
                    self._solutions.append(node.id)
        self._level += 1
        if self._solutions and self.stop_at_solution:
            self._finish("solution")
            return
        self._to_value = {}
        for i in self._children:
            node = self._nodes[i]
            if node.status == "solution":
                continue
            if node.key in self.cache:
                node.value, node.cached = self.cache[node.key], True
                self._cache_hits += 1
                continue
            known = self._known_value(node.state) if self._known_value else None
            if known is not None:
                node.value = float(known)
                continue
            sharing = self._to_value.setdefault(node.key, [])
            if sharing:
                self._cache_hits += 1  # the same state twice in one level: valued once
            sharing.append(i)
        self._phase = "value"

    def _value_batch(self) -> Batch | None:
        firsts = [nodes[0] for nodes in self._to_value.values()]
        calls = [
            (node, j, self.task.value_prompt(self._nodes[node].state))
            for node in firsts
            for j in range(self.evaluations)
        ]
        fitted = self._fit("value", calls, self.evaluations) if calls else []
        if not fitted:
            self._select()
            return None
        return self._batch("value", self._level, fitted)

    def _take_values(self, batch: Batch, replies: list[Reply]) -> None:
        totals: dict[int, list[float]] = {}
        for call, reply in zip(batch.calls, replies):
            scores = totals.setdefault(call.node, [])
            if reply.text is not None:
                scores.append(float(self.task.parse_value(reply.text)))
        for first, scores in totals.items():
            key = self._nodes[first].key
            value = (sum(scores) / len(scores) if self._average else sum(scores)) if scores else None
            if value is not None and len(scores) == self.evaluations:
                self.cache[key] = value  # only a complete evaluation is worth reusing
            for i in self._to_value.get(key, [first]):
                self._nodes[i].value = value
        self._select()

    def _select(self) -> None:
        candidates = []
        for i in self._children:
            node = self._nodes[i]
            if node.status == "solution":
                continue
            if node.value is None:
                node.status = "unvalued"
            else:
                candidates.append(node)
        candidates.sort(key=lambda n: -n.value)  # stable: earlier proposals win ties
        for rank, node in enumerate(candidates):
            node.status = "kept" if rank < self.breadth else "dropped"
        self._frontier = [n.id for n in candidates[: self.breadth]]
        self._to_value = {}
        self._phase = "propose"
        if self._stopped_by:  # a cap cut this level short
            self._phase = "done"

    # --- bookkeeping -----------------------------------------------------------------------

    def _add(self, parent: int | None, depth: int, state: S) -> Node:
        node = Node(len(self._nodes), parent, depth, state, self.task.state_key(state))
        self._nodes.append(node)
        return node

    def _batch(self, kind: str, depth: int, calls: list[tuple[int, int, str]]) -> Batch:
        made = []
        for node, sample, prompt in calls:
            made.append(Call(self._next_call, kind, prompt, node, sample))
            self._next_call += 1
        return Batch(kind, depth, tuple(made))

    def _finish(self, reason: str) -> None:
        self._phase = "done"
        self._stopped_by = self._stopped_by or reason

    def _fit(self, kind: str, calls: list, group: int) -> list:
        """The calls the caps leave room for, in whole groups (one state's calls); records a cap hit."""
        allowed, cap = self._allowance(kind)
        if allowed >= len(calls):
            return calls
        fitted = calls[: int(allowed // group) * group]
        self._stopped_by = self._stopped_by or cap
        if not fitted:
            self._finish(cap)
        return fitted

    def _allowance(self, kind: str) -> tuple[float, str]:
        used = self._usage.values()
        calls = sum(u.calls for u in used)
        tokens = sum(u.tokens for u in used)
        cost = sum(u.cost for u in used)
        mine = self._usage[kind]
        best: tuple[float, str] = (math.inf, "")
        if self.max_calls is not None:
            best = min(best, (float(self.max_calls - calls), "max_calls"))
        for cap, spent, per_kind, name in (
            (self.max_tokens, tokens, (mine.tokens, tokens), "max_tokens"),
            (self.max_cost, cost, (mine.cost, cost), "max_cost"),
        ):
            if cap is None:
                continue
            left = cap - spent
            if left <= 0:
                best = min(best, (0.0, name))
                continue
            # The mean of this kind's calls, else of all calls; with no call yet, no limit known.
            mean = per_kind[0] / mine.calls if mine.calls else (per_kind[1] / calls if calls else 0.0)
            if mean > 0:
                best = min(best, (float(math.floor(left / mean)), name))
        return max(best[0], 0.0), best[1]

    def _account(self, kind: str, reply: Reply) -> Reply:
        usage = self._usage[kind]
        usage.calls += 1
        usage.tokens += reply.input_tokens + reply.output_tokens
        usage.cost += reply.cost
        self._input_tokens += reply.input_tokens
        self._output_tokens += reply.output_tokens
        if reply.text is None:
            self._failed += 1
        return reply


def _as_reply(r: Reply | str | None | BaseException) -> Reply:
    if isinstance(r, Reply):
        return r
    if r is None:
        return Reply.failed("no reply")
    if isinstance(r, BaseException):
        return Reply.failed(f"{type(r).__name__}: {r}")
    return Reply(str(r))


def run_search(search: BeamSearch, ask: Callable[[Call], Reply | str | None]) -> SearchResult:
    """Drive `search` to the end with a synchronous `ask(call)`; an exception fails that call only."""
    while (batch := search.next_batch()) is not None:
        replies: list[Reply | str | None | BaseException] = []
        for call in batch.calls:
            try:
                replies.append(ask(call))
            except Exception as err:  # one failed call must not end the search
                replies.append(err)
        search.submit(batch, replies)
    return search.result()


async def run_search_async(
    search: BeamSearch, ask: Callable[[Call], Awaitable[Reply | str | None]]
) -> SearchResult:
    """Drive `search` to the end, each batch's calls awaited together with `asyncio.gather`."""
    while (batch := search.next_batch()) is not None:
        replies = await asyncio.gather(*(ask(call) for call in batch.calls), return_exceptions=True)
        for r in replies:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation and interrupts end the search
        search.submit(batch, replies)
    return search.result()
