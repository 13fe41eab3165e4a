"""The native engine's integration loop, batched per member, for any :class:`AbstractStepper`.

Every batch member carries its own time, step size, controller memory and return code; one loop
iteration attempts one step for all members at once and merges the outcome with ``torch.where``.
Members that are finished take zero-length steps, so their values stay put and finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from .._problem import check_rhs_output
from .._retcode import ReturnCode
from ._controller import attempt_error, controlled_step, initial_step, shared_error, shared_step
from ._stepper import AbstractStepper, Differentiable
from ._saving import DenseRecorder, EndRecorder, SaveatRecorder, StepRecorder

__all__ = ["SolveOptions", "RawSolution", "integrate", "Loop"]

# A step within 1% of the next stop is stretched to land on it (avoids a sliver of a step after it).
_LAND_SLACK_ADAPTIVE = 1.01
# Fixed steps are only stretched by round-off, so ``dt`` that divides the interval gives equal steps.
_LAND_SLACK_FIXED = 1.0 + 1e-8
# Consecutive non-finite trial steps after which a member is declared Unstable.
_MAX_NONFINITE_STREAK = 10
# A step below 16 eps·|t| no longer moves t reliably: the default dtmin, relative to the current time
# as DifferentialEquations.jl's (not to the span, which would stop a solve over 1e11 at its first
# steps near t0).
_DTMIN_REL = 16 * 2.0 ** -52


def dt_floor(t: torch.Tensor, dtmin: float) -> torch.Tensor:
    """The smallest step a rejected step may shrink to at ``t``: ``max(dtmin, 16 eps |t|)``, per member."""
    return torch.clamp(t.abs() * _DTMIN_REL, min=dtmin)


@dataclass(frozen=True)
class SolveOptions:
    """Validated options of one solve, as the native engine needs them (times are Python floats)."""

    t0: float
    t1: float
    saveat: Optional[torch.Tensor]      # float64 (T,), strictly monotone in the direction of time
    save_steps: bool                    # single problem without saveat: keep every accepted step
    dense: bool
    reltol: object                      # float or tensor broadcastable to (n,)
    abstol: object
    dt: Optional[float]
    adaptive: bool
    maxiters: int
    dtmin: float
    dtmax: float
    tstops: Optional[torch.Tensor]
    progress: bool
    controller: object                  # an AbstractController
    internalnorm: Optional[Callable] = None     # norm of the scaled error (B, n) -> (B,); None: RMS
    shared_steps: bool = False          # one step size for the whole batch (batch_steps="shared")
    callbacks: tuple = ()               # pyode.callbacks objects, flattened
    event_sensitivity: object = None    # ForwardSensitivity's system, for its augmented state's events


@dataclass
class RawSolution:
    t: torch.Tensor            # (T,) float64
    u: torch.Tensor            # (T, B, n)
    retcode: torch.Tensor      # (B,) long
    t_final: torch.Tensor      # (B,) float64: where each member stopped
    dt_final: torch.Tensor     # (B,) float64: the last step size tried
    nf: int
    njac: int
    nlu: int
    nsolve: int
    naccept: torch.Tensor
    nreject: torch.Tensor
    dense: Optional[object]
    nswitch: Optional[torch.Tensor] = None     # (B,) for AutoSwitch
    events: Optional[tuple] = None      # (t, u, callback, index, tau) per member: EventHandler.result
    event_records: Optional[tuple] = None  # (records, discrete_records) of EventHandler, for the adjoints


class _CountingRHS:
    """``f`` on flat ``(B, n)`` states and ``(B,)`` times, counting calls; output cast to the state dtype."""

    def __init__(self, f: Callable, p, batch_shape: torch.Size, n: int):
        self.f, self.p, self.batch_shape, self.n = f, p, tuple(batch_shape), n
        self.flat = len(self.batch_shape) == 1      # (B, n) already is the user's shape
        self.calls = 0
        self.checked = False

    def __call__(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.uncounted(y, t)

    def uncounted(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``f`` for derivative evaluations (Jacobians by AD), which ``nf`` does not count."""
        if self.flat:
            u, out = y, self.f(y, self.p, t)
        else:
            u = y.reshape(*self.batch_shape, self.n)
            out = self.f(u, self.p, t.reshape(self.batch_shape))
        if not self.checked:
            check_rhs_output(out, u)
            self.checked = True
        if out.dtype != y.dtype:
            out = out.to(y.dtype)
        return out if self.flat else out.reshape(y.shape)

    def jac(self, user_jac: Callable) -> Callable:
        """The user's ``jac(u, p, t)`` on flat ``(B, n)`` states, returning ``(B, n, n)``."""
        def flat_jac(y, t):
            u = y if self.flat else y.reshape(*self.batch_shape, self.n)
            J = user_jac(u, self.p, t if self.flat else t.reshape(self.batch_shape))
            if not isinstance(J, torch.Tensor) or J.shape != (*u.shape, self.n):
                got = tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__
                raise ValueError(f"jac returned {got} for u of shape {tuple(u.shape)}; "
                                 f"jac(u, p, t) must return shape {(*u.shape, self.n)}")
            return J.reshape(y.shape[0], self.n, self.n).to(y.dtype)
        return flat_jac

    def tgrad(self, user_tgrad: Callable) -> Callable:
        """The user's ``tgrad(u, p, t)`` on flat ``(B, n)`` states, returning ``(B, n)``."""
        def flat_tgrad(y, t):
            u = y if self.flat else y.reshape(*self.batch_shape, self.n)
            d = user_tgrad(u, self.p, t if self.flat else t.reshape(self.batch_shape))
            if not isinstance(d, torch.Tensor) or d.shape != u.shape:
                got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"tgrad returned {got} for u of shape {tuple(u.shape)}; "
                                 f"tgrad(u, p, t) must return ∂f/∂t with the shape of u")
            return d.reshape(y.shape).to(y.dtype)
        return flat_tgrad


