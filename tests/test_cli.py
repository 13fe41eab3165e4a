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


def test_robertson_demo_mlp_smoke(tmp_path):
    # Kim et al.'s network: two initialisations scouted for one epoch, the lower one trained on to
    # three AdamW epochs, then one L-BFGS step; one loss curve over both stages
    assert main(["demo", "robertson", "--model", "mlp", "--smoke", "--no-progress", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "mlp" and metrics["epochs_run"] == 4 and not metrics["target_reached"]
    scouted = metrics["initialisations"]
    assert scouted["scout_epochs"] == 1 and len(scouted["scores"]) == 2
    assert scouted["scores"][0] != scouted["scores"][1]                 # two different initialisations
    assert scouted["chosen"] == min(range(2), key=scouted["scores"].__getitem__)
    # the AdamW run went on from the chosen scout: its first epoch is the scout's
    chosen = torch.load(tmp_path / f"checkpoint_start{scouted['chosen']}.pt", weights_only=False)
    continued = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert chosen["history"] == continued["history"][:1] and len(continued["history"]) == 3
    assert chosen["history"][0]["loss"] == scouted["scores"][scouted["chosen"]]
    for name in ("robertson.png", "loss.png", "model.pt", "checkpoint.pt", "checkpoint_lbfgs.pt",
                 "checkpoint_start0.pt", "checkpoint_start1.pt"):
        assert (tmp_path / name).stat().st_size > 0, name


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
