"""``solve``: validate the user's options once, dispatch to an engine, wrap the result."""
from __future__ import annotations

import difflib
import math
import numbers
import os
from typing import Any, Callable, Optional

import numpy as np
import torch

from ._problem import ODEProblem
from ._time_gradient import attach_saved_times, attach_start_time, saved_time_graph
from ._retcode import ReturnCode, SolveError
from ._solution import ODESolution, SolverStats
from .algorithms import (AbstractAlgorithm, AbstractBDF, AbstractESDIRK, AbstractExplicitRK, AbstractRosenbrock,
                         AutoSwitch, RadauIIA5, Tsit5)
from .controllers import AbstractController, IController, PIController, PredictiveController
from .sensealg import (AbstractSensitivityAlgorithm, BacksolveAdjoint, DirectAdjoint, ForwardSensitivity, GaussAdjoint,
                       InterpolatingAdjoint, QuadratureAdjoint)

__all__ = ["solve"]

_KEYWORDS = ("saveat", "reltol", "abstol", "dt", "adaptive", "maxiters", "dtmin", "dtmax", "tstops",
             "controller", "throw", "progress", "dense", "sensealg", "backend", "internalnorm", "compile",
             "batch_steps", "callback", "initializealg")
_BACKENDS = ("native", "julia")


