"""torchdiffeq's ``scipy_solver``: :func:`scipy.integrate.solve_ivp` on the flat state, no gradients.

Kept for code that uses it; pyode's own stiff methods (``method="rodas5p"``, ``"fbdf"``, ...) solve
the same problems in torch, batched and differentiable.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ._inputs import Spec

__all__ = ["solve_scipy"]

_KNOWN = {"min_step", "max_step", "solver", "norm", "grid_points", "eps"}


def solve_scipy(spec: Spec) -> torch.Tensor:
    from scipy.integrate import solve_ivp

    opts = spec.options
    unknown = {k: v for k, v in opts.items() if k not in _KNOWN}
    if unknown:
        warnings.warn(f"ScipyWrapperODESolver: Unexpected arguments {unknown}")
    y0, dtype, device = spec.y0, spec.y0.dtype, spec.y0.device
    if len(spec.t) == 1:
        return y0.detach()[None]
    func = spec.func

    def f(t, y):
        with torch.no_grad():
            dy = func(torch.tensor(t, dtype=dtype, device=device), torch.as_tensor(y, dtype=dtype, device=device))
        return dy.detach().cpu().numpy()

    t = spec.t.detach().cpu().numpy()
    rtol, atol = (x.cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (spec.rtol, spec.atol))
    sol = solve_ivp(f, (float(t[0]), float(t[-1])), y0.detach().cpu().numpy().astype(np.float64), t_eval=t,
                    method=opts.get("solver", "LSODA"), rtol=rtol, atol=atol, min_step=opts.get("min_step", 0.0),
                    max_step=opts.get("max_step", np.inf))
    if not sol.success:
        raise RuntimeError(f"scipy_solver ({opts.get('solver', 'LSODA')}) failed: {sol.message} (reached "
                           f"t={sol.t[-1] if sol.t.size else t[0]:.6g} of {t[-1]:.6g})")
    return torch.as_tensor(sol.y.T, dtype=dtype, device=device)
