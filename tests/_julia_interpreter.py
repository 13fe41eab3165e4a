"""A reference interpreter, in numpy float64, for the subset of Julia that ``pyode.julia._translate`` emits.

It lets the tests check the generated networks numerically where Julia is not installed. It walks
the tree-sitter syntax tree (so it sees the program's structure, not its text), follows Julia's
semantics where they differ from numpy's (1-based inclusive ranges, column-major ``reshape``,
broadcasting that aligns dimensions from the first, ``*`` as a matrix product), and raises
:class:`JuliaSubsetError` for anything it does not know, so that a test cannot pass by accident.

The subset::

    function (a, b, ...)          # anonymous function; line comments anywhere between statements
        name = expression         # each name bound once
        return expression         # last statement
    end

with expressions made of identifiers, ``Inf``, ``NaN``, integer and Float64 literals, parentheses,
unary ``-``/``.-``, ``A * B`` (matrix times vector or matrix), the dot operators
``.+ .- .* ./ .^ .> .< .>= .<=``, ``reshape(v, m, n)``, ``transpose(A)``, indexing ``v[i]`` and
``v[a:b]`` of a vector, and dot calls ``f.(...)`` of tanh, exp, expm1, log, log1p, sqrt, erf, abs,
max, min and ifelse. The operands of a binary operator must be identifiers, literals, calls, indexing
or parenthesised expressions, so the value never depends on operator precedence (which is where
tree-sitter's grammar could disagree with Julia's).

Usage::

    f = julia_function(source)    # parses and checks the structure once
    y = f(x, theta)               # numpy float64 arrays in, numpy out
    steps = []
    f(x, theta, record=steps)     # also lists (text, value) of every subexpression evaluated
"""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.special
import tree_sitter

from _julia_syntax import first_syntax_error, parse_julia

__all__ = ["JuliaSubsetError", "julia_function", "evaluate"]


class JuliaSubsetError(Exception):
    """The program uses Julia this interpreter does not implement, or fails as Julia would."""


_CONSTANTS = {"Inf": np.inf, "NaN": np.nan}

# Elementwise functions allowed in dot calls, with their arity.
_ELEMENTWISE: Dict[str, tuple] = {
    "tanh": (1, np.tanh), "exp": (1, np.exp), "expm1": (1, np.expm1), "log": (1, np.log),
    "log1p": (1, np.log1p), "sqrt": (1, np.sqrt), "erf": (1, scipy.special.erf), "abs": (1, np.abs),
    "max": (2, np.maximum), "min": (2, np.minimum), "ifelse": (3, None),
}

_DOT_OPERATORS: Dict[str, Callable] = {
    ".+": np.add, ".-": np.subtract, ".*": np.multiply, "./": np.true_divide, ".^": np.power,
    ".>": np.greater, ".<": np.less, ".>=": np.greater_equal, ".<=": np.less_equal,
}

# Node types allowed as operands of binary operators (no precedence involved).
_ATOMS = frozenset({"identifier", "integer_literal", "float_literal", "parenthesized_expression",
                    "call_expression", "broadcast_call_expression", "index_expression"})

