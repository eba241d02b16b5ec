"""The one exception every malformed or unsupported query raises."""
from __future__ import annotations


class VnnlibError(Exception):
    """A query that cannot be parsed or lowered.

    line, column: 1-based position of the offending token (column counts characters).
    ``str(e)`` reads ``"{source}:{line}:{column}: {message}"``, the format editors jump to.
    """

    def __init__(self, message: str, line: int = 1, column: int = 1,
                 source: str = "<string>") -> None:
        super().__init__(message, line, column, source)
        self.message = message
        self.line = line
        self.column = column
        self.source = source

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}: {self.message}"
