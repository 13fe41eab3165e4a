"""losses: scaled errors, multiple shooting, the conservation regulariser and the augmented Lagrangian."""
import math

import pytest
import torch

import pyode
from pyode import problems
from pyode.data import generate_data
from pyode.losses import (AugmentedLagrangian, ConservationLoss, collocation_loss, collocation_weights, group_ranges,
                          multiple_shooting_loss, scaled_mae, scaled_mse)
from pyode.train import fit

f64 = dict(dtype=torch.float64)


# ---- scaled errors ---------------------------------------------------------------------------------

def test_scaled_losses_match_hand_computed_values():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], **f64)
    target = torch.zeros(2, 2, **f64)
    assert float(scaled_mse(pred, target)) == 7.5                  # (1 + 4 + 9 + 16) / 4
    assert float(scaled_mae(pred, target)) == 2.5                  # (1 + 2 + 3 + 4) / 4
    scale = torch.tensor([1.0, 2.0], **f64)                        # divides the second column by 2
    assert float(scaled_mse(pred, target, scale)) == 3.75          # (1 + 1 + 9 + 4) / 4
    assert float(scaled_mae(pred, target, scale)) == 1.75          # (1 + 1 + 3 + 2) / 4
    assert float(scaled_mse(pred, target, 2.0)) == 7.5 / 4
    assert float(scaled_mae(pred, target, [1.0, 2.0])) == 1.75


def test_per_species_scale_equalises_species_of_very_different_magnitude():
    # Species 1 lives at 1e-5 (like ROBER's y2), species 2 at 1. A 10% error in either species
    # should cost the same once each is divided by its magnitude.
    t = torch.linspace(0, 1, 11, **f64)
    u = torch.stack([1e-5 * (1 + t), 1 + t], -1)
    scale = u.abs().amax(0)
    off_small = u * torch.tensor([1.1, 1.0], **f64)
    off_large = u * torch.tensor([1.0, 1.1], **f64)
    plain = float(scaled_mse(off_small, u)), float(scaled_mse(off_large, u))
    assert plain[0] < 1e-9 * plain[1]                              # unscaled: the small species is invisible
    scaled = float(scaled_mse(off_small, u, scale)), float(scaled_mse(off_large, u, scale))
    assert scaled[0] == pytest.approx(scaled[1], rel=1e-12)
    assert float(scaled_mae(off_small, u, scale)) == pytest.approx(float(scaled_mae(off_large, u, scale)), rel=1e-12)


@pytest.mark.parametrize("loss", [scaled_mse, scaled_mae])
def test_scaled_losses_reject_bad_input_with_clear_errors(loss):
    a, b = torch.zeros(5, 2, **f64), torch.zeros(5, 3, **f64)
    with pytest.raises(ValueError, match=r"pred has shape \(5, 2\) but target has shape \(5, 3\)"):
        loss(a, b)
    with pytest.raises(ValueError, match=r"pred has shape \(5, 2\) but target has shape \(5, 1\)"):
        loss(a, torch.zeros(5, 1, **f64))                           # no silent broadcasting
    with pytest.raises(ValueError, match=r"positive and finite for every species; got scale\[1\] = 0.0"):
        loss(a, a, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"scale\[0\] = -1.0"):
        loss(a, a, [-1.0, 1.0])
    with pytest.raises(ValueError, match=r"scale\[1\] = nan"):
        loss(a, a, [1.0, math.nan])
    with pytest.raises(ValueError, match=r"scale = inf"):
        loss(a, a, math.inf)
    with pytest.raises(ValueError, match=r"shape \(2,\), one entry per species.*got shape \(3,\)"):
        loss(a, a, [1.0, 1.0, 1.0])
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        loss(a, [[0.0, 0.0]] * 5)


# ---- collocation -------------------------------------------------------------------------------------

