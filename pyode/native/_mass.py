"""A constant mass matrix ``M`` of ``M du/dt = f(u, p, t)``, as the implicit steppers use it.

The steppers need ``M`` in two places only: in their iteration matrices (``M/(hγ) - J`` in place of
``I/(hγ) - J``) and applied to a few vectors per step. A diagonal ``M`` (the usual form: ones for the
differential equations, zeros for the algebraic ones) is applied as an elementwise product.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["MassMatrix"]


class MassMatrix:
    """``M`` (n, n) in the state's dtype and device, with its diagonal when it has no other entries."""

    def __init__(self, matrix: torch.Tensor, dtype: torch.dtype, device):
        self.matrix = matrix.to(dtype=dtype, device=device)
        off = self.matrix - torch.diag(torch.diagonal(self.matrix))
        self.diag: Optional[torch.Tensor] = torch.diagonal(self.matrix).clone() if not bool(off.any()) else None

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` for ``v`` of shape (..., n)."""
        if self.diag is not None:
            return v * self.diag
        return v @ self.matrix.T
