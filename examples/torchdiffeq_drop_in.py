# %% [markdown]
# # A torchdiffeq script on pyode: one changed import
#
# This is torchdiffeq's `examples/ode_demo.py` (Chen et al. 2018: learn the cubic spiral
# `dy/dt = y³ A` from its trajectory with `odeint_adjoint`). Moving it to pyode takes one edit, the
# import line: `pyode.compat.torchdiffeq` takes torchdiffeq 0.2.5's arguments and returns what it
# returns, so the data generation, batching, model, solver calls and training loop are the demo's.
# (The optimiser is not the demo's, to keep the run short: Adam with a cosine decay over 800
# iterations instead of RMSprop over 2000.)
#
# The second half shows what the switch adds: pyode's methods and sensitivity algorithms by name,
# through the same `odeint` call.

# %%
import copy
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

# from torchdiffeq import odeint_adjoint as odeint
from pyode.compat.torchdiffeq import odeint_adjoint as odeint

niters = int(os.environ.get("PYODE_EXAMPLE_EPOCHS", 800))    # the test suite runs it with 2
data_size, batch_time, batch_size = 1000, 10, 20
torch.manual_seed(0)
np.random.seed(0)

true_y0 = torch.tensor([[2.0, 0.0]])
t = torch.linspace(0.0, 25.0, data_size)
true_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])


class Lambda(nn.Module):
    def forward(self, t, y):
        return torch.mm(y ** 3, true_A)


with torch.no_grad():
    true_y = odeint(Lambda(), true_y0, t, method="dopri5")


def get_batch():
    s = torch.from_numpy(np.random.choice(np.arange(data_size - batch_time, dtype=np.int64), batch_size,
                                          replace=False))
    batch_y0 = true_y[s]                                                      # (M, 1, D)
    batch_t = t[:batch_time]                                                  # (T)
    batch_y = torch.stack([true_y[s + i] for i in range(batch_time)], dim=0)  # (T, M, 1, D)
    return batch_y0, batch_t, batch_y


class ODEFunc(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0, std=0.1)
                nn.init.constant_(m.bias, val=0)

    def forward(self, t, y):
        return self.net(y ** 3)


# %% [markdown]
# ## Training
# Random windows of 10 consecutive observations, their first states as one batch; gradients from
# the continuous adjoint (`odeint_adjoint`), at torchdiffeq's default tolerances.

