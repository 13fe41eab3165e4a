"""Julia syntax checks without Julia: parse with tree-sitter's Julia grammar.

tree-sitter recovers from syntax errors instead of failing, marking the damage with ``ERROR`` nodes
(unparseable text) and ``MISSING`` nodes (tokens it had to invent, such as a closing ``end``), so a
source parses cleanly exactly when its tree holds neither.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator, Optional

import tree_sitter
import tree_sitter_julia

__all__ = ["parse_julia", "assert_parses", "first_syntax_error"]


@lru_cache(maxsize=1)
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))


def parse_julia(source: str) -> tree_sitter.Tree:
    """The tree-sitter tree of a Julia source text (UTF-8)."""
    return _parser().parse(source.encode("utf-8"))


def _nodes(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """Every node under ``node`` (itself included), in document order."""
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def _position(source: str, point) -> str:
    """'line L, column C', 1-based, C counted in characters (tree-sitter counts bytes)."""
    line, byte_column = point
    text = source.split("\n")[line] if line < source.count("\n") + 1 else ""
    column = len(text.encode("utf-8")[:byte_column].decode("utf-8", "replace"))
    return f"line {line + 1}, column {column + 1}"


def first_syntax_error(source: str) -> Optional[str]:
    """A description of the first ``ERROR`` or ``MISSING`` node of ``source``, or None if it parses.

    Error recovery can wrap a whole construct in one ERROR node; the innermost damaged node under it is
    reported, with the span it covers.
    """
    tree = parse_julia(source)
    if not tree.root_node.has_error:
        return None
    node = next((n for n in _nodes(tree.root_node) if n.is_error or n.is_missing), None)
    if node is None:
        return "a syntax error tree-sitter reports without an ERROR or MISSING node"
    while True:
        inner = next((c for c in node.children if c.is_error or c.is_missing), None)
        if inner is None:
            break
        node = inner
    where = _position(source, node.start_point)
    if node.is_missing:                        # a MISSING node is empty: show the line it belongs to
        line = node.start_point[0]
        snippet = source.split("\n")[line] if line < source.count("\n") + 1 else ""
        return f"MISSING {node.type!r} at {where}: {snippet[:80]!r}"
    text = source.encode("utf-8")[node.start_byte:node.end_byte].decode("utf-8", "replace")
    snippet = next((part for part in text.splitlines() if part.strip()), text)[:80]
    return f"ERROR at {where} (to {_position(source, node.end_point)}): {snippet!r}"


def assert_parses(source: str, what: str) -> None:
    """Raise AssertionError naming the first syntax error of ``source`` (``what`` says which text it is)."""
    error = first_syntax_error(source)
    if error is not None:
        raise AssertionError(f"{what} is not valid Julia: {error}")
