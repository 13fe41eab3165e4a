"""``AutoSwitch``: an explicit and a stiff one-step method behind one stepper, chosen per member.

Each batch member is in one mode, non-stiff or stiff. A step runs each sub-stepper on the members
in its mode (the others take zero steps there, which costs nothing extra in a batched call) and
merges the two attempts; a sub-stepper with no member in its mode is not called at all. The
composite owns step-size control (``controls_steps``): each mode has its own controller and
controller memory, as each algorithm of a composite has in DifferentialEquations.jl.

Stiffness detection (OrdinaryDiffEq.jl's ``AutoSwitchCache``, per member): after every attempt,
``ρ`` is the dominant-eigenvalue estimate of that attempt; with the next step size ``h`` the step
counts as stiff when ``ρ h / x > tol`` (``x`` the explicit method's real stability boundary).
Consecutive stiff verdicts count up from 1, consecutive non-stiff ones down from -1; more than
``maxstiffstep`` switches a non-stiff member to the stiff method (``h · dtfac``), fewer than
``-maxnonstiffstep`` switches a stiff member back (``h / dtfac``). The counter is not reset at a
switch, as in OrdinaryDiffEq.jl.

On the explicit method ``ρ`` is the larger of the stage estimate (as OrdinaryDiffEq.jl's Tsit5) and a
power iteration for the dominant eigenvalue of ``∂f/∂u``: every ``_POWER_EVERY``-th attempt one more
evaluation ``(f(y + δv) - f(y)) / δ`` (``δ`` = sqrt(eps) ‖y‖ along the unit direction ``v``), whose
result is the next direction, so the direction carried from step to step converges to the dominant
eigenvector while the solution moves slowly. The stage estimate alone only sees a stiff mode that the
step excites; at tight tolerances the error control keeps the explicit step just inside the stability
boundary, the mode stays quiet, and the member never switched: E5 at rtol 1e-8 took 1e5 Tsit5 steps
by t = 17 of 1e13, OREGO at 1e-10 1e5 by t = 29 of 360, ROBER at 1e-8 6986 steps against Rodas5P's 697
alone (with the power iteration: 2772, 14231 and 706). It costs a quarter of an evaluation per explicit
step on non-stiff problems, whose solution is unchanged.

Dense output concatenates the two methods' continuous extensions: the rows of the mode a member
was not in get zero stages, so ``y + h Σ P_i(θ) K_i`` is that member's own method's interpolant.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from ._explicit_rk import ExplicitRKStepper, lincomb
from ._stepper import AbstractStepper, Attempt

__all__ = ["AutoSwitchStepper", "stability_boundary"]

# One power-iteration evaluation every this many attempts (+1/4 evaluation per explicit step).
_POWER_EVERY = 4


@functools.lru_cache(maxsize=None)
def stability_boundary(tableau) -> float:
    """The explicit method's real stability boundary, computed once per tableau."""
    return tableau.stability_boundary()


def _pad(rows, width):
    return tuple(tuple(r) + (0.0,) * (width - len(r)) for r in rows)