def solve(prob: ODEProblem, alg: Optional[AbstractAlgorithm] = None, *, saveat: Any = None,
          reltol: Any = 1e-3, abstol: Any = 1e-6, dt: Optional[float] = None, adaptive: Optional[bool] = None,
          maxiters: int = 100_000, dtmin: Optional[float] = None, dtmax: Optional[float] = None,
          tstops: Any = None, controller: Optional[AbstractController] = None, throw: bool = True,
          progress: bool = False, dense: Optional[bool] = None, sensealg: Optional[AbstractSensitivityAlgorithm] = None,
          backend: str = "native", internalnorm: Optional[Callable] = None, compile: Optional[bool] = None,
          batch_steps: str = "member", callback: Any = None, initializealg: Any = None,
          **unknown) -> ODESolution:
    """Integrate ``prob`` with algorithm ``alg`` (default :class:`Tsit5`).

    Arguments:
        prob: the :class:`ODEProblem`.
        alg: an algorithm object such as ``Tsit5()``, ``Vern7()`` or ``RK4()``.
        saveat: times to save at (a 1-D sequence monotone in the direction of integration, inside
            ``tspan``), or a number ``Δ`` for every ``Δ`` from ``t0`` plus ``t1``. A tensor that
            requires grad, like ``tspan`` entries that do, gives ``sol.u`` (and ``sol.t``) the
            gradient with respect to the times: ``<∂L/∂u(τ), f(u(τ), τ)>`` for a saved time and
            ``-<∂L/∂u0, f(u0, t0)>`` for ``t0`` (that of the exact solution, as torchdiffeq's;
            with every sensealg). Without ``saveat`` the saved step times in between are fixed. Without it, one
            problem saves every accepted step and a batch saves ``t0`` and ``t1`` only (its members
            step on different grids; use ``sol(t)`` or ``saveat`` for anything in between).
        reltol, abstol: tolerances of the error test ``err / (abstol + reltol * max(|u|, |u_new|))``
            (RMS norm over the state); numbers or tensors broadcastable to ``(n,)``. Defaults
            1e-3 / 1e-6 as in DifferentialEquations.jl.
        dt: initial step for adaptive methods (default: Hairer's heuristic), the step of fixed-step ones.
        adaptive: turn error control off for an adaptive method (then ``dt`` is required).
        maxiters: step attempts (accepted + rejected) per member before ``MaxIters``.
        dtmin, dtmax: bounds of the step size. A member whose rejected step falls below
            ``max(dtmin, 16 eps·|t|)`` stops with ``DtLessThanMin``: by default (``dtmin=None``) only
            the floor relative to the current time applies, as in DifferentialEquations.jl, so a
            span of 1e13 still allows tiny steps near ``t0``. ``dtmax`` defaults to ``|t1 - t0|``.
        tstops: times every member must step onto (discontinuities of ``f``).
        controller: step-size controller: :class:`PIController` (DifferentialEquations.jl's gains),
            :class:`IController` or :class:`PredictiveController`. Default: predictive for KenCarp4,
            Kvaerno5 and RadauIIA5, PI for the others (integral with ``batch_steps="shared"``).
        throw: raise :class:`SolveError` when a member fails; ``False`` returns the solution with
            per-member ``retcode`` (saved values a failed member never reached are NaN).
        progress: show a tqdm progress bar over ``t`` (of the slowest member).
        dense: keep dense output for ``sol(t)`` (default: only when ``saveat`` is not given).
        sensealg: how gradients are computed (:mod:`pyode.sensealg`): :class:`DirectAdjoint`
            (default: autograd through the solver), :class:`ForwardSensitivity`,
            :class:`BacksolveAdjoint`, :class:`InterpolatingAdjoint`, :class:`QuadratureAdjoint` or
            :class:`GaussAdjoint`.
        backend: ``"native"`` (default: pyode's own PyTorch solvers) or ``"julia"``
            (DifferentialEquations.jl and SciMLSensitivity.jl through juliacall, same names and
            results; see :mod:`pyode.julia` and the README's section for Julia users).
        internalnorm: the norm of the error test and of the starting-step heuristic, applied to the
            scaled error ``e / (abstol + reltol * max(|u|, |u_new|))`` of shape ``(B, n)`` (one row per
            batch member, ``B = 1`` for one problem) and returning shape ``(B,)``; default RMS over
            the state (DifferentialEquations.jl's ``internalnorm``), e.g. ``lambda e: e.abs().amax(-1)``
            for the max norm. Forward solves only: adjoint solves use their own norms; FBDF/QNDF
            choose their order with RMS norms.
        compile: ``True`` runs the fused path (:mod:`pyode.native._fused`): the step loop as tensor
            code, several steps per ``torch.compile``-d call, and DirectAdjoint gradients assembled
            parallel in time. Explicit Runge-Kutta and Rosenbrock methods (Jacobian by AD or
            ``jac``), with ``saveat`` or ``dense=False`` and the default ``sensealg``; the same steps
            and results as ``False`` up to round-off. The first solve compiles (10-40 s for an
            explicit method, about 30 s for Rodas5P on an analytic ``f``, 25 s through a small
            network); later solves with the same method, ``f`` and shapes reuse it. ``f`` must be traceable (no ``.item()``, no data-dependent Python branches,
            side effects run once per compiled call). ``False``: the reference loop. Default
            (not given): the fused path without ``torch.compile`` for small differentiated solves
            (at most 64 state entries, a gradient in sight), where its parallel-in-time gradient is
            2-3x faster, the reference loop otherwise (README, "The default path"). The environment
            variable ``PYODE_COMPILE`` overrides the default: ``1`` compiles wherever the fused path
            applies, ``eager`` runs it uncompiled wherever it applies, ``0`` never.

        batch_steps: ``"member"`` (default): every batch member takes its own steps under its own
            error control, as independent problems. ``"shared"``: one step size for the whole batch,
            its error and its starting step's norms the RMS over every member's, and integral step
            control unless ``controller`` is given (torchdiffeq's whole-batch semantics, for
            minibatch training): members accept and reject together and land on the save times
            together, at the cost of per-member accuracy guarantees (the error test holds on
            average, not per member) and of the batch's fate (a member that fails fails all).
        callback: events and callbacks (:mod:`pyode.callbacks`): a :class:`ContinuousCallback`,
            :class:`VectorContinuousCallback`, :class:`DiscreteCallback`, :class:`PresetTimeCallback`
            or a :class:`CallbackSet` of them. Events are located per batch member on the dense
            output; ``sol.t_events`` / ``sol.u_events`` list them. Gradients through events with
            every sensealg but BacksolveAdjoint (event times and the states after them included;
            the continuous adjoints for one problem with ``saveat``); the native engine's reference
            loop runs them (``compile=True`` is refused).
        initializealg: for a singular ``prob.mass_matrix``: :class:`~pyode.CheckInit` (default:
            an inconsistent ``u0`` is an error) or :class:`~pyode.BrownFullBasicInit` (the algebraic
            variables are solved for; ``sol.u[0]`` is then the consistent state).

    Returns:
        :class:`ODESolution`.

    Raises:
        TypeError / ValueError naming the argument for bad input; :class:`SolveError` on failure
        when ``throw=True``.
    """
    if unknown:
        name = next(iter(unknown))
        close = difflib.get_close_matches(name, _KEYWORDS, n=1)
        extra = {"rtol": "reltol", "atol": "abstol", "t_eval": "saveat", "method": "alg",
                 "first_step": "dt", "max_step": "dtmax", "min_step": "dtmin"}.get(name)
        suggestion = extra or (close[0] if close else None)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise TypeError(f"solve() got an unknown keyword argument {name!r}{hint} "
                        f"Known keywords: {', '.join(_KEYWORDS)}")
    if not isinstance(prob, ODEProblem):
        raise TypeError(f"prob must be a pyode.ODEProblem; got {type(prob).__name__}")
    alg = _check_alg(alg)
    if backend not in _BACKENDS:
        raise ValueError(f"backend={backend!r} is not available; choose one of {_BACKENDS}")
    explicit_compile = compile is not None
    compile = _compile_mode(compile)
    for name, value in (("throw", throw), ("progress", progress)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False; got {value!r}")

    u0 = prob.u0
    n = u0.shape[-1]
    t0, t1 = prob.tspan
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)

    reltol_v = _tolerance("reltol", reltol, n)
    abstol_v = _tolerance("abstol", abstol, n)
    _check_resolution(reltol_v, u0.dtype)
    if adaptive is None:
        adaptive = alg.adaptive
    elif not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False; got {adaptive!r}")
    if not adaptive and isinstance(alg, AbstractBDF):
        raise ValueError(f"adaptive=False is not supported by {alg!r}: its order and step size control "
                         "cannot be switched off; use a one-step method such as Rodas5P() for fixed steps")
    if adaptive and not alg.adaptive:
        raise ValueError(f"adaptive=True, but {alg!r} is a fixed-step method without an error estimate; "
                         "use an adaptive method such as Tsit5() or drop adaptive")
    dt_v = _positive_float("dt", dt) if dt is not None else None
    if dt_v is not None and dt_v > span * (1 + 1e-12):
        raise ValueError(f"dt={dt!r} is larger than the time span |t1 - t0| = {span:g}; pass a smaller dt")
    if not adaptive and dt_v is None:
        raise ValueError(f"dt is required for a fixed-step solve ({alg!r}"
                         f"{', adaptive=False' if alg.adaptive else ''}); pass e.g. dt={span / 100:g}")
    if isinstance(maxiters, bool) or not isinstance(maxiters, numbers.Integral) or maxiters <= 0:
        raise ValueError(f"maxiters must be a positive integer; got {maxiters!r}")
    # The default floor is relative to the current time (applied per step), not to the span.
    dtmin_v = 0.0 if dtmin is None else _nonnegative_float("dtmin", dtmin)
    dtmax_v = span if dtmax is None else min(_positive_float("dtmax", dtmax), span)
    if dtmin_v >= dtmax_v:
        raise ValueError(f"dtmin={dtmin_v:g} must be smaller than dtmax={dtmax_v:g}")

    if controller is not None and isinstance(alg, AbstractBDF):
        raise ValueError(f"controller= does not apply to {alg!r}: multistep methods choose order and step "
                         "size together; drop the controller argument")
    user_controller = controller
    if controller is None:
        controller = _default_controller(alg, batch_steps == "shared")
    elif not isinstance(controller, AbstractController):
        raise TypeError(f"controller must be pyode.PIController(...), pyode.IController(...) or "
                        f"pyode.PredictiveController(...); got {type(controller).__name__}")
    saveat_v = _saveat(saveat, t0, t1, direction)
    tstops_v = _times("tstops", tstops, t0, t1, direction, sort=True) if tstops is not None else None
    if dense is None:
        dense = saveat_v is None
    elif not isinstance(dense, bool):
        raise TypeError(f"dense must be True, False or None; got {dense!r}")

    sensealg_is_default = sensealg is None
    if sensealg is None:
        sensealg = DirectAdjoint()
    elif isinstance(sensealg, type) and issubclass(sensealg, AbstractSensitivityAlgorithm):
        raise TypeError(f"sensealg must be an instance; got the class {sensealg.__name__}: pass {sensealg.__name__}()")
    elif not isinstance(sensealg, AbstractSensitivityAlgorithm):
        raise TypeError(f"sensealg must be a pyode.sensealg object such as DirectAdjoint() or ForwardSensitivity(); "
                        f"got {type(sensealg).__name__}")

    if batch_steps not in ("member", "shared"):
        raise ValueError(f"batch_steps must be 'member' (each batch member its own steps) or 'shared' (one "
                         f"step size for the whole batch); got {batch_steps!r}")
    if internalnorm is not None and not callable(internalnorm):
        raise TypeError(f"internalnorm must be a function of the scaled error (B, n) -> (B,); "
                        f"got {type(internalnorm).__name__}")
    if internalnorm is not None and isinstance(sensealg, ForwardSensitivity):
        raise ValueError("internalnorm= is not supported with ForwardSensitivity(): its error test runs on the "
                         "state and the sensitivities together; use DirectAdjoint() or an adjoint")

    from .callbacks import PresetTimeCallback, flatten

    callbacks = flatten(callback)
    if callbacks:
        _check_callbacks(callbacks, backend, sensealg, sensealg_is_default, explicit_compile and compile, batch_steps,
                         single_problem=u0.ndim == 1, save_steps=saveat_v is None)
        preset = [cb.time_tensor for cb in callbacks if isinstance(cb, PresetTimeCallback)]
        if preset:
            lo, hi = min(t0, t1), max(t0, t1)
            times = torch.cat(preset)
            times = times[(times >= lo) & (times <= hi)]
            if times.numel():
                tstops_v = torch.unique(times if tstops_v is None else torch.cat([tstops_v, times]))

    from .initialization import AbstractInitialization, BrownFullBasicInit

    if initializealg is not None and not isinstance(initializealg, AbstractInitialization):
        raise TypeError(f"initializealg must be pyode.CheckInit() or pyode.BrownFullBasicInit(); "
                        f"got {type(initializealg).__name__}")
    if prob.mass_matrix is not None:
        if isinstance(initializealg, BrownFullBasicInit) and backend == "native":
            from .initialization import brown_full_basic_init
            tol = float(abstol_v.max()) if isinstance(abstol_v, torch.Tensor) else float(abstol_v)
            prob = prob.remake(u0=brown_full_basic_init(prob, initializealg, tol))
            u0 = prob.u0
        _check_mass_matrix(prob, alg, backend, sensealg, explicit_compile and compile, abstol_v)
    elif initializealg is not None:
        raise ValueError("initializealg applies to problems with a mass_matrix (DAEs); drop it")

    if backend == "julia":
        if explicit_compile and compile:
            raise ValueError("compile=True applies to the native engine; drop it with backend='julia' "
                             "(DifferentialEquations.jl compiles the solve itself)")
        if batch_steps != "member":
            raise ValueError("batch_steps='shared' is not supported by backend='julia' (its batches are "
                             "ensembles of independent solves); drop it or use backend='native'")
        if internalnorm is not None:
            raise ValueError("internalnorm= is not supported by backend='julia' (a Python norm would run "
                             "at every step through the bridge); drop it or use backend='native'")
        from .julia._engine import solve_julia

        raw = solve_julia(prob, alg, saveat=saveat_v, reltol=reltol_v, abstol=abstol_v, dt=dt_v, adaptive=adaptive,
                          maxiters=maxiters, dtmin=None if dtmin is None else dtmin_v,
                          dtmax=None if dtmax is None else dtmax_v, tstops=tstops_v, controller=user_controller,
                          progress=progress, dense=dense, sensealg=sensealg,
                          sensealg_is_default=sensealg_is_default, single=u0.ndim == 1)
        return _wrap(prob, alg, raw, throw, adaptive)
    if getattr(prob.f, "_pyode_julia_only", False):
        raise ValueError("prob.f is written in Julia (pyode.julia.ode_function): solve it with backend='julia', "
                         "or write f in PyTorch for the native engine")

    from .native._integrate import SolveOptions, integrate

    t0_leaf, t1_leaf = prob.time_leaves
    if t0_leaf is not None and t0_leaf.requires_grad and torch.is_grad_enabled():
        # Every sensealg differentiates u0: the start time's gradient is taken from u0's.
        prob = prob.remake(u0=attach_start_time(u0, t0_leaf, prob.f, prob.p))
        u0 = prob.u0
    single = u0.ndim == 1
    opts = SolveOptions(t0=t0, t1=t1, saveat=saveat_v, save_steps=single and saveat_v is None, dense=dense,
                        reltol=reltol_v, abstol=abstol_v, dt=dt_v, adaptive=adaptive, maxiters=int(maxiters),
                        dtmin=float(dtmin_v), dtmax=float(dtmax_v), tstops=tstops_v, progress=progress,
                        controller=controller, internalnorm=internalnorm, shared_steps=batch_steps == "shared",
                        callbacks=callbacks)
    fused = None if callbacks or prob.mass_matrix is not None else _fused_mode(compile, explicit_compile, alg, opts, sensealg, prob)
    if fused is not None:
        from .native._fused import fused_integrate

        raw = fused_integrate(prob.f, u0, prob.p,
                              lambda rhs: _native_stepper(alg, rhs, prob, reltol_v, abstol_v, user_controller),
                              opts, prob.batch_shape, compiled=fused == "compiled")
    elif isinstance(sensealg, ForwardSensitivity):
        raw = _forward_sensitivity(prob, alg, opts, user_controller)
    elif isinstance(sensealg, (BacksolveAdjoint, GaussAdjoint, InterpolatingAdjoint, QuadratureAdjoint)):
        raw = _adjoint(prob, alg, opts, user_controller, sensealg)
    elif sensealg.checkpoints is not None:
        from .native._checkpoint import checkpointed_integrate

        raw = checkpointed_integrate(prob.f, u0, prob.p,
                                     lambda rhs: _native_stepper(alg, rhs, prob, reltol_v, abstol_v, user_controller),
                                     opts, prob.batch_shape, sensealg.checkpoints)
    else:
        raw = integrate(prob.f, u0, prob.p,
                        lambda rhs: _native_stepper(alg, rhs, prob, reltol_v, abstol_v, user_controller),
                        opts, prob.batch_shape)
    if isinstance(saveat, torch.Tensor):
        times = saved_time_graph(raw.t, None, None, saveat, every=False)
    elif saveat is None or isinstance(saveat, numbers.Real):
        times = saved_time_graph(raw.t, t0_leaf, t1_leaf, None, every=saveat is not None)
    else:
        times = None        # a list of numbers: fixed times
    if times is not None:
        raw.u = attach_saved_times(raw.u.reshape(raw.u.shape[0], *prob.batch_shape, n), times, prob.f, prob.p)
        raw.t = times
    return _wrap(prob, alg, raw, throw, adaptive)


