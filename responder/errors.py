"""Errors that reach users: each names what is wrong and where, and prints without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem in something the user gave us (a file, a flag, a payload); printed as one clear line."""


class SourceError(UserError):
    """A problem at a known place in a file: printed as ``file:line: message``."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")
