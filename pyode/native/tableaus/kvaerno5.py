"""Kværnø's ESDIRK 5(4): the method behind ``Kvaerno5``.

A. Kværnø, "Singly diagonally implicit Runge-Kutta methods with an explicit first stage",
BIT Numer. Math. 44 (2004) 489-502 (the 7-stage order-5 method with an order-4 embedded method);
the decimals (17 significant digits) are those of OrdinaryDiffEq.jl's ``Kvaerno5Tableau``
(``lib/OrdinaryDiffEqSDIRK``, ``a31 .. a76``, ``c3 .. c6``, ``btilde``).

Seven stages, ``γ = 0.26``, ``c = (0, 0.52, 1.2303.., 0.8957.., 0.4363.., 1, 1)``. Stiffly accurate
(``b`` is the last row of ``A``); the embedded order-4 method is itself stiffly accurate at stage 6
(``b_hat = (A[5], 0)``), so ``b_error = A[6] - (A[5], 0)`` (OrdinaryDiffEq's ``btilde = b_hat - b``
is ``-b_error``). ``a_62 = a_72 = 0``. The coefficients are decimals, so the row-sum identities and
order conditions hold to about 1e-16 only.
"""
from ..esdirk_tableau import EsdirkTableau

__all__ = ["KVAERNO5"]

_G = 0.26
_A6 = (0.13855640231268224, 0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676, _G)
_A7 = (0.13659751177640291, 0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
       0.06962479448202728, _G)

KVAERNO5 = EsdirkTableau(
    name="Kvaerno5",
    c=(0, 0.52, 1.230333209967908, 0.895765984350076, 0.436393609858648, 1, 1),
    A=(
        (0,),
        (_G, _G),
        (0.13, 0.84033320996790809, _G),
        (0.22371961478320505, 0.47675532319799699, -0.06470895363112615, _G),
        (0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998, _G),
        _A6,
        _A7,
    ),
    b=_A7,
    order=5,
    # OrdinaryDiffEq's btilde (= b_hat - b), negated: a7j - a6j, with b_hat_7 = 0.
    b_error=(-0.00195889053627933, 0, -0.01251571594786333, -0.06565284626324187, 0.01050265826535727,
             -0.19037520551797272, _G),
    embedded_order=4,
    stiffly_accurate=True,
    reference="A. Kværnø, BIT Numer. Math. 44 (2004) 489-502, ESDIRK 5(4) 7 stages; "
              "OrdinaryDiffEq.jl Kvaerno5Tableau",
)
