"""torchdiffeq's argument conventions, normalised once at the boundary.

Everything downstream sees one flat 1-D state, strictly increasing times and a right-hand side
``func(t, y)`` on that flat state, as torchdiffeq's ``_check_inputs`` arranges for its solvers:

* a tuple state is concatenated (each tensor flattened); a single tensor of any shape is flattened;
* decreasing ``t`` is negated, with ``func`` wrapped as ``-func(-t, y)``, and so are ``step_t``,
  ``jump_t`` and ``grid_constructor``;
* ``func`` sees ``t`` as a 0-d tensor in the state's dtype, the state in the user's shape (or
  tuple), and ``norm`` the scaled error in the user's shape (or tuple);
* several event functions are combined into one, after flipping each to start positive.

Where torchdiffeq asserts, this raises a ``TypeError``/``ValueError`` that names the argument.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch

from ._methods import Method, resolve_method

__all__ = ["Spec", "normalize", "rms_norm", "mixed_norm", "flat_to_shape"]

_CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x.abs().pow(2).mean().sqrt()


def mixed_norm(xs) -> Any:
    """torchdiffeq's default norm of a tuple state: the largest RMS norm of its tensors."""
    if len(xs) == 0:
        return 0.0
    return max(rms_norm(x) for x in xs)


def flat_to_shape(flat: torch.Tensor, lead: Tuple[int, ...], shapes: List[torch.Size]) -> Tuple[torch.Tensor, ...]:
    """Split the last axis of ``flat`` into tensors of ``shapes`` (after leading dims ``lead``)."""
    out, start = [], 0
    for shape in shapes:
        stop = start + shape.numel()
        out.append(flat[..., start:stop].view((*lead, *shape)))
        start = stop
    return tuple(out)


@dataclass
class Spec:
    """One normalised call: what the solvers of every method family take."""

    func: Callable                  # func(t, y_flat) -> dy_flat, times in the increasing frame
    y0: torch.Tensor                # (N,)
    t: torch.Tensor                 # (T,) strictly increasing (negated when the user's decreases)
    rtol: Any                       # number or (N,) tensor
    atol: Any
    method: Method
    options: dict                   # a copy; 'norm' is a function of the flat state
    event_fn: Optional[Callable]    # event_fn(t, y_flat) -> scalar, or None
    reversed: bool
    shapes: Optional[List[torch.Size]]      # the tuple's shapes, None for a tensor state
    shape: torch.Size                       # the tensor state's shape (tuple: (N,))
    user_norm: bool                         # options had a 'norm'
    callbacks: Optional[dict] = None        # name -> callback(t0, y0_flat, dt), those the method calls

    def unflatten(self, flat: torch.Tensor, lead: Tuple[int, ...]):
        """``(*lead, N)`` back to the user's layout: a tensor ``(*lead, *shape)`` or a tuple."""
        if self.shapes is None:
            return flat.reshape((*lead, *self.shape))
        return flat_to_shape(flat, lead, self.shapes)


