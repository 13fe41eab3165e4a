"""`pyode fit`: a neural ODE fitted to a CSV series end to end, resume, and its error messages."""
import json

import pytest
import torch

import pyode
from pyode import ODEProblem, Tsit5
from pyode.cli import main
from pyode.data import generate_data, load_csv, save_csv
from pyode.fit_cli import load_model

FILES = ("model.pt", "model.json", "metrics.json", "history.json", "fit.png", "loss.png", "checkpoint.pt")


def _decay(u, k, t):
    # A -> B at rate k: exponential decay of A into B
    rate = k * u[..., :1]
    return torch.cat([-rate, rate], -1)


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    prob = ODEProblem(_decay, torch.tensor([1.0, 0.0], dtype=torch.float64), (0.0, 4.0),
                      torch.tensor(0.7, dtype=torch.float64))
    series = generate_data(prob, Tsit5(), torch.linspace(0.0, 4.0, 13, dtype=torch.float64), names=["A", "B"])
    path = tmp_path_factory.mktemp("data") / "decay.csv"
    save_csv(series, path)
    return path


def _fit(csv, out, *extra, lbfgs=0):
    return main(["fit", str(csv), "--model", "mlp", "--alg", "tsit5", "--width", "8", "--depth", "1", "--no-progress",
                 "--lbfgs", str(lbfgs), "--out", str(out), *extra])


def _history(out):
    return json.loads((out / "history.json").read_text())["records"]


