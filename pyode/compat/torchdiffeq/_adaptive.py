"""The adaptive family: torchdiffeq's Runge-Kutta pairs and every pyode method, run by pyode.

Plain solves go through :func:`pyode.solve` (so ``sensealg`` and every pyode algorithm apply).
Integration until an event, and a solve whose ``func`` has torchdiffeq's solver callbacks
(``callback_step``, ``callback_accept_step``, ``callback_reject_step``), drive pyode's integration
loop step by step, as torchdiffeq does; the event is located by bisection on the last step's
interpolant.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch

from ..._problem import ODEProblem
from ..._time_gradient import attach_saved_times, attach_start_time, saved_time_graph
from ..._solve import _default_controller, _native_stepper, _wrap, solve
from ...controllers import IController
from ...native._integrate import Loop, SolveOptions
from ._inputs import Spec

__all__ = ["solve_adaptive", "solve_adaptive_until_event"]

# The options torchdiffeq's adaptive solvers take; 'dtype' sets its time dtype, which is always
# float64 in pyode.
_KNOWN = {"min_step", "max_step", "first_step", "step_t", "jump_t", "safety", "ifactor", "dfactor",
          "max_num_steps", "dtype", "norm"}
_KNOWN_FIXED = {"step_size", "max_num_steps", "norm"}     # a pyode fixed-step algorithm object
_MAX_NUM_STEPS = 2 ** 31 - 1


def _solve_kwargs(spec: Spec, t0: float, t1: float, intervals: int = 1, floor_rtol: bool = True) -> dict:
    """``pyode.solve`` keywords for torchdiffeq's options (warning about the unknown ones, as torchdiffeq).

    ``floor_rtol``: raise rtol to the finest that ``pyode.solve`` accepts for the state's dtype
    (4 eps); off for the compat's own stepping, which runs torchdiffeq's rtol as given."""
    opts = spec.options
    known = _KNOWN if spec.method.alg.adaptive else _KNOWN_FIXED
    unknown = {k: v for k, v in opts.items() if k not in known}
    if unknown:
        warnings.warn(f"{spec.method.solver_name}: Unexpected arguments {unknown}")
    span = abs(t1 - t0)
    rtol = spec.rtol
    if floor_rtol:
        floor = _finest_rtol(spec)
        rtol = rtol.clamp(min=floor) if isinstance(rtol, torch.Tensor) else max(rtol, floor)
    # torchdiffeq counts max_num_steps per output interval; pyode's maxiters bounds the whole solve.
    maxiters = min(int(opts.get("max_num_steps", _MAX_NUM_STEPS)) * max(intervals, 1), 2 ** 62)
    kw = dict(reltol=rtol, abstol=spec.atol, maxiters=maxiters)
    if opts.get("first_step") is not None:
        kw["dt"] = min(abs(float(opts["first_step"])), span)
    if opts.get("max_step") is not None and math.isfinite(float(opts["max_step"])):
        kw["dtmax"] = float(opts["max_step"])
    if opts.get("min_step"):
        kw["dtmin"] = float(opts["min_step"])
    stops = [torch.as_tensor(opts[name], dtype=torch.float64).reshape(-1).cpu()
             for name in ("step_t", "jump_t") if opts.get(name) is not None]
    if stops:
        stops = torch.cat(stops)
        lo, hi = min(t0, t1), max(t0, t1)
        stops = stops[(stops > lo) & (stops < hi)]
        if stops.numel():
            kw["tstops"] = torch.unique(stops)
    tuned = {k: float(opts[k]) for k in ("safety", "dfactor", "ifactor") if k in opts}
    if spec.method.torchdiffeq_defaults or tuned:
        kw["controller"] = IController(gamma=tuned.get("safety", 0.9), qmin=tuned.get("dfactor", 0.2),
                                       qmax=tuned.get("ifactor", 10.0))
    if spec.user_norm or spec.shapes is not None:
        norm, dtype = opts["norm"], spec.y0.dtype
        # pyode hands the scaled error over in float64; torchdiffeq's norms see the state's dtype.
        kw["internalnorm"] = lambda r: torch.stack([torch.as_tensor(norm(row.to(dtype))) for row in r])
    if not spec.method.alg.adaptive:
        # one of pyode's fixed-step methods passed as an object: its step is torchdiffeq's step_size
        if opts.get("step_size") is None:
            raise ValueError(f"method={spec.method.alg!r} takes fixed steps: pass options={{'step_size': ...}} "
                             "(or use torchdiffeq's fixed-grid methods by name, e.g. method='rk4')")
        kw["dt"] = min(abs(float(opts["step_size"])), span)
    return kw


def _finest_rtol(spec: Spec) -> float:
    """The smallest rtol ``pyode.solve`` accepts for the state's dtype."""
    return 4 * torch.finfo(spec.y0.dtype).eps


