"""One generic explicit Runge-Kutta step, driven by a :class:`ButcherTableau`."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ._stepper import AbstractStepper, Attempt
from .tableau import ButcherTableau

__all__ = ["ExplicitRKStepper", "lincomb"]


def lincomb(coeffs: Sequence[float], ks: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """``sum_i coeffs[i] * ks[i]`` skipping zero coefficients; ``None`` if all are zero."""
    acc = None
    for c, k in zip(coeffs, ks):
        if c == 0.0:
            continue
        acc = k * c if acc is None else torch.add(acc, k, alpha=c)
    return acc


class ExplicitRKStepper(AbstractStepper):
    """Per-solve step function of an explicit RK method (coefficients converted to floats once).

    The state carried between steps is ``(t, y, k1)`` with ``k1 = f(y, t)``: for FSAL methods the
    last stage gives the next ``k1`` for free; for the others ``f(y1, t1)`` is evaluated once the
    step is accepted, which is the next step's first stage anyway (no extra cost) and provides the
    end-point derivative the interpolants use (cubic Hermite; Verner's and DOP853's extensions).
    Extra stages of a continuous extension are evaluated by :meth:`dense_stages`, only for steps
    that are interpolated.
    """

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.c = [float(x) for x in tableau.c]
        self.a = [[float(x) for x in row] for row in tableau.a]
        self.b = [float(x) for x in tableau.b]
        self.b_error = None if tableau.b_error is None else [float(x) for x in tableau.b_error]
        self.b_error_low = None if tableau.b_error_low is None else [float(x) for x in tableau.b_error_low]
        self.fsal = tableau.fsal
        self.order = tableau.order
        self.embedded_order = tableau.embedded_order
        self.interpolant_order = tableau.interpolant_order
        self.dense = tableau.dense_coefficients()
        self.extra_c = [float(x) for x in tableau.dense_extra_c or ()]
        self.extra_a = [[float(x) for x in row] for row in tableau.dense_extra_a or ()]
        s = tableau.stages
        # The error estimate needs f(t1, y1) when an error weight sits on it (DOP853).
        self.error_needs_f1 = any(len(e) == s + 1 and e[s] != 0.0
                                  for e in (self.b_error or [], self.b_error_low or []))

    def step(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, t_end: torch.Tensor, y: torch.Tensor,
             k1: torch.Tensor) -> Attempt:
        """Stages of one step of signed size ``hs`` from ``(t, y)`` to ``t_end``.

        Stages with ``c = 1`` are evaluated at ``t_end`` itself rather than ``t + hs``: when the
        step lands on a stop (a discontinuity of ``f``), round-off must not put them on the wrong side.
        """
        h = hs.to(y.dtype)[:, None]
        ks = [k1]
        y1 = None
        for i in range(1, len(self.c)):
            yi = y + h * lincomb(self.a[i], ks)
            ks.append(f(yi, t_end if self.c[i] == 1.0 else t + self.c[i] * hs))
            y1 = yi
        if self.fsal:
            f1 = ks[-1]
        else:
            y1 = y + h * lincomb(self.b, ks)
            f1 = f(y1, t_end) if self.error_needs_f1 else None
        err = err_low = None
        if self.b_error is not None:
            with torch.no_grad():
                err = self._error(h, self.b_error, ks, f1)
                if self.b_error_low is not None:
                    err_low = self._error(h, self.b_error_low, ks, f1)
        return Attempt(y1=y1, err=err, err_low=err_low, f1=f1, stages=ks)

    @staticmethod
    def _error(h, weights, ks, f1):
        terms = ks + [f1] if len(weights) > len(ks) else ks
        return h * lincomb(weights, terms)

    def dense_stages(self, f: Callable, t: torch.Tensor, hs: torch.Tensor, y: torch.Tensor,
                     attempt: Attempt, f1: torch.Tensor) -> torch.Tensor:
        """The derivatives the continuous extension combines, ``(B, s + 1 + m, n)``.

        ``ks + [f1]`` followed by the tableau's ``m`` extra stages, evaluated here (one call of ``f``
        each, for the whole batch, at times ``t + c_j * hs``) so that only steps that are actually
        interpolated pay for them. ``y`` is the state at the start of the step, ``f1 = f(y1, t1)``.
        """
        K = list(attempt.stages) + [f1]
        if self.extra_c:
            h = hs.to(y.dtype)[:, None]
            for c, row in zip(self.extra_c, self.extra_a):
                incr = lincomb(row, K)
                K.append(f(y if incr is None else y + h * incr, t + c * hs))
        return torch.stack(K, -2)
