"""Strict, fast parser for VNN-LIB 1.0 (VNN-COMP) and VNN-LIB 2.0 queries.

    prop = vnnlib.parse_file("prop_7.vnnlib")        # or .vnnlib.gz
    prop = vnnlib.parse_text(text, source="<stdin>")
    vnnlib.sniff_version("q.vnnlib")                 # "1.0" or "2.0", reads a few KB

Pipeline: tokens (``tokens``) -> s-expressions (``sexpr``) -> typed AST (``v1`` / ``v2`` via
``formula``) -> normal form ``Property`` (``lower``).  Every malformed or unsupported query
raises ``VnnlibError`` with the line and column of the offending token.  Nothing is cached or
written; no global state is read.
"""
from __future__ import annotations

import gc
import gzip
import os
import zlib
from contextlib import contextmanager

from . import v1, v2
from .errors import VnnlibError
from .lower import lower as _lower
from .property import Case, Conjunct, Network, Property, Variable
from .sexpr import build
from .tokens import Source, line_col, tokenize

__all__ = ["parse_file", "parse_text", "sniff_version", "VnnlibError",
           "Property", "Case", "Conjunct", "Network", "Variable"]

_SNIFF_BYTES = 1 << 16


def parse_text(text: str, source: str = "<string>") -> Property:
    """Parse and lower a query.  The version is 2.0 iff it starts with (vnnlib-version ...)."""
    with _gc_paused():
        src = Source.from_text(text, source)
        root = build(src)
        front = v2 if src.tokens[:2] == ["(", "vnnlib-version"] else v1
        return _lower(front.parse(src, root), src)


def parse_file(path: str | os.PathLike) -> Property:
    """Parse and lower the query in path (plain or gzip-compressed, detected by content).

    OSError (missing file, ...) propagates; everything about the content is a VnnlibError.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return parse_text(_decode(_gunzip(data, name), name), name)


def sniff_version(path: str | os.PathLike) -> str:
    """ "2.0" if the file's first command is (vnnlib-version ...), else "1.0".

    Reads the first 64 KB (all of it only when those hold fewer than three tokens).
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=f) if gz else f
            data = stream.read(_SNIFF_BYTES)
            toks = tokenize(data.decode("utf-8", errors="replace"))
            if len(toks) < 3 and len(data) == _SNIFF_BYTES:
                data += stream.read()
                toks = tokenize(data.decode("utf-8", errors="replace"))
        except (OSError, EOFError, zlib.error) as e:
            raise VnnlibError(f"corrupt gzip data: {e}", 1, 1, name) from None
    return "2.0" if toks[:2] == ["(", "vnnlib-version"] else "1.0"


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while parsing.

    The parser allocates millions of small acyclic containers (s-expression lists, AST tuples);
    the collector's full passes over them made the 11 MB nn4sys spec parse ~2x slower
    (2.9 s -> 1.5 s).  Nothing here creates cycles, so pausing it loses nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _gunzip(data: bytes, name: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise VnnlibError(f"corrupt gzip data: {e}", 1, 1, name) from None


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data[:e.start].decode("utf-8", errors="replace")
        line, col = line_col(text, len(text))
        raise VnnlibError(f"invalid UTF-8 byte 0x{data[e.start]:02x}", line, col, name) from None
