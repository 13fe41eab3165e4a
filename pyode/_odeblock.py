"""A continuous-depth residual block (Chen et al. 2018's ODE-Net): ``h ↦ h(t1)`` with
``dh/dt = net(h, t)``, ``h(t0) = h``, for classifiers and other feature extractors."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["ODEBlock"]


def _block_rhs(u: torch.Tensor, block: "ODEBlock", t) -> torch.Tensor:
    lead = u.shape[:-1]
    h = u.reshape(*lead, *block._feature_shape)
    if block.time_dependent:
        out = block.net(h, torch.as_tensor(t, dtype=u.dtype, device=u.device).expand(lead))
    else:
        out = block.net(h)
    return out.reshape(u.shape)


class ODEBlock(nn.Module):
    """``forward(h)`` integrates ``dh/dt = net(h)`` (or ``net(h, t)``) over ``tspan`` from ``h`` and
    returns ``h(t1)``, the shape of ``h`` (any trailing feature shape: vectors, images).

    Arguments:
        net: the dynamics, a module mapping features to features of the same shape.
        tspan: ``(t0, t1)``, default ``(0, 1)``.
        time_dependent: call ``net(h, t)`` with ``t`` of shape ``(batch,)``.
        alg, sensealg, **solve_kwargs: passed to :func:`pyode.solve` (defaults ``Tsit5()``,
            ``DirectAdjoint()``, ``reltol=1e-3``, ``abstol=1e-3`` (a classifier needs features, not
            digits), ``batch_steps="shared"``).

    After each call, ``nfe`` holds the number of evaluations of ``net`` the forward solve took (the
    ODE-Net's depth): Chen et al. report it, and it grows during training.
    """

    def __init__(self, net: nn.Module, tspan: Sequence[float] = (0.0, 1.0), *, time_dependent: bool = False,
                 alg=None, sensealg=None, **solve_kwargs):
        super().__init__()
        from ._solve import _KEYWORDS

        if not callable(net):
            raise TypeError(f"net must be a torch.nn.Module; got {type(net).__name__}")
        if len(tspan) != 2 or not float(tspan[0]) < float(tspan[1]):
            raise ValueError(f"tspan must be (t0, t1) with t0 < t1; got {tuple(tspan)}")
        bad = [k for k in solve_kwargs if k not in _KEYWORDS or k in ("saveat", "sensealg")]
        if bad:
            raise TypeError(f"ODEBlock got unknown solve keyword(s) {bad}")
        self.net = net
        self.tspan = (float(tspan[0]), float(tspan[1]))
        self.time_dependent = time_dependent
        self.alg, self.sensealg = alg, sensealg
        self.solve_kwargs = {"reltol": 1e-3, "abstol": 1e-3, "batch_steps": "shared", **solve_kwargs}
        self.nfe: Optional[int] = None
        self._feature_shape = ()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        from ._problem import ODEProblem
        from ._solve import solve

        if not isinstance(h, torch.Tensor) or h.ndim < 2:
            raise ValueError(f"h must be a tensor (batch, *features); got "
                             f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}")
        self._feature_shape = tuple(h.shape[1:])
        u0 = h.reshape(h.shape[0], -1)
        sol = solve(ODEProblem(_block_rhs, u0, self.tspan, self), self.alg, saveat=[self.tspan[1]],
                    sensealg=self.sensealg, dense=False, **self.solve_kwargs)
        self.nfe = int(sol.stats.nf)
        return sol.u[-1].reshape(h.shape)
