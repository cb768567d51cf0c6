"""Tasks for the tree-of-thought search: prompts, parsers and solution tests.

`TASKS` maps a task's config name (`task: general`, the default, or `task: game24` in a
tree_of_thought route) to a constructor taking the request's text and returning a
`policies.search.Task` with `root()` and `answer(state)`; a general task also has
`answer_prompt(state)`, the final question a model answers from the best path. Users write their
own tasks as `ThoughtTask(...)` (`orchestray.tasks.thought`) and pass them to the coordinator.
"""

from collections.abc import Callable
from typing import Any

from orchestray.errors import ConfigError
from orchestray.tasks.game24 import Game24State, Game24Task, Puzzle, game24_search, load_puzzles
from orchestray.tasks.thought import Thoughts, ThoughtTask

__all__ = ["TASKS", "task_for", "Game24State", "Game24Task", "Puzzle", "game24_search", "load_puzzles",
           "Thoughts", "ThoughtTask"]

TASKS: dict[str, Callable[[str], Any]] = {"general": ThoughtTask().for_problem, "game24": Game24Task.from_text}


def task_for(name: str | ThoughtTask, text: str) -> Any:
    """The task `name` (or a user's `ThoughtTask`) set up for a request's text; ConfigError for an
    unknown name, RequestError when the text holds no problem of that kind."""
    if isinstance(name, ThoughtTask):
        return name.for_problem(text)
    try:
        make = TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None
    return make(text)