def _stops(opts: SolveOptions, direction: float, use_saveat: bool, device):
    """Times every member must step onto, sorted in the direction of integration, ending at t1.

    Returns ``(stops, jump)``: ``jump`` marks user ``tstops``, where ``f`` may be discontinuous in
    ``t``; the step ending there evaluates ``f`` just before the stop and the next step restarts
    from ``f`` just after it (as torchdiffeq's ``perturb`` does).
    """
    def as_t(x):
        return x.to(device=device, dtype=torch.float64)

    pieces = [torch.tensor([opts.t1], dtype=torch.float64, device=device)]
    if use_saveat and opts.saveat is not None:
        pieces.append(as_t(opts.saveat))
    stops = torch.unique(torch.cat(pieces + ([as_t(opts.tstops)] if opts.tstops is not None else [])))
    stops = stops[direction * (stops - opts.t0) > 0]
    if direction < 0:
        stops = stops.flip(0)
    if opts.tstops is None:
        jump = torch.zeros_like(stops, dtype=torch.bool)
    else:
        jump = torch.isin(stops, as_t(opts.tstops)) & (stops != opts.t1)
    return stops, jump


def integrate(f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable[..., AbstractStepper],
              opts: SolveOptions, batch_shape: torch.Size) -> RawSolution:
    """Integrate; ``make_stepper(rhs)`` builds the method's stepper around the counting flat RHS."""
    loop = Loop(f_user, u0, p, make_stepper, opts, batch_shape)
    from ._bdf_scalar import ScalarBDFLoop, scalar_bdf_applies

    if scalar_bdf_applies(loop):
        loop = ScalarBDFLoop.adopt(loop)
    loop.begin(u0)
    while not loop.all_done:
        loop.iterate()
    loop.close()
    return loop.result()


