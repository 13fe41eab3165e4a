"""fit: convergence, exact resume, atomic checkpoints, gradient clipping, early stopping, errors; plot helpers."""
import os
import random
import sys

import numpy as np
import pytest
import torch

from pyode import plot
from pyode.train import (Callback, EarlyStopping, History, NonFiniteError, fit, fit_collocation, load_checkpoint,
                         polish_lbfgs)


class Vector(torch.nn.Module):
    """A model that is one parameter vector, so a step is easy to predict."""

    def __init__(self, n=2):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


def linear_gradient(g):
    """loss = g . w: its gradient is g whatever w is."""
    g = torch.as_tensor(g, dtype=torch.float64)
    return lambda model, epoch: (g * model.w).sum()


def scripted(losses, seen=None):
    """A loss that takes the given values in turn and still depends on the parameters."""
    def loss_fn(model, epoch):
        if seen is not None:
            seen.append(model.w.detach().clone())
        return losses[epoch] + 1e-3 * model.w.sum()
    return loss_fn


# ---- convergence -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def regression():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.3 + 0.1 * torch.randn(64, generator=gen,
                                                                                          dtype=torch.float64)
    A = torch.cat([X, torch.ones(64, 1, dtype=torch.float64)], 1)
    exact = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    return X, y, exact


@pytest.mark.parametrize("optimizer, lr, epochs", [("adam", 0.05, 600), ("lbfgs", 1.0, 10)])
def test_fit_reaches_the_least_squares_solution(regression, optimizer, lr, epochs):
    X, y, exact = regression
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1).double()
    history = fit(model, lambda m, e: ((m(X)[:, 0] - y) ** 2).mean(), epochs=epochs, optimizer=optimizer, lr=lr,
                  progress=False)
    fitted = torch.cat([model.weight.detach()[0], model.bias.detach()])
    torch.testing.assert_close(fitted, exact, atol=1e-4, rtol=0)
    assert len(history) == epochs and history["epoch"] == list(range(epochs))
    assert history["loss"][-1] < history["loss"][0] / 10
    assert history.best["loss"] == min(history["loss"])
    assert all(s >= 0 for s in history["seconds"]) and history["lr"][0] == lr


def test_metrics_are_recorded_and_history_round_trips_through_json(tmp_path, capsys):
    model = Vector()

    def loss_fn(m, epoch):
        loss = ((m.w - 1) ** 2).sum()
        return loss, {"w0": m.w[0], "double": 2 * float(loss.detach())}

    history = fit(model, loss_fn, epochs=6, optimizer="sgd", lr=0.1, progress=True, log_every=3)
    out = capsys.readouterr()
    assert "epoch 2: loss" in out.out and "epoch 5: loss" in out.out and "w0" in out.out
    assert history["double"] == pytest.approx([2 * v for v in history["loss"]])
    assert set(history.as_dict()) == {"epoch", "loss", "seconds", "grad_norm", "lr", "w0", "double"}
    history.save(tmp_path / "sub" / "h.json")
    again = History.load(tmp_path / "sub" / "h.json")
    assert again == history and len(again) == 6 and again[2]["w0"] == history["w0"][2]
    assert os.listdir(tmp_path / "sub") == ["h.json"]
    with pytest.raises(KeyError, match="no record has the key 'nope'"):
        history["nope"]


# ---- exact resume ------------------------------------------------------------------------------

class Multiplier(Callback):
    """Holds state that loss_fn reads, updated after every epoch (like an augmented Lagrangian)."""

    def __init__(self):
        self.lam = torch.zeros(())
        self.calls = 0

    def on_epoch_end(self, epoch, history):
        self.lam = self.lam + 0.1 * history["loss"][-1]
        self.calls += 1

    def state_dict(self):
        return {"lam": self.lam, "calls": self.calls}

    def load_state_dict(self, state):
        self.lam, self.calls = state["lam"], state["calls"]


