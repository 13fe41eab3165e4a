# %% [markdown]
# # Chen et al.'s spiral: the first neural ODE, with pyode
#
# The data come from `du/dt = (u³) A` with `A = [[-0.1, 2], [-2, -0.1]]`; the model is
# `du/dt = net(u³)` with a `2 → 50 tanh → 2` network, trained as in torchdiffeq's `ode_demo.py` on
# random windows of 10 consecutive observations, all windows solved as one batch (every member
# with its own step size). `pyode demo spiral` runs the longer version with model selection.

# %%
import os

import torch
from torch import nn

import pyode
from pyode import plot, problems
from pyode.data import generate_data

torch.manual_seed(0)
prob = problems.spiral()
t = torch.linspace(0.0, 25.0, 1000, dtype=torch.float64)
series = generate_data(prob, pyode.Tsit5(), t)


class Cubed(nn.Module):
    """``net(u³)``: the network sees the cubed state, as in the original demo."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)).double()
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, u, t=None):
        return self.net(u ** 3)


model = Cubed()
dt = float(t[1] - t[0])
window = torch.arange(10, dtype=torch.float64) * dt          # a window's own times, from 0

# %% [markdown]
# ## Training on random windows
# Each step: 20 windows, their first observations as a batch of initial states, one solve.

# %%
steps = int(os.environ.get("PYODE_EXAMPLE_EPOCHS", 1500))    # the test suite runs it with 2
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
for step in range(steps):
    starts = torch.randint(0, len(t) - 10, (20,))
    u0 = series.u[starts]                                     # (20, 2)
    target = torch.stack([series.u[starts + k] for k in range(10)])      # (10, 20, 2)
    sol = pyode.solve(pyode.ODEProblem(lambda u, p, tt: p(u), u0, (0.0, float(window[-1])), model),
                      pyode.Tsit5(), saveat=window, reltol=1e-7, abstol=1e-9)
    loss = (sol.u - target).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    schedule.step()
    if step % 100 == 0:
        print(f"step {step:4d}  window loss {loss.item():.4f}")

# %% [markdown]
# ## The whole trajectory

# %%
with torch.no_grad():
    whole = pyode.solve(pyode.ODEProblem(lambda u, p, tt: p(u), series.u[0], (0.0, 25.0), model), pyode.Tsit5(),
                        saveat=t, reltol=1e-7, abstol=1e-9, throw=False)
if whole.retcode == pyode.ReturnCode.Success:
    print(f"mean |prediction - data| over 0..25: {(whole.u - series.u).abs().mean().item():.4f}")
    plot.trajectories(t, series.u, whole.u, names=["x", "y"], path="spiral_example.png")
else:
    print(f"the learned model's solve stopped early ({whole.retcode.name}); train longer")
    plot.trajectories(t, series.u, names=["x", "y"], path="spiral_example.png")
