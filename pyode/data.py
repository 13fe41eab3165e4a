"""Time-series data for fitting ODE models: generate it from a problem, save it to and load it from CSV.

A :class:`TimeSeries` holds float64 times ``t`` (T,), states ``u`` (T, n) and one name per column.
:func:`generate_data` solves an :class:`~pyode.ODEProblem` at given times and adds seeded Gaussian
noise; :func:`load_csv` and :func:`save_csv` read and write a header row plus one row per time, with
errors (:class:`DataError`) that name the file, row and column at fault.
"""
from __future__ import annotations

import csv
import difflib
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._problem import ODEProblem
from ._solve import solve

__all__ = ["DataError", "TimeSeries", "generate_data", "load_csv", "save_csv", "estimate_derivatives"]


class DataError(ValueError):
    """Invalid time-series data; the message names the file, row and column where there is one."""


@dataclass(frozen=True, eq=False)
class TimeSeries:
    """Observations of ``n`` named quantities at ``T`` increasing times.

    Arguments:
        t: times, shape ``(T,)``, strictly increasing and finite; stored as float64 (times stay
            float64 whatever the dtype of ``u``, as in :func:`pyode.solve`).
        u: values, shape ``(T, n)``, a finite floating tensor (``t`` is moved to its device).
        names: ``n`` distinct non-empty column names (any sequence of strings; stored as a tuple).

    Raises:
        TypeError: when ``u`` is not a floating tensor or a name is not a string.
        DataError: for wrong shapes, non-finite values, times that do not strictly increase, or
            missing, empty or repeated names.
    """

    t: torch.Tensor
    u: torch.Tensor
    names: Tuple[str, ...]

    def __post_init__(self):
        u = self.u if isinstance(self.u, torch.Tensor) else torch.as_tensor(self.u)
        if not u.is_floating_point():
            raise TypeError(f"TimeSeries u must be a floating tensor; got dtype {u.dtype}")
        t = torch.as_tensor(self.t, device=u.device)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"TimeSeries t must hold real numbers; got dtype {t.dtype}")
        t = t.to(torch.float64)
        if t.ndim != 1 or t.numel() == 0:
            raise DataError(f"TimeSeries t must have shape (T,) with T >= 1; got {tuple(t.shape)}")
        if u.ndim != 2 or u.shape[0] != t.shape[0] or u.shape[1] == 0:
            raise DataError(f"TimeSeries u must have shape (T, n) = ({t.shape[0]}, n) with n >= 1 to match "
                            f"t of shape {tuple(t.shape)}; got {tuple(u.shape)}")
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"TimeSeries names must be strings; got {name!r}")
            if not name:
                raise DataError("TimeSeries names must be non-empty strings")
        if len(names) != u.shape[1]:
            raise DataError(f"TimeSeries has {u.shape[1]} columns but {len(names)} names {list(names)}")
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise DataError(f"TimeSeries names must be distinct; repeated: {repeated}")
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"TimeSeries t contains NaN or infinite values at indices "
                            f"{torch.nonzero(~torch.isfinite(t)).reshape(-1).tolist()[:5]}")
        steps = t[1:] - t[:-1]
        if bool((steps <= 0).any()):
            i = int(torch.nonzero(steps <= 0)[0])
            raise DataError(f"TimeSeries t must strictly increase; t[{i}] = {float(t[i])!r} and "
                            f"t[{i + 1}] = {float(t[i + 1])!r}")
        if not bool(torch.isfinite(u.detach()).all()):
            row, col = torch.nonzero(~torch.isfinite(u.detach()))[0].tolist()
            raise DataError(f"TimeSeries u contains NaN or infinite values (first at time index {row}, "
                            f"column {names[col]!r})")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "names", names)

    def __len__(self) -> int:
        """The number of times ``T``."""
        return self.t.shape[0]

    @property
    def range(self) -> torch.Tensor:
        """Per column ``max - min`` over time, shape ``(n,)`` (zero for a constant column)."""
        return self.u.amax(0) - self.u.amin(0)

    @property
    def scale(self) -> torch.Tensor:
        """Per column ``max |u|`` over time, shape ``(n,)``; a column that is zero throughout gets 1,
        so dividing by the scale (to weight columns of different magnitude alike) is always safe."""
        scale = self.u.abs().amax(0)
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def split(self, *, holdout: Union[int, Sequence[int]]) -> Tuple["TimeSeries", "TimeSeries"]:
        """Split into ``(train, test)`` by a deterministic rule; both keep time order.

        Arguments:
            holdout: an int ``k >= 2`` holds out every k-th time, the indices ``k-1, 2k-1, ...``
                (so the first time, the initial condition, always stays in training); a sequence
                of indices (negative ones count from the end) holds out exactly those times.

        Returns:
            ``(train, test)``, two :class:`TimeSeries` with the same names.

        Raises:
            TypeError: when ``holdout`` is neither an int nor a sequence of ints.
            DataError: when ``k < 2``, an index is out of range or repeated, or either part would be empty.
        """
        T = len(self)
        if isinstance(holdout, bool) or not isinstance(holdout, (numbers.Integral, Sequence, torch.Tensor)):
            raise TypeError(f"holdout must be an int k (every k-th time) or a sequence of indices; got {holdout!r}")
        if isinstance(holdout, numbers.Integral):
            k = int(holdout)
            if k < 2:
                raise DataError(f"holdout={k}: every k-th time needs k >= 2 (k = 1 would hold out everything)")
            test = list(range(k - 1, T, k))
        else:
            raw = holdout.tolist() if isinstance(holdout, torch.Tensor) else list(holdout)
            test = []
            for i in raw:
                if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                    raise TypeError(f"holdout indices must be ints; got {i!r}")
                if not -T <= i < T:
                    raise DataError(f"holdout index {i} is out of range for {T} times")
                test.append(int(i) % T)
            if len(set(test)) != len(test):
                raise DataError(f"holdout indices repeat a time: {raw}")
            test.sort()
        held = set(test)
        train = [i for i in range(T) if i not in held]
        if not test or not train:
            raise DataError(f"split(holdout={holdout!r}) of {T} times leaves {len(train)} for training and "
                            f"{len(test)} for testing; both need at least one")
        return self._take(train), self._take(test)

    def _take(self, indices: List[int]) -> "TimeSeries":
        index = torch.tensor(indices, dtype=torch.long, device=self.u.device)
        return TimeSeries(self.t[index], self.u[index], self.names)

    def to(self, dtype: Optional[torch.dtype] = None, device: Any = None) -> "TimeSeries":
        """A copy with ``u`` converted to ``dtype`` and both tensors moved to ``device``; ``t`` stays float64.

        Raises:
            TypeError: when ``dtype`` is not a floating dtype.
        """
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"TimeSeries.to needs a floating dtype for u; got {dtype}")
        u = self.u.to(device=device, dtype=dtype)
        return TimeSeries(self.t.to(u.device), u, self.names)


