# %% [markdown]
# # A universal differential equation: Lotka–Volterra with unknown interactions
#
# Known physics — prey grow at a rate α, predators die at a rate γ — plus a neural network for the
# interaction terms we pretend not to know (`-βxy`, `δxy`), fitted to noisy observations
# (Rackauckas et al. 2020). The pieces are those of `pyode demo lotka-volterra-ude`
# (`pyode/demos/lotka_volterra_ude.py`): a `pyode.nn.UDE` with log-positive rates, a network whose
# output vanishes when the partner species is absent (what makes α and γ identifiable), a
# collocation stage and multiple shooting through `Tsit5`.

# %%
import os

import torch

from pyode import plot
from pyode.demos import lotka_volterra_ude as lv

clean, noisy = lv.make_data(noise=0.05, seed=0)       # 5% noise of each species' mean
print(f"{len(noisy)} noisy observations on 0..{float(noisy.t[-1]):g}")

# %% [markdown]
# ## Fit
# `learn` runs the collocation stage, then multiple shooting with Adam and L-BFGS (`pyode.train.fit`).

# %%
epochs = int(os.environ.get("PYODE_EXAMPLE_EPOCHS", lv.DEFAULT_EPOCHS))   # the test suite runs it with 2
model, history, after_collocation = lv.learn(noisy, epochs=epochs, lbfgs_epochs=min(lv.LBFGS_EPOCHS, epochs), seed=0)
print("rates after the collocation stage:", after_collocation)
result = lv.evaluate(model, noisy)
print(f"alpha {result['alpha']:.3f} (true {lv.TRUE['alpha']}), gamma {result['gamma']:.3f} (true {lv.TRUE['gamma']})")
print(f"interaction terms: relative error {100 * result['interaction_error']:.1f}%")

# %% [markdown]
# ## The learned interactions against the true ones, along the data

# %%
with torch.no_grad():
    learned = model.ude.network(clean.u)
plot.trajectories(clean.t, lv.true_interactions(clean.u), learned, names=["-βxy", "δxy"],
                  path="lotka_volterra_interactions.png")