def noisy_run(path, epochs, interrupt_at=None, seed=0):
    """A run whose loss draws on torch, NumPy and random and whose model has dropout."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Dropout(0.3), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    mult = Multiplier()

    def loss_fn(m, epoch):
        if epoch == interrupt_at:
            raise KeyboardInterrupt
        x = torch.randn(8, 2) * (1 + random.random())
        x = x[torch.from_numpy(np.random.permutation(8))]
        fit_err = ((m(x)[:, 0] - torch.sin(x[:, 0])) ** 2).mean()
        return fit_err + mult.lam * (m[0].weight ** 2).mean(), {"lam": mult.lam}

    history = fit(model, loss_fn, epochs=epochs, optimizer="adamw", lr=0.05, weight_decay=0.01,
                  scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12),
                  clip_grad_norm=1.0, callbacks=[mult], checkpoint=path, checkpoint_every=4, resume=True,
                  progress=False)
    return model, history, mult


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


@pytest.mark.parametrize("how", ["interrupted", "shorter run"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, how):
    full_model, full_history, full_mult = noisy_run(tmp_path / "full.pt", 12)

    path = tmp_path / "part.pt"
    if how == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            noisy_run(path, 12, interrupt_at=10)
        assert load_checkpoint(path)["epochs_done"] == 8
    else:
        noisy_run(path, 5)
        assert load_checkpoint(path)["epochs_done"] == 5
    # Different seeds and initial parameters: everything must come from the checkpoint.
    model, history, mult = noisy_run(path, 12, seed=123)

    for a, b in zip(full_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert without_seconds(history) == without_seconds(full_history)
    assert len(history) == 12 and mult.calls == 12 and torch.equal(mult.lam, full_mult.lam)
    assert history["lr"] != [history["lr"][0]] * 12  # the scheduler did act
    assert torch.equal(torch.get_rng_state(), load_checkpoint(tmp_path / "full.pt")["rng"]["torch"])


def test_checkpoint_loads_with_weights_only_and_resuming_a_finished_run_is_a_no_op(tmp_path):
    path = tmp_path / "c.pt"
    noisy_run(path, 6)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epochs_done"] == 6 and len(ckpt["history"]) == 6
    before = path.read_bytes()
    model, history, _ = noisy_run(path, 6, seed=5)
    assert len(history) == 6 and path.read_bytes() == before
    assert torch.equal(model[0].weight, ckpt["model"]["0.weight"])


# ---- atomic checkpoints ------------------------------------------------------------------------

def test_a_failed_checkpoint_write_leaves_the_previous_file_loadable(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    model = Vector()
    fit(model, linear_gradient([1.0, 1.0]), epochs=3, optimizer="sgd", lr=0.5, checkpoint=path, progress=False)
    saved = load_checkpoint(path)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        fit(model, linear_gradient([1.0, 1.0]), epochs=6, optimizer="sgd", lr=0.5, checkpoint=path,
            checkpoint_every=1, resume=True, progress=False)
    monkeypatch.undo()
    again = load_checkpoint(path)
    assert again["epochs_done"] == 3 and torch.equal(again["model"]["w"], saved["model"]["w"])
    assert os.listdir(tmp_path) == ["run.pt"]


# ---- gradient clipping and rescaling -----------------------------------------------------------

@pytest.mark.parametrize("kwargs, grad, expected_step", [
    ({}, [3.0, 4.0], [3.0, 4.0]),
    ({"clip_grad_norm": 1.0}, [3.0, 4.0], [0.6, 0.8]),
    ({"clip_grad_norm": 10.0}, [3.0, 4.0], [3.0, 4.0]),
    ({"rescale_grad_norm": 100.0}, [0.3, 0.4], [60.0, 80.0]),
    ({"rescale_grad_norm": 1.0}, [3.0, 4.0], [0.6, 0.8]),
])
def test_clipping_and_rescaling_set_the_gradient_the_optimizer_sees(kwargs, grad, expected_step):
    model = Vector()
    history = fit(model, linear_gradient(grad), epochs=1, optimizer="sgd", lr=1.0, progress=False, **kwargs)
    torch.testing.assert_close(model.w.detach(), -torch.tensor(expected_step, dtype=torch.float64))
    assert history["grad_norm"] == [pytest.approx(float(np.hypot(*grad)))]  # recorded before clipping


def test_a_zero_gradient_is_not_rescaled():
    model = Vector()
    history = fit(model, linear_gradient([0.0, 0.0]), epochs=2, optimizer="sgd", lr=1.0, rescale_grad_norm=100.0,
                  progress=False)
    assert torch.equal(model.w.detach(), torch.zeros(2, dtype=torch.float64)) and history["grad_norm"] == [0.0, 0.0]


# ---- early stopping ----------------------------------------------------------------------------

LOSSES = [5.0, 4.0, 3.0, 3.5, 2.95, 3.1, 3.3, 3.4, 3.6, 3.7, 3.8, 3.9]


@pytest.mark.parametrize("min_delta, patience, last_epoch, best_epoch", [
    (0.1, 2, 4, 2),    # 2.95 is not 0.1 better than 3.0
    (0.0, 2, 6, 4),
    (0.0, 3, 7, 4),
])
def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, min_delta, patience, last_epoch,
                                                                        best_epoch):
    seen = []
    model = Vector()
    history = fit(model, scripted(LOSSES, seen), epochs=len(LOSSES), optimizer="sgd", lr=1.0, progress=False,
                  early_stopping=EarlyStopping(patience=patience, min_delta=min_delta, restore_best=True),
                  checkpoint=tmp_path / "es.pt")
    assert history["epoch"][-1] == last_epoch and len(history) == last_epoch + 1
    # restore_best loads the parameters that produced the best loss, i.e. those before that epoch's step.
    assert torch.equal(model.w.detach(), seen[best_epoch]) and not torch.equal(seen[best_epoch], seen[-1])
    ckpt = load_checkpoint(tmp_path / "es.pt")
    assert ckpt["stopped_early"] and ckpt["epochs_done"] == last_epoch + 1
    # Resuming a run that stopped early trains no further.
    again = fit(Vector(), scripted(LOSSES), epochs=len(LOSSES), optimizer="sgd", lr=1.0, progress=False,
                early_stopping=EarlyStopping(patience=patience, min_delta=min_delta), checkpoint=tmp_path / "es.pt",
                resume=True)
    assert len(again) == last_epoch + 1


def test_early_stopping_without_restore_keeps_the_last_parameters_and_can_monitor_a_metric():
    seen = []

    def loss_fn(model, epoch):
        seen.append(model.w.detach().clone())
        return model.w.sum(), {"score": [1.0, 2.0, 1.5, 1.9, 1.8, 3.0][epoch]}

    model = Vector()
    history = fit(model, loss_fn, epochs=6, optimizer="sgd", lr=1.0, progress=False,
                  early_stopping=EarlyStopping(patience=2, monitor="score", mode="max"))
    assert len(history) == 4
    torch.testing.assert_close(model.w.detach(), seen[-1] - 1.0)


# ---- non-finite values -------------------------------------------------------------------------

def test_a_nan_loss_raises_naming_the_epoch_and_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    losses = [3.0, 2.0, 1.0, 0.5, float("nan"), 0.1]
    model = Vector()
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 4.*after 4 epochs\) is intact") as err:
        fit(model, scripted(losses), epochs=6, optimizer="sgd", lr=1.0, checkpoint=path, checkpoint_every=2,
            progress=False)
    assert isinstance(err.value, FloatingPointError)
    assert err.value.epoch == 4 and err.value.quantity == "loss" and len(err.value.history) == 4
    assert load_checkpoint(path)["epochs_done"] == 4


def test_an_infinite_gradient_raises_naming_the_parameter():
    model = Vector()
    with pytest.raises(NonFiniteError, match=r"gradient is not finite at epoch 0 .*parameter 'w'") as err:
        fit(model, lambda m, e: m.w.abs().sqrt().sum(), epochs=3, progress=False)
    assert err.value.quantity == "gradient"
    assert torch.equal(model.w.detach(), torch.zeros(2, dtype=torch.float64))  # no step was taken


def test_backtrack_takes_back_a_failed_step_and_halves_the_learning_rate(capsys):
    # loss = -w0, but NaN beyond w0 = 1.5; SGD with lr 1 steps w0 by 1 each epoch
    def loss_fn(model, epoch):
        w0 = model.w[0]
        return -w0 if float(w0.detach()) <= 1.5 else w0 * float("nan")

    model = Vector()
    history = fit(model, loss_fn, epochs=4, optimizer="sgd", lr=1.0, backtrack=3, progress=False)
    # epochs: w0 = 0 -> 1 -> (2 fails: back to 1, lr 0.5) 1 -> 1.5 -> 2.0
    assert float(model.w[0]) == 2.0
    assert [r["lr"] for r in history] == [1.0, 1.0, 0.5, 0.5]
    assert [r["loss"] for r in history] == [0.0, -1.0, -1.0, -1.5]
    out = capsys.readouterr().out
    assert "epoch 2: the loss is nan at epoch 2" in out
    assert "took back the last step and halved the learning rate to 0.5 (1 of 3 in a row)" in out


def test_backtrack_with_lbfgs_returns_to_before_the_failed_step(capsys):
    # loss 0.5 (w0 - 1)^2, NaN beyond w0 = 1.5; L-BFGS's first trial step is lr * 1 from w0 = 0:
    # at lr 4 and 2 it lands in the NaN region inside the step, which is taken back; at lr 1 it
    # lands on the minimum
    def loss_fn(model, epoch):
        w0 = model.w[0]
        return 0.5 * (w0 - 1.0) ** 2 if float(w0.detach()) <= 1.5 else w0 * float("nan")

    model = Vector()
    history = fit(model, loss_fn, epochs=2, optimizer="lbfgs", lr=4.0, backtrack=3, progress=False)
    assert [r["lr"] for r in history] == [1.0, 1.0]
    assert float(model.w[0]) == pytest.approx(1.0, abs=1e-9)
    out = capsys.readouterr().out
    assert "halved the learning rate to 2 (1 of 3 in a row)" in out
    assert "halved the learning rate to 1 (2 of 3 in a row)" in out


def test_backtrack_gives_up_after_as_many_failures_in_a_row():
    model = Vector()
    with pytest.raises(NonFiniteError, match="loss is nan at epoch 2"):
        fit(model, scripted([3.0, 2.0, float("nan"), 1.0]), epochs=4, optimizer="sgd", lr=1.0, backtrack=2,
            progress=False)


def test_backtrack_recovers_from_a_solve_that_blows_up():
    # du/dt = w u^2, u(0) = 1 blows up at t = 1/w: a loss that rewards u(1) pushes w past 1
    import pyode

    def loss_fn(model, epoch):
        prob = pyode.ODEProblem(lambda u, p, t: p * u * u, torch.ones(1, dtype=torch.float64), (0.0, 1.0), model.w[0])
        return -pyode.solve(prob, pyode.Tsit5(), saveat=[1.0], reltol=1e-8, abstol=1e-10).u[-1, 0]

    model = Vector()
    history = fit(model, loss_fn, epochs=12, optimizer="sgd", lr=0.3, rescale_grad_norm=1.0, backtrack=20,
                  progress=False)
    assert len(history) == 12 and 0.9 < float(model.w[0]) < 1.0
    assert min(r["lr"] for r in history) < 0.3                     # at least one step was taken back
    with pytest.raises(pyode.SolveError):
        fit(Vector(), loss_fn, epochs=12, optimizer="sgd", lr=0.3, rescale_grad_norm=1.0, progress=False)


# ---- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ValueError, r"epochs must be a positive integer; got 0"),
    ({"epochs": 2.5}, ValueError, r"epochs must be a positive integer; got 2.5"),
    ({"epochs": True}, ValueError, r"epochs must be a positive integer; got True"),
    ({"optimizer": "adamm"}, ValueError, r"unknown optimizer 'adamm'; did you mean 'adam'"),
    ({"optimizer": 3}, TypeError, r"optimizer must be one of"),
    ({"optimizer": lambda p: None}, TypeError, r"must return a torch.optim.Optimizer; it returned NoneType"),
    ({"lr": -1.0}, ValueError, r"lr must be a finite number > 0; got -1.0"),
    ({"resume": True}, ValueError, r"resume=True needs a checkpoint path"),
    ({"clip_grad_norm": 0.0}, ValueError, r"clip_grad_norm must be a finite number > 0; got 0.0"),
    ({"clip_grad_norm": 1.0, "rescale_grad_norm": 1.0}, ValueError, r"not both"),
    ({"checkpoint_every": 0}, ValueError, r"checkpoint_every must be a positive integer"),
    ({"log_every": 0}, ValueError, r"log_every must be a positive integer"),
    ({"backtrack": -1}, ValueError, r"backtrack must be an integer >= 0 \(failed epochs taken back in a row\); got -1"),
    ({"early_stopping": 5}, TypeError, r"early_stopping must be None or EarlyStopping"),
    ({"early_stopping": EarlyStopping(monitor="acc")}, ValueError, r"monitors 'acc' but loss_fn returned"),
    ({"optimizer": "lbfgs", "weight_decay": 0.1}, ValueError, r"'lbfgs' has no weight decay"),
])
def test_bad_arguments_name_the_argument_and_the_fix(kwargs, error, match):
    kwargs = {"epochs": 2, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        fit(Vector(), linear_gradient([1.0, 1.0]), **kwargs)


@pytest.mark.parametrize("loss_fn, error, match", [
    (lambda m, e: float(m.w.detach().sum()), TypeError, r"must return a 0-d torch.Tensor.*returned float"),
    (lambda m, e: m.w * 2, ValueError, r"loss of shape \(2,\) at epoch 0; reduce it"),
    (lambda m, e: m.w.sum().detach(), ValueError, r"does not require grad"),
    (lambda m, e: (m.w.sum(), {"lr": 1.0}), ValueError, r"metric name 'lr' is reserved"),
    (lambda m, e: (m.w.sum(), {"v": m.w}), TypeError, r"metric 'v' must be a number.*shape \(2,\)"),
])
def test_bad_loss_functions_raise_clear_errors(loss_fn, error, match):
    with pytest.raises(error, match=match):
        fit(Vector(), loss_fn, epochs=1, progress=False)


def test_bad_early_stopping_settings():
    with pytest.raises(ValueError, match="patience must be an integer >= 1; got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'; got 'up'"):
        EarlyStopping(mode="up")


def test_resuming_with_another_model_names_the_mismatch(tmp_path):
    path = tmp_path / "run.pt"
    fit(torch.nn.Linear(3, 1), lambda m, e: m.weight.sum(), epochs=1, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=r"different model: shapes differ: weight: checkpoint \(1, 3\), model \(1, 4\)"):
        fit(torch.nn.Linear(4, 1), lambda m, e: m.weight.sum(), epochs=2, checkpoint=path, resume=True,
            progress=False)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: \['w'\].*does not have: \['weight', 'bias'\]"):
        fit(Vector(), lambda m, e: m.w.sum(), epochs=2, checkpoint=path, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"state of a AdamW optimizer but this run uses SGD"):
        fit(torch.nn.Linear(3, 1), lambda m, e: m.weight.sum(), epochs=2, optimizer="sgd", checkpoint=path,
            resume=True, progress=False)


# ---- plots -------------------------------------------------------------------------------------

def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.mark.parametrize("t, xscale", [
    (np.linspace(0.0, 10.0, 30), "linear"),
    (np.concatenate([[0.0], np.logspace(-6, 2, 29)]), "log"),    # t = 0 does not stop the log axis
    (np.linspace(1.0, 500.0, 30), "linear"),                     # under three decades
    (np.concatenate([[-1.0], np.logspace(-6, 2, 29)]), "linear"),  # negative times
])
def test_trajectories_picks_the_time_axis_and_writes_a_png(tmp_path, t, xscale):
    u = np.stack([np.exp(-np.abs(t)), 1e-3 + np.abs(t) * 1e3], 1)
    path = tmp_path / "figs" / "traj.png"
    fig = plot.trajectories(torch.as_tensor(t), u + 0.01, torch.tensor(u, requires_grad=True),
                            names=["A", "B"], path=path, title="fit")
    assert_png(path)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and [ax.get_xscale() for ax in axes] == [xscale, xscale]
    assert [ax.get_title() for ax in axes] == ["A", "B"]


def test_trajectories_scales_and_shape_errors():
    t = np.linspace(0.0, 1.0, 10)
    fig = plot.trajectories(t, prediction=np.ones((10, 3)), logx=True, scale=["log", None, "symlog"])
    assert [ax.get_xscale() for ax in fig.axes[:3]] == ["log"] * 3
    assert [ax.get_yscale() for ax in fig.axes[:3]] == ["log", "linear", "symlog"]
    with pytest.raises(ValueError, match=r"data and prediction must have the same number of species; got data "
                                         r"\(10, 2\) and prediction \(10, 3\)"):
        plot.trajectories(t, np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"prediction must have shape \(T, n\) with T = len\(t_prediction\) = 5"):
        plot.trajectories(t, np.ones((10, 2)), np.ones((10, 2)), t_prediction=np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match=r"holdout must be a mask of shape \(10,\)"):
        plot.trajectories(t, np.ones((10, 2)), holdout=np.zeros(3, dtype=bool))
    # a finer prediction grid and held-out points: drawn as separate lines
    fig = plot.trajectories(t, np.ones((10, 2)), np.ones((50, 2)), t_prediction=np.linspace(0, 1, 50),
                            holdout=np.arange(10) % 5 == 4)
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [8, 2, 50]
    with pytest.raises(ValueError, match=r"prediction must have shape \(T, n\) with T = len\(t\) = 10; got "
                                         r"prediction shape \(9, 2\)"):
        plot.trajectories(t, prediction=np.ones((9, 2)))
    with pytest.raises(ValueError, match=r"names must list one name per species \(2\)"):
        plot.trajectories(t, np.ones((10, 2)), names=["a"])


def test_loss_curve_draws_loss_and_metrics(tmp_path):
    history = History({"epoch": e, "loss": 10.0 ** -e, "seconds": 0.1, "grad_norm": 1.0, "lr": 1e-3,
                       "mae": -0.5 + e} for e in range(5))
    fig = plot.loss_curve(history, path=tmp_path / "loss.png")
    assert_png(tmp_path / "loss.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "grad_norm", "lr", "mae"]
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "log", "symlog"]
    assert plot.loss_curve([3.0, 2.0, 1.0], logy=False).axes[0].get_yscale() == "linear"


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install pyode\[plot\]"):
        plot.trajectories([0.0, 1.0], [1.0, 2.0])


def test_rate_constants_bars_found_beside_reference(tmp_path):
    path = tmp_path / "rates.png"
    fig = plot.rate_constants(["A -> B", "2B -> C", "B -> A"], [0.05, 3e7, 1e-3], [0.04, 2.9e7, None], path=path,
                              title="rates")
    assert_png(path)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_yticklabels()] == ["A -> B", "2B -> C", "B -> A"]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == sorted([0.05, 3e7, 1e-3, 0.04, 2.9e7])          # no bar where the reference is unknown
    assert len(plot.rate_constants(["A -> B"], [1.0]).axes[0].patches) == 1
    with pytest.raises(ValueError, match=r"reference must have one value per label \(2\); got 1"):
        plot.rate_constants(["a", "b"], [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"found must hold positive rate constants or None; got \[-1.0\]"):
        plot.rate_constants(["a"], [-1.0])


# ---- polish_lbfgs ------------------------------------------------------------------------------

def test_polish_lbfgs_finds_the_minimum_of_rosenbrocks_valley():
    model = Vector()

    def loss_fn(m, epoch):
        x, y = m.w[0], m.w[1]
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    history, stopped = polish_lbfgs(model, loss_fn, steps=10, progress=False)
    assert stopped is None and len(history) == 10
    assert torch.allclose(model.w.detach(), torch.ones(2, dtype=torch.float64), atol=1e-8)


def test_polish_lbfgs_keeps_its_last_completed_step_when_it_cannot_go_on(capsys):
    # the minimum (w0 = 3) lies beyond a wall where the loss is NaN (w0 > 1.5): L-BFGS makes progress
    # up to the wall, then every trial step crosses it
    def loss_fn(m, epoch):
        w0 = m.w[0]
        return 0.5 * (w0 - 3.0) ** 2 if float(w0.detach()) <= 1.5 else w0 * float("nan")

    model = Vector()
    history, stopped = polish_lbfgs(model, loss_fn, steps=20, max_iter=1, backtrack=2, progress=False)
    assert stopped is not None and "the loss is nan" in stopped
    assert 1 <= len(history) < 20
    w0 = float(model.w[0].detach())
    assert 0.9 <= w0 <= 1.5                                   # progress kept, not the start (0) nor past the wall
    assert [r["loss"] for r in history] == sorted((r["loss"] for r in history), reverse=True)


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "steps must be a positive integer"),
                                           ({"steps": 3, "max_iter": 0}, "max_iter must be a positive integer"),
                                           ({"steps": 3, "history_size": -1}, "history_size must be")])
def test_polish_lbfgs_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polish_lbfgs(Vector(), lambda m, e: m.w.sum(), progress=False, **kwargs)


# ---- fit_collocation --------------------------------------------------------------------------------

class _Decay(torch.nn.Module):
    """du/dt = -k u per species, k = exp(log_k)."""

    def __init__(self, n):
        super().__init__()
        self.log_k = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))

    def forward(self, u):
        return -self.log_k.exp() * u


def test_fit_collocation_recovers_rate_constants_from_derivative_estimates():
    from pyode.data import estimate_derivatives
    from pyode.nn import Sum

    t = torch.logspace(-2, 1, 40, dtype=torch.float64)
    k = torch.tensor([0.5, 5.0], dtype=torch.float64)
    u = torch.exp(-k * t[:, None])
    u_fit, dudt = estimate_derivatives(t, u, values=True)
    model = _Decay(2)
    loss = fit_collocation(model, t, u_fit, dudt, epochs=300, lbfgs_steps=20)
    torch.testing.assert_close(model.log_k.detach().exp(), k, rtol=2e-3, atol=0)
    assert loss < 1e-6
    # train= fits one part of a sum; the rest stays as it was
    fixed, free = _Decay(2), _Decay(2)
    with torch.no_grad():
        fixed.log_k.copy_(torch.tensor([0.3, 2.0], dtype=torch.float64).log())
    fit_collocation(Sum(fixed, free), t, u_fit, dudt, train=free, epochs=300, lbfgs_steps=20)
    torch.testing.assert_close(fixed.log_k.detach().exp(), torch.tensor([0.3, 2.0], dtype=torch.float64))
    torch.testing.assert_close(free.log_k.detach().exp(), torch.tensor([0.2, 3.0], dtype=torch.float64), rtol=5e-3,
                               atol=0)
    with pytest.raises(ValueError, match="reweight_every must be"):
        fit_collocation(model, t, u_fit, dudt, reweight_every=0)
