# %% [markdown]
# # Learning Robertson's stiff kinetics with a neural ODE
#
# Robertson's problem — `A → B` (k₁ = 0.04), `2B → B + C` (k₂ = 3·10⁷), `B + C → A + C` (k₃ = 10⁴) —
# has time scales from 10⁻⁴ to 10⁵: a model of it must be integrated with a stiff solver, and the
# species differ by five orders of magnitude. This script (plain Python, or a notebook through the
# `# %%` cells) learns it from 40 observations and checks 10 held-out ones:
#
# 1. data at 50 log-spaced times (Kim et al. 2021), every fifth held out;
# 2. a model in scaled species: a polynomial network (mass-action kinetics are polynomials) plus a
#    GELU network correction, projected to conserve total mass;
# 3. a collocation warm start: least squares on derivatives from a spline in `ln t`;
# 4. training through `Rodas5P` with `DirectAdjoint` gradients;
# 5. the held-out error per species, and a plot.
#
# `pyode demo robertson --model polynomial` runs the same pipeline from the command line. That
# pipeline needs exact data; the demo's default, a mass-action reaction network fitted and pruned
# (`pyode.estimation.fit_rate_constants`), learns from noisy data too.

# %%
import os

import torch

import pyode
from pyode import nn as pnn
from pyode import plot, train
from pyode.data import estimate_derivatives, generate_data

torch.manual_seed(0)
times = torch.logspace(-5, 5, 50, dtype=torch.float64)
series = generate_data(pyode.problems.robertson(), pyode.Rodas5P(), times, names=["A", "B", "C"])
held_out = torch.arange(50) % 5 == 4
t_fit, u_fit = series.t[~held_out], series.u[~held_out]
yscale = u_fit.abs().max(0).values                 # per-species scale: B peaks at 3.6e-5
span = series.u.max(0).values - series.u.min(0).values
print("species scales:", yscale.tolist())

# %% [markdown]
# ## The model
# `PolynomialNetwork` sees `u / yscale` and returns `yscale ⊙ (C φ)`, with `φ` every monomial of
# degree ≤ 2; the GELU correction follows Kim et al.'s scaling `net(u / yscale) · yscale / t_end` and
# starts at zero; `Conserving` projects `du/dt` so that `A + B + C` stays constant.

# %%
poly = pnn.PolynomialNetwork(3, 2, yscale=yscale)
correction = pnn.SpeciesScaling(pnn.mlp(3, 3, width=5, depth=6, activation="gelu", zero_last=True), yscale, 1e5)
rhs = pnn.Conserving(pnn.Sum(poly, correction), torch.ones(1, 3, dtype=torch.float64))

# %% [markdown]
# ## Collocation warm start
# Derivatives from a not-a-knot spline through the data in `ln t`, then one weighted least-squares
# solve for the polynomial coefficients (weights `t` fit `du/d ln t`, so every decade counts alike).

# %%
dudt = estimate_derivatives(t_fit, u_fit)
residual = poly.fit_least_squares(u_fit, dudt, weights=t_fit)
poly.coefficients.requires_grad_(False)
print("least-squares residual per species (scaled):", residual.tolist())


def held_out_error(model_rhs):
    node = pnn.NeuralODE(model_rhs, (float(series.t[0]), float(series.t[-1])), pyode.Rodas5P(), reltol=1e-8,
                         abstol=1e-12)
    with torch.no_grad():
        sol = node(series.u[0], saveat=series.t)
    return ((sol.u - series.u).abs() / span)[held_out].max(0).values, sol


err, _ = held_out_error(rhs)
print("held-out error after the warm start (fraction of range):", err.tolist())

# %% [markdown]
# ## Training through the stiff solver
# Loss: the scaled mean absolute error at the training times; gradients by backpropagation through
# the Rosenbrock steps (`DirectAdjoint`), the gradient rescaled to norm 1 each step.

# %%
node = pnn.NeuralODE(rhs, (float(t_fit[0]), float(t_fit[-1])), pyode.Rodas5P(), saveat=t_fit, reltol=1e-6,
                     abstol=1e-12, sensealg=pyode.DirectAdjoint())


def loss_fn(model, epoch):
    return ((node(u_fit[0]).u - u_fit).abs() / yscale).mean()


trainable = [p for p in rhs.parameters() if p.requires_grad]
EPOCHS = int(os.environ.get("PYODE_EXAMPLE_EPOCHS", 10))     # the test suite runs it with 2
history = train.fit(rhs, loss_fn, epochs=EPOCHS, optimizer=lambda ps: torch.optim.AdamW(trainable, lr=1e-4),
                    rescale_grad_norm=1.0, early_stopping=train.EarlyStopping(patience=10, restore_best=True))

# %% [markdown]
# ## Result

# %%
err, _ = held_out_error(rhs)
for name, e in zip(series.names, err.tolist()):
    print(f"{name}: held-out error {100 * e:.3g}% of its range")
fine = torch.logspace(-5, 5, 300, dtype=torch.float64)
with torch.no_grad():
    curve = pnn.NeuralODE(rhs, (1e-5, 1e5), pyode.Rodas5P(), reltol=1e-8, abstol=1e-14)(series.u[0], saveat=fine)
fig = plot.trajectories(series.t, series.u, curve.u, t_prediction=fine, holdout=held_out, names=series.names,
                        path="robertson_example.png")
