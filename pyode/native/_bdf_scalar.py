"""The BDF/NDF loop of one problem on the CPU, with its control in Python numbers.

:class:`._bdf.BDFStepper` inside :class:`._integrate.Loop` decides everything per batch member with
``torch.where``: the order, the grid spacing of the differences, the Newton convergence test, the
error test and the next step size. For one problem those are ~250 operations on one-element
tensors per step, a few microseconds each, which cost more than the step's arithmetic on a small
system (scipy's ``BDF``, the serial version of the same scheme, takes its decisions on Python
floats). Here the same iteration takes them on Python numbers, with one host read per Newton
iteration and one per step (free on the CPU), and only the state's arithmetic (predictor,
corrector, Newton increments, the difference table) runs as tensor code, differentiable as in the
reference loop.

The formulas, their order of evaluation and every decision are the stepper's: the same steps, order
changes, Jacobian refreshes and return codes, values equal to round-off. Saving, dense output and
events go through the reference loop's recorders and event handler with one-member tensors.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .._retcode import ReturnCode
from ._bdf import _NEWTON_MAXITER, _MAX_FACTOR, _MIN_FACTOR, _NEWTON_FAIL_FACTOR, BDFStepper
from ._controller import attempt_error
from ._integrate import _DTMIN_REL, _MAX_NONFINITE_STREAK, Loop
from ._iteration_matrix import factorize
from ._saving import SaveatRecorder, StepRecorder

__all__ = ["ScalarBDFLoop", "scalar_bdf_applies"]


def scalar_bdf_applies(loop: Loop) -> bool:
    """One problem with its own step control (adaptive BDF/NDF) on the CPU, without ``tstops``
    (their one-sided evaluations stay in the reference loop)."""
    return (isinstance(loop.stepper, BDFStepper) and loop.B == 1 and loop.dev.type == "cpu" and loop.own_control
            and not loop.any_jumps and not loop.opts.shared_steps)


def _R(factor: float, m: int) -> np.ndarray:
    """Shampine & Reichelt's ``R(ρ)`` restricted to ``m`` rows and columns (orders 0..m-1)."""
    R = np.ones((m, m))
    for i in range(1, m):
        R[i] = R[i - 1] * ((i - 1 - factor * np.arange(m)) / i)
    return R


