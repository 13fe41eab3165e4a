"""Time-series data (``pyode.data``): generation from problems, CSV round trips and every CSV error, and
spline derivative estimates."""
from __future__ import annotations

import pytest
import torch

import pyode
from pyode import problems
from pyode.data import DataError, TimeSeries, estimate_derivatives, generate_data, load_csv, save_csv

F64 = torch.float64


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _series(T=6, n=2):
    t = torch.arange(T, dtype=F64) * 0.5
    u = torch.stack([torch.sin(t + j) * (j + 1) for j in range(n)], -1)
    return TimeSeries(t, u, [f"x{j}" for j in range(n)])


# ---- TimeSeries -----------------------------------------------------------------------------------

def test_timeseries_range_scale_and_dtypes():
    t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float32)
    u = torch.tensor([[1.0, 0.0, -3.0], [2.0, 0.0, 1.0], [0.5, 0.0, 2.0]], dtype=torch.float32)
    s = TimeSeries(t, u, ["a", "b", "c"])
    assert s.t.dtype == F64 and s.u.dtype == torch.float32 and len(s) == 3
    assert s.names == ("a", "b", "c")
    assert s.range.tolist() == [1.5, 0.0, 5.0]
    assert s.scale.tolist() == [2.0, 1.0, 3.0]  # the all-zero column gets scale 1


def test_timeseries_to_keeps_times_float64():
    s = _series().to(torch.float32)
    assert s.u.dtype == torch.float32 and s.t.dtype == F64
    assert s.to(device="cpu").u.device.type == "cpu"
    with pytest.raises(TypeError, match="floating dtype"):
        _series().to(torch.int64)


@pytest.mark.parametrize("t, u, names, match", [
    ([0.0, 1.0], [[1.0], [2.0], [3.0]], ["a"], r"shape \(T, n\) = \(2, n\)"),
    ([0.0, 1.0], [[1.0], [2.0]], ["a", "b"], "1 columns but 2 names"),
    ([0.0, 1.0], [[1.0, 2.0], [2.0, 3.0]], ["a", "a"], "distinct; repeated: \\['a'\\]"),
    ([0.0, 1.0], [[1.0], [2.0]], [""], "non-empty"),
    ([0.0, 0.0], [[1.0], [2.0]], ["a"], r"strictly increase; t\[0\] = 0.0 and t\[1\] = 0.0"),
    ([0.0, float("nan")], [[1.0], [2.0]], ["a"], "NaN"),
    ([0.0, 1.0], [[1.0], [float("inf")]], ["a"], "time index 1, column 'a'"),
])
def test_timeseries_validation(t, u, names, match):
    with pytest.raises(DataError, match=match):
        TimeSeries(torch.tensor(t, dtype=F64), torch.tensor(u, dtype=F64), names)


def test_timeseries_rejects_integer_values():
    with pytest.raises(TypeError, match="floating"):
        TimeSeries(torch.tensor([0.0, 1.0]), torch.tensor([[1], [2]]), ["a"])


def test_split_every_kth_time():
    s = _series(T=10)
    train, test = s.split(holdout=3)
    assert test.t.tolist() == [1.0, 2.5, 4.0]  # indices 2, 5, 8
    assert train.t.tolist() == [0.0, 0.5, 1.5, 2.0, 3.0, 3.5, 4.5]
    torch.testing.assert_close(test.u, s.u[[2, 5, 8]], rtol=0.0, atol=0.0)
    assert train.names == test.names == s.names
    # Deterministic: the same split again.
    assert s.split(holdout=3)[1].t.tolist() == test.t.tolist()


def test_split_given_indices():
    s = _series(T=6)
    train, test = s.split(holdout=[-1, 4])
    assert test.t.tolist() == [2.0, 2.5] and train.t.tolist() == [0.0, 0.5, 1.0, 1.5]
    train, test = s.split(holdout=torch.tensor([0]))
    assert test.t.tolist() == [0.0] and len(train) == 5


