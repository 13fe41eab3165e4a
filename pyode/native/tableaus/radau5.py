"""The 3-stage Radau IIA method of order 5: the coefficients behind ``RadauIIA5``.

E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996,
Sec. IV.5 (Table 5.6: the collocation method at the Radau right points) and IV.8 (the
implementation RADAU5: transformation of the stage system, error estimate).

* ``C``, ``A``, ``B``: the Butcher tableau in closed form with ``√6``; ``B`` is the last row of ``A``
  (stiffly accurate, ``c_3 = 1``).
* ``GAMMA``, ``ALPHA ± i BETA``: the eigenvalues of ``A⁻¹`` (one real, one complex pair), from the
  closed form of the eigenvalues of ``A`` in Hairer's ``radau5.f``.
* ``T``, ``TI = T⁻¹``: real transformation with ``TI A⁻¹ T = [[γ, 0, 0], [0, α, -β], [0, β, α]]``,
  the 20-digit decimals of ``radau5.f`` (normalised so that ``T[2] = (T31, 1, 0)``).
* ``E``: Hairer's error-estimate weights ``(DD1, DD2, DD3)``: with the stage increments
  ``Z_i = Y_i - y0``, ``err = (γ/h I - J)⁻¹ (f(y0) + Σ E_i Z_i / h)`` (``E = γ (b̂ - b)ᵀ A⁻¹`` for the
  order-3 embedded method ``b̂`` with weight ``1/γ`` on ``f(y0)``, IV.8 (8.19)).
* ``DENSE``: the collocation polynomial through ``(0, y0)`` and ``(c_i, y0 + Z_i)`` written as
  ``y0 + Σ_i P_i(θ) Z_i``; row ``i`` holds the coefficients of ``θ, θ², θ³`` of the Lagrange basis
  polynomial ``P_i`` on the nodes ``0, c_1, c_2, c_3``.

``tests/test_radau.py`` checks the simplifying assumptions B(5), C(3), D(2), the decomposition, the
error weights and the dense rows.
"""
from __future__ import annotations

import math

__all__ = ["C", "A", "B", "GAMMA", "ALPHA", "BETA", "T", "TI", "E", "DENSE"]

_S6 = math.sqrt(6.0)

C = ((4.0 - _S6) / 10.0, (4.0 + _S6) / 10.0, 1.0)
A = (
    ((88.0 - 7.0 * _S6) / 360.0, (296.0 - 169.0 * _S6) / 1800.0, (-2.0 + 3.0 * _S6) / 225.0),
    ((296.0 + 169.0 * _S6) / 1800.0, (88.0 + 7.0 * _S6) / 360.0, (-2.0 - 3.0 * _S6) / 225.0),
    ((16.0 - _S6) / 36.0, (16.0 + _S6) / 36.0, 1.0 / 9.0),
)
B = A[2]

# Eigenvalues of A: one real, 1/γ, and a complex pair a ± ib (radau5.f's U1, ALPH, BETA before
# inversion); those of A⁻¹ are γ and α ∓ iβ = 1/(a ± ib).
_CBRT81, _CBRT9 = 81.0 ** (1.0 / 3.0), 9.0 ** (1.0 / 3.0)
GAMMA = 30.0 / (6.0 + _CBRT81 - _CBRT9)
_a = (12.0 - _CBRT81 + _CBRT9) / 60.0
_b = (_CBRT81 + _CBRT9) * math.sqrt(3.0) / 60.0
ALPHA = _a / (_a * _a + _b * _b)
BETA = _b / (_a * _a + _b * _b)

T = (
    (9.1232394870892942792e-02, -0.14125529502095420843, -3.0029194105147424492e-02),
    (0.24171793270710701896, 0.20412935229379993199, 0.38294211275726193779),
    (0.96604818261509293619, 1.0, 0.0),
)
TI = (
    (4.3255798900631553510, 0.33919925181580986954, 0.54177053993587487119),
    (-4.1787185915519047273, -0.32768282076106238708, 0.47662355450055045196),
    (-0.50287263494578687595, 2.5719269498556054292, -0.59603920482822492497),
)

E = (-(13.0 + 7.0 * _S6) / 3.0, (-13.0 + 7.0 * _S6) / 3.0, -1.0 / 3.0)


def _lagrange_rows(c):
    """Coefficients of θ, θ², θ³ of ``P_i(θ) = θ Π_{j≠i} (θ - c_j) / (c_i Π_{j≠i} (c_i - c_j))``."""
    rows = []
    for i, ci in enumerate(c):
        p, q = (cj for j, cj in enumerate(c) if j != i)
        denom = ci * (ci - p) * (ci - q)
        rows.append((p * q / denom, -(p + q) / denom, 1.0 / denom))
    return tuple(rows)


DENSE = _lagrange_rows(C)
