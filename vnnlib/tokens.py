"""Tokens of VNN-LIB text, and the source positions errors are reported at.

One compiled regex splits the text.  Token strings are all the parser keeps: positions are
recomputed (by running the same regex again) only when an error is raised, so the fast path
carries no per-token position bookkeeping.

A token is one of
  a *simple comparison* ``(op a b)`` on one line, op one of ``<= >= < > = == !=`` and a, b
  unindexed or ``X[..]``-indexed atoms: nearly every comparison of real specs.  As one token
  it skips the s-expression builder (3x fewer tokens on nn4sys) and is memoised by its text;
  ``formula.Converter`` splits it;
  ``(`` or ``)``;
  a string ``"..."`` (VNN-LIB 2.0 ONNX node names);
  an atom: a run of characters other than whitespace, parentheses, quotes, ``;`` and
  brackets, optionally followed by one bracket group, e.g. ``X_0``, ``-1.5e-3``, ``<=``,
  ``X[0,1]`` (whitespace is allowed before and inside the brackets: ``X [0, 1]`` is one token);
  a bare bracket group ``[1,3]`` (a 2.0 shape);
  a stray ``"``, ``[`` or ``]``, kept so that the parser reports it instead of skipping it.
Comments run from ``;`` to the end of the line and produce no token.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import VnnlibError

_ATOM = r'[^\s()";\[\]]+(?:\[[^\s\]\[()";]*\])?'   # no blank inside: split() must see 3 parts
_TOKEN = re.compile(
    r';[^\n]*'                               # comment: matches, but captures nothing
    r'|(\((?:[<>]=?|==?|!=)[ \t]+' + _ATOM + r'[ \t]+' + _ATOM + r'[ \t]*\)'  # comparison
    r'|[()]'
    r'|"(?:[^"\\\n]|\\.)*"'                  # string
    r'|[^\s()";\[\]]+(?:\s*\[[^\]\[()";]*\])?'  # atom, optionally indexed
    r'|\[[^\]\[()";]*\]'                     # bare bracket group
    r'|["\[\]])'                             # stray: reported by the parser
)


def tokenize(text: str) -> list[str]:
    """The token strings of text, comments dropped.  Never fails: bad tokens are kept."""
    toks = _TOKEN.findall(text)
    if ";" in text:
        toks = list(filter(None, toks))   # a comment match captures ''
    return toks


@dataclass
class Source:
    """A query's text, its name for messages, and its tokens."""

    text: str
    name: str = "<string>"
    tokens: list[str] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, name: str = "<string>") -> "Source":
        return cls(text, name, tokenize(text))

    def offset(self, k: int) -> int:
        """Character offset of token k; len(text) for k past the last token, 0 for k < 0."""
        if k < 0:
            return 0
        i = 0
        for m in _TOKEN.finditer(self.text):
            if m.group(1) is None:
                continue
            if i == k:
                return m.start()
            i += 1
        return len(self.text)

    def position(self, k: int, delta: int = 0) -> tuple[int, int]:
        """1-based (line, column) of token k, or of its character ``delta``."""
        return line_col(self.text, self.offset(k) + delta)

    def error(self, k: int, message: str, delta: int = 0) -> VnnlibError:
        """The error to raise for token k (past the end: the end of the text).

        delta: offset inside the token, for a token that glues two items (``Real [1,3]``).
        """
        line, col = self.position(k, delta)
        return VnnlibError(message, line, col, self.name)


def line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character offset pos."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col
