"""Shampine & Reichelt's Rosenbrock23 (MATLAB ``ode23s``): an L-stable W-method of order 2(3).

L. F. Shampine, M. W. Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput. 18 (1997) 1-22,
Sec. 3; OrdinaryDiffEq.jl ``Rosenbrock23`` (``Rosenbrock23Tableau``: ``c₃₂ = 6 + √2``,
``d = 1/(2 + √2)``; ``perform_step!`` in ``rosenbrock_perform_step.jl``).

The published form, with slopes ``k_i``, ``W_s = I - h d J``, ``F0 = f(t, y)`` and ``T = ∂f/∂t``::

    W_s k1 = F0 + h d T
    F1 = f(t + h/2, y + (h/2) k1);        W_s (k2 - k1) = F1 - k1
    y1 = y + h k2                                          (order 2, also for any J: a W-method)
    F2 = f(t + h, y1);                    W_s k3 = F2 - e32 (k2 - F1) - 2 (k1 - F0) + h d T
    err = (h/6)(k1 - 2 k2 + k3)           (= ŷ1 - y1 with the third-order ŷ1 = y + (h/6)(k1 + 4k2 + k3))
    y(t+θh) = y + h [θ(1-θ) k1 + θ(θ-2d) k2] / (1 - 2d)    (second order)

with ``d = 1/(2+√2) = 1 - √2/2`` and ``e32 = 6 + √2``. Its third stage refers to the function values
``F0, F1`` rather than to ``J``-products, but it *is* a standard 3-stage Rosenbrock method: the stage
equations themselves give ``k1 - F0 = h d J k1 + h d T`` and ``k2 - F1 = h d J (k2 - k1)``, so
``W_s k3 = F2 + h J[(e32 - 2) d k1 - e32 d k2] - h d T``. In Hairer-Wanner's original form (increments
``k_i^HW = h k_i``, see :mod:`pyode.native.rosenbrock_tableau`)::

    γ = d,   α = [[.], [1/2], [0, 1]],   γ_21 = -d,   γ_31 = (e32 - 2) d = 3 - √2,
    γ_32 = -e32 d = -(5 - 2√2),   b = (0, 1, 0),   b̂ = (1/6, 2/3, 1/6),
    c = (0, 1/2, 1),   d_i = γ_i = (d, 0, -d).

The identities hold for whatever matrix ``J`` is used in ``W`` (the same in all stages), so the
equivalence is exact in exact arithmetic, W-method use included. Transformed (``δ = 2 + √2 = 1/d``)::

    a = [[.], [δ/2], [δ, δ]],   C = [[.], [-δ], [-2δ, -(14 + 8√2)]],
    b = (δ, δ, 0),   b_error = b - b̂ = -((2+√2)/6, 5/3 + √2, (2+√2)/6),
    dense: H_1 = -(4 + 3√2) U_2      (Shampine's interpolant rewritten in the Rodas form).

So the generic stage loop runs it as is. What OrdinaryDiffEq's dedicated step saves is in the data
too: ``b_3 = 0`` (the third stage only feeds the error estimate and can be skipped on fixed steps),
and ``fsal``: stage 3 is evaluated at ``(t + h, y1)``, so ``F_3`` is the next step's ``F_1`` (two
``f`` evaluations per accepted step). With an inexact ``J`` both ``y1`` and ``ŷ1`` stay second
order (the estimate then is ``O(h³)`` but no longer asymptotically exact). ``ŷ1`` is not A-stable
(``|R̂(∞)| ≈ 1.61``): fine for an error estimate, not for local extrapolation. The relation to the published slopes is
``U_1 = h d k1``, ``U_2 = h d (k2 - k1)``, ``U_3 = h d (k3 - e32 k2 + (e32 - 2) k1)`` (``U = Γ k^HW``).
"""
import math

from ..rosenbrock_tableau import RosenbrockTableau

__all__ = ["ROSENBROCK23", "ROSENBROCK23_D", "ROSENBROCK23_E32"]

_SQRT2 = math.sqrt(2.0)
#: ``d = 1/(2 + √2)``: the diagonal ``γ`` (OrdinaryDiffEq's ``d``).
ROSENBROCK23_D = 1.0 / (2.0 + _SQRT2)
#: ``e32 = 6 + √2`` (OrdinaryDiffEq's ``c₃₂``), for a dedicated step in the published form.
ROSENBROCK23_E32 = 6.0 + _SQRT2
_DELTA = 2.0 + _SQRT2  # 1/d

ROSENBROCK23 = RosenbrockTableau(
    name="Rosenbrock23",
    gamma=ROSENBROCK23_D,
    a=(
        (),
        (_DELTA / 2,),
        (_DELTA, _DELTA),
    ),
    C=(
        (),
        (-_DELTA,),
        (-2 * _DELTA, -(14.0 + 8.0 * _SQRT2)),
    ),
    c=(0, 0.5, 1),
    d=(ROSENBROCK23_D, 0, -ROSENBROCK23_D),
    b=(_DELTA, _DELTA, 0),
    b_error=(-_DELTA / 6, -(5.0 / 3.0 + _SQRT2), -_DELTA / 6),
    order=2,
    embedded_order=3,
    dense=((0, -(4.0 + 3.0 * _SQRT2), 0),),
    dense_order=2,
    w_order=2,
    fsal=True,
    reference=(
        "L. F. Shampine, M. W. Reichelt, The MATLAB ODE Suite, SIAM J. Sci. Comput. 18 (1997) 1-22; "
        "as OrdinaryDiffEq.jl Rosenbrock23"
    ),
)