@pytest.mark.parametrize("holdout, error, match", [
    (1, DataError, "k >= 2"),
    (7, DataError, "leaves 6 for training and 0 for testing"),
    ([6], DataError, "index 6 is out of range for 6 times"),
    ([1, -5], DataError, "repeat"),
    ([0, 1, 2, 3, 4, 5], DataError, "leaves 0 for training"),
    ([], DataError, "0 for testing"),
    (0.5, TypeError, "int k"),
    (True, TypeError, "int k"),
    ([1.0], TypeError, "indices must be ints"),
])
def test_split_errors(holdout, error, match):
    with pytest.raises(error, match=match):
        _series(T=6).split(holdout=holdout)


# ---- generate_data --------------------------------------------------------------------------------

def test_generate_data_without_noise_is_the_solvers_values():
    prob = problems.lotka_volterra()
    times = torch.linspace(0.0, 10.0, 21, dtype=F64)
    data = generate_data(prob, pyode.Vern7(), times)
    sol = pyode.solve(prob, pyode.Vern7(), saveat=times, reltol=1e-10, abstol=1e-12)
    assert torch.equal(data.t, times) and torch.equal(data.u, sol.u)
    assert data.names == ("u1", "u2") and not data.u.requires_grad


def test_generate_data_noise_is_reproducible_and_scaled():
    prob = problems.lotka_volterra()
    times = torch.linspace(0.0, 10.0, 401, dtype=F64)
    clean = generate_data(prob, pyode.Vern7(), times)
    a = generate_data(prob, pyode.Vern7(), times, noise=0.05, seed=3, names=["prey", "predator"])
    b = generate_data(prob, pyode.Vern7(), times, noise=0.05, seed=3, names=["prey", "predator"])
    c = generate_data(prob, pyode.Vern7(), times, noise=0.05, seed=4)
    assert torch.equal(a.u, b.u) and not torch.equal(a.u, c.u)
    assert a.names == ("prey", "predator")
    # The seed does not touch the global generator.
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    generate_data(prob, pyode.Vern7(), times, noise=0.05, seed=3)
    assert torch.equal(torch.rand(3), before)
    # Relative noise: standard deviation 5% of each species' max |u|, measured over 401 draws.
    rel_std = (a.u - clean.u).std(0) / clean.scale
    assert bool(((rel_std > 0.04) & (rel_std < 0.06)).all()), rel_std
    # Absolute noise: the same standard deviation for both species.
    d = generate_data(prob, pyode.Vern7(), times, noise=0.05, relative=False, seed=3)
    abs_std = (d.u - clean.u).std(0)
    assert bool(((abs_std > 0.04) & (abs_std < 0.06)).all()), abs_std
    # Range-relative noise: 5% of each species' max - min (the same draws, scaled otherwise).
    e = generate_data(prob, pyode.Vern7(), times, noise=0.05, relative="range", seed=3)
    torch.testing.assert_close((e.u - clean.u) / clean.range, (a.u - clean.u) / clean.scale)
    assert bool((clean.range < 0.99 * clean.scale).all())          # the two scales differ here
    with pytest.raises(TypeError, match="relative must be True, False or 'range'; got 'max'"):
        generate_data(prob, pyode.Vern7(), times, noise=0.05, relative="max")


def test_generate_data_noise_is_the_same_for_float32():
    # The noise is drawn in float64, so a float32 problem gets the same noise up to rounding.
    times = torch.linspace(0.0, 2.0, 11, dtype=F64)
    d64 = generate_data(problems.lotka_volterra(), pyode.Vern7(), times, noise=0.1, seed=1)
    d32 = generate_data(problems.lotka_volterra(dtype=torch.float32), pyode.Vern7(), times, noise=0.1, seed=1,
                        reltol=1e-6, abstol=1e-8)
    assert d32.u.dtype == torch.float32 and d32.t.dtype == F64
    torch.testing.assert_close(d32.u.double(), d64.u, rtol=0.0, atol=1e-4)