class AutoSwitchStepper(AbstractStepper):
    """Per-solve numerics of ``AutoSwitch``: both sub-steppers, per-member mode and counters."""

    controls_steps = True

    def __init__(self, nonstiff: ExplicitRKStepper, stiff: AbstractStepper, ctrl_nonstiff, ctrl_stiff,
                 stability_size: float, alg):
        self.nonstiff, self.stiff = nonstiff, stiff
        self.ctrls = (ctrl_nonstiff, ctrl_stiff)
        self.stability_size = stability_size
        self.alg = alg
        self.order = max(nonstiff.order, stiff.order)
        self.embedded_order = None
        self.start_order = stiff.order if alg.stiffalgfirst else nonstiff.order
        self.interpolant_order = min(nonstiff.interpolant_order, stiff.interpolant_order)
        width = max(len(r) for r in nonstiff.dense + stiff.dense)
        self.dense = _pad(nonstiff.dense, width) + _pad(stiff.dense, width)
        self._rows = len(nonstiff.dense)
        # g_s - g_(s-1), the difference of the last two stage points, as weights on the stages.
        a, s = nonstiff.a, len(nonstiff.a)
        pad = lambda row: list(row) + [0.0] * (s - len(row))  # noqa: E731
        self._eig_weights = [x - y for x, y in zip(pad(a[s - 1]), pad(a[s - 2]))]
        self._mode = None          # (B,) bool: stiff
        self._any = (not alg.stiffalgfirst, alg.stiffalgfirst)     # any member non-stiff / stiff
        self.nswitch = None
        self._entering = None      # members that switched to the stiff method at the last attempt
        self._power = None         # (B, n): power-iteration direction for the dominant eigenvalue
        self._rho_power = None     # (B,): its latest estimate
        self._attempts = 0

    # ---- work counters and settings forwarded to the stiff method ----------------------------------
    @property
    def njac(self) -> int:
        return self.stiff.njac

    @property
    def nlu(self) -> int:
        return self.stiff.nlu

    @property
    def nsolve(self) -> int:
        return self.stiff.nsolve

    @property
    def reuse_jacobian(self) -> bool:
        return self.stiff.reuse_jacobian

    @reuse_jacobian.setter
    def reuse_jacobian(self, value: bool) -> None:
        self.stiff.reuse_jacobian = value

    @property
    def steps_onto_saveat(self) -> bool:
        return self.nonstiff.steps_onto_saveat or self.stiff.steps_onto_saveat

    def snapshot(self):
        mine = None if self._mode is None else {
            "mode": self._mode, "count": self._count, "states": self._states, "nswitch": self.nswitch,
            "any": self._any, "entering": self._entering, "power": self._power, "rho_power": self._rho_power,
            "attempts": self._attempts}
        return {"own": mine, "nonstiff": self.nonstiff.snapshot(), "stiff": self.stiff.snapshot()}

    def restore(self, state) -> None:
        own = state["own"]
        if own is None:
            self._mode, self.nswitch, self._entering = None, None, None
            self._power = self._rho_power = None
            self._attempts = 0
            self._any = (not self.alg.stiffalgfirst, self.alg.stiffalgfirst)
        else:
            self._mode, self._count, self._states = own["mode"], own["count"], own["states"]
            self.nswitch, self._any, self._entering = own["nswitch"], own["any"], own["entering"]
            self._power, self._rho_power, self._attempts = own["power"], own["rho_power"], own["attempts"]
        self.nonstiff.restore(state["nonstiff"])
        self.stiff.restore(state["stiff"])

    def _setup(self, y: torch.Tensor):
        B, dev = y.shape[0], y.device
        self._mode = torch.full((B,), self.alg.stiffalgfirst, dtype=torch.bool, device=dev)
        self._count = torch.zeros(B, dtype=torch.long, device=dev)
        self._states = tuple(c.init_state(B, dev) for c in self.ctrls)
        self.nswitch = torch.zeros(B, dtype=torch.long, device=dev)

    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        if self._mode is None:
            self._setup(y)
        stiff = self._mode
        zero = torch.zeros_like(hs)
        att_ns = att_st = None
        if self._any[0]:
            hs_ns = hs if not self._any[1] else torch.where(stiff, zero, hs)
            att_ns = self.nonstiff.step(f, t, hs_ns, t_end, y, k1)
        if self._any[1]:
            hs_st = hs if not self._any[0] else torch.where(stiff, hs, zero)
            att_st = self.stiff.step(f, t, hs_st, t_end, y, k1)
        with torch.no_grad():
            rho = self._eigen_estimate(hs, y, att_ns, att_st, stiff)
            if att_ns is not None:
                if self._rho_power is None or self._attempts % _POWER_EVERY == 0:
                    self._rho_power = self._power_estimate(f, t, y, k1, (hs != 0) & ~stiff, att_ns)
                rho = torch.where(stiff, rho, torch.maximum(rho, self._rho_power))
            self._attempts += 1
            moving = hs != 0
        if att_st is None:
            one = att_ns
            return Attempt(y1=one.y1, err=one.err, err_low=one.err_low, f1=one.f1,
                           stages=(att_ns, None, stiff, rho, moving), failed=None, newton_iters=None)
        if att_ns is None:
            one = att_st
            return Attempt(y1=one.y1, err=one.err, err_low=None, f1=one.f1, stages=(None, att_st, stiff, rho, moving),
                           failed=one.failed, newton_iters=one.newton_iters)
        s1 = stiff[:, None]
        y1 = torch.where(s1, att_st.y1, att_ns.y1)
        with torch.no_grad():
            err = torch.where(s1, att_st.err, att_ns.err)
            # DOP853's second estimator: zero for stiff members leaves their error norm as it is.
            err_low = None if att_ns.err_low is None else torch.where(s1, torch.zeros_like(err), att_ns.err_low)
        f1 = None if att_st.f1 is None or att_ns.f1 is None else torch.where(s1, att_st.f1, att_ns.f1)
        failed = None if att_st.failed is None else att_st.failed & stiff
        return Attempt(y1=y1, err=err, err_low=err_low, f1=f1, stages=(att_ns, att_st, stiff, rho, moving), failed=failed,
                       newton_iters=att_st.newton_iters)

    def _eigen_estimate(self, hs, y, att_ns, att_st, stiff) -> torch.Tensor:
        """Per member: ``‖k_s - k_(s-1)‖ / ‖g_s - g_(s-1)‖`` (explicit) or ``‖J‖_∞`` (stiff), float64."""
        rho = torch.zeros(hs.shape, dtype=torch.float64, device=hs.device)
        if att_ns is not None:
            ks = att_ns.stages
            dk = ks[-1] - ks[-2]
            dg = hs.to(y.dtype)[:, None] * lincomb(self._eig_weights, ks)
            num = dk.to(torch.float64).norm(dim=-1)
            den = dg.to(torch.float64).norm(dim=-1)
            rho = torch.where(den > 0, num / den.clamp(min=1e-300), rho)
        if att_st is not None:
            J = self.stiff.jacobian.latest
            if J is not None:
                rho_j = J.to(torch.float64).abs().sum(-1).amax(-1)
                rho = torch.where(stiff, rho_j, rho)
        return rho

    def _power_estimate(self, f, t, y, k1, members, att_ns) -> torch.Tensor:
        """|λ_max| of ``∂f/∂u`` by one power iteration per step, carried across steps: one evaluation."""
        if self._power is None:
            ks = att_ns.stages
            self._power = (ks[-1] - ks[-2]).detach()
        v = self._power
        vn = v.to(torch.float64).norm(dim=-1)
        # A direction that vanished (or never was) restarts from the all-ones vector.
        v = torch.where((vn > 0)[:, None], v, torch.ones_like(v))
        vn = v.to(torch.float64).norm(dim=-1)
        yn = y.to(torch.float64).norm(dim=-1)
        eps = torch.finfo(y.dtype).eps
        delta = (eps ** 0.5) * torch.clamp(yn, min=1e-300)
        ok = members & (vn > 0) & torch.isfinite(vn)
        scale = torch.where(ok, delta / vn.clamp(min=1e-300), torch.zeros_like(vn)).to(y.dtype)
        w = (f(y + scale[:, None] * v, t) - k1) / torch.where(ok, delta, torch.ones_like(delta)).to(y.dtype)[:, None]
        rho = torch.where(ok, w.to(torch.float64).norm(dim=-1), torch.zeros_like(vn))
        finite = torch.isfinite(rho)
        self._power = torch.where((ok & finite & (rho > 0))[:, None], w, v).detach()
        return torch.where(finite, rho, torch.zeros_like(rho))

    def propose(self, ok: torch.Tensor, finite: torch.Tensor, eest: torch.Tensor, h_used: torch.Tensor,
                attempt: Attempt) -> torch.Tensor:
        att_ns, att_st, stiff, rho, moving = attempt.stages
        (c_ns, c_st), (s_ns, s_st) = self.ctrls, self._states
        qa_ns, qr_ns = c_ns.factors(s_ns, eest, h_used, None)
        qa_st, qr_st = c_st.factors(s_st, eest, h_used, attempt.newton_iters)
        q_acc = torch.where(stiff, qa_st, qa_ns)
        q_rej = torch.where(stiff, qr_st, qr_ns)
        qmin = torch.where(stiff, torch.full_like(eest, c_st.qmin), torch.full_like(eest, c_ns.qmin))
        h_next = torch.where(ok, h_used / q_acc, torch.where(finite, h_used / q_rej, h_used * qmin))
        self._states = (c_ns.update(s_ns, ok & ~stiff, eest, h_used), c_st.update(s_st, ok & stiff, eest, h_used))

        # Stiffness verdict for the step to come, counted per attempt.
        judged = moving & finite & torch.isfinite(rho)
        tol = torch.where(stiff, torch.full_like(rho, self.alg.stifftol), torch.full_like(rho, self.alg.nonstifftol))
        is_stiff = rho * h_next / self.stability_size > tol
        count = self._count
        count = torch.where(is_stiff, torch.where(count < 0, 1, count + 1), torch.where(count > 0, -1, count - 1))
        count = torch.where(judged, count, self._count)
        to_stiff = judged & ~stiff & (count > self.alg.maxstiffstep)
        to_nonstiff = judged & stiff & (count < -self.alg.maxnonstiffstep)
        h_next = torch.where(to_stiff, h_next * self.alg.dtfac, torch.where(to_nonstiff, h_next / self.alg.dtfac, h_next))
        switched = to_stiff | to_nonstiff
        self._count = count
        self._mode = stiff ^ switched
        self.nswitch = self.nswitch + switched.long()
        # A method taken up again starts with fresh controller memory (its old steps are long past).
        for k, (c, members) in enumerate(((c_ns, to_nonstiff), (c_st, to_stiff))):
            fresh = c.init_state(members.shape[0], members.device)
            self._states = tuple(
                tuple(torch.where(members, f_, s_) for f_, s_ in zip(fresh, st)) if i == k else st
                for i, st in enumerate(self._states))
        any_ns, any_st = torch.stack([(~self._mode).any(), self._mode.any()]).tolist()
        self._any = (any_ns, any_st)
        self._entering = to_stiff
        if self._rho_power is not None:
            # Back on the explicit method: the estimate from before the stiff stretch is stale.
            self._rho_power = torch.where(to_nonstiff, torch.zeros_like(self._rho_power), self._rho_power)
        return h_next

    def commit(self, ok: torch.Tensor, attempt: Attempt, hs: torch.Tensor) -> None:
        att_ns, att_st, stiff = attempt.stages[:3]
        zero = torch.zeros_like(hs)
        if att_ns is not None:
            self.nonstiff.commit(ok & ~stiff, att_ns, torch.where(stiff, zero, hs))
        if att_st is not None:
            self.stiff.commit(ok & stiff, att_st, torch.where(stiff, hs, zero))
        # Members that switched to the stiff method start it afresh (no history from long ago).
        entering = self._entering
        if entering is not None:
            self.stiff.restart(entering)
            self._entering = None

    def restart(self, members: torch.Tensor) -> None:
        self.nonstiff.restart(members)
        self.stiff.restart(members)

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        att_ns, att_st, stiff = attempt.stages[:3]
        zero = torch.zeros_like(hs)
        B, n = y.shape
        parts = []
        for att, sub, rows, mine in ((att_ns, self.nonstiff, len(self.nonstiff.dense), ~stiff),
                                     (att_st, self.stiff, len(self.stiff.dense), stiff)):
            if att is None:
                parts.append(y.new_zeros(B, rows, n))
                continue
            K = sub.dense_stages(f, t, torch.where(mine, hs, zero), y, att, f1)
            parts.append(torch.where(mine[:, None, None], K, torch.zeros_like(K)))
        return torch.cat(parts, -2)
