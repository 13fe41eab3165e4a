"""ESDIRK methods (explicit first stage, singly diagonally implicit Runge-Kutta), as checked data.

A method file under ``tableaus/`` holds one :class:`EsdirkTableau`: the Butcher coefficients of the
method (exact ``Fraction``s where the source gives rationals), its orders and the weights of the
embedded error estimator. Consistency is checked when the tableau is built, so a mistyped
coefficient fails at import time rather than as a silent loss of order.

Stored form
-----------
``A`` is the full lower triangular Butcher matrix *including its diagonal*: row ``i`` (from 0) has
``i + 1`` entries ``A[i][0..i]``. For an ESDIRK method ``A[0] == (0,)`` (the first stage is
explicit, ``c[0] == 0``) and ``A[i][i] == γ`` for every ``i ≥ 1``. One step from ``(t, y)`` with
step ``h`` (OrdinaryDiffEq.jl's ``z``-formulation, ``z_i = h k_i``)::

    z_1 = h f(t, y)                                      (explicit stage)
    for i = 2..s:
        ψ_i = y + Σ_{j<i} A[i][j] z_j                     (known part of the stage value)
        solve  z_i = h f(t + c_i h, ψ_i + γ z_i)          (simplified Newton with
                                                          W = I - h γ J, one LU per step)
        Y_i = ψ_i + γ z_i                                 (stage value; k_i = z_i / h)
    y1  = y + Σ_i b_i z_i                                 (= Y_s when stiffly_accurate)
    err = Σ_i b_error_i z_i                               (= y1 - ŷ1, ŷ1 the embedded solution)

The Newton iteration for stage ``i`` is ``(I - hγJ) Δ = -(z_i - h f(t + c_i h, ψ_i + γ z_i))``,
``z_i += Δ``; its start value (the "predictor") is the stage loop's choice (``z_{i-1}``, or a
Hermite extrapolation of earlier stages as OrdinaryDiffEq does) and is not part of the tableau.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Tuple, Union

Number = Union[int, float, Fraction]

__all__ = ["EsdirkTableau"]

# Float coefficients from the literature are given to ~16-17 significant digits; the row-sum and
# weight-sum identities then hold to round-off only.
_TOL = 1e-12


def _close(x: Number, y: Number) -> bool:
    return abs(float(Fraction(x) - Fraction(y))) <= _TOL


@dataclass(frozen=True)
class EsdirkTableau:
    """Coefficients of an ESDIRK method with an embedded pair (see the module docstring).

    Arguments:
        name: method name, as the public algorithm is called.
        c: nodes, length ``s``; ``c[0] == 0``.
        A: lower triangular Butcher matrix including the diagonal; row ``i`` has ``i + 1`` entries,
            ``A[0] == (0,)``, ``A[i][i] == gamma`` for ``i ≥ 1``; row sums equal ``c``.
        b: weights, length ``s``, summing to 1.
        order: order of ``b``.
        b_error: error weights ``b - b_hat`` of the embedded method, length ``s``, summing to 0.
        embedded_order: order of the embedded weights ``b_hat = b - b_error``.
        stiffly_accurate: ``b == A[-1]`` (so ``y1`` is the last stage value and ``c[-1] == 1``);
            checked against the data.
        reference: citation for the coefficients.
    """

    name: str
    c: Tuple[Number, ...]
    A: Tuple[Tuple[Number, ...], ...]
    b: Tuple[Number, ...]
    order: int
    b_error: Tuple[Number, ...]
    embedded_order: int
    stiffly_accurate: bool
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "c", tuple(self.c))
        object.__setattr__(self, "A", tuple(tuple(row) for row in self.A))
        object.__setattr__(self, "b", tuple(self.b))
        object.__setattr__(self, "b_error", tuple(self.b_error))
        s = len(self.c)
        problems = []
        if s < 2:
            problems.append(f"an ESDIRK method needs at least 2 stages, c has {s}")
        if len(self.A) != s or len(self.b) != s or len(self.b_error) != s:
            problems.append(f"len(c)={s}, len(A)={len(self.A)}, len(b)={len(self.b)}, "
                            f"len(b_error)={len(self.b_error)} must agree")
        rows_ok = True
        for i, row in enumerate(self.A):
            if len(row) != i + 1:
                problems.append(f"row {i} of A has {len(row)} entries, expected {i + 1} (lower triangle "
                                "including the diagonal)")
                rows_ok = False
            elif i < s and not _close(sum(row), self.c[i]):
                problems.append(f"row {i} of A sums to {float(sum(row))!r}, but c[{i}]={float(self.c[i])!r}")
        if s >= 1 and self.c and self.c[0] != 0:
            problems.append(f"c[0]={float(self.c[0])!r}: the explicit first stage needs c[0] == 0")
        if rows_ok and len(self.A) >= 2:
            if self.A[0][0] != 0:
                problems.append(f"A[0][0]={float(self.A[0][0])!r}: the first stage must be explicit (0)")
            g = self.A[1][1]
            if not g > 0:
                problems.append(f"diagonal A[1][1]={float(g)!r} must be positive")
            for i in range(2, len(self.A)):
                if self.A[i][i] != g:
                    problems.append(f"diagonal A[{i}][{i}]={float(self.A[i][i])!r} differs from "
                                    f"gamma=A[1][1]={float(g)!r}")
        if not _close(sum(self.b), 1):
            problems.append(f"weights b sum to {float(sum(self.b))!r}, not 1")
        if not _close(sum(self.b_error), 0):
            problems.append(f"b_error sums to {float(sum(self.b_error))!r}, not 0")
        if not isinstance(self.order, int) or not isinstance(self.embedded_order, int) \
                or not 1 <= self.embedded_order < self.order:
            problems.append(f"order={self.order!r}, embedded_order={self.embedded_order!r}: "
                            "need integers with 1 <= embedded_order < order")
        if rows_ok and len(self.A) == s == len(self.b):
            is_sa = all(_close(x, y) for x, y in zip(self.A[-1], self.b))
            if self.stiffly_accurate != is_sa:
                problems.append(f"stiffly_accurate={self.stiffly_accurate} but b "
                                f"{'equals' if is_sa else 'differs from'} the last row of A")
            if self.stiffly_accurate and is_sa and self.c[-1] != 1:
                problems.append(f"stiffly_accurate needs c[-1] == 1, got {float(self.c[-1])!r}")
        if problems:
            raise ValueError(f"inconsistent ESDIRK tableau {self.name!r}: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived data

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def gamma(self) -> Number:
        """The common diagonal entry ``A[i][i]`` (``i ≥ 1``)."""
        return self.A[1][1]

    @property
    def adaptive(self) -> bool:
        return True

    @property
    def b_hat(self) -> Tuple[Number, ...]:
        """Weights of the embedded method, ``b - b_error``."""
        return tuple(bi - ei for bi, ei in zip(self.b, self.b_error))

    def A_square(self) -> Tuple[Tuple[Number, ...], ...]:
        """``A`` as a full ``s × s`` matrix (zeros above the diagonal), in the stored number types."""
        s = self.stages
        return tuple(tuple(row) + (0,) * (s - len(row)) for row in self.A)

    def floats(self):
        """``(c, A_square, b, b_error, gamma)`` as Python floats, for building tensors."""
        return (tuple(float(x) for x in self.c),
                tuple(tuple(float(x) for x in row) for row in self.A_square()),
                tuple(float(x) for x in self.b),
                tuple(float(x) for x in self.b_error),
                float(self.gamma))