class Loop:
    """The integration loop as an object: everything one iteration reads or writes is an attribute.

    ``begin`` sets up the initial state, ``iterate`` runs one loop iteration (one trial step of every
    member), ``close`` finishes the recorders and ``result`` assembles the :class:`RawSolution`.
    Keeping the state in one place is what lets checkpointed DirectAdjoint (:mod:`._checkpoint`)
    snapshot it between iterations (:meth:`snapshot`) and resume from a snapshot (:meth:`restore`).
    """

    def __init__(self, f_user: Callable, u0: torch.Tensor, p, make_stepper: Callable[..., AbstractStepper],
                 opts: SolveOptions, batch_shape: torch.Size):
        n = u0.shape[-1]
        self.n = n
        self.B, self.dev, self.dtype = u0.numel() // n, u0.device, u0.dtype
        B, dev = self.B, self.dev
        self.opts, self.batch_shape = opts, batch_shape
        self.direction = direction = 1.0 if opts.t1 > opts.t0 else -1.0
        self.f = _CountingRHS(f_user, p, batch_shape, n)
        self.stepper = stepper = make_stepper(self.f)
        self.dense_coef = torch.tensor(stepper.dense, dtype=torch.float64, device=dev)
        self.dense_rows = [list(row) for row in stepper.dense]
        reltol, abstol = opts.reltol, opts.abstol
        if isinstance(reltol, torch.Tensor):
            reltol = reltol.to(device=dev, dtype=self.dtype)
        if isinstance(abstol, torch.Tensor):
            abstol = abstol.to(device=dev, dtype=self.dtype)
        self.reltol, self.abstol = reltol, abstol
        self.stops, self.jump = _stops(opts, direction, stepper.steps_onto_saveat, dev)
        self.n_stops = self.stops.shape[0]
        self.any_jumps = bool(self.jump.any())
        self.toward_end = torch.tensor(direction * float("inf"), dtype=torch.float64, device=dev)
        self.hmax = torch.full((B,), opts.dtmax, dtype=torch.float64, device=dev)
        self.ctrl = (opts.controller.resolve(stepper.order, stepper.embedded_order or stepper.order,
                                             stepper.newton_maxiters) if opts.adaptive else None)
        self.own_control = opts.adaptive and stepper.controls_steps
        # Without error control nothing would catch a step spoiled by a stale Jacobian.
        stepper.reuse_jacobian = opts.adaptive
        self.slack = _LAND_SLACK_ADAPTIVE if opts.adaptive else _LAND_SLACK_FIXED
        self.zeros_b = torch.zeros(B, dtype=torch.float64, device=dev)
        self.no_member = torch.zeros(B, dtype=torch.bool, device=dev)
        self.single = len(batch_shape) == 0
        self.bar = None
        self.events = None
        if opts.callbacks:
            from ._events import EventHandler
            self.events = EventHandler(opts.callbacks, self.f, p, batch_shape, n, B, direction,
                                       sensitivity=opts.event_sensitivity)
        # The stepper as constructed, before any step: begin() returns it to this state.
        self._fresh_stepper = stepper.snapshot()

    def begin(self, u0: torch.Tensor, report: bool = True) -> None:
        """The state before the first iteration: ``f`` at ``t0``, the first step size, the recorders
        (and the progress bar unless ``report`` is off, as for a recomputation)."""
        opts, B, dev, direction = self.opts, self.B, self.dev, self.direction
        f, stepper = self.f, self.stepper
        stepper.restore(self._fresh_stepper)
        y = u0.reshape(-1, self.n)
        t = torch.full((B,), opts.t0, dtype=torch.float64, device=dev)
        if self.events is not None:
            y = self.events.begin(t, y)
        k1 = f(y, t)
        retcode = torch.zeros(B, dtype=torch.long, device=dev)
        done = ~torch.isfinite(k1).all(-1)
        retcode = torch.where(done, ReturnCode.InitialFailure, retcode)
        if opts.dt is not None:
            h = torch.full((B,), min(opts.dt, opts.dtmax), dtype=torch.float64, device=dev)
        else:
            h, _ = initial_step(f, t, y, torch.where(done[:, None], torch.zeros_like(k1), k1), direction,
                                stepper.start_order or stepper.order, self.reltol, self.abstol, self.hmax,
                                opts.internalnorm, ~done if opts.shared_steps else None)
        if opts.shared_steps:
            h = shared_step(h, ~done)
        self.t, self.y, self.k1, self.h = t, y, k1, h
        self.retcode, self.done = retcode, done
        self.ctrl_state = self.ctrl.init_state(B, dev) if self.ctrl is not None else ()
        self.si = torch.zeros(B, dtype=torch.long, device=dev)
        self.iters = torch.zeros(B, dtype=torch.long, device=dev)
        self.naccept = torch.zeros_like(self.iters)
        self.nreject = torch.zeros_like(self.iters)
        self.streak = torch.zeros_like(self.iters)
        if opts.saveat is not None:
            self.saver = SaveatRecorder(opts.saveat.to(dev), direction, B, opts.t0, y)
        elif opts.save_steps:
            self.saver = StepRecorder(opts.t0, y)
        else:
            self.saver = EndRecorder(opts.t0, opts.t1, y)
        self.dense_rec = DenseRecorder() if opts.dense else None
        self.bar = _progress_bar(opts) if opts.progress and report else None
        self.all_done = bool(done.all())
        self.n_iter = 0         # loop iterations so far: where checkpoints are placed

    def iterate(self) -> None:
        """One iteration: every unfinished member attempts one step."""
        opts, direction, stepper, f, ctrl = self.opts, self.direction, self.stepper, self.f, self.ctrl
        stops, n_stops, zeros_b, saver, dense_rec = self.stops, self.n_stops, self.zeros_b, self.saver, self.dense_rec
        t, y, k1, h, done, si = self.t, self.y, self.k1, self.h, self.done, self.si
        reltol, abstol = self.reltol, self.abstol
        ctrl_state, retcode, streak = self.ctrl_state, self.retcode, self.streak
        self.n_iter += 1

        active = ~done
        stop = stops[si.clamp(max=n_stops - 1)]
        dist = direction * (stop - t)
        h_try = torch.minimum(h, self.hmax)
        land = active & (h_try * self.slack >= dist)
        h_used = torch.where(land, dist, h_try)
        # Finished members take zero steps: their values stay put and finite.
        hs = torch.where(active, direction * h_used, zeros_b)
        t_new = torch.where(land, stop, t + hs)
        at_jump = land & self.jump[si.clamp(max=n_stops - 1)] if self.any_jumps else None
        # f at the end of the step: the left limit when the step ends on a discontinuity.
        t_end = torch.where(at_jump, torch.nextafter(t_new, t), t_new) if self.any_jumps else t_new
        att = stepper.step(f, t, hs, t_end, y, k1)
        y1 = att.y1
        self.iters = iters = self.iters + active.long()

        with torch.no_grad():
            # Decide, and update the controller, before touching the differentiable state.
            finite = torch.isfinite(y1).all(-1)
            if att.failed is not None:
                finite = finite & ~att.failed
            if ctrl is not None:
                eest = attempt_error(att, y, y1, reltol, abstol, opts.internalnorm)
                if opts.shared_steps:
                    eest = shared_error(eest, active)
                finite = finite & torch.isfinite(eest)
                ok = active & finite & (eest <= 1.0)
                rejected = active & ~ok
                if self.own_control:
                    h_next = stepper.propose(ok, finite, eest, h_used, att)
                    h_acc = torch.where(land & (h_next < h_try), torch.maximum(h_next, h_try), h_next)
                    h = torch.where(ok, h_acc, torch.where(rejected, h_next, h))
                else:
                    h, ctrl_state = controlled_step(ctrl, ctrl_state, ok, rejected, finite, eest, h, h_used, h_try,
                                                    land, att.newton_iters)
                if opts.shared_steps:
                    h = shared_step(h, active)
                streak = torch.where(rejected & ~finite, streak + 1, torch.where(ok, 0, streak))
                small = rejected & (h < dt_floor(t, opts.dtmin))
                unstable = rejected & ~finite & (small | (streak >= _MAX_NONFINITE_STREAK))
            else:
                ok = active & finite
                rejected = active & ~ok
                small = unstable = rejected
            finished = ok & land & (si >= n_stops - 1)
            out_of_iters = active & ~finished & (iters >= opts.maxiters)
            failed = small | unstable | out_of_iters
            ended = finished | failed
            self.naccept = self.naccept + ok.long()
            self.nreject = self.nreject + rejected.long()
            restart = ok & at_jump if self.any_jumps else self.no_member
            # The only host synchronisation of an ordinary iteration.
            any_ok, all_ok, bad_rejects, any_restart, any_save, any_ended = torch.stack([
                ok.any(), ok.all(), (rejected & ~finite).any(), restart.any(), saver.due(ok, t_new),
                ended.any()]).tolist()
            if any_ended:
                # Persistent failure to form the step (Newton divergence, singular matrix) is a
                # convergence failure; persistent NaN/Inf is instability.
                gave_up = unstable & att.failed if att.failed is not None else self.no_member
                code = torch.where(out_of_iters, ReturnCode.MaxIters, retcode)
                code = torch.where(small, ReturnCode.DtLessThanMin, code)
                code = torch.where(unstable, ReturnCode.Unstable, code)
                retcode = torch.where(gave_up, ReturnCode.ConvergenceFailure, code)
                done = done | ended
                self.all_done = bool(done.all())
        self.h, self.ctrl_state, self.streak, self.retcode, self.done = h, ctrl_state, streak, retcode, done

        if any_ok:
            if bad_rejects:
                # Autograd would multiply the zero gradient of the discarded rows by their NaN/Inf
                # intermediates and poison shared parameters: recompute, moving only accepted members.
                hs = torch.where(ok, hs, zeros_b)
                att = stepper.step(f, t, hs, torch.where(ok, t_end, t), y, k1)
                y1 = att.y1
            stepper.commit(ok, att, hs)
            y_next = y1 if all_ok else torch.where(ok[:, None], y1, y)
            f1 = att.f1
            if f1 is None and stepper.needs_fsal:
                f1 = f(y_next, torch.where(ok, t_end, t))
            k1_next = f1
            if any_restart:
                stepper.restart(restart)
                f_right = f(y_next, torch.nextafter(t_new, self.toward_end))
                k1_next = f_right if f1 is None else torch.where(restart[:, None], f_right, f1)
            K = None
            events = self.events
            if (any_save and saver.needs_stages) or dense_rec is not None or events is not None:
                # Extra stages move only accepted members (finite values for the rest, as above).
                hs_ok = hs if all_ok else torch.where(ok, hs, zeros_b)
                K = stepper.dense_stages(f, t, hs_ok, y, att, f1)  # (B, rows, n)
            t_rec, y_rec, ev = t_new, y1, None
            if events is not None:
                ev = events.after_step(ok, t, hs_ok, y, t_new, y_next, K, self.dense_coef, land)
                if ev is not None:
                    t_rec, y_rec = ev.t_cut, ev.y_cut
            if any_save or ev is not None:
                if (ev is None and opts.shared_steps and all_ok
                        and getattr(saver, "next_together", None) is not None):
                    t_, hs_, t1_ = torch.stack([t[0], hs[0], t_new[0]]).tolist()
                    saver.record_together(t_, hs_, y, t1_, y1, K, self.dense_rows)
                else:
                    saver.record(ok, t, hs, y, t_rec, y_rec, K, self.dense_coef)
                    if ev is not None and isinstance(saver, StepRecorder) and bool(ev.changed.any()):
                        saver.record(ok, t, hs, y, t_rec, ev.y_after, K, self.dense_coef)
            if dense_rec is not None:
                dense_rec.record(ok, t, hs, y, K, None if ev is None else t_rec)
            if ev is not None:
                k1_next = self._after_events(ev, ok, k1_next, t_rec)
                y_next = ev.y_after
            self.y = y_next
            if k1_next is None or k1 is None:
                self.k1 = k1_next
            else:
                self.k1 = k1_next if all_ok else torch.where(ok[:, None], k1_next, k1)
            self.t = torch.where(ok, t_rec, t)
            self.si = si + (ok & land & (ev is None or ~ev.cut)).long()
        if self.bar is not None:
            _advance(self.bar, self.t, self.done, direction, opts.t0)

    def _after_events(self, ev, ok, k1_next, t_rec):
        """Return codes and the stepper after this iteration's events; ``k1`` where the state jumped."""
        terminated = ev.terminated & ok
        # a member cut short of its last stop has not finished; one that terminated has, by request
        reopened = ev.cut & ~terminated & self.done & (self.retcode == ReturnCode.Success)
        # ... unless that was its last allowed attempt (events piling up at a Zeno point end here)
        spent = reopened & (self.iters >= self.opts.maxiters)
        self.retcode = torch.where(spent, ReturnCode.MaxIters, self.retcode)
        reopened = reopened & ~spent
        self.done = (self.done & ~reopened) | terminated
        self.retcode = torch.where(terminated, ReturnCode.Terminated, self.retcode)
        self.all_done = bool(self.done.all())
        jumped = ev.moving & ok
        if bool(jumped.any()):
            self.stepper.restart(jumped)
            k1_after = self.f(ev.y_after, t_rec)
            k1_next = k1_after if k1_next is None else torch.where(jumped[:, None], k1_after, k1_next)
        return k1_next

    def close(self) -> None:
        """After the last iteration: the end values of a batch without saveat, the progress bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if isinstance(self.saver, EndRecorder):
            self.saver.finish(self.y, (self.retcode == ReturnCode.Success) | (self.retcode == ReturnCode.Terminated))

    def result(self) -> RawSolution:
        stepper, t = self.stepper, self.t
        ts, us = self.saver.result(self.single)
        dense_rec = self.dense_rec
        dense = (dense_rec.build(self.dense_coef, self.direction, self.opts.t0, t)
                 if dense_rec and dense_rec.steps else None)
        return RawSolution(t=ts, u=us, retcode=self.retcode, t_final=t, dt_final=self.h, nf=self.f.calls,
                           njac=stepper.njac, nlu=stepper.nlu, nsolve=stepper.nsolve, naccept=self.naccept,
                           nreject=self.nreject, dense=dense, nswitch=getattr(stepper, "nswitch", None),
                           events=None if self.events is None else self.events.result(self.dtype, self.dev),
                           event_records=None if self.events is None else (self.events.records,
                                                                           self.events.discrete_records))

    # ---- checkpointing ----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """The complete loop state between iterations (tensors shared, not copied: the loop never
        writes into a tensor in place). ``y``, ``k1`` and the stepper's history are
        :class:`Differentiable`: they depend on ``u0`` and the parameters through earlier steps."""
        return {"t": self.t, "y": Differentiable(self.y), "k1": Differentiable(self.k1), "h": self.h,
                "retcode": self.retcode, "done": self.done, "ctrl_state": self.ctrl_state, "si": self.si,
                "iters": self.iters, "naccept": self.naccept, "nreject": self.nreject, "streak": self.streak,
                "all_done": self.all_done, "n_iter": self.n_iter, "saver": self.saver.fork(),
                "dense_rec": None if self.dense_rec is None else self.dense_rec.fork(),
                "stepper": self.stepper.snapshot()}

    def restore(self, snap: dict) -> None:
        """Resume from a :meth:`snapshot` (whose ``Differentiable`` parts are already unwrapped).

        The recorders restart empty from the snapshot's position: what they record from here on
        is this part of the solve only. No progress bar: a resumed loop recomputes, it does not
        report."""
        for name in ("t", "y", "k1", "h", "retcode", "done", "ctrl_state", "si", "iters", "naccept", "nreject",
                     "streak", "all_done", "n_iter"):
            setattr(self, name, snap[name])
        self.saver = snap["saver"].fork()
        self.dense_rec = None if snap["dense_rec"] is None else snap["dense_rec"].fork()
        self.stepper.restore(snap["stepper"])
        self.bar = None

    def release(self) -> None:
        """Drop the per-solve state (the stepper back to as constructed); ``begin`` or ``restore``
        sets it up again."""
        self.stepper.restore(self._fresh_stepper)
        self.y = self.k1 = self.saver = self.dense_rec = None

    def outputs(self) -> List[torch.Tensor]:
        """The differentiable values the recorders hold, in a fixed order (saved states first)."""
        return self.saver.outputs() + ([] if self.dense_rec is None else self.dense_rec.outputs())

    def set_outputs(self, values: List[torch.Tensor]) -> None:
        """Replace the values of :meth:`outputs` (same order), e.g. by ones that carry a gradient."""
        m = len(self.saver.outputs())
        self.saver.set_outputs(values[:m])
        if self.dense_rec is not None:
            self.dense_rec.set_outputs(values[m:])


def _progress_bar(opts: SolveOptions):
    from tqdm.auto import tqdm  # only needed when asked for

    return tqdm(total=abs(opts.t1 - opts.t0), desc=f"solve t={opts.t0:g}..{opts.t1:g}", unit="",
                dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")


def _advance(bar, t, done, direction, t0):
    """Progress is that of the slowest unfinished member."""
    remaining = t[~done]
    progress = bar.total if remaining.numel() == 0 else float((direction * (remaining - t0)).min())
    bar.update(progress - bar.n)  # tqdm rate-limits the redraws
