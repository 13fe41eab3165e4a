"""LU factorisation with partial pivoting for small batched matrices, written out in elementwise ops.

For the 3-20 species of a kinetics model, ``torch.linalg.lu_factor``/``lu_solve`` cost 5-20 µs a
call in argument checks and dispatch (``lu_solve`` validates the pivots with a host synchronisation),
and each call splits a compiled step into separate kernels. Written out row by row, the elimination
and the triangular solves are a few hundred elementwise operations on ``(B,)`` tensors that
``torch.compile`` fuses with the rest of the step. The pivots are LAPACK's (``getrf``: the largest
magnitude in the column, the first one on ties), so the factors agree with ``torch.linalg`` to
round-off. Autograd and ``vmap`` pass through it like any other torch code.
"""
from __future__ import annotations

from typing import List, NamedTuple

import torch

__all__ = ["SmallLU", "small_lu_factor", "SMALL_LU_MAX"]

#: the largest system size written out (the unrolled code grows like n³)
SMALL_LU_MAX = 8


class SmallLU(NamedTuple):
    """``P W = L U`` of a ``(B, n, n)`` batch, kept as per-entry ``(B,)`` tensors."""

    L: List[List[torch.Tensor]]      # L[i][k], k < i: the multipliers (unit diagonal implied)
    U: List[List[torch.Tensor]]      # U[i][j], j >= i
    perm: List[torch.Tensor]         # perm[i]: (B,) long, the original row now at position i
    singular: torch.Tensor           # (B,) bool: an exactly zero pivot

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        """``W x = b`` for ``b`` of shape ``(B, n)``."""
        n = len(self.U)
        pb = b.gather(-1, torch.stack(self.perm, -1))
        z: List[torch.Tensor] = []
        for i in range(n):
            zi = pb[..., i]
            for k in range(i):
                zi = zi - self.L[i][k] * z[k]
            z.append(zi)
        x: List[torch.Tensor] = [z[0]] * n
        for i in range(n - 1, -1, -1):
            xi = z[i]
            for j in range(i + 1, n):
                xi = xi - self.U[i][j] * x[j]
            x[i] = xi / self.U[i][i]
        return torch.stack(x, -1)


def small_lu_factor(W: torch.Tensor) -> SmallLU:
    """Gaussian elimination with partial pivoting of ``W`` ``(B, n, n)``, unrolled over ``n``.

    A zero pivot marks the member singular; its factors are then garbage (inf/nan), as the callers
    discard a singular member's step.
    """
    n = W.shape[-1]
    rows = [[W[..., i, j] for j in range(n)] for i in range(n)]
    perm = [torch.full_like(W[..., 0, 0], i, dtype=torch.long) for i in range(n)]
    L: List[List[torch.Tensor]] = [[] for _ in range(n)]
    singular = torch.zeros_like(W[..., 0, 0], dtype=torch.bool)
    for k in range(n):
        if k < n - 1:
            cand = torch.stack([rows[r][k].abs() for r in range(k, n)], -1)
            p = cand.argmax(-1)                         # first maximum, as getrf
            new_k = rows[k]
            new_perm_k = perm[k]
            multipliers_k = L[k]
            for j in range(1, n - k):
                take = p == j
                r = k + j
                swapped = [torch.where(take, a, b) for a, b in zip(rows[r], new_k)]
                rows[r] = [torch.where(take, a, b) for a, b in zip(rows[k], rows[r])]
                new_k = swapped
                perm_r = torch.where(take, perm[k], perm[r])
                new_perm_k = torch.where(take, perm[r], new_perm_k)
                perm[r] = perm_r
                # multipliers already computed travel with their rows
                L_r = [torch.where(take, a, b) for a, b in zip(L[k], L[r])]
                multipliers_k = [torch.where(take, a, b) for a, b in zip(L[r], multipliers_k)]
                L[r] = L_r
            rows[k], perm[k], L[k] = new_k, new_perm_k, multipliers_k
        pivot = rows[k][k]
        singular = singular | (pivot == 0)
        for r in range(k + 1, n):
            m = rows[r][k] / pivot
            L[r] = L[r] + [m]
            rows[r] = [rows[r][j] if j < k else (torch.zeros_like(m) if j == k else rows[r][j] - m * rows[k][j])
                       for j in range(n)]
    U = [[rows[i][j] for j in range(n)] for i in range(n)]
    return SmallLU(L, U, perm, singular)