_COMPILE_ENV = {"": "auto", "auto": "auto", "0": False, "1": "compiled", "eager": "eager"}

# The default ("auto") runs the fused path, uncompiled, for differentiated solves of at most this
# many state entries (batch x n). There its parallel-in-time gradient beats autograd through the
# reference loop: Chen's spiral training 2.3x, Lotka-Volterra 2.7x, Robertson with Rodas5P 2.2x;
# a 2-50-2 MLP batch 1.2-1.5x up to 32 entries, 0.8x at 128 and 0.3x at 2048 entries (its step maps
# are recomputed for every record). Forward-only solves of one problem on the CPU take it too:
# there its control in Python floats (native/_fused_scalar.py) is what gains, Lotka-Volterra with
# Tsit5 and 100 outputs 45.7 -> 25.6 ms; the IVP test set with Rodas5P (analytic Jacobians, rtol
# 1e-6) 1.10-1.31x, e.g. OREGO 777 -> 631 ms. Batches do not gain.
_AUTO_FUSED_MAX_ENTRIES = 64


def _compile_mode(compile):
    """``False``, ``"compiled"``, ``"eager"`` (the fused path without ``torch.compile``: what the
    test suite runs under ``PYODE_COMPILE=eager`` to check the fused logic quickly) or ``"auto"``
    (the default: ``"eager"`` where it is faster, see :func:`_auto_fused`)."""
    if compile is None:
        value = os.environ.get("PYODE_COMPILE", "")
        if value not in _COMPILE_ENV:
            raise ValueError(f"environment variable PYODE_COMPILE={value!r} is not understood; "
                             f"use one of {sorted(_COMPILE_ENV)}")
        return _COMPILE_ENV[value]
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    return "compiled" if compile else False


