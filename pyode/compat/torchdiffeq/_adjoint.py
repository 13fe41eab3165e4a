"""``odeint_adjoint``: torchdiffeq's continuous adjoint, on pyode's solvers.

The forward solve runs without a graph. The backward pass integrates the augmented system
``(∂L/∂t, y, a, ∂L/∂θ)`` with ``a' = -aᵀ ∂f/∂y``, ``(∂L/∂θ)' = -aᵀ ∂f/∂θ`` backwards from each output
time to the previous one (re-solving ``y`` backwards: a "backsolve" adjoint, pyode's
:class:`~pyode.BacksolveAdjoint`), resetting ``y`` to the forward value and adding the output's
gradient at every output time, exactly as torchdiffeq does, so that its options (``adjoint_rtol``,
``adjoint_method``, ``adjoint_options`` with ``norm="seminorm"``, ...) mean the same here. The
vector-Jacobian products use ``torch.autograd`` on the tensors in ``adjoint_params``, so ``func`` may
read them through a closure.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Callable, Optional

import torch
from torch import nn

from ...algorithms import AbstractStiffAlgorithm, AutoSwitch
from ._inputs import _CALLBACKS, Spec, flat_to_shape, mixed_norm, normalize
from ._methods import resolve_method
from ._odeint import integrate, integrate_until_event, odeint

__all__ = ["odeint_adjoint"]


def odeint_adjoint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method=None,
                   options: Optional[dict] = None, event_fn: Optional[Callable] = None, adjoint_rtol=None,
                   adjoint_atol=None, adjoint_method=None, adjoint_options: Optional[dict] = None,
                   adjoint_params=None):
    """``odeint`` whose gradient comes from solving the adjoint ODE backwards (memory independent of
    the number of steps). Arguments as :func:`odeint`, plus torchdiffeq's:

        adjoint_rtol, adjoint_atol, adjoint_method: for the backward solve (default: the forward's).
        adjoint_options: options of the backward solve (default: the forward's without ``norm``);
            ``{"norm": "seminorm"}`` leaves the parameter gradients out of its error norm (Kidger
            et al. 2021), usually fewer backward steps at no loss of accuracy.
        adjoint_params: the tensors to differentiate (default: ``func.parameters()``, which needs an
            ``nn.Module``); those that do not require grad are left out.
    """
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError('func must be an instance of nn.Module to specify the adjoint parameters; alternatively they '
                         'can be specified explicitly via the `adjoint_params` argument. If there are no parameters '
                         'then it is allowable to set `adjoint_params=()`.')
    adjoint_rtol = rtol if adjoint_rtol is None else adjoint_rtol
    adjoint_atol = atol if adjoint_atol is None else adjoint_atol
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError("If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. So as "
                         "`options` has been passed then `adjoint_options` must be passed as well.")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if options is not None else {}
    elif not isinstance(adjoint_options, dict):
        raise TypeError(f"adjoint_options must be a dict (or None); got {type(adjoint_options).__name__}")
    else:
        adjoint_options = dict(adjoint_options)

    params = _find_parameters(func) if adjoint_params is None else tuple(adjoint_params)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params[{i}] is a {type(p).__name__}; adjoint_params must be tensors")
    kept = tuple(p for p in params if p.requires_grad)
    if len(kept) != len(params) and callable(adjoint_options.get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.")

    spec = normalize(func, y0, t, rtol, atol, method, options, event_fn)
    if isinstance(resolve_method(adjoint_method).alg, (AbstractStiffAlgorithm, AutoSwitch)):
        warnings.warn(f"odeint_adjoint with adjoint_method={adjoint_method!r} re-solves the state backwards in time "
                      "together with the adjoint (torchdiffeq's backsolve adjoint): for a stiff problem that "
                      "backward solve is unstable, and every Jacobian of the augmented system costs one "
                      "evaluation of func per state and parameter. For stiff problems use "
                      "odeint(func, y0, t, method=..., sensealg=pyode.GaussAdjoint()) (func an nn.Module), "
                      "which integrates only the adjoint backwards, on the forward solution")
    adjoint_options["norm"] = _adjoint_norm(adjoint_options.get("norm"), spec)
    backward = _Backward(spec, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, kept, spec.t.requires_grad,
                         func)
    out = _OdeintAdjoint.apply(backward, spec.t, spec.y0, *kept)
    if event_fn is None:
        # A tensor state comes out of the autograd function in its shape (its grad_fn is the
        # function's node, with torchdiffeq's adjoint_options on it); a tuple state is split here.
        return out if spec.shapes is None else spec.unflatten(out, (len(t),))
    event_t, solution = out
    event_t = event_t.to(t)
    if spec.reversed:
        event_t = -event_t
    return event_t, spec.unflatten(solution, (2,))


def _find_parameters(module: nn.Module) -> tuple:
    """``module.parameters()``, or for an ``nn.DataParallel`` replica (whose parameters are plain
    attributes there) the tensors that require grad, as torchdiffeq finds them."""
    if getattr(module, "_is_replica", False):
        return tuple(v for m in module.modules() for v in m.__dict__.values()
                     if isinstance(v, torch.Tensor) and v.requires_grad)
    return tuple(module.parameters())


def _adjoint_norm(norm, spec: Spec) -> Callable:
    """The backward solve's error norm on ``(∂L/∂t, y, a, *∂L/∂θ)``, as torchdiffeq chooses it."""
    state_norm = spec.options["norm"]        # on the flat state
    if norm is None:
        return lambda z: max(z[0].abs(), state_norm(z[1]), state_norm(z[2]), mixed_norm(z[3:]))
    if norm == "seminorm":
        return lambda z: max(z[0].abs(), state_norm(z[1]), state_norm(z[2]))
    if isinstance(norm, str):
        raise ValueError(f"adjoint_options['norm'] must be 'seminorm' or a function; got {norm!r}")
    if not callable(norm):
        raise TypeError(f"adjoint_options['norm'] must be 'seminorm' or a function; got {type(norm).__name__}")
    if spec.shapes is None:
        return norm
    # A tuple state: the user's norm sees (t, *y, *a, *params) in the tuple's layout.
    return lambda z: norm((z[0], *flat_to_shape(z[1], (), spec.shapes), *flat_to_shape(z[2], (), spec.shapes),
                           *z[3:]))


class _Backward:
    """What the backward pass needs: the normalised forward call and the adjoint solve's settings."""

    def __init__(self, spec: Spec, rtol, atol, method, options: dict, params, t_requires_grad: bool, user_func=None):
        self.spec, self.rtol, self.atol, self.method, self.options = spec, rtol, atol, method, options
        self.user_func = user_func
        self.params, self.t_requires_grad = params, t_requires_grad

    def forward(self):
        with torch.no_grad():
            if self.spec.event_fn is None:
                return integrate(self.spec)
            return integrate_until_event(self.spec)

    def augmented(self) -> Callable:
        func, params, t_grad = self.spec.func, self.params, self.t_requires_grad

        def dynamics(t, z):
            # y and a in torchdiffeq's layout: a tensor state's shape, a tuple state flat.
            y, a = z[1], z[2]
            with torch.enable_grad():
                t_ = t.detach().requires_grad_(t_grad)
                y_ = y.detach().reshape(-1).requires_grad_(True)
                f = func(t_, y_)
                wrt = ((t_,) if t_grad else ()) + (y_,) + params
                grads = torch.autograd.grad(f, wrt, -a.reshape(-1), allow_unused=True)
            if t_grad:
                g_t, grads = grads[0], grads[1:]
            else:
                g_t = None
            g_t = torch.zeros_like(z[0]) if g_t is None else g_t.reshape(z[0].shape).to(z[0].dtype)
            vjps = [torch.zeros_like(x) if g is None else g for x, g in zip((y_,) + params, grads)]
            return (g_t, f.detach().reshape(y.shape), vjps[0].reshape(y.shape), *vjps[1:])

        # torchdiffeq's backward solve calls func's callback_step_adjoint (and the accept/reject
        # ones) as its callback_step, ...: with (t, (∂L/∂t, y, a, *∂L/∂θ), dt).
        for name in _CALLBACKS:
            callback = getattr(self.user_func, name + "_adjoint", None)
            if callable(callback):
                setattr(dynamics, name, callback)
        return dynamics

    def solve_back(self, z, t_hi: torch.Tensor, t_lo: torch.Tensor):
        return odeint(self.augmented(), tuple(z), torch.stack([t_hi, t_lo]), rtol=self.rtol, atol=self.atol,
                      method=_without_autodiff(self.method), options=self.options)


def _without_autodiff(method):
    """A stiff method for the backward solve takes its Jacobian by finite differences: the augmented
    dynamics call ``torch.autograd.grad``, which forward-mode AD cannot trace."""
    resolved = resolve_method(method)
    alg = resolved.alg
    if isinstance(alg, AutoSwitch):
        return replace(alg, stiffalg=_without_autodiff(alg.stiffalg))
    if isinstance(alg, AbstractStiffAlgorithm) and alg.autodiff:
        return replace(alg, autodiff=False)
    return method


class _OdeintAdjoint(torch.autograd.Function):

    @staticmethod
    def forward(ctx, backward: _Backward, t, y0, *params):
        ans = backward.forward()
        ctx.backward_ = backward
        # torchdiffeq's node carries the backward solve's options; its norm may be replaced there.
        ctx.adjoint_options = backward.options
        if backward.spec.event_fn is None:
            ctx.save_for_backward(t, ans, *params)
            return ans.reshape((len(t), *backward.spec.shape))
        ctx.save_for_backward(t, ans[1], ans[0], *params)
        return ans

    @staticmethod
    def backward(ctx, *grads):
        bw: _Backward = ctx.backward_
        event_mode = bw.spec.event_fn is not None
        with torch.no_grad():
            if event_mode:
                t_full, y, event_t, *params = ctx.saved_tensors
                t = torch.stack([t_full[0], event_t.to(t_full.dtype).reshape(())])
                grad_y = grads[1]
            else:
                t, y, *params = ctx.saved_tensors
                grad_y = grads[0]
            # The augmented state holds y and a in torchdiffeq's layout (a tensor state's shape).
            shape = bw.spec.shape
            grad_y = grad_y.reshape(len(grad_y), -1)
            z = [torch.zeros((), dtype=y.dtype, device=y.device), y[-1].reshape(shape), grad_y[-1].reshape(shape)]
            z += [torch.zeros_like(p) for p in params]
            time_vjps = torch.empty(len(t), dtype=t.dtype, device=t.device) if bw.t_requires_grad else None
            for i in range(len(t) - 1, 0, -1):
                if bw.t_requires_grad:
                    # Moving output time t[i] changes y(t[i]) by f there.
                    dl_dt = bw.spec.func(t[i], y[i]).reshape(-1).dot(grad_y[i].reshape(-1))
                    z[0] = z[0] - dl_dt
                    time_vjps[i] = dl_dt
                out = bw.solve_back(z, t[i], t[i - 1])
                z = [x[1] for x in out]
                z[1] = y[i - 1].reshape(shape)   # the forward value, not the backward re-solve's
                z[2] = z[2] + grad_y[i - 1].reshape(shape)
            if bw.t_requires_grad:
                time_vjps[0] = z[0]
                if event_mode:
                    time_vjps = torch.cat([time_vjps[:1], torch.zeros_like(t_full[1:])])
        return (None, time_vjps, z[2].reshape(-1), *z[3:])
