"""solve(internalnorm=...): the error norm of the step-size control is the user's when given."""
import math

import pytest
import torch

import pyode

F64 = torch.float64


def oscillator():
    # One fast-varying component among slow ones: RMS dilutes its error, the max norm does not.
    f = lambda u, p, t: torch.stack([-u[..., 0] * 0 + torch.cos(5 * t) * 5, u[..., 2], -u[..., 1]], -1)  # noqa: E731
    return pyode.ODEProblem(f, torch.tensor([0.0, 1.0, 0.0], dtype=F64), (0.0, 4.0))


def test_max_norm_is_stricter_than_rms_and_more_accurate():
    prob = oscillator()
    ts = torch.linspace(0.0, 4.0, 41, dtype=F64)
    exact = torch.sin(5 * ts)
    rms = pyode.solve(prob, pyode.Tsit5(), reltol=1e-5, abstol=1e-5, saveat=ts)
    mx = pyode.solve(prob, pyode.Tsit5(), reltol=1e-5, abstol=1e-5, saveat=ts,
                     internalnorm=lambda e: e.abs().amax(-1))
    assert mx.stats.naccept > rms.stats.naccept
    assert (mx.u[:, 0] - exact).abs().max() < (rms.u[:, 0] - exact).abs().max()


def test_norm_sees_one_row_per_member_and_the_default_is_rms():
    shapes = []

    def rms(e):
        shapes.append(tuple(e.shape))
        return e.square().mean(-1).sqrt()

    u0 = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.5, 0.5]], dtype=F64)
    prob = pyode.ODEProblem(lambda u, p, t: torch.stack([u[..., 1], -u[..., 0]], -1), u0, (0.0, 3.0))
    ours = pyode.solve(prob, pyode.DP5(), reltol=1e-7, abstol=1e-9, internalnorm=rms)
    default = pyode.solve(prob, pyode.DP5(), reltol=1e-7, abstol=1e-9)
    assert set(shapes) == {(3, 2)}
    assert torch.equal(ours.u, default.u) and torch.equal(ours.stats.naccept, default.stats.naccept)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(internalnorm="max"), TypeError, "internalnorm must be a function"),
    (dict(internalnorm=lambda e: e.abs().amax()), ValueError, "internalnorm returned shape \\(\\)"),
    (dict(internalnorm=lambda e: e.abs().amax(-1), sensealg=pyode.ForwardSensitivity()), ValueError,
     "not supported with ForwardSensitivity"),
    (dict(internalnorm=lambda e: e.abs().amax(-1), backend="julia"), ValueError, "not supported by backend='julia'"),
])
def test_bad_internalnorm(kwargs, error, match):
    with pytest.raises(error, match=match):
        pyode.solve(oscillator(), pyode.Tsit5(), **kwargs)


def test_adjoint_with_internalnorm_differentiates_the_same_solution():
    k = torch.tensor(1.3, dtype=F64, requires_grad=True)
    prob = pyode.ODEProblem(lambda u, p, t: -p * u, torch.tensor([1.0, 2.0], dtype=F64), (0.0, 1.0), k)
    sol = pyode.solve(prob, pyode.Tsit5(), reltol=1e-9, abstol=1e-11, sensealg=pyode.GaussAdjoint(),
                      internalnorm=lambda e: e.abs().amax(-1))
    (g,) = torch.autograd.grad(sol.u[-1].sum(), k)
    assert abs(float(g) + 3 * math.exp(-1.3)) < 1e-8
