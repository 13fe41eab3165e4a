"""Cantera's own ignition delay, the reference the tests, the demo and the benchmark compare against."""
from __future__ import annotations

from typing import Optional, Tuple


def cantera_ignition_delay(gas, T0: float, P: float, X, *, rtol: float = 1e-10, atol: float = 1e-20,
                           multiplier: Optional[Tuple[int, float]] = None, sensitivities: bool = False,
                           rise: float = 400.0) -> float:
    """The time a constant-pressure Cantera reactor takes to reach ``T0 + rise`` K.

    Cantera's ``IdealGasConstPressureReactor`` is stepped by CVODES at ``rtol``/``atol`` until T passes
    ``T0 + rise``; τ is interpolated linearly in T between the two steps around it (they are tiny
    there, so at rtol 1e-10 the interpolation adds no visible error).

    Args:
        gas: a ``cantera.Solution`` (its state is overwritten) or a mechanism file name.
        T0, P: initial temperature (K) and pressure (Pa).
        X: initial mole fractions, anything Cantera's ``TPX`` accepts.
        multiplier: ``(reaction index, value)``: scale one reaction's rate, as
            ``Solution.set_multiplier(value, index)``; used for central differences of τ. The gas's
            multipliers are restored afterwards.
        sensitivities: also integrate CVODES's forward sensitivities of every reaction (their cost is
            what the benchmark measures; τ is unchanged).
    """
    try:
        import cantera as ct
    except ImportError:
        raise ImportError("cantera_ignition_delay needs Cantera: pip install 'pyode[chem]'") from None
    if isinstance(gas, str):
        gas = ct.Solution(gas)
    if multiplier is not None:
        index, value = multiplier
        old = gas.multiplier(index)
        gas.set_multiplier(value, index)
    try:
        gas.TPX = T0, P, X
        reactor = ct.IdealGasConstPressureReactor(gas, clone=False)
        net = ct.ReactorNet([reactor])
        net.rtol, net.atol = rtol, atol
        if sensitivities:
            for i in range(gas.n_reactions):
                reactor.add_sensitivity_reaction(i)
            net.rtol_sensitivity, net.atol_sensitivity = 1e-6, 1e-6
        target = T0 + rise
        t_prev, T_prev = 0.0, T0
        while reactor.T < target:
            t_prev, T_prev = net.time, reactor.T
            net.step()
        return t_prev + (target - T_prev) * (net.time - t_prev) / (reactor.T - T_prev)
    finally:
        if multiplier is not None:
            gas.set_multiplier(old, index)
