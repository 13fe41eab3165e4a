"""The CUDA path: same results as on the CPU, everything stays on the device."""
import pytest
import torch

import pyode
from pyode import ODEProblem, solve
from pyode.problems import lotka_volterra

pytestmark = pytest.mark.gpu


def mlp_problem(device, dtype, batch=512):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                              torch.nn.Linear(64, 2)).to(device=device, dtype=dtype)
    u0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    return ODEProblem(lambda u, p, t: p(u), u0, (0.0, 1.0), net)


@pytest.mark.parametrize("alg", [pyode.Tsit5(), pyode.DP5(), pyode.Vern7(), pyode.DP8(), pyode.BS3()], ids=repr)
def test_cuda_matches_cpu_float64(alg):
    ts = torch.linspace(0, 10, 11)
    cpu = solve(lotka_volterra(), alg, saveat=ts, reltol=1e-8, abstol=1e-10)
    gpu = solve(lotka_volterra(device="cuda"), alg, saveat=ts, reltol=1e-8, abstol=1e-10)
    assert gpu.u.device.type == "cuda"
    torch.testing.assert_close(gpu.u.cpu(), cpu.u, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_batch_forward_and_gradient(dtype):
    tol = dict(reltol=1e-5, abstol=1e-7) if dtype == torch.float32 else dict(reltol=1e-8, abstol=1e-10)
    results = {}
    for device in ("cpu", "cuda"):
        prob = mlp_problem(device, dtype)
        sol = solve(prob, saveat=torch.linspace(0, 1, 5), **tol)
        assert sol.u.device.type == device and sol.retcode.device.type == device
        grads = torch.autograd.grad(sol.u.square().mean(), list(prob.p.parameters()))
        results[device] = (sol.u.detach().cpu(), [g.cpu() for g in grads], sol.stats.naccept.cpu())
    atol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(results["cuda"][0], results["cpu"][0], rtol=atol, atol=atol)
    for gc, gg in zip(results["cpu"][1], results["cuda"][1]):
        torch.testing.assert_close(gg, gc, rtol=10 * atol, atol=10 * atol)


def test_cuda_time_dtype_and_device_seen_by_f():
    seen = set()

    def f(u, p, t):
        seen.add((t.device.type, t.dtype, u.device.type, u.dtype))
        return -u

    solve(ODEProblem(f, torch.ones(8, 3, device="cuda"), (0.0, 1.0)), saveat=[0.5, 1.0])
    assert seen == {("cuda", torch.float64, "cuda", torch.float32)}


def test_cuda_dense_output_and_failure_codes():
    prob = ODEProblem(lambda u, p, t: u * u, torch.tensor([[0.5], [2.0]], device="cuda", dtype=torch.float64),
                      (0.0, 1.0))
    kw = dict(throw=False, dtmin=1e-8, reltol=1e-8, abstol=1e-10)
    sol = solve(prob, **kw)
    cpu = solve(prob.remake(u0=prob.u0.cpu()), **kw)
    assert sol.retcode.tolist() == cpu.retcode.tolist()
    assert sol.retcode[0] == pyode.ReturnCode.Success and sol.retcode[1] != pyode.ReturnCode.Success
    vals = sol(torch.tensor([0.3, 0.8]))                    # member 1 blows up at t = 0.5
    assert vals.device.type == "cuda"
    exact = torch.tensor([[0.5 / (1 - 0.15), 2.0 / (1 - 0.6)], [0.5 / (1 - 0.4), float("nan")]], dtype=torch.float64)
    torch.testing.assert_close(vals[..., 0].cpu(), exact, rtol=1e-5, atol=0, equal_nan=True)


@pytest.mark.parametrize("alg", [pyode.Rosenbrock23(), pyode.Rodas4(), pyode.Rodas5P()], ids=repr)
def test_cuda_rosenbrock_batch_matches_cpu(alg):
    gen = torch.Generator().manual_seed(0)
    k = torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64) * (1 + 0.2 * (2 * torch.rand(16, 3, generator=gen,
                                                                                          dtype=torch.float64) - 1))
    ts = [1e-3, 1.0, 1e3, 1e5]
    results = {}
    for device in ("cpu", "cuda"):
        prob = pyode.problems.robertson(u0=torch.tensor([1.0, 0.0, 0.0]).expand(16, 3), k=k, device=device)
        for jac in (prob.jac, None):
            sol = solve(prob.remake(jac=jac), alg, reltol=1e-6, abstol=1e-10, saveat=ts)
            assert sol.u.device.type == device
            results[device, jac is None] = sol.u.cpu()
    # Round-off can flip an accept/reject decision, after which the step sequences differ: compare
    # within the solve's tolerance, not to round-off.
    for ad in (False, True):
        torch.testing.assert_close(results["cuda", ad], results["cpu", ad], rtol=1e-5, atol=1e-10)
