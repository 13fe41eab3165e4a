"""The problem definition: right-hand side, initial state, time span, parameters."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch

__all__ = ["ODEProblem", "check_rhs_output"]

_SUPPORTED_DTYPES = (torch.float32, torch.float64)


def _as_state(u0: Any) -> torch.Tensor:
    if isinstance(u0, torch.Tensor):
        u = u0
    elif isinstance(u0, (np.ndarray, list, tuple, numbers.Number)):
        arr = np.asarray(u0)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"u0 must be a real floating tensor; got an array of dtype {arr.dtype}")
        u = torch.as_tensor(arr)
    else:
        raise TypeError(f"u0 must be a torch.Tensor (or a NumPy array / list of numbers); got {type(u0).__name__}")
    if u.is_complex():
        raise TypeError(f"u0 has complex dtype {u.dtype}; split it into real and imaginary parts as extra states")
    if not u.is_floating_point():
        raise TypeError(f"u0 has integer dtype {u.dtype}; pass a floating tensor, e.g. u0.double() or u0.float()")
    if u.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"u0 has dtype {u.dtype}; pyode integrates float32 or float64 states "
                        f"(float64 is recommended for stiff problems): convert with u0.float() or u0.double()")
    if u.ndim == 0:
        raise ValueError("u0 is a 0-d tensor; pass shape (n,) for one problem or (*batch, n) for a batch, "
                         "e.g. u0.reshape(1)")
    if u.shape[-1] == 0 or u.numel() == 0:
        raise ValueError(f"u0 has shape {tuple(u.shape)} with no elements; the state needs at least one component")
    if not bool(torch.isfinite(u).all()):
        bad = torch.nonzero(~torch.isfinite(u.detach()))[0].tolist()
        raise ValueError(f"u0 contains NaN or Inf (first at index {tuple(bad)}); every initial value must be finite")
    return u


def _as_mass_matrix(M: Any, u0: torch.Tensor) -> torch.Tensor:
    n = u0.shape[-1]
    try:
        m = torch.as_tensor(M.detach() if isinstance(M, torch.Tensor) else np.asarray(M, dtype=float))
    except (TypeError, ValueError):
        raise TypeError(f"mass_matrix must be an (n, n) tensor or array of numbers; got {type(M).__name__}") from None
    if m.shape != (n, n):
        raise ValueError(f"mass_matrix has shape {tuple(m.shape)}, but the state has n = {n} components: "
                         f"pass an ({n}, {n}) matrix (one row per equation, one column per component)")
    if not m.is_floating_point() or m.is_complex():
        m = m.to(torch.float64)
    if not bool(torch.isfinite(m).all()):
        raise ValueError("mass_matrix contains NaN or Inf; every entry must be finite")
    if isinstance(M, torch.Tensor) and M.requires_grad:
        raise ValueError("mass_matrix requires grad, but M is treated as a constant (no gradient with "
                         "respect to it); pass M.detach()")
    return m.to(device=u0.device, dtype=torch.float64)


def _time_leaves(tspan: Any) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The entries of ``tspan`` that are tensors requiring grad (None for the others)."""
    if isinstance(tspan, torch.Tensor):
        if not tspan.requires_grad or tspan.numel() != 2:
            return None, None
        flat = tspan.reshape(-1)
        return flat[0], flat[1]
    try:
        t0, t1 = tspan
    except (TypeError, ValueError):
        return None, None
    return tuple(t if isinstance(t, torch.Tensor) and t.requires_grad and t.numel() == 1 else None
                 for t in (t0, t1))


