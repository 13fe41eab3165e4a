"""The written-out LU of small batched matrices (the fused Rosenbrock step's iteration matrix)."""
import pytest
import torch

from pyode.native._small_lu import SMALL_LU_MAX, small_lu_factor


@pytest.mark.parametrize("n", range(1, SMALL_LU_MAX + 1))
def test_factors_and_solutions_match_lapack(n):
    g = torch.Generator().manual_seed(n)
    W = torch.randn(64, n, n, generator=g, dtype=torch.float64) + 3 * torch.eye(n, dtype=torch.float64)
    if n > 1:
        W[:8, 0, 0] = 0.0                       # zero leading pivot: row exchanges needed
        W[8:16, :, 0] *= 1e-12                  # tiny column: pivoting by magnitude matters
    b = torch.randn(64, n, generator=g, dtype=torch.float64)
    lu = small_lu_factor(W)
    LU, pivots = torch.linalg.lu_factor(W)
    U = torch.stack([torch.stack(row, -1) for row in lu.U], -2)
    torch.testing.assert_close(U, LU.triu(), rtol=1e-13, atol=1e-13)     # the same pivots as getrf
    x = lu.solve(b)
    torch.testing.assert_close(W @ x[..., None], b[..., None], rtol=0, atol=1e-10)
    torch.testing.assert_close(x, torch.linalg.lu_solve(LU, pivots, b[..., None])[..., 0], rtol=1e-9, atol=1e-11)
    assert not bool(lu.singular.any())


def test_singular_members_are_flagged():
    W = torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 1.0]]],
                     dtype=torch.float64)
    assert small_lu_factor(W).singular.tolist() == [True, False, True]
    assert (torch.linalg.lu_factor_ex(W).info != 0).tolist() == [True, False, True]


def test_gradient_through_factorisation_and_solve():
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(3, 4, 4, generator=g, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64))
    b = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda W, b: small_lu_factor(W).solve(b), (W.requires_grad_(), b.requires_grad_()))
