"""Tasks for the tree-of-thought search: prompts, parsers and solution tests for known problems.

`TASKS` maps a task's config name (`task: game24` in a tree_of_thought route) to a constructor
taking the request's text and returning a `policies.search.Task` with `root()` and `answer(state)`.
"""

from collections.abc import Callable
from typing import Any

from orchestray.errors import ConfigError
from orchestray.tasks.game24 import Game24State, Game24Task, Puzzle, game24_search, load_puzzles

__all__ = ["TASKS", "task_for", "Game24State", "Game24Task", "Puzzle", "game24_search", "load_puzzles"]

TASKS: dict[str, Callable[[str], Any]] = {"game24": Game24Task.from_text}


def task_for(name: str, text: str) -> Any:
    """The task `name` set up for a request's text; ConfigError for an unknown name, RequestError
    when the text holds no problem of that kind."""
    try:
        make = TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
    return make(text)
