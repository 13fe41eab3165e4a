"""torchdiffeq's API on pyode's solvers: change ``from torchdiffeq import odeint`` to
``from pyode.compat.torchdiffeq import odeint`` and nothing else.

``odeint``, ``odeint_adjoint``, ``odeint_event`` and ``odeint_dense`` take the arguments of
torchdiffeq 0.2.5 and return what it returns (``func(t, y)``, tensor or tuple states, increasing or
decreasing ``t``, its method names and ``options``, warnings included). On top of torchdiffeq's
methods, ``method`` accepts pyode's own names (``"tsit5"``, ``"vern7"``, ``"rodas5p"``, ``"kencarp4"``,
``"fbdf"``, ...) or any pyode algorithm object, and ``odeint(..., sensealg=pyode.GaussAdjoint())``
selects one of pyode's sensitivity algorithms. The README's migration section lists every known
difference from torchdiffeq.
"""
from ._adjoint import odeint_adjoint
from ._odeint import odeint, odeint_dense, odeint_event

__all__ = ["odeint", "odeint_adjoint", "odeint_event", "odeint_dense"]
