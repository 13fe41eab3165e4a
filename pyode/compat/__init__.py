"""Drop-in layers that give other libraries' APIs pyode's numerics.

:mod:`pyode.compat.torchdiffeq` is torchdiffeq's ``odeint``/``odeint_adjoint``/``odeint_event`` with
the same signatures and semantics: existing neural-ODE code switches by changing one import.
"""