def _auto_fused(prob: ODEProblem, alg) -> bool:
    """The default's choice: the fused path (uncompiled) for a small differentiated solve, and for
    one problem on the CPU (with the methods the fused path covers: explicit and Rosenbrock)."""
    if prob.u0.numel() == prob.u0.shape[-1] and prob.u0.device.type == "cpu":
        return True
    if not torch.is_grad_enabled() or prob.u0.numel() > _AUTO_FUSED_MAX_ENTRIES:
        return False
    from ._params import captures_trainable, parameter_leaves

    return (prob.u0.requires_grad or bool(parameter_leaves(prob.p)[1]) or captures_trainable(prob.f)
            or any(t is not None and t.requires_grad for t in prob.time_leaves))


def _fused_mode(compile, explicit: bool, alg, opts, sensealg, prob: ODEProblem):
    """The fused path's mode for this solve, or None for the reference loop. An explicit
    ``compile=True`` that cannot be honoured is an error; the environment's default just falls back."""
    if not compile:
        return None
    from .native._fused import fused_unsupported

    reason = fused_unsupported(alg, opts)
    if reason is None and not (isinstance(sensealg, DirectAdjoint) and sensealg.checkpoints is None):
        reason = (f"computes DirectAdjoint() gradients (backpropagation through the steps), not "
                  f"{sensealg!r}; drop sensealg or compile")
    if reason is None and compile == "auto":
        return "eager" if _auto_fused(prob, alg) else None
    if reason is None:
        return compile
    if explicit:
        raise ValueError(f"compile=True: the fused path {reason}")
    return None


