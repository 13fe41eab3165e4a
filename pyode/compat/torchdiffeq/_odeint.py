"""``odeint``, ``odeint_event`` and ``odeint_dense`` with torchdiffeq 0.2.5's signatures and results."""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from ...sensealg import AbstractSensitivityAlgorithm, DirectAdjoint
from ._adaptive import solve_adaptive, solve_adaptive_until_event
from ._fixed_grid import solve_fixed_grid, solve_fixed_grid_until_event
from ._inputs import Spec, normalize
from ._scipy import solve_scipy

__all__ = ["odeint", "odeint_event", "odeint_dense", "integrate", "integrate_until_event"]


def odeint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method=None, options: Optional[dict] = None,
           event_fn: Optional[Callable] = None, sensealg: Optional[AbstractSensitivityAlgorithm] = None):
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    Arguments (torchdiffeq's):
        func: ``func(t, y)``: ``t`` a 0-d tensor, ``y`` a tensor of ``y0``'s shape (or a tuple like ``y0``).
        y0: tensor of any shape, or a tuple of tensors.
        t: 1-D tensor of output times, strictly increasing or decreasing; ``t[0]`` is the start.
        rtol, atol: tolerances (numbers, tensors per element of ``y``, or one per tuple entry).
        method: ``"dopri5"`` (default), ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``,
            ``"euler"``, ``"midpoint"``, ``"heun2"``, ``"heun3"``, ``"rk4"``, ``"explicit_adams"``,
            ``"implicit_adams"``, ``"fixed_adams"``, ``"scipy_solver"``; or a pyode name
            (``"tsit5"``, ``"vern7"``, ``"rodas5p"``, ``"kencarp4"``, ``"fbdf"``, ...) or algorithm object.
        options: the method's options, as torchdiffeq's (``first_step``, ``max_step``, ``step_t``,
            ``jump_t``, ``norm``, ``step_size``, ``grid_constructor``, ``interp``, ``perturb``, ...).
        event_fn: ``event_fn(t, y)``; when given, integrate until it reaches zero and return
            ``(event_t, y)`` with ``y`` at ``[t[0], event_t]`` (``len(t)`` must be 2; ``t[1]`` only
            gives the direction).
        sensealg: (pyode's) how gradients are computed for an adaptive method: default autograd
            through the solver, as torchdiffeq's ``odeint``; or e.g. ``pyode.GaussAdjoint()``, which
            differentiates the parameters of ``func`` (an ``nn.Module``).

    Returns:
        A tensor of shape ``(len(t), *y0.shape)`` (a tuple of them for a tuple ``y0``), or
        ``(event_t, solution)`` with ``event_fn``.
    """
    spec = normalize(func, y0, t, rtol, atol, method, options, event_fn)
    if event_fn is None:
        return spec.unflatten(integrate(spec, sensealg, func), (len(t),))
    if sensealg is not None:
        raise ValueError("sensealg= does not apply with event_fn: the solve until an event is differentiated "
                         "through the solver (odeint) or by torchdiffeq's adjoint (odeint_adjoint)")
    event_t, solution = integrate_until_event(spec)
    event_t = event_t.to(t)
    if spec.reversed:
        event_t = -event_t
    return event_t, spec.unflatten(solution, (2,))


def integrate(spec: Spec, sensealg=None, func=None) -> torch.Tensor:
    """The flat solution ``(T, N)`` of a normalised call, by the method's family."""
    family = spec.method.family
    if sensealg is not None:
        _check_sensealg(sensealg, spec, func)
        if spec.callbacks:
            warnings.warn(f"odeint with sensealg={sensealg!r} solves through pyode.solve, which calls no solver "
                          f"callbacks: {sorted(spec.callbacks)} on func are not called; drop sensealg to have "
                          "them called around every step")
    if family == "adaptive":
        p = func if isinstance(func, nn.Module) and sensealg is not None else None
        return solve_adaptive(spec, sensealg, p)
    if family == "fixed_grid":
        func, y0 = _fixed_grid_state(spec)
        out = solve_fixed_grid(spec.method.name, func, y0, spec.t, rtol=spec.rtol, atol=spec.atol,
                               options=spec.options)
        return out.reshape(len(spec.t), -1)
    return solve_scipy(spec)


def _fixed_grid_state(spec: Spec):
    """``(func, y0)`` for torchdiffeq's fixed-grid solvers: the flat ones, except for a 0-d state,
    which stays 0-d as in torchdiffeq. Its arithmetic then follows torchdiffeq's to the bit: a
    float32 0-d state meeting a float64 0-d step size promotes to float64 (a state of any other
    shape stays float32), so torchdiffeq integrates such a state in float64, and so does this."""
    if spec.shapes is not None or spec.shape != torch.Size([]):
        return spec.func, spec.y0
    flat = spec.func

    def scalar(t, y):
        return flat(t, y.reshape(1)).reshape(())

    if "callback_step" in spec.callbacks:
        scalar.callback_step = spec.callbacks["callback_step"]
    return scalar, spec.y0.reshape(())


def integrate_until_event(spec: Spec) -> Tuple[torch.Tensor, torch.Tensor]:
    family = spec.method.family
    if family == "adaptive":
        return solve_adaptive_until_event(spec)
    if family == "fixed_grid":
        func, y0 = _fixed_grid_state(spec)
        event_fn = spec.event_fn if y0.ndim else (lambda t, y: spec.event_fn(t, y.reshape(1)))
        event_t, solution = solve_fixed_grid_until_event(spec.method.name, func, y0, spec.t[0], event_fn,
                                                         rtol=spec.rtol, atol=spec.atol, options=spec.options)
        return event_t, solution.reshape(2, -1)
    raise ValueError("event_fn is not supported by method='scipy_solver'; use an adaptive method such as "
                     "'dopri5' or 'rodas5p'")


def _check_sensealg(sensealg, spec: Spec, func) -> None:
    if isinstance(sensealg, type) and issubclass(sensealg, AbstractSensitivityAlgorithm):
        raise TypeError(f"sensealg must be an instance; got the class {sensealg.__name__}: pass {sensealg.__name__}()")
    if not isinstance(sensealg, AbstractSensitivityAlgorithm):
        raise TypeError(f"sensealg must be a pyode.sensealg object such as pyode.GaussAdjoint(); "
                        f"got {type(sensealg).__name__}")
    if spec.method.family != "adaptive":
        raise ValueError(f"sensealg= needs one of pyode's methods; method={spec.method.name!r} is torchdiffeq's "
                         f"{spec.method.family.replace('_', '-')} solver, differentiated through the solver only")
    if not isinstance(sensealg, DirectAdjoint) and not isinstance(func, nn.Module):
        raise TypeError(f"sensealg={sensealg!r} differentiates the parameters of func, so func must be an "
                        f"nn.Module holding them; got {type(func).__name__} (use odeint_adjoint with "
                        "adjoint_params=... for a plain function)")


def odeint_dense(func: Callable, y0: torch.Tensor, t0, t1, *, rtol=1e-7, atol=1e-9, method=None,
                 options: Optional[dict] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Solve from ``t0`` to ``t1`` and return ``y(t)`` as a function (torchdiffeq's ``odeint_dense``, which
    has ``dopri5`` only; here any adaptive method, with that method's own interpolant).

    The returned function takes a scalar or 1-D tensor of times in ``[t0, t1]`` and returns
    ``y`` with shape ``(*t.shape, *y0.shape)``; the values are differentiable like ``odeint``'s."""
    from ..._problem import ODEProblem
    from ..._solve import solve
    from ._adaptive import _solve_kwargs

    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"odeint_dense takes a tensor y0 (as torchdiffeq's); got {type(y0).__name__}")
    t = torch.stack([torch.as_tensor(t0), torch.as_tensor(t1)]).to(torch.float64)
    spec = normalize(func, y0, t, rtol, atol, method, options, None)
    if spec.method.family != "adaptive":
        raise ValueError(f"odeint_dense needs an adaptive method (dense output); got {spec.method.name!r}")
    a, b = float(spec.t[0]), float(spec.t[1])
    prob = ODEProblem(lambda u, _p, tt: spec.func(tt, u), spec.y0, (a, b), None)
    sol = solve(prob, spec.method.alg, dense=True, **_solve_kwargs(spec, a, b))

    def dense_output_fn(t_eval: torch.Tensor) -> torch.Tensor:
        tq = torch.as_tensor(t_eval, dtype=torch.float64)
        flat = sol((-tq if spec.reversed else tq).reshape(-1))
        return flat.reshape((*tq.shape, *y0.shape)).to(y0.dtype)

    return dense_output_fn


def odeint_event(func: Callable, y0, t0: torch.Tensor, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable = odeint, **kwargs):
    """Integrate from ``t0`` until ``event_fn(t, y) = 0``; return ``(event_t, solution)`` where the event
    time and the state there carry gradients (torchdiffeq's ``odeint_event``).

    The gradient of the event time follows from the implicit function theorem: with ``g(t, y(t)) = 0``,
    ``dt*/dθ = -(∂g/∂y · dy/dθ) / (∂g/∂t + ∂g/∂y · f)``; the state at the event gets ``f · dt*/dθ`` on
    top of its gradient at a fixed time. ``odeint_interface`` is ``odeint`` or ``odeint_adjoint``.
    """
    if not isinstance(t0, torch.Tensor):
        raise TypeError(f"t0 must be a tensor; got {type(t0).__name__}")
    step = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + step])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

    # The same normalisation as the solve (rtol, atol and method do not matter here).
    spec = normalize(func, y0, t, 0.0, 0.0, None, None, event_fn)
    if spec.shapes is None:
        state_t = solution[-1].reshape(-1)
    else:
        state_t = torch.cat([s[-1].reshape(-1) for s in solution])
    # In the normalised frame the event time is negated for reverse_time.
    frame_t = -event_t if reverse_time else event_t
    frame_t, state_t = _ImplicitEventGradient.apply(spec.func, spec.event_fn, frame_t, state_t)
    event_t = -frame_t if reverse_time else frame_t
    state_t = spec.unflatten(state_t, ())
    if spec.shapes is None:
        solution = torch.cat([solution[:-1], state_t[None]], dim=0)
    else:
        solution = tuple(torch.cat([s[:-1], st[None]], dim=0) for s, st in zip(solution, state_t))
    return event_t, solution


class _ImplicitEventGradient(torch.autograd.Function):
    """Identity forward; backward adds the event time's dependence on the state at the event.

    With ``λ`` the incoming gradient of the state at the event and ``γ`` that of the event time,
    moving the state by ``δy`` moves the event time by ``-(∂g/∂y δy) / ġ`` with the total derivative
    ``ġ = ∂g/∂t + ∂g/∂y · f``; the event time enters the output both directly and through ``y(t*)``
    (whose time derivative is ``f``), so the total gradient of the state is
    ``λ - ∂g/∂y (γ + λ·f) / ġ``.
    """

    @staticmethod
    def forward(ctx, func, event_fn, event_t, state_t):
        ctx.func, ctx.event_fn = func, event_fn
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach(), state_t.detach()

    @staticmethod
    def backward(ctx, grad_t, grad_state):
        event_t, state_t = ctx.saved_tensors
        with torch.enable_grad():
            t = event_t.detach().clone().requires_grad_(True)
            y = state_t.detach().clone().requires_grad_(True)
            f = ctx.func(t, y).detach()
            g = ctx.event_fn(t, y)
            dg_dt, dg_dy = torch.autograd.grad(g, (t, y), allow_unused=True)
        dg_dt = torch.zeros_like(t) if dg_dt is None else dg_dt
        dg_dy = torch.zeros_like(y) if dg_dy is None else dg_dy
        g_dot = dg_dt + torch.sum(dg_dy * f)
        if grad_t is None:
            grad_t = torch.zeros_like(event_t)
        if grad_state is None:
            grad_state = torch.zeros_like(state_t)
        total_t = grad_t + torch.sum(grad_state * f)
        # torchdiffeq regularises the division by ġ the same way; ġ = 0 means a tangential event.
        grad_state = grad_state - dg_dy * (total_t / (g_dot + 1e-12)).reshape(())
        return None, None, None, grad_state