def _default_names(n: int) -> List[str]:
    return [f"u{i + 1}" for i in range(n)]


def _check_times(times: Any, tspan: Tuple[float, float]) -> torch.Tensor:
    try:
        ts = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"times must be a 1-D sequence of numbers; got {type(times).__name__}") from None
    if ts.ndim != 1 or ts.numel() == 0:
        raise ValueError(f"times must have shape (T,) with T >= 1; got {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError("times contain NaN or infinite values")
    steps = ts[1:] - ts[:-1]
    if bool((steps <= 0).any()):
        i = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(f"times must strictly increase; times[{i}] = {float(ts[i])!r} and "
                         f"times[{i + 1}] = {float(ts[i + 1])!r}")
    t0, t1 = tspan
    if t1 < t0:
        raise ValueError(f"prob.tspan = {tspan} runs backwards; generate_data needs t0 < t1 "
                         "(remake the problem with a forward span)")
    if float(ts[0]) < t0 or float(ts[-1]) > t1:
        raise ValueError(f"times run from {float(ts[0])!r} to {float(ts[-1])!r}, outside prob.tspan = {tspan}; "
                         "widen the span with prob.remake(tspan=...)")
    return ts


def generate_data(prob: ODEProblem, alg, times, *, noise: float = 0.0, relative: Union[bool, str] = True,
                  seed: Optional[int] = None, reltol: float = 1e-10, abstol: float = 1e-12,
                  names: Optional[Sequence[str]] = None) -> TimeSeries:
    """Solve ``prob`` at ``times`` and return the states, optionally with Gaussian noise, as data.

    Arguments:
        prob: an :class:`~pyode.ODEProblem` for one trajectory (``u0`` of shape ``(n,)``).
        alg: the algorithm object, e.g. ``pyode.Vern7()`` or, for stiff problems such as
            :func:`~pyode.problems.robertson` and :func:`~pyode.problems.pollu`, ``pyode.Rodas5P()``.
        times: strictly increasing times inside ``prob.tspan``.
        noise: standard deviation of the added noise; with ``relative=True`` (default) a fraction
            of each column's :attr:`TimeSeries.scale` (max |u| of the clean data), so species of
            very different magnitude get comparable relative noise; otherwise in units of ``u``.
            ``0`` (default) returns the solver's values unchanged.
        relative: see ``noise``; ``"range"`` makes it a fraction of each column's
            :attr:`TimeSeries.range` (max − min of the clean data) instead, for species that change
            by a small fraction of their level (POLLU's y17 moves 1.4 % of its value in 60 minutes:
            noise of 1 % of its level is 70 % of its change).
        seed: seeds a private ``torch.Generator`` for the noise, so equal seeds give equal data
            and the global random state is untouched; ``None`` draws from torch's global generator.
            The noise is drawn in float64 on the CPU, so it does not depend on the device.
        reltol, abstol: solver tolerances, tight by default so that solver error is far below
            any noise of interest.
        names: column names; default ``u1, ..., un``.

    Returns:
        A :class:`TimeSeries` with ``t = times`` (float64) and ``u`` of ``prob.u0``'s dtype and
        device, detached from any autograd graph.

    Raises:
        TypeError / ValueError: for a batched problem, bad ``times`` (not increasing, outside
        ``prob.tspan``), or a negative or non-finite ``noise``; :class:`pyode.SolveError` when
        the solve fails.
    """
    if not isinstance(prob, ODEProblem):
        raise TypeError(f"prob must be a pyode.ODEProblem; got {type(prob).__name__}")
    if len(prob.batch_shape) != 0:
        raise ValueError(f"generate_data makes one time series; prob has a batch of shape {tuple(prob.batch_shape)} "
                         "(solve each member's problem separately)")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    if not isinstance(relative, bool) and relative != "range":
        raise TypeError(f"relative must be True, False or 'range'; got {relative!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None; got {seed!r}")
    ts = _check_times(times, prob.tspan)
    n = prob.u0.shape[-1]
    names = _default_names(n) if names is None else list(names)
    with torch.no_grad():
        sol = solve(prob, alg, saveat=ts, reltol=reltol, abstol=abstol)
    clean = TimeSeries(sol.t, sol.u.detach(), names)
    if noise == 0:
        return clean
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    eps = torch.randn(clean.u.shape, generator=generator, dtype=torch.float64)
    scale = clean.range if relative == "range" else clean.scale
    sigma = noise * (scale.to(torch.float64).cpu() if relative else 1.0)
    u = clean.u + (sigma * eps).to(dtype=clean.u.dtype, device=clean.u.device)
    return TimeSeries(clean.t, u, names)


# ---- CSV ------------------------------------------------------------------------------------------

def _suggest(name: str, available: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for close or case-insensitive matches of ``name``, else ``''``."""
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    close += [a for a in available if a.lower() == name.lower() and a not in close]
    if name.lower() in {"t", "time", "times"}:
        # "t" and "time" are too short for difflib's ratio to pair them.
        close += [a for a in available if a.lower() in {"t", "time", "times"} and a not in close]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def _read_records(path: str) -> List[Tuple[int, List[str]]]:
    """``(row number, fields)`` of every non-blank record of the CSV file."""
    records = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                for fields in reader:
                    if not fields or (len(fields) == 1 and not fields[0].strip()):
                        continue  # blank line (a trailing newline, a gap between blocks)
                    records.append((reader.line_num, fields))
            except csv.Error as err:
                raise DataError(f"{path}, row {reader.line_num}: malformed CSV ({err})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a CSV file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    return records


def _parse_number(text: str, path: str, row: int, column: str) -> float:
    where = f"{path}, row {row}, column {column!r}"
    stripped = text.strip()
    if not stripped:
        raise DataError(f"{where}: empty cell; every row needs a value in the time column and in every data "
                        "column (drop the row or fill the value in)")
    try:
        # float() also takes digit separators ("1_000"); a CSV number has none.
        if "_" in stripped:
            raise ValueError
        value = float(stripped)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {text!r} is not finite; NaN and infinite values are not allowed "
                        "(drop the row, or interpolate the value)")
    return value


def load_csv(path: Union[str, os.PathLike], *, time_col: str = "t",
             columns: Optional[Sequence[str]] = None) -> TimeSeries:
    """Read a :class:`TimeSeries` from a CSV file with a header row and one row per time.

    The first non-blank row is the header of column names (surrounding spaces ignored, a UTF-8
    byte-order mark too). Every later non-blank row holds one time: a number in ``time_col`` and in
    each data column; other columns are ignored and may hold anything. Times must strictly increase.
    Blank lines are skipped.

    Error messages number rows as the lines of the file, from 1: the header of a file that starts
    with it is row 1 and the first data row is row 2 — the numbers an editor or spreadsheet shows.
    Columns are named by their header.

    Arguments:
        path: the file.
        time_col: the name of the time column (default ``"t"``).
        columns: the data columns to read, in this order; default all columns but ``time_col``.

    Returns:
        A :class:`TimeSeries` with float64 ``t`` and ``u`` and ``names`` the data columns.

    Raises:
        DataError: (a ``ValueError``) naming file, row and column for: a missing or unreadable
            file; an empty file; a header with an empty or repeated name; no column ``time_col``
            (listing the columns and suggesting close matches) or a requested column that is
            absent; no data columns; a row with a different number of fields than the header; an
            empty cell, a value that is not a number (quoted in the message), NaN or infinity;
            fewer than 2 data rows; times that are repeated (naming both rows), decrease (naming
            the two rows), or run backwards throughout.
    """
    path = os.fspath(path)
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: the file is empty; expected a header row (e.g. '{time_col},x,y') and data rows")
    header_row, header = records[0]
    header = [name.strip() for name in header]
    seen = {}
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{path}, row {header_row}: header column {j + 1} has no name")
        if name in seen:
            raise DataError(f"{path}, row {header_row}: column name {name!r} appears twice in the header "
                            f"(columns {seen[name] + 1} and {j + 1})")
        seen[name] = j
    if time_col not in seen:
        raise DataError(f"{path}: no time column {time_col!r}; the columns are {header}."
                        f"{_suggest(time_col, header)} Pass time_col= to name another.")
    if columns is None:
        names = [name for name in header if name != time_col]
    else:
        if isinstance(columns, str):
            raise TypeError(f"columns must be a sequence of column names, not the string {columns!r}; "
                            f"write columns=[{columns!r}]")
        names = list(columns)
        for name in names:
            if name == time_col:
                raise DataError(f"{path}: columns includes the time column {time_col!r}; list data columns only")
            if name not in seen:
                others = [h for h in header if h != time_col]
                raise DataError(f"{path}: no column {name!r}; the data columns are {others}."
                                f"{_suggest(name, others)}")
        if len(set(names)) != len(names):
            raise DataError(f"{path}: columns names a column twice: {names}")
    if not names:
        raise DataError(f"{path}: no data columns; the header has only the time column {time_col!r}"
                        if columns is None else f"{path}: columns is empty; name at least one data column")
    jt, jdata = seen[time_col], [seen[name] for name in names]
    rows, times, values = [], [], []
    for row, fields in records[1:]:
        if len(fields) != len(header):
            raise DataError(f"{path}, row {row}: {len(fields)} fields, but the header (row {header_row}) has "
                            f"{len(header)}; check for a missing or extra comma")
        rows.append(row)
        times.append(_parse_number(fields[jt], path, row, time_col))
        values.append([_parse_number(fields[j], path, row, name) for j, name in zip(jdata, names)])
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} data row{'s' if len(rows) != 1 else ''} after the header; "
                        "at least 2 times are needed")
    _check_csv_times(path, time_col, rows, times)
    return TimeSeries(torch.tensor(times, dtype=torch.float64), torch.tensor(values, dtype=torch.float64), names)


def _check_csv_times(path: str, time_col: str, rows: List[int], times: List[float]) -> None:
    if all(b < a for a, b in zip(times, times[1:])):
        raise DataError(f"{path}: the times in column {time_col!r} decrease from {times[0]!r} (row {rows[0]}) "
                        f"to {times[-1]!r} (row {rows[-1]}); times must increase (reverse the rows)")
    for i in range(1, len(times)):
        if times[i] == times[i - 1]:
            raise DataError(f"{path}: rows {rows[i - 1]} and {rows[i]} have the same time {time_col} = "
                            f"{times[i]!r}; times must be distinct (average or drop the duplicates)")
        if times[i] < times[i - 1]:
            raise DataError(f"{path}: times must increase, but row {rows[i]} has {time_col} = {times[i]!r} "
                            f"after row {rows[i - 1]} with {time_col} = {times[i - 1]!r} (sort the rows by time)")


def save_csv(series: TimeSeries, path: Union[str, os.PathLike], *, time_col: str = "t") -> None:
    """Write ``series`` as CSV: a header ``time_col, *names``, then one row per time.

    Numbers are written with Python's shortest round-trip ``repr``, so :func:`load_csv` reads back
    exactly the same float64 values (float32 ``u`` reads back as float64 holding the same values).

    Arguments:
        series: the :class:`TimeSeries`.
        path: the file, overwritten if it exists.
        time_col: the header of the time column (default ``"t"``).

    Raises:
        TypeError: when ``series`` is not a :class:`TimeSeries`.
        DataError: when ``time_col`` equals a column name or a name has surrounding spaces (neither
            would read back the same).
    """
    if not isinstance(series, TimeSeries):
        raise TypeError(f"series must be a TimeSeries; got {type(series).__name__}")
    if time_col in series.names:
        raise DataError(f"time_col={time_col!r} is also a column name; pass another time_col")
    for name in (time_col, *series.names):
        if name != name.strip() or not name:
            raise DataError(f"column name {name!r} is empty or has surrounding spaces, which load_csv strips")
    t = series.t.detach().cpu().tolist()
    u = series.u.detach().cpu().to(torch.float64).tolist()
    with open(os.fspath(path), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([time_col, *series.names])
        for ti, ui in zip(t, u):
            writer.writerow([repr(ti), *(repr(v) for v in ui)])


def estimate_derivatives(t: Any, u: Any, *, log_time: Optional[bool] = None,
                         smoothing: Union[None, str, float] = None, values: bool = False):
    """``du/dt`` at the observation times, from a spline through the data (for collocation fits).

    The spline is taken in ``s = ln t`` when the times are positive and span more than three
    decades (``log_time=None`` decides so; kinetics observed at log-spaced times), else in ``t``:
    a curve that is smooth in ``ln t`` is badly resolved by a spline in ``t``. ``du/dt`` is then
    ``(du/ds) / t``.

    Arguments:
        t: times ``(T,)``, strictly increasing; u: values ``(T, n)``.
        log_time: force (True) or forbid (False) the log-time spline.
        smoothing: None interpolates (a not-a-knot cubic spline: exact data, derivatives accurate
            to the spline's O(h³)); ``"gcv"`` or a number fits a smoothing spline instead
            (``scipy.interpolate.make_smoothing_spline`` with that ``lam``, or chosen by
            generalised cross-validation) — for noisy data, whose interpolant's derivative is noise.

        values: also return the spline's values at ``t``: for smoothed data, the states a
            collocation fit should evaluate its model at, as free of noise as its targets (a stiff
            species' derivative is a small difference of large rates, which noise in the state
            shifts by more than the derivative itself).

    Returns:
        ``(T, n)`` float64 derivative estimates; with ``values``, ``(u_spline, dudt)``.

    Raises:
        DataError: for fewer than 4 times, times that do not increase, or ``log_time=True`` with
            non-positive times.
    """
    from scipy.interpolate import CubicSpline, make_smoothing_spline

    tt = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
    uu = torch.as_tensor(u).detach().cpu().to(torch.float64)
    if tt.ndim != 1 or uu.ndim != 2 or uu.shape[0] != tt.shape[0]:
        raise DataError(f"t must be (T,) and u (T, n); got {tuple(tt.shape)} and {tuple(uu.shape)}")
    if tt.shape[0] < 4:
        raise DataError(f"estimating derivatives needs at least 4 times; got {tt.shape[0]}")
    if not bool((tt.diff() > 0).all()):
        raise DataError("t must strictly increase to estimate derivatives")
    positive = bool((tt > 0).all())
    if log_time is None:
        log_time = positive and float(tt[-1] / tt[0]) > 1e3
    if log_time and not positive:
        raise DataError("log_time=True needs positive times; drop t <= 0 or pass log_time=False")
    x = (tt.log() if log_time else tt).numpy()
    y = uu.numpy()
    if smoothing is None:
        d = CubicSpline(x, y, bc_type="not-a-knot")(x, 1)
        v = y
    else:
        lam = None if smoothing == "gcv" else float(smoothing)
        splines = [make_smoothing_spline(x, y[:, i], lam=lam) for i in range(y.shape[1])]
        d = np.stack([s.derivative()(x) for s in splines], -1)
        v = np.stack([s(x) for s in splines], -1)
    dudt = torch.from_numpy(np.ascontiguousarray(d))
    dudt = dudt / tt[:, None] if log_time else dudt
    return (torch.from_numpy(np.ascontiguousarray(v)).to(torch.float64), dudt) if values else dudt