def _below_resolution(spec: Spec) -> bool:
    rtol = float(spec.rtol.min()) if isinstance(spec.rtol, torch.Tensor) else spec.rtol
    return rtol < _finest_rtol(spec)


def solve_adaptive(spec: Spec, sensealg=None, p=None) -> torch.Tensor:
    """The state at every ``spec.t``: shape ``(T, N)``.

    By ``pyode.solve``; by the compat's own stepping through pyode's loop where ``solve`` cannot
    do what torchdiffeq does: calling the solver callbacks around every step, or an rtol below
    what ``solve`` accepts for the state's dtype (torchdiffeq's default rtol=1e-7 with a float32
    state: torchdiffeq runs it, and so does the drop-in; ``solve`` refuses it as below float32's
    resolution). With ``sensealg`` it is ``solve``, with rtol raised to the finest it accepts.
    """
    t = spec.t
    if len(t) == 1:
        return spec.y0[None]
    if sensealg is None and (spec.callbacks or _below_resolution(spec)):
        return _solve_stepwise(spec)
    func = spec.func

    def f(u, _p, tt):
        return func(tt, u)

    t0, t1 = float(t[0].detach()), float(t[-1].detach())
    tspan = (t[0], t[-1]) if t.requires_grad else (t0, t1)
    prob = ODEProblem(f, spec.y0, tspan, p)
    sol = solve(prob, spec.method.alg, saveat=t, dense=False, sensealg=sensealg,
                **_solve_kwargs(spec, t0, t1, intervals=len(t) - 1))
    return sol.u.to(spec.y0.dtype)


def _make_loop(spec: Spec, kw: dict, t0: float, t1: float, saveat: Optional[torch.Tensor], dense: bool):
    """pyode's integration loop for ``spec`` with :func:`_solve_kwargs`' settings, not yet begun,
    and the problem it solves."""
    alg = spec.method.alg
    reltol, abstol = kw["reltol"], kw["abstol"]
    controller = kw.get("controller") or _default_controller(alg)
    dtmax = min(kw.get("dtmax", math.inf), abs(t1 - t0))
    opts = SolveOptions(t0=t0, t1=t1, saveat=saveat, save_steps=False, dense=dense, reltol=reltol,
                        abstol=abstol, dt=kw.get("dt"), adaptive=alg.adaptive, maxiters=kw["maxiters"],
                        dtmin=kw.get("dtmin", 0.0), dtmax=dtmax, tstops=kw.get("tstops"), progress=False,
                        controller=controller, internalnorm=kw.get("internalnorm"))
    func = spec.func

    def f(u, _p, tt):
        return func(tt, u)

    prob = ODEProblem(f, spec.y0, (t0, t0 + 1.0 if math.isinf(t1) else t1), None)
    loop = Loop(f, spec.y0, None, lambda rhs: _native_stepper(alg, rhs, prob, reltol, abstol, kw.get("controller")),
                opts, torch.Size([]))
    return loop, prob


def _iterate(loop: Loop, callbacks: dict) -> None:
    """One trial step of ``loop``, with torchdiffeq's callbacks around it: ``callback_step`` before
    the step with the proposed step size, then ``callback_accept_step`` or ``callback_reject_step``
    with the step size tried (shortened onto an output, ``step_t`` or ``jump_t`` time)."""
    if not callbacks:
        loop.iterate()
        return
    t0, y0 = loop.t[0], loop.y[0]
    h_try = torch.minimum(loop.h, loop.hmax)[0]
    stop = loop.stops[loop.si.clamp(max=loop.n_stops - 1)][0]
    dist = loop.direction * (stop - t0)
    dt = torch.where(h_try * loop.slack >= dist, dist, h_try)
    if "callback_step" in callbacks:
        callbacks["callback_step"](t0, y0, h_try)
    accepted, rejected = int(loop.naccept[0]), int(loop.nreject[0])
    loop.iterate()
    if int(loop.naccept[0]) > accepted and "callback_accept_step" in callbacks:
        callbacks["callback_accept_step"](t0, y0, dt)
    elif int(loop.nreject[0]) > rejected and "callback_reject_step" in callbacks:
        callbacks["callback_reject_step"](t0, y0, dt)