def test_collocation_weights_are_the_shorter_of_elapsed_and_relaxation_time_over_the_scale():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1e4, 1.0, 0.0], [2.0, -0.5, 0.0], [0.0, 3.0, 0.0]], **f64))
    t = torch.tensor([1e-6, 1e-3, 1.0, 1e3], **f64)
    u = torch.rand(4, 3, **f64)
    scale = torch.tensor([1e-4, 1.0, 2.0], **f64)
    expected = 1.0 / (scale * (1.0 / (t - 1e-7)[:, None] + torch.tensor([1e4, 0.5, 0.0], **f64)))
    # pyode's layer Jacobian (Linear) and reverse mode (a plain function) give the same weights
    for model in (lin, lambda x: x @ lin.weight.T):
        w = collocation_weights(model, t, u, scale, t0=1e-7)
        torch.testing.assert_close(w, expected, rtol=1e-14, atol=0)
        assert not w.requires_grad
    # a fast species (relaxation 1e-4) is weighted by it once t exceeds it; a slow one by t throughout
    assert float(w[3, 0]) == pytest.approx(1.0 / (1e-4 * (1e-3 + 1e4)))
    assert float(w[3, 2]) == pytest.approx(1e3 / 2.0)
    # the loss: weighted squared residuals, differentiable in the model's parameters
    dudt = torch.rand(4, 3, **f64)
    loss = collocation_loss(lin, u, dudt, w)
    torch.testing.assert_close(loss, ((lin(u) - dudt) * w).square().mean())
    (g,) = torch.autograd.grad(loss, lin.weight)
    assert bool(torch.isfinite(g).all()) and float(g.abs().max()) > 0


def test_collocation_rejects_bad_input():
    lin = torch.nn.Linear(2, 2).double()
    u = torch.ones(3, 2, **f64)
    with pytest.raises(ValueError, match="every time must be after t0=0; the first is 0"):
        collocation_weights(lin, torch.tensor([0.0, 1.0, 2.0], **f64), u)
    with pytest.raises(ValueError, match=r"t must be \(K,\) and u \(K, n\); got \(2,\) and \(3, 2\)"):
        collocation_weights(lin, torch.tensor([1.0, 2.0], **f64), u)
    with pytest.raises(ValueError, match="collocation_weights: scale must be positive and finite"):
        collocation_weights(lin, torch.tensor([1.0, 2.0, 3.0], **f64), u, torch.tensor([1.0, 0.0], **f64))
    with pytest.raises(ValueError, match=r"u, dudt and weights must have the same shape.*\(3, 2\), \(3, 1\)"):
        collocation_loss(lin, u, torch.ones(3, 1, **f64), u)


# ---- multiple shooting -----------------------------------------------------------------------------

TRUE_LV = (1.5, 1.0, 1.0, 3.0)


@pytest.fixture(scope="module")
def lv_data():
    """Lotka–Volterra (SciML's tutorial parameters) on 0..10, 41 noise-free samples from Tsit5."""
    prob = problems.lotka_volterra(tspan=(0.0, 10.0))
    ts = torch.linspace(0.0, 10.0, 41, **f64)
    return prob, generate_data(prob, pyode.Tsit5(), ts, noise=0.0)


def test_group_ranges_overlap_by_one_point():
    assert group_ranges(9, 3) == [(0, 3), (2, 5), (4, 7), (6, 9)]
    assert group_ranges(10, 4) == [(0, 4), (3, 7), (6, 10)]
    assert group_ranges(11, 4) == [(0, 4), (3, 7), (6, 10), (9, 11)]   # a shorter last group
    assert group_ranges(2, 2) == [(0, 2)]
    assert group_ranges(7, 7) == [(0, 7)]