def test_fit_reduces_the_loss_and_writes_every_file(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(data_csv, out, "--epochs", "30", "--holdout", "4", "--lr", "0.1") == 0
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    records = _history(out)
    assert len(records) == 30
    full = [r["full_span_loss"] for r in records if r["full_span_loss"] == r["full_span_loss"]]
    assert full, "the fitted window never reached the whole span"
    # the loss over the whole span falls severalfold once the window has grown to it
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_loss"] == min(full) < full[0] / 3
    assert metrics["epochs_run"] == 30 and metrics["train_times"] == 10 and metrics["heldout_times"] == 3
    assert set(metrics["heldout_error"]) == {"A", "B"}
    assert max(e["max_pct"] for e in metrics["heldout_error"].values()) < 10
    assert metrics["retcode"] == "Success" and metrics["solver_stats"]["naccept"] > 0
    # model.pt + model.json rebuild the fitted right-hand side
    model, spec = load_model(str(out))
    assert spec["species"] == ["A", "B"] and spec["alg"] == "tsit5" and spec["tscale"] == 4.0
    u = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert model(u).shape == (1, 2)
    assert "held-out" in capsys.readouterr().out


def test_lbfgs_stage_lowers_the_whole_span_loss_below_adams_best(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(data_csv, out, "--epochs", "30", "--lr", "0.1", lbfgs=5) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    records = _history(out)
    assert len(records) == 30 + metrics["lbfgs"]["steps"] and metrics["lbfgs"]["steps"] == 5
    assert metrics["lbfgs"]["stopped"] is None and metrics["lbfgs"]["kept"]
    # L-BFGS minimises the mean squared error; the mean absolute error it reports falls too
    assert metrics["lbfgs"]["final_loss"] < metrics["best_loss"] / 3
    assert records[-1]["full_span_loss"] < metrics["best_loss"]
    assert "5 L-BFGS steps: loss" in capsys.readouterr().out
    assert (out / "checkpoint_lbfgs.pt").exists()


def test_resume_continues_from_the_checkpoint(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _fit(data_csv, out, "--epochs", "4") == 0
    first = _history(out)
    assert _fit(data_csv, out, "--epochs", "7", "--resume") == 0
    resumed = _history(out)
    assert len(resumed) == 7
    assert resumed[:4] == first          # the restored epochs, untouched
    assert [r["epoch"] for r in resumed] == list(range(7))
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 7
    # a checkpoint of another architecture cannot be resumed: a message, not a traceback
    capsys.readouterr()
    assert main(["fit", str(data_csv), "--model", "mlp", "--alg", "tsit5", "--width", "9", "--depth", "1",
                 "--no-progress",
                 "--epochs", "8", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyode fit: error: cannot resume:") and "different model" in err


@pytest.mark.parametrize("text, expected", [
    ("t,A,B\n0,1,0\n1,abc,0.5\n2,0.2,0.8\n", ["row 3", "column 'A'", "'abc' is not a number"]),
    ("t,A,B\n0,1,0\n1,0.5\n2,0.2,0.8\n", ["row 3", "2 fields", "header (row 1) has 3"]),
    ("time,A,B\n0,1,0\n1,0.5,0.5\n", ["no time column 't'", "Did you mean 'time'?"]),
    ("t,A,B\n0,1,0\n1,0.5,0.5\n1,0.2,0.8\n", ["rows 3 and 4 have the same time"]),
])
def test_malformed_csv_is_a_usage_error(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert main(["fit", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyode fit: error: {path}")
    for piece in expected:
        assert piece in err, (piece, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()      # nothing written for unusable data


def test_missing_file_and_missing_column(data_csv, tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert main(["fit", str(data_csv), "--columns", "A,C", "--out", str(tmp_path / "out")]) == 2
    assert "no column 'C'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--alg", "rodas5"], "argument --alg: unknown algorithm 'rodas5'; did you mean 'rodas5p'"),
    (["--alg", "dopri5"], "unknown algorithm 'dopri5'; did you mean 'dp5'"),
    (["--sensealg", "adjoint"], "unknown sensitivity algorithm 'adjoint'"),
    (["--holdout", "1"], "--holdout must be an integer K >= 2"),
    (["--epochs", "0"], "--epochs must be a positive integer; got 0"),
    (["--lbfgs", "-1"], "--lbfgs must be a non-negative integer (0: no L-BFGS stage); got '-1'"),
    (["--scaling", "log"], "invalid choice: 'log'"),
    (["--model", "network"], "argument --model: invalid choice: 'network'"),
    (["--weights", "1,x"], "--weights must be comma-separated positive numbers, e.g. 1,2,1; got '1,x'"),
    (["--weights", "1,-2"], "--weights must be positive numbers; got '1,-2'"),
])
def test_bad_options(data_csv, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(data_csv), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "unknown" in message:
        assert "choose one of:" in err


def test_unknown_names_list_every_choice(data_csv, capsys):
    from pyode.fit_cli import ALGORITHMS, SENSEALGS

    with pytest.raises(SystemExit):
        main(["fit", str(data_csv), "--alg", "zzz"])
    err = capsys.readouterr().err
    assert "did you mean" not in err
    assert all(name in err for name in ALGORITHMS)
    assert set(SENSEALGS) == {"direct", "gauss", "interpolating", "backsolve", "quadrature", "forward"}


def test_solve_failure_names_epoch_retcode_and_advice(data_csv, tmp_path, capsys):
    assert _fit(data_csv, tmp_path / "out", "--epochs", "3", "--maxiters", "2") == 1
    err = capsys.readouterr().err
    assert err.startswith("pyode fit: error: the solver failed at epoch 0: MaxIters at t=")
    assert "try a stiff solver (--alg rodas5p" in err
    assert "No checkpoint was written yet" in err


def test_names_resolve_to_objects(data_csv):
    from pyode import AutoSwitch, GaussAdjoint, Rodas5P, Rosenbrock23, Tsit5 as T5
    from pyode.fit_cli import ALGORITHMS, SENSEALGS

    assert isinstance(ALGORITHMS["rodas5p"](), Rodas5P)
    auto = ALGORITHMS["autotsit5-rosenbrock23"]()
    assert isinstance(auto, AutoSwitch)
    assert isinstance(auto.nonstiffalg, T5) and isinstance(auto.stiffalg, Rosenbrock23)
    assert isinstance(SENSEALGS["gauss"](), GaussAdjoint)
    # the series the test fits reads back as written
    assert load_csv(data_csv).names == ("A", "B")


# ---- the mass-action route -------------------------------------------------------------------------

def _robertson_like(noise, times, seed=0):
    """Robertson's mechanism with other constants (k 0.08, 1.2e7, 2.5e4), observed from t = 1e-4:
    the first row is a measurement, not the loaded initial state."""
    from pyode.problems import robertson

    rob = robertson()
    prob = ODEProblem(rob.f, rob.u0, (0.0, 1e4), torch.tensor([0.08, 1.2e7, 2.5e4], dtype=torch.float64))
    t = torch.logspace(-4, 4, times, dtype=torch.float64)
    return (generate_data(prob, pyode.Rodas5P(), t, noise=noise, seed=seed, names=["X", "Y", "Z"]),
            generate_data(prob, pyode.Rodas5P(), t, names=["X", "Y", "Z"]))


def test_default_fit_learns_stiff_kinetics_from_noisy_data(tmp_path, capsys):
    noisy, clean = _robertson_like(0.01, 30)
    assert float(noisy.u.min()) < 0                  # noise around zero concentrations
    save_csv(noisy, tmp_path / "data.csv")
    out = tmp_path / "run"
    assert main(["fit", str(tmp_path / "data.csv"), "--holdout", "5", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model mass-action (3 species, concentrations whose sum changes by" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "mass-action" and metrics["heldout_times"] == 6
    for name in ("model.pt", "model.json", "metrics.json", "history.json", "fit.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "checkpoint.pt").exists()
    # the model written rebuilds the fitted mechanism, and it follows the noise-free truth
    lib, spec = load_model(str(out))
    assert spec["model"] == "mass-action" and int(lib.active.sum()) == len(spec["reactions"]) >= 3
    u0 = torch.tensor(spec["u0"], dtype=torch.float64)
    assert abs(float(u0[0]) - 1.0) < 0.01          # fitted, not the noisy first row
    sol = pyode.solve(ODEProblem(lambda u, p, t: lib(u), u0, (spec["t0"], spec["t1"])), pyode.Rodas5P(),
                      saveat=clean.t, reltol=1e-9, abstol=1e-15)
    span = clean.u.amax(0) - clean.u.amin(0)
    assert float(((sol.u.detach() - clean.u).abs() / span).max()) < 0.05      # the target: 5 % of range


def test_auto_model_choice_says_why(tmp_path):
    from argparse import Namespace
    from pyode.data import TimeSeries
    from pyode.fit_cli import _choose_model

    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    closed = torch.stack([1 - t / 2, t / 2], -1)
    auto = Namespace(model="auto", weights=None)
    assert _choose_model(auto, TimeSeries(t, closed, names=("A", "B")))[0] == "mass-action"
    kind, why = _choose_model(auto, TimeSeries(t, closed * torch.tensor([1.0, 3.0], dtype=torch.float64),
                                               names=("A", "B")))
    assert kind == "mlp" and "the sum of the species changes by" in why and "pass --weights" in why
    # with molar masses 1 and 1/3 the same data conserve mass
    kind, _ = _choose_model(Namespace(model="auto", weights=[1.0, 1 / 3]),
                            TimeSeries(t, closed * torch.tensor([1.0, 3.0], dtype=torch.float64), names=("A", "B")))
    assert kind == "mass-action"
    kind, why = _choose_model(auto, TimeSeries(t, closed - 0.5, names=("A", "B")))
    assert kind == "mlp" and "not concentrations" in why
    kind, why = _choose_model(auto, TimeSeries(t, closed.repeat(1, 3) / 3, names=tuple("ABCDEF")))
    assert kind == "mlp" and "6 species" in why
    assert _choose_model(Namespace(model="mlp", weights=None), TimeSeries(t, closed, names=("A", "B")))[0] == "mlp"


def test_identically_zero_species_and_bad_weights_are_usage_errors(tmp_path, capsys):
    path = tmp_path / "zero.csv"
    path.write_text("t,A,B,C\n0,1,0,0\n1,0.6,0.4,0\n2,0.3,0.7,0\n3,0.2,0.8,0\n")
    assert main(["fit", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "C is zero at every time" in err and "--columns A,B" in err
    assert main(["fit", str(path), "--columns", "A,B", "--weights", "1,2,3", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--weights has 3 values for 2 species (A, B)" in capsys.readouterr().err
    assert main(["fit", str(path), "--columns", "A,B", "--model", "mass-action", "--resume", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 2
    assert "--resume applies to --model mlp" in capsys.readouterr().err
