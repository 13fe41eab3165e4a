"""A training loop for neural and hybrid ODE models: ``fit(model, loss_fn, epochs=...)``.

:func:`polish_lbfgs` finishes what a first-order optimizer started; :func:`fit_collocation` warm
starts a right-hand side on derivative estimates, without a solve.

One epoch is one evaluation of ``loss_fn(model, epoch)`` and one optimizer step (``lbfgs`` may
evaluate the loss several times within its step). ``fit`` records a :class:`History`, guards against
non-finite losses and gradients, clips or rescales gradients, stops early, and writes checkpoints
atomically that hold everything needed to resume bit-for-bit: parameters, optimizer, scheduler,
early-stopping and callback states, the history, and the global random number generators.

Epochs are counted from 0, as ``range(epochs)``: ``loss_fn`` receives the same number that the
history records and that error messages name.
"""
from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import os
import pickle
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ._retcode import SolveError

__all__ = ["fit", "polish_lbfgs", "fit_collocation", "History", "EarlyStopping", "Callback", "NonFiniteError", "load_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]

_CHECKPOINT_FORMAT = "pyode.train.checkpoint/1"
_HISTORY_FORMAT = "pyode.train.History/1"
# Keys every history record has; user metrics may not reuse them.
_RESERVED = ("epoch", "loss", "seconds", "grad_norm", "lr")
_OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs")


class NonFiniteError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; training stopped before the optimizer step.

    Attributes:
        epoch: the epoch whose loss or gradient was not finite.
        quantity: ``"loss"`` or ``"gradient"``.
        value: the offending value (the loss, or the gradient norm).
        history: the :class:`History` of the epochs completed before this one.
    """

    def __init__(self, message: str, *, epoch: int, quantity: str, value: float, history: "History"):
        super().__init__(message)
        self.epoch = epoch
        self.quantity = quantity
        self.value = value
        self.history = history


# ---- history ---------------------------------------------------------------------------------

class History:
    """Per-epoch training records.

    Every record has ``epoch``, ``loss``, ``seconds`` (wall time of the epoch's loss evaluation,
    backward pass and optimizer step, from ``time.perf_counter``; checkpoint writing excluded),
    ``grad_norm`` (the 2-norm of the whole gradient before clipping or rescaling) and ``lr`` (the
    learning rate of the first parameter group used for the step), plus the metrics ``loss_fn``
    returned.

    ``history["loss"]`` is the list of losses (``None`` for epochs without that key), ``history[i]``
    the i-th record, ``len(history)`` the number of epochs recorded, ``history.as_dict()`` a dict of
    lists and ``history.best`` the record with the lowest loss.

    Unlike the configuration objects of this package a History is mutable: ``fit`` appends to it.
    """

    def __init__(self, records: Iterable[Dict[str, Any]] = ()):
        self._records: List[Dict[str, Any]] = [dict(r) for r in records]

    def append(self, record: Dict[str, Any]) -> None:
        """Add one epoch's record (a dict of plain numbers)."""
        self._records.append(dict(record))

    @property
    def records(self) -> List[Dict[str, Any]]:
        """A copy of the records, one dict per epoch."""
        return [dict(r) for r in self._records]

    def keys(self) -> List[str]:
        """Every key that occurs in some record, in order of first appearance."""
        seen: Dict[str, None] = {}
        for r in self._records:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def as_dict(self) -> Dict[str, List[Any]]:
        """A dict mapping each key to its list of values over the epochs (``None`` where missing)."""
        return {k: [r.get(k) for r in self._records] for k in self.keys()}

    @property
    def best(self) -> Dict[str, Any]:
        """The record with the lowest loss (the earliest one on ties).

        Raises:
            ValueError: the history is empty.
        """
        if not self._records:
            raise ValueError("the history is empty; it has no best epoch")
        return dict(min(self._records, key=lambda r: r["loss"]))

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, key: Union[str, int, slice]):
        if isinstance(key, str):
            if not any(key in r for r in self._records):
                raise KeyError(f"no record has the key {key!r}; keys are {self.keys()}")
            return [r.get(key) for r in self._records]
        if isinstance(key, slice):
            return History(self._records[key])
        return dict(self._records[key])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self._records == other._records

    def __repr__(self) -> str:
        if not self._records:
            return "History(0 epochs)"
        return f"History({len(self)} epochs, last loss {self._records[-1]['loss']:.6g}, keys {self.keys()})"

    def save(self, path: PathLike) -> None:
        """Write the history as JSON, atomically (a crash never leaves a truncated file).

        Non-finite metric values are written as JSON's ``NaN``/``Infinity`` extensions, which
        :meth:`load` (Python's ``json``) reads back.
        """
        data = json.dumps({"format": _HISTORY_FORMAT, "records": self._records}, indent=1)
        _atomic_write(Path(path), lambda f: f.write(data.encode()))

    @classmethod
    def load(cls, path: PathLike) -> "History":
        """Read a history written by :meth:`save`.

        Raises:
            ValueError: the file is not a saved History.
        """
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("format") != _HISTORY_FORMAT:
            raise ValueError(f"{os.fspath(path)} is not a History saved by History.save "
                             f"(expected format {_HISTORY_FORMAT!r})")
        return cls(data["records"])