def _adjoint(prob: ODEProblem, alg, opts, controller, sensealg):
    """The forward solve of a continuous adjoint, returned with states whose backward runs the adjoint."""
    from .native._adjoint import AdjointAttach, AdjointSystem
    from .native._integrate import integrate

    def make_stepper(a, problem, reltol=opts.reltol, abstol=opts.abstol):
        return lambda rhs: _native_stepper(a, rhs, problem, reltol, abstol, controller)

    system = AdjointSystem(prob, alg, opts, make_stepper, integrate, sensealg,
                           quadrature=isinstance(sensealg, (GaussAdjoint, QuadratureAdjoint)),
                           checkpointing=sensealg.checkpointing,
                           seminorm=getattr(sensealg, "seminorm", False),
                           backsolve=isinstance(sensealg, BacksolveAdjoint),
                           adaptive_quadrature=((sensealg.abstol, sensealg.reltol)
                                                if isinstance(sensealg, QuadratureAdjoint) else None))
    raw = system.solve_forward()
    if not opts.dense:
        raw.dense = None        # kept for the adjoint only; sol(t) stays as the user asked
    if opts.callbacks and (prob.u0.requires_grad or system.leaves):
        from .native._adjoint import AdjointAttachEvents
        t_ev, u_ev, which, index = raw.events[:4]
        raw.u, t_ev, u_ev = AdjointAttachEvents.apply(raw.u, t_ev, u_ev, system, prob.u0, *system.leaves)
        raw.events = (t_ev, u_ev, which, index)
    elif prob.u0.requires_grad or system.leaves:
        raw.u = AdjointAttach.apply(raw.u, system, prob.u0, *system.leaves)
    return raw


def _forward_sensitivity(prob: ODEProblem, alg, opts, controller):
    """The augmented solve of ForwardSensitivity, returned with states that carry its gradients."""
    from dataclasses import replace

    from .native._forward_sensitivity import ForwardSensitivitySystem, SensitivityDense
    from .native._integrate import integrate

    system = ForwardSensitivitySystem(prob)
    if system.trivial:      # nothing to differentiate
        return integrate(prob.f, prob.u0, prob.p,
                         lambda rhs: _native_stepper(alg, rhs, prob, opts.reltol, opts.abstol, controller),
                         opts, prob.batch_shape)
    aug = ODEProblem(system.f, system.z0, prob.tspan, None)
    aug_opts = replace(opts, reltol=system.tolerance(opts.reltol), abstol=system.tolerance(opts.abstol))
    if opts.callbacks:
        aug_opts = replace(aug_opts, callbacks=system.augmented_callbacks(opts.callbacks), event_sensitivity=system)
    with torch.no_grad():
        raw = integrate(aug.f, aug.u0, None,
                        lambda rhs: _native_stepper(alg, rhs, aug, aug_opts.reltol, aug_opts.abstol, controller),
                        aug_opts, prob.batch_shape)
    raw.u = system.attach(raw.u)
    if raw.events is not None:
        raw.events = system.attach_events(raw.events)
    if raw.dense is not None:
        raw.dense = SensitivityDense(raw.dense, system)
    return raw