def test_multiple_shooting_is_zero_at_the_true_parameters_and_larger_elsewhere(lv_data):
    prob, data = lv_data
    kw = dict(group_size=9, alg=pyode.Tsit5(), reltol=1e-9, abstol=1e-11)
    loss, pred = multiple_shooting_loss(prob.f, prob.p, data.t, data.u, **kw)
    assert float(loss) <= 1e-8                                     # measured 6.9e-18; 292 at the wrong p
    assert pred.shape == data.u.shape and torch.equal(pred[0], data.u[0])
    torch.testing.assert_close(pred, data.u, atol=1e-6, rtol=0)
    wrong = torch.tensor([1.3, 0.9, 1.1, 2.8], **f64)
    loss_wrong, _ = multiple_shooting_loss(prob.f, wrong, data.t, data.u, **kw)
    assert float(loss_wrong) > 1e-2 and float(loss_wrong) > 1e6 * float(loss)


def test_multiple_shooting_adds_the_groups_and_the_continuity_term(lv_data):
    prob, data = lv_data
    p = torch.tensor([1.3, 0.9, 1.1, 2.8], **f64)
    t, u = data.t[:9], data.u[:9]
    scale = torch.tensor([2.0, 0.5], **f64)
    kw = dict(reltol=1e-8, abstol=1e-10)
    groups = [pyode.solve(pyode.ODEProblem(prob.f, u[a], (float(t[a]), float(t[b - 1])), p), pyode.Tsit5(),
                          saveat=t[a:b], **kw).u for a, b in [(0, 5), (4, 9)]]
    expected = (scaled_mse(groups[0], u[:5], scale) + scaled_mse(groups[1], u[4:], scale)
                + 7.0 * scaled_mse(groups[0][-1], groups[1][0], scale))
    loss, pred = multiple_shooting_loss(prob.f, p, t, u, group_size=5, alg=pyode.Tsit5(), continuity_weight=7.0,
                                        scale=scale, **kw)
    assert float(loss) == pytest.approx(float(expected), rel=1e-12)
    # The shared point holds the end of the first group, not the data value the second starts from.
    assert torch.equal(pred, torch.cat([groups[0], groups[1][1:]]))
    # A batch of series observed at the same times: every member gets the same loss, so the mean is unchanged.
    batched, pred_b = multiple_shooting_loss(prob.f, p, t, torch.stack([u, u], 1), group_size=5, alg=pyode.Tsit5(),
                                             continuity_weight=7.0, scale=scale, **kw)
    assert pred_b.shape == (9, 2, 2) and float(batched) == pytest.approx(float(loss), rel=1e-10)
    # group_size = T is single shooting.
    single, _ = multiple_shooting_loss(prob.f, p, t, u, group_size=9, alg=pyode.Tsit5(), loss=scaled_mae, **kw)
    whole = pyode.solve(pyode.ODEProblem(prob.f, u[0], (0.0, float(t[-1])), p), pyode.Tsit5(), saveat=t, **kw).u
    assert float(single) == pytest.approx(float(scaled_mae(whole, u)), rel=1e-12)


def test_multiple_shooting_gradient_matches_central_differences(lv_data):
    prob, data = lv_data
    t, u = data.t[:17], data.u[:17]                                # 0..4, four groups of five points
    kw = dict(group_size=5, alg=pyode.Tsit5(), reltol=1e-10, abstol=1e-12)
    p = torch.tensor([1.3, 0.9, 1.1, 2.8], **f64, requires_grad=True)
    loss, _ = multiple_shooting_loss(prob.f, p, t, u, **kw)
    (grad,) = torch.autograd.grad(loss, p)
    h = 1e-6
    fd = []
    with torch.no_grad():
        for i in range(4):
            e = torch.zeros(4, **f64)
            e[i] = h
            hi, _ = multiple_shooting_loss(prob.f, p + e, t, u, **kw)
            lo, _ = multiple_shooting_loss(prob.f, p - e, t, u, **kw)
            fd.append((hi - lo) / (2 * h))
    # Measured: relative difference 2e-9 (the gradient is of size 2e2-1e3).
    torch.testing.assert_close(grad, torch.stack(fd), rtol=1e-6, atol=0)