# ---- early stopping and callbacks --------------------------------------------------------------

@dataclass(frozen=True)
class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` epochs.

    An epoch improves on the best so far when its value is lower by more than ``min_delta``
    (higher, with ``mode="max"``). Training stops after the ``patience``-th epoch in a row without
    improvement. The value of epoch ``e`` is computed with the parameters before epoch ``e``'s
    optimizer step, so with ``restore_best=True`` those are the parameters loaded at the end.

    Arguments:
        patience: epochs without improvement before stopping (``>= 1``).
        min_delta: the smallest change that counts as an improvement (``>= 0``).
        monitor: ``"loss"`` or the name of a metric returned by ``loss_fn``.
        mode: ``"min"`` or ``"max"``.
        restore_best: load the parameters of the best epoch when training ends (early or not).

    Raises:
        ValueError naming the argument for a patience below 1, a negative or non-finite min_delta,
        or an unknown mode.
    """

    patience: int = 10
    min_delta: float = 0.0
    monitor: str = "loss"
    mode: str = "min"
    restore_best: bool = False

    def __post_init__(self):
        if isinstance(self.patience, bool) or not isinstance(self.patience, numbers.Integral) or self.patience < 1:
            raise ValueError(f"EarlyStopping patience must be an integer >= 1; got {self.patience!r}")
        if not isinstance(self.min_delta, numbers.Real) or not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"EarlyStopping min_delta must be a finite number >= 0; got {self.min_delta!r}")
        if not isinstance(self.monitor, str) or self.monitor in ("epoch", "seconds"):
            raise ValueError(f"EarlyStopping monitor must be 'loss' or a metric name; got {self.monitor!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max'; got {self.mode!r}")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"EarlyStopping restore_best must be True or False; got {self.restore_best!r}")

    def improves(self, value: float, best: Optional[float]) -> bool:
        """Whether ``value`` improves on ``best`` (``None``: nothing seen yet) by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


class Callback:
    """Optional base class for ``fit``'s callbacks; every method is optional.

    Any object with some of these methods works; subclassing only documents the intent.
    ``on_epoch_end`` runs after the epoch's record is appended and before a checkpoint is written,
    so the state it changes (augmented-Lagrangian multipliers, say) is saved with that epoch.
    """

    def on_epoch_end(self, epoch: int, history: History) -> None:
        """Called after every epoch."""

    def state_dict(self) -> Dict[str, Any]:
        """State saved in checkpoints (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict` when resuming."""


# ---- checkpoint files --------------------------------------------------------------------------

def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` through a temporary file in the same folder, fsync'ed and renamed over it.

    ``os.replace`` within one file system is atomic, so readers see the old file or the new one,
    never a partial one; the temporary file is removed if ``write`` fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable; not possible (nor needed) on every platform.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (tensors on the CPU).

    Keys: ``format``, ``epochs_done``, ``stopped_early``, ``model``, ``optimizer``, ``optimizer_class``,
    ``scheduler``, ``scheduler_class``, ``early_stopping``, ``callbacks``, ``history`` (a list of
    records) and ``rng``.

    Raises:
        ValueError: the file is not a checkpoint written by ``fit``.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # fit's own entries are all weights_only-safe; only a scheduler or callback state holding
        # other Python objects lands here. The caller named this file as the run's own checkpoint.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a checkpoint written by pyode.train.fit "
                         f"(expected format {_CHECKPOINT_FORMAT!r})")
    return ckpt


def _rng_state() -> Dict[str, Any]:
    # NumPy's state is stored as a tensor and plain numbers so that the file loads with weights_only=True.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _check_model_matches(model: torch.nn.Module, saved: Dict[str, torch.Tensor], path: PathLike) -> None:
    current = model.state_dict()
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    shapes = [f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(current[k].shape)}"
              for k in current if k in saved and saved[k].shape != current[k].shape]
    problems = []
    if missing:
        problems.append(f"entries of the model missing from the checkpoint: {missing[:5]}")
    if unexpected:
        problems.append(f"checkpoint entries the model does not have: {unexpected[:5]}")
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:5]))
    if problems:
        raise ValueError(f"checkpoint {os.fspath(path)} was written for a different model: " + "; ".join(problems)
                         + ". Resume with the model that wrote it, or pass a new checkpoint path (or resume=False)")


# ---- argument checks ---------------------------------------------------------------------------

def _positive_int(name: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}. {fix}")
    return int(value)


def _positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return float(value)


def _make_optimizer(optimizer: Any, params: List[torch.nn.Parameter], lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name not in _OPTIMIZERS:
            close = difflib.get_close_matches(name, _OPTIMIZERS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown optimizer {optimizer!r}; {hint}choose one of {list(_OPTIMIZERS)} "
                             "or pass a callable params -> torch.optim.Optimizer")
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
        if weight_decay != 0.0:
            raise ValueError(f"optimizer='lbfgs' has no weight decay; got weight_decay={weight_decay!r}. "
                             "Add a penalty to the loss instead, or pass weight_decay=0")
        # A line search makes L-BFGS robust to the step length; lr scales its first trial step
        # (torch's default for L-BFGS is lr=1).
        return torch.optim.LBFGS(params, lr=lr, line_search_fn="strong_wolfe")
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"the optimizer callable must return a torch.optim.Optimizer; it returned "
                            f"{type(opt).__name__}")
        return opt
    raise TypeError(f"optimizer must be one of {list(_OPTIMIZERS)} or a callable params -> "
                    f"torch.optim.Optimizer; got {type(optimizer).__name__}")


def _unpack_loss(out: Any, epoch: int) -> Tuple[torch.Tensor, Dict[str, float]]:
    metrics: Dict[str, Any] = {}
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise TypeError(f"loss_fn returned a tuple of length {len(out)} at epoch {epoch}; return a 0-d "
                            "loss tensor or a pair (loss, {'name': value, ...})")
        out, metrics = out
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"loss_fn must return a 0-d torch.Tensor (or (loss, metrics)); at epoch {epoch} it "
                        f"returned {type(out).__name__}")
    if out.ndim != 0:
        raise ValueError(f"loss_fn returned a loss of shape {tuple(out.shape)} at epoch {epoch}; reduce it to "
                         "a 0-d tensor, e.g. loss.mean() or loss.sum()")
    if not out.requires_grad:
        raise ValueError(f"the loss at epoch {epoch} does not require grad: it does not depend on the model's "
                         "trainable parameters (was it computed under torch.no_grad() or from detached tensors?)")
    values: Dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"metric names must be strings; got {name!r} at epoch {epoch}")
        if name in _RESERVED:
            raise ValueError(f"metric name {name!r} is reserved for fit's own record; rename it "
                             f"(reserved: {list(_RESERVED)})")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            values[name] = float(value.detach())
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            values[name] = float(value)
        else:
            shape = f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else ""
            raise TypeError(f"metric {name!r} must be a number or a one-element tensor; got "
                            f"{type(value).__name__}{shape} at epoch {epoch}")
    return out, values


# ---- the loop ----------------------------------------------------------------------------------

def _grad_norm(params: Sequence[torch.nn.Parameter]) -> Tuple[float, List[torch.Tensor]]:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0, grads
    device = grads[0].device
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float64).to(device) for g in grads])
    return float(torch.linalg.vector_norm(norms)), grads


def _first_nonfinite_grad(model: torch.nn.Module) -> str:
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name
    return "?"


def _describe_checkpoint(checkpoint: Optional[Path], written: Optional[int]) -> str:
    if checkpoint is None:
        return "no checkpoint is being written"
    if written is None:
        return f"no checkpoint was written by this run, {os.fspath(checkpoint)} is untouched"
    return f"the checkpoint {os.fspath(checkpoint)} (after {written} epochs) is intact"


def _state_copy(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    return _state_copy(model), copy.deepcopy(opt.state_dict())


def _step_back(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, state) -> None:
    """Restore ``state`` (from :func:`_snapshot`) and halve every learning rate, the scheduler's too."""
    model.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    for group in opt.param_groups:
        group["lr"] *= 0.5
    if sched is not None and hasattr(sched, "base_lrs"):
        sched.base_lrs = [lr * 0.5 for lr in sched.base_lrs]


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else type(err).__name__)


