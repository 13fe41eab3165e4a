"""Rosenbrock (W-)methods, as checked data.

A method file under ``tableaus/`` holds one :class:`RosenbrockTableau` in the *transformed* form of
Hairer & Wanner (Solving ODEs II, 2nd ed., Sec. IV.7, eq. (7.25)), which is also the form of
OrdinaryDiffEq.jl's ``RodasTableau`` (fields ``A, C, gamma, c, d, H``) and of its generic stage
loop (``perform_step!`` for ``RosenbrockCache`` in ``rosenbrock_perform_step.jl``). One step from
``(t, y)`` with step ``h``, Jacobian ``J ≈ ∂f/∂y(t, y)`` and ``T ≈ ∂f/∂t(t, y)``::

    W   = I / (h γ) - J                                   (one LU per step)
    for i = 1..s:
        Y_i = y + Σ_{j<i} a[i][j] U_j                       (stage value; Y_1 = y)
        F_i = f(t + c_i h, Y_i)
        W U_i = F_i + Σ_{j<i} (C[i][j] / h) U_j + h d_i T   (solve for U_i)
    y1    = y + Σ_i b_i U_i
    err   = Σ_i b_error_i U_i                              (= y1 - ŷ1, the embedded solution ŷ1)
    y(t + θh) = (1-θ) y + θ (y1 + (1-θ) (H_1 + θ H_2 + θ² H_3 + ...)),  H_k = Σ_i dense[k][i] U_i

``U_i`` are increments with the dimension of ``y`` (not slopes). OrdinaryDiffEq stores
``W_ode = J - I/(hγ) = -W`` and solves ``U_i = W_ode \\ -(rhs)``: the same thing.

Relation to the original (untransformed) form (Hairer-Wanner IV.7, (7.4)), in which::

    (I - h γ J) k_i = h f(t + α_i h, y + Σ_{j<i} α_ij k_j) + h J Σ_{j<i} γ_ij k_j + h² γ_i T,
    y1 = y + Σ b_i k_i,   ŷ1 = y + Σ b̂_i k_i,
    α_i = Σ_{j<i} α_ij,   γ_i = γ + Σ_{j<i} γ_ij:

with ``Γ`` the lower triangular matrix of the ``γ_ij`` (diagonal ``γ``), ``U_i = Σ_{j≤i} γ_ij k_j``
(``U = Γ k``) and::

    a = α Γ⁻¹,   C = diag(1/γ) - Γ⁻¹,   b = b_orig Γ⁻¹,   b_error = (b_orig - b̂_orig) Γ⁻¹,
    c_i = α_i = Σ_j α_ij,   d_i = γ_i = Σ_{j≤i} Γ_ij.

Conversely ``Γ = (diag(1/γ) - C)⁻¹`` and ``α = a Γ``; :meth:`RosenbrockTableau.original_form`
returns these, and :meth:`RosenbrockTableau.from_original` builds a tableau from them. The
conditions ``c_i = Σ_j α_ij`` and ``d_i = Σ_j Γ_ij`` relate *published* numbers (``c`` and ``d`` are
design parameters given to few digits, ``a`` and ``C`` are derived from them), so they are checked
at construction, in exact rational arithmetic on the stored values.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

Number = Union[int, float, Fraction]

__all__ = ["RosenbrockTableau", "RosenbrockOriginal", "RosenbrockFloats"]

# Float coefficients from the literature carry ~16 significant digits; a derived identity is
# checked to 1e-12 relative to the size of the terms that enter it.
_RTOL = 1e-12


def _close(x: Fraction, y: Fraction, scale: Fraction) -> bool:
    return abs(x - y) <= _RTOL * (1 + abs(scale))


def _exact(x: Number) -> Fraction:
    return Fraction(x)


class RosenbrockOriginal(NamedTuple):
    """Hairer-Wanner's original parameters of a Rosenbrock method (see the module docstring).

    ``alpha``: ``s × s`` strictly lower triangular ``α_ij``; ``gamma``: ``s × s`` lower triangular
    ``Γ`` (``γ_ij``, diagonal ``γ``); ``b``, ``b_hat``: weights on the ``k_i`` (``b_hat`` is
    ``None`` without an embedded method). Rows are full length ``s``.
    """

    alpha: Tuple[Tuple[Number, ...], ...]
    gamma: Tuple[Tuple[Number, ...], ...]
    b: Tuple[Number, ...]
    b_hat: Optional[Tuple[Number, ...]]


def _lower_inverse(m: List[List[Fraction]]) -> List[List[Fraction]]:
    """Inverse of a lower triangular matrix with nonzero diagonal, exactly."""
    s = len(m)
    inv = [[Fraction(0)] * s for _ in range(s)]
    for j in range(s):
        inv[j][j] = 1 / m[j][j]
        for i in range(j + 1, s):
            acc = sum((m[i][k] * inv[k][j] for k in range(j, i)), Fraction(0))
            inv[i][j] = -acc / m[i][i]
    return inv


def _matmul(x: List[List[Fraction]], y: List[List[Fraction]]) -> List[List[Fraction]]:
    n, k = len(x), len(y)
    return [[sum((x[i][l] * y[l][j] for l in range(k)), Fraction(0)) for j in range(len(y[0]))]
            for i in range(n)]


def _vecmat(v: Sequence[Fraction], m: List[List[Fraction]]) -> List[Fraction]:
    return [sum((v[i] * m[i][j] for i in range(len(v))), Fraction(0)) for j in range(len(m[0]))]


def _square(rows: Sequence[Sequence[Number]], s: int) -> List[List[Fraction]]:
    """Strictly lower triangular rows (row i has i entries) as a full s × s matrix of Fractions."""
    return [[_exact(r[j]) if j < len(r) else Fraction(0) for j in range(s)] for r in rows]


def _plain(x: Fraction) -> Number:
    """A Fraction back to int when integral, else kept as Fraction."""
    return int(x) if x.denominator == 1 else x


@dataclass(frozen=True)
class RosenbrockTableau:
    """Coefficients of a Rosenbrock (W-)method in Hairer-Wanner's transformed form.

    The stage loop is spelled out in the module docstring. ``s = len(c)`` stages.

    Arguments:
        name: method name, as the public algorithm is called.
        gamma: the diagonal ``γ > 0``; ``W = I/(hγ) - J``.
        a: stage-value coefficients, strictly lower triangular: row ``i`` has ``i`` entries
            (OrdinaryDiffEq's ``A``).
        C: coefficients of the ``U_j / h`` terms on the right-hand side, same shape as ``a``
            (OrdinaryDiffEq's ``C``, same sign).
        c: nodes, ``F_i = f(t + c_i h, Y_i)``; ``c_1 = 0``.
        d: coefficients of ``h ∂f/∂t`` on the right-hand side (``d_1 = γ``).
        b: weights of the solution over ``U_1..U_s``.
        order: order of ``b`` (with the exact Jacobian).
        b_error: ``b - b̂`` over ``U_1..U_s`` (``err = Σ b_error_i U_i``); ``None`` for fixed step.
        embedded_order: order of ``b̂ = b - b_error``.
        dense: rows ``H_k`` (``k = 1..m``, each of length ``s``) of the stiffly accurate
            interpolant ``y(t+θh) = (1-θ) y + θ (y1 + (1-θ)(H_1 + θ H_2 + ... + θ^{m-1} H_m))``
            with ``H_k = Σ_i dense[k][i] U_i`` (OrdinaryDiffEq's ``H``; ``m = 2`` for Rodas4,
            ``3`` for Rodas5P).
        dense_order: local order of the interpolant.
        w_order: order kept when ``J`` (and ``T``) are arbitrary approximations, e.g. a Jacobian
            reused from earlier steps (a W-method); ``None``: only the trivial order 1.
        stiffly_accurate: ``y1`` is the last stage value plus the last increment,
            ``b = (a[s-1][0], ..., a[s-1][s-2], 1)`` with ``c_s = 1`` (the Rodas methods).
        fsal: the last stage is evaluated at ``(t + h, y1)`` (``c_s = 1``, ``a[s-1] = b[:s-1]``,
            ``b_s = 0``), so ``F_s`` is the next step's ``F_1``.
        reference: citation for the coefficients.
    """

    name: str
    gamma: Number
    a: Tuple[Tuple[Number, ...], ...]
    C: Tuple[Tuple[Number, ...], ...]
    c: Tuple[Number, ...]
    d: Tuple[Number, ...]
    b: Tuple[Number, ...]
    order: int
    b_error: Optional[Tuple[Number, ...]] = None
    embedded_order: Optional[int] = None
    dense: Optional[Tuple[Tuple[Number, ...], ...]] = None
    dense_order: Optional[int] = None
    w_order: Optional[int] = None
    stiffly_accurate: bool = False
    fsal: bool = False
    reference: str = ""

    def __post_init__(self):
        for field in ("c", "d", "b"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in ("a", "C"):
            object.__setattr__(self, field, tuple(tuple(r) for r in getattr(self, field)))
        if self.b_error is not None:
            object.__setattr__(self, "b_error", tuple(self.b_error))
        if self.dense is not None:
            object.__setattr__(self, "dense", tuple(tuple(r) for r in self.dense))
        problems = self._problems()
        if problems:
            raise ValueError(f"inconsistent Rosenbrock tableau {self.name!r}: " + "; ".join(problems))

    def _problems(self) -> List[str]:
        s = len(self.c)
        problems = []
        if s == 0:
            return ["c is empty"]
        shapes_ok = True
        for label in ("d", "b"):
            if len(getattr(self, label)) != s:
                problems.append(f"{label} has {len(getattr(self, label))} entries, expected len(c)={s}")
                shapes_ok = False
        for label in ("a", "C"):
            rows = getattr(self, label)
            if len(rows) != s:
                problems.append(f"{label} has {len(rows)} rows, expected len(c)={s}")
                shapes_ok = False
                continue
            for i, row in enumerate(rows):
                if len(row) != i:
                    problems.append(f"row {i} of {label} has {len(row)} entries, expected {i}")
                    shapes_ok = False
        if not float(self.gamma) > 0:
            problems.append(f"gamma={float(self.gamma)!r} must be positive")
            shapes_ok = False
        if self.c[0] != 0:
            problems.append(f"c[0]={float(self.c[0])!r}, must be 0")
        if (self.b_error is None) != (self.embedded_order is None):
            problems.append("b_error and embedded_order go together")
        if self.b_error is not None and len(self.b_error) != s:
            problems.append(f"b_error has {len(self.b_error)} entries, expected len(c)={s}")
            shapes_ok = False
        if (self.dense is None) != (self.dense_order is None):
            problems.append("dense and dense_order go together")
        if self.dense is not None:
            if len(self.dense) == 0:
                problems.append("dense has no rows")
            for k, row in enumerate(self.dense):
                if len(row) != s:
                    problems.append(f"dense row {k} has {len(row)} entries, expected len(c)={s}")
                    shapes_ok = False
        if self.embedded_order is not None and self.embedded_order == self.order:
            problems.append(f"embedded_order={self.embedded_order} equals order: b_error would "
                            "not estimate the error")
        if self.w_order is not None and self.w_order > self.order:
            problems.append(f"w_order={self.w_order} exceeds order={self.order}")
        if not shapes_ok:
            return problems

        g = _exact(self.gamma)
        a = _square(self.a, s)
        big_c = _square(self.C, s)
        # Γ⁻¹ = diag(1/γ) - C, Γ = its inverse, α = a Γ.
        gamma_inv = [[(1 / g if i == j else Fraction(0)) - big_c[i][j] for j in range(s)] for i in range(s)]
        gam = _lower_inverse(gamma_inv)
        alpha = _matmul(a, gam)
        for i in range(s):
            ci, di = _exact(self.c[i]), _exact(self.d[i])
            row_alpha, row_gamma = sum(alpha[i]), sum(gam[i])
            scale = sum(abs(x) for x in alpha[i]) + sum(abs(x) for x in a[i]) + abs(ci)
            if not _close(row_alpha, ci, scale):
                problems.append(f"c[{i}]={float(ci)!r}, but the derived α row {i} sums to "
                                f"{float(row_alpha)!r} (c_i = Σ_j α_ij with α = a Γ)")
            scale = sum(abs(x) for x in gam[i]) + sum(abs(x) for x in big_c[i]) + abs(di)
            if not _close(row_gamma, di, scale):
                problems.append(f"d[{i}]={float(di)!r}, but the derived Γ row {i} sums to "
                                f"{float(row_gamma)!r} (d_i = Σ_j γ_ij, diagonal included)")
        b = [_exact(x) for x in self.b]
        b_orig = _vecmat(b, gam)
        if not _close(sum(b_orig), Fraction(1), sum(abs(x) for x in b_orig)):
            problems.append(f"weights b give Σ_i b_i d_i = Σ (b Γ)_i = {float(sum(b_orig))!r}, not 1")
        if self.b_error is not None:
            b_hat = [bi - _exact(e) for bi, e in zip(b, self.b_error)]
            b_hat_orig = _vecmat(b_hat, gam)
            if not _close(sum(b_hat_orig), Fraction(1), sum(abs(x) for x in b_hat_orig)):
                problems.append(f"embedded weights b - b_error give Σ_i (b - b_error)_i d_i = "
                                f"{float(sum(b_hat_orig))!r}, not 1")
        if self.stiffly_accurate:
            expect = list(a[s - 1][: s - 1]) + [Fraction(1)]
            if not _close(_exact(self.c[-1]), Fraction(1), Fraction(1)) or any(
                    not _close(x, y, y) for x, y in zip(b, expect)):
                problems.append("stiffly_accurate=True needs c[-1] == 1 and b == (a[-1], 1)")
        if self.fsal:
            last_at_y1 = _close(_exact(self.c[-1]), Fraction(1), Fraction(1)) and all(
                _close(x, y, y) for x, y in zip(a[s - 1][: s - 1], b))
            if not last_at_y1 or not _close(b[-1], Fraction(0), Fraction(0)):
                problems.append("fsal=True needs c[-1] == 1, a[-1] == b[:-1] and b[-1] == 0")
        if self.dense is not None:
            # First-order consistency of the interpolant: the U_i are h d_i f(y) + O(h²) (d_i = γ_i),
            # and y(θ) - [(1-θ) y + θ y1] must be O(h²), so every row is orthogonal to d.
            d = [_exact(x) for x in self.d]
            for k, row in enumerate(self.dense):
                dot = sum((_exact(x) * di for x, di in zip(row, d)), Fraction(0))
                scale = sum((abs(_exact(x) * di) for x, di in zip(row, d)), Fraction(0))
                if not _close(dot, Fraction(0), scale):
                    problems.append(f"dense row {k} has Σ_i dense[{k}][i] d_i = {float(dot)!r}, "
                                    "not 0 (interpolant not even first order)")
        return problems

    # ------------------------------------------------------------------ derived data

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    def original_form(self, exact: bool = False) -> RosenbrockOriginal:
        """Hairer-Wanner's ``(α, Γ, b, b̂)`` recovered from the stored form (full ``s × s`` rows).

        Exact ``Fraction``s of the stored values when ``exact``, else floats.
        """
        s = self.stages
        g = _exact(self.gamma)
        big_c = _square(self.C, s)
        gamma_inv = [[(1 / g if i == j else Fraction(0)) - big_c[i][j] for j in range(s)] for i in range(s)]
        gam = _lower_inverse(gamma_inv)
        alpha = _matmul(_square(self.a, s), gam)
        b = [_exact(x) for x in self.b]
        b_orig = _vecmat(b, gam)
        b_hat_orig = None
        if self.b_error is not None:
            b_hat_orig = _vecmat([bi - _exact(e) for bi, e in zip(b, self.b_error)], gam)
        conv = (lambda x: x) if exact else float
        rows = lambda m: tuple(tuple(conv(x) for x in r) for r in m)  # noqa: E731
        return RosenbrockOriginal(
            alpha=rows(alpha),
            gamma=rows(gam),
            b=tuple(conv(x) for x in b_orig),
            b_hat=None if b_hat_orig is None else tuple(conv(x) for x in b_hat_orig),
        )

    @classmethod
    def from_original(cls, name: str, gamma: Number, alpha: Sequence[Sequence[Number]],
                      gamma_ij: Sequence[Sequence[Number]], b: Sequence[Number],
                      b_hat: Optional[Sequence[Number]] = None, *, as_float: bool = False,
                      **kwargs) -> "RosenbrockTableau":
        """Build the transformed tableau from Hairer-Wanner's original parameters.

        ``alpha`` and ``gamma_ij`` are strictly lower triangular (row ``i`` has ``i`` entries; the
        diagonal of ``Γ`` is ``gamma``). Computed exactly; ``as_float`` stores floats (for
        coefficients that are themselves rounded irrationals). ``dense`` (over the ``U_i``),
        orders and flags go through ``kwargs``.
        """
        s = len(b)
        g = _exact(gamma)
        al = _square(alpha, s)
        gam = _square(gamma_ij, s)
        for i in range(s):
            gam[i][i] = g
        gam_inv = _lower_inverse(gam)
        a = _matmul(al, gam_inv)
        big_c = [[(1 / g if i == j else Fraction(0)) - gam_inv[i][j] for j in range(s)] for i in range(s)]
        conv = float if as_float else _plain
        w = _vecmat([_exact(x) for x in b], gam_inv)
        err = None
        if b_hat is not None:
            err = tuple(conv(x) for x in _vecmat([_exact(x) - _exact(y) for x, y in zip(b, b_hat)], gam_inv))
        return cls(
            name=name,
            gamma=gamma,
            a=tuple(tuple(conv(a[i][j]) for j in range(i)) for i in range(s)),
            C=tuple(tuple(conv(big_c[i][j]) for j in range(i)) for i in range(s)),
            c=tuple(conv(sum(r)) for r in al),
            d=tuple(conv(sum(r)) for r in gam),
            b=tuple(conv(x) for x in w),
            b_error=err,
            **kwargs,
        )

    def floats(self) -> "RosenbrockFloats":
        """All coefficients as floats, ``a`` and ``C`` as full ``s × s`` rows (zeros on and above
        the diagonal), ready to become tensors."""
        s = self.stages
        full = lambda rows: tuple(  # noqa: E731
            tuple(float(r[j]) if j < len(r) else 0.0 for j in range(s)) for r in rows)
        vec = lambda v: None if v is None else tuple(float(x) for x in v)  # noqa: E731
        return RosenbrockFloats(
            gamma=float(self.gamma), a=full(self.a), C=full(self.C), c=vec(self.c), d=vec(self.d),
            b=vec(self.b), b_error=vec(self.b_error),
            dense=None if self.dense is None else tuple(vec(r) for r in self.dense))


class RosenbrockFloats(NamedTuple):
    """:meth:`RosenbrockTableau.floats`: the stored form in floats (see the module docstring)."""

    gamma: float
    a: Tuple[Tuple[float, ...], ...]
    C: Tuple[Tuple[float, ...], ...]
    c: Tuple[float, ...]
    d: Tuple[float, ...]
    b: Tuple[float, ...]
    b_error: Optional[Tuple[float, ...]]
    dense: Optional[Tuple[Tuple[float, ...], ...]]
