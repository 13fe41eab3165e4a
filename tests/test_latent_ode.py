"""pyode.nn.LatentODE: decoding is the latent flow, the ELBO is its formula, masked entries are
ignored, gradients reach every part, both encoders run on irregular times, bad input is named."""
import math

import pytest
import torch

from pyode.nn import LatentODE

F64 = torch.float64


class LinearLatent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[0.0, 1.0], [-1.0, -0.1]], dtype=F64))

    def forward(self, z):
        return z @ self.A.T


def _model(**kw):
    torch.manual_seed(0)
    return LatentODE(2, latent_dim=2, hidden=8, dynamics=LinearLatent(), **kw).double()


def _data(B=3, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.cumsum(0.1 + torch.rand(T, generator=g, dtype=F64), 0) - 0.1      # irregular, from ~0
    x = torch.randn(B, T, 2, generator=g, dtype=F64)
    return x, t


def test_decode_is_the_latent_flow_through_the_decoder():
    model = _model(reltol=1e-10, abstol=1e-12)
    z0 = torch.tensor([[1.0, 0.0], [0.3, -0.5]], dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.3, 2.0], dtype=F64)
    out = model.decode(z0, t)
    A = model.dynamics.A.detach()
    z = torch.stack([z0 @ torch.linalg.matrix_exp(A * float(s)).T for s in t], 1)        # (B, T, 2)
    assert torch.allclose(out, model.decoder(z), rtol=1e-8, atol=1e-10)


def test_elbo_is_likelihood_minus_kl_and_ignores_masked_entries():
    model = _model()
    x, t = _data()
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 2] = mask[1, 5] = mask[2, 0] = False
    elbo = model.elbo(x, t, mask, generator=torch.Generator().manual_seed(4))
    mu, logvar = model.encode(x, t, mask)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    pred = model.decode(mu + torch.exp(0.5 * logvar) * eps, t)
    var = 0.3 ** 2
    ll = (-0.5 * ((x - pred) ** 2 / var + math.log(2 * math.pi * var)) * mask[..., None]).sum((1, 2))
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
    assert torch.allclose(elbo, ll - kl, rtol=1e-10)
    changed = x.clone()
    changed[0, 2] += 100.0                          # a masked entry: neither encoder nor likelihood sees it
    again = model.elbo(changed, t, mask, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(again, elbo, rtol=1e-12)


@pytest.mark.parametrize("encoder", ["rnn", "ode-rnn"])
def test_the_encoder_reads_a_masked_grid_as_the_observed_points_alone(encoder):
    # A member observed at some grid points encodes as the sequence of those points on their own
    # times: the GRU sees the time to each member's next observation, not the grid spacing (and the
    # ODE-RNN's state flows across the unobserved grid points as across one gap; both members are
    # observed at the first and last grid points, where the ODE-RNN also starts and ends).
    model = _model(encoder=encoder, reltol=1e-11, abstol=1e-13)
    x, t = _data(B=2, T=9)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, [0, 3, 4, 8]] = True
    mask[1, [0, 2, 5, 6, 8]] = True
    mu, logvar = model.encode(x, t, mask)
    tol = 1e-12 if encoder == "rnn" else 1e-8
    for b in range(2):
        keep = mask[b].nonzero()[:, 0]
        mu_b, logvar_b = model.encode(x[b:b + 1, keep], t[keep])
        torch.testing.assert_close(mu[b], mu_b[0], rtol=tol, atol=tol)
        torch.testing.assert_close(logvar[b], logvar_b[0], rtol=tol, atol=tol)
    grid = model.encode(x[:1], t)[0]                 # every point observed: another encoding
    assert float((grid[0] - mu[0]).abs().max().detach()) > 1e-3


@pytest.mark.parametrize("encoder", ["rnn", "ode-rnn"])
def test_gradients_reach_encoder_dynamics_and_decoder(encoder):
    model = _model(encoder=encoder, reltol=1e-10, abstol=1e-12)
    x, t = _data()
    loss = -model.elbo(x, t, generator=torch.Generator().manual_seed(0)).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name
    # finite differences of the (deterministic) loss in the latent dynamics
    model.zero_grad()
    f = lambda: float(-model.elbo(x, t, generator=torch.Generator().manual_seed(0)).mean())   # noqa: E731
    (g,) = torch.autograd.grad(-model.elbo(x, t, generator=torch.Generator().manual_seed(0)).mean(), model.dynamics.A)
    h = 1e-6
    with torch.no_grad():
        model.dynamics.A[0, 1] += h
        up = f()
        model.dynamics.A[0, 1] -= 2 * h
        down = f()
        model.dynamics.A[0, 1] += h
    assert abs(float(g[0, 1]) - (up - down) / (2 * h)) <= 1e-6 * max(1.0, abs(float(g[0, 1])))


def test_predict_interpolates_and_extrapolates_from_the_posterior_mean():
    model = _model()
    x, t = _data()
    t_pred = torch.linspace(float(t[0]), 2 * float(t[-1]), 15, dtype=F64)
    out = model.predict(x, t, t_pred)
    assert out.shape == (3, 15, 2)
    mu, _ = model.encode(x, t)
    assert torch.allclose(out, model.decode(mu, t_pred))
    ode_rnn = _model(encoder="ode-rnn")
    assert not torch.allclose(ode_rnn.encode(x, t)[0], mu)      # its own encoder


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="encoder='lstm'; choose 'rnn' or 'ode-rnn'"):
        LatentODE(2, encoder="lstm")
    model = _model()
    x, t = _data()
    with pytest.raises(ValueError, match=r"x must be \(batch, times, 2\)"):
        model.elbo(x[..., :1], t)
    with pytest.raises(ValueError, match="t must be strictly increasing"):
        model.elbo(x, t.flip(0))
    with pytest.raises(ValueError, match=r"t_pred must start at t\[0\]"):
        model.predict(x, t, t + 1.0)
    with pytest.raises(ValueError, match=r"mask must be \(batch, times\)"):
        model.elbo(x, t, torch.ones(3, 6, dtype=torch.bool))


def test_spirals_are_chen_et_als():
    from pyode.demos.latent_ode import N_SAMPLE, spirals

    truth, noisy, t = spirals(64, torch.Generator().manual_seed(0))
    assert truth.shape == noisy.shape == (64, N_SAMPLE, 2) and t.shape == (N_SAMPLE,)
    left = truth[:, 0, 0] < 0                                   # clockwise, around (-5, 0)
    assert 0 < int(left.sum()) < 64
    r_cc = (truth[~left] - torch.tensor([5.0, 0.0])).norm(dim=-1)
    theta = torch.atan2(truth[~left][..., 1], truth[~left][..., 0] - 5.0)
    # r = 0.3 θ: the radius grows by 0.3 × 2π per turn and the angle matches θ modulo 2π
    assert torch.allclose(torch.remainder(r_cc / 0.3 - theta + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros_like(r_cc), atol=1e-3)
    noise = (noisy - truth).std()
    assert abs(float(noise) - 0.3) < 0.02


def test_latent_ode_demo_smoke(tmp_path):
    import json

    from pyode.cli import main

    assert main(["demo", "latent-ode", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["train_sequences"] == 16
    for model in ("latent_ode", "rnn"):
        assert 0 < metrics[model]["extrapolation_rmse"] < 50
    for name in ("latent_ode.png", "loss.png", "model.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
