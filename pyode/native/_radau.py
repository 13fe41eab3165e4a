"""The 3-stage Radau IIA method of order 5 (Hairer & Wanner's RADAU5), batched per member.

E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed., Springer 1996,
Sec. IV.8, and their code ``radau5.f``. With the stage increments ``Z = (Z_1, Z_2, Z_3)``,
``Z_i = Y_i - y``, the collocation equations are ``Z = h (A ⊗ I) F(Z)``. Simplified Newton
iterations with one Jacobian ``J`` per step work on ``W = T⁻¹ Z``, where ``T⁻¹ A⁻¹ T`` is
block diagonal with ``γ`` and ``[[α, -β], [β, α]]``: the ``3n`` linear system splits into

    (γ/h I - J) ΔW_1 = (T⁻¹F)_1 - γ/h W_1
    ((α+iβ)/h I - J) (ΔW_2 + iΔW_3) = (T⁻¹F)_2 + i(T⁻¹F)_3 - (α+iβ)/h (W_2 + iW_3)

one real and one complex LU per step (``nlu`` counts the pair once, as ``radau5.f``'s NDEC;
``nsolve`` counts both solves). ``y1 = y + Z_3`` (stiffly accurate).

Newton control follows ``radau5.f`` per member: starting values extrapolate the previous accepted
step's collocation polynomial (zero at a member's first step); the rate ``θ`` is the ratio of
successive increment norms (geometric mean of the last two from the third iteration on),
``η = θ/(1-θ)`` starts each step at ``max(η_old, eps)^0.8``; a member stops when
``η ‖ΔW‖ ≤ fnewt`` and fails its step (rejected and shrunk by the loop) when ``θ ≥ 0.99``, when
``η ‖ΔW‖ θ^(7-1-k) / fnewt ≥ 1`` predicts no convergence within 7 iterations, on a singular matrix
or non-finite values. Converged members stop updating, so a member's result never depends on the
rest of the batch.

Error estimate (IV.8 (8.19)-(8.20)): ``err = (γ/h I - J)⁻¹ (f(y) + Σ e_i Z_i / h)``, an order-3
estimate filtered so that stiff components do not inflate it. On a member's first step or after a
rejection an estimate above 1 is refined once with ``f(y + err)`` in place of ``f(y)``.

Tolerances as RADAU5 (and OrdinaryDiffEq.jl's ``RadauIIA5``): an order-3 estimate tested against
the user's tolerance would make the order-5 solution far more accurate than asked for, so the
error test and the Newton norm use ``rtol' = 0.1 rtol^(2/3)``, ``atol' = rtol' atol/rtol``. The
loop measures ``err`` against the user's ``atol + rtol |y|``; since the transformed scale is that
one times ``rtol'/rtol``, the stepper returns ``err · rtol/rtol'`` (per component).

Dense output: the collocation polynomial, ``y(t + θh) = y + Σ P_i(θ) Z_i`` (order 3).
"""
from __future__ import annotations

from typing import Callable

import torch

from ._controller import error_norm
from ._jacobian import JacobianEvaluator
from ._stepper import AbstractStepper, Attempt, Differentiable
from .tableaus import radau5 as tab

__all__ = ["RadauStepper"]

_NEWTON_MAXITERS = 7      # radau5.f's NIT
_DIVERGED = 0.99          # a contraction rate at least this is divergence


