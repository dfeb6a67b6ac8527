"""Exceptions raised for bad input, each naming the file and the problem."""
from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input: a file that cannot be read or whose content is wrong.

    The message names the file and says what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ArgumentConflict(InputError):
    """Arguments that do not go together (a chain fitted without labels...);
    the message names the options. The command line reports it as a usage
    error (exit status 2), the function's other InputErrors as errors."""

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)