def _default_controller(alg: AbstractAlgorithm, shared: bool = False) -> AbstractController:
    """Predictive control for the Newton-based one-step methods, PI control otherwise; integral
    control for the others when the batch shares its steps.

    DifferentialEquations.jl defaults RadauIIA5 to predictive control and (in current versions)
    KenCarp4/Kvaerno5 to PI control; with pyode's Jacobian reuse the predictive controller takes
    30-40% fewer steps on ROBER with the ESDIRK methods, so it is their default here too.
    A shared-step batch follows torchdiffeq's and diffrax's defaults, integral control: the PI
    gains grow a step slowly while the errors stay small (by design: smooth step sequences), which
    a batch of 4096 through an MLP paid with 7 steps instead of 3 (benchmarks/speed.py, case 3).
    """
    if isinstance(alg, (AbstractESDIRK, RadauIIA5)):
        return PredictiveController()
    return IController() if shared else PIController()


def _native_stepper(alg: AbstractAlgorithm, rhs, prob: ODEProblem, reltol, abstol, controller=None):
    """The native engine's numerics for an algorithm object (fresh per solve: steppers hold caches)."""
    from .native._esdirk import EsdirkStepper
    from .native._explicit_rk import ExplicitRKStepper
    from .native._jacobian import JacobianEvaluator
    from .native._rosenbrock import RosenbrockStepper

    if isinstance(alg, AbstractExplicitRK):
        return ExplicitRKStepper(alg.tableau)
    if isinstance(alg, AutoSwitch):
        from .native._autoswitch import AutoSwitchStepper, stability_boundary

        subs = [_native_stepper(a, rhs, prob, reltol, abstol) for a in (alg.nonstiffalg, alg.stiffalg)]
        # Each method keeps its own controller (the user's, or its default), as in a Julia composite.
        ctrls = [(controller or _default_controller(a)).resolve(s.order, s.embedded_order or s.order, s.newton_maxiters)
                 for a, s in zip((alg.nonstiffalg, alg.stiffalg), subs)]
        return AutoSwitchStepper(*subs, *ctrls, stability_boundary(alg.nonstiffalg.tableau), alg)
    jac = rhs.jac(prob.jac) if prob.jac is not None else None
    mass = None
    if prob.mass_matrix is not None:
        from .native._mass import MassMatrix
        mass = MassMatrix(prob.mass_matrix, prob.u0.dtype, prob.u0.device)
    if isinstance(alg, AbstractRosenbrock):
        from .native._refinement import needs_refinement
        tgrad = rhs.tgrad(prob.tgrad) if prob.tgrad is not None and jac is not None else None
        return RosenbrockStepper(alg.tableau, JacobianEvaluator(rhs, jac, alg.autodiff, user_tgrad=tgrad),
                                 refine=needs_refinement(prob.u0, abstol), mass=mass)
    if isinstance(alg, AbstractESDIRK):
        return EsdirkStepper(alg.tableau, JacobianEvaluator(rhs, jac, alg.autodiff, time_derivative=False), reltol, abstol)
    if isinstance(alg, RadauIIA5):
        from .native._radau import RadauStepper
        return RadauStepper(JacobianEvaluator(rhs, jac, alg.autodiff, time_derivative=False), reltol, abstol,
                            mass=mass)
    if isinstance(alg, AbstractBDF):
        from .native._bdf import BDFStepper
        return BDFStepper(alg.max_order, alg.kappa, JacobianEvaluator(rhs, jac, alg.autodiff, time_derivative=False),
                          reltol, abstol, mass=mass)
    raise TypeError(f"the native engine has no implementation of {alg!r}")


def _check_callbacks(callbacks, backend: str, sensealg, sensealg_is_default: bool, compile_requested: bool,
                     batch_steps: str, single_problem: bool = True, save_steps: bool = False) -> None:
    """Callbacks run in the native engine's reference loop, differentiated by DirectAdjoint."""
    if backend == "julia":
        raise ValueError("callback= is not yet supported by backend='julia'; solve with backend='native' "
                         "(the default), which runs ContinuousCallback, DiscreteCallback and the others")
    if compile_requested:
        raise ValueError("compile=True does not support callback=: events run in the reference loop; "
                         "drop compile (or pass compile=False)")
    if batch_steps == "shared":
        raise ValueError("batch_steps='shared' does not support callback=: an event stops a member at its "
                         "own time, so the members cannot share steps; use batch_steps='member'")
    if isinstance(sensealg, ForwardSensitivity):
        return
    if isinstance(sensealg, BacksolveAdjoint):
        raise ValueError(f"sensealg={sensealg!r} does not support callback=: solving u backwards would need "
                         "the inverse of each affect; use GaussAdjoint(), InterpolatingAdjoint(), "
                         "QuadratureAdjoint(), ForwardSensitivity() or DirectAdjoint() (the default)")
    if isinstance(sensealg, (GaussAdjoint, InterpolatingAdjoint, QuadratureAdjoint)):
        if single_problem is False or save_steps:
            raise ValueError(f"sensealg={sensealg!r} with callback= takes one problem (not a batch) and saveat "
                             "(λ jumps at each event time; batch members have their own); use DirectAdjoint() "
                             "or ForwardSensitivity() for batches, or pass saveat")
        if sensealg.checkpointing:
            raise ValueError(f"sensealg={sensealg!r}: checkpointing=True does not support callback=; drop it")
        return
    if not isinstance(sensealg, DirectAdjoint):
        raise ValueError(f"sensealg={sensealg!r} does not support callback=; use DirectAdjoint() (the default) "
                         "or ForwardSensitivity()")
    if sensealg.checkpoints is not None:
        raise ValueError("DirectAdjoint(checkpoints=...) does not support callback=; use DirectAdjoint()")