def _fit_lv(loss_of, p0):
    """L-BFGS (20 iterations, strong Wolfe) on log-parameters, so the rates stay positive."""
    theta = torch.tensor(p0, **f64).log().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_of(theta.exp())
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach().exp()


def test_multiple_shooting_fits_where_single_shooting_gets_stuck(lv_data):
    prob, data = lv_data
    kw = dict(reltol=1e-4, abstol=1e-6)
    p0 = (1.0, 1.0, 1.0, 1.0)                                      # every rate 1: a naive start

    def single(p):
        sol = pyode.solve(pyode.ODEProblem(prob.f, data.u[0], (0.0, 10.0), p), pyode.Tsit5(), saveat=data.t, **kw)
        return scaled_mse(sol.u, data.u)

    def multiple(p):
        return multiple_shooting_loss(prob.f, p, data.t, data.u, group_size=9, alg=pyode.Tsit5(), **kw)[0]

    p_ms = _fit_lv(multiple, p0)
    p_ss = _fit_lv(single, p0)
    truth = torch.tensor(TRUE_LV, **f64)
    with torch.no_grad():
        fit_ms, fit_ss = float(single(p_ms)), float(single(p_ss))
    # Measured (25 loss evaluations each): multiple shooting reaches p = (1.50002, 0.99999, 0.99992,
    # 2.99981), max error 1.9e-4, trajectory MSE 1.4e-7 over 0..10. Single shooting from the same
    # start ends in the local minimum p = (3.06, 1.93, 0.19, 0.36), max error 2.6, MSE 2.71: a slow
    # oscillation around the data's mean instead of the predator-prey cycles.
    assert float((p_ms - truth).abs().max()) < 1e-2
    assert fit_ms < 1e-4
    assert float((p_ss - truth).abs().max()) > 0.5
    assert fit_ss > 1e3 * fit_ms


def test_multiple_shooting_rejects_bad_arguments(lv_data):
    prob, data = lv_data
    call = lambda **kw: multiple_shooting_loss(prob.f, prob.p, kw.pop("t", data.t), kw.pop("u", data.u),
                                               alg=pyode.Tsit5(), **{"group_size": 5, **kw})
    with pytest.raises(ValueError, match="group_size must be at least 2.*got 1"):
        call(group_size=1)
    with pytest.raises(ValueError, match="group_size=42 is larger than the number of data points T = 41"):
        call(group_size=42)
    with pytest.raises(ValueError, match=r"group_size must be an integer in \[2, 41\]; got 2.5"):
        call(group_size=2.5)
    with pytest.raises(ValueError, match="group_size must be an integer"):
        call(group_size=True)
    with pytest.raises(ValueError, match="remove saveat"):
        call(saveat=data.t)
    with pytest.raises(ValueError, match=r"t must have shape \(T,\) = \(41,\).*got \(40,\)"):
        call(t=data.t[:-1])
    with pytest.raises(ValueError, match=r"t must strictly increase; t\[0\] = 10.0 and t\[1\] = 9.75"):
        call(t=data.t.flip(0))
    with pytest.raises(ValueError, match=r"u must have shape \(T, n\)"):
        call(u=data.u[:, 0])
    with pytest.raises(ValueError, match="continuity_weight must be a finite number >= 0; got -1"):
        call(continuity_weight=-1.0)


# ---- conservation ----------------------------------------------------------------------------------

P_CHARGED = torch.tensor(problems.CHARGED_PARTICLE_P, **f64)


def charged_invariants(u, t):
    return problems.charged_particle_invariants(u, P_CHARGED, t)