class RadauStepper(AbstractStepper):
    """Per-solve numerics of RadauIIA5: Newton history per member and work counters."""

    order = 5
    embedded_order = 3
    newton_maxiters = _NEWTON_MAXITERS
    interpolant_order = 3
    dense = tab.DENSE

    def __init__(self, jacobian: JacobianEvaluator, reltol, abstol, mass=None):
        self.jacobian = jacobian
        # M du/dt = f (radau5.f's IMAS = 1): M in place of I in both matrices and in the terms
        # that multiply W and the error estimate's stage combination
        self.mass = mass
        self.reltol, self.abstol = reltol, abstol
        self.nlu = self.nsolve = 0
        self._hist = None          # per-member history, created on the first step

    @property
    def njac(self) -> int:
        return self.jacobian.evaluations

    def _setup(self, y: torch.Tensor):
        B, n = y.shape
        dev, dtype = y.device, y.dtype
        rtol, atol = self.reltol, self.abstol
        if isinstance(rtol, torch.Tensor):
            rtol = self.reltol = rtol.to(device=dev, dtype=dtype)
        if isinstance(atol, torch.Tensor):
            atol = self.abstol = atol.to(device=dev, dtype=dtype)
        # RADAU5's transformed tolerances (module docstring): err is returned times rtol/rtol'.
        self._err_scale = 10.0 * rtol ** (1.0 / 3.0)
        rmin = float(rtol.min()) if isinstance(rtol, torch.Tensor) else rtol
        rt = 0.1 * rmin ** (2.0 / 3.0)   # the strictest component decides
        eps = torch.finfo(dtype).eps
        self._fnewt = max(10.0 * eps / rt, min(0.03, rt ** 0.5))
        self._eps = eps
        self._dense = torch.tensor(tab.DENSE, dtype=dtype, device=dev)
        # (3, 3) @ (B, 3, n) mixes the stages of every member in one product
        self._T = torch.tensor(tab.T, dtype=dtype, device=dev)
        self._TI = torch.tensor(tab.TI, dtype=dtype, device=dev)
        self._E = torch.tensor(tab.E, dtype=dtype, device=dev)
        self._c = torch.tensor(tab.C, dtype=dtype, device=dev)
        self._hist = {
            "Z": torch.zeros(B, 3, n, dtype=dtype, device=dev),      # last accepted step's increments
            "h": torch.ones(B, dtype=torch.float64, device=dev),     # ... and its signed size
            "eta": torch.ones(B, dtype=torch.float64, device=dev),   # ... and Newton's final η
            "any": torch.zeros(B, dtype=torch.bool, device=dev),     # a step was accepted
            "tried": torch.full((B,), float("nan"), dtype=torch.float64, device=dev),  # t of the last attempt
        }

    def snapshot(self):
        if self._hist is None:
            return None         # before the first step
        hist = dict(self._hist)
        hist["Z"] = Differentiable(hist["Z"])
        return {"hist": hist, "jacobian": self.jacobian.snapshot()}

    def restore(self, state) -> None:
        if state is None:
            self._hist = None
            self.jacobian.restore(None)
            return
        # The constants _setup makes stay as the first step of this solve made them.
        self._hist = dict(state["hist"])     # step() updates the dict: never the snapshot's
        self.jacobian.restore(state["jacobian"])

    def _newton_norm(self, dW: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """radau5.f's DYNO: RMS over the 3n components of ``ΔW / (atol' + rtol' |y|)``."""
        with torch.no_grad():
            scale = (self.abstol + self.reltol * y.abs()) / self._err_scale
            return (dW / scale[:, None, :]).to(torch.float64).square().mean((-2, -1)).sqrt()

    def _start(self, hs: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """Starting increments: the last accepted step's collocation polynomial, extrapolated."""
        H = self._hist
        use = moving & H["any"]
        Zold = H["Z"]
        r = torch.where(use, hs / H["h"], torch.zeros_like(hs)).to(Zold.dtype)
        theta = 1.0 + r[:, None] * self._c                                         # (B, 3) on the old step
        powers = theta[..., None] ** torch.arange(1, 4, device=theta.device, dtype=theta.dtype)
        P = powers @ self._dense.T                                            # (B, 3 stages, 3 rows)
        Z0 = P @ Zold - Zold[:, 2:3]                                          # minus the old y1 - y
        return torch.where(use[:, None, None], Z0, torch.zeros_like(Z0))

    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        if self._hist is None:
            self._setup(y)
        H = self._hist
        B, n = y.shape
        dtype = y.dtype
        J, _ = self.jacobian(y, t, k1)
        moving = hs != 0
        h = torch.where(moving, hs, torch.ones_like(hs)).to(dtype)[:, None]    # (B, 1)
        keep3 = moving[:, None, None]

        # One real and one complex matrix per step; members that do not move get the identity.
        eye = torch.eye(n, dtype=dtype, device=y.device)
        M = eye if self.mass is None else self.mass.matrix.to(dtype)
        E1 = torch.where(keep3, (tab.GAMMA / h)[..., None] * M - J, eye)
        ctype = torch.complex128 if dtype == torch.float64 else torch.complex64
        mu = torch.complex(tab.ALPHA / h, tab.BETA / h)[..., None]
        E2 = torch.where(keep3, mu * M.to(ctype) - J.to(ctype), eye.to(ctype))
        mass = self.mass.apply if self.mass is not None else (lambda v: v)
        LU1, piv1, info1 = torch.linalg.lu_factor_ex(E1)
        LU2, piv2, info2 = torch.linalg.lu_factor_ex(E2)
        self.nlu += 1
        failed = moving & ((info1 != 0) | (info2 != 0))

        def solve1(rhs):
            return torch.linalg.lu_solve(LU1, piv1, rhs[..., None])[..., 0]

        Z = self._start(hs, moving)
        W = self._TI @ Z
        ts = [t + tab.C[0] * hs, t + tab.C[1] * hs, t_end]
        with torch.no_grad():
            first = ~H["any"]
            after_reject = t == H["tried"]
            H["tried"] = torch.where(moving, t, H["tried"])   # idempotent if the loop repeats the call
            eta = H["eta"].clamp(min=self._eps) ** 0.8                 # H["eta"] starts at 1
        done = ~moving | failed
        iters = torch.zeros(B, dtype=torch.long, device=y.device)
        dn_old = thq_old = None
        for k in range(1, _NEWTON_MAXITERS + 1):
            iters = iters + (~done).long()
            F = torch.stack([f(y + Z[:, i], ts[i]) for i in range(3)], 1)
            G = self._TI @ F
            dW1 = solve1(G[:, 0] - mass(tab.GAMMA / h * W[:, 0]))
            rhs2 = torch.complex(G[:, 1] - mass((tab.ALPHA * W[:, 1] - tab.BETA * W[:, 2]) / h),
                                 G[:, 2] - mass((tab.BETA * W[:, 1] + tab.ALPHA * W[:, 2]) / h))
            dV = torch.linalg.lu_solve(LU2, piv2, rhs2[..., None])[..., 0]
            self.nsolve += 2
            dW = torch.stack([dW1, dV.real, dV.imag], 1)
            with torch.no_grad():
                dn = self._newton_norm(dW, y)
                bad = ~torch.isfinite(dn)
                if 1 < k < _NEWTON_MAXITERS:
                    thq = dn / dn_old
                    theta = thq if k == 2 else (thq * thq_old).sqrt()
                    thq_old = thq
                    slow = theta >= _DIVERGED
                    eta = torch.where(done | slow, eta, theta / (1 - theta))
                    hopeless = eta * dn * theta ** (_NEWTON_MAXITERS - 1 - k) / self._fnewt >= 1
                    bad = bad | slow | hopeless
                failed = failed | (~done & bad)
                update = ~(done | failed)
            W = torch.where(update[:, None, None], W + dW, W)
            Z = self._T @ W
            with torch.no_grad():
                done = done | failed | (update & (eta * dn <= self._fnewt))
                dn_old = dn.clamp(min=self._eps)
                if bool(done.all()):
                    break
        failed = failed | ~done
        Z = torch.where(keep3 & ~failed[:, None, None], Z, torch.zeros_like(Z))
        y1 = y + Z[:, 2]

        with torch.no_grad():
            tmp = mass((self._E @ Z) / h)
            err = solve1(k1 + tmp)
            self.nsolve += 1
            refine = moving & ~failed & (first | after_reject)
            refine = refine & (error_norm(err * self._err_scale, y, y1, self.reltol, self.abstol) >= 1)
            if bool(refine.any()):
                f0 = f(torch.where(refine[:, None], y + err, y), t)
                err = torch.where(refine[:, None], solve1(f0 + tmp), err)
                self.nsolve += 1
            # finite for every member; a failed member's estimate is never looked at
            err = torch.where(failed[:, None], torch.zeros_like(err), err * self._err_scale)
        return Attempt(y1=y1, err=err, err_low=None, f1=None, stages=(Z, eta), failed=failed,
                       newton_iters=iters)

    def commit(self, ok: torch.Tensor, attempt: Attempt, hs: torch.Tensor) -> None:
        Z, eta = attempt.stages
        H = self._hist
        H["Z"] = torch.where(ok[:, None, None], Z, H["Z"])
        with torch.no_grad():
            H["h"] = torch.where(ok, hs, H["h"])
            H["eta"] = torch.where(ok, eta, H["eta"])
            H["any"] = H["any"] | ok

    def restart(self, members: torch.Tensor) -> None:
        # f jumped (a tstop) or the member comes back from another method: the last collocation
        # polynomial no longer predicts the stages.
        if self._hist is not None:
            self._hist["any"] = self._hist["any"] & ~members

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        h = torch.where(hs != 0, hs, torch.ones_like(hs)).to(y.dtype)[:, None, None]
        return attempt.stages[0] / h             # zero rows for members that did not move
