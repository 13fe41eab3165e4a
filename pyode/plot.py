"""Matplotlib figures for ODE fits: trajectories against data, and training curves.

Matplotlib is imported inside the functions, so ``import pyode`` works without it
(``pip install pyode[plot]`` adds it). Figures are built with ``matplotlib.figure.Figure`` rather
than ``pyplot``: nothing is registered with a GUI backend, so the functions work headless (PNGs are
rendered by Agg) and in long loops without leaking open figures. A returned Figure displays in
Jupyter; ``fig.savefig`` writes other formats.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["trajectories", "loss_curve", "rate_constants"]

PathLike = Union[str, "os.PathLike[str]"]

# A quantity is drawn on a log axis when its positive values span more than this many decades.
_LOG_DECADES = 3.0


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("pyode.plot needs matplotlib; install it with `pip install matplotlib` "
                          "or `pip install pyode[plot]`") from None
    return Figure


def _as_array(name: str, x: Any) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of pyode
        pass
    arr = np.asarray(x)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int8)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers; got an array of dtype {arr.dtype}")
    return arr.astype(np.float64)


def _spans_decades(values: np.ndarray) -> bool:
    pos = values[np.isfinite(values) & (values > 0)]
    return pos.size >= 2 and math.log10(pos.max() / pos.min()) > _LOG_DECADES


def _save(fig, path: Optional[PathLike]) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)


def trajectories(t: Any, data: Any = None, prediction: Any = None, *, names: Optional[Sequence[str]] = None,
                 t_prediction: Any = None, holdout: Any = None, logx: Optional[bool] = None, scale: Union[None, str, Sequence[Optional[str]]] = None,
                 path: Optional[PathLike] = None, title: Optional[str] = None):
    """One subplot per species: data as markers, prediction as lines, against time.

    Arguments:
        t: times, shape ``(T,)`` (tensor, array or list).
        data: observations, shape ``(T, n)`` (or ``(T,)`` for one species); NaNs are not drawn.
        prediction: model output at the same times, shape ``(T, n)`` (or ``(T,)``), or at the times
            ``t_prediction`` (e.g. a finer grid), shape ``(len(t_prediction), n)``.
        t_prediction: the times of ``prediction`` when they are not ``t``.
        holdout: boolean mask ``(T,)`` of data points held out of training (drawn hollow).
        names: ``n`` species names (default ``u1 ... un``).
        logx: log time axis; ``None`` picks one when ``t`` has no negative values and its positive
            values span more than three decades (points at ``t = 0`` are then not drawn).
        scale: y-axis scale, ``"linear"``, ``"log"`` or ``"symlog"``, for all species or one per
            species; ``None`` (for all, or for one species) picks ``"log"`` when that species' values
            are all positive and span more than three decades, else ``"linear"``.
        path: write a PNG here (parent folders are created).
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError naming the arguments and shapes when the shapes do not fit, or when neither data
        nor prediction is given; ImportError when matplotlib is missing.
    """
    t = _as_array("t", t)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (T,); got shape {t.shape}")
    if data is None and prediction is None:
        raise ValueError("pass data, prediction or both; there is nothing to plot")
    tp = t if t_prediction is None else _as_array("t_prediction", t_prediction)
    if tp.ndim != 1:
        raise ValueError(f"t_prediction must have shape (T,); got shape {tp.shape}")
    series: Dict[str, np.ndarray] = {}
    for name, values, times in (("data", data, t), ("prediction", prediction, tp)):
        if values is None:
            continue
        arr = _as_array(name, values)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] != times.shape[0]:
            which = "t" if times is t else "t_prediction"
            raise ValueError(f"{name} must have shape (T, n) with T = len({which}) = {times.shape[0]}; got {name} "
                             f"shape {np.shape(values)} and {which} shape {times.shape}")
        series[name] = arr
    if len(series) == 2 and series["data"].shape[1] != series["prediction"].shape[1]:
        raise ValueError(f"data and prediction must have the same number of species; got data "
                         f"{series['data'].shape} and prediction {series['prediction'].shape}")
    held = None
    if holdout is not None:
        held = _as_array("holdout", holdout) != 0
        if held.shape != t.shape:
            raise ValueError(f"holdout must be a mask of shape {t.shape} (one flag per time); got {held.shape}")
    n = next(iter(series.values())).shape[1]
    if names is None:
        names = [f"u{i + 1}" for i in range(n)]
    elif isinstance(names, str) or len(names) != n:
        raise ValueError(f"names must list one name per species ({n}); got {names!r}")
    if scale is None or isinstance(scale, str):
        scales: List[Optional[str]] = [scale] * n
    else:
        scales = list(scale)
        if len(scales) != n:
            raise ValueError(f"scale must be one scale or one per species ({n}); got {len(scales)}: {scale!r}")
    for s in scales:
        if s not in (None, "linear", "log", "symlog"):
            raise ValueError(f"scale must be 'linear', 'log', 'symlog' or None; got {s!r}")
    if logx is None:
        logx = bool((t >= 0).all()) and _spans_decades(t)
    if logx:        # t = 0 has no place on a log axis
        keep = tp > 0
        tp = tp[keep]
        if "prediction" in series:
            series["prediction"] = series["prediction"][keep]

    Figure = _figure_class()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.set_visible(False)
            continue
        values = np.concatenate([s[:, i] for s in series.values()])
        ax_scale = scales[i] or ("log" if (values[np.isfinite(values)] > 0).all() and _spans_decades(values)
                                 else "linear")
        if "data" in series:
            fit = np.ones_like(t, dtype=bool) if held is None else ~held
            ax.plot(t[fit], series["data"][fit, i], "o", ms=3, color=f"C{i % 10}", alpha=0.7, label="data")
            if held is not None:
                ax.plot(t[held], series["data"][held, i], "o", ms=5, mfc="none", color="k", label="held out")
        if "prediction" in series:
            ax.plot(tp, series["prediction"][:, i], "-", lw=1.5, color=f"C{i % 10}", label="prediction")
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale(ax_scale)
        ax.set_title(names[i])
        ax.set_xlabel("t")
        if i == 0 and len(series) == 2:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def _history_columns(history: Any) -> Tuple[List[float], Dict[str, List[Optional[float]]]]:
    from .train import History

    if isinstance(history, History):
        columns = history.as_dict()
    elif isinstance(history, dict):
        columns = {k: list(v) for k, v in history.items()}
    else:
        columns = {"loss": list(_as_array("history", history))}
    if "loss" not in columns:
        raise ValueError(f"history has no 'loss' column; its keys are {sorted(columns)}")
    epochs = columns.pop("epoch", None) or list(range(len(columns["loss"])))
    lengths = {k: len(v) for k, v in columns.items()}
    if any(n != len(epochs) for n in lengths.values()):
        raise ValueError(f"every history column must have one value per epoch ({len(epochs)}); got lengths {lengths}")
    return epochs, columns


def loss_curve(history: Any, *, path: Optional[PathLike] = None, logy: bool = True):
    """The loss against the epoch, and each other numeric metric on its own axes below it.

    Arguments:
        history: a :class:`pyode.train.History`, a dict of per-epoch lists (``"loss"`` required,
            ``"epoch"`` optional) or a sequence of losses.
        path: write a PNG here (parent folders are created).
        logy: log y axes; an axis whose values are not all positive uses ``"symlog"`` instead.

    Returns:
        The ``matplotlib.figure.Figure``. Seconds per epoch are not drawn.

    Raises:
        ValueError when the history has no loss or its columns differ in length; ImportError when
        matplotlib is missing.
    """
    epochs, columns = _history_columns(history)
    columns.pop("seconds", None)
    numeric = {}
    for key, values in columns.items():
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            numeric[key] = np.array([np.nan if v is None else float(v) for v in values])
    keys = ["loss"] + [k for k in numeric if k != "loss"]

    Figure = _figure_class()
    heights = [2.0] + [1.0] * (len(keys) - 1)
    fig = Figure(figsize=(6.0, 3.0 + 1.3 * (len(keys) - 1)), layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})
    x = np.asarray(epochs, dtype=np.float64)
    for ax, key in zip(axes[:, 0], keys):
        y = numeric[key]
        ax.plot(x, y, "-", lw=1.2, color="C0" if key == "loss" else "C1")
        finite = y[np.isfinite(y)]
        if logy:
            ax.set_yscale("log" if finite.size and (finite > 0).all() else "symlog")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    _save(fig, path)
    return fig


def rate_constants(labels: Sequence[str], found: Sequence[Optional[float]],
                   reference: Optional[Sequence[Optional[float]]] = None, *, path: Optional[PathLike] = None,
                   title: Optional[str] = None):
    """Rate constants as horizontal bars on a log axis: the ones found, and reference values beside
    them where known (``None`` marks a reaction missing from one side).

    Arguments:
        labels: one label per reaction, e.g. ``"2A -> B"``.
        found: the fitted rate constants (``None`` where the fit has no such reaction).
        reference: true or literature values, the same length (``None`` where unknown).
        path: write a PNG here (parent folders are created).
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ValueError when the lengths differ or a value is not positive; ImportError when matplotlib
        is missing.
    """
    labels = [str(s) for s in labels]
    columns = {"found": list(found), "reference": [None] * len(labels) if reference is None else list(reference)}
    for name, values in columns.items():
        if len(values) != len(labels):
            raise ValueError(f"{name} must have one value per label ({len(labels)}); got {len(values)}")
        bad = [v for v in values if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(f"{name} must hold positive rate constants or None; got {bad[:3]}")
    Figure = _figure_class()
    fig = Figure(figsize=(6.5, 1.2 + 0.4 * len(labels)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(labels))
    for offset, (name, color) in zip((-0.2, 0.2), (("found", "C0"), ("reference", "C1"))):
        values = columns[name]
        if reference is None and name == "reference":
            continue
        idx = [i for i, v in enumerate(values) if v is not None]
        ax.barh(y[idx] + (offset if reference is not None else 0.0), [values[i] for i in idx], height=0.38,
                color=color, label=name)
    ax.set_xscale("log")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("rate constant")
    ax.grid(True, axis="x", alpha=0.3)
    if reference is not None:
        ax.legend(loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)
    return fig


def ignition_delays(series: Sequence[dict], *, path: Optional[PathLike] = None):
    """Ignition delay against ``1000 / T0`` on a log axis. Each entry of ``series``: ``label``,
    ``T0`` (K), ``tau`` (s, pyode's, drawn as markers) and optionally ``reference`` (s, drawn as a line)."""
    Figure = _figure_class()
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for k, s in enumerate(series):
        x = 1000.0 / _as_array("T0", s["T0"])
        color = f"C{k}"
        if s.get("reference") is not None:
            ax.plot(x, 1e3 * _as_array("reference", s["reference"]), "-", color=color, alpha=0.6,
                    label=f"{s['label']}: Cantera")
        ax.plot(x, 1e3 * _as_array("tau", s["tau"]), "o", color=color, mfc="none", label=f"{s['label']}: pyode")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T0 (1/K)")
    ax.set_ylabel("ignition delay (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def sensitivities(labels: Sequence[str], values: Any, *, reference: Any = None, title: str = "",
                  path: Optional[PathLike] = None):
    """A horizontal bar chart of sensitivities (e.g. ``d ln τ / d ln k``), largest at the top;
    ``reference`` (same length, NaN where absent) drawn as markers."""
    Figure = _figure_class()
    vals = _as_array("values", values)
    fig = Figure(figsize=(6.4, 0.35 * len(labels) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(labels))[::-1]
    ax.barh(y, vals, color=["C3" if v > 0 else "C0" for v in vals], alpha=0.8, label="pyode (one backward pass)")
    if reference is not None:
        ref = _as_array("reference", reference)
        ok = np.isfinite(ref)
        ax.plot(ref[ok], y[ok], "kx", label="Cantera, central differences")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0.0, color="k", lw=0.6)
    ax.set_xlabel("d ln τ / d ln k")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    return fig