def test_conservation_loss_is_zero_on_the_exact_solution_and_positive_off_it():
    u0 = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 0.5, -0.5]], **f64)
    ts = torch.linspace(0.0, 10.0, 21, **f64)
    sol = pyode.solve(problems.charged_particle(u0=u0, tspan=(0.0, 10.0)), pyode.Vern7(), saveat=ts,
                      reltol=1e-11, abstol=1e-13)
    reg = ConservationLoss(charged_invariants)
    assert float(reg(sol.u, ts)) < 1e-16
    assert float(reg.drift(sol.u, ts).max()) < 1e-8
    # Speed the particles up by 1% after the start: both invariants change.
    perturbed = torch.cat([sol.u[:1], sol.u[1:] * torch.tensor([1.0, 1.0, 1.01, 1.01], **f64)])
    assert float(reg(perturbed, ts)) > 1e-6
    drift = reg.drift(perturbed, ts)
    assert drift.shape == (2,) and bool((drift > 1e-3).all())


def test_conservation_loss_formula_default_scale_and_time_argument():
    seen = {}

    def invariants(u, t):
        seen["t"] = t
        return torch.stack([u[..., 0], u[..., 0] * u[..., 1]], -1)

    # (T=3, batch=2, n=2); invariants (u0, u0 u1) at t0: member 0 (2, 2), member 1 (-1, 0).
    u = torch.tensor([[[2.0, 1.0], [-1.0, 0.0]],
                      [[3.0, 1.0], [-1.0, 1.0]],
                      [[2.0, 2.0], [1.0, 1.0]]], **f64)
    ts = torch.tensor([0.0, 0.5, 1.0], **f64)
    values = torch.stack([u[..., 0], u[..., 0] * u[..., 1]], -1)
    drift = values - values[0]
    # Default scale: per invariant, the largest |I(t0)| over the batch: (2, 2). Member 1's second
    # invariant is 0 at t0, so its own |I0| would have divided by the clamp.
    expected = 0.5 * (drift / torch.tensor([2.0, 2.0], **f64)).square().mean()
    reg = ConservationLoss(invariants, weight=0.5)
    assert float(reg(u, ts)) == pytest.approx(float(expected), rel=1e-14)
    assert seen["t"].shape == (3, 2) and seen["t"].dtype == torch.float64
    torch.testing.assert_close(seen["t"][:, 1], ts)
    given = ConservationLoss(invariants, scale=[4.0, 0.5])
    assert float(given(u, ts)) == pytest.approx(float((drift / torch.tensor([4.0, 0.5], **f64)).square().mean()))
    torch.testing.assert_close(reg.drift(u, ts), drift.abs().amax((0, 1)))
    # Gradients flow to the trajectory, not through the default scale.
    leaf = u.clone().requires_grad_(True)
    reg(leaf, ts).backward()
    assert leaf.grad is not None and bool(torch.isfinite(leaf.grad).all())


def test_conservation_loss_rejects_bad_input():
    u, ts = torch.zeros(4, 3, **f64), torch.linspace(0, 1, 4, **f64)
    with pytest.raises(ValueError, match=r"must return shape \(\*u.shape\[:-1\], m\) = \(4, m\).*returned \(4,\)"):
        ConservationLoss(lambda u, t: u.sum(-1))(u, ts)
    with pytest.raises(ValueError, match=r"t must have shape \(T,\) = \(4,\)"):
        ConservationLoss(lambda u, t: u)(u, ts[:3])
    with pytest.raises(ValueError, match="leading time dimension"):
        ConservationLoss(lambda u, t: u)(u[0], ts)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0; got -1"):
        ConservationLoss(lambda u, t: u, weight=-1.0)
    with pytest.raises(ValueError, match=r"scale\[1\] = 0.0"):
        ConservationLoss(lambda u, t: u, scale=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"one entry per invariant.*got shape \(2,\)"):
        ConservationLoss(lambda u, t: u, scale=[1.0, 2.0])(u, ts)
    with pytest.raises(TypeError, match="invariants must be callable"):
        ConservationLoss(3.0)


