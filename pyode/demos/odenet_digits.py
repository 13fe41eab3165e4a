"""Demo: an ODE-Net classifies scikit-learn's bundled 8 × 8 digits, beside ResNets of 1–6 blocks.

1. Data: ``sklearn.datasets.load_digits`` (1797 images, nothing downloaded), pixels / 16; a seeded
   split, 25 % held out.
2. ODE-Net (Chen et al. 2018, their MNIST architecture scaled to 8 × 8): a 3 × 3 convolution to 16
   channels, group norm and ReLU, then :class:`pyode.nn.ODEBlock` whose dynamics are (group norm,
   ReLU, 3 × 3 convolution of (h, t)) twice and a group norm (``Tsit5``, tolerances 1e-3, one step
   size for the batch), then group norm, ReLU and a linear layer on the flattened features.
3. ResNets: the same first and last layers around 1, 2, 4 or 6 residual blocks, each ``h + block(h)``
   with the ODE-Net's block (without t).
4. Training, every model alike: AdamW (lr 3e-3, weight decay 1e-3, cosine decay), label smoothing 0.1,
   batches of 128, 30 epochs.
5. Outputs: ``digits.png`` (held-out accuracy against parameters), ``metrics.json`` (``test_accuracy``,
   the ODE-Net's evaluations per forward pass, every ResNet's accuracy and parameter count),
   ``model.pt``.

Exit 0 when the ODE-Net's held-out accuracy is at least 97 %. ``--smoke``: one epoch, one ResNet (CI).
"""
from __future__ import annotations

import json
import math
import os
import time

import torch
from torch import nn

from ._args import one_thread

DESCRIPTION = "an ODE-Net (continuous-depth residual network) on scikit-learn's 8x8 digits, beside ResNets"

CHANNELS, GROUPS, EPOCHS, BATCH, LR, WEIGHT_DECAY, LABEL_SMOOTHING = 16, 4, 30, 128, 3e-3, 1e-3, 0.1
RESNET_DEPTHS = (1, 2, 4, 6)
TARGET_ACCURACY = 0.97


class ConvDynamics(nn.Module):
    """``dh/dt``: Chen et al.'s ODE-Net block, norm → ReLU → 3 × 3 convolution of (h, t), twice, then
    a norm; ``t`` enters as a channel."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.n1, self.n2, self.n3 = (nn.GroupNorm(GROUPS, channels) for _ in range(3))
        self.c1 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(h.dtype)[:, None, None, None].expand(h.shape[0], 1, *h.shape[2:])
        h = self.c1(torch.cat([torch.relu(self.n1(h)), tt], 1))
        h = self.c2(torch.cat([torch.relu(self.n2(h)), tt], 1))
        return self.n3(h)


class Residual(nn.Module):
    """The same block without ``t``, as a residual step ``h + block(h)``."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.n1, self.n2, self.n3 = (nn.GroupNorm(GROUPS, channels) for _ in range(3))
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.n3(self.c2(torch.relu(self.n2(self.c1(torch.relu(self.n1(h)))))))


def _stem(channels):
    return [nn.Conv2d(1, channels, 3, padding=1), nn.GroupNorm(GROUPS, channels), nn.ReLU()]


def _head(channels):
    return [nn.GroupNorm(GROUPS, channels), nn.ReLU(), nn.Flatten(), nn.Linear(channels * 64, 10)]


def odenet(channels: int = CHANNELS) -> nn.Sequential:
    from ..nn import ODEBlock

    return nn.Sequential(*_stem(channels), ODEBlock(ConvDynamics(channels), time_dependent=True), *_head(channels))


def resnet(blocks: int, channels: int = CHANNELS) -> nn.Sequential:
    return nn.Sequential(*_stem(channels), *[Residual(channels) for _ in range(blocks)], *_head(channels))


