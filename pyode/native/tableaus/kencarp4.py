"""Kennedy & Carpenter's ARK4(3)6L[2]SA, implicit part: the ESDIRK behind ``KenCarp4``.

C. A. Kennedy, M. H. Carpenter, "Additive Runge-Kutta schemes for convection-diffusion-reaction
equations", Appl. Numer. Math. 44 (2003) 139-181, Table 6 (ARK4(3)6L[2]SA, ESDIRK coefficients);
the rationals are also those of OrdinaryDiffEq.jl's ``KenCarp4Tableau`` /
``KenCarp4ESDIRKIMEXTableau`` (``a31 .. a65``, ``btilde``, ``c3 .. c5``; OrdinaryDiffEq's
``btilde = b_hat - b`` is ``-b_error`` here).

Six stages, ``γ = 1/4``, ``c = (0, 1/2, 83/250, 31/50, 17/20, 1)``; order 4 with an embedded
order-3 method; stiffly accurate (``b`` is the last row of ``A``, ``a_62 = 0``) and L-stable.
Only the implicit (ESDIRK) tableau is stored; the explicit tableau of the additive pair is not.
"""
from fractions import Fraction as F

from ..esdirk_tableau import EsdirkTableau

__all__ = ["KENCARP4"]

_G = F(1, 4)
_B = (F(82889, 524892), 0, F(15625, 83664), F(69875, 102672), F(-2260, 8211), _G)

KENCARP4 = EsdirkTableau(
    name="KenCarp4",
    c=(0, F(1, 2), F(83, 250), F(31, 50), F(17, 20), 1),
    A=(
        (0,),
        (_G, _G),
        (F(8611, 62500), F(-1743, 31250), _G),
        (F(5012029, 34652500), F(-654441, 2922500), F(174375, 388108), _G),
        (F(15267082809, 155376265600), F(-71443401, 120774400), F(730878875, 902184768),
         F(2285395, 8070912), _G),
        _B,
    ),
    b=_B,
    order=4,
    # b - b_hat, b_hat = (4586570599/29645900160, 0, 178811875/945068544, 814220225/1159782912,
    #                     -3700637/11593932, 61727/225920)  (Kennedy & Carpenter, Table 6)
    b_error=(F(31666707, 9881966720), 0, F(-256875, 105007616), F(-2768025, 128864768),
             F(169839, 3864644), F(-5247, 225920)),
    embedded_order=3,
    stiffly_accurate=True,
    reference="C. A. Kennedy, M. H. Carpenter, Appl. Numer. Math. 44 (2003) 139-181, ARK4(3)6L[2]SA "
              "(ESDIRK part); OrdinaryDiffEq.jl KenCarp4Tableau",
)
