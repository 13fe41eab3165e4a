"""Chemistry: gas-phase mechanisms from Cantera as batched, differentiable torch modules.

``Mechanism.from_cantera("gri30.yaml")`` reads species, reactions and NASA-7 thermodynamics;
``net_production_rates(T, P, Y)`` equals Cantera's. Cantera is needed to read a mechanism (the
``chem`` extra: ``pip install 'pyode[chem]'``), not to evaluate one.
"""
from ._mechanism import GAS_CONSTANT, Mechanism
from ._thermo import Nasa7

__all__ = ["Mechanism", "Nasa7", "GAS_CONSTANT"]
from ._reactor import REACTORS, ignition_delay, mass_fractions, reactor_problem  # noqa: E402

from ._network import ReactionNetwork  # noqa: E402
from ._cantera_reference import cantera_ignition_delay  # noqa: E402

__all__ += ["reactor_problem", "ignition_delay", "mass_fractions", "REACTORS", "ReactionNetwork",
            "cantera_ignition_delay"]
