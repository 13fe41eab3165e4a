"""The batched iteration matrix of the implicit families, factorised once per step."""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["IterationMatrix", "factorize"]


class IterationMatrix(NamedTuple):
    h: torch.Tensor        # (B, 1) step in the state dtype; 1 for members that do not move
    keep: torch.Tensor     # (B, 1) bool: the member moves this step
    LU: torch.Tensor
    pivots: torch.Tensor
    singular: torch.Tensor  # (B,) bool: a moving member whose matrix is singular

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(self.LU, self.pivots, rhs[..., None])[..., 0]


def factorize(J: torch.Tensor, hs: torch.Tensor, gamma: float, rosenbrock: bool, mass=None) -> IterationMatrix:
    """LU of ``I/(hγ) - J`` (Rosenbrock) or ``I - hγJ`` (ESDIRK Newton), per member; with a
    :class:`~._mass.MassMatrix` ``M`` in place of ``I``.

    Members that do not move (``hs == 0``) get the identity: finite, never singular, and the
    callers zero their increments.
    """
    B, n = J.shape[0], J.shape[-1]
    moving = hs != 0
    keep = moving[:, None]
    h = torch.where(moving, hs, torch.ones_like(hs)).to(J.dtype)[:, None]
    eye = torch.eye(n, dtype=J.dtype, device=J.device)
    hg = (h * gamma)[..., None]
    M = eye if mass is None else mass.matrix.to(J.dtype)
    W = M / hg - J if rosenbrock else M - hg * J
    LU, pivots, info = torch.linalg.lu_factor_ex(torch.where(keep[..., None], W, eye))
    return IterationMatrix(h, keep, LU, pivots, moving & (info != 0))