def test_generate_data_from_stiff_problems():
    rober = generate_data(problems.robertson(), pyode.Rodas5P(), [0.0, 1.0, 10.0, 100.0], abstol=1e-14,
                          names=["y1", "y2", "y3"])
    torch.testing.assert_close(rober.u.sum(-1), torch.ones(4, dtype=F64), rtol=0.0, atol=1e-9)
    pollu = generate_data(problems.pollu(), pyode.Rodas5P(), torch.linspace(0.0, 60.0, 7, dtype=F64),
                          reltol=1e-8, abstol=1e-14, noise=0.01, seed=0)
    assert pollu.u.shape == (7, 20) and bool((pollu.scale > 0).all())


def test_generate_data_from_the_new_problems():
    for prob in (problems.spiral(), problems.damped_oscillator(), problems.charged_particle()):
        data = generate_data(prob, pyode.Tsit5(), torch.linspace(*prob.tspan, 5, dtype=F64), reltol=1e-8,
                             abstol=1e-10)
        assert data.u.shape == (5, prob.u0.shape[-1])


@pytest.mark.parametrize("kwargs, times, error, match", [
    (dict(noise=-0.1), [0.0, 1.0], ValueError, "noise must be a finite number >= 0"),
    (dict(noise=float("nan")), [0.0, 1.0], ValueError, "noise"),
    (dict(seed=1.5), [0.0, 1.0], TypeError, "seed must be an int"),
    ({}, [0.0, 2.0, 1.0], ValueError, r"strictly increase; times\[1\] = 2.0"),
    ({}, [0.0, 11.0], ValueError, r"outside prob.tspan = \(0.0, 10.0\)"),
    ({}, [[0.0, 1.0]], ValueError, r"shape \(T,\)"),
])
def test_generate_data_errors(kwargs, times, error, match):
    with pytest.raises(error, match=match):
        generate_data(problems.lotka_volterra(), pyode.Tsit5(), times, **kwargs)


def test_generate_data_rejects_batches():
    prob = problems.lotka_volterra(u0=torch.ones(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"batch of shape \(3,\)"):
        generate_data(prob, pyode.Tsit5(), [0.0, 1.0])


# ---- CSV round trip -------------------------------------------------------------------------------

def test_csv_round_trip_is_exact(tmp_path):
    data = generate_data(problems.lotka_volterra(), pyode.Vern7(), torch.linspace(0.0, 10.0, 17, dtype=F64),
                         noise=0.1, seed=0, names=["prey", "predator"])
    path = tmp_path / "lv.csv"
    save_csv(data, path)
    back = load_csv(path)
    assert torch.equal(back.t, data.t) and torch.equal(back.u, data.u) and back.names == data.names
    assert path.read_text().splitlines()[0] == "t,prey,predator"
    # Another time column name, and float32 values read back as the same values.
    save_csv(data.to(torch.float32), tmp_path / "lv32.csv", time_col="time")
    back32 = load_csv(tmp_path / "lv32.csv", time_col="time")
    assert torch.equal(back32.u.float(), data.u.float()) and back32.u.dtype == F64


def test_load_csv_columns_spaces_blank_lines_and_bom(tmp_path):
    path = _write(tmp_path, "\ufeff t , a , label , b \n0, 1.5, first, -2\n\n1, 2e-3, second, 3\n2,4,third,5\n\n")
    s = load_csv(path, columns=["b", "a"])  # in the order asked; the text column is not read
    assert s.names == ("b", "a")
    assert s.t.tolist() == [0.0, 1.0, 2.0]
    assert s.u.tolist() == [[-2.0, 1.5], [3.0, 2e-3], [5.0, 4.0]]
    # Read by default, the text column is a data column and its first value is not a number.
    with pytest.raises(DataError, match="row 2, column 'label': ' first' is not a number"):
        load_csv(path)
    # Rows are the file's lines: after the blank line 3, the next data row is row 4.
    _write(tmp_path, "t,a\n0,1\n\n1,x\n", "gap.csv")
    with pytest.raises(DataError, match="row 4, column 'a'"):
        load_csv(tmp_path / "gap.csv")


def test_save_csv_errors(tmp_path):
    with pytest.raises(DataError, match="also a column name"):
        save_csv(_series(), tmp_path / "x.csv", time_col="x0")
    with pytest.raises(DataError, match="surrounding spaces"):
        save_csv(TimeSeries(torch.tensor([0.0, 1.0]), torch.ones(2, 1), [" a"]), tmp_path / "x.csv")
    with pytest.raises(TypeError, match="TimeSeries"):
        save_csv({"t": [0.0]}, tmp_path / "x.csv")


# ---- CSV errors: each names the file, the row (header = row 1) and the column -----------------------

def _load_error(tmp_path, text, match, **kwargs):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        load_csv(path, **kwargs)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path)


