"""The Lotka–Volterra UDE demo: rates and interaction terms are recovered; the command line runs and checks options."""
import json

import pytest
import torch

from pyode.cli import main
from pyode.demos import lotka_volterra_ude as demo


def test_ude_recovers_lotka_volterra_parameters():
    # 5% noise (of each species' mean) at 31 times; initial guesses alpha = gamma = 1 (33% and 67%
    # off). Collocation (300 Adam + 20 L-BFGS epochs), then multiple shooting (150 Adam + 10 L-BFGS
    # epochs). Measured relative errors for seeds 0 / 1 / 2 / 3 / 4:
    #   alpha         2.8  2.5  3.4  0.5  1.0 %
    #   gamma         1.7  1.0  2.0  1.3  3.6 %
    #   interactions  3.6  4.6  3.4  4.4  2.3 %   (-beta x y, delta x y at the observed states)
    #   trajectory    2.0  2.5  2.4  2.3  1.6 %   (max error against the clean data, per species' maximum)
    # 22-27 s per seed on one core.
    clean, data = demo.make_data(noise=0.05, seed=0)
    model, history, after_collocation = demo.learn(data, epochs=150, lbfgs_epochs=10, seed=0)
    result = demo.evaluate(model, data)
    assert result["alpha_error"] < 0.08, result
    assert result["gamma_error"] < 0.08, result
    assert result["interaction_error"] < 0.1, result
    assert len(history) == 160
    node = demo.NeuralODE(model.ude, (0.0, demo.T_END), demo.Tsit5(), reltol=1e-8, abstol=1e-10)
    with torch.no_grad():
        pred = node(model.starts[0], saveat=clean.t).u
    rel = ((pred - clean.u).abs() / clean.u.abs().amax(0)).max()
    assert float(rel) < 0.05, float(rel)


def test_interactions_vanish_without_the_partner():
    model = demo.build_ude(seed=0)
    with torch.no_grad():
        for layer in model.network.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_()
                layer.bias.normal_()
    u = torch.rand(10, 2, dtype=torch.float64) * 5
    prey_only = torch.stack([u[:, 0], torch.zeros(10, dtype=torch.float64)], -1)
    predators_only = torch.stack([torch.zeros(10, dtype=torch.float64), u[:, 1]], -1)
    zero = torch.zeros(10, dtype=torch.float64)
    with torch.no_grad():
        assert float(model.network(u).abs().min()) > 1e-6
        torch.testing.assert_close(model.network(prey_only)[:, 0], zero, rtol=0, atol=1e-14)
        torch.testing.assert_close(model.network(predators_only)[:, 1], zero, rtol=0, atol=1e-14)
        # so without predators the prey grow at alpha, without prey the predators die at gamma
        rates = model.physical_parameters()
        torch.testing.assert_close(model(prey_only)[:, 0], rates["alpha"] * u[:, 0], rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(model(predators_only)[:, 1], -rates["gamma"] * u[:, 1], rtol=1e-14, atol=1e-14)


def test_smoothness_penalty_is_zero_for_mass_action_interactions():
    umax, hscale = torch.tensor([7.0, 5.0], dtype=torch.float64), torch.tensor([10.0, 20.0], dtype=torch.float64)
    penalty = demo.SmoothnessPenalty(umax, hscale)
    assert float(penalty(demo.true_interactions)) < 1e-20
    # a step between the axis and the data (what a network hiding part of alpha x would need) costs
    step = lambda u: torch.stack([u[..., 0] * torch.tanh(u[..., 1] / 0.3), u[..., 0] * u[..., 1]], -1)
    assert float(penalty(step)) > 1.0


def test_learn_rejects_data_that_do_not_split_into_windows():
    _, data = demo.make_data()
    with pytest.raises(ValueError, match="equally spaced times with a multiple of 5 intervals; got 30 times"):
        demo.learn(demo.TimeSeries(data.t[:30], data.u[:30], data.names), epochs=1)
    uneven = torch.cat([data.t[:1], data.t[1:] + 0.01])
    with pytest.raises(ValueError, match="equally spaced"):
        demo.learn(demo.TimeSeries(uneven, data.u, data.names), epochs=1)


def test_demo_smoke_writes_its_files(tmp_path, capsys):
    assert main(["demo", "lotka-volterra-ude", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_run"] == demo.SMOKE_EPOCHS + demo.SMOKE_LBFGS_EPOCHS
    assert metrics["true"]["alpha"] == 1.5 and metrics["true"]["gamma"] == 3.0
    assert set(metrics["relative_error"]) == {"alpha", "gamma", "interactions"}
    for name in ("lotka_volterra.png", "interactions.png", "loss.png", "data.csv", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    out = capsys.readouterr().out
    assert "alpha (growth rate of prey)" in out and "gamma (death rate of predators)" in out
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert {"ude.raw.alpha", "ude.raw.gamma", "starts"} <= set(state)


def test_demo_noise_and_seed_change_the_data():
    _, a = demo.make_data(noise=0.05, seed=0)
    _, b = demo.make_data(noise=0.05, seed=1)
    clean, c = demo.make_data(noise=0.0, seed=0)
    assert not torch.equal(a.u, b.u)
    assert torch.equal(c.u, clean.u)
    assert torch.equal(demo.make_data(noise=0.05, seed=0)[1].u, a.u)
    # the noise's standard deviation is 5% of each species' mean
    ratio = (a.u - clean.u).std(0) / clean.u.mean(0)
    assert ((ratio > 0.03) & (ratio < 0.07)).all(), ratio


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "--epochs must be a positive integer; got 0"),
    (["--epochs", "ten"], "--epochs must be a positive integer; got 'ten'"),
    (["--noise", "-0.1"], "--noise must be a finite number >= 0; got -0.1"),
    (["--noise", "inf"], "--noise must be a finite number >= 0; got inf"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--smoke", "--epochs", "5"], "pass either --smoke or --epochs, not both"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2**63); got -1"),
])
def test_demo_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(["demo", "lotka-volterra-ude", *argv])
    captured = capsys.readouterr()
    assert message in captured.err + str(err.value.code)
    assert err.value.code != 0
