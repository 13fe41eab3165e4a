"""pyode.nn.ODEBlock: the block's map against the closed form of a linear field, image-shaped
features, gradients against finite differences, its evaluation count, bad input; and the
odenet-digits demo's pipeline."""
import json

import pytest
import torch

from pyode.nn import ODEBlock

F64 = torch.float64


class LinearField(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.A = torch.nn.Parameter(0.4 * torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=F64))

    def forward(self, h):                   # acts on the flattened features, returns their shape
        return (h.reshape(h.shape[0], -1) @ self.A.T).reshape(h.shape)


def test_block_is_the_flow_map_and_keeps_the_feature_shape():
    field = LinearField(4)
    block = ODEBlock(field, (0.0, 2.0), reltol=1e-10, abstol=1e-12)
    h = torch.randn(5, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(2))      # (batch, 2, 2) features
    out = block(h)
    assert out.shape == h.shape
    ref = h.reshape(5, 4) @ torch.linalg.matrix_exp(2.0 * field.A.detach()).T
    assert torch.allclose(out.reshape(5, 4), ref, rtol=1e-8, atol=1e-10)
    assert block.nfe is not None and block.nfe > 0


def test_time_dependent_block_and_gradients_against_finite_differences():
    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.7, -0.3], dtype=F64))

        def forward(self, h, t):
            return torch.tanh(h * self.w) * (1 + t[:, None])

    field = Field()
    block = ODEBlock(field, time_dependent=True, reltol=1e-10, abstol=1e-12)
    h = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=F64)
    (g,) = torch.autograd.grad(block(h).sum(), field.w)
    eps = 1e-6
    with torch.no_grad():
        fd = []
        for i in range(2):
            field.w[i] += eps
            up = float(block(h).sum())
            field.w[i] -= 2 * eps
            down = float(block(h).sum())
            field.w[i] += eps
            fd.append((up - down) / (2 * eps))
    assert torch.allclose(g, torch.tensor(fd, dtype=F64), rtol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"tspan must be \(t0, t1\) with t0 < t1"):
        ODEBlock(LinearField(), (1.0, 1.0))
    with pytest.raises(TypeError, match=r"unknown solve keyword\(s\) \['rtol'\]"):
        ODEBlock(LinearField(), rtol=1e-3)
    with pytest.raises(ValueError, match=r"h must be a tensor \(batch, \*features\); got \(3,\)"):
        ODEBlock(LinearField())(torch.zeros(3, dtype=F64))


def test_odenet_digits_demo_smoke(tmp_path):
    pytest.importorskip("sklearn", reason="the demo reads scikit-learn's bundled digits")
    from pyode.cli import main

    assert main(["demo", "odenet-digits", "--smoke", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.5 < metrics["test_accuracy"] <= 1.0 and metrics["nfe_per_forward"] > 0
    assert len(metrics["resnets"]) == 1 and metrics["resnets"][0]["blocks"] == 1
    assert (tmp_path / "digits.png").stat().st_size > 0