class _MLP(torch.nn.Module):
    """du/dt = W2 tanh(W1 u + b1) + b2, 4 -> 32 -> 4: knows nothing of the physics."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).double()

    def forward(self, u):
        return self.net(u)


def _mlp_rhs(u, model, t):
    return model(u)


def _train_charged_particle(regulariser):
    """Fit the MLP to the charged particle's data on 0..3 (7 samples); the regulariser, if any, acts
    on the model's own prediction over 0..6, where there are no data. Returns the trained model."""
    u0 = torch.tensor([0.0, 0.0, 1.0, 1.0], **f64)
    dt = 0.5
    t_data, t_reg = torch.arange(0.0, 3.0 + 1e-9, dt, **f64), torch.arange(0.0, 6.0 + 1e-9, dt, **f64)
    data = generate_data(problems.charged_particle(u0=u0, tspan=(0.0, 3.0)), pyode.Vern7(), t_data).u

    def loss_fn(model, epoch):
        pred = pyode.solve(pyode.ODEProblem(_mlp_rhs, u0, (0.0, 6.0), model), pyode.RK4(), dt=dt, saveat=t_reg).u
        loss = scaled_mse(pred[:len(t_data)], data)
        return loss + regulariser(pred, t_reg) if regulariser is not None else loss

    torch.manual_seed(0)
    model = _MLP()
    fit(model, loss_fn, epochs=200, optimizer="adam", lr=1e-2, progress=False)
    return model, u0, data, t_data


def test_conservation_regulariser_reduces_the_invariant_drift_of_a_neural_ode():
    reg = ConservationLoss(charged_invariants, weight=0.1)
    results = {}
    for name, regulariser in (("plain", None), ("regularised", reg)):
        model, u0, data, t_data = _train_charged_particle(regulariser)
        with torch.no_grad():
            ts = torch.arange(0.0, 6.0 + 1e-9, 0.5, **f64)
            pred = pyode.solve(pyode.ODEProblem(_mlp_rhs, u0, (0.0, 6.0), model), pyode.RK4(), dt=0.5, saveat=ts).u
            results[name] = (reg.drift(pred, ts), float(scaled_mse(pred[:len(t_data)], data)))
    (drift_plain, fit_plain), (drift_reg, fit_reg) = results["plain"], results["regularised"]
    # Measured, max |I - I0| over 0..6 for (P_y, W); the true values are 1.0 and 1.045:
    #   without the regulariser (0.374, 7.77), data MSE 1.5e-3;
    #   with it (weight 0.1)    (0.175, 0.181), data MSE 4.4e-3.
    # Over 0..12 (beyond both windows, not asserted) the drift is (1.49, 19.9) vs (3.96, 13.9); with
    # torch seeds 1 and 2 (measured in a sweep) the 0..6 energy drift fell 75x and 42x, the 0..12 one
    # 16x and 9x. The regulariser buys conservation where it is applied, not indefinitely beyond.
    assert bool((drift_reg < drift_plain).all())
    assert float(drift_plain.max()) > 10 * float(drift_reg.max())
    assert fit_plain < 1e-2 and fit_reg < 1e-2                     # both still fit the data


# ---- augmented Lagrangian --------------------------------------------------------------------------

