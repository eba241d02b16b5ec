"""S-expressions, built iteratively (nesting depth is unbounded: no recursion).

A list node is a Python list ``[open, close, item0, item1, ...]``: ``open`` and ``close`` are
the token indices of its parentheses, the items are atoms (``str``) or list nodes.  A one-line
comparison ``(<= X_0 1)`` is a single token (see ``tokens``), hence an atom here that starts
with ``(``.  Atoms carry no position; ``token_index`` recovers it from the enclosing list when
an error needs it.  The
root is ``[-1, len(tokens), top-level items...]``.
"""
from __future__ import annotations

from .tokens import Source

SExpr = list  # [open: int, close: int, *items: str | SExpr]
FIRST = 2     # index of the first item of a node


def build(src: Source) -> SExpr:
    """The root node of src's tokens.  Raises VnnlibError on unbalanced parentheses."""
    tokens = src.tokens
    root: SExpr = [-1, len(tokens)]
    cur = root
    stack: list[SExpr] = []
    push = stack.append
    pop = stack.pop
    for i, t in enumerate(tokens):
        if t == "(":
            new = [i, -1]
            cur.append(new)
            push(cur)
            cur = new
        elif t == ")":
            if not stack:
                raise src.error(i, "unexpected ')': no '(' to close")
            cur[1] = i
            cur = pop()
        else:
            cur.append(t)
    if stack:
        raise src.error(cur[0], "unclosed '(': missing ')' before the end of the text")
    return root


def token_index(node: SExpr, j: int) -> int:
    """Token index of ``node[j]`` (j >= FIRST); ``len(node)`` gives the closing parenthesis."""
    if j >= len(node):
        return node[1]
    k = node[0] + 1
    for item in node[FIRST:j]:
        k = item[1] + 1 if item.__class__ is list else k + 1
    return k


def head(node: SExpr) -> str | None:
    """The first item of node when it is an atom, else None."""
    if len(node) > FIRST and node[FIRST].__class__ is str:
        return node[FIRST]
    return None