def test_empty_file(tmp_path):
    _load_error(tmp_path, "", "the file is empty; expected a header row")
    _load_error(tmp_path, "\n  \n\n", "the file is empty")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("t,caf\xe9\n0,1\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_csv(path)


def test_missing_time_column_lists_columns_and_suggests(tmp_path):
    msg = _load_error(tmp_path, "time,x,y\n0,1,2\n1,2,3\n", r"no time column 't'; the columns are "
                      r"\['time', 'x', 'y'\]\. Did you mean 'time'\?")
    assert "time_col=" in msg
    _load_error(tmp_path, "Tme,x\n0,1\n1,2\n", "Did you mean 'Tme'", time_col="Time")
    _load_error(tmp_path, "s,x\n0,1\n1,2\n", r"the columns are \['s', 'x'\]\. Pass time_col=")


def test_requested_column_missing(tmp_path):
    _load_error(tmp_path, "t,prey,predator\n0,1,2\n1,2,3\n",
                r"no column 'pray'; the data columns are \['prey', 'predator'\]\. Did you mean 'prey'\?",
                columns=["pray"])
    _load_error(tmp_path, "t,x\n0,1\n1,2\n", "columns includes the time column 't'", columns=["x", "t"])
    _load_error(tmp_path, "t,x\n0,1\n1,2\n", "names a column twice", columns=["x", "x"])
    _load_error(tmp_path, "t,x\n0,1\n1,2\n", "columns is empty", columns=[])
    with pytest.raises(TypeError, match="columns=\\['x'\\]"):
        load_csv(_write(tmp_path, "t,x\n0,1\n1,2\n"), columns="x")


def test_no_data_columns(tmp_path):
    _load_error(tmp_path, "t\n0\n1\n", "no data columns; the header has only the time column 't'")


def test_bad_header(tmp_path):
    _load_error(tmp_path, "t,x,,y\n0,1,2,3\n1,2,3,4\n", "row 1: header column 3 has no name")
    _load_error(tmp_path, "t,x,y,x\n0,1,2,3\n1,2,3,4\n", "row 1: column name 'x' appears twice in the header "
                r"\(columns 2 and 4\)")


def test_non_numeric_value_is_quoted(tmp_path):
    _load_error(tmp_path, "t,x,y\n0,1,2\n1,2,3\n2,1.5.2,4\n", "row 4, column 'x': '1.5.2' is not a number")
    _load_error(tmp_path, "t,x\n0,1\nzero,2\n", "row 3, column 't': 'zero' is not a number")
    _load_error(tmp_path, "t,x\n0,1\n1,1_000\n", "row 3, column 'x': '1_000' is not a number")


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_non_finite_values(tmp_path, text):
    _load_error(tmp_path, f"t,x,y\n0,1,2\n1,2,{text}\n",
                f"row 3, column 'y': '{text}' is not finite; NaN and infinite values are not allowed")


def test_empty_cells(tmp_path):
    _load_error(tmp_path, "t,x,y\n0,1,2\n1,,3\n", "row 3, column 'x': empty cell")
    _load_error(tmp_path, "t,x,y\n0,1,2\n  ,2,3\n", "row 3, column 't': empty cell")
    _load_error(tmp_path, "t,x,y\n0,1,2\n,,\n", "row 3, column 't': empty cell")


def test_ragged_rows(tmp_path):
    _load_error(tmp_path, "t,x,y\n0,1,2\n1,2\n", r"row 3: 2 fields, but the header \(row 1\) has 3")
    _load_error(tmp_path, "t,x,y\n0,1,2\n1,2,3\n2,3,4,5\n", r"row 4: 4 fields, but the header \(row 1\) has 3")


def test_unsorted_times_name_both_rows(tmp_path):
    _load_error(tmp_path, "t,x\n0,1\n2,2\n1,3\n3,4\n",
                "times must increase, but row 4 has t = 1.0 after row 3 with t = 2.0")


def test_duplicate_times_name_both_rows(tmp_path):
    _load_error(tmp_path, "t,x\n0,1\n1,2\n1.0,3\n2,4\n",
                "rows 3 and 4 have the same time t = 1.0; times must be distinct")


def test_decreasing_times_must_increase(tmp_path):
    _load_error(tmp_path, "t,x\n3,1\n2,2\n1,3\n",
                r"the times in column 't' decrease from 3.0 \(row 2\) to 1.0 \(row 4\); times must increase")
    # Non-increasing with a repeat: the first offending pair is named.
    _load_error(tmp_path, "t,x\n3,1\n2,2\n2,3\n", "times must increase, but row 3 has t = 2.0 after row 2")


def test_fewer_than_two_rows(tmp_path):
    _load_error(tmp_path, "t,x\n0,1\n", "1 data row after the header; at least 2 times are needed")
    _load_error(tmp_path, "t,x\n", "0 data rows after the header")


# ---- derivative estimates -------------------------------------------------------------------------

def _exponential(t):
    """u = (exp(-t / 10), 1 - exp(-t / 10)) and its derivative."""
    e = torch.exp(-t / 10.0)
    return torch.stack([e, 1 - e], -1), torch.stack([-e / 10.0, e / 10.0], -1)


def test_interpolating_derivatives_converge_at_third_order_in_linear_and_log_time():
    errors = []
    for T in (20, 40, 80):
        t = torch.linspace(0.0, 30.0, T, dtype=F64)
        u, du = _exponential(t)
        errors.append(float((estimate_derivatives(t, u) - du).abs().max()))
    orders = [torch.log2(torch.tensor(a / b)).item() for a, b in zip(errors, errors[1:])]
    assert min(orders) > 2.7, (errors, orders)          # not-a-knot cubic: O(h^3) at the ends
    # log-spaced times over 6 decades: the spline in ln t, derivatives back in t
    t = torch.logspace(-3, 3, 60, dtype=F64)
    u, du = _exponential(t)
    d = estimate_derivatives(t, u)
    assert float(((d - du).abs() * t[:, None]).max()) < 5e-4      # du/d ln t accurate (measured 5.4e-5)
    v, d2 = estimate_derivatives(t, u, values=True)
    torch.testing.assert_close(v, u, rtol=0, atol=0)     # interpolation: the data themselves
    torch.testing.assert_close(d2, d, rtol=0, atol=0)


def test_smoothing_spline_values_are_closer_to_the_truth_than_the_noisy_data():
    t = torch.linspace(0.0, 30.0, 60, dtype=F64)
    u, du = _exponential(t)
    noisy = u + 0.01 * torch.randn(u.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    v, d = estimate_derivatives(t, noisy, smoothing="gcv", values=True)
    assert v.shape == u.shape and d.shape == u.shape
    rms = lambda x: float(x.square().mean().sqrt())
    assert rms(v - u) < 0.7 * rms(noisy - u)              # measured 0.52
    # the interpolant's derivative follows the noise; the smoothing spline's does not
    assert rms(d - du) < 0.25 * rms(estimate_derivatives(t, noisy) - du)      # measured 0.12


def test_derivative_estimates_reject_bad_times():
    u = torch.ones(5, 2, dtype=F64)
    with pytest.raises(DataError, match="at least 4 times; got 3"):
        estimate_derivatives(torch.arange(3.0), u[:3])
    with pytest.raises(DataError, match="t must strictly increase"):
        estimate_derivatives(torch.tensor([0.0, 1.0, 1.0, 2.0, 3.0]), u)
    with pytest.raises(DataError, match="log_time=True needs positive times"):
        estimate_derivatives(torch.arange(5.0), u, log_time=True)
