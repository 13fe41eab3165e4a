"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019; RNODE, Finlay et al.
2020): a density carried by an ODE, with the instantaneous change of variables
``d log p(z(t))/dt = -tr(∂f/∂z)``.

The flow carries base samples ``z0 ~ base`` at ``tspan[0]`` to data ``x`` at ``tspan[1]``;
``log p(x) = log p_base(z(t0)) - ∫_{t0}^{t1} tr(∂f/∂z) dt``, with ``z(t0)`` found by integrating
backwards from ``x``. The trace is exact (``d`` vector-Jacobian products, batched by ``torch.func``)
or Hutchinson's estimate ``εᵀ(∂f/∂z)ε`` with one probe ``ε`` per batch member, fixed for the solve.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import vjp, vmap

__all__ = ["CNF"]

_TRACES = ("exact", "hutchinson")
_NOISES = ("rademacher", "gaussian")


class StandardNormal:
    """``N(0, I)`` in ``d`` dimensions, with the two methods a flow needs."""

    def __init__(self, dim: int):
        self.dim = dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z * z).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, shape: Sequence[int], generator=None, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.randn(*shape, self.dim, generator=generator, dtype=dtype, device=device)


def _dynamics(u: torch.Tensor, net: nn.Module, t, *, dim: int, trace: str, regularize: bool) -> torch.Tensor:
    """``d/dt (z, Δlog p[, ∫|f|², ∫|∂f/∂z|²_F][, ε])``: the augmented right-hand side, in pyode's
    ``f(u, p, t)`` form with ``p = net``. Hutchinson's probe ``ε`` rides in the state with a zero
    derivative: it is then per member under every transform a sensealg applies (some take one
    member at a time). Its constant components count in the solver's RMS error norm, which loosens
    the effective tolerance by sqrt((d + 1) / (2d + 1)) (0.77 in 2-D)."""
    lead = u.shape[:-1]
    u = u.reshape(-1, u.shape[-1])
    z = u[:, :dim]
    tt = torch.as_tensor(t, dtype=z.dtype, device=z.device).expand(lead).reshape(-1)
    eps = u[:, -dim:] if trace == "hutchinson" else None
    dz, pullback = vjp(lambda v: net(v, tt), z)
    if trace == "exact":
        # row i of every member's Jacobian: one pullback of e_i, the d of them batched by vmap
        eye = torch.eye(dim, dtype=z.dtype, device=z.device)
        rows = vmap(pullback)(eye[:, None, :].expand(dim, *z.shape))[0]          # (d, B, d)
        tr = rows.diagonal(dim1=0, dim2=2).sum(-1)
        frob = (rows * rows).sum((0, 2)) if regularize else None
    else:
        eJ = pullback(eps)[0]                                                    # εᵀ ∂f/∂z
        tr = (eJ * eps).sum(-1)
        frob = (eJ * eJ).sum(-1) if regularize else None
    parts = [dz, tr[..., None]]
    if regularize:
        parts += [(dz * dz).sum(-1, keepdim=True), frob[..., None]]
    if eps is not None:
        parts.append(torch.zeros_like(eps))
    return torch.cat(parts, -1).reshape(*lead, -1)


def _flow(u: torch.Tensor, net: nn.Module, t) -> torch.Tensor:
    return net(u, torch.as_tensor(t, dtype=u.dtype, device=u.device).expand(u.shape[:-1]))