def _as_tspan(tspan: Any) -> Tuple[float, float]:
    if isinstance(tspan, torch.Tensor):
        tspan = tspan.detach().cpu().tolist()
    elif isinstance(tspan, (tuple, list)):
        tspan = [t.detach().reshape(()).item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t
                 for t in tspan]
    try:
        t0, t1 = tspan
        t0, t1 = float(t0), float(t1)
    except (TypeError, ValueError):
        raise ValueError(f"tspan must be a pair (t0, t1) of numbers; got {tspan!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"tspan must be finite; got ({t0}, {t1})")
    if t0 == t1:
        raise ValueError(f"tspan is empty: t0 == t1 == {t0}; give distinct start and end times")
    return t0, t1


@dataclass(frozen=True, eq=False)
class ODEProblem:
    """An initial value problem ``du/dt = f(u, p, t)``, ``u(t0) = u0``.

    Arguments:
        f: right-hand side ``f(u, p, t) -> du/dt`` with the shape of ``u``. ``u`` has shape
            ``(*batch, n)``; ``t`` is a float64 tensor of shape ``u.shape[:-1]`` (0-d for one problem),
            so ``t[..., None]`` broadcasts against ``u``.
        u0: initial state, ``(n,)`` for one problem or ``(*batch, n)`` for independent problems;
            float32 or float64; may require grad.
        tspan: ``(t0, t1)``; ``t1 < t0`` integrates backwards in time. Entries may be tensors
            that require grad: the saved states then carry the gradient with respect to them
            (see :func:`~pyode.solve`).
        p: parameters handed to ``f`` unchanged: a tensor, a tuple/list/dict of tensors, an
            ``nn.Module`` or ``None``.
        jac: optional Jacobian ``jac(u, p, t) -> (*batch, n, n)`` (used by stiff algorithms).
        tgrad: optional time derivative ``tgrad(u, p, t) -> ∂f/∂t`` of shape ``(*batch, n)``, used
            with ``jac`` by Rosenbrock methods (as ODEFunction's ``tgrad``); without it they take
            ``∂f/∂t`` by forward-mode automatic differentiation.
        mass_matrix: optional constant ``(n, n)`` matrix ``M`` of ``M du/dt = f(u, p, t)``
            (ODEFunction's ``mass_matrix``). A singular ``M`` makes the problem a DAE: rows of zeros
            are algebraic equations ``0 = f_i(u, p, t)``. Index-1 DAEs are solved by Rosenbrock23,
            Rodas4, Rodas5P, RadauIIA5, FBDF and QNDF; ``u0`` must satisfy the algebraic equations.

    Raises:
        TypeError / ValueError naming the argument when ``f``/``jac`` are not callable, ``u0`` is
        not a finite floating tensor or ``tspan`` is not a pair of distinct finite numbers.
    """

    f: Callable
    u0: torch.Tensor
    tspan: Tuple[float, float]
    p: Any = None
    jac: Optional[Callable] = None
    tgrad: Optional[Callable] = None
    mass_matrix: Any = None
    # (t0, t1) as tensors where they require grad, else None: the floats in ``tspan`` drive the solve.
    time_leaves: Tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = field(
        init=False, repr=False, default=(None, None))

    def __post_init__(self):
        if not callable(self.f):
            raise TypeError(f"f must be callable as f(u, p, t); got {type(self.f).__name__}")
        if self.jac is not None and not callable(self.jac):
            raise TypeError(f"jac must be callable as jac(u, p, t) or None; got {type(self.jac).__name__}")
        if self.tgrad is not None and not callable(self.tgrad):
            raise TypeError(f"tgrad must be callable as tgrad(u, p, t) or None; got {type(self.tgrad).__name__}")
        object.__setattr__(self, "u0", _as_state(self.u0))
        if self.mass_matrix is not None:
            object.__setattr__(self, "mass_matrix", _as_mass_matrix(self.mass_matrix, self.u0))
        object.__setattr__(self, "time_leaves", _time_leaves(self.tspan))
        object.__setattr__(self, "tspan", _as_tspan(self.tspan))

    @property
    def batch_shape(self) -> torch.Size:
        return self.u0.shape[:-1]

    def remake(self, **changes) -> "ODEProblem":
        """A copy with some fields replaced (as SciML's ``remake``)."""
        tspan = tuple(leaf if leaf is not None else t for leaf, t in zip(self.time_leaves, self.tspan))
        fields = dict(f=self.f, u0=self.u0, tspan=tspan, p=self.p, jac=self.jac, tgrad=self.tgrad,
                      mass_matrix=self.mass_matrix)
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"remake got unknown field(s) {sorted(unknown)}; fields are {sorted(fields)}")
        fields.update(changes)
        return ODEProblem(**fields)


def check_rhs_output(out: Any, u: torch.Tensor) -> None:
    """Turn shape and type mistakes in ``f``'s first output into clear errors."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"f must return a torch.Tensor; it returned {type(out).__name__}")
    if out.shape != u.shape:
        raise ValueError(f"f returned shape {tuple(out.shape)} for u of shape {tuple(u.shape)}; "
                         "f(u, p, t) must return du/dt with the shape of u")
    if not out.is_floating_point():
        raise TypeError(f"f returned dtype {out.dtype}; it must return a floating tensor")
    if out.device != u.device:
        raise ValueError(f"f returned a tensor on {out.device} for u on {u.device}; keep f's output on u's device")