# %%
func = ODEFunc()
optimizer = torch.optim.Adam(func.parameters(), lr=5e-3)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, niters)
start = time.perf_counter()
for itr in range(1, niters + 1):
    optimizer.zero_grad()
    batch_y0, batch_t, batch_y = get_batch()
    pred_y = odeint(func, batch_y0, batch_t)
    loss = torch.mean(torch.abs(pred_y - batch_y))
    loss.backward()
    optimizer.step()
    scheduler.step()
    if itr % 100 == 0 or itr == niters:
        with torch.no_grad():
            pred_y = odeint(func, true_y0, t)
            loss = torch.mean(torch.abs(pred_y - true_y))
        print(f"Iter {itr:04d} | Total Loss {loss.item():.6f} | {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## The fitted trajectory against the data
# The whole 25 time units from the first observation alone: small errors in the period add up to
# the phase lag at late times.

# %%
fig, (ax_t, ax_phase) = plt.subplots(1, 2, figsize=(11, 4))
ax_t.plot(t, true_y[:, 0, 0], "g-", t, true_y[:, 0, 1], "b-", lw=1)
ax_t.plot(t, pred_y[:, 0, 0], "g--", t, pred_y[:, 0, 1], "b--", lw=1.5)
ax_t.set(xlabel="t", ylabel="x (green), y (blue)", title="data (solid), model (dashed)")
ax_phase.plot(true_y[:, 0, 0], true_y[:, 0, 1], "g-", lw=1, label="data")
ax_phase.plot(pred_y[:, 0, 0], pred_y[:, 0, 1], "b--", lw=1.5, label="model")
ax_phase.set(xlabel="x", ylabel="y", title="phase portrait")
ax_phase.legend()
fig.tight_layout()
fig.savefig("torchdiffeq_drop_in.png", dpi=100)

# %% [markdown]
# ## What the switch adds: pyode's sensitivity algorithms
# `odeint_adjoint` is Chen et al.'s backsolve adjoint: it integrates the state backwards in time
# next to the adjoint, so the gradient inherits the error of that second solve, and it breaks down
# where going backwards is unstable (stiff or strongly damped dynamics). `GaussAdjoint` reads the
# state from the forward solve instead and integrates the parameter gradient by Gauss–Legendre
# quadrature. `sensealg=` is pyode's keyword on the compat `odeint` (`func` must be an `nn.Module`).
#
# Below: the gradient of the loss on the whole trajectory (50 of the observations) both ways, each
# against a float64 reference (autograd through DP8 at rtol = atol = 1e-10). On this small
# non-stiff problem `GaussAdjoint` takes longer per gradient; what it buys is a closer gradient and
# no dependence on a stable backward re-solve.

# %%
import pyode  # noqa: E402
from pyode.compat.torchdiffeq import odeint as odeint_pyode  # noqa: E402

t_obs, y_obs = t[::20], true_y[::20]


def gradient(solver, module, dtype=torch.float32, **kwargs):
    module.zero_grad()
    t0 = time.perf_counter()
    out = solver(module, true_y0.to(dtype), t_obs.to(dtype), **kwargs)
    torch.mean(torch.abs(out - y_obs.to(dtype))).backward()
    seconds = time.perf_counter() - t0
    return torch.cat([p.grad.reshape(-1).double() for p in module.parameters()]), seconds


func64 = copy.deepcopy(func).double()
g_ref, _ = gradient(odeint_pyode, func64, torch.float64, method="dopri8", rtol=1e-10, atol=1e-10)
for label, solver, kwargs in (
        ("odeint_adjoint (dopri5, backsolve)", odeint, {}),
        ("odeint tsit5 + GaussAdjoint()", odeint_pyode, dict(method="tsit5", sensealg=pyode.GaussAdjoint()))):
    g, seconds = gradient(solver, func, **kwargs)
    print(f"{label:<36} {seconds:5.2f} s   relative gradient error {((g - g_ref).norm() / g_ref.norm()).item():.1e}")

# %% [markdown]
# ## A stiff variant: the spiral seen through a fast sensor
# Append a sensor reading `z` that follows `x` with a time constant τ = 1e-3 (the spiral turns
# over 1 to 10 time units): `dz/dt = (x - z) / τ`. The learned dynamics are unchanged, but an
# explicit method's step is now bounded by stability (about 3e-3) rather than accuracy, and its
# number of calls grows like 1/τ (ten times as many at τ = 1e-4). An implicit method by name
# (`"rodas5p"`, `"fbdf"`, `"kencarp4"`) steps over the fast time scale at about the same cost for
# any τ. torchdiffeq's adaptive methods are all explicit (its `scipy_solver` reaches scipy's stiff
# solvers, without gradients); here gradients flow through `"rodas5p"` like through any other
# `odeint` call. A stiff method's call is dearer (it also forms a Jacobian and solves linear
# systems): compare the seconds too.


# %%
class WithSensor(nn.Module):
    def __init__(self, func, tau=1e-3):
        super().__init__()
        self.func, self.tau, self.calls = func, tau, 0

    def forward(self, t, y):
        self.calls += 1
        xy, z = y[..., :2], y[..., 2:]
        return torch.cat([self.func(t, xy), (xy[..., :1] - z) / self.tau], dim=-1)


y0_sensor = torch.cat([true_y0, true_y0[:, :1]], dim=-1)          # the sensor starts at x(0)
t_sensor = t[:200]                                                  # 0 .. 5
results = {}
for method in ("dopri5", "rodas5p"):
    stiff = WithSensor(func)
    t0 = time.perf_counter()
    with torch.no_grad():
        results[method] = odeint_pyode(stiff, y0_sensor, t_sensor, method=method, rtol=1e-6, atol=1e-8)
    print(f"{method:<8} {stiff.calls:6d} calls of func  {time.perf_counter() - t0:5.2f} s")
print(f"largest difference between the two: {(results['dopri5'] - results['rodas5p']).abs().max().item():.1e}")
