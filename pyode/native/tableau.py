"""Butcher tableaus of explicit Runge-Kutta methods, as checked data.

A method file under ``tableaus/`` holds one :class:`ButcherTableau`: the coefficients (exact
``Fraction``s where the source gives rationals), the orders, whether the last stage is FSAL, and the
continuous extension used for dense output and ``saveat``. Consistency is checked when the tableau is
built, so a mistyped coefficient fails at import time rather than as a silent loss of order.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence, Tuple, Union

Number = Union[int, float, Fraction]

__all__ = ["ButcherTableau", "hermite_dense"]

# Float coefficients from the literature are given to ~16-20 significant digits; the row-sum and
# weight-sum identities then hold to round-off only.
_TOL = 1e-12


def _as_tuple(x: Sequence[Number]) -> Tuple[Number, ...]:
    return tuple(x)


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge-Kutta method with an optional embedded pair.

    Stages are ``k_i = f(t + c_i h, y + h * sum_{j<i} a[i][j] k_j)``; the step is
    ``y1 = y + h * sum_i b_i k_i``.

    Arguments:
        name: method name, as the public algorithm is called.
        c: nodes, length ``s``.
        a: strictly lower triangular coefficients; row ``i`` has ``i`` entries (row 0 is empty).
        b: weights, length ``s``.
        b_error: error weights ``b - b_hat`` of the embedded method (sum to 0), length ``s`` or
            ``s + 1``; entry ``s`` multiplies ``f(t + h, y1)``. ``None`` for fixed-step methods.
        order: order of ``b``.
        embedded_order: order of the embedded method (``b - b_error``).
        fsal: the last stage is evaluated at ``(t + h, y1)`` (``c[-1] == 1``, ``a[-1] == b``), so it
            is the next step's first stage.
        dense: continuous extension ``y(t + θh) = y + h * sum_i P_i(θ) K_i`` over
            ``K = (k_1, ..., k_s, f(t + h, y1), e_1, ..., e_m)``. Row ``i`` lists the coefficients
            of ``θ, θ², ..., θ^d`` of ``P_i`` (``s + 1 + m`` rows). ``None`` means cubic Hermite
            interpolation (see :func:`hermite_dense`).
        dense_order: order of the continuous extension.
        dense_extra_c: nodes of the ``m`` extra stages the continuous extension needs (evaluated
            only for steps that are interpolated).
        dense_extra_a: their coefficients: extra stage ``j`` (from 0) is
            ``e_j = f(t + c_j h, y + h * sum_i a_ji K_i)`` over
            ``K = (k_1, ..., k_s, f(t + h, y1), e_1, ..., e_{j-1})``, so row ``j`` has ``s + 1 + j``
            entries.
        b_error_low: an optional second error estimator (DOP853 style); when given, the error
            norm is ``e² / sqrt(e² + 0.01 e_low²)`` with ``e``, ``e_low`` the scaled norms of both.
        reference: citation for the coefficients.
    """

    name: str
    c: Tuple[Number, ...]
    a: Tuple[Tuple[Number, ...], ...]
    b: Tuple[Number, ...]
    order: int
    b_error: Optional[Tuple[Number, ...]] = None
    embedded_order: Optional[int] = None
    fsal: bool = False
    dense: Optional[Tuple[Tuple[Number, ...], ...]] = None
    dense_order: Optional[int] = None
    dense_extra_c: Optional[Tuple[Number, ...]] = None
    dense_extra_a: Optional[Tuple[Tuple[Number, ...], ...]] = None
    b_error_low: Optional[Tuple[Number, ...]] = None
    reference: str = ""

    def __post_init__(self):
        object.__setattr__(self, "c", _as_tuple(self.c))
        object.__setattr__(self, "a", tuple(_as_tuple(r) for r in self.a))
        object.__setattr__(self, "b", _as_tuple(self.b))
        s = len(self.c)
        problems = []
        if len(self.a) != s or len(self.b) != s:
            problems.append(f"len(c)={s}, len(a)={len(self.a)}, len(b)={len(self.b)} must agree")
        for i, row in enumerate(self.a):
            if len(row) != i:
                problems.append(f"row {i} of a has {len(row)} entries, expected {i}")
            elif abs(float(sum(row)) - float(self.c[i])) > _TOL:
                problems.append(f"row {i} of a sums to {float(sum(row))!r}, but c[{i}]={float(self.c[i])!r}")
        if abs(float(sum(self.b)) - 1.0) > _TOL:
            problems.append(f"weights b sum to {float(sum(self.b))!r}, not 1")
        for label, err in (("b_error", self.b_error), ("b_error_low", self.b_error_low)):
            if err is None:
                continue
            object.__setattr__(self, label, _as_tuple(err))
            if len(err) not in (s, s + 1):
                problems.append(f"{label} has {len(err)} entries, expected {s} or {s + 1}")
            if abs(float(sum(err))) > _TOL:
                problems.append(f"{label} sums to {float(sum(err))!r}, not 0")
        if (self.b_error is None) != (self.embedded_order is None):
            problems.append("b_error and embedded_order go together")
        if self.b_error_low is not None and self.b_error is None:
            problems.append("b_error_low needs b_error")
        if self.dense is None and self.dense_order is not None:
            problems.append("dense_order given without dense")
        if self.fsal:
            if self.c[-1] != 1 or any(abs(float(x) - float(y)) > _TOL for x, y in zip(self.a[-1], self.b)):
                problems.append("fsal=True needs c[-1] == 1 and a[-1] == b[:-1]")
            if self.b[-1] != 0:
                problems.append("fsal=True needs b[-1] == 0")
        m = 0
        if (self.dense_extra_c is None) != (self.dense_extra_a is None):
            problems.append("dense_extra_c and dense_extra_a go together")
        elif self.dense_extra_c is not None:
            object.__setattr__(self, "dense_extra_c", _as_tuple(self.dense_extra_c))
            object.__setattr__(self, "dense_extra_a", tuple(_as_tuple(r) for r in self.dense_extra_a))
            m = len(self.dense_extra_c)
            if self.dense is None:
                problems.append("dense_extra_c/dense_extra_a need dense")
            if len(self.dense_extra_a) != m:
                problems.append(f"dense_extra_a has {len(self.dense_extra_a)} rows, but dense_extra_c has {m} nodes")
            for j, (cj, row) in enumerate(zip(self.dense_extra_c, self.dense_extra_a)):
                if len(row) != s + 1 + j:
                    problems.append(f"row {j} of dense_extra_a has {len(row)} entries, "
                                    f"expected s + 1 + {j} = {s + 1 + j}")
                elif abs(float(sum(row)) - float(cj)) > _TOL:
                    problems.append(f"row {j} of dense_extra_a sums to {float(sum(row))!r}, "
                                    f"but dense_extra_c[{j}]={float(cj)!r}")
        if self.dense is not None:
            object.__setattr__(self, "dense", tuple(_as_tuple(r) for r in self.dense))
            if len(self.dense) != s + 1 + m:
                problems.append(f"dense has {len(self.dense)} rows, expected s + 1 + m = {s + 1 + m}")
            elif len({len(r) for r in self.dense}) != 1:
                problems.append("dense rows must all have the same number of coefficients")
            elif self.dense_order is None:
                problems.append("dense needs dense_order")
            else:
                # P_i(1) must reproduce the step itself: sum_j dense[i][j] == b_i, with weight 0 on
                # f(t + h, y1) and on the extra stages.
                for i, row in enumerate(self.dense):
                    bi = float(self.b[i]) if i < s else 0.0
                    if abs(float(sum(row)) - bi) > 1e-10:
                        problems.append(f"dense row {i} sums to {float(sum(row))!r} at θ=1, expected "
                                        + (f"b[{i}]={bi!r}" if i < s else "0"))
        if problems:
            raise ValueError(f"inconsistent Butcher tableau {self.name!r}: " + "; ".join(problems))

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def extra_stages(self) -> int:
        """Number ``m`` of extra stages of the continuous extension (0 for most methods)."""
        return 0 if self.dense_extra_c is None else len(self.dense_extra_c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def dense_coefficients(self) -> Tuple[Tuple[float, ...], ...]:
        """Rows of ``P_i`` coefficients (θ¹..θ^d) over ``(k_1..k_s, f(t+h, y1), e_1..e_m)``, as floats."""
        rows = self.dense if self.dense is not None else hermite_dense(self.b)
        return tuple(tuple(float(x) for x in row) for row in rows)

    @property
    def interpolant_order(self) -> int:
        return self.dense_order if self.dense is not None else min(3, max(self.order, 1))

    def stability_boundary(self) -> float:
        """Length ``x`` of the real stability interval ``[-x, 0]``: ``|R(z)| ≤ 1`` on it, for the
        stability polynomial ``R(z) = 1 + Σ_k (bᵀ A^(k-1) 1) z^k`` (Tsit5: 3.5068, DP5: 3.3066).

        A step with ``h λ`` beyond it, for an eigenvalue ``λ`` of the Jacobian, is unstable: the
        stiffness detection of ``AutoSwitch`` compares ``h ρ(J)`` with this number.
        """
        s = self.stages
        A = [[float(x) for x in row] + [0.0] * (s - len(row)) for row in self.a]
        b = [float(x) for x in self.b]
        coef, v = [1.0], [1.0] * s
        for _ in range(s):
            coef.append(sum(bi * vi for bi, vi in zip(b, v)))
            v = [sum(A[i][j] * v[j] for j in range(s)) for i in range(s)]

        def stable(x):
            return abs(sum(c * (-x) ** k for k, c in enumerate(coef))) <= 1.0 + 1e-12

        # Scan for the first unstable point, then bisect; the interval starts at 0 for every
        # consistent method (R(-x) = 1 - x + O(x²)).
        step, x = 1e-2, 0.0
        while stable(x + step):
            x += step
            if x > 100.0:
                return float("inf")
        lo, hi = x, x + step
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if stable(mid) else (lo, mid)
        return lo


def hermite_dense(b: Sequence[Number]) -> Tuple[Tuple[Number, ...], ...]:
    """Cubic Hermite interpolation through ``(y0, f0)`` and ``(y1, f1)`` in the ``dense`` layout.

    ``y(θ) = y0 + h [h10(θ) f0 + h01(θ) Σ b_i k_i + h11(θ) f1]`` with the Hermite basis
    ``h10 = θ - 2θ² + θ³``, ``h01 = 3θ² - 2θ³``, ``h11 = -θ² + θ³`` (``f0 = k_1`` for every
    explicit method here since ``c_1 = 0``).
    """
    s = len(b)
    rows = []
    for i in range(s + 1):
        bi = b[i] if i < s else 0
        p1 = 1 if i == 0 else 0
        p2 = 3 * bi - (2 if i == 0 else 0) - (1 if i == s else 0)
        p3 = -2 * bi + (1 if i == 0 else 0) + (1 if i == s else 0)
        rows.append((p1, p2, p3))
    return tuple(rows)