def normalize(func: Callable, y0, t, rtol, atol, method, options, event_fn) -> Spec:
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y); got {type(func).__name__}")
    method = resolve_method(method)
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        raise TypeError(f"options must be a dict (or None); got {type(options).__name__}")
    else:
        options = dict(options)
    _check_times(t, event_fn)
    if event_fn is not None:
        event_fn = _combine_event_functions(event_fn, t[0], y0)

    shapes = None
    if isinstance(y0, tuple):
        if len(y0) == 0 or not all(isinstance(y, torch.Tensor) for y in y0):
            raise TypeError("y0 must be a tensor or a non-empty tuple of tensors; got a tuple of "
                            f"{[type(y).__name__ for y in y0]}")
        shapes = [y.shape for y in y0]
        flat_y0 = torch.cat([y.reshape(-1) for y in y0])
        rtol = _tuple_tol("rtol", rtol, shapes)
        atol = _tuple_tol("atol", atol, shapes)
    elif isinstance(y0, torch.Tensor):
        flat_y0 = y0.reshape(-1)
    else:
        raise TypeError(f"y0 must be a torch.Tensor or a tuple of tensors; got {type(y0).__name__}")
    if flat_y0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y0 has dtype {flat_y0.dtype}; pyode integrates float32 or float64 states: convert "
                        "with y0.float() or y0.double() (complex states: split into real and imaginary parts)")
    if flat_y0.numel() == 0:
        raise ValueError(f"y0 has no elements (shape {tuple(y0.shape) if shapes is None else shapes})")
    if not bool(torch.isfinite(flat_y0).all()):
        raise ValueError("y0 contains NaN or Inf; every initial value must be finite")
    shape = y0.shape if shapes is None else flat_y0.shape
    rtol = _tolerance("rtol", rtol, flat_y0)
    atol = _tolerance("atol", atol, flat_y0)

    reversed_ = len(t) > 1 and bool(t[0] > t[1])
    if reversed_:
        t = -t
        for name in ("step_t", "jump_t"):
            if isinstance(options.get(name), torch.Tensor):
                options[name] = -options[name]
        if options.get("grid_constructor") is not None:
            user_grid = options["grid_constructor"]
            options["grid_constructor"] = lambda f, y, tt: -user_grid(f, y, -tt)
    if t.device != flat_y0.device:
        warnings.warn("t is not on the same device as y0. Coercing to y0.device.")
        t = t.to(flat_y0.device)

    spec = Spec(func=None, y0=flat_y0, t=t, rtol=rtol, atol=atol, method=method, options=options,
                event_fn=None, reversed=reversed_, shapes=shapes, shape=shape, user_norm="norm" in options)
    spec.func = _flat_func(func, spec)
    spec.options["norm"] = _flat_norm(options.get("norm"), spec)
    if event_fn is not None:
        spec.event_fn = _flat_event(event_fn, spec)
    _warn_callbacks(func, method)
    return spec


def _check_times(t, event_fn) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a 1-D torch.Tensor of output times; got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise TypeError(f"t must be a floating point tensor; got dtype {t.dtype}: use t.double()")
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"t must be one-dimensional and non-empty; got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or Inf; output times must be finite")
    if event_fn is not None and len(t) != 2:
        raise ValueError(f"We require len(t) == 2 when in event handling mode, but got len(t)={len(t)}.")
    if len(t) > 1:
        step = t[1:] - t[:-1]
        if not (bool((step > 0).all()) or bool((step < 0).all())):
            raise ValueError("t must be strictly increasing or decreasing; got "
                             f"{t.detach().cpu().tolist() if len(t) <= 8 else 'a non-monotone sequence'}")


def _tuple_tol(name: str, tol, shapes):
    """A per-tensor tolerance for a tuple state (one entry per tensor) expanded to the flat state."""
    if (isinstance(tol, torch.Tensor) and tol.ndim == 0) or not isinstance(tol, (tuple, list, torch.Tensor)):
        return tol
    tol = tuple(tol)
    if len(tol) != len(shapes):
        raise ValueError(f"{name} has {len(tol)} entries for a tuple y0 of {len(shapes)} tensors; give one "
                         f"{name} per tensor, or a single number")
    return torch.cat([torch.as_tensor(v).expand(s.numel()) for v, s in zip(tol, shapes)])


def _tolerance(name: str, tol, y0: torch.Tensor):
    if isinstance(tol, torch.Tensor):
        if tol.requires_grad:
            raise ValueError(f"{name} cannot require gradient")
        if tol.numel() == 1:
            tol = float(tol)
        else:
            if tol.numel() != y0.numel():
                raise ValueError(f"{name} has {tol.numel()} elements for a state of {y0.numel()}; give a number "
                                 f"or one tolerance per element of y0")
            tol = tol.detach().reshape(-1).to(device=y0.device, dtype=torch.float64)
            if not bool((tol >= 0).all()) or not bool(torch.isfinite(tol).all()):
                raise ValueError(f"{name} must be finite and non-negative")
            return tol
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor; got {type(tol).__name__}")
    tol = float(tol)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"{name} must be finite and non-negative; got {tol}")
    return tol