_INTEGER = re.compile(r"[0-9]+")
# Julia Float64 literals Python's float() reads the same way (no Float32 "f", hex or underscores).
_FLOAT = re.compile(r"(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _where(node: tree_sitter.Node) -> str:
    line, column = node.start_point
    return f"line {line + 1}, column {column + 1}: {node.text.decode('utf-8')[:60]!r}"


def _refuse(node: tree_sitter.Node, what: str) -> JuliaSubsetError:
    return JuliaSubsetError(f"{what} ({node.type} at {_where(node)})")


def _is_scalar(v: Any) -> bool:
    return np.ndim(v) == 0


def _broadcast(node: tree_sitter.Node, *values: Any) -> List[np.ndarray]:
    """Julia's broadcasting: dimensions are aligned from the first, missing trailing ones count as 1.

    numpy aligns from the last dimension instead, so ``(n, B) .+ (n,)`` would be wrong (or fail) there;
    padding every shape with trailing 1s to a common rank makes the two rules coincide.
    """
    arrays = [np.asarray(v) for v in values]
    rank = max(a.ndim for a in arrays)
    padded = [a.reshape(a.shape + (1,) * (rank - a.ndim)) for a in arrays]
    try:
        np.broadcast_shapes(*(a.shape for a in padded))
    except ValueError:
        raise _refuse(node, f"DimensionMismatch: cannot broadcast shapes {[a.shape for a in arrays]}") from None
    return padded


def _result(value: np.ndarray) -> Any:
    """Broadcasting over scalars only gives a scalar in Julia."""
    return value[()] if np.ndim(value) == 0 else value


class _Function:
    """A parsed anonymous function of the subset, callable on numpy values."""

    def __init__(self, source: str):
        error = first_syntax_error(source)
        if error is not None:
            raise JuliaSubsetError(f"syntax error: {error}")
        root = parse_julia(source).root_node
        items = [n for n in root.named_children if n.type != "line_comment"]
        if len(items) != 1 or items[0].type != "function_definition":
            raise JuliaSubsetError("expected exactly one anonymous `function (...) ... end` expression")
        function = items[0]
        self.parameters = self._parameters(function)
        self.statements = [n for n in function.named_children if n.type not in ("signature", "line_comment")]
        self._check_statements()
        self._record: Optional[List[Tuple[str, Any]]] = None

    @staticmethod
    def _parameters(function: tree_sitter.Node) -> List[str]:
        signatures = [n for n in function.named_children if n.type == "signature"]
        if len(signatures) != 1 or [n.type for n in signatures[0].named_children] != ["argument_list"]:
            raise _refuse(function, "only anonymous functions `function (a, b) ... end` are supported")
        arguments = signatures[0].named_children[0].named_children
        if any(a.type != "identifier" for a in arguments):
            raise _refuse(signatures[0], "arguments must be plain names (no types, defaults or keywords)")
        names = [a.text.decode("utf-8") for a in arguments]
        if len(set(names)) != len(names):
            raise _refuse(signatures[0], "repeated argument name")
        return names

    def _check_statements(self) -> None:
        if not self.statements or self.statements[-1].type != "return_statement":
            raise JuliaSubsetError("the function must end with a return statement")
        for node in self.statements[:-1]:
            if node.type != "assignment":
                raise _refuse(node, "only `name = expression` statements before the final return")

    def __call__(self, *args: Any, record: Optional[List[Tuple[str, Any]]] = None) -> Any:
        """Evaluate on numpy float64 arguments; ``record``, a list, receives (text, value) of every expression."""
        self._record = record
        if len(args) != len(self.parameters):
            raise JuliaSubsetError(f"MethodError: the function takes {len(self.parameters)} arguments, "
                                   f"got {len(args)}")
        env: Dict[str, Any] = {}
        for name, value in zip(self.parameters, args):
            array = np.asarray(value)
            if array.dtype != np.float64:
                raise JuliaSubsetError(f"argument {name} must be float64 (Julia's Float64); got {array.dtype}")
            env[name] = array.copy()
        returned = self.statements[-1].named_children
        if len(returned) != 1:
            raise _refuse(self.statements[-1], "return needs exactly one value")
        with np.errstate(all="ignore"):      # Julia overflows to Inf and makes NaN silently
            for node in self.statements[:-1]:
                self._assign(node, env)
            return self._eval(returned[0], env)

    def _assign(self, node: tree_sitter.Node, env: Dict[str, Any]) -> None:
        if len(node.children) != 3:
            raise _refuse(node, "malformed assignment")
        target, operator, value = node.children
        if target.type != "identifier" or operator.text != b"=":
            raise _refuse(node, "only `name = expression` assignments (no indexed or updating assignment)")
        name = target.text.decode("utf-8")
        if name in env or name in _CONSTANTS:
            raise _refuse(node, f"{name} is bound twice")
        env[name] = self._eval(value, env)

    # -- expressions -----------------------------------------------------------------------------

    def _eval(self, node: tree_sitter.Node, env: Dict[str, Any]) -> Any:
        method = getattr(self, f"_eval_{node.type}", None)
        if method is None:
            raise _refuse(node, "unsupported expression")
        value = method(node, env)
        if self._record is not None:
            self._record.append((node.text.decode("utf-8"), value))
        return value

    def _eval_identifier(self, node, env):
        name = node.text.decode("utf-8")
        if name in env:
            return env[name]
        if name in _CONSTANTS:
            return np.float64(_CONSTANTS[name])
        raise _refuse(node, f"UndefVarError: {name} not defined")

    def _eval_integer_literal(self, node, env):
        text = node.text.decode("utf-8")
        if not _INTEGER.fullmatch(text):
            raise _refuse(node, "only decimal integer literals")
        return int(text)

    def _eval_float_literal(self, node, env):
        text = node.text.decode("utf-8")
        if not _FLOAT.fullmatch(text):
            raise _refuse(node, "only decimal Float64 literals")
        return np.float64(float(text))

    def _eval_parenthesized_expression(self, node, env):
        inner = node.named_children
        if len(inner) != 1:
            raise _refuse(node, "parentheses must hold one expression (no tuples or blocks)")
        return self._eval(inner[0], env)

    def _eval_unary_expression(self, node, env):
        if len(node.children) != 2:
            raise _refuse(node, "malformed unary expression")
        operator, operand = node.children
        if operator.text not in (b"-", b".-"):
            raise _refuse(node, "only unary minus")
        if operand.type not in _ATOMS:
            raise _refuse(node, "the operand of unary minus must be a name, literal, call or parenthesised")
        return -self._eval(operand, env)     # Julia defines -A for arrays as well

    def _eval_binary_expression(self, node, env):
        if len(node.children) != 3:
            raise _refuse(node, "chained operators are not supported")
        left, operator, right = node.children
        for operand in (left, right):
            if operand.type not in _ATOMS:
                raise _refuse(operand, "operands of binary operators must be names, literals, calls, indexing "
                                       "or parenthesised, so that no precedence rule is involved")
        op = operator.text.decode("utf-8")
        a, b = self._eval(left, env), self._eval(right, env)
        if op == "*":
            return self._product(node, a, b)
        if op not in _DOT_OPERATORS:
            raise _refuse(node, f"operator {op} is not supported")
        return _result(_DOT_OPERATORS[op](*_broadcast(node, a, b)))

    @staticmethod
    def _product(node, a, b):
        """Julia's ``*`` as emitted: scalar times scalar, or matrix times vector or matrix."""
        if _is_scalar(a) and _is_scalar(b):
            return a * b
        if np.ndim(a) == 2 and np.ndim(b) in (1, 2):
            if a.shape[1] != b.shape[0]:
                raise _refuse(node, f"DimensionMismatch: matrix {a.shape} times {b.shape}")
            return a @ b
        raise _refuse(node, f"`*` of shapes {np.shape(a)} and {np.shape(b)} is not a matrix product here")

    def _arguments(self, node, env) -> List[Any]:
        lists = [n for n in node.named_children if n.type == "argument_list"]
        if len(lists) != 1:
            raise _refuse(node, "malformed call")
        return [self._eval(a, env) for a in lists[0].named_children]

    @staticmethod
    def _callee(node) -> str:
        callee = node.named_children[0]
        if callee.type != "identifier":
            raise _refuse(node, "only calls of plain function names")
        return callee.text.decode("utf-8")

    def _eval_call_expression(self, node, env):
        name = self._callee(node)
        args = self._arguments(node, env)
        if name == "reshape":
            return self._reshape(node, *args) if len(args) == 3 else self._bad_arity(node, name)
        if name == "transpose":
            if len(args) != 1 or np.ndim(args[0]) != 2:
                raise _refuse(node, "transpose of one matrix only")
            return args[0].T
        raise _refuse(node, f"call of {name}: only reshape and transpose (elementwise functions need a dot call)")

    @staticmethod
    def _bad_arity(node, name):
        raise _refuse(node, f"MethodError: wrong number of arguments to {name}")

    @staticmethod
    def _reshape(node, v, m, n):
        """Julia's column-major reshape of a vector into an m×n matrix."""
        if np.ndim(v) != 1 or not all(isinstance(d, int) for d in (m, n)):
            raise _refuse(node, "reshape(vector, m::Int, n::Int) only")
        if m < 0 or n < 0 or m * n != v.shape[0]:
            raise _refuse(node, f"DimensionMismatch: cannot reshape length {v.shape[0]} into ({m}, {n})")
        return v.reshape((m, n), order="F")

    def _eval_broadcast_call_expression(self, node, env):
        name = self._callee(node)
        if name not in _ELEMENTWISE:
            raise _refuse(node, f"dot call of {name} is not supported")
        arity, function = _ELEMENTWISE[name]
        args = self._arguments(node, env)
        if len(args) != arity:
            self._bad_arity(node, name)
        args = _broadcast(node, *args)
        if name == "ifelse":
            if args[0].dtype != np.bool_:
                raise _refuse(node, "TypeError: ifelse needs a Bool condition")
            return _result(np.where(*args))
        return _result(function(*args))

    def _eval_index_expression(self, node, env):
        if len(node.named_children) != 2:
            raise _refuse(node, "only v[i] and v[a:b]")
        target, index = node.named_children
        v = self._eval(target, env)
        if np.ndim(v) != 1:
            raise _refuse(node, "only vectors are indexed")
        if index.type != "vector_expression" or len(index.named_children) != 1:
            raise _refuse(node, "only v[i] and v[a:b]")
        inner = index.named_children[0]
        if inner.type == "range_expression":
            if len(inner.named_children) != 2:
                raise _refuse(inner, "only a:b ranges (no step)")
            first, last = (self._eval(n, env) for n in inner.named_children)
            if not (isinstance(first, int) and isinstance(last, int)):
                raise _refuse(inner, "ranges of integers only")
            if first <= last and (first < 1 or last > v.shape[0]):
                raise _refuse(node, f"BoundsError: {first}:{last} of a vector of length {v.shape[0]}")
            return v[first - 1:last].copy() if first <= last else v[:0].copy()
        i = self._eval(inner, env)
        if not isinstance(i, int):
            raise _refuse(inner, "integer index only")
        if not 1 <= i <= v.shape[0]:
            raise _refuse(node, f"BoundsError: index {i} of a vector of length {v.shape[0]}")
        return v[i - 1]


def julia_function(source: str) -> Callable[..., Any]:
    """Parse the source of an anonymous Julia function of the subset; return it as a Python callable."""
    return _Function(source)


def evaluate(source: str, *args: Any) -> Any:
    """Evaluate the anonymous Julia function ``source`` on numpy float64 arguments."""
    return _Function(source)(*args)
