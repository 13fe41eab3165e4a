# %% [markdown]
# # A mixed Python–Julia notebook: a hybrid Lotka–Volterra model solved by DifferentialEquations.jl
#
# requires: julia (`pip install 'pyode[julia]'`; the first run installs Julia and the SciML packages)
#
# The known physics (prey growth α·x, predator death γ·y) is written in **Julia**; the unknown
# interactions are a **PyTorch** network, translated to Julia by pyode. DifferentialEquations.jl
# integrates, SciMLSensitivity's `GaussAdjoint` differentiates, and the gradients land on the torch
# tensors: the training loop is ordinary PyTorch. The same problem then runs on the native engine
# to compare.

# %%
import juliacall  # noqa: F401  -- first: on some systems Julia must be started before torch is loaded

import os

import numpy as np
import torch

import pyode
from pyode import plot

torch.manual_seed(0)
ALPHA, BETA, GAMMA, DELTA = 1.3, 0.9, 1.8, 0.8
ts = np.linspace(0.0, 5.0, 26)


def lotka_volterra(u, p, t):        # the truth, used only to make data
    x, y = u[..., 0], u[..., 1]
    return torch.stack([ALPHA * x - BETA * x * y, -GAMMA * y + DELTA * x * y], dim=-1)


u0 = torch.tensor([0.44249296, 4.6280594], dtype=torch.float64)
data = pyode.solve(pyode.ODEProblem(lotka_volterra, u0, (0.0, 5.0)), pyode.Vern7(), saveat=ts,
                   reltol=1e-10, abstol=1e-12).u
data = data * (1 + 0.02 * torch.randn_like(data))

# %% [markdown]
# ## The model: Julia source for the physics, a torch network for the rest
# `p` reaches Julia as a flat vector (`p[1]` = log α, `p[2]` = log γ); `nn(u)` is the network.

# %%
HYBRID_JL = """
(u, p, t) -> [exp(p[1]) * u[1], -exp(p[2]) * u[2]] .+ nn(u)
"""
net = pyode.nn.mlp(2, 2, width=16, depth=2, activation="gelu", zero_last=True)
rhs = pyode.julia.ode_function(HYBRID_JL, nn=net)
log_rates = torch.zeros(2, dtype=torch.float64, requires_grad=True)
print(rhs)


def predict(backend="julia", f=rhs):
    prob = pyode.ODEProblem(f, u0, (0.0, 5.0), log_rates)
    return pyode.solve(prob, pyode.Tsit5(), saveat=ts, reltol=1e-7, abstol=1e-9,
                       sensealg=pyode.GaussAdjoint(), backend=backend).u


# %% [markdown]
# ## Training: a plain PyTorch loop; every solve and gradient happens in Julia

# %%
epochs = int(os.environ.get("PYODE_EXAMPLE_EPOCHS", 300))
opt = torch.optim.Adam([log_rates, *net.parameters()], lr=1e-2)
for epoch in range(epochs):
    opt.zero_grad()
    loss = (predict() - data).square().mean()
    loss.backward()
    opt.step()
    if epoch % 50 == 0 or epoch == epochs - 1:
        print(f"epoch {epoch:4d}  loss {loss.item():.3e}  alpha {log_rates[0].exp().item():.3f} "
              f"gamma {log_rates[1].exp().item():.3f}")

# %% [markdown]
# ## The same model on the native engine
# The network is a torch module, so the hybrid right-hand side can be written in torch as well; both
# engines must agree to the tolerances.

# %%
def hybrid_torch(u, p, t):
    return torch.stack([p[0].exp() * u[..., 0], -p[1].exp() * u[..., 1]], dim=-1) + net(u)


with torch.no_grad():
    julia_u = predict()
    native_u = predict("native", hybrid_torch)
print(f"largest difference between engines: {float((julia_u - native_u).abs().max()):.2e}")
plot.trajectories(torch.tensor(ts), data, julia_u, names=["prey", "predator"], path="julia_hybrid_fit.png")
