"""Initial values of mass-matrix DAEs: checked (the default) or made consistent, as
OrdinaryDiffEq.jl's ``initializealg`` (``CheckInit``, ``BrownFullBasicInit``).

The algebraic equations of ``M du/dt = f(u, p, t)`` are ``Nᵀ f(u, p, t0) = 0`` with ``N`` spanning the
left null space of ``M``; the algebraic variables are the components along its right null space
``V``. ``BrownFullBasicInit`` (Brown, Hindmarsh & Petzold 1998, with the differential variables
held) solves ``Nᵀ f(u0 + V z) = 0`` for ``z`` by Newton's method, then takes one more Newton step in
the autograd graph: the result has the implicit function theorem's derivatives with respect to
``u0`` and ``p``, ``du = (I - V (NᵀJV)⁻¹ NᵀJ) du0 - V (NᵀJV)⁻¹ Nᵀ f_p dp``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["CheckInit", "BrownFullBasicInit"]


class AbstractInitialization:
    """How ``solve`` treats the initial values of a problem with a singular mass matrix."""


@dataclass(frozen=True)
class CheckInit(AbstractInitialization):
    """Refuse an inconsistent ``u0`` with an error naming the algebraic equations (the default)."""


@dataclass(frozen=True)
class BrownFullBasicInit(AbstractInitialization):
    """Solve the algebraic equations for the algebraic variables, the differential ones held.

    Arguments:
        abstol: the largest residual ``|Nᵀ f(u0, p, t0)|`` accepted (default: the solve's ``abstol``,
            its largest entry).
        maxiters: Newton iterations before giving up with an error.
    """

    abstol: Optional[float] = None
    maxiters: int = 30

    def __post_init__(self):
        if self.abstol is not None and (isinstance(self.abstol, bool) or not isinstance(self.abstol, numbers.Real)
                                        or not self.abstol > 0):
            raise ValueError(f"BrownFullBasicInit: abstol must be a positive number; got {self.abstol!r}")
        if isinstance(self.maxiters, bool) or not isinstance(self.maxiters, numbers.Integral) or self.maxiters < 1:
            raise ValueError(f"BrownFullBasicInit: maxiters must be a positive integer; got {self.maxiters!r}")


def null_spaces(M: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(N, V)``: orthonormal bases of the left and right null spaces of ``M`` (n, r each)."""
    U, S, Vh = torch.linalg.svd(M)
    top = float(S.max()) if S.numel() else 0.0
    null = S <= 1e-12 * top if top > 0 else torch.ones_like(S, dtype=torch.bool)
    return U[:, null], Vh[null].T


def algebraic_residual(prob, u: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """``Nᵀ f(u, p, t0)`` per member, ``(B, r)``."""
    t0 = torch.full(u.shape[:-1], prob.tspan[0], dtype=torch.float64, device=u.device)
    f0 = prob.f(u, prob.p, t0)
    return f0.reshape(-1, f0.shape[-1]) @ N.to(dtype=f0.dtype, device=f0.device)


def brown_full_basic_init(prob, init: BrownFullBasicInit, abstol: float) -> torch.Tensor:
    """A consistent ``u0`` for ``prob`` (differentiable with respect to ``u0`` and ``p``);
    ``abstol`` is the solve's, used unless ``init`` has its own."""
    tol = init.abstol if init.abstol is not None else abstol
    N, V = null_spaces(prob.mass_matrix)
    u0 = prob.u0
    if N.shape[1] == 0:
        return u0
    dtype, dev = u0.dtype, u0.device
    N, V = N.to(dtype=dtype, device=dev), V.to(dtype=dtype, device=dev)
    n = u0.shape[-1]
    flat0 = u0.detach().reshape(-1, n)
    B = flat0.shape[0]

    def reduced_jacobian(u_flat):
        # Nᵀ J V per member, from one reverse pass per algebraic equation over the whole batch
        rows = []
        with torch.enable_grad():
            x = u_flat.detach().requires_grad_(True)
            r = algebraic_residual(prob, x.reshape(u0.shape), N)
            for k in range(r.shape[1]):
                (g,) = torch.autograd.grad(r[:, k].sum(), x, retain_graph=k < r.shape[1] - 1)
                rows.append(g @ V)
        return torch.stack(rows, 1)                                          # (B, r, r)

    z = torch.zeros(B, V.shape[1], dtype=dtype, device=dev)
    with torch.no_grad():
        for it in range(init.maxiters + 1):
            u = flat0 + z @ V.T
            r = algebraic_residual(prob, u.reshape(u0.shape), N)
            worst = float(r.abs().max())
            if not worst == worst or worst <= tol:      # NaN, or converged
                break
            if it == init.maxiters:
                break
            z = z - _solve(reduced_jacobian(u), r)
    if not worst <= tol:
        raise ValueError(f"BrownFullBasicInit: the algebraic equations did not converge from u0 (residual "
                         f"{worst:.3g} after {it} Newton iterations, abstol={tol:g}); start from a u0 "
                         f"closer to consistent values or raise maxiters")
    u_star = flat0 + z @ V.T
    Jr = reduced_jacobian(u_star)
    # One Newton step in the graph: its value is u_star, its derivative the implicit function's.
    u_graph = u0.reshape(-1, n) + (z @ V.T).detach()
    r = algebraic_residual(prob, u_graph.reshape(u0.shape), N)
    step = _solve(Jr, r) @ V.T
    return (u_graph - step).reshape(u0.shape)


def _solve(Jr: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    x, info = torch.linalg.solve_ex(Jr, r[..., None])
    if bool((info != 0).any()) or not bool(torch.isfinite(x).all()):
        b = int(torch.nonzero((info != 0) | ~torch.isfinite(x).reshape(x.shape[0], -1).all(-1))[0])
        raise ValueError(f"BrownFullBasicInit: the algebraic equations' Jacobian with respect to the algebraic "
                         f"variables is singular (batch member {b}): the DAE is not index 1 at this state, "
                         f"or u0 is a bad starting guess")
    return x[..., 0]