def _solve_stepwise(spec: Spec) -> torch.Tensor:
    """:func:`solve_adaptive` by pyode's integration loop, one step at a time, so that the solver
    callbacks run around every step. Gradients flow through the steps (as ``pyode.solve``'s default
    ``DirectAdjoint()``), to the output times as well."""
    t = spec.t
    t0, t1 = float(t[0].detach()), float(t[-1].detach())
    kw = _solve_kwargs(spec, t0, t1, intervals=len(t) - 1, floor_rtol=False)
    saveat = t.detach().to(device=spec.y0.device, dtype=torch.float64)
    loop, prob = _make_loop(spec, kw, t0, t1, saveat, dense=False)
    loop.begin(attach_start_time(spec.y0, t[0], prob.f, None))
    while not loop.all_done:
        _iterate(loop, spec.callbacks)
    loop.close()
    raw = loop.result()
    times = saved_time_graph(raw.t, None, None, t, every=False)
    raw.u = attach_saved_times(raw.u.reshape(raw.u.shape[0], -1), times, prob.f, None)
    raw.t = raw.t if times is None else times
    return _wrap(prob, spec.method.alg, raw, True, spec.method.alg.adaptive).u.to(spec.y0.dtype)


def solve_adaptive_until_event(spec: Spec) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(event_t, stack([y0, y(event_t)]))``: step until ``event_fn`` changes sign at a step's end,
    then bisect on that step's interpolant to ``atol`` in time (torchdiffeq's rule). The state at the
    event is differentiable (autograd through the solver); the event time is not (see odeint_event)."""
    t0 = float(spec.t[0].detach())
    y0, event_fn = spec.y0, spec.event_fn
    t0_t = spec.t[0].detach().to(torch.float64)
    with torch.no_grad():
        c0 = event_fn(t0_t.to(y0.dtype), y0)
    if bool(c0 == 0):
        return spec.t[0].detach(), torch.stack([y0, y0])
    sign0 = torch.sign(c0)

    kw = _solve_kwargs(spec, t0, math.inf, floor_rtol=False)
    loop, prob = _make_loop(spec, kw, t0, math.inf, None, dense=True)
    # The state at the event depends on the start time as well (the event time through it).
    loop.begin(attach_start_time(y0, spec.t[0], prob.f, None))
    t_prev = loop.t.clone()
    while True:
        _iterate(loop, spec.callbacks)
        if bool(loop.done.any()):
            _raise_failure(loop, t0)
        if bool((loop.t != t_prev).all()):
            with torch.no_grad():
                c = event_fn(loop.t[0].to(y0.dtype), loop.y[0])
            if bool(torch.sign(c) != sign0):
                break
            t_prev = loop.t.clone()
    dense = loop.dense_rec.build(loop.dense_coef, 1.0, t0, loop.t)
    lo, hi = t_prev[0], loop.t[0]

    def interp(tq: torch.Tensor) -> torch.Tensor:
        return dense(tq.reshape(1).to(torch.float64))[0, 0]

    tol = float(spec.atol) if not isinstance(spec.atol, torch.Tensor) else float(spec.atol.min())
    with torch.no_grad():
        n_bisect = max(0, math.ceil(math.log(max(float(hi - lo), 1e-300) / max(tol, 1e-300)) / math.log(2.0)))
        for _ in range(n_bisect):
            mid = (lo + hi) / 2
            same = torch.sign(event_fn(mid.to(y0.dtype), interp(mid))) == sign0
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid)
        event_t = (lo + hi) / 2
    return event_t, torch.stack([y0, interp(event_t).to(y0.dtype)])


def _raise_failure(loop: Loop, t0: float) -> None:
    from ..._retcode import ReturnCode

    code = ReturnCode(int(loop.retcode[0]))
    raise RuntimeError(f"integration until the event failed ({code.name}) at t={float(loop.t[0]):.6g}, "
                       f"dt={float(loop.h[0]):.3g}, having started at t={t0:g}: the event may never happen "
                       "(check that event_fn changes sign), or the problem needs a stiff method such as 'rodas5p'")
