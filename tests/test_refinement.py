"""The Rosenbrock stage solves' iterative refinement: the residual in twice the working precision
(against exact rational arithmetic), when it is switched on, and what it buys on E5."""
import math
from fractions import Fraction

import pytest
import torch

import pyode
import pyode.native._refinement as refinement
from pyode.native._refinement import _residual, _sum2, needs_refinement
from pyode.problems import ivp_test_set


def _exact_residual(rhs, x, J, hg):
    """The exact residual of the stored floats, and the sum of its terms' magnitudes."""
    n = x.shape[-1]
    out = []
    for b in range(x.shape[0]):
        h = Fraction(float(hg[b, 0]))
        xs = [Fraction(float(v)) for v in x[b]]
        row = []
        for i in range(n):
            terms = [Fraction(float(rhs[b, i])), -xs[i] / h] + [Fraction(float(J[b, i, j])) * xs[j] for j in range(n)]
            row.append((sum(terms), sum(abs(t) for t in terms)))
        out.append(row)
    return out


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_residual_is_correctly_rounded_on_badly_scaled_systems(n):
    gen = torch.Generator().manual_seed(n)
    B = 5
    # Entries across 30 decades, as a stiff Jacobian's: the plain residual loses everything here.
    J = torch.randn(B, n, n, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-15, 15, (B, n, n), generator=gen)
    x = torch.randn(B, n, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(-12, 0, (B, n), generator=gen)
    hg = torch.rand(B, 1, generator=gen, dtype=torch.float64) * 1e3
    # A right-hand side that nearly cancels the product, so that the residual is tiny.
    rhs = x / hg - (J @ x[..., None])[..., 0]
    r = _residual(rhs, x, J, hg)
    exact = _exact_residual(rhs, x, J, hg)
    naive = rhs - (x / hg - (J @ x[..., None])[..., 0])
    eps = Fraction(torch.finfo(torch.float64).eps) / 2
    gamma = (n + 2) * eps / (1 - (n + 2) * eps)
    worst_naive = 0.0
    for b in range(B):
        for i in range(n):
            e, size = exact[b][i]
            # Ogita, Rump & Oishi's bound for a sum in twice the precision: eps |s| + gamma_n^2 sum |p|
            # (plus a few roundings of the small error terms).
            assert abs(Fraction(float(r[b, i])) - e) <= 4 * eps * abs(e) + 4 * gamma**2 * size, (b, i)
            if e != 0:
                worst_naive = max(worst_naive, float(abs(Fraction(float(naive[b, i])) - e) / abs(e)))
    if n > 1:
        assert worst_naive > 1e-6     # the plain residual is wrong where the compensated one is right


def test_sum2_of_cancelling_terms():
    big = torch.tensor([[1e16, 1.0, 1.0, -1e16, 1e-3]], dtype=torch.float64)
    exact = math.fsum(big[0].tolist())
    assert abs(float(_sum2(big)[0]) - exact) <= math.ulp(exact)
    assert abs(float(big.sum()) - exact) >= 1.0      # the plain sum drops the ones


def test_switched_on_only_where_abstol_is_below_the_state_round_off():
    assert needs_refinement(torch.tensor([1.76e-3, 0.0, 0.0, 0.0], dtype=torch.float64), 1.7e-24)
    assert not needs_refinement(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 1e-14)
    assert not needs_refinement(torch.ones(2, dtype=torch.float32), 1e-6)
    assert needs_refinement(torch.ones(2, dtype=torch.float32), 1e-8)
    assert needs_refinement(torch.ones(3, dtype=torch.float64), torch.tensor([1e-6, 1e-17, 1e-6]))
    assert not needs_refinement(torch.zeros(3, dtype=torch.float64), 1e-30)


@pytest.mark.slow
def test_e5_keeps_its_invariant_only_with_refinement(monkeypatch):
    tp = ivp_test_set("e5")
    rtol = 1e-6

    def invariant_and_digits():
        sol = pyode.solve(tp.prob, pyode.Rodas5P(), reltol=rtol, abstol=tp.abstol(rtol), saveat=[tp.prob.tspan[1]])
        u = sol.u[-1]
        return abs(float(u[1] - u[2] - u[3])), tp.digits(u)

    drift, digits = invariant_and_digits()
    monkeypatch.setattr(refinement, "_ULPS", 0.0)
    plain_drift, plain_digits = invariant_and_digits()
    # y2 and y3 end near 8.9e-22; without refinement the invariant drifts past them.
    assert drift < 2e-23 and digits > 1.0, (drift, digits)
    assert plain_drift > 1e-22 and plain_digits < 0.5, (plain_drift, plain_digits)
