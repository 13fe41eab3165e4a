"""The `pyode` command line: the demo runs end to end and writes its results."""
import json

import pytest
import torch

from pyode.cli import main


@pytest.mark.slow
def test_orbit_demo_writes_results(tmp_path):
    assert main(["demo", "orbit", "--batch", "4", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "orbit.json").read_text())
    # every method's error shrinks as the tolerance tightens
    for method in {r["method"] for r in results["work_precision"]}:
        errs = [r["error"] for r in results["work_precision"] if r["method"] == method]
        assert errs[-1] < errs[0] / 10, (method, errs)
    assert results["gradient"]["relative_difference"] < 1e-3
    assert (tmp_path / "orbit.png").stat().st_size > 10_000


def test_bad_batch_argument(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "orbit", "--batch", "0"])
    assert "--batch must be a positive integer; got 0" in capsys.readouterr().err


def test_unknown_demo(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_robertson_demo_mass_action_smoke(tmp_path):
    # the default model's pipeline in three Levenberg-Marquardt iterations: data, fit, metrics, plots
    assert main(["demo", "robertson", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "mass-action" and metrics["iterations"] == 3
    assert metrics["error_against"] == "noise-free truth" and metrics["target"] == 0.02
    assert len(metrics["reactions"]) == 36 and metrics["removed"] == []    # --smoke does not prune
    assert all(0 <= e < 1 for e in metrics["held_out_error"].values())
    for name in ("robertson.png", "loss.png", "data.csv", "model.pt"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_robertson_demo_smoke(tmp_path):
    # the polynomial model in a few epochs: data, collocation warm start, training, metrics, plots
    assert main(["demo", "robertson", "--model", "polynomial", "--smoke", "--no-progress", "--out",
                 str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    # the warm-started model is already within the target; training must not have broken it
    assert metrics["target_reached"], metrics
    assert max(metrics["held_out_error"].values()) < 0.02
    for name in ("robertson.png", "loss.png", "data.csv", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_robertson_demo_hybrid_smoke(tmp_path):
    # known reactions + a network: the whole collocation warm start, then one short L-BFGS step
    assert main(["demo", "robertson", "--model", "hybrid", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "hybrid" and metrics["epochs_run"] == 3
    assert metrics["known_reactions"] == ["A -> B", "B + C -> A + C"]
    # the warm start alone solves and is within a few per cent (measured 5.1 / 1.8 / 5.1 %)
    assert max(metrics["warm_start_error"].values()) < 0.1, metrics
    assert max(metrics["held_out_error"].values()) <= max(metrics["warm_start_error"].values()) + 1e-3
    for name in ("robertson.png", "loss.png", "data.csv", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_robertson_demo_mlp_smoke(tmp_path):
    # Kim et al.'s network: three initialisations scouted for one epoch, the two lower ones trained
    # on to three AdamW epochs and one L-BFGS step (neither fits the data, so both), the one whose
    # tight solve is closer to the training data kept
    assert main(["demo", "robertson", "--model", "mlp", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "mlp" and metrics["epochs_run"] == 4 and not metrics["target_reached"]
    runs = metrics["initialisations"]
    assert runs["scout_epochs"] == 1 and len(set(runs["scores"])) == 3          # three different initialisations
    assert runs["finished"] == sorted(range(3), key=runs["scores"].__getitem__)[:2]
    errors = {int(k): v for k, v in runs["training_errors"].items()}
    assert sorted(errors) == sorted(runs["finished"]) and min(errors.values()) > 0.01
    assert runs["chosen"] == min(errors, key=errors.get)
    for k in range(3):
        # each scout's epoch is the first of its run; the two finished went on from it
        saved = torch.load(tmp_path / f"checkpoint_start{k}.pt", weights_only=False)["history"]
        assert saved[0]["loss"] == runs["scores"][k]
        assert len(saved) == (3 if k in runs["finished"] else 1)
    for name in ("robertson.png", "loss.png", "model.pt", *(f"checkpoint_lbfgs{k}.pt" for k in runs["finished"])):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / f"checkpoint_lbfgs{({0, 1, 2} - set(runs['finished'])).pop()}.pt").exists()


def test_training_fit_scores_a_model_by_its_tight_solve():
    import math

    from pyode import Rodas5P
    from pyode.data import generate_data
    from pyode.demos.robertson import training_fit
    from pyode.problems import robertson

    prob = robertson()
    t = torch.logspace(-5, 5, 30, dtype=torch.float64)
    u = generate_data(prob, Rodas5P(), t).u

    class Rhs(torch.nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, x):
            return self.f(x)

    assert training_fit(Rhs(lambda x: prob.f(x, prob.p, None)), t, u) < 1e-6
    # the rate of B + C -> A + C off by 10 %: a small error at the training times
    k = prob.p * torch.tensor([1.0, 1.0, 1.1], dtype=torch.float64)
    assert 1e-4 < training_fit(Rhs(lambda x: prob.f(x, k, None)), t, u) < 0.1
    # a trajectory that leaves the data's range between the observations, and one that blows up
    grow = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert training_fit(Rhs(lambda x: 0 * x + grow), t, u) == math.inf
    assert training_fit(Rhs(lambda x: 1e3 * x * x), t, u) == math.inf


def test_robertson_demo_bad_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "robertson", "--epochs", "0"])
    assert "--epochs must be a positive integer; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "robertson", "--noise", "-1"])
    assert "--noise must be a finite number >= 0" in capsys.readouterr().err


def test_pollu_demo_smoke_and_bad_options(tmp_path, capsys):
    # Kim et al.'s POLLU pipeline in three epochs: data, scaled-state training, metrics, plots
    assert main(["demo", "pollu", "--smoke", "--noise", "0.01", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["error_against"] == "noise-free truth"
    assert metrics["target"] == pytest.approx(0.03) and not metrics["target_reached"]
    assert len(metrics["held_out_error"]) == 20 and all(e > 0 for e in metrics["held_out_error"].values())
    for name in ("pollu.png", "loss.png", "data.csv", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len((tmp_path / "data.csv").read_text().splitlines()) == 21       # header + 20 times
    with pytest.raises(SystemExit):
        main(["demo", "pollu", "--epochs", "-3"])
    assert "--epochs must be a positive integer; got -3" in capsys.readouterr().err


def test_ignition_demo_smoke(tmp_path):
    # H2/air at two temperatures: tau and the three largest sensitivities against Cantera
    pytest.importorskip("cantera", reason="the ignition demo compares against Cantera")
    assert main(["demo", "ignition", "--smoke", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    case = metrics["cases"]["h2"]
    assert metrics["passed"] and case["max_tau_rel_diff"] < 1e-5 and max(case["sensitivity_rel_diff"]) < 1e-3
    assert case["T0"] == [1000.0, 1050.0] and abs(case["tau"][0] - 3.111e-4) < 1e-7
    for name in ("ignition.png", "sensitivities_h2.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_cnf_demo_smoke(tmp_path, capsys):
    # a few iterations: the pipeline, its outputs and its options
    assert main(["demo", "cnf", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["data"] == "8gaussians" and metrics["iterations"] == 5 and metrics["target_nll"] == 3.05
    assert 3.0 < metrics["test_nll"] < 8.0 and not metrics["target_reached"]
    for name in ("cnf.png", "loss.png", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert main(["demo", "cnf", "--smoke", "--no-progress", "--data", "moons", "--out", str(tmp_path / "m")]) == 0
    with pytest.raises(SystemExit):
        main(["demo", "cnf", "--data", "spirals"])
    assert "unknown data set 'spirals'" in capsys.readouterr().err


def test_cnf_demo_samples_each_toy_density():
    from pyode.demos.cnf import sample_data

    g = torch.Generator().manual_seed(0)
    eight = sample_data("8gaussians", 20000, g)
    radius = eight.norm(dim=-1)
    assert abs(float(radius.mean()) - 4 / 1.414) < 0.05                      # centres at radius 4/1.414
    board = sample_data("checkerboard", 20000, g)
    assert float(board.abs().max()) <= 4.0
    cells = (torch.floor(board[:, 0] / 2) + torch.floor(board[:, 1] / 2)) % 2
    assert bool((cells == 0).all())                                           # only the "black" squares
    moons = sample_data("moons", 1000, g)
    assert moons.shape == (1000, 2) and bool(torch.isfinite(moons).all())


def test_crnn_demo_discovers_ji_and_dengs_mechanism(tmp_path):
    # the full demo: 72 candidates, 20 noisy experiments; exactly the four true reactions must remain
    assert main(["demo", "crnn", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mechanism_recovered"] and metrics["target_reached"] and metrics["candidates"] == 72
    rows = metrics["reactions"]
    assert sorted(r["equation"] for r in rows) == ["2A -> B", "A -> C", "B + D -> E", "C -> D"]
    assert all(r["relative_error"] < 0.1 for r in rows)
    assert len(metrics["removed"]) == 68
    for name in ("crnn.png", "rates.png", "data.pt"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_crnn_demo_smoke_and_bad_options(tmp_path, capsys):
    assert main(["demo", "crnn", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["removed"] == [] and not metrics["target_reached"]
    with pytest.raises(SystemExit):
        main(["demo", "crnn", "--noise", "x"])
    assert "--noise must be a number; got 'x'" in capsys.readouterr().err