def _flat_func(func: Callable, spec: Spec) -> Callable:
    """``func`` on the flat state and in the increasing time frame, with torchdiffeq's time dtype.

    The solvers' times are float64; ``func`` sees them in the state's dtype, as torchdiffeq's. A time
    just beside a jump time (``jump_t``/``step_t``: the left or right limit there) that would round
    onto the jump in a float32 state is sent to the float32 neighbour on its own side instead, as
    torchdiffeq's perturbation (``nextafter`` in the state's dtype) does: otherwise the left limit
    at a jump would see ``f`` after the jump.
    """
    sign = -1.0 if spec.reversed else 1.0
    cast_time = _time_cast(spec)

    def flat(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # y's dtype is the state's, except on torchdiffeq's fixed grid with a 0-d state (there
        # float32 turns float64, and func sees both in float64, as in torchdiffeq).
        tt = cast_time(t, y.dtype)
        out = func(-tt if spec.reversed else tt, spec.unflatten(y, ()))
        if spec.shapes is None:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"func must return a tensor for a tensor state; got {type(out).__name__}")
            dy = out.reshape(-1)
        else:
            if not isinstance(out, (tuple, list)) or len(out) != len(spec.shapes):
                raise TypeError(f"func must return a tuple of {len(spec.shapes)} tensors for a tuple state; got "
                                f"{type(out).__name__}")
            dy = torch.cat([o.reshape(-1) for o in out])
        if dy.numel() != y.numel():
            raise ValueError(f"func returned {dy.numel()} values for a state of {y.numel()}; dy/dt must have the "
                             "shape of y")
        return dy if sign > 0 else -dy

    # The solver callbacks torchdiffeq calls, as functions of (t0, y0_flat, dt) in the increasing
    # frame that call the user's in the user's frame and layout. The fixed-grid solver reads
    # callback_step off the flat func, as torchdiffeq's reads it off its wrapped func.
    spec.callbacks = {}
    for name in _CALLBACKS:
        user_callback = getattr(func, name, None)
        if callable(user_callback) and name in spec.method.callbacks:
            def callback(t0, y0, dt, _user=user_callback):
                return _user(-t0 if spec.reversed else t0, spec.unflatten(y0, ()), dt)

            spec.callbacks[name] = callback
    if "callback_step" in spec.callbacks and spec.method.family == "fixed_grid":
        flat.callback_step = spec.callbacks["callback_step"]
    return flat


def _time_cast(spec: Spec) -> Callable[[torch.Tensor, torch.dtype], torch.Tensor]:
    """Solver times to the state's dtype, keeping a time beside a jump time on its side."""
    jumps = [torch.as_tensor(spec.options[name]).reshape(-1) for name in ("jump_t", "step_t")
             if spec.options.get(name) is not None]
    if not jumps:
        return lambda t, dtype: t.to(dtype)
    jumps = torch.cat(jumps).to(spec.y0.device)

    def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        tt = t.to(dtype)
        if t.dtype == dtype:
            return tt
        with torch.no_grad():
            back = tt.to(t.dtype)
            if not bool((back != t).any()) or not bool((jumps.to(dtype) == tt).any()):
                return tt
            side = torch.nextafter(tt, torch.where(t > back, tt + 1, tt - 1))
            nudge = torch.where(back != t, side, tt) - tt
        return tt + nudge

    return cast


def _flat_norm(norm: Optional[Callable], spec: Spec) -> Callable:
    """The error norm on the flat state: the user's (given the user's layout) or torchdiffeq's default."""
    if norm is None:
        return rms_norm if spec.shapes is None else (lambda x: mixed_norm(spec.unflatten(x, ())))
    if not callable(norm):
        raise TypeError(f"options['norm'] must be a function of the state returning a scalar; got "
                        f"{type(norm).__name__}")
    return lambda x: norm(spec.unflatten(x, ()))


def _flat_event(event_fn: Callable, spec: Spec) -> Callable:
    def flat(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return event_fn(-t if spec.reversed else t, spec.unflatten(y, ()))
    return flat


def _combine_event_functions(event_fn: Callable, t0: torch.Tensor, y0) -> Callable:
    """Several event functions as one: each flipped to start positive, the event when the first hits 0."""
    with torch.no_grad():
        signs = torch.sign(event_fn(t0, y0))

    def combined(t, y):
        return torch.min(event_fn(t, y) * signs)

    return combined


def _warn_callbacks(func, method: Method) -> None:
    """torchdiffeq's warning for the callbacks on ``func`` that the method does not call: the
    fixed-grid methods call ``callback_step`` only, ``scipy_solver`` none. (``*_adjoint``
    callbacks belong to ``odeint_adjoint``'s backward solve and are not checked here.)"""
    found = {name for name in _CALLBACKS if callable(getattr(func, name, None)) and name not in method.callbacks}
    if found:
        warnings.warn(f"Solver '{method.name}' does not support callbacks {found}: pyode.compat.torchdiffeq does "
                      "not call them with this method (the adaptive methods call callback_step, "
                      "callback_accept_step and callback_reject_step; the fixed-grid methods callback_step)")