class ScalarBDFLoop(Loop):
    """:class:`Loop` for one BDF/NDF problem, its iteration on Python numbers (see the module)."""

    @classmethod
    def adopt(cls, loop: Loop) -> "ScalarBDFLoop":
        """This loop in place of a constructed (not yet begun) reference loop, sharing its setup."""
        scalar = object.__new__(cls)
        scalar.__dict__.update(loop.__dict__)
        return scalar

    def begin(self, u0: torch.Tensor, report: bool = True) -> None:
        super().begin(u0, report)
        st: BDFStepper = self.stepper
        self._t, self._h = float(self.t[0]), float(self.h[0])
        self._t_tensor = self.t       # the step start as a tensor: the Jacobian's cache key, as the loop's
        self._done, self._retcode = bool(self.done[0]), int(self.retcode[0])
        self._iters = self._naccept = self._nreject = self._streak = self._si = 0
        self._stops = self.stops.tolist()
        self._hmax = float(self.hmax[0])
        self._dtmin = float(self.opts.dtmin)
        # the stepper's memory
        self._D: Optional[torch.Tensor] = None           # (rows, n) differences; None before the first step
        self._grid = 0.0                                 # their spacing; 0 = no history
        self._k = 1
        self._next_k = 1
        self._n_equal = 0
        self._J = None                                   # (1, n, n)
        self._jac_current = False
        self._W = None
        self._W_c = None
        self._gamma = st._gamma.tolist()
        self._alpha = st._alpha.tolist()
        self._error_const = st._error_const.tolist()
        rtol = st.reltol
        rtol = float(rtol.min()) if isinstance(rtol, torch.Tensor) else float(rtol)
        eps = torch.finfo(self.dtype).eps
        self._newton_tol = max(10 * eps / rtol, min(0.03, rtol ** 0.5))
        self._rows = st.max_order + 3
        # per order k: the rows (orders) 0..k of the differences, and U = R(1) restricted to them
        M = st.max_order + 1
        U = torch.from_numpy(_R(1.0, M))
        self._inside = [(torch.arange(M) <= k).to(torch.float64) for k in range(M)]
        self._U_inside = [(U * m[:, None])[None] for m in self._inside]
        self._below = [(torch.arange(self._rows) <= k).to(self.dtype)[:, None] for k in range(M)]
        self.all_done = self._done

    # ------------------------------------------------------------------------------ the stepper
    def _reinterpolate(self, D: torch.Tensor, factor: float) -> torch.Tensor:
        """``D_{0..k}`` on a grid of spacing ``factor`` times the old one, by the stepper's products
        on its shapes (so that the values agree to the last bit)."""
        M = self.stepper.max_order + 1
        inside = self._inside[self._k]                                        # (M,) float64
        R = torch.from_numpy(_R(factor, M)) * inside[None, :]
        RU = ((R[None] @ self._U_inside[self._k]) * inside[:, None])[0]
        new = torch.einsum("bij,bin->bjn", RU.to(D.dtype)[None], D[None, :M])[0]
        return torch.cat([new[: self._k + 1], D[self._k + 1:]])

    def _factorised(self, c: float, force: bool = False):
        st = self.stepper
        if force or self._W is None or c != self._W_c:
            self._W = factorize(self._J, torch.tensor([c], dtype=torch.float64), 1.0, rosenbrock=False, mass=st.mass)
            self._W_c = c
            st.nlu += 1
        return self._W

    def _jacobian(self, y, t_t, k1):
        st: BDFStepper = self.stepper
        return st._evaluate_jacobian(self.f, y, t_t, k1)

    def _newton(self, t1_t, y_pred, psi, c: float, W, scale):
        """Simplified Newton for ``d``: ``(y, d, converged, iterations)``."""
        st, f, tol = self.stepper, self.f, self._newton_tol
        y, d = y_pred, torch.zeros_like(y_pred)
        converged = False
        n_iter = 0
        dn_old = None
        for it in range(_NEWTON_MAXITER):
            rhs = c * f(y, t1_t) - (psi + d if st.mass is None else st.mass.apply(psi + d))
            dy = W.solve(rhs)
            st.nsolve += 1
            with torch.no_grad():
                dn = float((dy / scale).to(torch.float64).square().mean().sqrt())
            bad = not math.isfinite(dn)
            stalled = False
            if dn_old is not None:
                rate = dn / max(dn_old, 1e-300)
                # round-off (ill-conditioned I - cJ): increments that stop shrinking below the tolerance
                stalled = rate >= 1 and dn <= tol and not bad
                bad = bad or ((rate >= 1 or rate ** (_NEWTON_MAXITER - it) / max(1 - rate, 1e-300) * dn > tol)
                              and not stalled)
            n_iter += 1
            now = dn == 0 or (dn_old is not None and rate / max(1 - rate, 1e-300) * dn < tol)
            if stalled:
                converged = True
                break
            if bad:
                break
            y, d = y + dy, d + dy
            if now:
                converged = True
                break
            dn_old = dn
        return y, d, converged, n_iter

    def _attempt(self, t: float, hs: float, t_end: float, y, k1):
        """One trial step: ``(y1, err, failed, newton_iters, D, d)``."""
        st: BDFStepper = self.stepper
        t_t = self._t_tensor
        if self._grid == 0.0:
            # no history (first step, or restarted at a jump): order 1 from f(y)
            fy = k1 if k1 is not None else self.f(y, t_t)
            D = y.new_zeros(self._rows, y.shape[-1])
            self._D = torch.cat([y, hs * fy, D[2:]])
            self._grid, self._k, self._n_equal = hs, 1, 0
        if hs != self._grid:
            self._D = self._reinterpolate(self._D, hs / self._grid)
            self._grid, self._n_equal = hs, 0
        D, k = self._D, self._k
        alpha_k = self._alpha[k]
        # the stepper's sums over every row, zeros beyond order k (the same rounding)
        y_pred = (D * self._below[k]).unsqueeze(0).sum(1)
        top = st.max_order + 1
        w = torch.tensor([g / alpha_k if j <= k else 0.0 for j, g in enumerate(self._gamma[1:top], 1)],
                         dtype=D.dtype)
        psi = (w[:, None] * D[1:top]).unsqueeze(0).sum(1)
        c = hs / alpha_k
        scale = st.abstol + st.reltol * y_pred.abs()
        if self._J is None:
            self._J = self._jacobian(y, t_t, k1)
            self._jac_current = True
        t1_t = torch.tensor([t_end], dtype=torch.float64)
        W = self._factorised(c)
        singular = bool(W.singular[0])
        y1, d, converged, n_iter = (y_pred, torch.zeros_like(y_pred), False, 0) if singular else \
            self._newton(t1_t, y_pred, psi, c, W, scale)
        if not converged and not self._jac_current:
            # failed with an old Jacobian: refresh it and try once more
            self._J = self._jacobian(y, t_t, k1)
            self._jac_current = True
            W = self._factorised(c, force=True)
            if not bool(W.singular[0]):
                y1, d, converged, it_r = self._newton(t1_t, y_pred, psi, c, W, scale)
                n_iter += it_r
        err = self._error_const[k] * d
        return y1, err, not converged, n_iter, D, d

    def _propose(self, ok: bool, finite: bool, eest: float, h_used: float, n_iter: int, D, d, y0, y1) -> float:
        k = self._k
        it = max(n_iter, 1)
        # torch evaluates the stepper's scalar / tensor as scalar * (1 / tensor)
        safety = 0.9 * (2 * _NEWTON_MAXITER + 1) * (1.0 / (2 * _NEWTON_MAXITER + it))
        e = max(eest, 1e-300)
        e_pow = _pow(e, -1.0 / (k + 1))
        factor = min(max(safety * e_pow, _MIN_FACTOR), 1.0) if finite else _NEWTON_FAIL_FACTOR
        n_equal = self._n_equal + 1 if ok else 0
        self._next_k = k
        if ok and n_equal >= k + 1:
            st = self.stepper
            ec = self._error_const
            sc = st.abstol + st.reltol * torch.maximum(y0.abs(), y1.abs())
            inf = float("inf")
            norms = []
            if k > 1:
                norms.append((ec[k - 1] * (D[k] + d[0])) / sc)
            if k < st.max_order:
                norms.append((ec[min(k + 1, 5)] * (d[0] - D[k + 1])) / sc)
            values = (torch.cat(norms).to(torch.float64).square().mean(-1).sqrt().tolist() if norms else [])
            e_m = values.pop(0) if k > 1 else inf
            e_p = values.pop(0) if k < st.max_order else inf
            factors = [_pow(max(e_m, 1e-300), -1.0 / max(k, 1)), e_pow, _pow(max(e_p, 1e-300), -1.0 / (k + 2))]
            factors = [x if not math.isnan(x) else 0.0 for x in factors]
            best = max(range(3), key=lambda i: (factors[i], -i))
            self._next_k = k + best - 1
            factor = min(safety * factors[best], _MAX_FACTOR)
            n_equal = 0
        elif ok:
            factor = 1.0
        self._n_equal = n_equal
        return h_used * factor

    def _commit(self, D, d, y1) -> None:
        k = self._k
        suffix = D[: k + 1].flip(0).cumsum(0).flip(0) + d
        new = torch.cat([y1, suffix[1:], d, d - D[k + 1: k + 2], D[k + 3:]])
        self._D = new
        self._k = self._next_k
        self._jac_current = False

    def _stages(self, hs: float, order: int) -> torch.Tensor:
        """The dense output's ``K`` (1, max_order, n): ``D_j / h`` of the committed differences."""
        mo = self.stepper.max_order
        K = self._D[1: mo + 1] / hs
        if order < mo:
            K = torch.cat([K[:order], torch.zeros_like(K[order:])])
        return K[None]

    # ------------------------------------------------------------------------------- the loop
    def iterate(self) -> None:
        opts, direction = self.opts, self.direction
        self.n_iter += 1
        stop = self._stops[min(self._si, self.n_stops - 1)]
        t, h, y, k1 = self._t, self._h, self.y, self.k1
        dist = direction * (stop - t)
        h_try = min(h, self._hmax)
        land = h_try * self.slack >= dist
        h_used = dist if land else h_try
        hs = direction * h_used
        t_new = stop if land else t + hs
        order = self._k
        y1, err, failed, n_iter, D, d = self._attempt(t, hs, t_new, y, k1)
        self._iters += 1
        with torch.no_grad():
            e_t = attempt_error(_Err(err), y, y1, self.reltol, self.abstol, opts.internalnorm)
            e_max, eest = torch.stack([y1.abs().amax().to(torch.float64), e_t[0]]).tolist()
        finite = math.isfinite(e_max) and not failed and math.isfinite(eest)
        ok = finite and eest <= 1.0
        h_next = self._propose(ok, finite, eest, h_used, n_iter, D, d, y, y1)
        if ok:
            h = max(h_next, h_try) if land and h_next < h_try else h_next
        else:
            h = h_next
        self._streak = self._streak + 1 if not finite else (0 if ok else self._streak)
        small = not ok and h < max(abs(t) * _DTMIN_REL, self._dtmin)
        unstable = not ok and not finite and (small or self._streak >= _MAX_NONFINITE_STREAK)
        finished = ok and land and self._si >= self.n_stops - 1
        out_of_iters = not finished and self._iters >= opts.maxiters
        if out_of_iters:
            self._retcode = int(ReturnCode.MaxIters)
        if small:
            self._retcode = int(ReturnCode.DtLessThanMin)
        if unstable:
            self._retcode = int(ReturnCode.ConvergenceFailure if failed else ReturnCode.Unstable)
        self._done = finished or small or unstable or out_of_iters
        self._h = h
        if not ok:
            self._nreject += 1
            self.all_done = self._done
            self._report()
            return
        self._naccept += 1
        self._commit(D, d, y1)
        saver, dense_rec, events = self.saver, self.dense_rec, self.events
        if isinstance(saver, SaveatRecorder):
            nxt = saver.next_together
            due = nxt < saver.T and direction * (saver._ts_list[nxt] - t_new) <= 0
        else:
            due = isinstance(saver, StepRecorder)
        K = self._stages(hs, order) if (due and saver.needs_stages) or dense_rec is not None or events is not None \
            else None
        t_rec, y_rec, ev, y_next, k1_next = t_new, y1, None, y1, None
        if events is not None or dense_rec is not None or (due and not isinstance(saver, SaveatRecorder)):
            one = torch.ones(1, dtype=torch.bool)
            t_t, hs_t, t_new_t = (torch.tensor([v], dtype=torch.float64) for v in (t, hs, t_new))
        if events is not None:
            ev = events.after_step(one, t_t, hs_t, y, t_new_t, y1, K, self.dense_coef, torch.tensor([land]))
            if ev is not None:
                t_rec, y_rec = float(ev.t_cut[0]), ev.y_cut
        if due or ev is not None:
            if ev is None and isinstance(saver, SaveatRecorder):
                saver.record_together(t, hs, y, t_new, y1, K, self.dense_rows)
            else:
                t_rec_t = torch.tensor([t_rec], dtype=torch.float64)
                saver.record(one, t_t, hs_t, y, t_rec_t, y_rec, K, self.dense_coef)
                if isinstance(saver, SaveatRecorder):
                    # one member: its save index is everyone's, so the scalar recorder carries on
                    saver.next_together = int(saver.next[0])
                elif ev is not None and isinstance(saver, StepRecorder) and bool(ev.changed.any()):
                    saver.record(one, t_t, hs_t, y, t_rec_t, ev.y_after, K, self.dense_coef)
        if dense_rec is not None:
            dense_rec.record(one, t_t, hs_t, y, K, None if ev is None else torch.tensor([t_rec], dtype=torch.float64))
        cut = False
        if ev is not None:
            cut = bool(ev.cut[0])
            k1_next = self._after_events_scalar(ev, t_rec)
            y_next = ev.y_after
        self.y, self.k1 = y_next, k1_next
        self._t = t_rec
        self._t_tensor = torch.tensor([t_rec], dtype=torch.float64)
        self._si += int(land and not cut)
        self.all_done = self._done
        self._report()

    def _report(self) -> None:
        if self.bar is not None:
            bar = self.bar
            bar.update((bar.total if self._done else self.direction * (self._t - self.opts.t0)) - bar.n)

    def _after_events_scalar(self, ev, t_rec: float):
        terminated = bool(ev.terminated[0])
        reopened = bool(ev.cut[0]) and not terminated and self._done and self._retcode == int(ReturnCode.Success)
        if reopened and self._iters >= self.opts.maxiters:
            self._retcode = int(ReturnCode.MaxIters)
            reopened = False
        self._done = (self._done and not reopened) or terminated
        if terminated:
            self._retcode = int(ReturnCode.Terminated)
        if bool(ev.moving[0]):
            self._grid = 0.0          # the state jumped: BDF history restarts at order 1
            return self.f(ev.y_after, torch.tensor([t_rec], dtype=torch.float64))
        return None

    def close(self) -> None:
        def long(v):
            return torch.tensor([v], dtype=torch.long)
        self.t = torch.tensor([self._t], dtype=torch.float64)
        self.h = torch.tensor([self._h], dtype=torch.float64)
        self.done = torch.tensor([self._done])
        self.retcode = long(self._retcode)
        self.iters, self.naccept, self.nreject = long(self._iters), long(self._naccept), long(self._nreject)
        super().close()


def _pow(x: float, y: float) -> float:
    """``x ** y`` by torch's tensor-exponent kernel, as the stepper computes it: C's ``pow`` (and
    torch's scalar-exponent kernel, which takes ``rsqrt`` for -1/2) differ from it in the last bit
    for ~5 % of arguments, and the step sizes then equal the reference loop's exactly."""
    return torch.tensor([x], dtype=torch.float64).pow(torch.tensor([y], dtype=torch.float64)).item()


class _Err:
    """The fields of an :class:`Attempt` that :func:`attempt_error` reads."""

    __slots__ = ("err", "err_low")

    def __init__(self, err):
        self.err, self.err_low = err, None