_MASS_MATRIX_ALGS = "Rosenbrock23(), Rodas4(), Rodas5P(), RadauIIA5(), FBDF() or QNDF()"


def _check_mass_matrix(prob: ODEProblem, alg, backend: str, sensealg, compile_requested: bool, abstol) -> None:
    """A mass matrix needs a method that solves with it, DirectAdjoint, and a consistent ``u0``."""
    if backend == "julia":
        raise ValueError("mass_matrix is not yet supported by backend='julia'; solve with backend='native' "
                         f"and one of {_MASS_MATRIX_ALGS}")
    if not isinstance(alg, (AbstractRosenbrock, RadauIIA5, AbstractBDF)):
        raise ValueError(f"{alg!r} cannot solve a problem with a mass_matrix; use {_MASS_MATRIX_ALGS} "
                         "(the methods that solve M du/dt = f, as OrdinaryDiffEq's mass-matrix methods)")
    if compile_requested:
        raise ValueError("compile=True does not support mass_matrix; drop compile (or pass compile=False)")
    if not isinstance(sensealg, DirectAdjoint) or sensealg.checkpoints is not None:
        raise ValueError(f"sensealg={sensealg!r} does not support mass_matrix (the adjoint of a DAE is not "
                         "implemented); use sensealg=DirectAdjoint(), the default")
    # The algebraic equations are the left null space of M: N^T f(u0) must vanish.
    from .initialization import algebraic_residual, null_spaces

    M = prob.mass_matrix
    N, _ = null_spaces(M)
    if N.shape[1] == 0:
        return
    with torch.no_grad():
        residual = algebraic_residual(prob, prob.u0.detach(), N).abs()
    tol = float(abstol.max()) if isinstance(abstol, torch.Tensor) else float(abstol)
    worst = float(residual.max())
    if not worst <= tol:
        diag = torch.diagonal(M)
        rows = torch.nonzero(diag == 0).reshape(-1).tolist() if bool((M == torch.diag(diag)).all()) else None
        where = f" (the rows of M that are zero: {rows})" if rows else ""
        raise ValueError(f"u0 is inconsistent with the algebraic equations of mass_matrix{where}: their residual "
                         f"in f(u0, p, t0) is {worst:.3g}, above abstol={tol:g}; choose u0 that satisfies them "
                         "(solve the algebraic equations for the algebraic variables first), or pass "
                         "initializealg=pyode.BrownFullBasicInit() to have them solved")


def _check_alg(alg) -> AbstractAlgorithm:
    if alg is None:
        return Tsit5()
    if isinstance(alg, type) and issubclass(alg, AbstractAlgorithm):
        raise TypeError(f"alg must be an algorithm instance; got the class {alg.__name__}: pass {alg.__name__}()")
    if isinstance(alg, str):
        raise TypeError(f"alg must be an algorithm object such as pyode.Tsit5(); got the string {alg!r}")
    if not isinstance(alg, AbstractAlgorithm):
        raise TypeError(f"alg must be a pyode algorithm such as pyode.Tsit5(); got {type(alg).__name__}")
    return alg


def _positive_float(name: str, value) -> float:
    v = _real(name, value)
    if not v > 0:
        raise ValueError(f"{name} must be positive; got {value!r}")
    return v


def _nonnegative_float(name: str, value) -> float:
    v = _real(name, value)
    if v < 0:
        raise ValueError(f"{name} must be non-negative; got {value!r}")
    return v


