"""Events inside the integration loop: locating roots on the dense output, cutting the step there,
applying affects, and the differentiable event time.

The loop calls :meth:`EventHandler.after_step` once per iteration with the accepted steps. For each
continuous callback the condition is sampled at ``interp_points`` points of each step's interpolant;
the first wanted sign change is bracketed and refined by the Illinois method to a few ulps of ``t``
(the root on the side before the crossing, DiffEqCallbacks.jl's ``LeftRootFind``). The member's step
is then cut at the earliest root: what is saved ends there, and the next step starts from the state
after the affect.

Gradients (DirectAdjoint: autograd through the loop). The root ``t*`` itself is found without
gradients; it is then given its derivative by the implicit function theorem on
``g(u(t*), p, t*) = 0``: ``δ = -(g - g.detach()) / ġ`` has value 0 and derivative ``dt*/dθ``, with
``ġ = ∂g/∂u f + ∂g/∂t`` at the event. The state at the event is ``u(t*) + f⁻ δ`` and the state the
next step starts from is ``a(u(t*) + f⁻ δ) - f⁺ δ``: the derivative of the flow with respect to the
event time on each side (the saltation matrix of the jump).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from ..callbacks import (ContinuousCallback, DiscreteCallback, PresetTimeCallback, VectorContinuousCallback)
from ._saving import interpolate

__all__ = ["EventHandler", "EventStep"]

# Root refinement: at most this many Illinois/bisection iterations (each halves the bracket at
# least every third iteration, so 150 resolves any float64 step to its last bits).
_MAX_ROOT_ITERS = 150
# The bracket is resolved once its width is below this many ulps of the event time.
_ROOT_ULPS = 4


@dataclass
class EventStep:
    """What the events of one loop iteration change, per member (``(B,)`` masks)."""

    cut: torch.Tensor           # the step ends at an event before its end
    t_cut: torch.Tensor         # where each member's step ends now (t_new where not cut)
    y_cut: torch.Tensor         # the state there, before any affect (y1 where not cut)
    changed: torch.Tensor       # the state jumps at t_cut (an affect ran)
    y_after: torch.Tensor       # the state from t_cut on (the last state of a terminated member)
    terminated: torch.Tensor    # the member stops at t_cut

    @property
    def moving(self) -> torch.Tensor:
        """Members that jumped and go on: their history restarts."""
        return self.changed & ~self.terminated


class EventHandler:
    """Per-solve event state: the sign of every continuous condition at each member's current time,
    and the events found so far."""

    def __init__(self, callbacks: Sequence, f, p, batch_shape, n: int, B: int, direction: float,
                 sensitivity=None):
        #: ForwardSensitivity's system when the loop integrates its augmented state: it carries the
        #: sensitivities across each event (``pre_jump``/``post_jump``), as δ does for autograd
        self.sensitivity = sensitivity
        self.callbacks = tuple(callbacks)
        self.continuous = [(i, cb) for i, cb in enumerate(self.callbacks)
                           if isinstance(cb, (ContinuousCallback, VectorContinuousCallback))]
        self.discrete = [(i, cb) for i, cb in enumerate(self.callbacks)
                         if isinstance(cb, (DiscreteCallback, PresetTimeCallback))]
        self.f, self.p, self.batch_shape, self.n, self.B = f, p, tuple(batch_shape), n, B
        self.direction = direction
        self.single = len(self.batch_shape) == 0
        self.signs: List[torch.Tensor] = []          # per continuous callback: (B, L) in {-1, 0, 1}
        self.values: List[torch.Tensor] = []         # the condition at each member's current state
        self.ends: List[Optional[torch.Tensor]] = []  # the condition at the end of the last step tried
        self.records: List[tuple] = []               # (t with gradient, u at the event, mask, callback, index)
        #: discrete and preset-time affects that ran: (t, u before, mask, callback) for the adjoints
        self.discrete_records: List[tuple] = []

    # ---- calling the user's functions ----------------------------------------------------------
    def _user_u(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(*self.batch_shape, self.n)

    def _user_t(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.batch_shape)

    def condition(self, k: int, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Continuous callback ``k``'s condition as ``(B, L)``."""
        i, cb = self.continuous[k]
        out = cb.condition(self._user_u(y), self.p, self._user_t(t))
        L = cb.length
        want = self.batch_shape if L is None else (*self.batch_shape, L)
        name = type(cb).__name__
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(want):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            per = "one value per batch member" if L is None else f"{L} values per batch member (len={L})"
            raise ValueError(f"{name} (callback {i}): condition(u, p, t) returned {got} for u of shape "
                             f"{tuple(self._user_u(y).shape)}; it must return shape {tuple(want)} ({per})")
        return out.reshape(self.B, L or 1)

    def _check_finite_condition(self, k: int, g: torch.Tensor, ok: torch.Tensor, t: torch.Tensor) -> None:
        bad = ok[:, None] & ~torch.isfinite(g)
        if bool(bad.any()):
            b = int(torch.nonzero(bad.any(-1))[0])
            i, cb = self.continuous[k]
            raise ValueError(f"{type(cb).__name__} (callback {i}): condition(u, p, t) is not finite "
                             f"(batch member {b}, t={float(t[b]):g}); events need a finite condition")

    def _affect(self, i: int, cb, fn: Callable, y: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
                index: Optional[torch.Tensor] = None) -> torch.Tensor:
        args = (self._user_u(y), self.p, self._user_t(t))
        if index is not None:
            args = args + (index.reshape(self.batch_shape),)
        out = fn(*args)
        name = f"{type(cb).__name__} (callback {i})"
        if isinstance(out, tuple) and len(out) == 2:
            if not self.single:
                raise ValueError(f"{name}: affect returned (u, p); a new p is shared by the whole batch, "
                                 f"so it is accepted for one problem only; keep per-member values in the state")
            out, self.p = out
            self.f.p = self.p
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(self._user_u(y).shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{name}: affect returned {got}; it must return the new state, of u's shape "
                             f"{tuple(self._user_u(y).shape)}")
        out = out.reshape(self.B, self.n).to(y.dtype)
        bad = mask & ~torch.isfinite(out).all(-1)
        if bool(bad.any()):
            b = int(torch.nonzero(bad)[0])
            raise ValueError(f"{name}: affect returned non-finite values (batch member {b}, "
                             f"t={float(t[b]):g}); it must return a finite state")
        return out

    def _rate(self, k: int, y: torch.Tensor, t: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
        """``dg/dt = ∂g/∂u f + ∂g/∂t`` along the solution, ``(B, L)``, without a graph."""
        with torch.enable_grad():
            yd = y.detach().requires_grad_(True)
            td = t.detach().clone().requires_grad_(True)
            g = self.condition(k, yd, td)
            L = g.shape[-1]
            rates = []
            for l in range(L):
                gu, gt = torch.autograd.grad(g[:, l].sum(), (yd, td), retain_graph=l < L - 1, allow_unused=True)
                r = torch.zeros(self.B, dtype=torch.float64, device=y.device)
                if gu is not None:
                    r = r + (gu * fy.detach()).sum(-1).to(torch.float64)
                if gt is not None:
                    r = r + gt.to(torch.float64)
                rates.append(r)
        return torch.stack(rates, -1)

    def _sign_after(self, k: int, y: torch.Tensor, t: torch.Tensor, fy: torch.Tensor, at_root: torch.Tensor):
        """The sign of condition ``k`` just after ``t`` from state ``y``: that of ``g``, or of ``ġ``
        where ``g`` sits at its root (``at_root``, (B, L)), so a root left behind is not found again."""
        g = self.condition(k, y, t).detach()
        s = torch.sign(g)
        use_rate = at_root | (s == 0)
        if bool(use_rate.any()):
            s = torch.where(use_rate, torch.sign(self._rate(k, y, t, fy)), s)
        return s

    # ---- the loop's hooks ----------------------------------------------------------------------
    def begin(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Signs at ``t0``; preset-time affects due at ``t0`` run here. Returns the starting state."""
        everyone = torch.ones(self.B, dtype=torch.bool, device=y.device)
        for i, cb in self.discrete:
            if isinstance(cb, PresetTimeCallback) and cb.affect is not None:
                due = everyone & bool(torch.isin(t[:1].cpu(), cb.time_tensor).any())
                if bool(due.any()):
                    self.discrete_records.append((t.clone(), y.detach(), due, i))
                    y = torch.where(due[:, None], self._affect(i, cb, cb.affect, y, t, due), y)
        self.signs, self.values = [], []
        with torch.no_grad():
            for k in range(len(self.continuous)):
                g = self.condition(k, y, t)
                self._check_finite_condition(k, g, everyone, t)
                self.signs.append(torch.sign(g))
                self.values.append(g)
        self.ends = [None] * len(self.continuous)
        return y

    def after_step(self, ok: torch.Tensor, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                   t_new: torch.Tensor, y1: torch.Tensor, K: torch.Tensor, dense: torch.Tensor,
                   land: torch.Tensor) -> Optional[EventStep]:
        """Events in the accepted steps ``t -> t_new`` of the members in ``ok``; ``None`` when none."""
        theta_e, which, comp, up, brackets = self._locate(ok, t, hs, y, y1, K, dense)
        ev = which >= 0
        any_ev = bool(ev.any())
        t_cut, y_cut, y_after = t_new, y1, y1
        changed = torch.zeros_like(ok)
        terminated = torch.zeros_like(ok)
        cut = ev & (theta_e < 1)
        t_here = t_new
        if any_ev:
            t_e = torch.where(ev, t + theta_e * hs, t_new)
            th = torch.where(ev, theta_e, torch.ones_like(theta_e))
            y_e = torch.where(ev[:, None], interpolate(dense, th, y, hs, K), y1)
            y_minus, y_after, changed, terminated = self._fire(ev, which, comp, up, t_e, y_e)
            t_cut = t_e
            y_cut = torch.where(ev[:, None], y_minus, y1)
            t_here = t_e
        # Discrete and preset-time callbacks act where each member now is.
        done_now = terminated
        for i, cb in self.discrete:
            live = ok & ~done_now
            if isinstance(cb, PresetTimeCallback):
                due = live & land & ~cut & torch.isin(t_here, cb.time_tensor.to(t_here.device))
            else:
                due = live & self._discrete_condition(i, cb, y_after, t_here)
            if not bool(due.any()):
                continue
            if cb.affect is not None:
                self.discrete_records.append((t_here.clone(), y_after.detach(), due, i))
                y_new = self._affect(i, cb, cb.affect, y_after, t_here, due)
                y_after = torch.where(due[:, None], y_new, y_after)
                changed = changed | due
            if cb.terminate:
                terminated = terminated | due
                done_now = terminated
        if not any_ev and not bool(changed.any()) and not bool(terminated.any()):
            self._advance_signs(ok)
            return None
        self._refresh_signs(ok, ev, which, comp, brackets, t_here, y1, y_after, changed)
        return EventStep(cut=cut, t_cut=t_cut, y_cut=y_cut, changed=changed, y_after=y_after,
                         terminated=terminated)

    # ---- locating -------------------------------------------------------------------------------
    def _samples(self, t, hs, y, y1, K, dense, P: int):
        """The interpolant at θ = 1/P, ..., 1 (the last is the step's own end state)."""
        thetas = torch.arange(1, P + 1, dtype=torch.float64, device=y.device) / P
        with torch.no_grad():
            Y = interpolate(dense, thetas[:, None].expand(P, self.B), y.detach(), hs, K.detach())
        Y[-1] = y1.detach()
        return thetas, Y

    def _locate(self, ok, t, hs, y, y1, K, dense):
        """Per member: the earliest wanted root (θ, callback k, component, upcrossing?) and the
        bracketing values of each callback's fired component (for the sign after the event)."""
        B, dev = self.B, y.device
        best = torch.full((B,), 2.0, dtype=torch.float64, device=dev)
        which = torch.full((B,), -1, dtype=torch.long, device=dev)
        comp = torch.zeros(B, dtype=torch.long, device=dev)
        up = torch.zeros(B, dtype=torch.bool, device=dev)
        brackets = {}
        cache = {}
        for k, (i, cb) in enumerate(self.continuous):
            P = cb.interp_points
            if P not in cache:
                cache[P] = self._samples(t, hs, y, y1, K, dense, P)
            thetas, Y = cache[P]
            with torch.no_grad():
                G = torch.stack([self.condition(k, Y[j], t + thetas[j] * hs) for j in range(P)])   # (P, B, L)
            self._check_finite_condition(k, G[-1], ok, t + hs)
            self.ends[k] = G[-1]
            S = torch.sign(G)
            if bool((S == self.signs[k]).all()):
                continue            # no sign change anywhere: the common step costs one check
            run = self.signs[k].clone()                                   # (B, L)
            first = torch.full(run.shape, -1, dtype=torch.long, device=dev)
            first_up = torch.zeros(run.shape, dtype=torch.bool, device=dev)
            for j in range(P):
                s = S[j]
                crossing = (run != 0) & (s == -run)
                wanted = crossing & ((cb.direction == 0) | ((cb.direction > 0) & (run < 0))
                                     | ((cb.direction < 0) & (run > 0)))
                new = wanted & (first < 0) & ok[:, None]
                first = torch.where(new, j, first)
                first_up = torch.where(new, run < 0, first_up)
                run = torch.where(s != 0, s, run)
            found = first >= 0
            if not bool(found.any()):
                continue
            # Refine every bracketed component; the earliest root of the member wins.
            L = first.shape[-1]
            for l in range(L):
                mask = found[:, l]
                if not bool(mask.any()):
                    continue
                j = first[:, l].clamp(min=0)
                a = torch.where(j > 0, thetas[(j - 1).clamp(min=0)], torch.zeros_like(hs))
                b = thetas[j]
                gb = G[j, torch.arange(B, device=dev), l]
                # g at the step's start for a crossing in the first interval; a value left at a
                # root by the previous event may carry the wrong sign: then only its side counts
                start = self.values[k][:, l].to(G.dtype)
                before = -torch.sign(gb)
                start = torch.where(torch.sign(start) == before, start, before * torch.finfo(G.dtype).tiny)
                ga = torch.where(j > 0, G[(j - 1).clamp(min=0), torch.arange(B, device=dev), l], start)
                root = self._refine(k, l, mask, a, b, ga, gb, t, hs, y, K, dense)
                earlier = mask & (root < best)
                best = torch.where(earlier, root, best)
                which = torch.where(earlier, k, which)
                comp = torch.where(earlier, l, comp)
                up = torch.where(earlier, first_up[:, l], up)
                brackets[(k, l)] = torch.maximum(ga.abs(), gb.abs())
        return best, which, comp, up, brackets

    def _refine(self, k, l, mask, a, b, ga, gb, t, hs, y, K, dense):
        """Illinois iterations on ``g(θ)`` in ``[a, b]`` (``g(a)`` on the side before the crossing),
        to ``_ROOT_ULPS`` ulps of the event time; returns the left end ``a``."""
        eps = torch.finfo(torch.float64).eps
        scale = torch.maximum(t.abs(), (t + hs).abs())
        tol = torch.clamp(_ROOT_ULPS * eps * scale / hs.abs().clamp(min=1e-300), min=_ROOT_ULPS * eps)
        s_a = torch.sign(ga)
        side = torch.zeros_like(a)              # +1: the last update moved a, -1: moved b
        y_d, K_d = y.detach(), K.detach()
        with torch.no_grad():
            for it in range(_MAX_ROOT_ITERS):
                open_ = mask & ((b - a) > tol)
                if not bool(open_.any()):
                    break
                denom = gb - ga
                rf = torch.where(denom != 0, (a * gb - b * ga) / torch.where(denom != 0, denom, 1.0), 0.5 * (a + b))
                # every third iteration a bisection, so the bracket always shrinks geometrically
                m = 0.5 * (a + b) if it % 3 == 2 else rf
                inside = (m > a) & (m < b) & torch.isfinite(m)
                m = torch.where(inside, m, 0.5 * (a + b))
                m = torch.where(open_, m, a)
                ym = interpolate(dense, m, y_d, hs, K_d)
                gm = self.condition(k, ym, t + m * hs)[:, l].to(ga.dtype)
                before = open_ & (torch.sign(gm) == s_a)
                after = open_ & ~before
                # Illinois: halve the retained end's value when the same end moves twice
                gb = torch.where(before & (side > 0), 0.5 * gb, gb)
                ga = torch.where(after & (side < 0), 0.5 * ga, ga)
                a = torch.where(before, m, a)
                ga = torch.where(before, gm, ga)
                b = torch.where(after, m, b)
                gb = torch.where(after, gm, gb)
                side = torch.where(before, 1.0, torch.where(after, -1.0, side))
        return torch.where(mask, a, torch.full_like(a, 2.0))

    # ---- firing ---------------------------------------------------------------------------------
    def _fire(self, ev, which, comp, up, t_e, y_e):
        """The state at each event with its time sensitivity, the affects, the state after."""
        B = self.B
        f = self.f
        f_minus = f(y_e.detach(), t_e).detach()
        # g at the event, in the graph (u's dependence and p's), and ġ without one
        g_e = torch.zeros(B, dtype=y_e.dtype, device=y_e.device)
        rate = torch.ones(B, dtype=torch.float64, device=y_e.device)
        for k in range(len(self.continuous)):
            mine = ev & (which == k)
            if not bool(mine.any()):
                continue
            g = self.condition(k, y_e, t_e)
            g_k = g.gather(1, comp[:, None]).squeeze(1).to(y_e.dtype)
            g_e = torch.where(mine, g_k, g_e)
            r = self._rate(k, y_e, t_e, f_minus).gather(1, comp[:, None]).squeeze(1)
            rate = torch.where(mine, r, rate)
        if bool((ev & ~(rate != 0)).any()):
            b = int(torch.nonzero(ev & ~(rate != 0))[0])
            i, cb = self.continuous[int(which[b])]
            raise ValueError(f"{type(cb).__name__} (callback {i}): the condition's rate dg/dt is zero at "
                             f"the event (batch member {b}, t={float(t_e[b]):g}); the event time has no "
                             f"derivative there (a tangency, not a crossing)")
        safe = torch.where(ev, rate, torch.ones_like(rate)).to(y_e.dtype)
        delta = torch.where(ev, -(g_e - g_e.detach()) / safe, torch.zeros_like(g_e))
        y_minus = y_e + f_minus * delta[:, None]
        tau = None
        if self.sensitivity is not None:
            y_minus, tau = self.sensitivity.pre_jump(self, y_minus, t_e, f_minus, ev, which, comp, rate)
        y_plus = y_minus
        changed = torch.zeros_like(ev)
        terminated = torch.zeros_like(ev)
        for k, (i, cb) in enumerate(self.continuous):
            mine = ev & (which == k)
            if not bool(mine.any()):
                continue
            index = comp if cb.length is not None else None
            for fn, members in ((cb.affect, mine & up),
                                (cb.affect_neg if cb.affect_neg is not None else cb.affect, mine & ~up)):
                if fn is None or not bool(members.any()):
                    continue
                y_new = self._affect(i, cb, fn, y_minus, t_e, members, index)
                y_plus = torch.where(members[:, None], y_new, y_plus)
                changed = changed | members
            if cb.terminate:
                terminated = terminated | mine
        t_diff = t_e + delta.to(torch.float64)
        self.records.append((t_diff, y_minus, ev.clone(), which.clone(), comp.clone(), tau, up.clone()))
        # A member that goes on starts from the state after the jump, with its dependence on t*; one
        # that stops keeps the state after the affect.
        moving = changed & ~terminated
        y_after = y_plus
        if bool(moving.any()):
            f_plus = f(y_plus.detach(), t_e).detach()
            y_after = torch.where(moving[:, None], y_plus - f_plus * delta[:, None], y_plus)
            if self.sensitivity is not None:
                y_after = self.sensitivity.post_jump(y_after, t_e, f_plus, moving, tau)
        return y_minus, y_after, changed, terminated

    def _discrete_condition(self, i: int, cb, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = cb.condition(self._user_u(y.detach()), self.p, self._user_t(t))
        if isinstance(out, bool) and self.single:
            out = torch.tensor(out, device=y.device)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != self.batch_shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"DiscreteCallback (callback {i}): condition(u, p, t) returned {got}; it must "
                             f"return booleans of the batch shape {self.batch_shape}")
        return out.reshape(self.B).to(device=y.device, dtype=torch.bool)

    # ---- signs ----------------------------------------------------------------------------------
    def _advance_signs(self, ok) -> None:
        """No event: each condition's sign is its last non-zero sign along the step."""
        for k in range(len(self.continuous)):
            g = self.ends[k]
            s = torch.sign(g)
            self.signs[k] = torch.where(ok[:, None] & (s != 0), s, self.signs[k])
            self.values[k] = torch.where(ok[:, None], g, self.values[k])

    def _refresh_signs(self, ok, ev, which, comp, brackets, t_here, y1, y_after, changed) -> None:
        """Signs after events and affects: the fired component's is that just after its root."""
        with torch.no_grad():
            moved = ev | changed
            need_f = bool(moved.any())
            fy = self.f.uncounted(y_after.detach(), t_here) if need_f else None
            for k in range(len(self.continuous)):
                L = self.signs[k].shape[-1]
                at_root = torch.zeros(self.B, L, dtype=torch.bool, device=y1.device)
                for l in range(L):
                    fired = ev & (which == k) & (comp == l)
                    if (k, l) in brackets and bool(fired.any()):
                        g_now = self.condition(k, y_after.detach(), t_here)[:, l].abs()
                        near = g_now <= 1e-10 * brackets[(k, l)].to(g_now.dtype)
                        at_root[:, l] = fired & near
                g_after = self.condition(k, y_after.detach(), t_here)
                s_new = self._sign_after(k, y_after, t_here, fy, at_root) if need_f else torch.sign(g_after)
                s_new = torch.where(s_new == 0, self.signs[k], s_new)
                self.signs[k] = torch.where(ok[:, None], s_new, self.signs[k])
                self.values[k] = torch.where(ok[:, None], g_after, self.values[k])

    # ---- result ---------------------------------------------------------------------------------
    def result(self, dtype: torch.dtype, device):
        """``(t_events, u_events, callback, index, tau)``: per member its continuous events in time
        order, ``(B, E)``, ``(B, E, n)``, ``(B, E)``, ``(B, E)`` padded with NaN / -1 (``E``: the most any
        member had); ``tau`` ``(B, E, m)``, the event times' sensitivities, with a ``sensitivity`` only."""
        B, n = self.B, self.n
        if not self.records:
            empty = torch.zeros(B, 0, dtype=torch.float64, device=device)
            tau = None if self.sensitivity is None else torch.zeros(B, 0, self.sensitivity.m, dtype=dtype, device=device)
            return (empty, torch.zeros(B, 0, n, dtype=dtype, device=device),
                    torch.zeros(B, 0, dtype=torch.long, device=device), torch.zeros(B, 0, dtype=torch.long, device=device),
                    tau)
        T = torch.stack([r[0] for r in self.records], 1)             # (B, R)
        U = torch.stack([r[1] for r in self.records], 1)             # (B, R, n)
        M = torch.stack([r[2] for r in self.records], 1)             # (B, R)
        W = torch.stack([r[3] for r in self.records], 1)
        C = torch.stack([r[4] for r in self.records], 1)
        order = torch.sort((~M).to(torch.int8), dim=1, stable=True).indices
        E = int(M.sum(1).max())
        order = order[:, :E]
        valid = torch.gather(M, 1, order)
        t_ev = torch.where(valid, T.gather(1, order), torch.full_like(T[:, :E], float("nan")))
        u_ev = U.gather(1, order[..., None].expand(B, E, n))
        u_ev = torch.where(valid[..., None], u_ev, torch.full_like(u_ev, float("nan")))
        w_ev = torch.where(valid, W.gather(1, order), -1)
        c_ev = torch.where(valid, C.gather(1, order), -1)
        tau = None
        if self.sensitivity is not None:
            R = torch.stack([r[5] for r in self.records], 1)           # (B, R, m)
            tau = R.gather(1, order[..., None].expand(B, E, R.shape[-1]))
        return t_ev, u_ev, w_ev, c_ev, tau
