"""Hairer & Wanner's RODAS: a stiffly accurate, L-stable Rosenbrock method of order 4(3).

E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed., Springer (1996),
Sec. VI.4 (where RODAS is constructed) and the Fortran code ``rodas.f`` (subroutine ``ROCOE``, METH=1); the
decimals are those of OrdinaryDiffEq.jl's ``Rodas4Tableau``
(``lib/OrdinaryDiffEqRosenbrock/src/rosenbrock_tableaus.jl``), which are ``rodas.f``'s.

Six stages in Hairer-Wanner's transformed form (see :mod:`pyode.native.rosenbrock_tableau`), with
``γ = 1/4``. The design parameters are the nodes ``c = (0, 0.386, 0.21, 0.63, 1, 1)`` and
``d = (γ, -0.1043, 0.1035, -0.0362, 0, 0)``; ``a`` and ``C`` are derived from them and given to
about 16 digits, so the identities ``c_i = Σ_j α_ij``, ``d_i = Σ_j γ_ij`` checked at construction
hold to round-off only.

Stiffly accurate: row 6 of ``a`` is row 5 plus ``e_5``, so ``Y_6 = Y_5 + U_5``; the solution is
``y1 = Y_6 + U_6`` (``b = (a_61..a_65, 1)``), and the embedded third-order solution is ``Y_6``
itself, so the error estimate is ``U_6`` (``b_error = e_6``).

Dense output (``rodas.f``'s ``CONTRO``; OrdinaryDiffEq's ``H``, two rows):
``y(t+θh) = (1-θ) y0 + θ (y1 + (1-θ)(H_1 + θ H_2))`` with ``H_k = Σ_i H[k][i] U_i``, a
third-order interpolant that keeps the stiff accuracy (it interpolates ``y0`` and ``y1``).
"""
from fractions import Fraction as F

from ..rosenbrock_tableau import RosenbrockTableau

__all__ = ["RODAS4"]

_A5 = (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950)

RODAS4 = RosenbrockTableau(
    name="Rodas4",
    gamma=F(1, 4),
    a=(
        (),
        (1.544,),
        (0.9466785280815826, 0.2557011698983284),
        (3.314825187068521, 2.896124015972201, 0.9986419139977817),
        _A5,
        _A5 + (1,),
    ),
    C=(
        (),
        (-5.6688,),
        (-2.430093356833875, -0.2063599157091915),
        (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
        (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
        (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054),
    ),
    c=(0, 0.386, 0.21, 0.63, 1, 1),
    d=(F(1, 4), -0.1043, 0.1035, -0.0362, 0, 0),
    b=_A5 + (1, 1),
    b_error=(0, 0, 0, 0, 0, 1),
    order=4,
    embedded_order=3,
    dense=(
        (10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823,
         1.025137723295662, 0),
        (-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386,
         -6.594389125716872, 0),
    ),
    dense_order=3,
    stiffly_accurate=True,
    reference=(
        "E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed. (1996), "
        "Sec. VI.4, code rodas.f; decimals as in OrdinaryDiffEq.jl Rodas4Tableau"
    ),
)
