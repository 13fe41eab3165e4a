"""The eager fused loop of one problem on the CPU, with its control in Python floats.

Uncompiled, every torch operation costs a few microseconds of dispatch whatever its size. For one
problem the loop's control (where to stop, the error test, the step-size controller, the return
codes: about 90 operations on one-element tensors per iteration) then costs more than the step's
arithmetic. Here the same iteration as :meth:`._fused._FusedLoop.iteration` takes those decisions
on Python floats, with one host read per iteration (the error estimate and a finiteness check,
free on the CPU), and only the step itself runs as tensor code. It records what the tensor loop
records, so the outputs and their gradients are assembled the same way.

The arithmetic is the tensor loop's, in the same order and in float64 (Python floats are IEEE
doubles): the steps, the accept/reject decisions and the return codes are the same, the step sizes
equal up to the last bit of a ``pow``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Tuple

import torch

from .._retcode import ReturnCode
from ..controllers import PIController
from ._controller import attempt_error
from ._integrate import _DTMIN_REL, _MAX_NONFINITE_STREAK

if TYPE_CHECKING:
    from ._fused import _FusedLoop

__all__ = ["scalar_control_applies", "scalar_forward"]


def scalar_control_applies(fl: "_FusedLoop") -> bool:
    """One problem, eager, on the CPU, with integral/PI control (every controller the fused path's
    methods default to) or none."""
    return (not fl.compiled and fl.B == 1 and fl.loop.dev.type == "cpu"
            and (fl.ctrl is None or type(fl.ctrl) is PIController))


def scalar_forward(fl: "_FusedLoop") -> Tuple[tuple, tuple]:
    """``(state, records)`` as :meth:`._fused._FusedLoop.forward` returns them: ``state`` starts with
    ``(t, y, k1, h, done, retcode, iters, naccept, nreject)`` as ``(1,)`` tensors (``(1, n)`` for the
    states), ``records`` the columns ``(t, hs, t_end, y, ok)`` of every iteration."""
    lp, opts, ctrl = fl.loop, fl.opts, fl.ctrl
    f, step_fn, direction, slack = fl.f, fl.step_fn, fl.direction, fl.slack
    stops = fl.stops.tolist()
    last_stop = len(stops) - 1
    hmax, dtmin, maxiters = float(lp.hmax[0]), float(fl.dtmin), int(fl.maxiters)
    t, h, y, k1 = float(lp.t[0]), float(lp.h[0]), lp.y, lp.k1
    done, retcode = bool(lp.done[0]), int(lp.retcode[0])
    iters = naccept = nreject = streak = si = 0
    if ctrl is not None:
        b1, b2, gamma = ctrl.beta1, ctrl.beta2, ctrl.gamma
        q_lo, q_hi, qoldinit = 1.0 / ctrl.qmax, 1.0 / ctrl.qmin, ctrl.qoldinit
        qold = float(lp.ctrl_state[0][0])
    # calls of f per step: the stages after the first (whose last is f at y1 for FSAL methods)
    fsal = fl.stepper.tableau.fsal
    stage_calls = len(fl.stepper.c) - 1

    def as_t(x: float) -> torch.Tensor:
        return torch.tensor([x], dtype=torch.float64)

    rec_t, rec_hs, rec_t_end, rec_y, rec_ok = [], [], [], [], []
    with torch.no_grad():
        while not done:
            stop = stops[min(si, last_stop)]
            dist = direction * (stop - t)
            h_try = min(h, hmax)
            land = h_try * slack >= dist
            h_used = dist if land else h_try
            hs = direction * h_used
            t_new = stop if land else t + hs
            att = step_fn(f.uncounted, as_t(t), as_t(hs), as_t(t_new), y, k1)
            # f at y1 is counted where it is evaluated: in the step (FSAL, or an error estimate
            # that needs it), else below, for an accepted step only
            f.calls += stage_calls + int(not fsal and att.f1 is not None)
            y1 = att.y1
            iters += 1
            # one read: the error estimate, a finiteness check of y1 (max |y1| is NaN or inf unless
            # every entry is finite) and whether the step could be formed
            checks = [y1.abs().amax()]
            if ctrl is not None:
                checks.append(attempt_error(att, y, y1, lp.reltol, lp.abstol, opts.internalnorm)[0])
            if att.failed is not None:
                checks.append(att.failed[0].to(torch.float64))
            values = torch.stack(checks).tolist()
            failed = att.failed is not None and values[-1] != 0.0
            finite = math.isfinite(values[0]) and not failed
            if ctrl is not None:
                eest = values[1]
                finite = finite and math.isfinite(eest)
                ok = finite and eest <= 1.0
                if ok:
                    q = q_lo if eest == 0 else min(max(eest ** b1 / qold ** b2 / gamma, q_lo), q_hi)
                    h_acc = h_used / q
                    # a step shortened to land on a stop says little about the step size to come
                    h = max(h_acc, h_try) if land and h_acc < h_try else h_acc
                    qold = max(eest, qoldinit)
                elif finite:
                    h = h_used / min(max(eest ** b1 / gamma, 1.0), q_hi)
                else:
                    h = h_used * ctrl.qmin
                streak = streak + 1 if not finite else (0 if ok else streak)
                small = not ok and h < max(abs(t) * _DTMIN_REL, dtmin)
                unstable = not ok and not finite and (small or streak >= _MAX_NONFINITE_STREAK)
            else:
                ok = finite
                small = unstable = not ok
            finished = ok and land and si >= last_stop
            out_of_iters = not finished and iters >= maxiters
            if out_of_iters:
                retcode = int(ReturnCode.MaxIters)
            if small:
                retcode = int(ReturnCode.DtLessThanMin)
            if unstable:
                retcode = int(ReturnCode.ConvergenceFailure if failed else ReturnCode.Unstable)
            done = finished or small or unstable or out_of_iters
            rec_t.append(t)
            rec_hs.append(hs if ok else 0.0)
            rec_y.append(y)
            rec_ok.append(ok)
            if ok:
                naccept += 1
                if att.f1 is None:
                    f1 = f.uncounted(y1, as_t(t_new))
                    f.calls += 1
                else:
                    f1 = att.f1
                t, y, k1 = t_new, y1, f1
                si += int(land)
            else:
                nreject += 1
            rec_t_end.append(t)
    fl.iterations += iters

    def column(values, dtype):
        return torch.tensor(values, dtype=dtype).reshape(-1, 1)

    if rec_t:
        records = (column(rec_t, torch.float64), column(rec_hs, torch.float64), column(rec_t_end, torch.float64),
                   torch.stack(rec_y), column(rec_ok, torch.bool))
    else:   # failed at t0
        empty = torch.zeros(0, 1, dtype=torch.float64)
        records = (empty, empty, empty, y.new_zeros(0, 1, y.shape[-1]), torch.zeros(0, 1, dtype=torch.bool))
    long = lambda v: torch.tensor([v], dtype=torch.long)  # noqa: E731
    state = (as_t(t), y, k1, as_t(h), torch.tensor([done]), long(retcode), long(iters), long(naccept),
             long(nreject))
    return state, records