class _Point(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.x = torch.nn.Parameter(torch.zeros(n, **f64))


A_SIMPLEX = torch.tensor([0.8, 0.6, -0.2, 0.1], **f64)
# Projection of a onto the simplex {sum x = 1, x >= 0}: minimise |x - a|² + λ (sum x - 1) - λ_gᵀ x.
# With x = (a1 - λ/2, a2 - λ/2, 0, 0): 1.4 - λ = 1, λ = 0.4, x = (0.6, 0.4, 0, 0), and
# stationarity 2(x - a) + λ - λ_g = 0 gives λ_g = (0, 0, 0.8, 0.2) (strict complementarity).
X_SIMPLEX = torch.tensor([0.6, 0.4, 0.0, 0.0], **f64)
LAMBDA_EQ, LAMBDA_INEQ = torch.tensor([0.4], **f64), torch.tensor([0.0, 0.0, 0.8, 0.2], **f64)


def _lbfgs(params):
    # fit keeps one L-BFGS across epochs, and each multiplier update changes the objective under
    # its curvature history. With torch's default tolerance_change=1e-9 (and lr=1) the step after
    # an update ends at once; measured: x froze at violation 0.040 from epoch 3 on while μ doubled
    # every epoch up to 16384. fit's optimizer="lbfgs" (lr=1e-3) reaches only 2e-7 with μ=128.
    return torch.optim.LBFGS(params, line_search_fn="strong_wolfe", tolerance_change=1e-15)


def _simplex_run(al, epochs, **fit_kwargs):
    model = _Point(4)

    def loss_fn(model, epoch):
        x = model.x
        return (x - A_SIMPLEX).square().sum() + al.penalty(h=x.sum() - 1.0, g=-x)

    fit(model, loss_fn, epochs=epochs, optimizer=_lbfgs, progress=False, callbacks=[al], **fit_kwargs)
    return model


def test_augmented_lagrangian_finds_the_kkt_point_and_multipliers():
    al = AugmentedLagrangian(n_equality=1, n_inequality=4)
    assert al.violation == math.inf
    model = _simplex_run(al, 15)
    # Measured: violation 2.9e-9 after 15 epochs; μ doubled at updates 2-5 (1 -> 16) and then stayed,
    # the violation falling by a factor 0.22 per update; errors of x 3.8e-9, of λ 7.5e-9, of λ_g 1.3e-8.
    assert al.violation < 1e-6
    torch.testing.assert_close(model.x.detach(), X_SIMPLEX, atol=1e-6, rtol=0)
    torch.testing.assert_close(al.lambda_eq, LAMBDA_EQ, atol=1e-5, rtol=0)
    torch.testing.assert_close(al.lambda_ineq, LAMBDA_INEQ, atol=1e-5, rtol=0)
    assert 1.0 < al.mu <= 64.0


def test_augmented_lagrangian_resumes_exactly_from_a_checkpoint(tmp_path):
    straight = AugmentedLagrangian(n_equality=1, n_inequality=4)
    x_straight = _simplex_run(straight, 10).x.detach()
    path = tmp_path / "run.pt"
    first = AugmentedLagrangian(n_equality=1, n_inequality=4)
    _simplex_run(first, 5, checkpoint=path)
    resumed = AugmentedLagrangian(n_equality=1, n_inequality=4)
    x_resumed = _simplex_run(resumed, 10, checkpoint=path, resume=True).x.detach()
    assert torch.equal(x_resumed, x_straight)
    assert torch.equal(resumed.lambda_eq, straight.lambda_eq)
    assert torch.equal(resumed.lambda_ineq, straight.lambda_ineq)
    assert resumed.mu == straight.mu and resumed.violation == straight.violation
    # A state loads into a fresh object and gives the same penalty.
    copy = AugmentedLagrangian(n_equality=1, n_inequality=4)
    copy.load_state_dict(straight.state_dict())
    h, g = torch.tensor(0.3, **f64), torch.tensor([0.1, -0.2, 0.3, -0.4], **f64)
    assert float(copy.penalty(h, g)) == float(straight.penalty(h, g))
    with pytest.raises(ValueError, match="holds n_equality=1, n_inequality=4 but this one has n_equality=2"):
        AugmentedLagrangian(n_equality=2, n_inequality=4).load_state_dict(straight.state_dict())


def test_augmented_lagrangian_penalty_updates_and_schedule_by_hand():
    al = AugmentedLagrangian(n_equality=2, n_inequality=2, mu=2.0, growth=3.0, mu_max=10.0, update_every=2)
    h = torch.tensor([[1.0], [-2.0]], **f64)                       # any shape; flattened
    g = torch.tensor([0.5, -1.0], **f64)
    # λ = 0: μ/2 |h|² = 5; ψ = (max(0, 2·0.5)² + max(0, -2)²) / (2·2) = 0.25.
    assert float(al.penalty(h, g)) == 5.25
    assert al.violation == 2.0
    al.on_epoch_end(0, None)                                       # not an update epoch
    assert torch.equal(al.lambda_eq, torch.zeros(2, **f64)) and al.mu == 2.0
    al.on_epoch_end(1, None)                                       # λ ← λ + μh, λ_g ← max(0, λ_g + μg)
    assert al.lambda_eq.tolist() == [2.0, -4.0] and al.lambda_ineq.tolist() == [1.0, 0.0]
    assert al.mu == 2.0                                            # the first update never grows μ
    # λᵀh = 10, μ/2 |h|² = 5; ψ = ((1 + 1)² - 1² + max(0, 0 - 2)² - 0) / 4 = 0.75.
    assert float(al.penalty(h, g)) == 15.75
    al.on_epoch_end(3, None)                                       # violation 2 > 0.25 · 2: μ grows
    assert al.mu == 6.0
    al.penalty(h * 0.3, g)                                         # violation 0.6 > 0.25 · 2: grows to the cap
    al.on_epoch_end(5, None)
    assert al.mu == 10.0
    al.penalty(h * 1e-3, torch.tensor([-1.0, -1.0], **f64))       # violation 0.002 < 0.25 · 0.6: μ stays
    al.on_epoch_end(7, None)
    assert al.mu == 10.0 and al.lambda_ineq.min() >= 0
    # Gradient of the penalty: λ + μ h for the equalities, max(0, λ_g + μ g) for the inequalities.
    fresh = AugmentedLagrangian(n_equality=2, n_inequality=2, mu=2.0)
    hh, gg = h.clone().requires_grad_(True), g.clone().requires_grad_(True)
    fresh.penalty(hh, gg).backward()
    assert hh.grad.reshape(-1).tolist() == [2.0, -4.0] and gg.grad.tolist() == [1.0, 0.0]


def test_augmented_lagrangian_rejects_bad_use():
    with pytest.raises(ValueError, match="needs at least one constraint"):
        AugmentedLagrangian()
    with pytest.raises(ValueError, match="mu must be a finite number > 0; got 0"):
        AugmentedLagrangian(n_equality=1, mu=0.0)
    with pytest.raises(ValueError, match="growth must be a finite number >= 1"):
        AugmentedLagrangian(n_equality=1, growth=0.5)
    with pytest.raises(ValueError, match=r"mu_max must be .*>= mu = 5"):
        AugmentedLagrangian(n_equality=1, mu=5.0, mu_max=1.0)
    with pytest.raises(ValueError, match="update_every must be an integer >= 1"):
        AugmentedLagrangian(n_equality=1, update_every=0)
    with pytest.raises(ValueError, match="n_inequality must be an integer >= 0"):
        AugmentedLagrangian(n_equality=1, n_inequality=-1)
    al = AugmentedLagrangian(n_equality=3)
    with pytest.raises(RuntimeError, match="penalty.*has not been called"):
        al.on_epoch_end(0, None)
    with pytest.raises(ValueError, match=r"h has 2 values \(shape \(2,\)\) but n_equality=3"):
        al.penalty(h=torch.zeros(2))
    with pytest.raises(ValueError, match="penalty needs h"):
        al.penalty(g=torch.zeros(3))
    with pytest.raises(ValueError, match="built with n_inequality=0; pass n_inequality=3"):
        al.penalty(h=torch.zeros(3), g=torch.zeros(3))
    al.penalty(h=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="must stay fixed"):
        al.penalty(h=torch.zeros(4))