def fit(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, int], Any], *, epochs: int,
        optimizer: Union[str, Callable[[List[torch.nn.Parameter]], torch.optim.Optimizer]] = "adamw",
        lr: float = 1e-3, weight_decay: float = 0.0,
        scheduler: Optional[Callable[[torch.optim.Optimizer], Any]] = None,
        clip_grad_norm: Optional[float] = None, rescale_grad_norm: Optional[float] = None,
        early_stopping: Optional[EarlyStopping] = None,
        checkpoint: Optional[PathLike] = None, checkpoint_every: int = 10, resume: bool = False,
        callbacks: Sequence[Any] = (), progress: bool = True, log_every: Optional[int] = None,
        backtrack: int = 0) -> History:
    """Train ``model``'s parameters by minimising ``loss_fn(model, epoch)``.

    Each epoch evaluates the loss, backpropagates, checks that loss and gradient are finite, clips
    or rescales the gradient, steps the optimizer and then the scheduler, records the epoch, updates
    early stopping, runs the callbacks and, every ``checkpoint_every`` epochs, writes the checkpoint.
    ``model.train()`` is called once at the start.

    Arguments:
        model: the ``torch.nn.Module`` whose trainable parameters are optimised.
        loss_fn: ``loss_fn(model, epoch)`` returning a 0-d loss tensor, or ``(loss, metrics)`` with
            ``metrics`` a dict of numbers or one-element tensors recorded in the history.
        epochs: total number of epochs; when resuming, training continues up to this total.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"lbfgs"`` (strong-Wolfe line search; the loss
            is evaluated several times per epoch, the first evaluation is recorded) or a callable
            ``params -> torch.optim.Optimizer``.
        lr, weight_decay: for a named optimizer; a callable sets its own.
        scheduler: a callable ``optimizer -> scheduler``; stepped once per epoch after the optimizer,
            ``ReduceLROnPlateau`` with the epoch's loss.
        clip_grad_norm: scale the gradient down to this 2-norm when it is larger.
        rescale_grad_norm: scale the gradient to exactly this 2-norm at every step (Kim et al. 2021,
            "Stiff neural ordinary differential equations", use 100 before AdamW); a zero gradient is
            left as it is.
        early_stopping: an :class:`EarlyStopping`, or ``None`` to train all epochs.
        checkpoint: path of the checkpoint file, written every ``checkpoint_every`` epochs and when
            training ends; see :func:`load_checkpoint`.
        checkpoint_every: epochs between checkpoints.
        resume: when ``checkpoint`` exists, restore everything from it and continue; the parameters
            then match an uninterrupted run bit for bit (given deterministic kernels), because the
            global torch (CPU and CUDA), NumPy and ``random`` generators are restored too. Generators
            you create yourself are yours to save, e.g. in a callback's ``state_dict``.
        callbacks: objects with any of ``on_epoch_end(epoch, history)``, ``state_dict()`` and
            ``load_state_dict(state)`` (see :class:`Callback`); their states go into checkpoints.
        progress: show a ``tqdm`` bar with the loss, the metrics and seconds per epoch.
        log_every: print one line every ``log_every`` epochs (useful with ``progress=False``).
        backtrack: how many times in a row a failed epoch may be taken back (default 0: never).
            A neural ODE's parameters can step into a model whose solution blows up in finite
            time; the solve then fails (:class:`pyode.SolveError`) or the loss or gradient is not
            finite. With ``backtrack > 0`` the parameters and optimizer state return to before the
            step that led there (for L-BFGS, whose line search fails inside a step, to before that
            step), every learning rate is halved (the scheduler's base rates too) and the epoch is
            run again; a line says so. One snapshot of the parameters and optimizer state is kept
            for this. The first epoch of a run or a resume has nothing to return to, except with
            L-BFGS.

    Returns:
        The :class:`History`, including the epochs restored from the checkpoint.

    Raises:
        NonFiniteError: (a ``FloatingPointError``) the loss or the gradient is NaN or infinite; it
            names the epoch and value, nothing of that epoch is stepped or saved, and
            ``err.history`` holds the epochs before it.
        ValueError / TypeError naming the argument for bad arguments, and ValueError when the
        checkpoint was written for a model with other parameter names or shapes.
    """
    # -- validate everything before touching the model ------------------------------------------
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, epoch); got {type(loss_fn).__name__}")
    epochs = _positive_int("epochs", epochs, "Pass the total number of epochs, e.g. epochs=1000")
    lr = _positive_float("lr", lr)
    weight_decay = _positive_float("weight_decay", weight_decay, allow_zero=True)
    if scheduler is not None and not callable(scheduler):
        raise TypeError(f"scheduler must be None or a callable optimizer -> LRScheduler, e.g. "
                        f"lambda opt: torch.optim.lr_scheduler.StepLR(opt, 100); got {type(scheduler).__name__}")
    if clip_grad_norm is not None:
        clip_grad_norm = _positive_float("clip_grad_norm", clip_grad_norm)
    if rescale_grad_norm is not None:
        rescale_grad_norm = _positive_float("rescale_grad_norm", rescale_grad_norm)
    if clip_grad_norm is not None and rescale_grad_norm is not None:
        raise ValueError(f"pass clip_grad_norm ({clip_grad_norm}) or rescale_grad_norm ({rescale_grad_norm}), "
                         "not both: rescaling to a fixed norm makes clipping meaningless")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping must be None or EarlyStopping(patience=...); got "
                        f"{type(early_stopping).__name__}")
    checkpoint_every = _positive_int("checkpoint_every", checkpoint_every, "E.g. checkpoint_every=10")
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False; got {resume!r}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be None or a file path; got {type(checkpoint).__name__}")
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is None:
        raise ValueError("resume=True needs a checkpoint path to resume from; pass checkpoint='run.pt' "
                         "(it is created on the first run and continued on later ones)")
    if ckpt_path is not None and ckpt_path.is_dir():
        raise ValueError(f"checkpoint={os.fspath(ckpt_path)!r} is a directory; pass a file path such as "
                         f"{os.fspath(ckpt_path / 'checkpoint.pt')!r}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        for method in ("on_epoch_end", "state_dict", "load_state_dict"):
            if getattr(cb, method, None) is not None and not callable(getattr(cb, method)):
                raise TypeError(f"callbacks[{i}].{method} must be a method; got {type(getattr(cb, method)).__name__}")
    if log_every is not None:
        log_every = _positive_int("log_every", log_every, "Pass None to print nothing")
    if isinstance(backtrack, bool) or not isinstance(backtrack, int) or backtrack < 0:
        raise ValueError(f"backtrack must be an integer >= 0 (failed epochs taken back in a row); got {backtrack!r}")

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True); nothing to fit")
    opt = _make_optimizer(optimizer, params, lr, weight_decay)
    sched = scheduler(opt) if scheduler is not None else None
    if sched is not None and not callable(getattr(sched, "step", None)):
        raise TypeError(f"the scheduler callable must return a learning-rate scheduler with step(); it returned "
                        f"{type(sched).__name__}")
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    lbfgs = isinstance(opt, torch.optim.LBFGS)

    history = History()
    es_state: Dict[str, Any] = {"best": None, "best_epoch": None, "wait": 0, "best_params": None}
    start = 0
    stopped = False
    written: Optional[int] = None

    # -- resume ----------------------------------------------------------------------------------
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_model_matches(model, ckpt["model"], ckpt_path)
        if ckpt["optimizer_class"] != type(opt).__name__:
            raise ValueError(f"checkpoint {os.fspath(ckpt_path)} holds the state of a {ckpt['optimizer_class']} "
                             f"optimizer but this run uses {type(opt).__name__}; resume with the same optimizer")
        sched_class = type(sched).__name__ if sched is not None else None
        if ckpt["scheduler_class"] != sched_class:
            raise ValueError(f"checkpoint {os.fspath(ckpt_path)} was written with scheduler "
                             f"{ckpt['scheduler_class']} but this run uses {sched_class}; resume with the same one")
        if len(ckpt["callbacks"]) != len(callbacks):
            raise ValueError(f"checkpoint {os.fspath(ckpt_path)} holds {len(ckpt['callbacks'])} callback states "
                             f"but {len(callbacks)} callbacks were passed; pass the same callbacks in the same order")
        model.load_state_dict(ckpt["model"])
        try:
            opt.load_state_dict(ckpt["optimizer"])
        except ValueError as err:
            raise ValueError(f"the optimizer state in {os.fspath(ckpt_path)} does not fit this run's optimizer "
                             f"({err}); were parameters frozen or unfrozen since?") from None
        if sched is not None:
            sched.load_state_dict(ckpt["scheduler"])
        for cb, state in zip(callbacks, ckpt["callbacks"]):
            if state is not None and getattr(cb, "load_state_dict", None) is not None:
                cb.load_state_dict(state)
        if early_stopping is not None and ckpt["early_stopping"] is not None:
            es_state = ckpt["early_stopping"]
        history = History(ckpt["history"])
        start = int(ckpt["epochs_done"])
        stopped = bool(ckpt["stopped_early"])
        written = start
        _set_rng_state(ckpt["rng"])

    def save_checkpoint(epochs_done: int) -> None:
        state = {
            "format": _CHECKPOINT_FORMAT,
            "epochs_done": epochs_done,
            "stopped_early": stopped,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "optimizer_class": type(opt).__name__,
            "scheduler": sched.state_dict() if sched is not None else None,
            "scheduler_class": type(sched).__name__ if sched is not None else None,
            "early_stopping": es_state if early_stopping is not None else None,
            "callbacks": [cb.state_dict() if getattr(cb, "state_dict", None) is not None else None
                          for cb in callbacks],
            "history": history.records,
            "rng": _rng_state(),
        }
        # Looked up at call time so that the write path is the one torch.save provides now.
        _atomic_write(ckpt_path, lambda f: torch.save(state, f))

    # -- train -----------------------------------------------------------------------------------
    model.train()
    before, failures = None, 0        # the state before the last step, for backtrack
    bar = tqdm(total=epochs, initial=min(start, epochs), disable=not progress, unit="epoch", dynamic_ncols=True)
    try:
        epoch = start
        while epoch < epochs and not stopped:
            first: Dict[str, Any] = {}

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss, metrics = _unpack_loss(loss_fn(model, epoch), epoch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteError(
                        f"the loss is {value} at epoch {epoch}; the optimizer did not step and "
                        f"{_describe_checkpoint(ckpt_path, written)}. Try a smaller lr, clip_grad_norm or "
                        "rescale_grad_norm, a stiff solver, or look for log/sqrt/division of bad values in loss_fn",
                        epoch=epoch, quantity="loss", value=value, history=History(history.records))
                loss.backward()
                norm, grads = _grad_norm(params)
                if not math.isfinite(norm):
                    raise NonFiniteError(
                        f"the gradient is not finite at epoch {epoch} (norm {norm}, first in parameter "
                        f"{_first_nonfinite_grad(model)!r}) while the loss is {value}; the optimizer did not step "
                        f"and {_describe_checkpoint(ckpt_path, written)}. Try a smaller lr or a sensitivity "
                        "algorithm that suits the problem; a non-finite gradient cannot be clipped",
                        epoch=epoch, quantity="gradient", value=norm, history=History(history.records))
                target = rescale_grad_norm if rescale_grad_norm is not None else (
                    clip_grad_norm if clip_grad_norm is not None and norm > clip_grad_norm else None)
                if target is not None and norm > 0.0:
                    scale = target / norm
                    for g in grads:
                        g.mul_(scale)
                if not first:
                    first.update(loss=value, metrics=metrics, grad_norm=norm)
                    if early_stopping is not None:
                        # Decided before the step: these are the parameters that produced this value.
                        record = {"loss": value, **metrics}
                        if early_stopping.monitor not in record:
                            raise ValueError(f"EarlyStopping monitors {early_stopping.monitor!r} but loss_fn "
                                             f"returned the metrics {sorted(metrics)} at epoch {epoch}")
                        monitored = record[early_stopping.monitor]
                        if early_stopping.improves(monitored, es_state["best"]):
                            es_state.update(best=monitored, best_epoch=epoch, wait=0)
                            if early_stopping.restore_best:
                                es_state["best_params"] = {k: v.detach().clone()
                                                           for k, v in model.state_dict().items()}
                        else:
                            es_state["wait"] += 1
                return loss

            t0 = time.perf_counter()
            lr_used = float(opt.param_groups[0]["lr"])
            snap = _snapshot(model, opt) if backtrack and lbfgs else None
            try:
                if lbfgs:
                    opt.step(closure)
                else:
                    closure()
            except (SolveError, NonFiniteError) as err:
                # L-BFGS fails inside this step (at a trial point of its line search); the other
                # optimizers fail evaluating the result of the previous step
                back = snap if lbfgs else before
                if back is None or failures >= backtrack:
                    raise
                failures += 1
                _step_back(model, opt, sched, back)
                tqdm.write(f"epoch {epoch}: {_first_line(err)}; took back the last step and halved the learning "
                           f"rate to {opt.param_groups[0]['lr']:.3g} ({failures} of {backtrack} in a row)")
                continue
            if backtrack:
                before = snap if lbfgs else _snapshot(model, opt)
            if not lbfgs:
                opt.step()
            failures = 0
            if sched is not None:
                if plateau:
                    sched.step(first["loss"])
                else:
                    sched.step()
            seconds = time.perf_counter() - t0

            history.append({"epoch": epoch, "loss": first["loss"], "seconds": seconds,
                            "grad_norm": first["grad_norm"], "lr": lr_used, **first["metrics"]})
            if early_stopping is not None and es_state["wait"] >= early_stopping.patience:
                stopped = True
            for cb in callbacks:
                if getattr(cb, "on_epoch_end", None) is not None:
                    cb.on_epoch_end(epoch, history)
            epoch += 1
            if ckpt_path is not None and (epoch % checkpoint_every == 0 or epoch == epochs or stopped):
                save_checkpoint(epoch)
                written = epoch

            if progress:
                bar.set_postfix({"loss": f"{first['loss']:.4g}",
                                 **{k: f"{v:.4g}" for k, v in first["metrics"].items()},
                                 "s/epoch": f"{seconds:.3g}"}, refresh=False)
                bar.update(1)
            if log_every is not None and (epoch % log_every == 0 or epoch == epochs or stopped):
                extras = "".join(f", {k} {v:.6g}" for k, v in first["metrics"].items())
                line = (f"epoch {epoch - 1}: loss {first['loss']:.6g}{extras}, grad norm {first['grad_norm']:.3g}, "
                        f"lr {lr_used:.3g}, {seconds:.3g} s")
                if stopped:
                    line += f"; early stop (best {early_stopping.monitor} at epoch {es_state['best_epoch']})"
                tqdm.write(line)
    finally:
        bar.close()

    if early_stopping is not None and early_stopping.restore_best and es_state["best_params"] is not None:
        model.load_state_dict(es_state["best_params"])
    return history


class _LastCompleted:
    """Keeps the parameters after each completed epoch (for L-BFGS: after a successful line search)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.params = _state_copy(model)
        self.history = History()

    def on_epoch_end(self, epoch: int, history: History) -> None:
        self.params = _state_copy(self.model)
        self.history = History(history.records)


def polish_lbfgs(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module, int], Any], *, steps: int,
                 max_iter: int = 20, history_size: int = 50, backtrack: int = 3,
                 checkpoint: Optional[PathLike] = None, resume: bool = False, progress: bool = True,
                 log_every: Optional[int] = None) -> Tuple[History, Optional[str]]:
    """L-BFGS with a strong-Wolfe line search, to finish what a first-order optimizer started
    (DiffEqFlux's ADAM-then-BFGS recipe): ``steps`` epochs of up to ``max_iter`` loss evaluations.

    Far from a minimum, a line search of a neural ODE can try parameters whose model cannot be
    solved. Such a step is taken back and retried at half the step length (``backtrack`` times in
    a row, see :func:`fit`); when that is not enough, the parameters after the last completed step
    are restored (each completed step lowered the loss) and the reason is returned, not raised.

    Returns:
        ``(history, stopped)``: the :class:`History` of the completed steps, and ``None`` when all
        ``steps`` ran, else a one-line reason why the polish stopped early.
    """
    steps = _positive_int("steps", steps, "Pass the number of L-BFGS steps, e.g. steps=40")
    max_iter = _positive_int("max_iter", max_iter, "Pass the loss evaluations per step, e.g. max_iter=20")
    history_size = _positive_int("history_size", history_size, "Pass the L-BFGS memory, e.g. history_size=50")
    last = _LastCompleted(model)
    try:
        history = fit(model, loss_fn, epochs=steps,
                      optimizer=lambda ps: torch.optim.LBFGS(ps, lr=1.0, max_iter=max_iter, history_size=history_size,
                                                             line_search_fn="strong_wolfe"),
                      checkpoint=checkpoint, checkpoint_every=1, resume=resume, progress=progress,
                      log_every=log_every, backtrack=backtrack, callbacks=[last])
    except (SolveError, NonFiniteError) as err:
        model.load_state_dict(last.params)
        return last.history, _first_line(err)
    return history, None


def fit_collocation(model: torch.nn.Module, t: Any, u: torch.Tensor, dudt: torch.Tensor, scale: Any = None, *,
                    train: Optional[torch.nn.Module] = None, t0: float = 0.0, epochs: int = 3000, lr: float = 1e-2,
                    reweight_every: int = 100, lbfgs_steps: int = 50) -> float:
    """Fit ``model(u) ≈ dudt`` at the states ``u`` (a warm start before training through a solver).

    The loss is :func:`pyode.losses.collocation_loss` with :func:`~pyode.losses.collocation_weights`:
    each residual counts by the trajectory error it causes, recomputed from the model every
    ``reweight_every`` epochs. AdamW (``lr``) for ``epochs``, then :func:`polish_lbfgs` for
    ``lbfgs_steps``, both without a progress bar (seconds for small networks).

    Arguments:
        model: the whole right-hand side ``model(u)`` (known kinetics plus a network, say).
        t, u, dudt: times ``(K,)``, states ``(K, n)`` and derivative estimates ``(K, n)``, e.g. from
            :func:`pyode.data.estimate_derivatives` with ``values=True`` (its smoothed states for
            noisy data).
        scale: per-species scale of the trajectory errors (``None``: 1).
        train: the module whose parameters are fitted (default: ``model``), e.g. the network alone.
        t0: the time the dynamics start from.

    Returns:
        The final weighted loss.
    """
    from .losses import collocation_loss, collocation_weights

    reweight_every = _positive_int("reweight_every", reweight_every, "Pass how often to recompute the weights, "
                                   "e.g. reweight_every=100")
    train = model if train is None else train
    weights = [collocation_weights(model, t, u, scale, t0=t0)]

    def loss_fn(m, epoch):
        if epoch % reweight_every == 0 and epoch:
            weights[0] = collocation_weights(model, t, u, scale, t0=t0)
        return collocation_loss(model, u, dudt, weights[0])

    fit(train, loss_fn, epochs=epochs, optimizer="adamw", lr=lr, progress=False)
    weights[0] = collocation_weights(model, t, u, scale, t0=t0)
    if lbfgs_steps:
        polish_lbfgs(train, lambda m, e: collocation_loss(model, u, dudt, weights[0]), steps=lbfgs_steps,
                     progress=False)
    with torch.no_grad():
        return float(collocation_loss(model, u, dudt, weights[0]))