def load(seed: int):
    """``(X_train, y_train, X_test, y_test)``: images ``(N, 1, 8, 8)`` in [0, 1], 25 % held out."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("pyode demo odenet-digits reads scikit-learn's bundled digits: pip install scikit-learn "
                          "(or pip install 'pyode[datasets]')") from None
    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = len(y) // 4
    test, train = perm[:n_test], perm[n_test:]
    return X[train], y[train], X[test], y[test]


def train(model: nn.Module, data, epochs: int, seed: int, desc: str = "", progress: bool = True) -> float:
    """Train with the demo's recipe (a tqdm bar over epochs, showing the last loss); the held-out
    accuracy."""
    from tqdm.auto import tqdm

    X, y, X_test, y_test = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * math.ceil(len(y) / BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        for batch in torch.randperm(len(y), generator=g).split(BATCH):
            loss = nn.functional.cross_entropy(model(X[batch]), y[batch], label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    with torch.no_grad():
        return float((model(X_test).argmax(-1) == y_test).float().mean())


def add_arguments(parser) -> None:
    from ._args import positive_int

    parser.add_argument("--epochs", type=positive_int("--epochs"), default=None, help=f"default {EPOCHS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pyode-demo/odenet-digits", help="output folder (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="one epoch and one ResNet, to check the pipeline")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def main(args) -> int:
    return run(epochs=args.epochs, seed=args.seed, out=args.out, smoke=args.smoke, progress=args.progress)


def run(epochs: int = None, seed: int = 0, out: str = "pyode-demo/odenet-digits", smoke: bool = False,
        progress: bool = True) -> int:
    from .. import plot

    with one_thread():
        start = time.perf_counter()
        os.makedirs(out, exist_ok=True)
        epochs = epochs or (1 if smoke else EPOCHS)
        data = load(seed)
        print(f"digits: {len(data[1])} training and {len(data[3])} held-out 8x8 images; {epochs} epochs each")
        torch.manual_seed(seed)
        net = odenet()
        t0 = time.perf_counter()
        acc = train(net, data, epochs, seed, "ODE-Net", progress)
        ode_seconds = time.perf_counter() - t0
        from ..nn import ODEBlock

        block = next(m for m in net if isinstance(m, ODEBlock))
        with torch.no_grad():
            net(data[2][:BATCH])
        n_ode = sum(p.numel() for p in net.parameters())
        print(f"ODE-Net: {n_ode} parameters, held-out accuracy {acc:.2%}, {block.nfe} evaluations per forward "
              f"pass, {ode_seconds:.0f} s")
        rows = []
        for depth in (RESNET_DEPTHS[:1] if smoke else RESNET_DEPTHS):
            torch.manual_seed(seed)
            model = resnet(depth)
            t0 = time.perf_counter()
            r_acc = train(model, data, epochs, seed, f"ResNet-{depth}", progress)
            rows.append({"blocks": depth, "parameters": sum(p.numel() for p in model.parameters()),
                         "test_accuracy": r_acc, "seconds": time.perf_counter() - t0})
            print(f"ResNet, {depth} block(s): {rows[-1]['parameters']} parameters, held-out accuracy {r_acc:.2%}")
        matching = [r for r in rows if r["test_accuracy"] >= acc]
        equal = min(matching, key=lambda r: r["parameters"]) if matching else None
        if equal:
            print(f"the smallest ResNet at least as accurate: {equal['blocks']} block(s), {equal['parameters']} "
                  f"parameters (ODE-Net: {n_ode})")
        reached = acc >= TARGET_ACCURACY
        print(f"target held-out accuracy >= {TARGET_ACCURACY:.0%}: {'reached' if reached else 'NOT reached'}")

        fig = plot._figure_class()(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot([r["parameters"] for r in rows], [100 * r["test_accuracy"] for r in rows], "o-", label="ResNet, 1-6 blocks")
        for r in rows:
            ax.annotate(f"{r['blocks']}", (r["parameters"], 100 * r["test_accuracy"]), textcoords="offset points",
                        xytext=(4, -10))
        ax.plot([n_ode], [100 * acc], "r*", markersize=12, label=f"ODE-Net ({block.nfe} evaluations)")
        ax.set_xlabel("parameters")
        ax.set_ylabel("held-out accuracy (%)")
        ax.legend()
        fig.tight_layout()
        plot._save(fig, os.path.join(out, "digits.png"))
        torch.save(net.state_dict(), os.path.join(out, "model.pt"))
        metrics = {"test_accuracy": acc, "target_accuracy": TARGET_ACCURACY, "target_reached": reached,
                   "parameters": n_ode, "nfe_per_forward": block.nfe, "epochs": epochs, "seed": seed,
                   "train_seconds": ode_seconds, "resnets": rows,
                   "resnet_of_equal_accuracy": equal, "seconds": time.perf_counter() - start}
        with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
        print(f"wrote {out}/digits.png, metrics.json, model.pt ({metrics['seconds']:.0f} s)")
        return 0 if reached or smoke else 1