class CNF(nn.Module):
    """A continuous normalizing flow ``dz/dt = net(z, t)``.

    Arguments:
        net: a module ``net(z, t)`` with ``z`` ``(B, d)`` and ``t`` ``(B,)`` giving ``dz/dt``
            ``(B, d)``; it must work under ``torch.func`` transforms (plain layers do).
        tspan: ``(t0, t1)``: base samples at ``t0``, data at ``t1``.
        trace: ``"exact"`` (``d`` products per evaluation, exact up to the solver's error) or
            ``"hutchinson"`` (one product, unbiased; FFJORD's estimator for large ``d``).
        noise: Hutchinson's probe: ``"rademacher"`` (±1, the lower variance) or ``"gaussian"``.
        base: the base distribution at ``t0``: any object with ``log_prob(z)`` and ``sample(shape)``
            (a ``torch.distributions`` distribution over ``d``-vectors), default ``N(0, I)``.
        kinetic, jacobian: RNODE's regularisation weights on ``∫|f|² dt`` and ``∫|∂f/∂z|²_F dt``
            (Hutchinson's estimate with ``trace="hutchinson"``), returned by
            :meth:`log_prob_and_regularization`.
        alg, sensealg, **solve_kwargs: passed to :func:`pyode.solve` (default ``Tsit5()``,
            ``DirectAdjoint()``, ``reltol=1e-5``, ``abstol=1e-5``, ``batch_steps="shared"``: one step
            size for a batch, as torchdiffeq and FFJORD train, 1.5× faster per iteration than per-member
            steps on the 8-gaussian toy; ``batch_steps="member"`` controls each point's error alone).

    ``log_prob(x)`` gives ``log p(x)`` ``(B,)``; ``sample(n)`` draws ``n`` points.
    """

    def __init__(self, net: nn.Module, tspan: Sequence[float] = (0.0, 1.0), *, trace: str = "exact",
                 noise: str = "rademacher", base: Any = None, kinetic: float = 0.0, jacobian: float = 0.0,
                 alg=None, sensealg=None, **solve_kwargs):
        super().__init__()
        from ._solve import _KEYWORDS

        if not callable(net):
            raise TypeError(f"net must be a torch.nn.Module net(z, t); got {type(net).__name__}")
        if trace not in _TRACES:
            raise ValueError(f"trace={trace!r}; choose 'exact' or 'hutchinson'")
        if noise not in _NOISES:
            raise ValueError(f"noise={noise!r}; choose 'rademacher' or 'gaussian'")
        if len(tspan) != 2 or not float(tspan[0]) < float(tspan[1]):
            raise ValueError(f"tspan must be (t0, t1) with t0 < t1; got {tuple(tspan)}")
        for name, w in (("kinetic", kinetic), ("jacobian", jacobian)):
            if not (isinstance(w, (int, float)) and w >= 0 and math.isfinite(w)):
                raise ValueError(f"{name} must be a non-negative number (a regularisation weight); got {w!r}")
        bad = [k for k in solve_kwargs if k not in _KEYWORDS or k in ("saveat", "sensealg", "callback")]
        if bad:
            raise TypeError(f"CNF got unknown solve keyword(s) {bad}")
        self.net = net
        self.tspan = (float(tspan[0]), float(tspan[1]))
        self.trace, self.noise, self.base = trace, noise, base
        self.kinetic, self.jacobian = float(kinetic), float(jacobian)
        self.alg, self.sensealg = alg, sensealg
        self.solve_kwargs = {"reltol": 1e-5, "abstol": 1e-5, "batch_steps": "shared", **solve_kwargs}

    def _base(self, dim: int):
        return self.base if self.base is not None else StandardNormal(dim)

    def _probe(self, x: torch.Tensor, generator) -> Optional[torch.Tensor]:
        if self.trace == "exact":
            return None
        if self.noise == "gaussian":
            return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def _solve(self, u0: torch.Tensor, tspan: Tuple[float, float], rhs) -> torch.Tensor:
        from ._problem import ODEProblem
        from ._solve import solve

        sol = solve(ODEProblem(rhs, u0, tspan, self.net), self.alg, saveat=[tspan[1]], sensealg=self.sensealg,
                    dense=False, **self.solve_kwargs)
        return sol.u[-1]

    def log_prob_and_regularization(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """``(log p(x), R)``, each ``(B,)``: ``R = kinetic ∫|f|² dt + jacobian ∫|∂f/∂z|²_F dt`` along
        each member's path (zeros when both weights are 0)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor of shape (batch, d); got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        B, d = x.shape
        regularize = self.kinetic > 0 or self.jacobian > 0
        extra = 3 if regularize else 1
        eps = self._probe(x, generator)
        u0 = torch.cat([x, x.new_zeros(B, extra)] + ([] if eps is None else [eps]), -1)
        rhs = partial(_dynamics, dim=d, trace=self.trace, regularize=regularize)
        t0, t1 = self.tspan
        u = self._solve(u0, (t1, t0), rhs)                     # backwards: from the data to the base
        z0, integral = u[:, :d], u[:, d]                       # ∫_{t1}^{t0} tr = -∫_{t0}^{t1} tr
        logp = self._base(d).log_prob(z0) + integral
        if not regularize:
            return logp, torch.zeros_like(logp)
        # the backward integrals of non-negative integrands are negative
        return logp, -(self.kinetic * u[:, d + 1] + self.jacobian * u[:, d + 2])

    def log_prob(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``log p(x)`` per row of ``x`` ``(B, d)``."""
        return self.log_prob_and_regularization(x, generator)[0]

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.log_prob(x, generator)

    def sample(self, n: int, dim: Optional[int] = None, generator: Optional[torch.Generator] = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` samples ``(n, d)``: base draws carried from ``t0`` to ``t1``. ``dim`` is needed with the
        default base (``N(0, I)`` has no dimension of its own)."""
        if self.base is None:
            if dim is None:
                raise ValueError("sample(n, dim=...) needs the dimension with the default N(0, I) base")
            z0 = StandardNormal(dim).sample((n,), generator=generator, dtype=dtype)
        else:
            z0 = self.base.sample((n,))
        return self._solve(z0, self.tspan, _flow)
