"""`pyode demo spiral`: Chen et al.'s spiral neural ODE; the smoke run and the option checks."""
import json

import pytest
import torch

from pyode.cli import main
from pyode.demos.spiral import CubedField


def test_smoke_run_writes_every_file(tmp_path, capsys):
    out = tmp_path / "spiral"
    assert main(["demo", "spiral", "--smoke", "--no-progress", "--out", str(out)]) == 0
    for name in ("spiral.png", "loss.png", "metrics.json", "model.pt", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 5 and metrics["sensealg"] == "direct"
    err = metrics["trajectory_error"]
    assert err["mean_abs"] > 0 and err["max_distance"] >= err["mean_abs"]
    # the kept parameters are those of a step whose trajectory error was measured (0 or the last)
    assert metrics["best_step"] in (0, 4)
    model = CubedField()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert model(torch.zeros(3, 2, dtype=torch.float64)).shape == (3, 2)
    assert "trajectory error over 0..25" in capsys.readouterr().out


def test_smoke_run_resumes_and_takes_another_sensealg(tmp_path):
    # a few steps do not reach the target: exit status 1 (0 only for --smoke or a good fit)
    out = tmp_path / "spiral"
    assert main(["demo", "spiral", "--epochs", "3", "--no-progress", "--out", str(out),
                 "--sensealg", "interpolating"]) == 1
    first = json.loads((out / "metrics.json").read_text())
    assert main(["demo", "spiral", "--epochs", "5", "--resume", "--no-progress", "--out", str(out),
                 "--sensealg", "interpolating"]) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert first["epochs_run"] == 3 and metrics["epochs_run"] == 5
    assert metrics["sensealg"] == "interpolating" and not metrics["target_reached"]


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be a positive integer; got 0"),
    (["--epochs", "ten"], "--epochs must be a positive integer; got 'ten'"),
    (["--sensealg", "adjont"], "unknown sensitivity algorithm 'adjont'"),
    (["--seed", "x"], "invalid int value: 'x'"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "spiral", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_smoke_and_epochs_together_are_refused():
    with pytest.raises(SystemExit, match="pass either --smoke or --epochs, not both"):
        main(["demo", "spiral", "--smoke", "--epochs", "10"])