def _real(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def _tolerance(name: str, value, n: int):
    if isinstance(value, (torch.Tensor, np.ndarray, list, tuple)):
        tol = torch.as_tensor(value, dtype=torch.float64).detach()
        if tol.ndim > 1 or tol.numel() not in (1, n):
            raise ValueError(f"{name} must be a number or have one entry per state component ({n}); "
                             f"got shape {tuple(tol.shape)}")
        if not bool(torch.isfinite(tol).all()) or not bool((tol > 0).all()):
            raise ValueError(f"{name} must be positive and finite; got {value!r}")
        return tol.reshape(-1) if tol.numel() == n else float(tol.reshape(()))
    return _positive_float(name, value)


def _check_resolution(reltol, dtype: torch.dtype) -> None:
    """A relative tolerance below the state's precision can never be met: the solve would grind
    through maxiters tiny steps. Refuse it up front."""
    smallest = float(reltol.min()) if isinstance(reltol, torch.Tensor) else reltol
    eps = torch.finfo(dtype).eps
    if smallest < 4 * eps:
        advice = "use a float64 state (u0.double())" if dtype != torch.float64 else "loosen reltol"
        raise ValueError(f"reltol={smallest:g} is below what {dtype} can resolve (eps={eps:.2g}); "
                         f"{advice} or pass reltol >= {4 * eps:.1g}")


def _times(name: str, value, t0: float, t1: float, direction: float, sort: bool) -> torch.Tensor:
    try:
        ts = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D sequence of times; got {type(value).__name__}") from None
    ts = ts.cpu().reshape(-1) if ts.ndim == 0 else ts.cpu()
    if ts.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {tuple(ts.shape)}")
    if ts.numel() == 0:
        raise ValueError(f"{name} is empty; pass at least one time or leave {name} out")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    lo, hi = min(t0, t1), max(t0, t1)
    tol = 1e-12 * (hi - lo)
    outside = (ts < lo - tol) | (ts > hi + tol)
    if bool(outside.any()):
        bad = float(ts[outside][0])
        raise ValueError(f"{name} has time {bad:g} outside tspan ({t0:g}, {t1:g}); every time must lie in tspan")
    ts = ts.clamp(lo, hi)
    if sort:
        return torch.unique(ts)
    steps = direction * ts.diff()
    if bool((steps <= 0).any()):
        i = int(torch.nonzero(steps <= 0)[0])
        order = "increasing" if direction > 0 else "decreasing (tspan runs backwards)"
        raise ValueError(f"{name} must be strictly {order}; entries {i} and {i + 1} are {float(ts[i]):g} "
                         f"and {float(ts[i + 1]):g}")
    return ts


def _saveat(saveat, t0: float, t1: float, direction: float) -> Optional[torch.Tensor]:
    if saveat is None:
        return None
    if isinstance(saveat, numbers.Real) and not isinstance(saveat, bool):
        step = float(saveat)
        span = abs(t1 - t0)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"saveat={saveat!r}: a number means 'save every saveat', so it must be positive")
        count = int(math.floor(span / step * (1 + 1e-12)))
        ts = t0 + direction * step * torch.arange(count + 1, dtype=torch.float64)
        if abs(float(ts[-1]) - t1) > 1e-12 * span:
            ts = torch.cat([ts, torch.tensor([t1], dtype=torch.float64)])
        else:
            ts[-1] = t1
        return ts
    return _times("saveat", saveat, t0, t1, direction, sort=False)


def _wrap(prob: ODEProblem, alg, raw, throw: bool, adaptive: bool) -> ODESolution:
    batch_shape = prob.batch_shape
    single = len(batch_shape) == 0
    n = prob.u0.shape[-1]
    u = raw.u.reshape(raw.u.shape[0], *batch_shape, n)
    if single:
        retcode = ReturnCode(int(raw.retcode[0]))
        stats = SolverStats(nf=raw.nf, naccept=int(raw.naccept[0]), nreject=int(raw.nreject[0]), njac=raw.njac,
                            nlu=raw.nlu, nsolve=raw.nsolve,
                            nswitch=0 if raw.nswitch is None else int(raw.nswitch[0]))
        t_final = float(raw.t_final[0])
    else:
        retcode = raw.retcode.reshape(batch_shape)
        stats = SolverStats(nf=raw.nf, naccept=raw.naccept.reshape(batch_shape),
                            nreject=raw.nreject.reshape(batch_shape), njac=raw.njac, nlu=raw.nlu, nsolve=raw.nsolve,
                            nswitch=0 if raw.nswitch is None else raw.nswitch.reshape(batch_shape))
        t_final = raw.t_final.reshape(batch_shape)
    sol = ODESolution(t=raw.t, u=u, retcode=retcode, stats=stats, prob=prob, alg=alg, t_final=t_final,
                      dense=raw.dense, batch_shape=batch_shape, events=_events(raw, batch_shape, n))
    failed = torch.nonzero((raw.retcode != ReturnCode.Success) & (raw.retcode != ReturnCode.Terminated)).reshape(-1)
    if throw and failed.numel() > 0:
        raise SolveError(sol, failed.cpu(), raw.t_final.cpu(), raw.dt_final.cpu(), raw.retcode.cpu(),
                         stiff_alg=alg.stiff, adaptive=adaptive, batch_shape=batch_shape)
    return sol


def _events(raw, batch_shape, n: int):
    """The event record in the user's shapes: one problem's ``(E,)``, a batch's ``(*batch, E)``."""
    if getattr(raw, "events", None) is None:
        return None
    t_ev, u_ev, which, index = raw.events[:4]
    E = t_ev.shape[1]
    return (t_ev.reshape(*batch_shape, E), u_ev.reshape(*batch_shape, E, n), which.reshape(*batch_shape, E),
            index.reshape(*batch_shape, E))
